//! Narrowing a request to the namespaces its user may read: a selector
//! that can only match forbidden namespaces is refused with the namespace
//! named; a broad one gets a `namespace=~"…"` matcher of the permitted
//! ones, so nothing else (lines, label values, counts) is ever read.

use std::collections::BTreeSet;
use std::sync::Arc;

use axum::http::StatusCode;

use crate::api::ApiError;
use crate::log_database::query::{MatchOp, Matcher};
use crate::logql::{Expr, LogExpr, MetricExpr};

/// The namespaces a request may read.
#[derive(Clone, Debug)]
pub enum Scope {
    /// Every stream, with or without a namespace.
    All,
    /// Streams of these namespaces only.
    Namespaces(Arc<BTreeSet<String>>),
}

tokio::task_local! {
    /// The namespace a request was refused, for the audit line the
    /// middleware writes.
    pub(super) static DENIED: Arc<std::sync::Mutex<Option<String>>>;
}

fn note_denied(namespace: &str) {
    let _ = DENIED
        .try_with(|d| *d.lock().unwrap_or_else(|e| e.into_inner()) = Some(namespace.to_owned()));
}

fn forbidden(message: String) -> ApiError {
    ApiError {
        status: StatusCode::FORBIDDEN,
        message,
    }
}

impl Scope {
    /// Whether everything may be read.
    pub fn is_all(&self) -> bool {
        matches!(self, Scope::All)
    }

    /// Narrows `selector` to the permitted namespaces it can match.
    pub fn narrow(&self, selector: &mut Vec<Matcher>) -> Result<(), ApiError> {
        let Scope::Namespaces(allowed) = self else {
            return Ok(());
        };
        let on_namespace: Vec<&Matcher> =
            selector.iter().filter(|m| m.name == "namespace").collect();
        let reachable: Vec<&String> = allowed
            .iter()
            .filter(|ns| on_namespace.iter().all(|m| m.matches_value(ns)))
            .collect();
        if reachable.is_empty() {
            let named = on_namespace
                .iter()
                .find(|m| m.op == MatchOp::Equal)
                .map(|m| m.value.clone());
            if let Some(ns) = &named {
                note_denied(ns);
            }
            return Err(forbidden(match named {
                Some(ns) => {
                    format!("you may not read logs in namespace {ns:?} (get pods/log there)")
                }
                None => {
                    "you may not read logs in any namespace this selector matches (get pods/log)"
                        .into()
                }
            }));
        }
        let alternatives: Vec<String> = reachable.iter().map(|ns| regex::escape(ns)).collect();
        let matcher = Matcher::new("namespace", MatchOp::Regex, &alternatives.join("|"))
            .map_err(|e| ApiError::bad_request(e.to_string()))?;
        selector.push(matcher);
        Ok(())
    }

    /// A selector for everything this scope may read (`None`: no limit).
    pub fn selector(&self) -> Result<Option<Vec<Matcher>>, ApiError> {
        match self {
            Scope::All => Ok(None),
            Scope::Namespaces(_) => {
                let mut selector = Vec::new();
                self.narrow(&mut selector)?;
                Ok(Some(selector))
            }
        }
    }

    /// Narrows every stream selector of a query.
    pub fn narrow_expr(&self, expr: &mut Expr) -> Result<(), ApiError> {
        match expr {
            Expr::Log(log) => self.narrow_log(log),
            Expr::Metric(m) => self.narrow_metric(m),
        }
    }

    fn narrow_log(&self, log: &mut LogExpr) -> Result<(), ApiError> {
        self.narrow(&mut log.selector)
    }

    fn narrow_metric(&self, expr: &mut MetricExpr) -> Result<(), ApiError> {
        match expr {
            MetricExpr::Range(r) => self.narrow_log(&mut r.log),
            MetricExpr::Aggregate { inner, .. } | MetricExpr::LabelReplace { inner, .. } => {
                self.narrow_metric(inner)
            }
            MetricExpr::Binary { lhs, rhs, .. } => {
                self.narrow_metric(lhs)?;
                self.narrow_metric(rhs)
            }
            MetricExpr::Number(_) | MetricExpr::Vector(_) => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn only(ns: &[&str]) -> Scope {
        Scope::Namespaces(Arc::new(ns.iter().map(|s| s.to_string()).collect()))
    }

    #[test]
    fn narrowing() {
        let mut s = vec![Matcher::equal("app", "web")];
        only(&["a", "c.d"]).narrow(&mut s).unwrap();
        let added = s.last().unwrap();
        assert!(added.matches_value("a") && added.matches_value("c.d"));
        assert!(
            !added.matches_value("b") && !added.matches_value("cxd") && !added.matches_value("")
        );
        let mut s = vec![Matcher::equal("namespace", "b")];
        let e = only(&["a"]).narrow(&mut s).unwrap_err();
        assert_eq!(e.status, StatusCode::FORBIDDEN);
        assert!(e.message.contains("\"b\""), "{}", e.message);
        let mut s = vec![Matcher::new("namespace", MatchOp::Regex, "b.*").unwrap()];
        assert!(only(&["a"]).narrow(&mut s).is_err());
        let mut s = vec![Matcher::equal("namespace", "a")];
        assert!(only(&["a"]).narrow(&mut s).is_ok());
        assert!(only(&[]).selector().is_err());
        let mut s = vec![Matcher::equal("app", "web")];
        Scope::All.narrow(&mut s).unwrap();
        assert_eq!(s.len(), 1);
    }
}
