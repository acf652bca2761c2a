//! Answers for the whole cluster. A request is answered for every node by
//! default: this node asks its peers the same question (`PEER_HEADER`,
//! the same path and parameters, "now" pinned), each peer answers for
//! itself alone in the peer form, and this node merges the answers into
//! what one store holding everything would answer. `scope=node` (or the
//! `X-Monitoring-Scope: node` header) keeps a request on this node.
//!
//! A peer that is down, slow or broken is left out, and the answer says
//! so: Loki's `warnings` and the `X-Monitoring-Missing-Peers` header;
//! `partial=false` turns that into a 503. A peer that refuses the query
//! itself (a 4xx) fails it, as one store would.

use std::future::Future;
use std::sync::Arc;

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::params::Params;
use super::{ApiError, AppState, Row};
use crate::cluster::client::{Observe, PEER_CONTENT_TYPE, PEER_HEADER};
use crate::cluster::{ClusterError, Missing, Peer};
use crate::log_database::labels::Labels;
use crate::log_database::query::Direction;

/// The header that keeps a request on one node (`node`) or asks for the
/// cluster (`cluster`, the default); the `scope` parameter says the same.
pub const SCOPE_HEADER: &str = "x-monitoring-scope";

/// The header naming the peers an answer is missing.
pub const MISSING_HEADER: &str = "x-monitoring-missing-peers";

/// How a request is to be answered: by this node alone, or by the
/// cluster; and what to pass on to peers.
#[derive(Clone, Debug)]
pub struct Fanout {
    /// The request comes from a peer: answer for this node, peer form.
    pub from_peer: bool,
    /// `X-Monitoring-Scope`, if sent.
    scope_header: Option<String>,
    path: String,
    authorization: Option<HeaderValue>,
}

impl<S: Send + Sync> FromRequestParts<S> for Fanout {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, ApiError> {
        Ok(Self::new(&parts.headers, parts.uri.path()))
    }
}

impl Fanout {
    fn new(headers: &HeaderMap, path: &str) -> Self {
        let text = |name: &str| {
            headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(|v| v.trim().to_ascii_lowercase())
        };
        Self {
            from_peer: headers.contains_key(PEER_HEADER),
            scope_header: text(SCOPE_HEADER),
            path: path.to_owned(),
            // A browser's live tail sends its token as a subprotocol;
            // peers are asked with it as a header.
            authorization: headers.get(header::AUTHORIZATION).cloned().or_else(|| {
                super::auth::bearer(headers)
                    .and_then(|t| HeaderValue::from_str(&format!("Bearer {t}")).ok())
            }),
        }
    }

    /// The peers to ask for this request (none: this node answers alone).
    pub fn peers(&self, state: &AppState, p: &Params) -> Result<Vec<Peer>, ApiError> {
        if self.from_peer {
            return Ok(Vec::new());
        }
        let scope = p
            .get("scope")
            .filter(|s| !s.is_empty())
            .map(str::to_ascii_lowercase)
            .or_else(|| self.scope_header.clone());
        match scope.as_deref() {
            None | Some("cluster") => Ok(state.peers.ready()),
            Some("node") => Ok(Vec::new()),
            Some(other) => Err(ApiError::bad_request(format!(
                "scope={other:?}: use cluster (every node, the default) or node (this one)"
            ))),
        }
    }

    /// The path asked (peers are asked the same).
    pub fn path(&self) -> &str {
        &self.path
    }

    /// The caller's `Authorization`, passed on to peers.
    pub fn authorization(&self) -> Option<&HeaderValue> {
        self.authorization.as_ref()
    }

    /// Whether this request will ask peers.
    pub fn asks_peers(&self, state: &AppState, p: &Params) -> Result<bool, ApiError> {
        Ok(!self.peers(state, p)?.is_empty())
    }

