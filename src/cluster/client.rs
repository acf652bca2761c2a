//! Asking the other daemons: one HTTP request per peer, at most
//! `concurrency` at once, each with its own deadline, their answers'
//! bytes counted against one cap per query. The caller's bearer token
//! goes along, so every peer authorizes the caller for itself.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::http::header::{AUTHORIZATION, HeaderValue};
use axum::http::{Request, StatusCode};
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client as HttpClient;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use rustls::pki_types::ServerName;
use serde::de::DeserializeOwned;

use super::Peer;
use crate::outbound::{describe, roots_from, tls_client};

/// The header that marks a request from another daemon: answer for this
/// node alone, in the peer form (postcard), not in Loki's JSON.
pub const PEER_HEADER: &str = "x-monitoring-peer";

/// The media type of answers in the peer form.
pub const PEER_CONTENT_TYPE: &str = "application/x-monitoring-peer";

/// How this daemon talks to its peers.
#[derive(Clone, Debug)]
pub struct ClientConfig {
    /// How long one peer may take to answer (`--peer-timeout`).
    pub timeout: Duration,
    /// Peers asked at once for one query (`--peer-concurrency`).
    pub concurrency: usize,
    /// Most bytes all peers' answers to one query may add up to
    /// (`--max-peer-response-size`).
    pub max_response_bytes: usize,
    /// HTTPS to peers, verified with this CA (when this daemon serves
    /// HTTPS, its peers do too).
    pub tls: Option<PeerTls>,
}

impl Default for ClientConfig {
    fn default() -> Self {
        Self {
            timeout: Duration::from_secs(10),
            concurrency: 16,
            max_response_bytes: 64 << 20,
            tls: None,
        }
    }
}

/// Verifying peers' certificates.
#[derive(Clone, Debug)]
pub struct PeerTls {
    /// PEM CA certificates that sign the peers' certificates.
    pub ca_file: PathBuf,
    /// The name the peers' certificates carry (e.g. the Service's DNS
    /// name); `None`: the peer's IP address.
    pub server_name: Option<String>,
}

/// Why a cluster-wide answer cannot be given.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    /// A peer refused the request itself (a 4xx): the same query would
    /// fail on one store holding everything.
    #[error("{message}")]
    Refused {
        /// The peer.
        peer: SocketAddr,
        /// Its status.
        status: StatusCode,
        /// Its message.
        message: String,
    },
    /// The peers' answers are larger than the cap.
    #[error(
        "the answers from the other nodes add up to more than {limit} bytes (--max-peer-response-size); narrow the selector, the time range or the limit, or ask one node with scope=node"
    )]
    TooLarge {
        /// The cap, bytes.
        limit: usize,
    },
    /// The peer client could not be set up.
    #[error("cannot set up requests to peers: {0}")]
    Setup(String),
}

/// A peer that gave no answer, and why.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Missing {
    /// Its address.
    pub peer: SocketAddr,
    /// Its node, when known.
    pub node: Option<String>,
    /// What went wrong.
    pub reason: String,
}

impl std::fmt::Display for Missing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.node {
            Some(node) => write!(f, "{} (node {node}): {}", self.peer, self.reason),
            None => write!(f, "{}: {}", self.peer, self.reason),
        }
    }
}

/// What the peers answered.
#[derive(Debug)]
pub struct Answers<T> {
    /// One answer per peer that gave one.
    pub answers: Vec<T>,
    /// The peers that did not.
    pub missing: Vec<Missing>,
}

/// Records one peer request (the API's `/metrics`).
pub trait Observe: Send + Sync {
    /// `outcome`: ok, refused, error, unreachable, timeout, too_large.
    fn peer(&self, peer: &str, outcome: &str, took: Duration);
}

type Connector = hyper_rustls::HttpsConnector<HttpConnector>;

/// A peer's streaming answer (a follow).
pub type Streaming = hyper::Response<hyper::body::Incoming>;

/// The HTTP client for peers.
pub struct Client {
    http: HttpClient<Connector, Empty<Bytes>>,
    scheme: &'static str,
    config: ClientConfig,
    /// This daemon's marker in its questions: a daemon asked by itself
    /// (its own address in `--peers`, behind another name) can tell.
    id: String,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("config", &self.config)
            .finish()
    }
}

