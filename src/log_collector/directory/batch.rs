//! What the directory collector hands on: lines with their source, and the
//! checkpoints those lines advance.
//!
//! All line bytes of a batch live in one buffer, so reading a million lines
//! costs a handful of allocations, not a million.

use std::sync::Arc;

use crate::log_collector::checkpoint::{Checkpoint, CheckpointKey};

/// Names one open file for the life of a collector (not across restarts).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FileId(pub u64);

/// How a line ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LineKind {
    /// Ended with a newline (not included in the bytes).
    Complete,
    /// A piece of a line longer than `max_line_bytes`; more pieces follow.
    Split,
    /// The last bytes of a file that was rotated away or deleted without a
    /// final newline.
    Unterminated,
}

#[derive(Clone, Copy, Debug)]
struct LineMeta {
    start: usize,
    end: usize,
    source: u32,
    file: FileId,
    end_offset: u64,
    kind: LineKind,
}

/// A fill level of a batch; see [`Batch::mark`].
#[derive(Clone, Copy, Debug)]
pub(super) struct Mark {
    data: usize,
    lines: usize,
    sources: usize,
}

/// One line as read.
#[derive(Clone, Copy, Debug)]
pub struct Line<'a> {
    /// The path the line was read from, as seen under the root (a symlink's
    /// own path, not its target). Stays the same across rotations.
    pub source: &'a Arc<str>,
    /// The line's bytes, without the newline. Not necessarily UTF-8.
    pub bytes: &'a [u8],
    /// The open file it came from.
    pub file: FileId,
    /// The file offset just after this line (and its newline).
    pub end_offset: u64,
    /// How the line ended.
    pub kind: LineKind,
}

/// A batch of lines plus the checkpoints they advance.
#[derive(Debug, Default)]
pub struct Batch {
    data: Vec<u8>,
    lines: Vec<LineMeta>,
    sources: Vec<Arc<str>>,
    /// Checkpoints advanced or created by this batch.
    pub checkpoints: Vec<Checkpoint>,
    /// Checkpoints no longer needed (their files are finished).
    pub forgotten: Vec<CheckpointKey>,
}

impl Batch {
    /// Number of lines.
    pub fn len(&self) -> usize {
        self.lines.len()
    }

    /// True when there are no lines (there may still be checkpoint changes).
    pub fn is_empty(&self) -> bool {
        self.lines.is_empty()
    }

    /// True when there is nothing at all to hand on.
    pub fn is_idle(&self) -> bool {
        self.lines.is_empty() && self.checkpoints.is_empty() && self.forgotten.is_empty()
    }

    /// Total line bytes.
    pub fn line_bytes(&self) -> usize {
        self.lines.iter().map(|l| l.end - l.start).sum()
    }

    /// The lines, in the order read (per file, in file order).
    pub fn lines(&self) -> impl ExactSizeIterator<Item = Line<'_>> + '_ {
        self.lines.iter().map(|m| Line {
            source: &self.sources[m.source as usize],
            bytes: &self.data[m.start..m.end],
            file: m.file,
            end_offset: m.end_offset,
            kind: m.kind,
        })
    }

    /// Empties the batch, keeping its buffers for reuse.
    pub fn clear(&mut self) {
        self.data.clear();
        self.lines.clear();
        self.sources.clear();
        self.checkpoints.clear();
        self.forgotten.clear();
    }

    /// Remembers how far the batch is filled, to undo a turn.
    pub(super) fn mark(&self) -> Mark {
        Mark {
            data: self.data.len(),
            lines: self.lines.len(),
            sources: self.sources.len(),
        }
    }

    /// Drops everything added since `mark`.
    pub(super) fn rollback(&mut self, mark: Mark) {
        self.data.truncate(mark.data);
        self.lines.truncate(mark.lines);
        self.sources.truncate(mark.sources);
    }

    /// Bytes buffered in the batch, lines and pending tails alike.
    pub(super) fn buffered(&self) -> usize {
        self.data.len()
    }

    /// The raw buffer, for the reader to append file bytes to.
    pub(super) fn data_mut(&mut self) -> &mut Vec<u8> {
        &mut self.data
    }

    pub(super) fn data(&self) -> &[u8] {
        &self.data
    }

    fn source_index(&mut self, source: &Arc<str>) -> u32 {
        // Lines of one file are pushed together, so checking the last source
        // is enough to share it across them.
        match self.sources.last() {
            Some(last) if Arc::ptr_eq(last, source) => (self.sources.len() - 1) as u32,
            _ => {
                self.sources.push(source.clone());
                (self.sources.len() - 1) as u32
            }
        }
    }

    /// Records `data[start..end]` as a line.
    pub(super) fn push_line(
        &mut self,
        source: &Arc<str>,
        file: FileId,
        (start, end): (usize, usize),
        end_offset: u64,
        kind: LineKind,
    ) {
        let source = self.source_index(source);
        self.lines.push(LineMeta {
            start,
            end,
            source,
            file,
            end_offset,
            kind,
        });
    }

    /// Appends `bytes` to the buffer and records them as a line.
    pub(super) fn push_owned_line(
        &mut self,
        source: &Arc<str>,
        file: FileId,
        bytes: &[u8],
        end_offset: u64,
        kind: LineKind,
    ) {
        let start = self.data.len();
        self.data.extend_from_slice(bytes);
        let end = self.data.len();
        self.push_line(source, file, (start, end), end_offset, kind);
    }
}
