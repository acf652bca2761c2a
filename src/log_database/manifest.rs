//! The commit log: the one place that says what is durable.
//!
//! Every flush appends one [`Record::Commit`] naming the blocks it wrote and
//! the source checkpoints they cover; a batch is durable exactly when its
//! commit record is. Records are framed `magic | len | crc32c | payload`, so a
//! torn tail is cut off and a damaged record is skipped (the reader resyncs on
//! the next magic) with a count of what was lost. The file starts with a
//! [`Record::Snapshot`] and is rewritten (temporary file, fsync, rename) when
//! it grows, so opening never replays more than a bounded log.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::block::BlockRef;
use super::labels::{Labels, StreamId};

const MAGIC: [u8; 4] = *b"MRC1";
const FRAME: usize = 12;
/// Records larger than this are taken for corruption.
const MAX_RECORD: usize = 256 * 1024 * 1024;

/// One entry of the commit log.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum Record {
    /// The whole state: streams, blocks and checkpoints.
    Snapshot {
        /// Every stream's label set.
        streams: Vec<(StreamId, Labels)>,
        /// Every live block.
        blocks: Vec<BlockRef>,
        /// Every source checkpoint.
        checkpoints: Vec<(String, Vec<u8>)>,
        /// The next segment number to use.
        next_segment: u32,
    },
    /// One flush: new streams, new blocks, checkpoint changes (`None` = forget).
    Commit {
        /// Streams first seen in this flush.
        streams: Vec<(StreamId, Labels)>,
        /// Blocks written by this flush.
        blocks: Vec<BlockRef>,
        /// Checkpoints set or forgotten.
        checkpoints: Vec<(String, Option<Vec<u8>>)>,
    },
    /// Partitions deleted by retention.
    Dropped {
        /// Their numbers.
        partitions: Vec<u32>,
    },
}

/// What reading the log found wrong.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ReadReport {
    /// Records that failed their checksum or did not decode.
    pub records_skipped: u64,
    /// Bytes cut from a torn end or skipped while resyncing.
    pub bytes_skipped: u64,
}

fn encode(record: &Record) -> Vec<u8> {
    let payload = postcard::to_stdvec(record).expect("records always serialize");
    let mut out = Vec::with_capacity(FRAME + payload.len());
    out.extend_from_slice(&MAGIC);
    out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    out.extend_from_slice(&crc32c::crc32c(&payload).to_le_bytes());
    out.extend_from_slice(&payload);
    out
}

/// Decodes the frame at `pos`, if it is whole and intact.
fn frame_at(bytes: &[u8], pos: usize) -> Option<(Record, usize)> {
    let head = bytes.get(pos..pos + FRAME)?;
    if head[..4] != MAGIC {
        return None;
    }
    let len = u32::from_le_bytes(head[4..8].try_into().ok()?) as usize;
    let crc = u32::from_le_bytes(head[8..12].try_into().ok()?);
    if len > MAX_RECORD {
        return None;
    }
    let payload = bytes.get(pos + FRAME..pos + FRAME + len)?;
    if crc32c::crc32c(payload) != crc {
        return None;
    }
    let record = postcard::from_bytes(payload).ok()?;
    Some((record, pos + FRAME + len))
}

/// Parses a whole log; returns the records, where the last good one ends,
/// and what was skipped.
pub fn parse(bytes: &[u8]) -> (Vec<Record>, usize, ReadReport) {
    let mut records = Vec::new();
    let mut report = ReadReport::default();
    let (mut pos, mut good_end) = (0, 0);
    while pos < bytes.len() {
        match frame_at(bytes, pos) {
            Some((record, next)) => {
                records.push(record);
                pos = next;
                good_end = next;
            }
            None => {
                // Resync on the next frame that checks out.
                let next = (pos + 1..bytes.len().saturating_sub(FRAME - 1))
                    .find(|&p| bytes[p..p + 4] == MAGIC && frame_at(bytes, p).is_some());
                match next {
                    Some(p) => {
                        report.records_skipped += 1;
                        report.bytes_skipped += (p - pos) as u64;
                        pos = p;
                    }
                    None => {
                        report.bytes_skipped += (bytes.len() - pos) as u64;
                        if bytes.len() - pos >= FRAME {
                            report.records_skipped += 1;
                        }
                        break;
                    }
                }
            }
        }
    }
    (records, good_end, report)
}

/// The open commit log.
pub struct Manifest {
    path: PathBuf,
    dir: PathBuf,
    file: File,
    /// Records appended since the last snapshot.
    pub since_snapshot: usize,
}

impl Manifest {
    /// Opens (or creates) the log in `dir` and reads it.
    pub fn open(dir: &Path) -> io::Result<(Self, Vec<Record>, ReadReport)> {
        let path = dir.join("manifest.log");
        let _ = fs::remove_file(dir.join("manifest.log.tmp"));
        let bytes = match fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == io::ErrorKind::NotFound => Vec::new(),
            Err(e) => return Err(e),
        };
        let (records, good_end, report) = parse(&bytes);
        let file = OpenOptions::new().create(true).append(true).open(&path)?;
        if good_end < bytes.len() {
            // Appending after garbage would hide new records behind it.
            file.set_len(good_end as u64)?;
            file.sync_all()?;
        }
        let since_snapshot = records.len();
        Ok((
            Self {
                path,
                dir: dir.to_owned(),
                file,
                since_snapshot,
            },
            records,
            report,
        ))
    }

    /// Appends a record durably.
    pub fn append(&mut self, record: &Record) -> io::Result<()> {
        let bytes = encode(record);
        let before = self.file.metadata()?.len();
        if let Err(e) = self
            .file
            .write_all(&bytes)
            .and_then(|()| self.file.sync_data())
        {
            // Leave no half record behind (shrinking needs no space).
            let _ = self.file.set_len(before);
            return Err(e);
        }
        self.since_snapshot += 1;
        Ok(())
    }

    /// Replaces the log with a single snapshot, atomically.
    pub fn rewrite(&mut self, snapshot: &Record) -> io::Result<()> {
        let tmp = self.dir.join("manifest.log.tmp");
        let mut file = File::create(&tmp)?;
        file.write_all(&encode(snapshot))?;
        file.sync_all()?;
        fs::rename(&tmp, &self.path)?;
        File::open(&self.dir)?.sync_all()?;
        self.file = OpenOptions::new().append(true).open(&self.path)?;
        self.since_snapshot = 0;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn commit(n: usize) -> Record {
        Record::Commit {
            streams: vec![],
            blocks: vec![],
            checkpoints: vec![(format!("k{n}"), Some(vec![n as u8; 10]))],
        }
    }

    #[test]
    fn torn_tails_and_flipped_records_are_skipped() {
        let mut bytes: Vec<u8> = (0..5).flat_map(|n| encode(&commit(n))).collect();
        let one = encode(&commit(0)).len();
        let (records, end, report) = parse(&bytes);
        assert_eq!(
            (records.len(), end, report),
            (5, bytes.len(), ReadReport::default())
        );
        // Flip a byte inside record 2: it is skipped, 3 and 4 are found again.
        bytes[2 * one + FRAME + 3] ^= 1;
        let (records, _, report) = parse(&bytes);
        assert_eq!(records.len(), 4);
        assert_eq!(report.records_skipped, 1);
        // Cut inside record 4: everything before it survives.
        let (records, end, _) = parse(&bytes[..4 * one + 5]);
        assert_eq!(records.len(), 3);
        assert_eq!(end, 4 * one);
    }
}