enum Outcome<T> {
    Answer(T),
    /// The "peer" is this daemon (it answered 508).
    Myself,
    Missing(&'static str, String),
    Fatal(ClusterError),
}

impl Client {
    /// A client with `config` (reads the CA file now).
    pub fn new(config: ClientConfig) -> Result<Self, ClusterError> {
        let (tls, scheme) = match &config.tls {
            None => (plain_rustls_config()?, "http"),
            Some(tls) => (rustls_config(tls)?, "https"),
        };
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        http.set_connect_timeout(Some(config.timeout.min(Duration::from_secs(3))));
        http.set_nodelay(true);
        let mut connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http();
        // Pods are dialled by IP, but their certificates name the Service.
        if let Some(name) = config.tls.as_ref().and_then(|t| t.server_name.as_deref()) {
            let name = ServerName::try_from(name.to_owned())
                .map_err(|e| ClusterError::Setup(format!("--peer-server-name {name:?}: {e}")))?;
            connector = connector
                .with_server_name_resolver(hyper_rustls::FixedServerNameResolver::new(name));
        }
        let connector = connector.enable_http1().wrap_connector(http);
        let http = HttpClient::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(60))
            .build(connector);
        let id = {
            use std::hash::{BuildHasher, Hasher};
            // std seeds each RandomState from the OS: a random id.
            let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
            hasher.write_u32(std::process::id());
            format!("{:016x}", hasher.finish())
        };
        Ok(Self {
            http,
            scheme,
            config,
            id,
        })
    }

    /// The marker this daemon's questions carry in [`PEER_HEADER`].
    pub fn id(&self) -> &str {
        &self.id
    }

    /// How long one peer may take to answer.
    pub fn timeout(&self) -> Duration {
        self.config.timeout
    }

    /// Asks every peer `path?params` and decodes their answers; the
    /// failures that only a peer has (down, slow, broken) are `missing`,
    /// a peer's refusal of the request fails the whole.
    pub async fn ask<T: DeserializeOwned + Send>(
        &self,
        peers: &[Peer],
        path: &str,
        params: &[(String, String)],
        authorization: Option<&HeaderValue>,
        observe: &dyn Observe,
    ) -> Result<Answers<T>, ClusterError> {
        let budget = AtomicUsize::new(self.config.max_response_bytes);
        let turns = tokio::sync::Semaphore::new(self.config.concurrency.max(1));
        let outcomes = futures_util::future::join_all(peers.iter().map(|peer| {
            self.observed(peer, path, params, authorization, &budget, &turns, observe)
        }))
        .await;
        let mut out = Answers {
            answers: Vec::new(),
            missing: Vec::new(),
        };
        for (peer, outcome) in peers.iter().zip(outcomes) {
            match outcome {
                Outcome::Answer(answer) => out.answers.push(answer),
                Outcome::Myself => {}
                Outcome::Missing(_, reason) => out.missing.push(Missing {
                    peer: peer.address,
                    node: peer.node.clone(),
                    reason,
                }),
                Outcome::Fatal(error) => return Err(error),
            }
        }
        out.missing.sort_by_key(|m| m.peer);
        Ok(out)
    }

    /// One peer's answer once a turn is free, counted in `/metrics`.
    #[allow(clippy::too_many_arguments)]
    async fn observed<T: DeserializeOwned>(
        &self,
        peer: &Peer,
        path: &str,
        params: &[(String, String)],
        authorization: Option<&HeaderValue>,
        budget: &AtomicUsize,
        turns: &tokio::sync::Semaphore,
        observe: &dyn Observe,
    ) -> Outcome<T> {
        let Ok(_turn) = turns.acquire().await else {
            return Outcome::Missing("error", "shutting down".into());
        };
        let started = Instant::now();
        let outcome = self.one(peer, path, params, authorization, budget).await;
        let label = match &outcome {
            Outcome::Answer(_) => "ok",
            Outcome::Myself => "self",
            Outcome::Missing(kind, _) => kind,
            Outcome::Fatal(ClusterError::TooLarge { .. }) => "too_large",
            Outcome::Fatal(_) => "refused",
        };
        observe.peer(&peer.address.to_string(), label, started.elapsed());
        outcome
    }

