//! A fake Kubernetes API server for pods, faithful where kube-rs looks:
//! list with `resourceVersion`, watch as a stream of JSON events resuming
//! from a `resourceVersion`, `BOOKMARK` events, `410 Gone` (an `ERROR` event
//! with an `Expired` status) for a version older than the kept history,
//! field selectors on `spec.nodeName`; TokenReview and SubjectAccessReview
//! (see [`crate::reviews`]). Tests add, relabel and delete pods,
//! cut every watch connection, forget history and restart the server.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{RawQuery, State};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use futures_util::stream;
use k8s_openapi::api::authentication::v1::TokenReview;
use k8s_openapi::api::authorization::v1::SubjectAccessReview;
use k8s_openapi::api::core::v1::{Pod, PodSpec};

use crate::reviews::Reviews;
use crate::slices::Slices;
use serde_json::json;
use tokio::sync::broadcast;

#[derive(Clone)]
struct Change {
    version: u64,
    kind: &'static str,
    pod: Pod,
}

#[derive(Default)]
struct Inner {
    version: u64,
    pods: BTreeMap<(String, String), Pod>,
    history: Vec<Change>,
    /// Watches from before this version get `410 Gone`.
    oldest: u64,
}

struct Shared {
    inner: Mutex<Inner>,
    reviews: Arc<Reviews>,
    slices: Arc<Slices>,
    changes: broadcast::Sender<Change>,
    /// Bumped to end every open watch.
    cuts: tokio::sync::watch::Sender<u64>,
    bookmark_every: Duration,
}

