//! Opening the store after whatever happened to it: replays the commit
//! log, cuts segment bytes that no commit covers (a torn flush) and forgets
//! blocks whose bytes are gone, so the index names only what is on disk.

use std::collections::{BTreeSet, HashMap};
use std::fs::{self, OpenOptions};
use std::path::Path;

use super::block::BlockRef;
use super::labels::StreamId;
use super::manifest::{Manifest, ReadReport, Record};
use super::{Inner, StoreError, io_err};

/// What opening the store found and repaired.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct RecoveryReport {
    /// Damage found in the commit log.
    pub manifest: ReadReport,
    /// Bytes cut from segment ends that no commit covered (torn flushes).
    pub segment_bytes_truncated: u64,
    /// Blocks whose bytes are missing (file cut short or deleted).
    pub blocks_missing: u64,
}

/// What recovery hands to the opened store.
pub(super) struct Recovered {
    /// The commit log, positioned for appends.
    pub(super) manifest: Manifest,
    /// The durable state: index and checkpoints.
    pub(super) inner: Inner,
    /// The next free segment number.
    pub(super) next_segment: u32,
    /// What was repaired.
    pub(super) report: RecoveryReport,
}

/// Replays `dir`'s commit log and repairs `partitions` to match it.
pub(super) fn recover(dir: &Path, partitions: &Path) -> Result<Recovered, StoreError> {
    let (mut manifest, records, manifest_report) =
        Manifest::open(dir).map_err(io_err(dir.join("manifest.log")))?;
    let mut report = RecoveryReport {
        manifest: manifest_report,
        ..Default::default()
    };
    let mut inner = Inner::default();
    let mut blocks: Vec<BlockRef> = Vec::new();
    let mut dropped: BTreeSet<u32> = BTreeSet::new();
    let mut next_segment = 1;
    for record in records {
        match record {
            Record::Snapshot {
                streams,
                blocks: b,
                checkpoints,
                next_segment: n,
            } => {
                inner = Inner::default();
                for (id, labels) in &streams {
                    inner.index.add_stream(*id, labels, false);
                }
                blocks = b;
                inner.durable = checkpoints.into_iter().collect();
                next_segment = next_segment.max(n);
            }
            Record::Commit {
                streams,
                blocks: b,
                checkpoints,
            } => {
                for (id, labels) in &streams {
                    inner.index.add_stream(*id, labels, false);
                }
                blocks.extend(b);
                for (key, value) in checkpoints {
                    match value {
                        Some(v) => inner.durable.insert(key, v),
                        None => inner.durable.remove(&key),
                    };
                }
            }
            Record::Dropped { partitions: p } => dropped.extend(p),
        }
    }
    blocks.retain(|b| !dropped.contains(&b.partition));
    // Cut what no commit covers; forget blocks whose bytes are gone.
    let mut committed: HashMap<(u32, u32), u64> = HashMap::new();
    for b in &blocks {
        let end = committed.entry((b.partition, b.segment)).or_default();
        *end = (*end).max(b.offset + u64::from(b.len));
        next_segment = next_segment.max(b.segment + 1);
    }
    let mut sizes: HashMap<(u32, u32), u64> = HashMap::new();
    for entry in fs::read_dir(partitions)
        .map_err(io_err(partitions))?
        .flatten()
    {
        let Some(partition) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        for seg in fs::read_dir(entry.path())
            .map_err(io_err(entry.path()))?
            .flatten()
        {
            let name = seg.file_name();
            let Some(segment) = name
                .to_str()
                .and_then(|s| s.strip_suffix(".seg"))
                .and_then(|s| s.parse::<u32>().ok())
            else {
                continue;
            };
            next_segment = next_segment.max(segment + 1);
            let len = seg.metadata().map(|m| m.len()).unwrap_or(0);
            let keep = committed.get(&(partition, segment)).copied().unwrap_or(0);
            if len > keep {
                let path = seg.path();
                OpenOptions::new()
                    .write(true)
                    .open(&path)
                    .and_then(|f| f.set_len(keep).and_then(|()| f.sync_all()))
                    .map_err(io_err(&path))?;
                report.segment_bytes_truncated += len - keep;
            }
            sizes.insert((partition, segment), len.min(keep));
        }
    }
    for b in blocks {
        let size = sizes.get(&(b.partition, b.segment)).copied().unwrap_or(0);
        if b.offset + u64::from(b.len) > size {
            report.blocks_missing += 1;
            continue;
        }
        if let Some(stream) = inner.index.streams.get_mut(&b.stream) {
            stream.blocks.push(b);
        }
    }
    for stream in inner.index.streams.values_mut() {
        stream.blocks.sort_by_key(|b| (b.min_ts, b.max_ts));
    }
    let empty: Vec<StreamId> = inner
        .index
        .streams
        .iter()
        .filter(|(_, s)| s.blocks.is_empty())
        .map(|(id, _)| *id)
        .collect();
    for id in empty {
        inner.index.remove_stream(id);
    }
    if report != RecoveryReport::default() {
        tracing::warn!(
            ?report,
            "The log store repaired damage left by a crash or a disk fault."
        );
    }
    manifest.since_snapshot = usize::MAX;
    Ok(Recovered {
        manifest,
        inner,
        next_segment,
        report,
    })
}
