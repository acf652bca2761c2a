//! The on-disk block: the entries of one stream, or of several quiet streams
//! packed together, over a short span, compressed.
//!
//! ```text
//! ┌──────── header (40 bytes, little endian) ─────────┬─ payload ─┬ crc32c ┐
//! │ "MRB3" first_stream min_ts max_ts count plain plen │ zstd(...) │ 4 bytes │
//! └────────────────────────────────────────────────────┴───────────┴─────────┘
//! payload, before compression:
//!   streams, then per stream: id (8 bytes) and entry count
//!   per stream: its timestamps (first as zigzag varint, then deltas; sorted)
//!   per stream: its line lengths (varints)
//!   per stream: each entry's detected level (one byte)
//!   all line bytes, stream after stream
//! ```
//! "MRB2" blocks, written before levels were kept, have no level column;
//! their levels are detected again when they are read.
//! Timestamps and lengths are their own columns so zstd sees the messages of
//! a stream next to each other, which is where the ratio comes from. Quiet
//! streams share a block so that a flush of a few lines each does not make
//! thousands of tiny blocks that compress badly. The CRC covers header and
//! payload: a torn or flipped block is detected, never served.

use std::io;

use super::labels::StreamId;
use super::level::Level;

const MAGIC: &[u8; 4] = b"MRB3";
/// Blocks without the level column.
const MAGIC_V2: &[u8; 4] = b"MRB2";
/// What an entry costs in memory besides its line: timestamp, end, level.
pub const HELD_PER_ENTRY: usize = 13;
/// Bytes before the payload.
pub const HEADER_LEN: usize = 40;
/// Bytes after the payload.
pub const TRAILER_LEN: usize = 4;

/// Where a block lives and what it holds, kept in the in-memory index.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct BlockRef {
    /// The stream whose entries it holds.
    pub stream: StreamId,
    /// The partition (hours since the Unix epoch of its newest entry).
    pub partition: u32,
    /// The segment file within the partition.
    pub segment: u32,
    /// Byte offset of the block in the segment.
    pub offset: u64,
    /// Bytes on disk, header and CRC included.
    pub len: u32,
    /// Oldest entry, ns since the epoch.
    pub min_ts: i64,
    /// Newest entry, ns since the epoch.
    pub max_ts: i64,
    /// Number of entries.
    pub count: u32,
    /// Line bytes before compression.
    pub raw: u32,
}

/// Entries of one stream, ready to be encoded.
#[derive(Debug, Default, Clone)]
pub struct Entries {
    /// Timestamps, ns since the epoch.
    pub timestamps: Vec<i64>,
    /// End offset of each line in `data`.
    pub ends: Vec<u32>,
    /// Line bytes back to back.
    pub data: Vec<u8>,
    /// Each entry's detected level ([`Level`] as a byte).
    pub levels: Vec<u8>,
}

impl Entries {
    /// Appends one entry.
    pub fn push(&mut self, timestamp: i64, line: &[u8], level: Level) {
        self.timestamps.push(timestamp);
        self.data.extend_from_slice(line);
        self.ends.push(self.data.len() as u32);
        self.levels.push(level as u8);
    }

    /// Appends all of `other`'s entries.
    pub fn extend(&mut self, other: &Entries) {
        let base = self.data.len() as u32;
        self.timestamps.extend_from_slice(&other.timestamps);
        self.ends.extend(other.ends.iter().map(|e| base + e));
        self.data.extend_from_slice(&other.data);
        self.levels.extend_from_slice(&other.levels);
    }

    /// The detected level of entry `i`.
    pub fn level(&self, i: usize) -> Level {
        self.levels
            .get(i)
            .copied()
            .map_or(Level::Unknown, Level::from_byte)
    }

    /// `(timestamp, line)` of each entry, in order.
    pub fn iter(&self) -> impl Iterator<Item = (i64, &[u8])> {
        (0..self.len()).map(|i| (self.timestamps[i], self.line(i)))
    }

