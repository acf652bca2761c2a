//! Flushing: heads become compressed blocks appended to the segment files of
//! their hour, fsynced, then one commit record names the blocks together
//! with the checkpoints of every batch written so far. A failed flush puts
//! everything back and cuts the segments to what commits cover.

use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering;

use super::block::{self, BlockRef, Entries};
use super::labels::StreamId;
use super::manifest::{Manifest, Record};
use super::{Database, StoreError, io_err};

/// The segment file of one hour that flushes append to.
pub(super) struct OpenSegment {
    id: u32,
    file: File,
    len: u64,
}

/// What only one flush at a time may touch: the commit log and the open
/// segment files.
pub(super) struct Writer {
    pub(super) manifest: Manifest,
    pub(super) segments: HashMap<u32, OpenSegment>,
    pub(super) next_segment: u32,
    /// Test seam: fail writes with this error kind.
    pub(super) fault: Option<io::ErrorKind>,
    /// The compression context, made at the first flush and kept.
    compressor: Option<zstd::bulk::Compressor<'static>>,
    /// Test seam: a flush says it started writing blocks, then waits to
    /// be let go, as a flush on a slow disk or slow cores would.
    #[cfg(test)]
    pub(super) stall: Option<(std::sync::mpsc::Sender<()>, std::sync::mpsc::Receiver<()>)>,
}

impl Writer {
    /// The writer of a freshly recovered store.
    pub(super) fn new(manifest: Manifest, next_segment: u32) -> Self {
        Self {
            manifest,
            segments: HashMap::new(),
            next_segment,
            fault: None,
            compressor: None,
            #[cfg(test)]
            stall: None,
        }
    }
}

/// Nanoseconds in one partition.
pub(super) const NS_PER_HOUR: i64 = 3_600_000_000_000;

/// The partition (hours since the epoch) an entry time falls in.
pub(super) fn partition_of(ts: i64) -> u32 {
    (ts.max(0) / NS_PER_HOUR).min(u32::MAX as i64) as u32
}

/// The path of a segment file.
pub(super) fn segment_path(partitions: &Path, partition: u32, segment: u32) -> PathBuf {
    partitions
        .join(partition.to_string())
        .join(format!("{segment:08}.seg"))
}

impl Database {
    /// Makes everything written so far durable: heads become blocks, then
    /// one commit record names them with the pending checkpoints.
    pub fn flush(&self) -> Result<(), StoreError> {
        let mut writer = self.lock_writer();
        // Take the heads; they stay queryable as `flushing`.
        let (taken, checkpoints, new_streams) = {
            let mut inner = self.write_inner();
            let mut taken = Vec::new();
            let mut new_streams = Vec::new();
            for (id, stream) in inner.index.streams.iter_mut() {
                if stream.head.is_empty() {
                    continue;
                }
                let head = Arc::new(std::mem::take(&mut stream.head));
                stream.flushing = Some(head.clone());
                taken.push((*id, head));
                if stream.unlogged {
                    new_streams.push((*id, (*stream.labels).clone()));
                }
            }
            let checkpoints: Vec<(String, Option<Vec<u8>>)> =
                std::mem::take(&mut inner.pending).into_iter().collect();
            inner.flushing_bytes = taken.iter().map(|(_, h)| h.held_bytes()).sum();
            (taken, checkpoints, new_streams)
        };
        if taken.is_empty() && checkpoints.is_empty() {
            return Ok(());
        }
        let result = self.write_blocks(&mut writer, &taken).and_then(|blocks| {
            let record = Record::Commit {
                streams: new_streams.clone(),
                blocks: blocks.clone(),
                checkpoints: checkpoints.clone(),
            };
            if let Some(kind) = writer.fault {
                return Err(io_err(self.dir.join("manifest.log"))(io::Error::from(kind)));
            }
            writer
                .manifest
                .append(&record)
                .map_err(io_err(self.dir.join("manifest.log")))?;
            Ok(blocks)
        });
        let mut inner = self.write_inner();
        inner.flushing_bytes = 0;
        match result {
            Ok(blocks) => {
                for block in blocks {
                    if let Some(stream) = inner.index.streams.get_mut(&block.stream) {
                        let at = stream.blocks.partition_point(|b| {
                            (b.min_ts, b.max_ts) <= (block.min_ts, block.max_ts)
                        });
                        stream.blocks.insert(at, block);
                    }
                }
                for (id, head) in &taken {
                    if let Some(stream) = inner.index.streams.get_mut(id) {
                        stream.flushing = None;
                        stream.unlogged = false;
                    }
                    inner.head_bytes = inner.head_bytes.saturating_sub(head.held_bytes());
                }
                for (key, value) in checkpoints {
                    match value {
                        Some(v) => inner.durable.insert(key, v),
                        None => inner.durable.remove(&key),
                    };
                }
                if let Some(error) = inner.last_flush_error.take() {
                    tracing::info!(last_error = %error, "Flushing the log store works again; nothing was lost.");
                }
                drop(inner);
                self.flushes.fetch_add(1, Ordering::Relaxed);
                if writer.manifest.since_snapshot >= 4096 {
                    self.snapshot(&mut writer)?;
                }
                Ok(())
            }
            Err(error) => {
                // Put everything back: the heads (before anything written
                // since) and the checkpoints (unless overwritten since).
                for (id, head) in taken {
                    if let Some(stream) = inner.index.streams.get_mut(&id) {
                        let mut restored = (*head).clone();
                        let newer = std::mem::take(&mut stream.head);
                        restored.extend(&newer);
                        stream.head = restored;
                        stream.flushing = None;
                    }
                }
                for (key, value) in checkpoints {
                    inner.pending.entry(key).or_insert(value);
                }
                // Said once per streak of failures (a full disk fails every
                // attempt); the count is in /metrics.
                let first = inner.last_flush_error.is_none();
                inner.last_flush_error = Some(error.to_string());
                drop(inner);
                self.rollback_segments(&mut writer);
                self.flush_errors.fetch_add(1, Ordering::Relaxed);
                if first {
                    tracing::warn!(%error, "Flushing the log store failed; entries stay in memory and are retried, and collection waits once memory for them is used up. Free space in --data-directory.");
                } else {
                    tracing::debug!(%error, "Flushing the log store failed again.");
                }
                Err(error)
            }
        }
    }