    /// This node's answer (`local`) and every ready peer's, asked at the
    /// same time; for a peer's request, this node's answer alone.
    pub async fn gather<T, F>(
        &self,
        state: &AppState,
        p: &Params,
        local: F,
    ) -> Result<Gathered<T>, ApiError>
    where
        T: DeserializeOwned + Serialize + Send,
        F: Future<Output = Result<T, ApiError>>,
    {
        if self.from_peer {
            return Ok(Gathered::Peer(local.await?));
        }
        let peers = self.peers(state, p)?;
        if peers.is_empty() {
            return Ok(Gathered::All {
                parts: vec![local.await?],
                missing: Vec::new(),
            });
        }
        let observe = MetricsObserver(state.metrics.clone());
        let asked = state.peer_client.ask::<T>(
            &peers,
            &self.path,
            p.pairs(),
            self.authorization.as_ref(),
            &observe,
        );
        let (mine, theirs) = tokio::join!(local, asked);
        let mut parts = vec![mine?];
        let answers = theirs.map_err(ApiError::from)?;
        parts.extend(answers.answers);
        for missing in &answers.missing {
            tracing::debug!(%missing, "A peer gave no answer; answering without it.");
        }
        if !answers.missing.is_empty() && p.get("partial") == Some("false") {
            return Err(ApiError {
                status: StatusCode::SERVICE_UNAVAILABLE,
                message: format!(
                    "partial=false and some nodes did not answer: {}",
                    warnings(&answers.missing).join("; ")
                ),
            });
        }
        Ok(Gathered::All {
            parts,
            missing: answers.missing,
        })
    }
}

/// The value of `$e` (a `Result<_, Box<Response>>`), or, for a peer's
/// request, a return of this node's answer in the peer form.
macro_rules! or_peer_answer {
    ($e:expr) => {
        match $e {
            Ok(value) => value,
            Err(answer) => return Ok(*answer),
        }
    };
}
pub(crate) use or_peer_answer;

/// What [`Fanout::gather`] found.
pub enum Gathered<T> {
    /// A peer asked: this node's answer, to be sent in the peer form.
    Peer(T),
    /// Every node's answer (this node's first), and who did not answer.
    All {
        /// The answers.
        parts: Vec<T>,
        /// The peers that gave none.
        missing: Vec<Missing>,
    },
}

impl<T: Serialize> Gathered<T> {
    /// The answers and the missing peers; for a peer's request, the
    /// response to send it (`Err`, to return at once).
    pub fn parts(self) -> Result<(Vec<T>, Vec<Missing>), Box<Response>> {
        match self {
            Self::Peer(answer) => Err(Box::new(peer_answer(&answer))),
            Self::All { parts, missing } => Ok((parts, missing)),
        }
    }
}

/// `answer` in the peer form.
pub fn peer_answer<T: Serialize>(answer: &T) -> Response {
    match postcard::to_allocvec(answer) {
        Ok(bytes) => ([(header::CONTENT_TYPE, PEER_CONTENT_TYPE)], bytes).into_response(),
        Err(e) => ApiError {
            status: StatusCode::INTERNAL_SERVER_ERROR,
            message: format!("cannot encode the answer for a peer: {e}"),
        }
        .into_response(),
    }
}

/// Loki's `warnings`: one line per missing peer.
pub fn warnings(missing: &[Missing]) -> Vec<String> {
    missing
        .iter()
        .map(|m| format!("no answer from {m}; the result lacks that node's logs"))
        .collect()
}

/// Adds the missing-peers header to `response`.
pub fn mark_missing(mut response: Response, missing: &[Missing]) -> Response {
    if missing.is_empty() {
        return response;
    }
    let names = missing
        .iter()
        .map(|m| m.peer.to_string())
        .collect::<Vec<_>>()
        .join(", ");
    if let Ok(value) = HeaderValue::from_str(&names) {
        response
            .headers_mut()
            .insert(HeaderName::from_static(MISSING_HEADER), value);
    }
    response
}

impl From<ClusterError> for ApiError {
    fn from(error: ClusterError) -> Self {
        match error {
            ClusterError::Refused {
                status, message, ..
            } => Self {
                status: StatusCode::from_u16(status.as_u16()).unwrap_or(StatusCode::BAD_REQUEST),
                message,
            },
            ClusterError::TooLarge { .. } => Self::bad_request(error.to_string()),
            ClusterError::Setup(_) => Self {
                status: StatusCode::INTERNAL_SERVER_ERROR,
                message: error.to_string(),
            },
        }
    }
}

