//! Who is who and who may read what, for the fake API server's
//! TokenReview and SubjectAccessReview: tokens name users with groups;
//! grants give a user or group `get pods/log` in one namespace or in all
//! (a ClusterRoleBinding), or `get` on a non-resource URL such as
//! `/metrics`.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use k8s_openapi::api::authentication::v1::{TokenReview, TokenReviewStatus, UserInfo};
use k8s_openapi::api::authorization::v1::{SubjectAccessReview, SubjectAccessReviewStatus};

/// Where a grant applies.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Grant {
    /// `get pods/log` in one namespace (a RoleBinding).
    Namespace(String),
    /// `get pods/log` in every namespace (a ClusterRoleBinding).
    Cluster,
    /// `get` on a non-resource URL (`/metrics`).
    Url(String),
}

#[derive(Default)]
struct Table {
    /// token → (user, groups)
    tokens: BTreeMap<String, (String, Vec<String>)>,
    /// subject (`user:<name>` or `group:<name>`) → grants
    grants: BTreeMap<String, BTreeSet<Grant>>,
}

/// The fake's identities and permissions, and how often it was asked.
#[derive(Default)]
pub struct Reviews {
    table: Mutex<Table>,
    /// TokenReviews answered.
    pub token_reviews: AtomicU64,
    /// SubjectAccessReviews answered.
    pub access_reviews: AtomicU64,
}

impl Reviews {
    /// `token` authenticates as `user` in `groups`.
    pub fn add_user(&self, token: &str, user: &str, groups: &[&str]) {
        self.table.lock().unwrap().tokens.insert(
            token.to_owned(),
            (
                user.to_owned(),
                groups.iter().map(|g| g.to_string()).collect(),
            ),
        );
    }

    /// Grants `subject` (`user:alice` or `group:readers`).
    pub fn grant(&self, subject: &str, grant: Grant) {
        self.table
            .lock()
            .unwrap()
            .grants
            .entry(subject.to_owned())
            .or_default()
            .insert(grant);
    }

    /// Takes a grant back.
    pub fn revoke(&self, subject: &str, grant: &Grant) {
        if let Some(g) = self.table.lock().unwrap().grants.get_mut(subject) {
            g.remove(grant);
        }
    }

    /// Answers a TokenReview as the API server does: `authenticated` and
    /// the user for a known token, `authenticated: false` and an error
    /// otherwise.
    pub fn token_review(&self, mut review: TokenReview) -> TokenReview {
        self.token_reviews.fetch_add(1, Ordering::Relaxed);
        let token = review.spec.token.clone().unwrap_or_default();
        let table = self.table.lock().unwrap();
        review.status = Some(match table.tokens.get(&token) {
            Some((user, groups)) => TokenReviewStatus {
                authenticated: Some(true),
                user: Some(UserInfo {
                    username: Some(user.clone()),
                    uid: Some(format!("uid-{user}")),
                    groups: Some(
                        groups
                            .iter()
                            .cloned()
                            .chain(["system:authenticated".to_owned()])
                            .collect(),
                    ),
                    extra: None,
                }),
                audiences: review.spec.audiences.clone(),
                error: None,
            },
            None => TokenReviewStatus {
                authenticated: Some(false),
                error: Some("[invalid bearer token, token lookup failed]".into()),
                ..TokenReviewStatus::default()
            },
        });
        review
    }

    /// Answers a SubjectAccessReview: `get pods/log` in a namespace is
    /// allowed by a grant there or a cluster grant; in every namespace
    /// (namespace "") only by a cluster grant; `get` on a URL by that URL.
    pub fn access_review(&self, mut review: SubjectAccessReview) -> SubjectAccessReview {
        self.access_reviews.fetch_add(1, Ordering::Relaxed);
        let spec = &review.spec;
        let mut subjects: Vec<String> = spec.user.iter().map(|u| format!("user:{u}")).collect();
        subjects.extend(spec.groups.iter().flatten().map(|g| format!("group:{g}")));
        let table = self.table.lock().unwrap();
        let grants: BTreeSet<&Grant> = subjects
            .iter()
            .filter_map(|s| table.grants.get(s))
            .flatten()
            .collect();
        let allowed = if let Some(r) = &spec.resource_attributes {
            let reads_logs = r.verb.as_deref() == Some("get")
                && r.resource.as_deref() == Some("pods")
                && r.subresource.as_deref() == Some("log")
                && r.group.as_deref().unwrap_or("").is_empty();
            let namespace = r.namespace.clone().unwrap_or_default();
            reads_logs
                && (grants.contains(&Grant::Cluster)
                    || (!namespace.is_empty() && grants.contains(&Grant::Namespace(namespace))))
        } else if let Some(n) = &spec.non_resource_attributes {
            n.verb.as_deref() == Some("get")
                && grants.contains(&Grant::Url(n.path.clone().unwrap_or_default()))
        } else {
            false
        };
        review.status = Some(SubjectAccessReviewStatus {
            allowed,
            denied: None,
            evaluation_error: None,
            reason: Some(if allowed {
                "RBAC: allowed by the fake's grants".into()
            } else {
                String::new()
            }),
        });
        review
    }
}
