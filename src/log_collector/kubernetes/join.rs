//! Stage 2, joining: the pieces of a line the runtime split (CRI `P`,
//! Docker `log` without a newline) become one entry per (source, stream),
//! bounded in size. Pieces still waiting are kept with the file's
//! checkpoint, so a restart mid-line loses and repeats nothing.

use std::borrow::Cow;
use std::collections::HashMap;

use super::decode::{Record, Stream};

/// A complete entry after joining pieces. A whole line borrows its message
/// from the bytes it was read into; joined pieces own theirs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Joined<'a> {
    /// The timestamp of its first piece.
    pub timestamp: i64,
    /// stdout or stderr.
    pub stream: Stream,
    /// The whole message.
    pub message: Cow<'a, [u8]>,
    /// Whether it was cut because it exceeded the maximum size.
    pub truncated: bool,
}

impl Joined<'_> {
    /// The same entry, owning its message (to keep it past the read buffer).
    pub fn into_owned(self) -> Joined<'static> {
        Joined {
            timestamp: self.timestamp,
            stream: self.stream,
            message: Cow::Owned(self.message.into_owned()),
            truncated: self.truncated,
        }
    }
}

/// Pieces waiting for their final part, per source and stream.
#[derive(Debug, Default, Clone, serde::Serialize, serde::Deserialize)]
pub struct Pending {
    /// The timestamp of the first piece.
    pub timestamp: i64,
    /// The bytes so far.
    pub message: Vec<u8>,
}

/// Joins partial lines per (source, stream), bounded by `max_bytes`.
#[derive(Debug, Default)]
pub struct Joiner {
    pending: HashMap<(String, Stream), Pending>,
    /// When each pending line began, to flush a final part that never comes.
    started: HashMap<(String, Stream), std::time::Instant>,
    max_bytes: usize,
}

impl Joiner {
    /// A joiner that never holds more than `max_bytes` per stream.
    pub fn new(max_bytes: usize) -> Self {
        Self {
            pending: HashMap::new(),
            started: HashMap::new(),
            max_bytes,
        }
    }

