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

use crate::log_collector::checkpoint::{Checkpoint, CheckpointKey};
use crate::log_collector::directory::fingerprint::{HEAD_BYTES, head_fingerprint, marker};

/// Unread bytes of one rotated file.
#[derive(Debug)]
pub struct Recovered {
    /// The `/var/log/containers` path its lines are labelled with.
    pub source: String,
    /// The rotated file they were read from.
    pub file: PathBuf,
    /// The bytes after the checkpoint (or all of them).
    pub bytes: Vec<u8>,
    /// The checkpoint this finishes, if any.
    pub finishes: Option<CheckpointKey>,
}

fn open(path: &Path) -> io::Result<Box<dyn Read>> {
    let file = File::open(path)?;
    Ok(if path.extension().is_some_and(|e| e == "gz") {
        Box::new(flate2::read::GzDecoder::new(file))
    } else {
        Box::new(file)
    })
}

fn read_all(path: &Path) -> io::Result<Vec<u8>> {
    let mut bytes = Vec::new();
    open(path)?.read_to_end(&mut bytes)?;
    Ok(bytes)
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

/// Finds and reads what `unmatched` checkpoints (files gone from the root)
/// left unread in their containers' rotated files.
pub fn recover(unmatched: &[Checkpoint]) -> Vec<Recovered> {
    let mut out = Vec::new();
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
                    let Ok(bytes) = read_all(&path) else { continue };
                    let offset = c.offset as usize;
                    let window =
                        &bytes[offset.saturating_sub(64).min(bytes.len())..offset.min(bytes.len())];
                    if offset > bytes.len() || marker(window) != c.marker {
                        continue;
                    }
                    tracing::info!(file = %path.display(), offset, "Reading the rest of a file rotated while monitoring-rs was down.");
                    out.push(Recovered {
                        source: source.clone(),
                        file: path,
                        bytes: bytes[offset..].to_vec(),
                        finishes: Some(c.key),
                    });
                    reading = true;
                }
                None if reading => {
                    let Ok(bytes) = read_all(&path) else { continue };
                    tracing::info!(file = %path.display(), "Reading a file rotated away while monitoring-rs was down.");
                    out.push(Recovered {
                        source: source.clone(),
                        file: path,
                        bytes,
                        finishes: None,
                    });
                }
                None => {}
            }
        }
    }
    out
}
