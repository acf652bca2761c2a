//! Content identity of a log file.
//!
//! A device + inode pair names a file while it lives, but inodes are reused as
//! soon as a file is deleted, and a copy (copytruncate) has a new inode. So a
//! file is also named by a hash of its head: the first line, or the first
//! [`HEAD_BYTES`] bytes if the first line is longer. Container log lines start
//! with a nanosecond timestamp, so two different files practically never share
//! a head. An *offset marker*, a hash of the bytes just before a saved offset,
//! guards against a file that was rewritten behind the same head.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;

use serde::{Deserialize, Serialize};
use xxhash_rust::xxh3::xxh3_64;

/// How many leading bytes at most make up the head hash.
pub const HEAD_BYTES: usize = 256;

/// How many bytes before an offset make up its marker.
pub const MARKER_BYTES: usize = 64;

/// A stable hash of a file's head.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Fingerprint(pub u64);

impl std::fmt::Display for Fingerprint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:016x}", self.0)
    }
}

/// Reads `buf.len()` bytes at `offset`, or fewer at end of file.
fn read_full_at(file: &File, buf: &mut [u8], offset: u64) -> io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match file.read_at(&mut buf[filled..], offset + filled as u64) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}

/// Hashes the head of `file`, or `None` while the file is too short to tell
/// (no newline yet and fewer than [`HEAD_BYTES`] bytes).
pub fn fingerprint(file: &File) -> io::Result<Option<Fingerprint>> {
    let mut head = [0u8; HEAD_BYTES];
    let n = read_full_at(file, &mut head, 0)?;
    Ok(head_fingerprint(&head[..n]))
}

/// The fingerprint of a file whose first bytes are `head` (at least
/// [`HEAD_BYTES`] of them, or all the file has).
pub fn head_fingerprint(head: &[u8]) -> Option<Fingerprint> {
    let head = &head[..head.len().min(HEAD_BYTES)];
    let end = match memchr::memchr(b'\n', head) {
        Some(i) => i + 1,
        None if head.len() == HEAD_BYTES => head.len(),
        None => return None,
    };
    Some(Fingerprint(xxh3_64(&head[..end])))
}

/// The bytes just before `offset` that its marker covers; `None` if the
/// file is shorter than `offset`.
pub fn window_before(file: &File, offset: u64) -> io::Result<Option<Vec<u8>>> {
    let start = offset.saturating_sub(MARKER_BYTES as u64);
    let mut window = vec![0u8; (offset - start) as usize];
    let n = read_full_at(file, &mut window, start)?;
    Ok((n == window.len()).then_some(window))
}

/// The offset marker for the bytes before an offset (at most [`MARKER_BYTES`]).
pub fn marker(window: &[u8]) -> u64 {
    xxh3_64(window)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn head_needs_a_newline_or_enough_bytes() {
        let mut f = tempfile::tempfile().unwrap();
        assert_eq!(fingerprint(&f).unwrap(), None);
        f.write_all(b"partial").unwrap();
        assert_eq!(fingerprint(&f).unwrap(), None);
        f.write_all(b" first\nsecond\n").unwrap();
        let a = fingerprint(&f).unwrap().unwrap();
        f.write_all(b"more lines do not change it\n").unwrap();
        assert_eq!(fingerprint(&f).unwrap(), Some(a));

        let mut long = tempfile::tempfile().unwrap();
        long.write_all(&[b'x'; HEAD_BYTES + 10]).unwrap();
        assert!(fingerprint(&long).unwrap().is_some());
    }

    #[test]
    fn window_is_the_bytes_before_offset() {
        let mut f = tempfile::tempfile().unwrap();
        f.write_all(b"line one\nline two\n").unwrap();
        assert_eq!(window_before(&f, 9).unwrap().unwrap(), b"line one\n");
        assert_eq!(window_before(&f, 100).unwrap(), None);
        assert_eq!(window_before(&f, 0).unwrap(), Some(Vec::new()));
        let long = [b'y'; 200];
        f.write_all(&long).unwrap();
        assert_eq!(window_before(&f, 218).unwrap().unwrap().len(), MARKER_BYTES);
    }
}
