//! Time ranges as the store reads them: half-open, `[start, end)` in ns.
//! Loki's API speaks of inclusive ends; [`TimeRange::through`] converts
//! once at the edge, so no caller adds one to an end by hand.

/// `[start, end)` in nanoseconds since the epoch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TimeRange {
    /// The first instant in the range.
    pub start: i64,
    /// The first instant after the range.
    pub end: i64,
}

impl TimeRange {
    /// Every instant.
    pub const ALL: TimeRange = TimeRange {
        start: i64::MIN,
        end: i64::MAX,
    };

    /// `[start, end)`.
    pub fn new(start: i64, end: i64) -> Self {
        Self { start, end }
    }

    /// From `start` through `last`, both included (Loki's `start` and `end`).
    pub fn through(start: i64, last: i64) -> Self {
        Self {
            start,
            end: last.saturating_add(1),
        }
    }

    /// The last instant in the range (Loki's inclusive `end`).
    pub fn last(&self) -> i64 {
        self.end.saturating_sub(1)
    }

    /// How long it is, in ns.
    pub fn span(&self) -> i64 {
        self.end.saturating_sub(self.start)
    }

    /// Whether `ts` is in the range.
    pub fn contains(&self, ts: i64) -> bool {
        ts >= self.start && ts < self.end
    }

    /// Whether anything in `[min, max]` (both included, as a block's
    /// bounds are) is in the range.
    pub fn overlaps(&self, min: i64, max: i64) -> bool {
        max >= self.start && min < self.end
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inclusive_ends_become_half_open_once() {
        let r = TimeRange::through(10, 20);
        assert_eq!((r.start, r.end, r.last(), r.span()), (10, 21, 20, 11));
        assert!(r.contains(20) && !r.contains(21) && !r.contains(9));
        assert!(r.overlaps(20, 30) && r.overlaps(0, 10) && !r.overlaps(21, 30));
        assert_eq!(TimeRange::through(0, i64::MAX).end, i64::MAX);
        assert!(TimeRange::ALL.contains(i64::MIN));
    }
}