    /// Compresses the taken heads and appends them to segments, fsynced.
    /// A head is cut into runs of one partition hour and at most
    /// `block_bytes`; large runs get a block each, small ones (quiet
    /// streams) are packed together.
    fn write_blocks(
        &self,
        writer: &mut Writer,
        taken: &[(StreamId, Arc<Entries>)],
    ) -> Result<Vec<BlockRef>, StoreError> {
        #[cfg(test)]
        if let Some((started, go)) = &writer.stall {
            let _ = started.send(());
            let _ = go.recv();
        }
        type Run<'e> = (StreamId, Cow<'e, Entries>);
        // Heads already in order (the usual case) are used as they are.
        let sorted: Vec<Run<'_>> = taken
            .iter()
            .map(|(id, head)| {
                let entries = if head.timestamps.is_sorted() {
                    Cow::Borrowed(&**head)
                } else {
                    Cow::Owned(head.sorted())
                };
                (*id, entries)
            })
            .collect();
        let mut groups: Vec<(u32, Vec<Run<'_>>)> = Vec::new();
        let mut small: BTreeMap<u32, Vec<Run<'_>>> = BTreeMap::new();
        for (id, head) in &sorted {
            for (hour, run) in self.runs(head) {
                if run.data.len() >= self.config.block_bytes / 8 {
                    groups.push((hour, vec![(*id, run)]));
                } else {
                    small.entry(hour).or_default().push((*id, run));
                }
            }
        }
        for (hour, runs) in small {
            let mut group: Vec<Run<'_>> = Vec::new();
            let mut bytes = 0;
            for (id, run) in runs {
                if bytes + run.data.len() > self.config.block_bytes && !group.is_empty() {
                    groups.push((hour, std::mem::take(&mut group)));
                    bytes = 0;
                }
                bytes += run.data.len();
                group.push((id, run));
            }
            if !group.is_empty() {
                groups.push((hour, group));
            }
        }
        let mut refs = Vec::new();
        let mut touched: BTreeSet<u32> = BTreeSet::new();
        for (hour, group) in groups {
            let parts: Vec<(StreamId, &Entries)> =
                group.iter().map(|(id, e)| (*id, &**e)).collect();
            let compressor = match &mut writer.compressor {
                Some(c) => c,
                none => none.insert(
                    zstd::bulk::Compressor::new(self.config.compression_level)
                        .map_err(io_err(&self.partitions))?,
                ),
            };
            let (bytes, block_refs) =
                block::encode_with(&parts, compressor).map_err(io_err(&self.partitions))?;
            if let Some(kind) = writer.fault {
                return Err(io_err(&self.partitions)(io::Error::from(kind)));
            }
            let segment = self.segment_for(writer, hour)?;
            let path = segment_path(&self.partitions, hour, segment.id);
            segment.file.write_all(&bytes).map_err(io_err(&path))?;
            for mut r in block_refs {
                r.partition = hour;
                r.segment = segment.id;
                r.offset = segment.len;
                refs.push(r);
            }
            segment.len += bytes.len() as u64;
            touched.insert(hour);
        }
        for hour in touched {
            let segment = &writer.segments[&hour];
            segment.file.sync_data().map_err(io_err(segment_path(
                &self.partitions,
                hour,
                segment.id,
            )))?;
        }
        Ok(refs)
    }