/// The running fake API server.
pub struct FakeApiServer {
    shared: Arc<Shared>,
    address: SocketAddr,
    runtime: tokio::runtime::Runtime,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

/// A list answer, as the API server writes one.
pub(crate) fn list(
    api_version: &str,
    kind: &str,
    version: u64,
    items: serde_json::Value,
) -> Response {
    let body = json!({
        "apiVersion": api_version,
        "kind": kind,
        "metadata": {"resourceVersion": version.to_string()},
        "items": items,
    });
    ([("content-type", "application/json")], body.to_string()).into_response()
}

/// A watch's starting `resourceVersion` and its `timeoutSeconds` (5 min
/// by default, as the API server picks).
pub(crate) fn watch_params(query: &BTreeMap<String, String>) -> (u64, Duration) {
    let from = query
        .get("resourceVersion")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let timeout = query
        .get("timeoutSeconds")
        .and_then(|v| v.parse().ok())
        .map(Duration::from_secs)
        .unwrap_or(Duration::from_secs(300));
    (from, timeout)
}

fn node_of(query: &BTreeMap<String, String>) -> Option<String> {
    query
        .get("fieldSelector")
        .and_then(|s| s.split(',').find_map(|f| f.strip_prefix("spec.nodeName=")))
        .map(str::to_owned)
}

fn on_node(pod: &Pod, node: &Option<String>) -> bool {
    node.as_ref()
        .is_none_or(|n| pod.spec.as_ref().and_then(|s| s.node_name.as_ref()) == Some(n))
}

async fn pods(State(shared): State<Arc<Shared>>, RawQuery(q): RawQuery) -> Response {
    let query: BTreeMap<String, String> =
        serde_urlencoded::from_str(q.as_deref().unwrap_or("")).unwrap_or_default();
    let node = node_of(&query);
    let watch = matches!(query.get("watch").map(String::as_str), Some("true" | "1"));
    if !watch {
        let inner = shared.inner.lock().unwrap();
        let items: Vec<&Pod> = inner.pods.values().filter(|p| on_node(p, &node)).collect();
        return list("v1", "PodList", inner.version, json!(items));
    }
    let (from, timeout) = watch_params(&query);
    let bookmarks = matches!(
        query.get("allowWatchBookmarks").map(String::as_str),
        Some("true" | "1")
    );
    let (backlog, live, expired) = {
        let inner = shared.inner.lock().unwrap();
        let live = shared.changes.subscribe();
        if from < inner.oldest {
            (Vec::new(), live, true)
        } else {
            let backlog: Vec<Change> = inner
                .history
                .iter()
                .filter(|c| c.version > from)
                .cloned()
                .collect();
            (backlog, live, false)
        }
    };
    if expired {
        // As the real server does: 200, then one ERROR event with a 410 Status.
        let event = json!({"type": "ERROR", "object": {
            "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
            "message": format!("too old resource version: {from}"), "reason": "Expired", "code": 410
        }});
        return ([("content-type", "application/json")], format!("{event}\n")).into_response();
    }
    let event = |c: &Change| Bytes::from(format!("{}\n", json!({"type": c.kind, "object": c.pod})));
    let first: Vec<u8> = backlog
        .iter()
        .filter(|c| on_node(&c.pod, &node))
        .flat_map(|c| event(c).to_vec())
        .collect();
    let mut cuts = shared.cuts.subscribe();
    cuts.mark_unchanged();
    let deadline = tokio::time::Instant::now() + timeout;
    let every = shared.bookmark_every;
    let shared2 = shared.clone();
    let body = stream::unfold(
        (Some(first), live, cuts, node),
        move |(first, mut live, mut cuts, node)| {
            let shared = shared2.clone();
            async move {
                if let Some(first) = first {
                    return Some((
                        Ok::<Bytes, std::io::Error>(Bytes::from(first)),
                        (None, live, cuts, node),
                    ));
                }
                loop {
                    tokio::select! {
                        change = live.recv() => match change {
                            Ok(c) if on_node(&c.pod, &node) => return Some((Ok(event(&c)), (None, live, cuts, node))),
                            Ok(_) => continue,
                            // A slow watcher is cut off, as the real server does.
                            Err(_) => return None,
                        },
                        _ = cuts.changed() => return None,
                        _ = tokio::time::sleep_until(deadline) => return None,
                        _ = tokio::time::sleep(every), if bookmarks => {
                            let version = shared.inner.lock().unwrap().version;
                            let mark = json!({"type": "BOOKMARK", "object": {
                                "kind": "Pod", "apiVersion": "v1", "metadata": {"resourceVersion": version.to_string()}
                            }});
                            return Some((Ok(Bytes::from(format!("{mark}\n"))), (None, live, cuts, node)));
                        }
                    }
                }
            }
        },
    );
    (
        [("content-type", "application/json")],
        Body::from_stream(body),
    )
        .into_response()
}

fn pairs(list: &[(&str, &str)]) -> BTreeMap<String, String> {
    list.iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

async fn token_review(
    State(shared): State<Arc<Shared>>,
    axum::Json(review): axum::Json<TokenReview>,
) -> Response {
    let answer = shared.reviews.token_review(review);
    (axum::http::StatusCode::CREATED, axum::Json(answer)).into_response()
}

async fn access_review(
    State(shared): State<Arc<Shared>>,
    axum::Json(review): axum::Json<SubjectAccessReview>,
) -> Response {
    let answer = shared.reviews.access_review(review);
    (axum::http::StatusCode::CREATED, axum::Json(answer)).into_response()
}

async fn endpoint_slices(
    State(shared): State<Arc<Shared>>,
    axum::extract::Path(namespace): axum::extract::Path<String>,
    RawQuery(q): RawQuery,
) -> Response {
    let query: BTreeMap<String, String> =
        serde_urlencoded::from_str(q.as_deref().unwrap_or("")).unwrap_or_default();
    shared.slices.serve(&namespace, &query)
}

fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/api/v1/pods", get(pods))
        .route(
            "/apis/discovery.k8s.io/v1/namespaces/{namespace}/endpointslices",
            get(endpoint_slices),
        )
        .route(
            "/apis/authentication.k8s.io/v1/tokenreviews",
            axum::routing::post(token_review),
        )
        .route(
            "/apis/authorization.k8s.io/v1/subjectaccessreviews",
            axum::routing::post(access_review),
        )
        .with_state(shared)
}

impl FakeApiServer {
    /// Starts on 127.0.0.1 with an ephemeral port.
    pub fn start() -> Self {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("a runtime for the fake API server");
        let shared = Arc::new(Shared {
            inner: Mutex::new(Inner {
                version: 1,
                ..Inner::default()
            }),
            reviews: Arc::default(),
            slices: Arc::default(),
            changes: broadcast::channel(4096).0,
            cuts: tokio::sync::watch::channel(0).0,
            bookmark_every: Duration::from_millis(500),
        });
        let listener = runtime
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .expect("bind 127.0.0.1:0");
        let address = listener.local_addr().expect("local address");
        let mut server = Self {
            shared,
            address,
            runtime,
            stop: None,
        };
        server.serve(listener);
        server
    }

