//! Pod metadata: one list+watch of this node's pods (kube-rs), kept in a
//! local cache. No API request per file or per line.
//!
//! A deleted pod stays in the cache, marked, for a grace period, so its last
//! lines (drained after the pod is gone) are still labelled. After a relist
//! (a `410 Gone`, a reconnect), pods missing from the new list are marked the
//! same way.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use kube::Api;
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, Event};

/// What the labels need from a pod.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PodInfo {
    /// The pod's UID.
    pub uid: String,
    /// Its labels.
    pub labels: BTreeMap<String, String>,
    /// Its annotations.
    pub annotations: BTreeMap<String, String>,
    /// The node it runs on.
    pub node: Option<String>,
    /// The resource version it was seen at (changes when labels do).
    pub version: String,
    /// When it was deleted (kept for a grace period).
    pub deleted_at: Option<Instant>,
}

#[derive(Default)]
struct State {
    pods: HashMap<(String, String), Arc<PodInfo>>,
    /// Pods seen during a relist in progress.
    relisting: Option<HashSet<(String, String)>>,
    synced: bool,
    /// When the first full list arrived (ns since the epoch).
    synced_at: Option<i64>,
    /// The last attempt to list or watch failed (API server unreachable,
    /// refusing, or too slow), and none has succeeded since.
    failing: bool,
}

/// The shared cache of this node's pods.
#[derive(Clone, Default)]
pub struct PodCache {
    state: Arc<RwLock<State>>,
    /// Bumped on every change, so readers can keep what they looked up
    /// until it moves.
    generation: Arc<AtomicU64>,
}

fn key(pod: &Pod) -> Option<(String, String)> {
    Some((pod.metadata.namespace.clone()?, pod.metadata.name.clone()?))
}

impl PodCache {
    /// The pod `name` in `namespace`, if known (deleted ones included).
    pub fn get(&self, namespace: &str, name: &str) -> Option<Arc<PodInfo>> {
        let state = self.state.read().unwrap_or_else(|e| e.into_inner());
        state
            .pods
            .get(&(namespace.to_owned(), name.to_owned()))
            .cloned()
    }

    /// A number that changes whenever the cache does.
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    fn changed(&self) {
        self.generation.fetch_add(1, Ordering::AcqRel);
    }

    /// Whether a first full list has arrived.
    pub fn synced(&self) -> bool {
        self.state.read().unwrap_or_else(|e| e.into_inner()).synced
    }

    /// When the first full list arrived (ns since the epoch), if it has.
    pub fn synced_at(&self) -> Option<i64> {
        self.state
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .synced_at
    }

    /// Whether the API server cannot be reached right now.
    pub fn failing(&self) -> bool {
        self.state.read().unwrap_or_else(|e| e.into_inner()).failing
    }

    /// Records whether the last list or watch attempt failed.
    pub fn set_failing(&self, failing: bool) {
        let mut state = self.state.write().unwrap_or_else(|e| e.into_inner());
        if state.failing != failing {
            state.failing = failing;
            drop(state);
            self.changed();
        }
    }

    /// Whether a file that appeared at `appeared` (ns since the epoch)
    /// whose pod is not cached may still get its metadata by waiting: not
    /// while the API server is failing, and not when the pod list taken
    /// after the file appeared did not have it (the pod is gone).
    pub fn worth_waiting_for(&self, appeared: i64) -> bool {
        let state = self.state.read().unwrap_or_else(|e| e.into_inner());
        !state.failing && state.synced_at.is_none_or(|at| appeared >= at)
    }

    /// How many pods are cached.
    pub fn len(&self) -> usize {
        self.state
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .pods
            .len()
    }

    /// Whether no pod is cached.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Adds or updates a pod.
    pub fn apply(&self, pod: &Pod) {
        let Some(k) = key(pod) else { return };
        let info = PodInfo {
            uid: pod.metadata.uid.clone().unwrap_or_default(),
            labels: pod.metadata.labels.clone().unwrap_or_default(),
            annotations: pod.metadata.annotations.clone().unwrap_or_default(),
            node: pod.spec.as_ref().and_then(|s| s.node_name.clone()),
            version: pod.metadata.resource_version.clone().unwrap_or_default(),
            deleted_at: None,
        };
        let mut state = self.state.write().unwrap_or_else(|e| e.into_inner());
        if let Some(seen) = state.relisting.as_mut() {
            seen.insert(k.clone());
        }
        state.pods.insert(k, Arc::new(info));
        self.changed();
    }

    /// Marks a pod deleted; it is forgotten after the grace period.
    pub fn delete(&self, pod: &Pod) {
        let Some(k) = key(pod) else { return };
        let mut state = self.state.write().unwrap_or_else(|e| e.into_inner());
        if let Some(info) = state.pods.get_mut(&k)
            && info.deleted_at.is_none()
        {
            Arc::make_mut(info).deleted_at = Some(Instant::now());
            self.changed();
        }
    }

