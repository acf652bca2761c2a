//! Who may read what: the kubelet's delegation model. A bearer token is
//! checked with a TokenReview; a user may read a stream iff a
//! SubjectAccessReview allows `get` on `pods/log` in the stream's
//! namespace (every namespace at once when allowed cluster-wide); streams
//! without a namespace need the cluster-wide permission; `/metrics` needs
//! `get` on the non-resource URL `/metrics`. Answers are cached (see
//! [`cache`]); when the API server cannot be asked, requests fail closed
//! with 503.

mod cache;
mod scope;

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use k8s_openapi::api::authentication::v1::{TokenReview, TokenReviewSpec};
use k8s_openapi::api::authorization::v1::{
    NonResourceAttributes, ResourceAttributes, SubjectAccessReview, SubjectAccessReviewSpec,
};
use kube::api::{Api, PostParams};

pub use cache::{ALLOWED_TTL, DENIED_TTL, TOKEN_TTL};
pub use scope::Scope;

use super::{ApiError, AppState};
use cache::Cache;

/// How requests are authenticated.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum AuthMode {
    /// Everyone may read everything (local use).
    #[default]
    None,
    /// Bearer tokens, checked with the Kubernetes API (TokenReview,
    /// SubjectAccessReview).
    Kubernetes,
}

/// An authenticated user.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Identity {
    /// The user name.
    pub user: String,
    /// The user's uid.
    pub uid: String,
    /// The user's groups.
    pub groups: Vec<String>,
}

/// What a request may read, put in its extensions by [`middleware`].
#[derive(Clone, Debug)]
pub enum Access {
    /// No authentication: everything.
    Open,
    /// A user: what the API server says they may read.
    User(Identity),
}

/// What may be asked about a user.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
enum Check {
    /// `get pods/log` in one namespace.
    Namespace(String),
    /// `get pods/log` in every namespace.
    Cluster,
    /// `get` on a non-resource URL.
    Url(String),
}

/// The Kubernetes side of authentication and authorization, with caches.
pub struct Reviewer {
    client: kube::Client,
    tokens: Cache<String, Option<Identity>>,
    decisions: Cache<(Identity, Check), bool>,
}

/// Why a review could not be done.
#[derive(Debug, thiserror::Error)]
pub enum ReviewError {
    /// The API server did not answer.
    #[error("the Kubernetes API could not check the request ({0}); try again shortly")]
    Unavailable(String),
}

impl From<ReviewError> for ApiError {
    fn from(error: ReviewError) -> Self {
        ApiError {
            status: StatusCode::SERVICE_UNAVAILABLE,
            message: error.to_string(),
        }
    }
}

/// How long review answers are kept.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AuthTtls {
    /// A TokenReview's answer.
    pub token: Duration,
    /// An allowed SubjectAccessReview.
    pub allowed: Duration,
    /// A denied SubjectAccessReview.
    pub denied: Duration,
}

impl Default for AuthTtls {
    /// The kubelet's defaults.
    fn default() -> Self {
        Self {
            token: TOKEN_TTL,
            allowed: ALLOWED_TTL,
            denied: DENIED_TTL,
        }
    }
}

impl Reviewer {
    /// Reviews with `client`, keeping answers for `ttls`.
    pub fn new(client: kube::Client, ttls: AuthTtls) -> Self {
        Self {
            client,
            tokens: Cache::new(ttls.token, ttls.token),
            decisions: Cache::new(ttls.allowed, ttls.denied),
        }
    }

    /// The user `token` belongs to, or `None` if it is not valid.
    pub async fn authenticate(&self, token: &str) -> Result<Option<Identity>, ReviewError> {
        if let Some(known) = self.tokens.get(&token.to_owned()) {
            return Ok(known);
        }
        let review = TokenReview {
            spec: TokenReviewSpec {
                token: Some(token.to_owned()),
                audiences: None,
            },
            ..TokenReview::default()
        };
        let answer = Api::<TokenReview>::all(self.client.clone())
            .create(&PostParams::default(), &review)
            .await
            .map_err(|e| ReviewError::Unavailable(e.to_string()))?;
        let identity = answer.status.and_then(|s| {
            if s.authenticated != Some(true) {
                return None;
            }
            let user = s.user?;
            Some(Identity {
                user: user.username.unwrap_or_default(),
                uid: user.uid.unwrap_or_default(),
                groups: user.groups.unwrap_or_default(),
            })
        });
        self.tokens
            .insert(token.to_owned(), identity.clone(), identity.is_some());
        Ok(identity)
    }

