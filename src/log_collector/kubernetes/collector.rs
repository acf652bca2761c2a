//! The Kubernetes collector: the directory collector over
//! `/var/log/containers`, then the stages that make its lines container log
//! entries, in order: [`decode`](super::decode) (CRI or Docker json-file),
//! [`join`](super::join) (split lines), [`wait`](super::wait) (for the pod's
//! metadata), [`label`](super::label) and [`group`](super::group) (into the
//! store's write). [`sources`](super::sources) is what it knows per path.
//!
//! Its output is the store's write: entries grouped by label set, and
//! checkpoints that carry the pieces of a split line still waiting for their
//! end, so a restart loses and repeats nothing even mid-line.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::decode::{Format, Stream};
use super::group::Grouper;
use super::join::{Joined, Joiner, Pending};
use super::label::LabelRules;
use super::memo::RunMemo;
use super::metadata::PodCache;
use super::sources::{SourceId, Sources};
use super::wait::{Waiting, must_wait};
use crate::log_collector::checkpoint::{Checkpoint, CheckpointKey, CheckpointSet};
use crate::log_collector::clock::ReaderClock;
use crate::log_collector::directory::batch::{Batch, FileId};
use crate::log_collector::directory::{CollectorError, DirectoryCollector, DirectoryConfig};
use crate::log_database::{Entries, StreamEntries, WriteBatch, now_ns};
use crate::watcher::{Wake, Watcher};

/// How the Kubernetes collector behaves.
#[derive(Clone, Debug)]
pub struct KubernetesConfig {
    /// The directory collector under it (root: `/var/log/containers`).
    pub directory: DirectoryConfig,
    /// This node's name (the `node_name` label).
    pub node_name: String,
    /// Pod labels to keep (all when empty).
    pub include_labels: Vec<String>,
    /// Pod labels to drop.
    pub exclude_labels: Vec<String>,
    /// Pod annotations that become labels (none by default).
    pub include_annotations: Vec<String>,
    /// How long a file whose pod is not in the cache yet waits for it.
    pub pod_wait: Duration,
    /// A split line whose final part does not come within this is handed on.
    pub partial_timeout: Duration,
}

impl KubernetesConfig {
    /// Defaults over `root`.
    pub fn new(root: impl Into<std::path::PathBuf>, node_name: &str) -> Self {
        Self {
            directory: DirectoryConfig::new(root),
            node_name: node_name.to_owned(),
            include_labels: Vec::new(),
            exclude_labels: Vec::new(),
            include_annotations: Vec::new(),
            pod_wait: Duration::from_secs(5),
            partial_timeout: Duration::from_secs(30),
        }
    }
}

/// Counters of the Kubernetes layer.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct KubernetesStats {
    /// Lines that were neither CRI nor Docker json (kept raw).
    pub malformed_lines: u64,
    /// Files whose name and target say nothing about a pod (skipped).
    pub unrecognised_files: u64,
    /// Lines cut because their pieces exceeded the maximum line size.
    pub truncated_lines: u64,
    /// Lines stored with the labels of their file name alone, because the
    /// pod list had not been received from the API server (unreachable,
    /// slow, or not allowed) when their pod wait ended.
    pub without_metadata_api_unavailable: u64,
    /// Lines stored with the labels of their file name alone, because the
    /// API server did not know their pod (a pod deleted long ago, say).
    pub without_metadata_pod_unknown: u64,
    /// Bytes of split lines waiting for their end (now).
    pub pending_piece_bytes: u64,
    /// Bytes of entries held for their pod's metadata (now).
    pub waiting_bytes: u64,
}

/// At most this much room is kept in emptied entry buffers between
/// batches (a batch's worth: `DirectoryConfig::batch_bytes`' default).
const SPARE_BYTES: usize = 4 << 20;

/// Empties `out` into `spare`: its streams' buffers, cleared, as long as
/// all of `spare` has room for at most `bound` bytes.
fn recycle(spare: &mut Vec<Entries>, out: &mut WriteBatch, bound: usize) {
    let mut kept: usize = spare.iter().map(Entries::capacity_bytes).sum();
    for stream in out.streams.drain(..) {
        let mut entries = stream.entries;
        let room = entries.capacity_bytes();
        if kept + room <= bound {
            kept += room;
            entries.clear();
            spare.push(entries);
        }
    }
    out.checkpoints.clear();
}

/// How often a file waiting for its pod looks at the pod cache again.
const GATE_RECHECK: Duration = Duration::from_millis(200);

/// A file checkpoint plus the pieces of a split line waiting for their end.
#[derive(Serialize, Deserialize)]
struct KubeCheckpoint {
    #[serde(flatten)]
    checkpoint: Checkpoint,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pending: Vec<(Stream, Pending)>,
}