    /// Cuts sorted entries into runs of one partition hour and at most
    /// `block_bytes` of lines.
    fn runs<'e>(&self, sorted: &'e Entries) -> Vec<(u32, Cow<'e, Entries>)> {
        // The usual case: one hour, one block's worth: no copy.
        if let (Some(first), Some(last)) = (sorted.timestamps.first(), sorted.timestamps.last())
            && partition_of(*first) == partition_of(*last)
            && sorted.data.len() <= self.config.block_bytes
        {
            return vec![(partition_of(*first), Cow::Borrowed(sorted))];
        }
        let mut out = Vec::new();
        let mut start = 0;
        while start < sorted.len() {
            let hour = partition_of(sorted.timestamps[start]);
            let base = if start == 0 {
                0
            } else {
                sorted.ends[start - 1] as usize
            };
            let mut end = start;
            while end < sorted.len()
                && partition_of(sorted.timestamps[end]) == hour
                && (end == start || sorted.ends[end] as usize - base <= self.config.block_bytes)
            {
                end += 1;
            }
            out.push((hour, Cow::Owned(sorted.select(start..end))));
            start = end;
        }
        out
    }

    /// The open segment of partition `hour`, creating or rolling it over.
    fn segment_for<'w>(
        &self,
        writer: &'w mut Writer,
        hour: u32,
    ) -> Result<&'w mut OpenSegment, StoreError> {
        let full = writer
            .segments
            .get(&hour)
            .is_some_and(|s| s.len >= self.config.segment_bytes);
        if full || !writer.segments.contains_key(&hour) {
            let id = writer.next_segment;
            writer.next_segment += 1;
            let dir = self.partitions.join(hour.to_string());
            fs::create_dir_all(&dir).map_err(io_err(&dir))?;
            let path = segment_path(&self.partitions, hour, id);
            let file = OpenOptions::new()
                .create(true)
                .append(true)
                .open(&path)
                .map_err(io_err(&path))?;
            File::open(&dir)
                .and_then(|d| d.sync_all())
                .map_err(io_err(&dir))?;
            writer
                .segments
                .insert(hour, OpenSegment { id, file, len: 0 });
        }
        Ok(writer.segments.get_mut(&hour).expect("just ensured"))
    }

    /// After a failed flush, cuts segments back to what commits cover.
    fn rollback_segments(&self, writer: &mut Writer) {
        let inner = self.read_inner();
        for (hour, segment) in writer.segments.iter_mut() {
            let committed = inner
                .index
                .streams
                .values()
                .flat_map(|s| s.blocks.iter())
                .filter(|b| b.partition == *hour && b.segment == segment.id)
                .map(|b| b.offset + u64::from(b.len))
                .max()
                .unwrap_or(0);
            if segment.file.set_len(committed).is_ok() {
                segment.len = committed;
            }
        }
    }

    /// Rewrites the commit log as one snapshot of the durable state.
    pub(super) fn snapshot(&self, writer: &mut Writer) -> Result<(), StoreError> {
        let record = {
            let inner = self.read_inner();
            Record::Snapshot {
                streams: inner
                    .index
                    .streams
                    .iter()
                    .filter(|(_, s)| !s.unlogged)
                    .map(|(id, s)| (*id, (*s.labels).clone()))
                    .collect(),
                blocks: inner
                    .index
                    .streams
                    .values()
                    .flat_map(|s| s.blocks.iter().copied())
                    .collect(),
                checkpoints: inner
                    .durable
                    .iter()
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect(),
                next_segment: writer.next_segment,
            }
        };
        writer
            .manifest
            .rewrite(&record)
            .map_err(io_err(self.dir.join("manifest.log")))
    }

    /// Test seam: make every write to disk fail with `kind` (`None` heals).
    #[doc(hidden)]
    pub fn inject_write_fault(&self, kind: Option<io::ErrorKind>) {
        self.lock_writer().fault = kind;
    }
}