    /// What these entries count against the store's head memory: the
    /// lines and [`HELD_PER_ENTRY`] bytes a line.
    pub fn held_bytes(&self) -> usize {
        self.data.len() + HELD_PER_ENTRY * self.len()
    }

    /// Empties the entries, keeping their buffers for reuse.
    pub fn clear(&mut self) {
        self.timestamps.clear();
        self.ends.clear();
        self.data.clear();
        self.levels.clear();
    }

    /// Bytes the buffers have room for (what keeping them costs).
    pub fn capacity_bytes(&self) -> usize {
        self.timestamps.capacity() * 8
            + self.ends.capacity() * 4
            + self.data.capacity()
            + self.levels.capacity()
    }

    /// Copies of the entries at `indices`, in that order.
    pub fn select(&self, indices: impl IntoIterator<Item = usize>) -> Entries {
        let mut out = Entries::default();
        for i in indices {
            out.push(self.timestamps[i], self.line(i), self.level(i));
        }
        out
    }

    /// The indices of these (sorted) entries with a time in `start..end`.
    pub fn within(&self, start: i64, end: i64) -> std::ops::Range<usize> {
        let lo = self.timestamps.partition_point(|&ts| ts < start);
        let hi = self.timestamps.partition_point(|&ts| ts < end);
        lo..hi.max(lo)
    }

    /// Number of entries.
    pub fn len(&self) -> usize {
        self.timestamps.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.timestamps.is_empty()
    }

    /// The line of entry `i`.
    pub fn line(&self, i: usize) -> &[u8] {
        let start = if i == 0 { 0 } else { self.ends[i - 1] as usize };
        &self.data[start..self.ends[i] as usize]
    }

    /// Entries in timestamp order (stable: equal timestamps keep arrival order).
    pub fn sorted(&self) -> Entries {
        if self.timestamps.windows(2).all(|w| w[0] <= w[1]) {
            return self.clone();
        }
        let mut order: Vec<usize> = (0..self.len()).collect();
        order.sort_by_key(|&i| self.timestamps[i]);
        self.select(order)
    }
}

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push(v as u8 | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn get_varint(buf: &[u8], pos: &mut usize) -> io::Result<u64> {
    let mut v = 0u64;
    for shift in (0..64).step_by(7) {
        let byte = *buf
            .get(*pos)
            .ok_or_else(|| corrupt("varint runs past the end"))?;
        *pos += 1;
        v |= u64::from(byte & 0x7f) << shift;
        if byte < 0x80 {
            return Ok(v);
        }
    }
    Err(corrupt("varint too long"))
}

fn corrupt(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, format!("corrupt block: {what}"))
}

/// Encodes the sorted entries of one or more streams as one block; returns
/// the bytes and one ref per stream (placement fields left zero).
#[cfg(test)]
pub fn encode(parts: &[(StreamId, &Entries)], level: i32) -> io::Result<(Vec<u8>, Vec<BlockRef>)> {
    encode_with(parts, &mut zstd::bulk::Compressor::new(level)?)
}

