//! Lines the kubelet rotated away while monitoring-rs was down.
//!
//! The kubelet renames `0.log` to `0.log.<timestamp>` at its size limit and
//! gzips that file at the next rotation. A file with a checkpoint that is not
//! under `/var/log/containers` any more is looked for among its container's
//! rotated files (plain or `.gz`, matched by head fingerprint and the marker
//! before the offset) and read from the checkpoint on; rotated files newer
//! than it were never read and are read whole. Other collectors lose exactly
//! these lines.

use std::fs::{self, File};
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::log_collector::checkpoint::{Checkpoint, CheckpointKey};
use crate::log_collector::directory::fingerprint::{HEAD_BYTES, head_fingerprint, marker};

/// One rotated file still to read: from `skip` on (its checkpoint's
/// offset), or whole.
#[derive(Debug)]
struct Pending {
    /// The `/var/log/containers` path its lines are labelled with.
    source: Arc<str>,
    /// The rotated file.
    file: PathBuf,
    /// Bytes already handed on before the restart.
    skip: u64,
    /// The checkpoint that described how far reading had come.
    from: Option<Checkpoint>,
    /// Whether a later file of the same chain follows.
    last_of_chain: bool,
}

/// Lines of one rotated file, a bounded piece at a time, and the
/// checkpoint changes that record how far reading has come, so that a
/// crash in the middle of recovery resumes where it stopped.
#[derive(Debug)]
pub struct Chunk {
    /// The `/var/log/containers` path its lines are labelled with.
    pub source: Arc<str>,
    /// Whole lines (the last one may lack its newline at the end of a file).
    pub bytes: Vec<u8>,
    /// The position after these lines (`None` once the chain is finished).
    pub checkpoint: Option<Checkpoint>,
    /// A checkpoint this replaces or finishes.
    pub forgets: Option<CheckpointKey>,
}

/// What is left to read of files rotated away while monitoring-rs was down:
/// one open file at a time, read in pieces, so memory holds one piece.
#[derive(Default)]
pub struct Recovery {
    pending: std::collections::VecDeque<Pending>,
    current: Option<Open>,
}

struct Open {
    item: Pending,
    reader: Content,
    /// Bytes of the file's (decompressed) content read so far.
    offset: u64,
    /// The last bytes before `offset` (for the marker).
    window: Vec<u8>,
    fingerprint: Option<crate::log_collector::directory::fingerprint::Fingerprint>,
    /// The checkpoint key in force for this chain (to forget when it moves).
    anchor: Option<CheckpointKey>,
}

impl Recovery {
    /// Whether anything is left to read.
    pub fn is_pending(&self) -> bool {
        self.current.is_some() || !self.pending.is_empty()
    }

    /// The next piece of at most about `max_bytes` of lines.
    pub fn next_chunk(&mut self, max_bytes: usize) -> Option<Chunk> {
        use std::io::BufRead;
        loop {
            if self.current.is_none() {
                let item = self.pending.pop_front()?;
                match open(&item.file).and_then(|r| skip(r, item.skip)) {
                    Ok((reader, window)) => {
                        let anchor = item.from.as_ref().map(|c| c.key);
                        let fingerprint = head(&item.file).and_then(|h| head_fingerprint(&h));
                        self.current = Some(Open {
                            offset: item.skip,
                            item,
                            reader,
                            window,
                            fingerprint,
                            anchor,
                        });
                    }
                    Err(error) => {
                        tracing::warn!(file = %item.file.display(), %error, "Cannot read a rotated file; its lines are lost.");
                        continue;
                    }
                }
            }
            let open = self.current.as_mut().expect("just opened");
            let mut bytes = Vec::new();
            let mut eof = false;
            while bytes.len() < max_bytes {
                match open.reader.read_until(b'\n', &mut bytes) {
                    Ok(0) => {
                        eof = true;
                        break;
                    }
                    Ok(_) => {}
                    Err(error) => {
                        tracing::warn!(file = %open.item.file.display(), %error, "Reading a rotated file failed; the rest of it is lost.");
                        eof = true;
                        break;
                    }
                }
            }
            open.offset += bytes.len() as u64;
            open.window
                .extend_from_slice(&bytes[bytes.len().saturating_sub(64)..]);
            let excess = open.window.len().saturating_sub(64);
            open.window.drain(..excess);
            let source = open.item.source.clone();
            // Where reading stands, under this file's key (a new key when
            // the chain moves to a newer file): a restart resumes here.
            let key = open.fingerprint.map(|fp| CheckpointKey {
                dev: 0,
                ino: 0,
                fingerprint: fp,
            });
            let done = eof && open.item.last_of_chain;
            // Progress after every piece (the end of a file included, so
            // its last piece is not read twice after a crash), until the
            // whole chain is read; then the position is forgotten.
            let checkpoint = match (done, key) {
                (false, Some(key)) => Some(Checkpoint {
                    key,
                    offset: open.offset,
                    marker: marker(&open.window),
                    path: source.clone(),
                    born: None,
                    truncated: false,
                }),
                _ => None,
            };
            let forgets = match (&checkpoint, open.anchor) {
                (Some(c), Some(anchor)) if c.key != anchor => Some(anchor),
                (None, anchor) => anchor,
                _ => None,
            };
            if let Some(c) = &checkpoint {
                open.anchor = Some(c.key);
            }
            if eof {
                let anchor = open.anchor.filter(|_| !done);
                self.current = None;
                // The next file of the chain takes the position over.
                if let Some(next) = self.pending.front_mut()
                    && next.source == source
                    && let Some(key) = anchor
                {
                    next.from = Some(Checkpoint {
                        key,
                        offset: 0,
                        marker: 0,
                        path: source.clone(),
                        born: None,
                        truncated: false,
                    });
                }
            }
            if bytes.is_empty() && checkpoint.is_none() && forgets.is_none() {
                continue;
            }
            return Some(Chunk {
                source,
                bytes,
                checkpoint,
                forgets,
            });
        }
    }
}