    fn relist_started(&self) {
        self.state
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .relisting = Some(HashSet::new());
    }

    fn relist_done(&self) {
        let mut state = self.state.write().unwrap_or_else(|e| e.into_inner());
        let seen = state.relisting.take().unwrap_or_default();
        let now = Instant::now();
        for (k, info) in state.pods.iter_mut() {
            if !seen.contains(k) && info.deleted_at.is_none() {
                Arc::make_mut(info).deleted_at = Some(now);
            }
        }
        state.synced = true;
        state
            .synced_at
            .get_or_insert_with(crate::log_database::now_ns);
        self.changed();
    }

    /// Forgets pods deleted longer than `grace` ago.
    pub fn purge(&self, grace: Duration) {
        let mut state = self.state.write().unwrap_or_else(|e| e.into_inner());
        let before = state.pods.len();
        state
            .pods
            .retain(|_, info| info.deleted_at.is_none_or(|t| t.elapsed() < grace));
        if state.pods.len() != before {
            self.changed();
        }
    }

    /// Applies one watcher event.
    pub fn handle(&self, event: Event<Pod>) {
        match event {
            Event::Apply(pod) | Event::InitApply(pod) => self.apply(&pod),
            Event::Delete(pod) => self.delete(&pod),
            Event::Init => self.relist_started(),
            Event::InitDone => self.relist_done(),
        }
    }
}

/// Keeps `cache` in step with the pods on `node` (every node's when `None`)
/// until the task is dropped.
/// Errors (a restarting API server, a cut connection, `410 Gone`) are retried
/// with backoff by the watcher, which relists when it must.
pub async fn watch_pods(
    client: kube::Client,
    node: Option<String>,
    cache: PodCache,
    grace: Duration,
) {
    let api: Api<Pod> = Api::all(client);
    let config = match &node {
        Some(node) => watcher::Config::default().fields(&format!("spec.nodeName={node}")),
        None => watcher::Config::default(),
    };
    let mut events = std::pin::pin!(watcher::watcher(api, config).default_backoff());
    let mut warned = false;
    while let Some(event) = events.next().await {
        match event {
            Ok(event) => {
                warned = false;
                cache.set_failing(false);
                cache.handle(event);
            }
            Err(error) => {
                cache.set_failing(true);
                if !warned {
                    tracing::warn!(%error, "Watching pods failed; retrying. Lines are labelled from their file names meanwhile.");
                    warned = true;
                }
            }
        }
        cache.purge(grace);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(ns: &str, name: &str, app: &str) -> Pod {
        let mut p = Pod::default();
        p.metadata.namespace = Some(ns.into());
        p.metadata.name = Some(name.into());
        p.metadata.uid = Some(format!("uid-{name}"));
        p.metadata.labels = Some([("app".to_owned(), app.to_owned())].into());
        p
    }

    #[test]
    fn waiting_for_a_pod_helps_only_while_its_metadata_can_still_come() {
        let cache = PodCache::default();
        let now = crate::log_database::now_ns();
        assert!(cache.worth_waiting_for(now), "no list yet: it may come");
        let before = cache.generation();
        cache.set_failing(true);
        assert!(cache.generation() > before, "files waiting look again");
        assert!(!cache.worth_waiting_for(now), "the API server is failing");
        cache.set_failing(false);
        cache.handle(Event::Init);
        cache.handle(Event::InitDone);
        let second = 1_000_000_000;
        assert!(
            !cache.worth_waiting_for(now - 60 * second),
            "older than the list that lacks its pod"
        );
        assert!(
            cache.worth_waiting_for(crate::log_database::now_ns() + second),
            "newer than the list: its pod may be on its way"
        );
    }

    #[test]
    fn deletes_and_relists_keep_pods_for_a_grace_period() {
        let cache = PodCache::default();
        cache.handle(Event::Init);
        cache.handle(Event::InitApply(pod("default", "web", "web")));
        cache.handle(Event::InitApply(pod("default", "db", "db")));
        cache.handle(Event::InitDone);
        assert!(cache.synced());
        cache.handle(Event::Apply(pod("default", "web", "web-v2")));
        assert_eq!(cache.get("default", "web").unwrap().labels["app"], "web-v2");
        cache.handle(Event::Delete(pod("default", "web", "web-v2")));
        assert!(
            cache.get("default", "web").unwrap().deleted_at.is_some(),
            "still there, marked"
        );
        // A relist without db: db is marked deleted too.
        cache.handle(Event::Init);
        cache.handle(Event::InitApply(pod("default", "new", "new")));
        cache.handle(Event::InitDone);
        assert!(cache.get("default", "db").unwrap().deleted_at.is_some());
        assert!(cache.get("default", "new").unwrap().deleted_at.is_none());
        cache.purge(Duration::from_secs(60));
        assert_eq!(cache.len(), 3);
        cache.purge(Duration::ZERO);
        assert_eq!(cache.len(), 1);
    }
}
