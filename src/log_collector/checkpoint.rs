//! Where reading resumes after a restart.
//!
//! A [`Checkpoint`] says "the bytes of this file up to `offset` have been
//! handed on". The collector produces them with every batch; whoever makes the
//! batch durable must make its checkpoints durable *in the same step*, or a
//! crash loses or repeats lines. [`CheckpointFile`] is the simple home for them
//! when lines are only printed: one JSON file replaced atomically (write a
//! temporary file, fsync, rename, fsync the directory).

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::directory::fingerprint::Fingerprint;

/// Names one file's content: its inode and its head.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct CheckpointKey {
    /// Device of the file system the file lives on.
    pub dev: u64,
    /// Inode number.
    pub ino: u64,
    /// Hash of the file's head.
    pub fingerprint: Fingerprint,
}

/// How far one file has been read and handed on.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Checkpoint {
    /// Which file.
    #[serde(flatten)]
    pub key: CheckpointKey,
    /// Bytes from the start of the file that are handed on: reading resumes here.
    pub offset: u64,
    /// Hash of the bytes just before `offset`, to detect a file rewritten
    /// behind the same head.
    pub marker: u64,
    /// The path the lines were labelled with (for people and for finding the
    /// file again among rotated copies).
    pub path: Arc<str>,
    /// When the file was created (ns since the epoch), where the file
    /// system records it: tells a reused inode with the same content from
    /// the file itself. Absent in checkpoints written before it existed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub born: Option<i64>,
    /// The position of a file seen truncated: a copy of it (copytruncate)
    /// may continue from here, after a restart too.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub truncated: bool,
}

/// Prefix of the keys under which a store keeps file checkpoints.
const STORE_PREFIX: &str = "file:";

impl CheckpointKey {
    /// The key under which a store keeps this file's checkpoint.
    pub fn store_key(&self) -> String {
        format!(
            "{STORE_PREFIX}{}:{}:{}",
            self.dev, self.ino, self.fingerprint
        )
    }
}

impl Checkpoint {
    /// The bytes a store keeps for this checkpoint.
    pub fn to_bytes(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("checkpoints always serialize")
    }
}

/// The set of checkpoints a consumer keeps, updated batch by batch.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CheckpointSet {
    entries: BTreeMap<CheckpointKey, Checkpoint>,
}

impl CheckpointSet {
    /// Builds a set from a list (later entries win).
    pub fn from_list(list: Vec<Checkpoint>) -> Self {
        Self {
            entries: list.into_iter().map(|c| (c.key, c)).collect(),
        }
    }

    /// Reads the file checkpoints out of a store's checkpoint map (other keys
    /// belong to other sources). An entry that does not decode is skipped
    /// with a warning: its file is then read per `--read-from`.
    pub fn from_store(map: &BTreeMap<String, Vec<u8>>) -> Self {
        let list = map
            .iter()
            .filter(|(key, _)| key.starts_with(STORE_PREFIX))
            .filter_map(
                |(key, bytes)| match serde_json::from_slice::<Checkpoint>(bytes) {
                    Ok(checkpoint) => Some(checkpoint),
                    Err(error) => {
                        tracing::warn!(key, %error, "Skipping an unreadable checkpoint.");
                        None
                    }
                },
            )
            .collect();
        Self::from_list(list)
    }

    /// Applies one batch's changes: updated checkpoints, then forgotten keys.
    pub fn apply(&mut self, updated: &[Checkpoint], forgotten: &[CheckpointKey]) {
        for checkpoint in updated {
            self.entries.insert(checkpoint.key, checkpoint.clone());
        }
        for key in forgotten {
            self.entries.remove(key);
        }
    }

    /// Every checkpoint, in key order.
    pub fn to_list(&self) -> Vec<Checkpoint> {
        self.entries.values().cloned().collect()
    }

    /// The checkpoint for `key`.
    pub fn get(&self, key: &CheckpointKey) -> Option<&Checkpoint> {
        self.entries.get(key)
    }

    /// How many files have a checkpoint.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether there are no checkpoints.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

/// Errors reading or writing the checkpoint file.
#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    /// The file could not be read or written.
    #[error("checkpoint file {path}: {source}")]
    Io {
        /// The file concerned.
        path: PathBuf,
        /// The underlying error.
        source: io::Error,
    },
    /// The file exists but is not a checkpoint file of a version we know.
    #[error(
        "checkpoint file {path} is unreadable ({reason}); move it away to start over \
         (files are then read per --read-from)"
    )]
    Corrupt {
        /// The file concerned.
        path: PathBuf,
        /// What was wrong.
        reason: String,
    },
}

const VERSION: u32 = 1;

#[derive(Serialize, Deserialize)]
struct OnDisk {
    version: u32,
    checkpoints: Vec<Checkpoint>,
}

/// A JSON checkpoint file in the data directory, replaced atomically.
pub struct CheckpointFile {
    path: PathBuf,
    temporary: PathBuf,
    directory: PathBuf,
}