/// [`encode`] with a compression context kept across blocks: a fresh one
/// per block allocated and cleared its whole workspace every time.
pub fn encode_with(
    parts: &[(StreamId, &Entries)],
    compressor: &mut zstd::bulk::Compressor<'_>,
) -> io::Result<(Vec<u8>, Vec<BlockRef>)> {
    let total: usize = parts.iter().map(|(_, e)| e.len()).sum();
    let data_len: usize = parts.iter().map(|(_, e)| e.data.len()).sum();
    let mut plain = Vec::with_capacity(data_len + total * 4 + parts.len() * 12 + 8);
    put_varint(&mut plain, parts.len() as u64);
    for (id, entries) in parts {
        debug_assert!(entries.timestamps.windows(2).all(|w| w[0] <= w[1]));
        plain.extend_from_slice(&id.0.to_le_bytes());
        put_varint(&mut plain, entries.len() as u64);
    }
    for (_, entries) in parts {
        let mut prev = 0i64;
        for (i, &ts) in entries.timestamps.iter().enumerate() {
            if i == 0 {
                put_varint(&mut plain, ((ts << 1) ^ (ts >> 63)) as u64);
            } else {
                put_varint(&mut plain, ts.wrapping_sub(prev) as u64);
            }
            prev = ts;
        }
    }
    for (_, entries) in parts {
        let mut start = 0u32;
        for &end in &entries.ends {
            put_varint(&mut plain, u64::from(end - start));
            start = end;
        }
    }
    for (_, entries) in parts {
        debug_assert_eq!(entries.levels.len(), entries.len());
        plain.extend_from_slice(&entries.levels);
    }
    for (_, entries) in parts {
        plain.extend_from_slice(&entries.data);
    }
    let payload = compressor.compress(&plain)?;

    let refs: Vec<BlockRef> = parts
        .iter()
        .map(|(id, e)| BlockRef {
            stream: *id,
            partition: 0,
            segment: 0,
            offset: 0,
            len: 0,
            min_ts: e.timestamps.first().copied().unwrap_or(0),
            max_ts: e.timestamps.last().copied().unwrap_or(0),
            count: e.len() as u32,
            raw: e.data.len() as u32,
        })
        .collect();
    let min_ts = refs.iter().map(|r| r.min_ts).min().unwrap_or(0);
    let max_ts = refs.iter().map(|r| r.max_ts).max().unwrap_or(0);
    let first = parts.first().map_or(0, |(id, _)| id.0);
    let mut out = Vec::with_capacity(HEADER_LEN + payload.len() + TRAILER_LEN);
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&first.to_le_bytes());
    out.extend_from_slice(&min_ts.to_le_bytes());
    out.extend_from_slice(&max_ts.to_le_bytes());
    out.extend_from_slice(&(total as u32).to_le_bytes());
    out.extend_from_slice(&(plain.len() as u32).to_le_bytes());
    out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    out.extend_from_slice(&payload);
    let crc = crc32c::crc32c(&out);
    out.extend_from_slice(&crc.to_le_bytes());
    let len = out.len() as u32;
    Ok((
        out,
        refs.into_iter().map(|r| BlockRef { len, ..r }).collect(),
    ))
}

fn u32_at(buf: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(buf[at..at + 4].try_into().expect("4 bytes"))
}

/// Checks the CRC and decompresses a block read from disk.
#[cfg(test)]
pub fn decompress(bytes: &[u8]) -> io::Result<(Vec<u8>, Layout)> {
    let mut out = Vec::new();
    let layout = decompress_into(&mut zstd::bulk::Decompressor::new()?, bytes, &mut out)?;
    Ok((out, layout))
}

/// The layout of a block's payload.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Layout {
    /// With the level column.
    Levels,
    /// Written before levels were kept.
    NoLevels,
}

/// Decompresses a block read from disk (checking its CRC), reusing a
/// decompression context and an output buffer, for scans that read many
/// blocks. Answers the payload's layout.
pub fn decompress_into(
    decompressor: &mut zstd::bulk::Decompressor<'_>,
    bytes: &[u8],
    out: &mut Vec<u8>,
) -> io::Result<Layout> {
    if bytes.len() < HEADER_LEN + TRAILER_LEN {
        return Err(corrupt("bad magic or length"));
    }
    let layout = match &bytes[..4] {
        m if m == MAGIC => Layout::Levels,
        m if m == MAGIC_V2 => Layout::NoLevels,
        _ => return Err(corrupt("bad magic or length")),
    };
    let body = &bytes[..bytes.len() - TRAILER_LEN];
    if crc32c::crc32c(body) != u32_at(bytes, bytes.len() - TRAILER_LEN) {
        return Err(corrupt("checksum mismatch"));
    }
    let plain_len = u32_at(bytes, 32) as usize;
    let payload_len = u32_at(bytes, 36) as usize;
    if HEADER_LEN + payload_len != body.len() {
        return Err(corrupt("payload length"));
    }
    out.clear();
    out.reserve(plain_len);
    let n = decompressor.decompress_to_buffer(&body[HEADER_LEN..], out)?;
    if n != plain_len {
        return Err(corrupt("decompressed length"));
    }
    Ok(layout)
}

