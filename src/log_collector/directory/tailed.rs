//! One open file being tailed: reading it in large chunks and cutting the
//! bytes into lines inside the batch buffer.

use std::collections::BTreeSet;
use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use super::batch::{Batch, FileId, LineKind};
use super::fingerprint::{Fingerprint, MARKER_BYTES, fingerprint, marker};
use crate::log_collector::checkpoint::{Checkpoint, CheckpointKey};
use crate::watcher::WatchId;

/// Bytes asked of the kernel per `read`.
const READ_CHUNK: usize = 256 * 1024;

/// Where a file stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Phase {
    /// Too short to fingerprint (no newline, under the head size): nothing
    /// can be emitted yet, so it is not read.
    Pending,
    /// Its head matches another file's: perhaps a copy made by
    /// copytruncate. Not read until the original is truncated (then it takes
    /// over the original's place, the one evidence that it is a copy), or
    /// `until` passes or the original ends: then it is a file of its own,
    /// read from its start (files may simply begin alike).
    Held {
        /// When to stop waiting and read it as a file of its own.
        until: Option<Instant>,
        /// The live file it is a byte-for-byte prefix of.
        copy_of: Option<FileId>,
        /// Its length when last found to be such a prefix.
        verified: u64,
    },
    /// Being read.
    Reading,
}

/// What one turn of reading did.
pub(super) struct Turn {
    /// Bytes read from the file.
    pub read: usize,
    /// Whether lines were emitted (the checkpoint moved).
    pub emitted: bool,
    /// Whether reading stopped at end of file (rather than at the budget).
    pub eof: bool,
    /// Lines cut because they exceeded the maximum line size.
    pub split: u64,
    /// The bytes before the read offset changed while reading: the file was
    /// truncated and rewritten. Nothing of this turn was kept.
    pub replaced: bool,
}

/// An open file and how far it has been read.
pub(super) struct TailedFile {
    pub id: FileId,
    pub file: File,
    pub dev: u64,
    pub ino: u64,
    pub watch: Option<WatchId>,
    /// Root-relative paths that currently lead to this inode.
    pub paths: BTreeSet<PathBuf>,
    /// The label of its lines: the first path it was seen under.
    pub source: Arc<str>,
    pub fingerprint: Option<Fingerprint>,
    pub phase: Phase,
    /// Next byte to read.
    pub read_offset: u64,
    /// Bytes after the last newline, waiting for the rest of their line.
    pub partial: Vec<u8>,
    /// The last bytes before the emitted offset (for the offset marker).
    window: Vec<u8>,
    /// When no path under the root led here any more (rotated away, deleted).
    pub retired_at: Option<Instant>,
    /// When bytes were last read from it.
    pub last_data: Instant,
    pub at_eof: bool,
    pub queued: bool,
    /// The checkpoint moved since it was last published.
    pub dirty: bool,
    /// Held as a possible copy and found to be a file of its own: never
    /// held as a copy of a live file again.
    pub independent: bool,
    /// Its creation time (ns), where the file system records one.
    pub born: Option<i64>,
    /// New, and its start position not yet handed on: not read until it is.
    pub unannounced: bool,
}

impl TailedFile {
    pub fn new(id: FileId, file: File, (dev, ino): (u64, u64), source: Arc<str>) -> Self {
        Self {
            born: birth_time(&file),
            id,
            file,
            dev,
            ino,
            watch: None,
            paths: BTreeSet::new(),
            source,
            fingerprint: None,
            phase: Phase::Pending,
            read_offset: 0,
            partial: Vec::new(),
            window: Vec::new(),
            retired_at: None,
            last_data: Instant::now(),
            at_eof: false,
            queued: false,
            dirty: false,
            independent: false,
            unannounced: false,
        }
    }

    /// Bytes of the file handed on as lines.
    pub fn emitted_offset(&self) -> u64 {
        self.read_offset - self.partial.len() as u64
    }

    pub fn key(&self) -> Option<CheckpointKey> {
        self.fingerprint.map(|fingerprint| CheckpointKey {
            dev: self.dev,
            ino: self.ino,
            fingerprint,
        })
    }

    /// The checkpoint for what has been emitted so far.
    pub fn checkpoint(&self) -> Option<Checkpoint> {
        Some(Checkpoint {
            key: self.key()?,
            offset: self.emitted_offset(),
            marker: marker(&self.window),
            path: self.source.clone(),
            born: self.born,
            truncated: false,
        })
    }