/// A rotated file's content, plain or gunzipped on the fly.
type Content = io::BufReader<Box<dyn Read + Send>>;

/// Skips the first `n` bytes; returns the reader and the bytes before `n`.
fn skip(reader: Box<dyn Read + Send>, n: u64) -> io::Result<(Content, Vec<u8>)> {
    let mut reader = io::BufReader::with_capacity(64 * 1024, reader);
    let before = n.saturating_sub(64);
    io::copy(&mut (&mut reader).take(before), &mut io::sink())?;
    let mut window = Vec::new();
    (&mut reader).take(n - before).read_to_end(&mut window)?;
    Ok((reader, window))
}

fn open(path: &Path) -> io::Result<Box<dyn Read + Send>> {
    let file = File::open(path)?;
    Ok(if path.extension().is_some_and(|e| e == "gz") {
        Box::new(flate2::read::GzDecoder::new(file))
    } else {
        Box::new(file)
    })
}

/// The marker of the 64 bytes before `offset` in `path`'s content.
fn marker_at(path: &Path, offset: u64) -> io::Result<Option<u64>> {
    let (_, window) = skip(open(path)?, offset)?;
    if (window.len() as u64) < offset.min(64) {
        return Ok(None);
    }
    Ok(Some(marker(&window)))
}

fn head(path: &Path) -> Option<Vec<u8>> {
    let mut head = Vec::with_capacity(HEAD_BYTES);
    open(path)
        .ok()?
        .take(HEAD_BYTES as u64)
        .read_to_end(&mut head)
        .ok()?;
    Some(head)
}

