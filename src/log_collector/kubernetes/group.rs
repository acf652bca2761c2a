//! Stage 5, grouping: ready entries into the store's write, one
//! [`StreamEntries`] per label set. The label set of a (source, stream) is
//! asked for once per batch; sources that share a label set share a stream.

use std::collections::HashMap;

use super::decode::Stream;
use super::memo::RunMemo;
use super::sources::SourceId;
use crate::log_database::labels::StreamId;
use crate::log_database::{StreamEntries, WriteBatch};

/// Groups one batch's entries into `out.streams`.
pub(super) struct Grouper<'o> {
    out: &'o mut WriteBatch,
    by_stream: HashMap<StreamId, usize>,
    /// Where each (source, stream) goes; `None`: dropped (no label set).
    slots: RunMemo<(SourceId, Stream), Option<usize>>,
}

impl<'o> Grouper<'o> {
    /// Groups into `out` (whose streams are extended).
    pub(super) fn new(out: &'o mut WriteBatch) -> Self {
        Self {
            out,
            by_stream: HashMap::new(),
            slots: RunMemo::new(),
        }
    }

    /// Adds one entry of `source`'s `stream`; `labels` gives the (empty,
    /// labelled) store stream the first time this pair is seen.
    pub(super) fn push(
        &mut self,
        source: SourceId,
        stream: Stream,
        timestamp: i64,
        message: &[u8],
        labels: impl FnOnce() -> Option<StreamEntries>,
    ) {
        let (out, by_stream) = (&mut *self.out, &mut self.by_stream);
        let slot = self.slots.get((source, stream), || {
            labels().map(|entries| {
                *by_stream.entry(entries.id()).or_insert_with(|| {
                    out.streams.push(entries);
                    out.streams.len() - 1
                })
            })
        });
        if let Some(i) = slot {
            self.out.streams[i].push(timestamp, message);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::log_collector::kubernetes::sources::Sources;
    use crate::log_database::labels::Labels;
    use std::sync::Arc;

    #[test]
    fn one_store_stream_per_label_set_and_one_lookup_per_pair() {
        let mut sources = Sources::default();
        let a = sources.id(&Arc::from("a"));
        let b = sources.id(&Arc::from("b"));
        let mut out = WriteBatch::default();
        let mut lookups = 0;
        let mut grouper = Grouper::new(&mut out);
        let web = || StreamEntries::new(Labels::new([("app", "web")]));
        for (source, text) in [(a, "1"), (a, "2"), (b, "3")] {
            grouper.push(source, Stream::Stdout, 1, text.as_bytes(), || {
                lookups += 1;
                Some(web())
            });
        }
        // No label set: the entry is dropped, and not asked for again.
        for _ in 0..2 {
            grouper.push(a, Stream::Stderr, 1, b"gone", || {
                lookups += 1;
                None
            });
        }
        assert_eq!(lookups, 3);
        assert_eq!(out.streams.len(), 1, "a and b share the label set");
        assert_eq!(out.streams[0].entries.len(), 3);
    }
}