impl CheckpointFile {
    /// The checkpoint file inside `data_directory` (created if missing).
    pub fn in_directory(data_directory: &Path) -> Result<Self, CheckpointError> {
        fs::create_dir_all(data_directory).map_err(|source| CheckpointError::Io {
            path: data_directory.to_owned(),
            source,
        })?;
        Ok(Self {
            path: data_directory.join("checkpoints.json"),
            temporary: data_directory.join("checkpoints.json.tmp"),
            directory: data_directory.to_owned(),
        })
    }

    /// Loads the last committed checkpoints. A temporary file left by a crash
    /// mid-write was never committed: it is removed, not read.
    pub fn load(&self) -> Result<CheckpointSet, CheckpointError> {
        match fs::remove_file(&self.temporary) {
            Ok(()) => tracing::warn!(
                path = %self.temporary.display(),
                "Removed an unfinished checkpoint write left by a crash."
            ),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(source) => {
                return Err(CheckpointError::Io {
                    path: self.temporary.clone(),
                    source,
                });
            }
        }
        let bytes = match fs::read(&self.path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(CheckpointSet::default()),
            Err(source) => {
                return Err(CheckpointError::Io {
                    path: self.path.clone(),
                    source,
                });
            }
        };
        let on_disk: OnDisk =
            serde_json::from_slice(&bytes).map_err(|e| CheckpointError::Corrupt {
                path: self.path.clone(),
                reason: e.to_string(),
            })?;
        if on_disk.version != VERSION {
            return Err(CheckpointError::Corrupt {
                path: self.path.clone(),
                reason: format!("version {} (this build reads {VERSION})", on_disk.version),
            });
        }
        Ok(CheckpointSet::from_list(on_disk.checkpoints))
    }

    /// Replaces the file with `set`, durably: after this returns, a crash
    /// leaves either this set or (if it fails) the previous one.
    pub fn commit(&self, set: &CheckpointSet) -> Result<(), CheckpointError> {
        let io_error = |path: &Path| {
            let path = path.to_owned();
            move |source| CheckpointError::Io { path, source }
        };
        let bytes = serde_json::to_vec(&OnDisk {
            version: VERSION,
            checkpoints: set.to_list(),
        })
        .expect("checkpoints always serialize");
        let mut file = File::create(&self.temporary).map_err(io_error(&self.temporary))?;
        file.write_all(&bytes)
            .and_then(|()| file.sync_all())
            .map_err(io_error(&self.temporary))?;
        fs::rename(&self.temporary, &self.path).map_err(io_error(&self.path))?;
        File::open(&self.directory)
            .and_then(|d| d.sync_all())
            .map_err(io_error(&self.directory))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn checkpoint(ino: u64, offset: u64) -> Checkpoint {
        Checkpoint {
            key: CheckpointKey {
                dev: 1,
                ino,
                fingerprint: Fingerprint(ino * 7),
            },
            offset,
            marker: 0,
            path: format!("/logs/{ino}.log").into(),
            born: None,
            truncated: false,
        }
    }

    #[test]
    fn commit_then_load_round_trips() {
        let dir = tempfile::tempdir().unwrap();
        let file = CheckpointFile::in_directory(dir.path()).unwrap();
        assert!(file.load().unwrap().is_empty());
        let mut set = CheckpointSet::default();
        set.apply(&[checkpoint(1, 10), checkpoint(2, 20)], &[]);
        file.commit(&set).unwrap();
        assert_eq!(file.load().unwrap(), set);
        set.apply(&[checkpoint(1, 15)], &[checkpoint(2, 0).key]);
        file.commit(&set).unwrap();
        let loaded = file.load().unwrap();
        assert_eq!(loaded.len(), 1);
        assert_eq!(loaded.get(&checkpoint(1, 0).key).unwrap().offset, 15);
    }

    #[test]
    fn checkpoints_round_trip_through_a_store_map() {
        let set = CheckpointSet::from_list(vec![checkpoint(1, 10), checkpoint(2, 20)]);
        let mut map: BTreeMap<String, Vec<u8>> = set
            .to_list()
            .iter()
            .map(|c| (c.key.store_key(), c.to_bytes()))
            .collect();
        map.insert("other:source".into(), b"not ours".to_vec());
        map.insert("file:garbage".into(), b"{".to_vec());
        assert_eq!(CheckpointSet::from_store(&map), set);
    }

    #[test]
    fn a_torn_temporary_file_is_ignored() {
        let dir = tempfile::tempdir().unwrap();
        let file = CheckpointFile::in_directory(dir.path()).unwrap();
        let set = CheckpointSet::from_list(vec![checkpoint(3, 30)]);
        file.commit(&set).unwrap();
        fs::write(
            dir.path().join("checkpoints.json.tmp"),
            b"{\"version\":1,\"checkp",
        )
        .unwrap();
        assert_eq!(file.load().unwrap(), set);
        assert!(!dir.path().join("checkpoints.json.tmp").exists());
    }

    #[test]
    fn a_corrupt_file_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("checkpoints.json"), b"garbage").unwrap();
        let file = CheckpointFile::in_directory(dir.path()).unwrap();
        let error = file.load().unwrap_err().to_string();
        assert!(error.contains("move it away"), "{error}");
    }
}