struct MetricsObserver(Arc<super::metrics::Metrics>);

impl Observe for MetricsObserver {
    fn peer(&self, peer: &str, outcome: &str, took: std::time::Duration) {
        self.0.observe_peer(peer, outcome, took);
    }
}

/// Log rows in the peer form: each label set once.
#[derive(Debug, Default, Serialize, serde::Deserialize)]
pub struct PeerRows {
    /// (labels, stream labels) pairs the rows point at.
    labels: Vec<(Arc<Labels>, Arc<Labels>)>,
    /// (index into `labels`, timestamp, line).
    rows: Vec<(u32, i64, Vec<u8>)>,
}

impl PeerRows {
    /// `rows` in the peer form.
    pub fn new(rows: Vec<Row>) -> Self {
        let mut index: std::collections::HashMap<(*const Labels, *const Labels), u32> =
            std::collections::HashMap::new();
        let mut out = Self::default();
        for (labels, ts, line, stream) in rows {
            let key = (Arc::as_ptr(&labels), Arc::as_ptr(&stream));
            let i = match index.get(&key) {
                Some(i) => *i,
                None => {
                    let i = out.labels.len() as u32;
                    out.labels.push((labels, stream));
                    index.insert(key, i);
                    i
                }
            };
            out.rows.push((i, ts, line));
        }
        out
    }

    /// The rows again (a broken index drops its row).
    pub fn rows(self) -> Vec<Row> {
        let labels = self.labels;
        self.rows
            .into_iter()
            .filter_map(|(i, ts, line)| {
                let (l, s) = labels.get(i as usize)?;
                Some((l.clone(), ts, line, s.clone()))
            })
            .collect()
    }
}

/// Every node's rows (each in `direction` order) as one store would
/// return them: in `direction` order, ties by labels, the first `limit`.
pub fn merge_rows(parts: Vec<Vec<Row>>, direction: Direction, limit: usize) -> Vec<Row> {
    if parts.len() == 1 {
        return parts.into_iter().next().unwrap_or_default();
    }
    let mut all: Vec<Row> = parts.into_iter().flatten().collect();
    all.sort_by(|a, b| {
        let by_time = match direction {
            Direction::Forward => a.1.cmp(&b.1),
            Direction::Backward => b.1.cmp(&a.1),
        };
        by_time.then_with(|| a.3.cmp(&b.3))
    });
    all.truncate(limit);
    all
}

/// Sorted, without repeats: label names, values and series of every node.
pub fn union<T: Ord>(parts: Vec<Vec<T>>) -> Vec<T> {
    let mut all: Vec<T> = parts.into_iter().flatten().collect();
    all.sort();
    all.dedup();
    all
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(labels: &Arc<Labels>, ts: i64) -> Row {
        (
            labels.clone(),
            ts,
            format!("line {ts}").into_bytes(),
            labels.clone(),
        )
    }

    #[test]
    fn rows_survive_the_peer_form() {
        let a = Arc::new(Labels::new([("app", "a")]));
        let b = Arc::new(Labels::new([("app", "b")]));
        let rows = vec![row(&a, 1), row(&b, 2), row(&a, 3)];
        let wire = postcard::to_allocvec(&PeerRows::new(rows.clone())).unwrap();
        let back: PeerRows = postcard::from_bytes(&wire).unwrap();
        assert_eq!(back.rows(), rows);
    }

    #[test]
    fn merged_rows_are_cut_to_the_limit_in_direction() {
        let a = Arc::new(Labels::new([("app", "a")]));
        let b = Arc::new(Labels::new([("app", "b")]));
        let parts = || vec![vec![row(&a, 5), row(&a, 1)], vec![row(&b, 4), row(&b, 2)]];
        let times = |rows: Vec<Row>| rows.iter().map(|r| r.1).collect::<Vec<_>>();
        assert_eq!(
            times(merge_rows(parts(), Direction::Backward, 3)),
            [5, 4, 2]
        );
        let forward = vec![vec![row(&a, 1), row(&a, 5)], vec![row(&b, 2), row(&b, 4)]];
        assert_eq!(times(merge_rows(forward, Direction::Forward, 3)), [1, 2, 4]);
    }
}
