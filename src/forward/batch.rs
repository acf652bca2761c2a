//! What a sink delivers at once: entries grouped by stream, in order,
//! with the positions they take each stream to.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use super::cursor::{Cursor, Position, StreamKey};
use crate::log_database::labels::Labels;
use crate::log_database::level::Level;

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
    /// The line.
    pub line: Vec<u8>,
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
    /// Line bytes held.
    pub bytes: usize,
    /// Entries held.
    pub entries: usize,
    /// When the first entry came (a batch is sent at most this long after).
    pub since: Option<Instant>,
}

impl Batch {
    /// Adds an entry of the stream `labels` (key `key`), positioned from
    /// `cursor` for a stream not in the batch yet.
    pub fn push(&mut self, cursor: &Cursor, labels: &Arc<Labels>, key: StreamKey, item: Item) {
        self.since.get_or_insert_with(Instant::now);
        self.bytes += item.line.len();
        self.entries += 1;
        let i = *self.index.entry(key).or_insert_with(|| {
            self.streams.push(Stream {
                labels: labels.clone(),
                key,
                items: Vec::new(),
                position: cursor.streams.get(&key).copied().unwrap_or_default(),
            });
            self.streams.len() - 1
        });
        let stream = &mut self.streams[i];
        stream.position = stream.position.after(item.ts);
        stream.items.push(item);
    }

    /// Whether nothing is held.
    pub fn is_empty(&self) -> bool {
        self.entries == 0
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