    async fn allowed(&self, who: &Identity, check: Check) -> Result<bool, ReviewError> {
        let key = (who.clone(), check.clone());
        if let Some(known) = self.decisions.get(&key) {
            return Ok(known);
        }
        let (resource, non_resource) = match &check {
            Check::Namespace(_) | Check::Cluster => (
                Some(ResourceAttributes {
                    namespace: match &check {
                        Check::Namespace(ns) => Some(ns.clone()),
                        _ => Some(String::new()),
                    },
                    verb: Some("get".into()),
                    group: Some(String::new()),
                    resource: Some("pods".into()),
                    subresource: Some("log".into()),
                    ..ResourceAttributes::default()
                }),
                None,
            ),
            Check::Url(path) => (
                None,
                Some(NonResourceAttributes {
                    path: Some(path.clone()),
                    verb: Some("get".into()),
                }),
            ),
        };
        let review = SubjectAccessReview {
            spec: SubjectAccessReviewSpec {
                user: Some(who.user.clone()),
                uid: Some(who.uid.clone()),
                groups: Some(who.groups.clone()),
                resource_attributes: resource,
                non_resource_attributes: non_resource,
                ..SubjectAccessReviewSpec::default()
            },
            ..SubjectAccessReview::default()
        };
        let answer = Api::<SubjectAccessReview>::all(self.client.clone())
            .create(&PostParams::default(), &review)
            .await
            .map_err(|e| ReviewError::Unavailable(e.to_string()))?;
        let allowed = answer.status.is_some_and(|s| s.allowed);
        self.decisions.insert(key, allowed, allowed);
        Ok(allowed)
    }
}

fn unauthorized(message: &str) -> Response {
    let mut response = ApiError {
        status: StatusCode::UNAUTHORIZED,
        message: message.to_owned(),
    }
    .into_response();
    response.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        HeaderValue::from_static("Bearer realm=\"monitoring-rs\""),
    );
    response
}

/// The subprotocol the page offers for a live tail, beside its token.
pub const PAGE_PROTOCOL: &str = "monitoring-rs";

/// The prefix of a WebSocket subprotocol carrying a bearer token, as the
/// Kubernetes API server takes it: a browser cannot set `Authorization`
/// on a WebSocket.
const TOKEN_PROTOCOL: &str = "base64url.bearer.authorization.k8s.io.";

/// The bearer token of a request: from `Authorization`, or from a
/// WebSocket subprotocol as a browser sends it.
pub fn bearer(headers: &axum::http::HeaderMap) -> Option<String> {
    if let Some(value) = headers.get(header::AUTHORIZATION) {
        let (scheme, token) = value.to_str().ok()?.split_once(' ')?;
        return scheme
            .eq_ignore_ascii_case("bearer")
            .then(|| token.trim().to_owned())
            .filter(|t| !t.is_empty());
    }
    use base64::Engine;
    let protocols = headers.get(header::SEC_WEBSOCKET_PROTOCOL)?.to_str().ok()?;
    let encoded = protocols
        .split(',')
        .find_map(|p| p.trim().strip_prefix(TOKEN_PROTOCOL))?;
    let token = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(encoded.trim_end_matches('='))
        .ok()?;
    String::from_utf8(token).ok().filter(|t| !t.is_empty())
}