    /// The bytes just before the emitted offset (at most [`MARKER_BYTES`]).
    pub fn window(&self) -> &[u8] {
        &self.window
    }

    /// Positions the file at `offset` (a line boundary), with `window` the
    /// bytes just before it.
    pub fn seek(&mut self, offset: u64, window: Vec<u8>) {
        self.read_offset = offset;
        self.partial.clear();
        self.window = window;
        self.at_eof = false;
    }

    pub fn size(&self) -> io::Result<u64> {
        Ok(self.file.metadata()?.len())
    }

    fn remember_emitted(&mut self, emitted: &[u8]) {
        if emitted.len() >= MARKER_BYTES {
            self.window.clear();
            self.window
                .extend_from_slice(&emitted[emitted.len() - MARKER_BYTES..]);
        } else {
            self.window.extend_from_slice(emitted);
            let excess = self.window.len().saturating_sub(MARKER_BYTES);
            self.window.drain(..excess);
        }
    }

    /// Reads up to `budget` bytes and cuts them into lines in `batch`.
    pub fn read_turn(
        &mut self,
        batch: &mut Batch,
        budget: usize,
        max_line_bytes: usize,
    ) -> io::Result<Turn> {
        let mark = batch.mark();
        let start_offset = self.read_offset;
        let partial_len = self.partial.len();
        // The bytes just before the read offset as we read them: the first
        // read of the turn reads them again (in the same syscall), so a file
        // that shrank below the offset, or was truncated and rewritten past
        // it (copytruncate), is noticed before its bytes are taken for ours.
        let mut expected = [0u8; MARKER_BYTES];
        let keep = {
            let before = self.window.iter().chain(self.partial.iter());
            let known = self.window.len() + self.partial.len();
            let keep = known.min(MARKER_BYTES).min(start_offset as usize);
            for (slot, byte) in expected.iter_mut().zip(before.skip(known - keep)) {
                *slot = byte.to_owned();
            }
            keep
        };
        let mut reread = [0u8; MARKER_BYTES];
        let mut verify = self.fingerprint.is_some() && keep > 0;

        let base = batch.buffered();
        batch.data_mut().extend_from_slice(&self.partial);
        self.partial.clear();
        let mut turn = Turn {
            read: 0,
            emitted: false,
            eof: false,
            split: 0,
            replaced: false,
        };
        let mut line_start = base;
        let mut scan_from = batch.buffered();
        let result = loop {
            if turn.read >= budget {
                break Ok(());
            }
            let want = READ_CHUNK.min(budget - turn.read);
            let check = if std::mem::take(&mut verify) {
                &mut reread[..keep]
            } else {
                &mut reread[..0]
            };
            let n = match pread_append(&self.file, check, batch.data_mut(), want, self.read_offset)
            {
                Ok((checked, _)) if checked < check.len() || *check != expected[..check.len()] => {
                    turn.replaced = true;
                    break Ok(());
                }
                Ok((_, 0)) => {
                    turn.eof = true;
                    break Ok(());
                }
                Ok((_, n)) => n,
                Err(e) => break Err(e),
            };
            self.read_offset += n as u64;
            turn.read += n;
            let end = batch.buffered();
            while let Some(nl) = memchr::memchr(b'\n', &batch.data()[scan_from..end]) {
                let i = scan_from + nl;
                turn.split += self.push_pieces(batch, &mut line_start, i, max_line_bytes, end);
                batch.push_line(
                    &self.source,
                    self.id,
                    (line_start, i),
                    self.offset_in_buffer(i + 1, end),
                    LineKind::Complete,
                );
                line_start = i + 1;
                scan_from = i + 1;
            }
            scan_from = end;
            // Never hold more than one line's worth: cut an overlong line.
            turn.split += self.push_pieces(batch, &mut line_start, end, max_line_bytes, end);
            // A short read of a regular file is its end: asking again would
            // cost a syscall per turn to learn the same.
            if n < want {
                turn.eof = true;
                break Ok(());
            }
        };
        // copytruncate can empty the file and let it grow past our offset
        // between two looks: new bytes would then be read as the middle of
        // old lines. If the bytes before the offset changed, or (looked at
        // after reading, so a rewrite during the read counts too) the head
        // did, undo the turn. The bytes before the offset alone can repeat
        // from line to line; a rewritten file almost never keeps its first
        // line.
        if turn.replaced
            || (turn.read > 0
                && self.fingerprint.is_some()
                && fingerprint(&self.file).ok().flatten() != self.fingerprint)
        {
            self.partial = batch.data()[base..base + partial_len].to_vec();
            self.read_offset = start_offset;
            batch.rollback(mark);
            return Ok(Turn {
                read: 0,
                emitted: false,
                eof: false,
                split: 0,
                replaced: true,
            });
        }
        // Whatever follows the last newline waits in `partial` for its end.
        let data = batch.data_mut();
        self.partial.extend_from_slice(&data[line_start..]);
        data.truncate(line_start);
        if line_start > base {
            turn.emitted = true;
            // Borrow juggling: copy the emitted tail out first.
            let emitted = &batch.data()[base..line_start];
            let tail_start = emitted.len().saturating_sub(MARKER_BYTES);
            let tail = emitted[tail_start..].to_vec();
            self.remember_emitted(&tail);
        }
        if self.partial.is_empty() && self.partial.capacity() > 64 * 1024 {
            self.partial = Vec::new();
        }
        self.at_eof = turn.eof;
        result.map(|()| turn)
    }