/// Tails container logs and produces labelled store writes.
pub struct KubernetesCollector {
    directory: DirectoryCollector,
    batch: Batch,
    config: KubernetesConfig,
    rules: LabelRules,
    cache: PodCache,
    sources: Sources,
    formats: HashMap<FileId, Format>,
    joiner: Joiner,
    waiting: Waiting,
    /// Checkpoints written with pending pieces, per source: rewritten when
    /// the pieces are handed on.
    with_pending: HashMap<String, BTreeMap<CheckpointKey, Checkpoint>>,
    /// Rotated-while-down bytes, handed on with the first batch.
    recovered: super::rotated::Recovery,
    /// Times for lines that carry none (not CRI or JSON).
    clock: ReaderClock,
    /// Emptied entry buffers of earlier writes: a busy node fills them
    /// again instead of growing every stream's buffers from nothing on
    /// every batch (the allocator was a sixth of its CPU).
    spare: Vec<Entries>,
    stats: KubernetesStats,
}

impl KubernetesCollector {
    /// Starts tailing, resuming from the store's checkpoints.
    pub fn new(
        config: KubernetesConfig,
        watcher: Box<dyn Watcher>,
        stored: &BTreeMap<String, Vec<u8>>,
        cache: PodCache,
    ) -> Result<Self, CollectorError> {
        let mut joiner = Joiner::new(config.directory.max_line_bytes);
        for bytes in stored.values() {
            if let Ok(k) = serde_json::from_slice::<KubeCheckpoint>(bytes) {
                for (stream, pending) in k.pending {
                    joiner.restore(&k.checkpoint.path, stream, pending);
                }
            }
        }
        let checkpoints = CheckpointSet::from_store(stored);
        let directory = DirectoryCollector::new(config.directory.clone(), watcher, &checkpoints)?;
        let recovered = super::rotated::recover(&directory.unmatched_checkpoints());
        let rules = LabelRules {
            node_name: config.node_name.clone(),
            include_labels: config.include_labels.clone(),
            exclude_labels: config.exclude_labels.clone(),
            include_annotations: config.include_annotations.clone(),
        };
        Ok(Self {
            directory,
            batch: Batch::default(),
            config,
            rules,
            cache,
            sources: Sources::default(),
            formats: HashMap::new(),
            joiner,
            waiting: Waiting::default(),
            with_pending: HashMap::new(),
            recovered,
            clock: ReaderClock::default(),
            spare: Vec::new(),
            stats: KubernetesStats::default(),
        })
    }

    /// The directory collector's counters.
    pub fn directory(&self) -> &DirectoryCollector {
        &self.directory
    }

    /// This layer's counters.
    pub fn stats(&self) -> KubernetesStats {
        KubernetesStats {
            unrecognised_files: self.sources.unrecognised,
            pending_piece_bytes: self.joiner.pending_bytes() as u64,
            waiting_bytes: self.waiting.held_bytes() as u64,
            ..self.stats.clone()
        }
    }

    /// A handle that makes a blocked `next_batch` return.
    pub fn waker(&self) -> Arc<dyn Wake> {
        self.directory.waker()
    }

    /// Whether entries of `id` must wait for their pod's metadata.
    fn must_wait(&mut self, id: SourceId) -> bool {
        let pod = self.sources.pod_state(id, &self.cache);
        must_wait(self.sources.get(id), pod, self.config.pod_wait)
    }

    /// An empty store stream for `id`'s `stream`, labelled (`None` for a
    /// file that is not a container log).
    fn labels(&mut self, id: SourceId, stream: Stream) -> Option<StreamEntries> {
        let pod = self.sources.pod(id, &self.cache);
        let source = self.sources.get_mut(id);
        let identity = source.identity.as_ref()?;
        let mut entries = source
            .labels
            .stream(identity, pod.as_deref(), stream, &self.rules);
        if let Some(spare) = self.spare.pop() {
            entries.entries = spare;
        }
        Some(entries)
    }