    /// Adds a record from `source`; returns the entry it completes, if any
    /// (a whole line, or a too-long one handed on cut).
    pub fn push<'a>(&mut self, source: &str, record: Record<'a>) -> Option<Joined<'a>> {
        // The common case: a whole line with nothing waiting for it keeps
        // borrowing its bytes.
        if !record.partial
            && !self
                .pending
                .keys()
                .any(|(s, st)| *st == record.stream && s == source)
        {
            return Some(Joined {
                timestamp: record.timestamp,
                stream: record.stream,
                message: record.message,
                truncated: false,
            });
        }
        let key = (source.to_owned(), record.stream);
        self.started
            .entry(key.clone())
            .or_insert_with(std::time::Instant::now);
        let entry = self.pending.entry(key.clone()).or_insert_with(|| Pending {
            timestamp: record.timestamp,
            message: Vec::new(),
        });
        entry.message.extend_from_slice(&record.message);
        // Never unbounded: a line over the maximum is handed on as it is, cut.
        let truncated = entry.message.len() > self.max_bytes;
        if !truncated && record.partial {
            return None;
        }
        let p = self.pending.remove(&key).expect("just inserted");
        self.started.remove(&key);
        Some(Joined {
            timestamp: p.timestamp,
            stream: record.stream,
            message: Cow::Owned(p.message),
            truncated,
        })
    }

    /// Bytes of pieces waiting for their line's end, over all streams.
    pub fn pending_bytes(&self) -> usize {
        self.pending.values().map(|p| p.message.len()).sum()
    }

    /// The pieces waiting for `source` (to keep with its checkpoint).
    pub fn pending_for(&self, source: &str) -> Vec<(Stream, Pending)> {
        self.pending
            .iter()
            .filter(|((s, _), _)| s == source)
            .map(|((_, stream), p)| (*stream, p.clone()))
            .collect()
    }

    /// Restores pieces kept with a checkpoint.
    pub fn restore(&mut self, source: &str, stream: Stream, pending: Pending) {
        let key = (source.to_owned(), stream);
        self.started.insert(key.clone(), std::time::Instant::now());
        self.pending.insert(key, pending);
    }

    /// Sources with pieces waiting.
    pub fn sources(&self) -> Vec<String> {
        let mut s: Vec<String> = self.pending.keys().map(|(s, _)| s.clone()).collect();
        s.sort();
        s.dedup();
        s
    }

    /// Hands on lines whose final part has not come for `max_age` (the
    /// program ended without a newline).
    pub fn expired(&mut self, max_age: std::time::Duration) -> Vec<(String, Joined<'static>)> {
        let old: Vec<(String, Stream)> = self
            .started
            .iter()
            .filter(|(_, t)| t.elapsed() >= max_age)
            .map(|(k, _)| k.clone())
            .collect();
        old.into_iter()
            .filter_map(|k| {
                self.started.remove(&k);
                let p = self.pending.remove(&k)?;
                Some((
                    k.0,
                    Joined {
                        timestamp: p.timestamp,
                        stream: k.1,
                        message: Cow::Owned(p.message),
                        truncated: false,
                    },
                ))
            })
            .collect()
    }

    /// When the oldest pending line began.
    pub fn oldest(&self) -> Option<std::time::Instant> {
        self.started.values().min().copied()
    }

    /// Hands on whatever waits for `source` (its file is finished).
    pub fn flush(&mut self, source: &str) -> Vec<Joined<'static>> {
        let keys: Vec<(String, Stream)> = self
            .pending
            .keys()
            .filter(|(s, _)| s == source)
            .cloned()
            .collect();
        keys.into_iter()
            .filter_map(|k| {
                self.started.remove(&k);
                let p = self.pending.remove(&k)?;
                Some(Joined {
                    timestamp: p.timestamp,
                    stream: k.1,
                    message: Cow::Owned(p.message),
                    truncated: false,
                })
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::log_collector::kubernetes::decode::parse_cri;

    #[test]
    fn partials_join_per_stream_even_when_interleaved() {
        let mut j = Joiner::new(1024);
        let cri = |s: &'static [u8]| parse_cri(s).unwrap();
        assert!(
            j.push("f", cri(b"2023-11-14T22:13:20Z stdout P hel"))
                .is_none()
        );
        let err = j.push("f", cri(b"2023-11-14T22:13:21Z stderr F an error"));
        assert_eq!(&*err.unwrap().message, b"an error");
        assert!(
            j.push("f", cri(b"2023-11-14T22:13:22Z stdout P lo "))
                .is_none()
        );
        let out = j
            .push("f", cri(b"2023-11-14T22:13:23Z stdout F world"))
            .unwrap();
        assert_eq!(&*out.message, b"hello world");
        assert_eq!(
            out.timestamp, 1_700_000_000_000_000_000,
            "the first piece's time"
        );
        // Pieces split inside a UTF-8 character join into valid text.
        let e = "é".as_bytes();
        assert!(
            j.push(
                "g",
                Record {
                    timestamp: 0,
                    stream: Stream::Stdout,
                    partial: true,
                    message: e[..1].to_vec().into()
                }
            )
            .is_none()
        );
        let out = j.push(
            "g",
            Record {
                timestamp: 0,
                stream: Stream::Stdout,
                partial: false,
                message: e[1..].to_vec().into(),
            },
        );
        assert_eq!(std::str::from_utf8(&out.unwrap().message).unwrap(), "é");
    }

    #[test]
    fn partials_are_bounded_and_kept_across_restarts() {
        let mut j = Joiner::new(8);
        let piece = |m: &'static [u8], partial| Record {
            timestamp: 1,
            stream: Stream::Stdout,
            partial,
            message: m.into(),
        };
        assert!(j.push("f", piece(b"12345", true)).is_none());
        let out = j.push("f", piece(b"67890", true)).unwrap();
        assert!(out.truncated);
        assert_eq!(&*out.message, b"1234567890");
        assert!(j.push("f", piece(b"abc", true)).is_none());
        let kept = j.pending_for("f");
        let mut restarted = Joiner::new(8);
        for (stream, p) in kept {
            restarted.restore("f", stream, p);
        }
        assert_eq!(
            &*restarted.push("f", piece(b"def", false)).unwrap().message,
            b"abcdef"
        );
        assert!(j.push("h", piece(b"tail", true)).is_none());
        assert_eq!(&*j.flush("h")[0].message, b"tail");
    }
}
