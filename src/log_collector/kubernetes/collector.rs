//! The Kubernetes collector: the directory collector over
//! `/var/log/containers`, plus what makes its lines container log entries —
//! who wrote them (file name, pod cache), their runtime format, joined
//! partial lines, and the entry's own timestamp.
//!
//! Its output is the store's write: entries grouped by label set, and
//! checkpoints that carry the pieces of a split line still waiting for their
//! end, so a restart loses and repeats nothing even mid-line.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::format::{Format, Joined, Joiner, Pending, Stream};
use super::metadata::{PodCache, PodInfo};
use super::names::{FileIdentity, identify};
use crate::log_collector::checkpoint::{Checkpoint, CheckpointKey, CheckpointSet};
use crate::log_collector::directory::batch::{Batch, FileId};
use crate::log_collector::directory::{CollectorError, DirectoryCollector, DirectoryConfig};
use crate::log_database::labels::{Labels, StreamId, sanitize_name};
use crate::log_database::{StreamEntries, WriteBatch, now_ns};
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
    /// Lines labelled from the file name alone (pod not in the cache).
    pub unlabelled_lines: u64,
}

/// A file checkpoint plus the pieces of a split line waiting for their end.
#[derive(Serialize, Deserialize)]
struct KubeCheckpoint {
    #[serde(flatten)]
    checkpoint: Checkpoint,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pending: Vec<(Stream, Pending)>,
}

struct Source {
    identity: Option<FileIdentity>,
    first_seen: Instant,
    /// Its pod as last looked up, and the cache generation then.
    pod: Option<(u64, Option<Arc<PodInfo>>)>,
    /// Label sets by stream, with the pod version they were built from,
    /// as empty store streams to clone (which shares the label set).
    labels: HashMap<Stream, (String, StreamEntries)>,
}

/// Entries and checkpoints of a file waiting for its pod's metadata.
#[derive(Default)]
struct Held {
    entries: Vec<Joined<'static>>,
    checkpoints: BTreeMap<CheckpointKey, Checkpoint>,
}

