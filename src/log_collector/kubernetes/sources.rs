//! What the collector knows about each log path it has seen: who wrote it
//! (from the name), when it was first seen, its pod as last looked up, and
//! its label sets. Stages refer to a path by its [`SourceId`], an index,
//! so per-line work never hashes or compares path strings.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use super::label::LabelCache;
use super::metadata::{PodCache, PodInfo};
use super::names::{FileIdentity, identify};

/// Names one log path for the life of the collector.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(super) struct SourceId(u32);

/// One log path (a `/var/log/containers` link; it stays across rotations).
pub(super) struct Source {
    /// The path, as the directory collector reports it.
    pub(super) path: Arc<str>,
    /// Who wrote it, if the path says; `None`: not a container log.
    pub(super) identity: Option<FileIdentity>,
    /// When this collector first saw it (the pod wait counts from here).
    pub(super) first_seen: Instant,
    /// When its file appeared (ns since the epoch): the file's birth time
    /// where known, else when first seen.
    pub(super) appeared: i64,
    /// Its pod as last looked up, and the cache generation then.
    pod: Option<(u64, Option<Arc<PodInfo>>)>,
    /// Its label sets, per stream and pod version.
    pub(super) labels: LabelCache,
}

/// Every path seen, by id and by path.
#[derive(Default)]
pub(super) struct Sources {
    ids: HashMap<Arc<str>, SourceId>,
    list: Vec<Source>,
    /// Paths that are not container logs (skipped).
    pub(super) unrecognised: u64,
}

impl Sources {
    /// The id of `path`, adding it (and saying once if it is not a
    /// container log) when it is new.
    pub(super) fn id(&mut self, path: &Arc<str>) -> SourceId {
        if let Some(id) = self.ids.get(path) {
            return *id;
        }
        let identity = identify(Path::new(&**path));
        if identity.is_none() {
            self.unrecognised += 1;
            tracing::warn!(path = %path, "Not a container log (no <pod>_<namespace>_<container>-<id>.log name, no /var/log/pods target); skipping it.");
        }
        let id = SourceId(self.list.len() as u32);
        self.list.push(Source {
            path: path.clone(),
            identity,
            first_seen: Instant::now(),
            appeared: crate::log_database::now_ns(),
            pod: None,
            labels: LabelCache::default(),
        });
        self.ids.insert(path.clone(), id);
        id
    }

    /// Records that `id`'s file was created at `born` (ns), if known.
    pub(super) fn born(&mut self, id: SourceId, born: Option<i64>) {
        if let Some(born) = born {
            let source = self.get_mut(id);
            source.appeared = source.appeared.min(born);
        }
    }

    /// The id of `path`, if it has been seen.
    pub(super) fn find(&self, path: &str) -> Option<SourceId> {
        self.ids.get(path).copied()
    }

    /// The source `id`.
    pub(super) fn get(&self, id: SourceId) -> &Source {
        &self.list[id.0 as usize]
    }

    /// The source `id`, to change.
    pub(super) fn get_mut(&mut self, id: SourceId) -> &mut Source {
        &mut self.list[id.0 as usize]
    }

    /// What the cache says of `id`'s pod.
    pub(super) fn pod_state(&mut self, id: SourceId, cache: &PodCache) -> super::wait::PodState {
        use super::wait::PodState;
        if self.pod(id, cache).is_some() {
            PodState::Known
        } else if cache.worth_waiting_for(self.get(id).appeared) {
            PodState::Expected
        } else {
            PodState::Missing
        }
    }

    /// `id`'s pod, if the cache knows it; looked up again only after the
    /// cache changed (most batches touch every source).
    pub(super) fn pod(&mut self, id: SourceId, cache: &PodCache) -> Option<Arc<PodInfo>> {
        let generation = cache.generation();
        let source = self.get_mut(id);
        match &source.pod {
            Some((g, pod)) if *g == generation => pod.clone(),
            _ => {
                let identity = source.identity.as_ref()?;
                let pod = cache.get(&identity.namespace, &identity.pod);
                source.pod = Some((generation, pod.clone()));
                pod
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_path_keeps_its_id_and_unknown_names_are_counted_once() {
        let mut sources = Sources::default();
        let web: Arc<str> = Arc::from(
            "/var/log/containers/web-1_default_nginx-0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef.log",
        );
        let junk: Arc<str> = Arc::from("/var/log/containers/notes.txt");
        let a = sources.id(&web);
        let b = sources.id(&junk);
        assert_eq!(sources.id(&web), a);
        assert_eq!(sources.id(&junk), b);
        assert_ne!(a, b);
        assert_eq!(sources.find(&web), Some(a));
        assert_eq!(sources.unrecognised, 1);
        assert_eq!(
            sources.get(a).identity.as_ref().map(|i| i.pod.as_str()),
            Some("web-1")
        );
        assert!(sources.get(b).identity.is_none());
        // No pod in an empty cache; a source without identity has none either.
        let cache = PodCache::default();
        assert!(sources.pod(a, &cache).is_none());
        assert!(sources.pod(b, &cache).is_none());
    }
}
