//! What a write carries: entries per stream with their shared label set,
//! and the checkpoints they advance; and what live tails receive of it.

use std::sync::Arc;

use super::block::Entries;
use super::labels::{Labels, StreamId};
use super::level::Level;

/// One stream's entries in a write: its label set (shared, so a collector
/// hands the same one on batch after batch without copying it) and its
/// entries packed into one buffer.
#[derive(Clone, Debug)]
pub struct StreamEntries {
    labels: Arc<Labels>,
    id: StreamId,
    /// The entries, in the order written.
    pub entries: Entries,
}

impl StreamEntries {
    /// No entries yet, for the stream `labels`.
    pub fn new(labels: impl Into<Arc<Labels>>) -> Self {
        let labels = labels.into();
        Self {
            id: labels.stream_id(),
            labels,
            entries: Entries::default(),
        }
    }

    /// The stream `labels` with `(timestamp ns, line)` entries.
    pub fn with<L: AsRef<[u8]>>(
        labels: impl Into<Arc<Labels>>,
        entries: impl IntoIterator<Item = (i64, L)>,
    ) -> Self {
        let mut stream = Self::new(labels);
        for (ts, line) in entries {
            stream.push(ts, line.as_ref());
        }
        stream
    }

    /// Appends one entry.
    pub fn push(&mut self, timestamp: i64, line: &[u8]) {
        // Found once, here, and kept with the entry.
        self.entries.push(timestamp, line, Level::of_line(line));
    }

    /// The stream's label set.
    pub fn labels(&self) -> &Arc<Labels> {
        &self.labels
    }

    /// The stream's identity (a hash of its labels, computed once).
    pub fn id(&self) -> StreamId {
        self.id
    }
}

/// A write: entries of many streams plus the checkpoints they advance.
#[derive(Clone, Debug, Default)]
pub struct WriteBatch {
    /// The entries, by stream.
    pub streams: Vec<StreamEntries>,
    /// Checkpoints to set (`Some`) or forget (`None`), opaque to the store.
    pub checkpoints: Vec<(String, Option<Vec<u8>>)>,
}

/// Entries of one write, as live tails receive them.
#[derive(Debug)]
pub struct Appended {
    /// Per stream: its labels, identity and new entries.
    pub streams: Vec<StreamEntries>,
}
