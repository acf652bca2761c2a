//! A sink's durable position: per stream, the time of the last entry it
//! delivered and how many entries of that time it delivered. It is kept in
//! the store as a checkpoint (`forward/<sink>`), so it is committed in the
//! same commit record as whatever the store holds then: after a crash a
//! sink resumes from the last committed position.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

use crate::log_database::labels::Labels;

/// How a stream is named in a cursor: a hash of its labels (16 bytes a
/// stream instead of the labels themselves).
pub type StreamKey = u64;

/// The key of `labels`: the store's stream identity, which every write
/// already carries (so the live path hashes nothing).
pub fn key(labels: &Labels) -> StreamKey {
    labels.stream_id().0
}

/// Where a stream stands: the last delivered entry's time and how many
/// entries of exactly that time were delivered.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Position {
    /// ns.
    pub ts: i64,
    /// Entries at `ts` delivered.
    pub at_ts: u32,
}

impl Position {
    /// The position after also delivering an entry at `ts`.
    pub fn after(self, ts: i64) -> Self {
        if ts == self.ts {
            Self {
                ts,
                at_ts: self.at_ts + 1,
            }
        } else {
            Self { ts, at_ts: 1 }
        }
    }
}

/// Every stream's position, and where streams not in it start.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cursor {
    /// Entries older than this were never to be sent (`--forward-from`).
    pub from: i64,
    /// Per stream.
    pub streams: HashMap<StreamKey, Position>,
}

impl Cursor {
    /// The store checkpoint name of sink `name`.
    pub fn checkpoint(name: &str) -> String {
        format!("forward/{name}")
    }

    /// Decodes a stored cursor (`None`: unreadable, start afresh).
    pub fn decode(bytes: &[u8]) -> Option<Self> {
        postcard::from_bytes(bytes).ok()
    }

    /// Encodes for the store.
    pub fn encode(&self) -> Vec<u8> {
        postcard::to_allocvec(self).unwrap_or_default()
    }

    /// The oldest time worth reading of the stream `key`.
    pub fn start_of(&self, key: StreamKey) -> i64 {
        self.streams.get(&key).map_or(self.from, |p| p.ts)
    }
}

/// Tells new entries from delivered ones while reading streams in order:
/// one per pass (a catch-up from the store, or a run of live writes).
#[derive(Debug, Default)]
pub struct Filter {
    /// Per stream: its position and how many entries at that time are
    /// still to be skipped in this pass.
    seen: HashMap<StreamKey, (Position, u32)>,
}

impl Filter {
    /// Whether the entry at `ts` of stream `key` is new, given `cursor`.
    pub fn is_new(&mut self, cursor: &Cursor, key: StreamKey, ts: i64) -> bool {
        // The position as the pass found it: the cursor moving on as
        // batches are delivered must not make later entries look old.
        let (start, skip) =
            self.seen
                .entry(key)
                .or_insert_with(|| match cursor.streams.get(&key) {
                    Some(position) => (*position, position.at_ts),
                    None => (
                        Position {
                            ts: cursor.from,
                            at_ts: 0,
                        },
                        0,
                    ),
                });
        if ts < start.ts {
            return false;
        }
        if ts == start.ts && *skip > 0 {
            *skip -= 1;
            return false;
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn equal_times_are_counted_not_lost() {
        let mut cursor = Cursor {
            from: 0,
            ..Cursor::default()
        };
        let k = key(&Labels::new([("app", "a")]));
        cursor.streams.insert(k, Position { ts: 10, at_ts: 2 });
        let mut filter = Filter::default();
        let kept: Vec<bool> = [5, 10, 10, 10, 11]
            .iter()
            .map(|ts| filter.is_new(&cursor, k, *ts))
            .collect();
        assert_eq!(kept, [false, false, false, true, true]);
        // A stream the cursor does not know starts at `from`.
        let other = key(&Labels::new([("app", "b")]));
        cursor.from = 7;
        assert!(!filter.is_new(&cursor, other, 6) && filter.is_new(&cursor, other, 7));
        let back = Cursor::decode(&cursor.encode()).unwrap();
        assert_eq!(back, cursor);
        assert_eq!(
            Position { ts: 10, at_ts: 2 }.after(10),
            Position { ts: 10, at_ts: 3 }
        );
        assert_eq!(
            Position { ts: 10, at_ts: 2 }.after(12),
            Position { ts: 12, at_ts: 1 }
        );
    }
}