    fn serve(&mut self, listener: tokio::net::TcpListener) {
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let app = router(self.shared.clone());
        self.runtime.spawn(async move {
            let _ = axum::serve(listener, app)
                .with_graceful_shutdown(async {
                    let _ = rx.await;
                })
                .await;
        });
        self.stop = Some(tx);
    }

    /// Its identities and permissions (TokenReview, SubjectAccessReview),
    /// shared with the running server.
    pub fn reviews(&self) -> Arc<Reviews> {
        self.shared.reviews.clone()
    }

    /// Its EndpointSlices, shared with the running server.
    pub fn slices(&self) -> Arc<Slices> {
        self.shared.slices.clone()
    }

    /// The server's URL.
    pub fn url(&self) -> String {
        format!("http://{}", self.address)
    }

    /// Writes a kubeconfig pointing at this server.
    pub fn write_kubeconfig(&self, path: &Path) -> std::io::Result<()> {
        std::fs::write(
            path,
            format!(
                "apiVersion: v1\nkind: Config\nclusters:\n- name: fake\n  cluster:\n    server: {}\n\
                 contexts:\n- name: fake\n  context:\n    cluster: fake\n    user: fake\n\
                 current-context: fake\nusers:\n- name: fake\n  user: {{}}\n",
                self.url()
            ),
        )
    }

    fn change(&self, kind: &'static str, mut pod: Pod) {
        let mut inner = self.shared.inner.lock().unwrap();
        inner.version += 1;
        pod.metadata.resource_version = Some(inner.version.to_string());
        let key = (
            pod.metadata.namespace.clone().unwrap_or_default(),
            pod.metadata.name.clone().unwrap_or_default(),
        );
        if kind == "DELETED" {
            inner.pods.remove(&key);
        } else {
            inner.pods.insert(key, pod.clone());
        }
        let change = Change {
            version: inner.version,
            kind,
            pod,
        };
        inner.history.push(change.clone());
        let _ = self.shared.changes.send(change);
    }

    /// Adds (or replaces) a pod scheduled on `node`.
    pub fn add_pod(
        &self,
        namespace: &str,
        name: &str,
        uid: &str,
        node: &str,
        labels: &[(&str, &str)],
    ) {
        let mut pod = Pod::default();
        pod.metadata.namespace = Some(namespace.into());
        pod.metadata.name = Some(name.into());
        pod.metadata.uid = Some(uid.into());
        pod.metadata.labels = Some(pairs(labels));
        pod.spec = Some(PodSpec {
            node_name: Some(node.into()),
            ..PodSpec::default()
        });
        let existed = self
            .shared
            .inner
            .lock()
            .unwrap()
            .pods
            .contains_key(&(namespace.to_owned(), name.to_owned()));
        self.change(if existed { "MODIFIED" } else { "ADDED" }, pod);
    }

    /// A copy of the stored pod, if there is one.
    fn stored(&self, namespace: &str, name: &str) -> Option<Pod> {
        let inner = self.shared.inner.lock().unwrap();
        inner
            .pods
            .get(&(namespace.to_owned(), name.to_owned()))
            .cloned()
    }

    /// Changes a stored pod and announces it as `MODIFIED`.
    fn modify(&self, namespace: &str, name: &str, edit: impl FnOnce(&mut Pod)) {
        if let Some(mut pod) = self.stored(namespace, name) {
            edit(&mut pod);
            self.change("MODIFIED", pod);
        }
    }

    /// Sets a pod's annotations.
    pub fn annotate(&self, namespace: &str, name: &str, annotations: &[(&str, &str)]) {
        self.modify(namespace, name, |pod| {
            pod.metadata.annotations = Some(pairs(annotations))
        });
    }