/// Authenticates every request but `/ready` and the page's own files
/// (`/`, `/ui/…`: they hold no data) and records what it may read
/// as its [`Access`]; `/metrics` also needs `get` on `/metrics` unless
/// `--metrics-auth none`.
pub async fn middleware(
    State(state): State<AppState>,
    mut request: Request,
    next: Next,
) -> Response {
    // Asked by itself (its own address among its peers): say so at once.
    if request
        .headers()
        .get(crate::cluster::client::PEER_HEADER)
        .is_some_and(|v| v.as_bytes() == state.peer_client.id().as_bytes())
    {
        return (
            axum::http::StatusCode::LOOP_DETECTED,
            "this daemon asked itself; it answers for itself already\n",
        )
            .into_response();
    }
    let Some(reviewer) = state.reviewer.clone() else {
        request.extensions_mut().insert(Access::Open);
        return next.run(request).await;
    };
    let path = request.uri().path().to_owned();
    if path == "/ready"
        || super::web::is_page(&path)
        || (path == "/metrics" && !state.config.metrics_auth)
    {
        request.extensions_mut().insert(Access::Open);
        return next.run(request).await;
    }
    let Some(token) = bearer(request.headers()) else {
        state.metrics.denied("no_token");
        return unauthorized(
            "this API needs a bearer token: Authorization: Bearer <token> (e.g. from kubectl create token)",
        );
    };
    let identity = match reviewer.authenticate(&token).await {
        Ok(Some(identity)) => identity,
        Ok(None) => {
            state.metrics.denied("invalid_token");
            return unauthorized("the bearer token is not valid (TokenReview said so)");
        }
        Err(e) => {
            state.metrics.denied("api_unavailable");
            return ApiError::from(e).into_response();
        }
    };
    if path == "/metrics" {
        match reviewer
            .allowed(&identity, Check::Url("/metrics".into()))
            .await
        {
            Ok(true) => {}
            Ok(false) => {
                audit(&state, &identity, &path, None, "metrics_forbidden");
                return ApiError {
                    status: StatusCode::FORBIDDEN,
                    message: format!("{} may not get /metrics", identity.user),
                }
                .into_response();
            }
            Err(e) => return ApiError::from(e).into_response(),
        }
    }
    request
        .extensions_mut()
        .insert(Access::User(identity.clone()));
    let denied = Arc::new(std::sync::Mutex::new(None));
    let response = scope::DENIED.scope(denied.clone(), next.run(request)).await;
    if response.status() == StatusCode::FORBIDDEN {
        let namespace = denied.lock().unwrap_or_else(|e| e.into_inner()).take();
        audit(
            &state,
            &identity,
            &path,
            namespace.as_deref(),
            "namespace_forbidden",
        );
    }
    response
}

/// Logs a denial (at most once a second) and counts it by reason.
pub(crate) fn audit(
    state: &AppState,
    who: &Identity,
    route: &str,
    namespace: Option<&str>,
    reason: &'static str,
) {
    state.metrics.denied(reason);
    static LAST: std::sync::Mutex<Option<std::time::Instant>> = std::sync::Mutex::new(None);
    let mut last = LAST.lock().unwrap_or_else(|e| e.into_inner());
    if last.is_none_or(|t| t.elapsed() >= Duration::from_secs(1)) {
        *last = Some(std::time::Instant::now());
        tracing::warn!(user = %who.user, route, namespace = namespace.unwrap_or(""), reason, "Denied a request.");
    }
}

impl Access {
    /// The namespaces this request may read, asked of the API server
    /// (cached) for each namespace the store holds.
    pub async fn scope(&self, state: &AppState) -> Result<Scope, ApiError> {
        let Access::User(who) = self else {
            return Ok(Scope::All);
        };
        let Some(reviewer) = state.reviewer.as_ref() else {
            return Ok(Scope::All);
        };
        if reviewer.allowed(who, Check::Cluster).await? {
            return Ok(Scope::All);
        }
        let held = state
            .db
            .label_values("namespace", None, crate::log_database::TimeRange::ALL)?;
        let mut allowed = std::collections::BTreeSet::new();
        for namespace in held {
            if reviewer
                .allowed(who, Check::Namespace(namespace.clone()))
                .await?
            {
                allowed.insert(namespace);
            }
        }
        Ok(Scope::Namespaces(Arc::new(allowed)))
    }

    /// The user, if any (for audit lines).
    pub fn identity(&self) -> Option<&Identity> {
        match self {
            Access::Open => None,
            Access::User(who) => Some(who),
        }
    }
}

#[cfg(test)]
mod tests {
    use axum::http::{HeaderMap, HeaderValue};

    use super::*;

    #[test]
    fn tokens_come_from_the_header_or_a_websocket_subprotocol() {
        let mut headers = HeaderMap::new();
        assert_eq!(bearer(&headers), None);
        // "alice-token", base64url without padding, beside the page's own.
        headers.insert(
            header::SEC_WEBSOCKET_PROTOCOL,
            HeaderValue::from_static(
                "monitoring-rs, base64url.bearer.authorization.k8s.io.YWxpY2UtdG9rZW4",
            ),
        );
        assert_eq!(bearer(&headers).as_deref(), Some("alice-token"));
        headers.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("Bearer other"),
        );
        assert_eq!(
            bearer(&headers).as_deref(),
            Some("other"),
            "the header wins"
        );
        headers.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("Basic eDp5"),
        );
        assert_eq!(bearer(&headers), None);
    }
}