/// Extracts `stream`'s entries from a decompressed block.
#[cfg(test)]
pub fn extract(plain: &[u8], layout: Layout, stream: StreamId) -> io::Result<Entries> {
    extract_many(plain, layout, &[stream]).map(|mut v| v.remove(0))
}

/// Extracts the entries of each of `wanted` from a decompressed block, in
/// one pass over its columns.
pub fn extract_many(plain: &[u8], layout: Layout, wanted: &[StreamId]) -> io::Result<Vec<Entries>> {
    let mut pos = 0;
    let streams = get_varint(plain, &mut pos)? as usize;
    if streams > plain.len() {
        return Err(corrupt("stream count"));
    }
    let mut table = Vec::with_capacity(streams);
    for _ in 0..streams {
        let id = plain
            .get(pos..pos + 8)
            .ok_or_else(|| corrupt("stream table"))?;
        let id = u64::from_le_bytes(id.try_into().expect("8 bytes"));
        pos += 8;
        table.push((id, get_varint(plain, &mut pos)? as usize));
    }
    // Which output each stream of the block feeds, if any.
    let slot: Vec<Option<usize>> = table
        .iter()
        .map(|(id, _)| wanted.iter().position(|w| w.0 == *id))
        .collect();
    if wanted
        .iter()
        .any(|w| !table.iter().any(|(id, _)| *id == w.0))
    {
        return Err(corrupt("stream not in block"));
    }
    let mut out: Vec<Entries> = vec![Entries::default(); wanted.len()];
    for (k, &(_, n)) in table.iter().enumerate() {
        let mut prev = 0i64;
        for i in 0..n {
            let v = get_varint(plain, &mut pos)?;
            if let Some(o) = slot[k] {
                let ts = if i == 0 {
                    ((v >> 1) as i64) ^ -((v & 1) as i64)
                } else {
                    prev.wrapping_add(v as i64)
                };
                out[o].timestamps.push(ts);
                prev = ts;
            }
        }
    }
    let mut ranges = vec![(0u64, 0u64); wanted.len()];
    let mut offset = 0u64;
    for (k, &(_, n)) in table.iter().enumerate() {
        let start = offset;
        let mut mine = 0u64;
        for _ in 0..n {
            let len = get_varint(plain, &mut pos)?;
            offset += len;
            if let Some(o) = slot[k] {
                mine += len;
                out[o]
                    .ends
                    .push(u32::try_from(mine).map_err(|_| corrupt("line lengths"))?);
            }
        }
        if let Some(o) = slot[k] {
            ranges[o] = (start, offset);
        }
    }
    if layout == Layout::Levels {
        for (k, &(_, n)) in table.iter().enumerate() {
            let column = plain.get(pos..pos + n).ok_or_else(|| corrupt("levels"))?;
            if let Some(o) = slot[k] {
                out[o].levels = column.to_vec();
            }
            pos += n;
        }
    }
    let data = plain.get(pos..).ok_or_else(|| corrupt("line bytes"))?;
    if offset as usize != data.len() {
        return Err(corrupt("line bytes"));
    }
    for (o, (start, end)) in ranges.into_iter().enumerate() {
        out[o].data = data[start as usize..end as usize].to_vec();
        if layout == Layout::NoLevels {
            let entries = &mut out[o];
            entries.levels = (0..entries.len())
                .map(|i| Level::of_line(entries.line(i)) as u8)
                .collect();
        }
    }
    Ok(out)
}

