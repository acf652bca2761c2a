//! Placement: where a file starts reading (its checkpoint, the position of
//! the file it is a copy of, or per `read_from`), and what happens to a
//! position when its file is truncated.

use std::fs::File;
use std::time::Instant;

use super::batch::FileId;
use super::fingerprint::{Fingerprint, fingerprint, marker, window_before};
use super::tailed::{Phase, TailedFile};
use super::{CollectorError, DirectoryCollector, MAX_ORPHANS, Orphan, ReadFrom, Unfinished};
use crate::log_collector::checkpoint::{Checkpoint, CheckpointKey};

impl DirectoryCollector {
    pub(super) fn place_if_waiting(&mut self, id: FileId) -> Result<(), CollectorError> {
        if self
            .files
            .get(&id)
            .is_some_and(|f| f.phase != Phase::Reading)
        {
            self.place(id)?;
        }
        Ok(())
    }

    /// Decides where a file starts: its checkpoint, its original's position
    /// if it is a copy, or per `read_from`.
    pub(super) fn place(&mut self, id: FileId) -> Result<(), CollectorError> {
        let now = Instant::now();
        let Some(file) = self.files.get_mut(&id) else {
            return Ok(());
        };
        let fp = match fingerprint(&file.file) {
            Ok(Some(fp)) => fp,
            Ok(None) | Err(_) => {
                file.phase = Phase::Pending;
                return Ok(());
            }
        };
        file.fingerprint = Some(fp);
        let key = file.key().expect("fingerprint just set");
        // The same inode and head: a restart, or a rename within the root —
        // unless the inode was reused by a new file that begins alike (its
        // birth time says so, where the file system keeps one).
        if let Some(orphan) = self.orphans.get(&key)
            && let (Some(was), Some(is)) = (orphan.checkpoint.born, file.born)
            && was != is
        {
            tracing::info!(path = %file.source, "A new file reuses the inode of one read before; reading it from the start.");
            // Its own checkpoint will take the old one's key.
            self.orphans.remove(&key);
        }
        if let Some(orphan) = self.orphans.remove(&key) {
            let resumed = resume_at(file, &orphan.checkpoint);
            if resumed {
                tracing::debug!(path = %file.source, offset = orphan.checkpoint.offset, "Resuming from its checkpoint.");
            } else {
                tracing::info!(path = %file.source, "File changed behind its checkpoint; reading it from the start.");
                file.seek(0, Vec::new());
            }
            file.dirty = true;
            return self.start_reading(id, fp);
        }
        // Another inode with this head whose reading stopped may be the
        // original of a copy made by copytruncate, which then continues
        // where reading stopped — when the evidence says so: the original
        // was seen truncated, or its inode is still here with other
        // content (truncated while we were down), or the copy is named
        // after it as rotation names copies (`app.log.1`, `app.log-2026…`).
        // A file that merely begins like another is a new file.
        let mut copy_in_progress = false;
        let candidates: Vec<CheckpointKey> = self
            .orphans
            .iter()
            .filter(|(k, o)| {
                k.fingerprint == fp
                    && (o.truncated
                        || self.by_inode.contains_key(&(k.dev, k.ino))
                        || named_after(&file.source, &o.checkpoint.path))
            })
            .map(|(k, _)| *k)
            .collect();
        for candidate in candidates {
            let checkpoint = self.orphans[&candidate].checkpoint.clone();
            if resume_at(file, &checkpoint) {
                self.orphans.remove(&candidate);
                self.superseded.push(candidate);
                self.stats.copies_adopted += 1;
                tracing::info!(path = %file.source, offset = checkpoint.offset, "File is a copy of one already read; continuing where that stopped.");
                file.dirty = true;
                return self.start_reading(id, fp);
            }
            copy_in_progress |= file.size().is_ok_and(|size| size < checkpoint.offset);
        }
        // A live file with this head: this one may be its copy, made just
        // before the original is truncated.
        if let Some(&original) = self.heads.get(&fp)
            && original != id
            && !self.files[&id].independent
        {
            let file = &self.files[&id];
            let copied = prefix_copy_len(file, &self.files[&original]);
            // Not a prefix may mean the original was truncated before or
            // during the comparison: handle that first, then decide again.
            if copied.is_none() && self.changed_under_us(original) {
                self.truncated(original)?;
                return self.place(id);
            }
            let file = &self.files[&id];
            if let Some(verified) = copied {
                // Its bytes are the original's so far: wait (while it is
                // still being copied, and `rotate_wait` after) for the
                // original's truncation, which makes it a copy.
                let until = match file.phase {
                    Phase::Held {
                        until: Some(until),
                        verified: before,
                        ..
                    } if before == verified => until,
                    _ => now + self.config.rotate_wait,
                };
                let file = self.files.get_mut(&id).expect("checked above");
                tracing::debug!(path = %file.source, verified, "Holding a possible copy of a live file.");
                file.phase = Phase::Held {
                    until: Some(until),
                    copy_of: Some(original),
                    verified,
                };
                self.held.insert(id);
                return Ok(());
            }
            // Not (or no longer) a prefix of the live file: its own file.
            self.files.get_mut(&id).expect("checked above").independent = true;
        }
        let file = self.files.get_mut(&id).expect("checked above");
        if copy_in_progress {
            let until = match file.phase {
                Phase::Held {
                    until: Some(until), ..
                } => until,
                _ => now + self.config.rotate_wait,
            };
            if now < until {
                file.phase = Phase::Held {
                    until: Some(until),
                    copy_of: None,
                    verified: 0,
                };
                self.held.insert(id);
                return Ok(());
            }
        }
        // A new file.
        tracing::debug!(path = %file.source, "A new file: reading it from its start.");
        if self.starting && self.config.read_from == ReadFrom::Tail {
            let (offset, window) = tail_position(&file.file)?;
            file.seek(offset, window);
            file.dirty = offset > 0;
        }
        // Its start position goes out before its lines (see `announce`):
        // until then a turn skips it.
        file.unannounced = true;
        self.announce.push(id);
        self.start_reading(id, fp)
    }

