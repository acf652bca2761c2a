//! What a sink delivers at once: entries grouped by stream, in order,
//! with the positions they take each stream to. The lines share one
//! buffer, kept from batch to batch: at the busy-node rate a sink then
//! allocates per batch, not per line.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use super::cursor::{Cursor, Position, StreamKey};
use crate::log_database::labels::Labels;
use crate::log_database::level::Level;

/// What an entry costs in a request beyond its line (timestamps, severity,
/// field tags): counted in a batch's size, so that many short lines make
/// a request no larger than `--forward-batch-size` either.
pub const ENTRY_OVERHEAD: usize = 48;

/// One entry to deliver.
#[derive(Clone, Debug, PartialEq)]
pub struct Item {
    /// The entry's time, ns.
    pub ts: i64,
    /// When this daemon read it (as far as the store knows: when the sink
    /// took it), ns.
    pub observed: i64,
    /// Its detected level.
    pub level: Level,
    /// Where its line is in the batch's buffer.
    line: (usize, usize),
}

/// One stream's entries of a batch.
#[derive(Clone, Debug)]
pub struct Stream {
    /// Its labels.
    pub labels: Arc<Labels>,
    /// Its cursor key.
    pub key: StreamKey,
    /// Its entries, in order.
    pub items: Vec<Item>,
    /// Its position once they are delivered.
    pub position: Position,
}

/// Entries to deliver together.
#[derive(Debug, Default)]
pub struct Batch {
    /// Per stream.
    pub streams: Vec<Stream>,
    index: HashMap<StreamKey, usize>,
    /// Every line, one after another.
    text: Vec<u8>,
    /// What the batch adds to a request, bytes: lines plus
    /// [`ENTRY_OVERHEAD`] each.
    pub bytes: usize,
    /// Entries held.
    pub entries: usize,
    /// When the first entry came (a batch is sent at most this long after).
    pub since: Option<Instant>,
}

impl Batch {
    /// The batch's stream `labels` (key `key`), added (positioned from
    /// `cursor`) if it is not in the batch yet: where to [`push`] its
    /// entries.
    ///
    /// [`push`]: Batch::push
    pub fn stream(&mut self, cursor: &Cursor, labels: &Arc<Labels>, key: StreamKey) -> usize {
        *self.index.entry(key).or_insert_with(|| {
            self.streams.push(Stream {
                labels: labels.clone(),
                key,
                items: Vec::new(),
                position: cursor.streams.get(&key).copied().unwrap_or_default(),
            });
            self.streams.len() - 1
        })
    }

    /// Adds an entry to stream `i` (from [`stream`]).
    ///
    /// [`stream`]: Batch::stream
    pub fn push(&mut self, i: usize, ts: i64, observed: i64, level: Level, line: &[u8]) {
        let Some(stream) = self.streams.get_mut(i) else {
            return;
        };
        self.since.get_or_insert_with(Instant::now);
        self.bytes += line.len() + ENTRY_OVERHEAD;
        self.entries += 1;
        let start = self.text.len();
        self.text.extend_from_slice(line);
        stream.position = stream.position.after(ts);
        stream.items.push(Item {
            ts,
            observed,
            level,
            line: (start, self.text.len()),
        });
    }

    /// The line of `item` (an item of this batch).
    pub fn line(&self, item: &Item) -> &[u8] {
        self.text.get(item.line.0..item.line.1).unwrap_or_default()
    }

    /// Whether nothing is held.
    pub fn is_empty(&self) -> bool {
        self.entries == 0
    }

    /// Empties the batch, keeping its line buffer for the next one (unless
    /// an unusually large line made it far larger than a batch).
    pub fn clear(&mut self, batch_bytes: usize) {
        self.streams.clear();
        self.index.clear();
        self.text.clear();
        if self.text.capacity() > 2 * batch_bytes.max(1 << 16) {
            self.text = Vec::new();
        }
        self.bytes = 0;
        self.entries = 0;
        self.since = None;
    }

    /// Moves `cursor` past everything in the batch (it was delivered, or
    /// refused for good).
    pub fn advance(&self, cursor: &mut Cursor) {
        for stream in &self.streams {
            cursor.streams.insert(stream.key, stream.position);
        }
    }

    /// The newest entry time held.
    pub fn newest(&self) -> Option<i64> {
        self.streams
            .iter()
            .filter_map(|s| s.items.last().map(|i| i.ts))
            .max()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_share_one_buffer_across_batches() {
        let labels = Arc::new(Labels::new([("pod", "a")]));
        let mut batch = Batch::default();
        let cursor = Cursor::default();
        let i = batch.stream(&cursor, &labels, 1);
        batch.push(i, 10, 11, Level::Info, b"first");
        batch.push(i, 12, 13, Level::Warn, b"second");
        let lines: Vec<&[u8]> = batch.streams[0]
            .items
            .iter()
            .map(|i| batch.line(i))
            .collect();
        assert_eq!(lines, [&b"first"[..], b"second"]);
        assert_eq!(batch.bytes, 11 + 2 * ENTRY_OVERHEAD);
        assert_eq!(batch.newest(), Some(12));
        batch.clear(1 << 20);
        assert!(batch.is_empty() && batch.streams.is_empty() && batch.since.is_none());
        let i = batch.stream(&cursor, &labels, 1);
        batch.push(i, 14, 15, Level::Info, b"third");
        assert_eq!(batch.line(&batch.streams[0].items[0]), b"third");
    }
}