/// Tails container logs and produces labelled store writes.
pub struct KubernetesCollector {
    directory: DirectoryCollector,
    batch: Batch,
    config: KubernetesConfig,
    cache: PodCache,
    sources: HashMap<Arc<str>, Source>,
    formats: HashMap<FileId, Format>,
    joiner: Joiner,
    held: HashMap<Arc<str>, Held>,
    /// Checkpoints written with pending pieces, per source: rewritten when
    /// the pieces are handed on.
    with_pending: HashMap<String, BTreeMap<CheckpointKey, Checkpoint>>,
    /// Rotated-while-down bytes, handed on with the first batch.
    recovered: Vec<super::rotated::Recovered>,
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
        Ok(Self {
            directory,
            batch: Batch::default(),
            config,
            cache,
            sources: HashMap::new(),
            formats: HashMap::new(),
            joiner,
            held: HashMap::new(),
            with_pending: HashMap::new(),
            recovered,
            stats: KubernetesStats::default(),
        })
    }

    /// The directory collector's counters.
    pub fn directory(&self) -> &DirectoryCollector {
        &self.directory
    }

    /// This layer's counters.
    pub fn stats(&self) -> KubernetesStats {
        self.stats.clone()
    }

    /// A handle that makes a blocked `next_batch` return.
    pub fn waker(&self) -> Arc<dyn Wake> {
        self.directory.waker()
    }

    fn source(&mut self, path: &Arc<str>) -> &mut Source {
        if !self.sources.contains_key(path) {
            let identity = identify(Path::new(&**path));
            if identity.is_none() {
                self.stats.unrecognised_files += 1;
                tracing::warn!(path = %path, "Not a container log (no <pod>_<namespace>_<container>-<id>.log name, no /var/log/pods target); skipping it.");
            }
            self.sources.insert(
                path.clone(),
                Source {
                    identity,
                    first_seen: Instant::now(),
                    labels: HashMap::new(),
                    pod: None,
                },
            );
        }
        self.sources.get_mut(path).expect("just inserted")
    }

    /// `path`'s pod, if the cache knows it; looked up again only after the
    /// cache changed (most batches touch every source).
    fn pod(&mut self, path: &Arc<str>) -> Option<Arc<PodInfo>> {
        let generation = self.cache.generation();
        let cache = self.cache.clone();
        let source = self.source(path);
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

    /// Whether entries of `path` must wait for their pod's metadata.
    fn waiting(&mut self, path: &Arc<str>) -> bool {
        let wait = self.config.pod_wait;
        let pod = self.pod(path);
        let source = self.source(path);
        source.identity.is_some() && pod.is_none() && source.first_seen.elapsed() < wait
    }

    /// An empty store stream for `path`'s `stream`, labelled; built once
    /// per pod version, then shared.
    fn labels(&mut self, path: &Arc<str>, stream: Stream) -> Option<StreamEntries> {
        let pod = self.pod(path);
        let config = &self.config;
        let source = self.sources.get_mut(path).expect("pod() added it");
        let identity = source.identity.as_ref()?;
        let version = pod.as_ref().map_or("", |p| p.version.as_str());
        if let Some((v, labels)) = source.labels.get(&stream)
            && v == version
        {
            return Some(labels.clone());
        }
        let mut pairs: Vec<(String, String)> = Vec::new();
        if let Some(pod) = &pod {
            for (name, value) in &pod.labels {
                let name = sanitize_name(name);
                let included = config.include_labels.is_empty()
                    || config
                        .include_labels
                        .iter()
                        .any(|l| sanitize_name(l) == name);
                let excluded = config
                    .exclude_labels
                    .iter()
                    .any(|l| sanitize_name(l) == name);
                if included && !excluded {
                    pairs.push((name, value.clone()));
                }
            }
        }
        if let Some(pod) = &pod {
            for name in &config.include_annotations {
                if let Some(value) = pod.annotations.get(name) {
                    pairs.push((sanitize_name(name), value.clone()));
                }
            }
        }
        // The built-in labels win over pod labels of the same name.
        pairs.push(("namespace".into(), identity.namespace.clone()));
        pairs.push(("pod_name".into(), identity.pod.clone()));
        pairs.push(("container_name".into(), identity.container.clone()));
        pairs.push((
            "container_id".into(),
            identity.container_id.clone().unwrap_or_default(),
        ));
        pairs.push(("node_name".into(), config.node_name.clone()));
        pairs.push(("stream".into(), stream.as_str().into()));
        let labels = StreamEntries::new(Labels::new(pairs));
        source
            .labels
            .insert(stream, (version.to_owned(), labels.clone()));
        Some(labels)
    }

    /// Fills `out` (cleared first) with the next labelled entries and
    /// checkpoints; blocks as the directory collector does.
    pub fn next_batch(
        &mut self,
        out: &mut WriteBatch,
        timeout: Option<Duration>,
    ) -> Result<(), CollectorError> {
        out.streams.clear();
        out.checkpoints.clear();
        // Wake up for held files and unfinished lines in time.
        let soonest = [
            self.held
                .keys()
                .filter_map(|p| self.sources.get(p))
                .map(|s| s.first_seen + self.config.pod_wait)
                .min(),
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
        if !self.recovered.is_empty() {
            timeout = Some(Duration::from_millis(1));
        }
        let mut batch = std::mem::take(&mut self.batch);
        let result = self.directory.next_batch(&mut batch, timeout);
        if result.is_ok() {
            self.convert(&batch, out);
        }
        self.batch = batch;
        result
    }

    /// Decodes one line of `source` and feeds the joiner.
    fn decode<'a>(
        &mut self,
        source: &Arc<str>,
        format: Format,
        bytes: &'a [u8],
        read_at: i64,
        entries: &mut Vec<(Arc<str>, Joined<'a>)>,
    ) {
        match format.parse(bytes) {
            Ok(record) => {
                if let Some(joined) = self.joiner.push(source, record) {
                    if joined.truncated {
                        self.stats.truncated_lines += 1;
                    }
                    entries.push((source.clone(), joined));
                }
            }
            Err(_) => {
                // Kept as it is, timestamped now, never dropped.
                self.stats.malformed_lines += 1;
                entries.push((
                    source.clone(),
                    Joined {
                        timestamp: read_at,
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
        // Lines borrow from the batch (and from the recovered bytes) until
        // they are copied into the store's write.
        let recovered = std::mem::take(&mut self.recovered);
        let mut entries: Vec<(Arc<str>, Joined)> = Vec::new();
        let mut finished: Vec<CheckpointKey> = batch.forgotten.clone();
        for recovered in &recovered {
            let source: Arc<str> = Arc::from(recovered.source.as_str());
            if self.source(&source).identity.is_none() {
                continue;
            }
            let mut format = None;
            for line in recovered
                .bytes
                .split(|&b| b == b'\n')
                .filter(|l| !l.is_empty())
            {
                let f = *format.get_or_insert_with(|| Format::detect(line));
                self.decode(&source, f, line, read_at, &mut entries);
            }
            finished.extend(recovered.finishes.iter().copied());
        }
        // Lines of a file come together: look the file up once per run.
        let mut last: Option<(FileId, bool, Format)> = None;
        for line in batch.lines() {
            let (known, format) = match last {
                Some((file, known, format)) if file == line.file => (known, format),
                _ => {
                    let known = self.source(line.source).identity.is_some();
                    let format = *self
                        .formats
                        .entry(line.file)
                        .or_insert_with(|| Format::detect(line.bytes));
                    last = Some((line.file, known, format));
                    (known, format)
                }
            };
            if known {
                self.decode(line.source, format, line.bytes, read_at, &mut entries);
            }
        }
        for (source, joined) in self.joiner.expired(self.config.partial_timeout) {
            if let Some((path, _)) = self.sources.get_key_value(source.as_str()) {
                entries.push((path.clone(), joined));
            }
        }
        // Entries of files whose pod is not known yet wait, with their
        // checkpoints; the rest go out now.
        let mut ready: Vec<(Arc<str>, Joined)> = Vec::with_capacity(entries.len());
        // Decided once per source per batch, not per line.
        let mut waits: HashMap<*const u8, bool> = HashMap::new();
        for (source, joined) in entries {
            let key = source.as_ptr();
            let wait = match waits.get(&key) {
                Some(w) => *w,
                None => {
                    let w = self.held.contains_key(&source) || self.waiting(&source);
                    waits.insert(key, w);
                    w
                }
            };
            if wait {
                self.held
                    .entry(source)
                    .or_default()
                    .entries
                    .push(joined.into_owned());
            } else {
                ready.push((source, joined));
            }
        }
        let mut checkpoints: Vec<Checkpoint> = Vec::new();
        for c in &batch.checkpoints {
            let path = c.path.clone();
            match self.held.get_mut(&path) {
                Some(held) => {
                    held.checkpoints.insert(c.key, c.clone());
                }
                None => checkpoints.push(c.clone()),
            }
        }
        // Release what waited long enough or whose pod arrived, and what a
        // finished file left behind.
        let forgotten_paths: Vec<Arc<str>> = batch
            .forgotten
            .iter()
            .filter_map(|k| {
                self.held
                    .iter()
                    .find(|(_, h)| h.checkpoints.contains_key(k))
                    .map(|(p, _)| p.clone())
            })
            .collect();
        let releasable: Vec<Arc<str>> = self
            .held
            .keys()
            .filter(|p| forgotten_paths.contains(p))
            .cloned()
            .collect::<Vec<_>>()
            .into_iter()
            .chain(
                self.held
                    .keys()
                    .cloned()
                    .collect::<Vec<_>>()
                    .into_iter()
                    .filter(|p| !self.waiting(p)),
            )
            .collect();
        for path in releasable {
            if let Some(held) = self.held.remove(&path) {
                if self.sources[&path].identity.is_some() && self.pod(&path).is_none() {
                    self.stats.unlabelled_lines += held.entries.len() as u64;
                }
                ready.extend(held.entries.into_iter().map(|j| (path.clone(), j)));
                checkpoints.extend(held.checkpoints.into_values());
            }
        }
        // Group by stream; label sets are built once per source and stream
        // and shared after that.
        let mut groups: HashMap<StreamId, usize> = HashMap::new();
        let mut slots: HashMap<(*const u8, Stream), Option<usize>> = HashMap::new();
        for (source, joined) in &ready {
            let slot = match slots.get(&(source.as_ptr(), joined.stream)) {
                Some(slot) => *slot,
                None => {
                    let slot = self.labels(source, joined.stream).map(|stream| {
                        *groups.entry(stream.id()).or_insert_with(|| {
                            out.streams.push(stream);
                            out.streams.len() - 1
                        })
                    });
                    slots.insert((source.as_ptr(), joined.stream), slot);
                    slot
                }
            };
            if let Some(i) = slot {
                out.streams[i].push(joined.timestamp, &joined.message);
            }
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