    pub(super) fn start_reading(
        &mut self,
        id: FileId,
        fp: Fingerprint,
    ) -> Result<(), CollectorError> {
        self.held.remove(&id);
        if let Some(file) = self.files.get_mut(&id) {
            file.phase = Phase::Reading;
        }
        self.heads.entry(fp).or_insert(id);
        self.enqueue(id);
        Ok(())
    }

    /// The file's head or size no longer matches what was read: its old
    /// position is kept for a copy to take over, and it is read anew.
    pub(super) fn truncated(&mut self, id: FileId) -> Result<(), CollectorError> {
        let Some(file) = self.files.get_mut(&id) else {
            return Ok(());
        };
        tracing::info!(path = %file.source, offset = file.read_offset, "File was truncated; reading it from the start.");
        self.stats.truncations += 1;
        let old_fp = file.fingerprint;
        let checkpoint = file.checkpoint().map(|c| Checkpoint {
            truncated: true,
            ..c
        });
        // An unfinished last line stays with the old position: a copy that
        // takes over re-reads it whole; if none does, it is handed on as it
        // is once `rotate_wait` passes.
        let unfinished = Unfinished {
            bytes: std::mem::take(&mut file.partial),
            window: file.window().to_vec(),
            source: file.source.clone(),
            file: id,
        };
        file.fingerprint = None;
        file.seek(0, Vec::new());
        file.phase = Phase::Pending;
        if let Some(checkpoint) = checkpoint {
            self.changed.push(checkpoint.clone());
            self.orphans.insert(
                checkpoint.key,
                Orphan {
                    checkpoint,
                    since: Instant::now(),
                    unfinished: (!unfinished.bytes.is_empty()).then_some(unfinished),
                    truncated: true,
                },
            );
        }
        if let Some(fp) = old_fp
            && self.heads.get(&fp) == Some(&id)
        {
            self.heads.remove(&fp);
        }
        self.place(id)?;
        // Copies waiting for this file's position may take it now.
        let held: Vec<FileId> = self.held.iter().copied().collect();
        for other in held {
            self.place(other)?;
        }
        self.trim_orphans();
        Ok(())
    }

    pub(super) fn trim_orphans(&mut self) {
        if self.orphans.len() <= MAX_ORPHANS {
            return;
        }
        let mut by_age: Vec<(Instant, CheckpointKey)> =
            self.orphans.iter().map(|(k, o)| (o.since, *k)).collect();
        by_age.sort();
        for (_, key) in by_age.iter().take(self.orphans.len() - MAX_ORPHANS) {
            self.orphans.remove(key);
            self.superseded.push(*key);
        }
    }
}

/// Positions `file` at `checkpoint` if its bytes before the offset still
/// match; returns whether it did.
pub(super) fn resume_at(file: &mut TailedFile, checkpoint: &Checkpoint) -> bool {
    match window_before(&file.file, checkpoint.offset) {
        Ok(Some(window)) if marker(&window) == checkpoint.marker => {
            file.seek(checkpoint.offset, window);
            true
        }
        _ => false,
    }
}

/// Whether `copy` is named the way rotation names a copy of `original`:
/// in the same directory, its name the original's with something appended.
pub(super) fn named_after(copy: &str, original: &str) -> bool {
    let (copy, original) = (std::path::Path::new(copy), std::path::Path::new(original));
    let (Some(copy_name), Some(original_name)) = (copy.file_name(), original.file_name()) else {
        return false;
    };
    let (copy_name, original_name) = (
        copy_name.as_encoded_bytes(),
        original_name.as_encoded_bytes(),
    );
    copy.parent() == original.parent()
        && copy_name.len() > original_name.len()
        && copy_name.starts_with(original_name)
}

/// If `copy` is byte for byte a prefix of `original` (same head, same bytes
/// before its end), its length.
pub(super) fn prefix_copy_len(copy: &TailedFile, original: &TailedFile) -> Option<u64> {
    let len = copy.size().ok()?;
    if original.size().ok()? < len {
        return None;
    }
    let a = window_before(&copy.file, len).ok()??;
    let b = window_before(&original.file, len).ok()??;
    (a == b).then_some(len)
}

/// The end of the last complete line, and the bytes before it.
pub(super) fn tail_position(file: &File) -> Result<(u64, Vec<u8>), CollectorError> {
    use std::os::unix::fs::FileExt;
    let size = file.metadata().map(|m| m.len()).unwrap_or(0);
    let look = size.min(64 * 1024);
    let mut buf = vec![0u8; look as usize];
    if file.read_exact_at(&mut buf, size - look).is_err() {
        return Ok((0, Vec::new()));
    }
    let end = match memchr::memrchr(b'\n', &buf) {
        Some(i) => i + 1,
        // No complete line at all: nothing to skip.
        None if look == size => return Ok((0, Vec::new())),
        // One line longer than we look back: start after it.
        None => buf.len(),
    };
    let window = buf[end.saturating_sub(64)..end].to_vec();
    Ok((size - look + end as u64, window))
}