    /// Replaces a pod's labels.
    pub fn relabel(&self, namespace: &str, name: &str, labels: &[(&str, &str)]) {
        self.modify(namespace, name, |pod| {
            pod.metadata.labels = Some(pairs(labels))
        });
    }

    /// Deletes a pod.
    pub fn delete_pod(&self, namespace: &str, name: &str) {
        if let Some(pod) = self.stored(namespace, name) {
            self.change("DELETED", pod);
        }
    }

    /// Ends every open watch connection (clients reconnect and resume).
    pub fn cut_watches(&self) {
        self.shared.cuts.send_modify(|n| *n += 1);
    }

    /// Forgets the change history: resuming watches get `410 Gone` and must
    /// list again. Also cuts open watches, as a compaction would end them.
    pub fn expire_history(&self) {
        {
            let mut inner = self.shared.inner.lock().unwrap();
            inner.history.clear();
            inner.oldest = inner.version;
        }
        self.cut_watches();
    }

    /// Stops the server for `down`, then serves again on the same address
    /// with the same pods (as an API server restart looks to a client).
    pub fn restart(&mut self, down: Duration) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        self.cut_watches();
        std::thread::sleep(down);
        let listener = self
            .runtime
            .block_on(async {
                for _ in 0..100 {
                    if let Ok(l) = tokio::net::TcpListener::bind(self.address).await {
                        return Some(l);
                    }
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                None
            })
            .expect("rebind the fake API server's address");
        self.serve(listener);
    }
}

impl Drop for FakeApiServer {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        self.cut_watches();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use monitoring_rs::log_collector::kubernetes::metadata::{PodCache, watch_pods};

    async fn client(server: &FakeApiServer, dir: &Path) -> kube::Client {
        let path = dir.join("kubeconfig");
        server.write_kubeconfig(&path).unwrap();
        let file = kube::config::Kubeconfig::read_from(&path).unwrap();
        let config = kube::Config::from_custom_kubeconfig(file, &Default::default())
            .await
            .unwrap();
        kube::Client::try_from(config).unwrap()
    }

    fn wait(what: &str, mut ok: impl FnMut() -> bool) {
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        while !ok() {
            assert!(
                std::time::Instant::now() < deadline,
                "timed out waiting for {what}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    #[test]
    fn the_real_kube_client_lists_watches_and_survives_410_and_restarts() {
        let dir = tempfile::tempdir().unwrap();
        let mut server = FakeApiServer::start();
        server.add_pod("default", "web", "uid-web", "node-1", &[("app", "web")]);
        server.add_pod("default", "elsewhere", "uid-x", "node-2", &[("app", "x")]);
        let runtime = tokio::runtime::Runtime::new().unwrap();
        let cache = PodCache::default();
        let client = runtime.block_on(client(&server, dir.path()));
        runtime.spawn(watch_pods(
            client,
            Some("node-1".into()),
            cache.clone(),
            Duration::from_secs(60),
        ));

        wait("the initial list", || {
            cache.synced() && cache.get("default", "web").is_some()
        });
        assert!(
            cache.get("default", "elsewhere").is_none(),
            "only this node's pods"
        );
        server.add_pod("default", "db", "uid-db", "node-1", &[("app", "db")]);
        wait("a watched add", || cache.get("default", "db").is_some());
        server.relabel("default", "web", &[("app", "web-v2")]);
        wait("a relabel", || {
            cache
                .get("default", "web")
                .is_some_and(|p| p.labels["app"] == "web-v2")
        });

        server.cut_watches();
        server.add_pod("default", "after-cut", "uid-c", "node-1", &[]);
        wait("a resumed watch", || {
            cache.get("default", "after-cut").is_some()
        });

        server.expire_history();
        server.add_pod("default", "after-410", "uid-d", "node-1", &[]);
        wait("a relist after 410 Gone", || {
            cache.get("default", "after-410").is_some()
        });

        server.restart(Duration::from_millis(300));
        server.delete_pod("default", "db");
        wait("a delete after a restart", || {
            cache
                .get("default", "db")
                .is_some_and(|p| p.deleted_at.is_some())
        });
        assert!(
            cache
                .get("default", "web")
                .is_some_and(|p| p.deleted_at.is_none())
        );
    }
}
