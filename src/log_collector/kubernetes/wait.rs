//! Stage 3, waiting for pod metadata: the entries of a file whose pod the
//! cache does not know yet wait (with the checkpoints they advance) for up
//! to the pod wait from when the file was first seen, so that the first
//! lines of a new pod carry its labels too. After that, or once the pod is
//! known, or when the file is finished, they are released.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use super::join::Joined;
use super::sources::{Source, SourceId};
use crate::log_collector::checkpoint::{Checkpoint, CheckpointKey};

/// What one waiting source holds.
#[derive(Default)]
pub(super) struct Held {
    /// Its entries, in order.
    pub(super) entries: Vec<Joined<'static>>,
    /// The checkpoints those entries advance (released with them).
    pub(super) checkpoints: BTreeMap<CheckpointKey, Checkpoint>,
}

/// The sources waiting for their pod.
#[derive(Default)]
pub(super) struct Waiting {
    held: HashMap<SourceId, Held>,
}

/// Whether `source` must wait: a container log whose pod is not known,
/// first seen less than `pod_wait` ago, while waiting can still help.
pub(super) fn must_wait(source: &Source, pod: PodState, pod_wait: Duration) -> bool {
    source.identity.is_some() && pod == PodState::Expected && source.first_seen.elapsed() < pod_wait
}

/// What the pod cache says of a source's pod.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum PodState {
    /// Cached.
    Known,
    /// Not cached, but its metadata may still arrive.
    Expected,
    /// Not cached, and waiting will not help (see
    /// [`PodCache::worth_waiting_for`](super::metadata::PodCache::worth_waiting_for)).
    Missing,
}

impl Waiting {
    /// Whether `id` holds entries or checkpoints.
    pub(super) fn is_holding(&self, id: SourceId) -> bool {
        self.held.contains_key(&id)
    }

    /// Keeps `entry` of `id` (copied out of the read buffer).
    pub(super) fn hold(&mut self, id: SourceId, entry: Joined<'_>) {
        self.held
            .entry(id)
            .or_default()
            .entries
            .push(entry.into_owned());
    }

    /// Keeps `checkpoint` with `id`'s held entries; gives it back when `id`
    /// holds nothing (then it goes out with this batch).
    pub(super) fn hold_checkpoint(
        &mut self,
        id: Option<SourceId>,
        checkpoint: Checkpoint,
    ) -> Option<Checkpoint> {
        match id.and_then(|id| self.held.get_mut(&id)) {
            Some(held) => {
                held.checkpoints.insert(checkpoint.key, checkpoint);
                None
            }
            None => Some(checkpoint),
        }
    }

    /// Bytes of the entries held.
    pub(super) fn held_bytes(&self) -> usize {
        self.held
            .values()
            .flat_map(|h| &h.entries)
            .map(|e| e.message.len())
            .sum()
    }

    /// The sources holding something.
    pub(super) fn sources(&self) -> Vec<SourceId> {
        self.held.keys().copied().collect()
    }

    /// The source holding the checkpoint `key`.
    pub(super) fn holder_of(&self, key: &CheckpointKey) -> Option<SourceId> {
        self.held
            .iter()
            .find(|(_, h)| h.checkpoints.contains_key(key))
            .map(|(id, _)| *id)
    }

    /// Everything `id` held, which goes out now.
    pub(super) fn release(&mut self, id: SourceId) -> Option<Held> {
        self.held.remove(&id)
    }

    /// When the first waiting source's wait ends.
    pub(super) fn deadline(
        &self,
        first_seen: impl Fn(SourceId) -> Instant,
        pod_wait: Duration,
    ) -> Option<Instant> {
        self.held.keys().map(|id| first_seen(*id) + pod_wait).min()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::log_collector::kubernetes::decode::Stream;
    use crate::log_collector::kubernetes::sources::Sources;
    use std::sync::Arc;

    fn entry(text: &str) -> Joined<'_> {
        Joined {
            timestamp: 1,
            stream: Stream::Stdout,
            message: text.as_bytes().into(),
            truncated: false,
        }
    }

    #[test]
    fn held_entries_and_checkpoints_go_out_together() {
        let mut sources = Sources::default();
        let path: Arc<str> = Arc::from(
            "/var/log/containers/web-1_default_nginx-0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef.log",
        );
        let id = sources.id(&path);
        let wait = Duration::from_secs(60);
        assert!(must_wait(sources.get(id), PodState::Expected, wait));
        assert!(!must_wait(sources.get(id), PodState::Known, wait));
        assert!(!must_wait(sources.get(id), PodState::Missing, wait));
        assert!(!must_wait(
            sources.get(id),
            PodState::Expected,
            Duration::ZERO
        ));

        let mut waiting = Waiting::default();
        let checkpoint = Checkpoint {
            key: CheckpointKey {
                dev: 1,
                ino: 2,
                fingerprint: crate::log_collector::directory::fingerprint::Fingerprint(3),
            },
            offset: 7,
            marker: 0,
            path: path.clone(),
            born: None,
            truncated: false,
        };
        let key = checkpoint.key;
        // Nothing held: the checkpoint goes out at once.
        assert!(
            waiting
                .hold_checkpoint(Some(id), checkpoint.clone())
                .is_some()
        );
        let line = String::from("first");
        waiting.hold(id, entry(&line));
        drop(line);
        assert!(waiting.is_holding(id));
        assert!(waiting.hold_checkpoint(Some(id), checkpoint).is_none());
        assert_eq!(waiting.holder_of(&key), Some(id));
        let deadline = waiting.deadline(|_| Instant::now(), Duration::from_secs(5));
        assert!(deadline.is_some());
        let held = waiting.release(id).unwrap();
        assert_eq!(held.entries.len(), 1);
        assert_eq!(&*held.entries[0].message, b"first");
        assert_eq!(held.checkpoints.len(), 1);
        assert!(!waiting.is_holding(id));
    }
}