    /// Fills `out` (cleared first) with the next labelled entries and
    /// checkpoints; blocks as the directory collector does.
    pub fn next_batch(
        &mut self,
        out: &mut WriteBatch,
        timeout: Option<Duration>,
    ) -> Result<(), CollectorError> {
        recycle(&mut self.spare, out, SPARE_BYTES);
        // Wake up for held files and unfinished lines in time.
        let soonest = [
            self.waiting
                .deadline(|id| self.sources.get(id).first_seen, self.config.pod_wait),
            self.joiner
                .oldest()
                .map(|t| t + self.config.partial_timeout),
        ]
        .into_iter()
        .flatten()
        .min()
        .map(|t| {
            t.saturating_duration_since(Instant::now())
                .max(Duration::from_millis(10))
        });
        let mut timeout = match (timeout, soonest) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        // Lines recovered from rotated files go out without waiting.
        if self.recovered.is_pending() {
            timeout = Some(Duration::from_millis(1));
        }
        let mut batch = std::mem::take(&mut self.batch);
        // A file whose pod is not known yet is not read while it may wait
        // (the file is the buffer); the gate looks again every
        // `GATE_RECHECK` in case the metadata arrived.
        let (sources, cache, pod_wait) = (&mut self.sources, &self.cache, self.config.pod_wait);
        let mut gate = |path: &Arc<str>, born: Option<i64>| {
            let id = sources.id(path);
            sources.born(id, born);
            let pod = sources.pod_state(id, cache);
            let source = sources.get(id);
            must_wait(source, pod, pod_wait)
                .then(|| (source.first_seen + pod_wait).min(Instant::now() + GATE_RECHECK))
        };
        let result = self
            .directory
            .next_batch_gated(&mut batch, timeout, &mut gate);
        if result.is_ok() {
            self.convert(&batch, out);
        }
        self.batch = batch;
        result
    }

    /// Stages 1 and 2 for one line of `id`: decode, then join. A line in
    /// neither format is kept as it is, timestamped when read.
    fn decode<'a>(
        &mut self,
        id: SourceId,
        format: Format,
        bytes: &'a [u8],
        read_at: i64,
        entries: &mut Vec<(SourceId, Joined<'a>)>,
    ) {
        match format.parse(bytes) {
            Ok(record) => {
                if let Some(joined) = self.joiner.push(&self.sources.get(id).path, record) {
                    if joined.truncated {
                        self.stats.truncated_lines += 1;
                    }
                    entries.push((id, joined));
                }
            }
            Err(_) => {
                self.stats.malformed_lines += 1;
                let timestamp = self.clock.stamp(&self.sources.get(id).path, read_at);
                entries.push((
                    id,
                    Joined {
                        timestamp,
                        stream: Stream::Stdout,
                        message: bytes.into(),
                        truncated: false,
                    },
                ));
            }
        }
    }