    async fn one<T: DeserializeOwned>(
        &self,
        peer: &Peer,
        path: &str,
        params: &[(String, String)],
        authorization: Option<&HeaderValue>,
        budget: &AtomicUsize,
    ) -> Outcome<T> {
        let work = async {
            let request = match self.request(peer, path, params, authorization) {
                Ok(r) => r,
                Err(e) => return Outcome::Fatal(e),
            };
            let response = match self.http.request(request).await {
                Ok(r) => r,
                Err(e) => return Outcome::Missing("unreachable", describe(&e)),
            };
            let status = response.status();
            if status == StatusCode::LOOP_DETECTED {
                return Outcome::Myself;
            }
            let bytes = match read_capped(response, budget).await {
                Ok(bytes) => bytes,
                Err(Capped::Over) => {
                    return Outcome::Fatal(ClusterError::TooLarge {
                        limit: self.config.max_response_bytes,
                    });
                }
                Err(Capped::Broken(e)) => return Outcome::Missing("error", describe(&e)),
            };
            if status.is_client_error() && status != StatusCode::TOO_MANY_REQUESTS {
                return Outcome::Fatal(ClusterError::Refused {
                    peer: peer.address,
                    status,
                    message: String::from_utf8_lossy(&bytes).trim().to_owned(),
                });
            }
            if !status.is_success() {
                let text = String::from_utf8_lossy(&bytes);
                return Outcome::Missing("error", format!("{status}: {}", text.trim()));
            }
            match postcard::from_bytes(&bytes) {
                Ok(answer) => Outcome::Answer(answer),
                Err(e) => Outcome::Missing(
                    "error",
                    format!(
                        "an answer this daemon cannot read ({e}); is the peer another version?"
                    ),
                ),
            }
        };
        match tokio::time::timeout(self.config.timeout, work).await {
            Ok(outcome) => outcome,
            Err(_) => Outcome::Missing(
                "timeout",
                format!(
                    "no answer within {} (--peer-timeout)",
                    humantime::format_duration(self.config.timeout)
                ),
            ),
        }
    }

    fn request(
        &self,
        peer: &Peer,
        path: &str,
        params: &[(String, String)],
        authorization: Option<&HeaderValue>,
    ) -> Result<Request<Empty<Bytes>>, ClusterError> {
        let query = form_urlencoded::Serializer::new(String::new())
            .extend_pairs(params)
            .finish();
        let uri = format!("{}://{}{path}?{query}", self.scheme, peer.address);
        let mut request = Request::get(uri)
            .header(PEER_HEADER, self.id.as_str())
            .header(
                axum::http::header::USER_AGENT,
                concat!("monitoring-rs/", env!("CARGO_PKG_VERSION")),
            );
        if let Some(token) = authorization {
            request = request.header(AUTHORIZATION, token.clone());
        }
        request.body(Empty::new()).map_err(|e| {
            ClusterError::Setup(format!("cannot build a request to {}: {e}", peer.address))
        })
    }

    /// Opens a streaming request to one peer (a follow): the response once
    /// its status is 200 (`None`: the peer is this daemon), or why not.
    pub async fn open(
        &self,
        peer: &Peer,
        path: &str,
        params: &[(String, String)],
        authorization: Option<&HeaderValue>,
    ) -> Result<Option<Streaming>, Missing> {
        let missing = |reason: String| Missing {
            peer: peer.address,
            node: peer.node.clone(),
            reason,
        };
        let request = self
            .request(peer, path, params, authorization)
            .map_err(|e| missing(e.to_string()))?;
        let sent = tokio::time::timeout(self.config.timeout, self.http.request(request))
            .await
            .map_err(|_| missing("no answer within --peer-timeout".into()))?
            .map_err(|e| missing(describe(&e)))?;
        if sent.status() == StatusCode::LOOP_DETECTED {
            return Ok(None);
        }
        if !sent.status().is_success() {
            return Err(missing(format!("answered {}", sent.status())));
        }
        Ok(Some(sent))
    }
}

enum Capped {
    Over,
    Broken(hyper::Error),
}

/// The body, taking its length from `budget` as it arrives.
async fn read_capped(response: Streaming, budget: &AtomicUsize) -> Result<Vec<u8>, Capped> {
    let mut body = response.into_body();
    let mut out = Vec::new();
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(Capped::Broken)?;
        let Ok(chunk) = frame.into_data() else {
            continue;
        };
        let taken = budget.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |left| {
            left.checked_sub(chunk.len())
        });
        if taken.is_err() {
            return Err(Capped::Over);
        }
        out.extend_from_slice(&chunk);
    }
    Ok(out)
}

/// No peer is asked over HTTPS: a configuration that trusts nothing
/// (the connector wants one all the same).
fn plain_rustls_config() -> Result<rustls::ClientConfig, ClusterError> {
    Ok(tls_client()
        .map_err(ClusterError::Setup)?
        .with_root_certificates(rustls::RootCertStore::empty())
        .with_no_client_auth())
}

/// TLS to peers: their chain must lead to the CA in `--peer-ca-file`.
fn rustls_config(tls: &PeerTls) -> Result<rustls::ClientConfig, ClusterError> {
    let roots = roots_from(&tls.ca_file).map_err(ClusterError::Setup)?;
    Ok(tls_client()
        .map_err(ClusterError::Setup)?
        .with_root_certificates(roots)
        .with_no_client_auth())
}
