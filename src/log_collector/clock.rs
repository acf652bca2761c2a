//! Timestamps for lines whose time comes from the reader, not the line: a
//! read of thousands of lines happens at one instant, but clients page by
//! timestamp (`start` = the last one seen), so each stream's entries get
//! distinct, increasing timestamps.

use std::collections::HashMap;

/// How long a stream's last stamp is remembered: once the clock has moved
/// past it by this much, the next read's time is later anyway.
const MEMORY_NS: i64 = 1_000_000_000;

/// The last timestamp handed out per stream.
#[derive(Debug, Default)]
pub struct ReaderClock {
    last: HashMap<String, i64>,
}

impl ReaderClock {
    /// A timestamp for the next line of `stream` read at `now`: `now`, or
    /// one nanosecond after the stream's previous line if that is later.
    pub fn stamp(&mut self, stream: &str, now: i64) -> i64 {
        match self.last.get_mut(stream) {
            Some(last) => {
                let ts = now.max(last.saturating_add(1));
                *last = ts;
                ts
            }
            None => {
                self.last.insert(stream.to_owned(), now);
                now
            }
        }
    }

    /// Forgets streams whose last stamp `now` has left well behind, so the
    /// map holds only recently read streams.
    pub fn forget_before(&mut self, now: i64) {
        if self.last.len() > 64 {
            self.last.retain(|_, last| *last >= now - MEMORY_NS);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_read_gets_distinct_increasing_times_per_stream() {
        let mut clock = ReaderClock::default();
        let a: Vec<i64> = (0..3).map(|_| clock.stamp("a", 100)).collect();
        assert_eq!(a, [100, 101, 102]);
        assert_eq!(clock.stamp("b", 100), 100, "streams are independent");
        assert_eq!(clock.stamp("a", 101), 103, "never behind the last one");
        assert_eq!(
            clock.stamp("a", 500),
            500,
            "the clock wins once it is ahead"
        );
        for i in 0..100 {
            clock.stamp(&format!("s{i}"), 0);
        }
        clock.forget_before(10 * MEMORY_NS);
        assert!(clock.last.is_empty());
    }
}