    fn convert(&mut self, batch: &Batch, out: &mut WriteBatch) {
        let read_at = now_ns();
        self.clock.forget_before(read_at);
        // Lines borrow from the batch (and from the recovered bytes) until
        // they are copied into the store's write.
        // At most one batch's worth of rotated-while-down lines at a time.
        let mut recovered = Vec::new();
        let mut budget = self.config.directory.batch_bytes;
        while budget > 0
            && let Some(chunk) = self.recovered.next_chunk(budget)
        {
            budget = budget.saturating_sub(chunk.bytes.len().max(1));
            recovered.push(chunk);
        }
        let mut entries: Vec<(SourceId, Joined)> = Vec::with_capacity(batch.len());
        let mut finished: Vec<CheckpointKey> = batch.forgotten.clone();
        let mut progress: Vec<Checkpoint> = Vec::new();
        for chunk in &recovered {
            finished.extend(chunk.forgets);
            progress.extend(chunk.checkpoint.clone());
            let id = self.sources.id(&chunk.source);
            if self.sources.get(id).identity.is_none() {
                continue;
            }
            let mut format = None;
            for line in chunk.bytes.split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
                let f = *format.get_or_insert_with(|| Format::detect(line));
                self.decode(id, f, line, read_at, &mut entries);
            }
        }
        // Lines of a file come together: look the file up once per run.
        let mut last: Option<(FileId, SourceId, bool, Format)> = None;
        for line in batch.lines() {
            let (id, known, format) = match last {
                Some((file, id, known, format)) if file == line.file => (id, known, format),
                _ => {
                    let id = self.sources.id(line.source);
                    let known = self.sources.get(id).identity.is_some();
                    let format = *self
                        .formats
                        .entry(line.file)
                        .or_insert_with(|| Format::detect(line.bytes));
                    last = Some((line.file, id, known, format));
                    (id, known, format)
                }
            };
            if known {
                self.decode(id, format, line.bytes, read_at, &mut entries);
            }
        }
        for (source, joined) in self.joiner.expired(self.config.partial_timeout) {
            if let Some(id) = self.sources.find(&source) {
                entries.push((id, joined));
            }
        }
        // Stage 3: entries of files whose pod is not known yet wait, with
        // their checkpoints; the rest go out now. Decided once per source
        // per batch, not per line.
        let mut ready: Vec<(SourceId, Joined)> = Vec::with_capacity(entries.len());
        let mut waits = RunMemo::new();
        for (id, joined) in entries {
            let wait = waits.get(id, || self.waiting.is_holding(id) || self.must_wait(id));
            if wait {
                self.waiting.hold(id, joined);
            } else {
                ready.push((id, joined));
            }
        }
        let mut checkpoints: Vec<Checkpoint> = Vec::new();
        for c in progress.iter().chain(&batch.checkpoints) {
            let id = self.sources.find(&c.path);
            checkpoints.extend(self.waiting.hold_checkpoint(id, c.clone()));
        }
        // Release what waited long enough or whose pod arrived, and what a
        // finished file left behind.
        let mut releasable: Vec<SourceId> = batch
            .forgotten
            .iter()
            .filter_map(|k| self.waiting.holder_of(k))
            .collect();
        for id in self.waiting.sources() {
            if !self.must_wait(id) {
                releasable.push(id);
            }
        }
        for id in releasable {
            if let Some(held) = self.waiting.release(id) {
                ready.extend(held.entries.into_iter().map(|j| (id, j)));
                checkpoints.extend(held.checkpoints.into_values());
            }
        }
        // Stages 4 and 5: label and group, counting what goes out without
        // its pod's labels (once per source per batch, then per line).
        let unavailable = !self.cache.synced() || self.cache.failing();
        let mut without = RunMemo::new();
        let mut grouper = Grouper::new(out);
        for (id, joined) in &ready {
            let missing = without.get(*id, || {
                self.sources.get(*id).identity.is_some()
                    && self.sources.pod(*id, &self.cache).is_none()
            });
            if missing {
                match unavailable {
                    true => self.stats.without_metadata_api_unavailable += 1,
                    false => self.stats.without_metadata_pod_unknown += 1,
                }
            }
            grouper.push(
                *id,
                joined.stream,
                joined.timestamp,
                &joined.message,
                || self.labels(*id, joined.stream),
            );
        }
        drop(ready);
        self.write_checkpoints(checkpoints, &finished, out);
    }

    /// Adds checkpoints with the pieces their source still waits on, and
    /// rewrites earlier ones whose pieces have since been handed on.
    fn write_checkpoints(
        &mut self,
        checkpoints: Vec<Checkpoint>,
        forgotten: &[CheckpointKey],
        out: &mut WriteBatch,
    ) {
        let mut written: BTreeMap<CheckpointKey, Checkpoint> = BTreeMap::new();
        for c in checkpoints {
            written.insert(c.key, c);
        }
        // Sources whose pieces changed: rewrite their earlier checkpoints.
        let sources: Vec<String> = self.with_pending.keys().cloned().collect();
        for source in sources {
            let now_pending = self.joiner.pending_for(&source);
            if let Some(old) = self.with_pending.get_mut(&source) {
                for (key, c) in old.iter() {
                    written.entry(*key).or_insert_with(|| c.clone());
                }
                if now_pending.is_empty() {
                    old.clear();
                }
            }
        }
        self.with_pending.retain(|_, v| !v.is_empty());
        for key in forgotten {
            written.remove(key);
            for v in self.with_pending.values_mut() {
                v.remove(key);
            }
            out.checkpoints.push((key.store_key(), None));
        }
        for (key, checkpoint) in written {
            let pending = self.joiner.pending_for(&checkpoint.path);
            if !pending.is_empty() {
                self.with_pending
                    .entry(checkpoint.path.to_string())
                    .or_default()
                    .insert(key, checkpoint.clone());
            }
            let value = serde_json::to_vec(&KubeCheckpoint {
                checkpoint,
                pending,
            })
            .expect("checkpoints serialize");
            out.checkpoints.push((key.store_key(), Some(value)));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::log_database::labels::Labels;

    #[test]
    fn recycled_buffers_are_empty_and_bounded() {
        let stream = |n: usize| {
            let line = vec![b'x'; 100];
            StreamEntries::with(
                Labels::new([("n", n.to_string().as_str())]),
                (0..n).map(|i| (i as i64, line.clone())),
            )
        };
        let mut out = WriteBatch {
            streams: vec![stream(10), stream(1_000), stream(20)],
            checkpoints: vec![("k".into(), None)],
        };
        let small =
            out.streams[0].entries.capacity_bytes() + out.streams[2].entries.capacity_bytes();
        let mut spare = Vec::new();
        // Room for the two small streams, not for the large one.
        recycle(&mut spare, &mut out, small + 100);
        assert!(out.streams.is_empty() && out.checkpoints.is_empty());
        assert_eq!(spare.len(), 2);
        assert!(spare.iter().all(|e| e.is_empty() && e.capacity_bytes() > 0));
        assert!(spare.iter().map(Entries::capacity_bytes).sum::<usize>() <= small + 100);
        // A full spare list takes nothing more.
        out.streams.push(stream(10));
        recycle(&mut spare, &mut out, small + 100);
        assert_eq!(spare.len(), 2);
    }
}