/// Checks, decompresses and extracts `stream`'s entries.
#[cfg(test)]
pub fn decode(bytes: &[u8], stream: StreamId) -> io::Result<Entries> {
    let (plain, layout) = decompress(bytes)?;
    extract(&plain, layout, stream)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_detects_damage() {
        let mut e = Entries::default();
        e.push(-5, b"before the epoch", Level::Info);
        e.push(1_700_000_000_000_000_000, b"", Level::Unknown);
        e.push(1_700_000_000_000_000_001, b"\xff\x00binary", Level::Fatal);
        let (bytes, r) = encode(&[(StreamId(7), &e)], 3).unwrap();
        let r = r[0];
        assert_eq!(
            (r.count, r.min_ts, r.max_ts, r.len as usize),
            (3, -5, 1_700_000_000_000_000_001, bytes.len())
        );
        let d = decode(&bytes, StreamId(7)).unwrap();
        assert_eq!(d.timestamps, e.timestamps);
        assert_eq!(d.line(2), b"\xff\x00binary");
        assert_eq!((d.level(0), d.level(2)), (Level::Info, Level::Fatal));
        assert!(decode(&bytes, StreamId(8)).is_err());
        for i in [0, 10, 45, bytes.len() - 1] {
            let mut bad = bytes.clone();
            bad[i] ^= 0x40;
            assert!(
                decode(&bad, StreamId(7)).is_err(),
                "flip at {i} not detected"
            );
        }
        assert!(decode(&bytes[..bytes.len() - 3], StreamId(7)).is_err());
    }

    #[test]
    fn several_streams_share_a_block() {
        let mut a = Entries::default();
        a.push(10, b"a1", Level::Unknown);
        a.push(20, b"a2", Level::Error);
        let mut b = Entries::default();
        b.push(5, b"b-only", Level::Debug);
        let (bytes, refs) = encode(&[(StreamId(1), &a), (StreamId(2), &b)], 3).unwrap();
        assert_eq!(refs.len(), 2);
        assert_eq!((refs[1].min_ts, refs[1].count, refs[1].raw), (5, 1, 6));
        let da = decode(&bytes, StreamId(1)).unwrap();
        assert_eq!(
            (da.timestamps.as_slice(), da.line(1)),
            (&[10, 20][..], &b"a2"[..])
        );
        assert_eq!(da.level(1), Level::Error);
        let db = decode(&bytes, StreamId(2)).unwrap();
        assert_eq!((db.line(0), db.level(0)), (&b"b-only"[..], Level::Debug));
        assert!(decode(&bytes, StreamId(3)).is_err());
    }

    #[test]
    fn sorting_is_stable() {
        let mut e = Entries::default();
        e.push(3, b"c", Level::Warn);
        e.push(1, b"a1", Level::Info);
        e.push(1, b"a2", Level::Info);
        let s = e.sorted();
        assert_eq!(s.timestamps, [1, 1, 3]);
        assert_eq!(
            (s.line(0), s.line(1), s.line(2)),
            (&b"a1"[..], &b"a2"[..], &b"c"[..])
        );
        assert_eq!(s.level(2), Level::Warn);
    }

    /// A block written before levels were kept: same columns, no level
    /// column, the old magic. Its levels are detected when read.
    #[test]
    fn blocks_without_levels_still_read() {
        let mut e = Entries::default();
        e.push(1, b"[ERROR] boom", Level::Error);
        e.push(2, b"level=debug", Level::Debug);
        let (bytes, _) = encode(&[(StreamId(9), &e)], 3).unwrap();
        let (plain, _) = decompress(&bytes).unwrap();
        // Drop the level column (it sits before the two line bytes runs).
        let lines = e.data.len();
        let mut old_plain = plain[..plain.len() - lines - 2].to_vec();
        old_plain.extend_from_slice(&plain[plain.len() - lines..]);
        let payload = zstd::bulk::compress(&old_plain, 3).unwrap();
        let mut old = bytes[..HEADER_LEN].to_vec();
        old[..4].copy_from_slice(MAGIC_V2);
        old[32..36].copy_from_slice(&(old_plain.len() as u32).to_le_bytes());
        old[36..40].copy_from_slice(&(payload.len() as u32).to_le_bytes());
        old.extend_from_slice(&payload);
        let crc = crc32c::crc32c(&old);
        old.extend_from_slice(&crc.to_le_bytes());
        let d = decode(&old, StreamId(9)).unwrap();
        assert_eq!(d.line(0), b"[ERROR] boom");
        assert_eq!((d.level(0), d.level(1)), (Level::Error, Level::Debug));
    }
}
