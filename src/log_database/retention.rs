//! Retention: whole hourly partitions are deleted once they are older than
//! the retention period, and the oldest while the store is over its size
//! budget. The deletion is committed before the files go.

use std::collections::BTreeSet;
use std::fs;
use std::sync::atomic::Ordering;

use super::flush::NS_PER_HOUR;
use super::manifest::Record;
use super::{Database, StoreError, io_err, now_ns};

/// What retention deleted of one stream: one block's time bounds and
/// entries.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Deleted {
    /// The stream.
    pub labels: std::sync::Arc<super::labels::Labels>,
    /// Its oldest entry, ns.
    pub min_ts: i64,
    /// Its newest entry, ns.
    pub max_ts: i64,
    /// Its entries.
    pub count: u32,
}

impl Database {
    /// Tells the caller, from now on, what each retention run deletes.
    pub fn watch_retention(&self) -> std::sync::mpsc::Receiver<std::sync::Arc<Vec<Deleted>>> {
        let (sender, receiver) = std::sync::mpsc::channel();
        self.retention_watchers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(sender);
        receiver
    }

    /// Deletes whole partitions older than the retention period, then the
    /// oldest while the store is over its size budget. Returns how many.
    pub fn enforce_retention(&self) -> Result<usize, StoreError> {
        self.enforce_retention_at(now_ns())
    }

    /// [`enforce_retention`](Self::enforce_retention) as if the time were `now` (ns).
    pub fn enforce_retention_at(&self, now: i64) -> Result<usize, StoreError> {
        let mut writer = self.lock_writer();
        let mut partitions: Vec<(u32, u64)> = Vec::new();
        for entry in fs::read_dir(&self.partitions)
            .map_err(io_err(&self.partitions))?
            .flatten()
        {
            if let Some(p) = entry
                .file_name()
                .to_str()
                .and_then(|s| s.parse::<u32>().ok())
            {
                let size: u64 = fs::read_dir(entry.path())
                    .map(|d| {
                        d.flatten()
                            .filter_map(|f| f.metadata().ok())
                            .map(|m| m.len())
                            .sum()
                    })
                    .unwrap_or(0);
                partitions.push((p, size));
            }
        }
        partitions.sort();
        let horizon = now.saturating_sub(self.config.retention_period.as_nanos() as i64);
        let mut total: u64 = partitions.iter().map(|(_, s)| s).sum();
        let mut drop = Vec::new();
        for (p, size) in &partitions {
            // A partition holds entries up to the end of its hour.
            let ends = (i64::from(*p) + 1).saturating_mul(NS_PER_HOUR);
            if ends <= horizon || total > self.config.retention_size {
                drop.push(*p);
                total -= size;
            }
        }
        if drop.is_empty() {
            return Ok(0);
        }
        // Commit first: after a crash the partitions are gone from the index
        // even if their files are not yet.
        writer
            .manifest
            .append(&Record::Dropped {
                partitions: drop.clone(),
            })
            .map_err(io_err(self.dir.join("manifest.log")))?;
        for p in &drop {
            writer.segments.remove(p);
            let dir = self.partitions.join(p.to_string());
            fs::remove_dir_all(&dir).map_err(io_err(&dir))?;
        }
        let mut inner = self.write_inner();
        let gone: BTreeSet<u32> = drop.iter().copied().collect();
        let mut empty = Vec::new();
        let mut deleted = Vec::new();
        for (id, stream) in inner.index.streams.iter_mut() {
            for block in stream.blocks.iter().filter(|b| gone.contains(&b.partition)) {
                deleted.push(Deleted {
                    labels: stream.labels.clone(),
                    min_ts: block.min_ts,
                    max_ts: block.max_ts,
                    count: block.count,
                });
            }
            stream.blocks.retain(|b| !gone.contains(&b.partition));
            if stream.blocks.is_empty() && stream.head.is_empty() && stream.flushing.is_none() {
                empty.push(*id);
            }
        }
        for id in empty {
            inner.index.remove_stream(id);
        }
        // Watchers are told after the state is unlocked.
        std::mem::drop(inner);
        let deleted = std::sync::Arc::new(deleted);
        self.retention_watchers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|watcher| watcher.send(deleted.clone()).is_ok());
        self.dropped.fetch_add(drop.len() as u64, Ordering::Relaxed);
        tracing::info!(partitions = ?drop, "Retention deleted old partitions.");
        Ok(drop.len())
    }
}