    /// The file offset of buffer position `i`, when the buffer ends at
    /// `end` and that is the read offset.
    fn offset_in_buffer(&self, i: usize, end: usize) -> u64 {
        self.read_offset - (end - i) as u64
    }

    /// Emits `[line_start, upto)` as `max`-byte pieces while more than `max`
    /// bytes remain; returns how many pieces.
    fn push_pieces(
        &self,
        batch: &mut Batch,
        line_start: &mut usize,
        upto: usize,
        max: usize,
        end: usize,
    ) -> u64 {
        let mut pieces = 0;
        while upto - *line_start > max {
            let cut = *line_start + max;
            batch.push_line(
                &self.source,
                self.id,
                (*line_start, cut),
                self.offset_in_buffer(cut, end),
                LineKind::Split,
            );
            pieces += 1;
            *line_start = cut;
        }
        pieces
    }

    /// Hands on the bytes after the last newline as a line of their own
    /// (the file ended, was truncated or is being dropped).
    pub fn flush_partial(&mut self, batch: &mut Batch) -> bool {
        if self.partial.is_empty() {
            return false;
        }
        batch.push_owned_line(
            &self.source,
            self.id,
            &self.partial,
            self.read_offset,
            LineKind::Unterminated,
        );
        let partial = std::mem::take(&mut self.partial);
        self.remember_emitted(&partial);
        true
    }
}

/// Fills `check` from the bytes just before `offset` and appends up to
/// `want` bytes read at `offset` to `data` (without zeroing the buffer
/// first), in one `preadv`. Returns how many bytes went to each.
fn pread_append(
    file: &File,
    check: &mut [u8],
    data: &mut Vec<u8>,
    want: usize,
    offset: u64,
) -> io::Result<(usize, usize)> {
    data.reserve(want);
    let spare = data.spare_capacity_mut();
    let iov = [
        libc::iovec {
            iov_base: check.as_mut_ptr().cast(),
            iov_len: check.len(),
        },
        libc::iovec {
            iov_base: spare.as_mut_ptr().cast(),
            iov_len: want,
        },
    ];
    loop {
        // SAFETY: both buffers are valid for writes of their lengths (`spare`
        // has room for at least `want` bytes); preadv writes at most that and
        // we only mark what it wrote as initialized.
        let n = unsafe {
            libc::preadv(
                file.as_raw_fd(),
                iov.as_ptr(),
                2,
                (offset - check.len() as u64) as libc::off_t,
            )
        };
        if n >= 0 {
            let n = n as usize;
            let checked = n.min(check.len());
            let read = n - checked;
            // SAFETY: preadv initialized exactly `read` bytes past the length.
            unsafe { data.set_len(data.len() + read) };
            return Ok((checked, read));
        }
        let error = io::Error::last_os_error();
        if error.kind() != io::ErrorKind::Interrupted {
            return Err(error);
        }
    }
}

/// When `file` was created (ns since the epoch), if the file system keeps
/// a birth time (statx on ext4, xfs, btrfs, tmpfs).
fn birth_time(file: &File) -> Option<i64> {
    let created = file.metadata().ok()?.created().ok()?;
    let since = created.duration_since(std::time::UNIX_EPOCH).ok()?;
    i64::try_from(since.as_nanos()).ok()
}