/// Finds what `unmatched` checkpoints (files gone from the root) left
/// unread in their containers' rotated files; reading is [`Recovery`]'s.
pub fn recover(unmatched: &[Checkpoint]) -> Recovery {
    let mut out: Vec<Pending> = Vec::new();
    // Checkpoints by container directory (the link still points into it).
    let mut by_dir: Vec<(PathBuf, String, String, Vec<&Checkpoint>)> = Vec::new();
    for c in unmatched {
        let Ok(target) = fs::read_link(&*c.path) else {
            continue;
        };
        let target = Path::new(&*c.path)
            .parent()
            .unwrap_or(Path::new("/"))
            .join(target);
        let (Some(dir), Some(name)) = (target.parent(), target.file_name()) else {
            continue;
        };
        let name = name.to_string_lossy().into_owned();
        match by_dir
            .iter_mut()
            .find(|(d, n, _, _)| d == dir && *n == name)
        {
            Some((_, _, _, list)) => list.push(c),
            None => by_dir.push((dir.to_owned(), name, c.path.to_string(), vec![c])),
        }
    }
    for (dir, live, source, checkpoints) in by_dir {
        let prefix = format!("{live}.");
        let mut rotated: Vec<PathBuf> = fs::read_dir(&dir)
            .map(|d| d.flatten().map(|e| e.path()).collect())
            .unwrap_or_default();
        rotated.retain(|p| {
            let name = p
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            name.starts_with(&prefix) && !name.ends_with(".tmp")
        });
        // Timestamps sort; a file and its .gz never both stay for long.
        rotated.sort();
        let mut reading = false;
        for path in rotated {
            let fp = head(&path).and_then(|h| head_fingerprint(&h));
            let matched = checkpoints.iter().find(|c| Some(c.key.fingerprint) == fp);
            match matched {
                Some(c) => {
                    if marker_at(&path, c.offset).ok().flatten() != Some(c.marker) {
                        continue;
                    }
                    tracing::info!(file = %path.display(), offset = c.offset, "Reading the rest of a file rotated while monitoring-rs was down.");
                    out.push(Pending {
                        source: Arc::from(source.as_str()),
                        file: path,
                        skip: c.offset,
                        from: Some((*c).clone()),
                        last_of_chain: true,
                    });
                    reading = true;
                }
                None if reading => {
                    tracing::info!(file = %path.display(), "Reading a file rotated away while monitoring-rs was down.");
                    if let Some(previous) = out.last_mut() {
                        previous.last_of_chain = false;
                    }
                    out.push(Pending {
                        source: Arc::from(source.as_str()),
                        file: path,
                        skip: 0,
                        from: None,
                        last_of_chain: true,
                    });
                }
                None => {}
            }
        }
    }
    Recovery {
        pending: out.into(),
        current: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    /// The checkpoint a collector would have kept for `path` after `offset`.
    fn checkpoint_of(path: &Path, link: &Path, offset: u64) -> Checkpoint {
        let bytes = fs::read(path).unwrap();
        let offset = offset as usize;
        Checkpoint {
            key: CheckpointKey {
                dev: 1,
                ino: 2,
                fingerprint: head_fingerprint(&bytes[..bytes.len().min(HEAD_BYTES)]).unwrap(),
            },
            offset: offset as u64,
            marker: marker(&bytes[offset.saturating_sub(64)..offset]),
            path: Arc::from(link.to_str().unwrap()),
            born: None,
            truncated: false,
        }
    }

    /// Applies a chunk's checkpoint changes to a stand-in store.
    fn apply(store: &mut BTreeMap<CheckpointKey, Checkpoint>, chunk: &Chunk) {
        if let Some(key) = chunk.forgets {
            store.remove(&key);
        }
        if let Some(c) = &chunk.checkpoint {
            store.insert(c.key, c.clone());
        }
    }

    #[test]
    fn rotated_files_are_read_in_pieces_and_a_crash_midway_repeats_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let node = testkit::kubelet::Node::new(dir.path()).unwrap();
        let mut c = node.start("default", "web", "uid", "nginx").unwrap();
        let line = |i: usize| format!("line {i:04} {}", "x".repeat(i % 50));
        for i in 0..100 {
            c.write("stdout", 1_000 + i as i64, line(i).as_bytes())
                .unwrap();
        }
        let live = fs::canonicalize(c.link()).unwrap();
        // Read up to line 40 before going down.
        let text = fs::read_to_string(&live).unwrap();
        let offset: usize = text.lines().take(40).map(|l| l.len() + 1).sum();
        let anchor = checkpoint_of(&live, c.link(), offset as u64);
        // While down: two rotations; the first rotated file gets gzipped.
        c.rotate().unwrap();
        for i in 100..200 {
            c.write("stdout", 1_000 + i as i64, line(i).as_bytes())
                .unwrap();
        }
        c.rotate().unwrap();
        let mut store = BTreeMap::from([(anchor.key, anchor)]);
        let mut got: Vec<String> = Vec::new();
        // A crash after every third piece: the next start resumes from the
        // store's checkpoints.
        for _round in 0..100 {
            let unmatched: Vec<Checkpoint> = store.values().cloned().collect();
            let mut recovery = recover(&unmatched);
            if !recovery.is_pending() {
                break;
            }
            for _ in 0..3 {
                let Some(chunk) = recovery.next_chunk(300) else {
                    break;
                };
                assert!(chunk.bytes.len() < 300 + 200, "pieces stay small");
                got.extend(
                    String::from_utf8(chunk.bytes.clone())
                        .unwrap()
                        .lines()
                        .map(|l| l.split(' ').skip(3).collect::<Vec<_>>().join(" ")),
                );
                apply(&mut store, &chunk);
            }
        }
        let want: Vec<String> = (40..200).map(line).collect();
        assert_eq!(got, want, "every line after the checkpoint, once, in order");
        assert!(store.is_empty(), "the finished chain leaves no checkpoint");
    }
}
