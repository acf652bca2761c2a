//! The on-disk block: one stream's entries over a short span, compressed.
//!
//! ```text
//! ┌──────── header (40 bytes, little endian) ────────┬─ payload ─┬ crc32c ┐
//! │ "MRB1" stream_id min_ts max_ts count raw_len plen │ zstd(...) │ 4 bytes │
//! └───────────────────────────────────────────────────┴───────────┴─────────┘
//! payload, before compression:
//!   count × timestamp  (first as zigzag varint, then deltas; sorted)
//!   count × line length (varint)
//!   the line bytes, back to back
//! ```
//! Timestamps and lengths are their own columns so zstd sees the messages of
//! one stream next to each other, which is where the ratio comes from. The CRC
//! covers header and payload: a torn or flipped block is detected, never served.

use std::io;

use super::labels::StreamId;

const MAGIC: &[u8; 4] = b"MRB1";
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
}

impl Entries {
    /// Appends one entry.
    pub fn push(&mut self, timestamp: i64, line: &[u8]) {
        self.timestamps.push(timestamp);
        self.data.extend_from_slice(line);
        self.ends.push(self.data.len() as u32);
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
        let mut out = Entries {
            timestamps: Vec::with_capacity(self.len()),
            ends: Vec::with_capacity(self.len()),
            data: Vec::with_capacity(self.data.len()),
        };
        for i in order {
            out.push(self.timestamps[i], self.line(i));
        }
        out
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

/// Encodes sorted `entries` of `stream` as a block; returns the bytes and the
/// ref fields that do not depend on placement.
pub fn encode(stream: StreamId, entries: &Entries, level: i32) -> io::Result<(Vec<u8>, BlockRef)> {
    debug_assert!(entries.timestamps.windows(2).all(|w| w[0] <= w[1]));
    let n = entries.len();
    let mut plain = Vec::with_capacity(entries.data.len() + n * 4 + 16);
    put_varint(&mut plain, n as u64);
    let mut prev = 0i64;
    for (i, &ts) in entries.timestamps.iter().enumerate() {
        if i == 0 {
            put_varint(&mut plain, ((ts << 1) ^ (ts >> 63)) as u64);
        } else {
            put_varint(&mut plain, ts.wrapping_sub(prev) as u64);
        }
        prev = ts;
    }
    let mut start = 0u32;
    for &end in &entries.ends {
        put_varint(&mut plain, u64::from(end - start));
        start = end;
    }
    plain.extend_from_slice(&entries.data);
    let payload = zstd::bulk::compress(&plain, level)?;

    let min_ts = entries.timestamps.first().copied().unwrap_or(0);
    let max_ts = entries.timestamps.last().copied().unwrap_or(0);
    let mut out = Vec::with_capacity(HEADER_LEN + payload.len() + TRAILER_LEN);
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&stream.0.to_le_bytes());
    out.extend_from_slice(&min_ts.to_le_bytes());
    out.extend_from_slice(&max_ts.to_le_bytes());
    out.extend_from_slice(&(n as u32).to_le_bytes());
    out.extend_from_slice(&(plain.len() as u32).to_le_bytes());
    out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    out.extend_from_slice(&payload);
    let crc = crc32c::crc32c(&out);
    out.extend_from_slice(&crc.to_le_bytes());
    let block = BlockRef {
        stream,
        partition: 0,
        segment: 0,
        offset: 0,
        len: out.len() as u32,
        min_ts,
        max_ts,
        count: n as u32,
        raw: entries.data.len() as u32,
    };
    Ok((out, block))
}

fn u32_at(buf: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(buf[at..at + 4].try_into().expect("4 bytes"))
}

fn u64_at(buf: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(buf[at..at + 8].try_into().expect("8 bytes"))
}

/// Checks the CRC and decodes a block read from disk.
pub fn decode(bytes: &[u8], expected: StreamId) -> io::Result<Entries> {
    if bytes.len() < HEADER_LEN + TRAILER_LEN || &bytes[..4] != MAGIC {
        return Err(corrupt("bad magic or length"));
    }
    let body = &bytes[..bytes.len() - TRAILER_LEN];
    if crc32c::crc32c(body) != u32_at(bytes, bytes.len() - TRAILER_LEN) {
        return Err(corrupt("checksum mismatch"));
    }
    if u64_at(bytes, 4) != expected.0 {
        return Err(corrupt("belongs to another stream"));
    }
    let n = u32_at(bytes, 28) as usize;
    let plain_len = u32_at(bytes, 32) as usize;
    let payload_len = u32_at(bytes, 36) as usize;
    if HEADER_LEN + payload_len != body.len() {
        return Err(corrupt("payload length"));
    }
    let plain = zstd::bulk::decompress(&body[HEADER_LEN..], plain_len)?;
    let mut pos = 0;
    if get_varint(&plain, &mut pos)? as usize != n {
        return Err(corrupt("entry count"));
    }
    let mut timestamps = Vec::with_capacity(n);
    let mut prev = 0i64;
    for i in 0..n {
        let v = get_varint(&plain, &mut pos)?;
        let ts = if i == 0 {
            ((v >> 1) as i64) ^ -((v & 1) as i64)
        } else {
            prev.wrapping_add(v as i64)
        };
        timestamps.push(ts);
        prev = ts;
    }
    let mut ends = Vec::with_capacity(n);
    let mut end = 0u64;
    for _ in 0..n {
        end += get_varint(&plain, &mut pos)?;
        ends.push(u32::try_from(end).map_err(|_| corrupt("line lengths"))?);
    }
    let data = plain[pos..].to_vec();
    if end as usize != data.len() {
        return Err(corrupt("line bytes"));
    }
    Ok(Entries {
        timestamps,
        ends,
        data,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_detects_damage() {
        let mut e = Entries::default();
        e.push(-5, b"before the epoch");
        e.push(1_700_000_000_000_000_000, b"");
        e.push(1_700_000_000_000_000_001, b"\xff\x00binary");
        let (bytes, r) = encode(StreamId(7), &e, 3).unwrap();
        assert_eq!(
            (r.count, r.min_ts, r.max_ts, r.len as usize),
            (3, -5, 1_700_000_000_000_000_001, bytes.len())
        );
        let d = decode(&bytes, StreamId(7)).unwrap();
        assert_eq!(d.timestamps, e.timestamps);
        assert_eq!(d.line(2), b"\xff\x00binary");
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
    fn sorting_is_stable() {
        let mut e = Entries::default();
        e.push(3, b"c");
        e.push(1, b"a1");
        e.push(1, b"a2");
        let s = e.sorted();
        assert_eq!(s.timestamps, [1, 1, 3]);
        assert_eq!(
            (s.line(0), s.line(1), s.line(2)),
            (&b"a1"[..], &b"a2"[..], &b"c"[..])
        );
    }
}
