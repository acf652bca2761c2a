//! Discovery: turning file-system events into the collector's view of which
//! paths under the root lead to which open files (through symlinks, with
//! directory watches on link targets so kubelet-style rotation is seen).

use std::collections::BTreeSet;
use std::fs::{self, File, Metadata};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use super::batch::FileId;
use super::tailed::{Phase, TailedFile};
use super::{CollectorError, DirWatch, DirectoryCollector, WatchOwner};
use crate::watcher::{Event, EventKind, WatcherError};

impl DirectoryCollector {
    pub(super) fn handle_event(&mut self, event: Event) -> Result<(), CollectorError> {
        if event.kind == EventKind::Overflow {
            tracing::warn!("File event queue overflowed; rescanning every file.");
            self.stats.overflows += 1;
            self.rescan_needed = true;
            return Ok(());
        }
        let Some(watch) = event.watch else {
            return Ok(());
        };
        match self.owners.get(&watch).cloned() {
            Some(WatchOwner::Dir(dir)) => match event.kind {
                EventKind::Created | EventKind::Removed => match event.name {
                    Some(name) => self.dir_entry_changed(&dir, Path::new(&name))?,
                    None => self.rescan_dir(&dir)?,
                },
                EventKind::DirectoryChanged => self.rescan_dir(&dir)?,
                EventKind::Moved | EventKind::Gone => self.dir_gone(&dir)?,
                _ => {}
            },
            Some(WatchOwner::File(id)) => {
                if let Some(file) = self.files.get_mut(&id) {
                    if event.kind == EventKind::Gone {
                        file.watch = None;
                        self.owners.remove(&watch);
                    }
                    if matches!(file.phase, Phase::Held { .. } | Phase::Pending) {
                        self.place(id)?;
                    }
                    self.enqueue(id);
                }
            }
            None => {}
        }
        Ok(())
    }

    pub(super) fn dir_entry_changed(
        &mut self,
        dir: &Path,
        name: &Path,
    ) -> Result<(), CollectorError> {
        let Some(watch) = self.dirs.get(dir) else {
            return Ok(());
        };
        let rel = watch.rel.as_ref().map(|r| r.join(name));
        let links: Vec<PathBuf> = watch.link_rels.iter().cloned().collect();
        if let Some(rel) = rel {
            self.examine(&rel)?;
        }
        for link in links {
            self.examine(&link)?;
        }
        Ok(())
    }

    pub(super) fn rescan_dir(&mut self, dir: &Path) -> Result<(), CollectorError> {
        let Some(watch) = self.dirs.get(dir) else {
            return Ok(());
        };
        let rel = watch.rel.clone();
        let links: Vec<PathBuf> = watch.link_rels.iter().cloned().collect();
        if let Some(rel) = rel {
            self.scan_dir(&rel)?;
        }
        for link in links {
            self.examine(&link)?;
        }
        Ok(())
    }

    pub(super) fn dir_gone(&mut self, dir: &Path) -> Result<(), CollectorError> {
        let Some(watch) = self.dirs.remove(dir) else {
            return Ok(());
        };
        self.owners.remove(&watch.watch);
        let _ = self.watcher.unwatch(watch.watch);
        if watch.rel.as_deref() == Some(Path::new("")) {
            tracing::error!(root = %self.config.root.display(), "The log directory itself was moved or deleted.");
        }
        if let Some(rel) = &watch.rel {
            self.forget_under(rel)?;
        }
        for link in watch.link_rels {
            self.links.remove(&link);
            self.examine(&link)?;
        }
        Ok(())
    }

    /// Re-examines every known path at or under `rel`.
    pub(super) fn forget_under(&mut self, rel: &Path) -> Result<(), CollectorError> {
        let known: Vec<PathBuf> = self
            .paths
            .keys()
            .chain(self.links.keys())
            .filter(|p| p.starts_with(rel))
            .cloned()
            .collect();
        for path in known {
            self.examine(&path)?;
        }
        let subdirs: Vec<PathBuf> = self
            .dirs
            .iter()
            .filter(|(_, w)| {
                w.rel
                    .as_ref()
                    .is_some_and(|r| r.starts_with(rel) && r != rel)
            })
            .map(|(dir, _)| dir.clone())
            .collect();
        for dir in subdirs {
            if !dir.is_dir() {
                self.dir_gone(&dir)?;
            }
        }
        Ok(())
    }

    pub(super) fn rescan_all(&mut self) -> Result<(), CollectorError> {
        self.scan_dir(Path::new(""))?;
        let known: Vec<PathBuf> = self
            .paths
            .keys()
            .chain(self.links.keys())
            .cloned()
            .collect();
        for path in known {
            self.examine(&path)?;
        }
        let ids: Vec<FileId> = self.files.keys().copied().collect();
        for id in ids {
            self.place_if_waiting(id)?;
            self.enqueue(id);
        }
        Ok(())
    }

    /// Watches a directory under the root and examines its entries.
    pub(super) fn scan_dir(&mut self, rel: &Path) -> Result<(), CollectorError> {
        let full = self.full_path(rel);
        let canonical = if rel.as_os_str().is_empty() {
            self.root_canonical.clone()
        } else {
            match fs::canonicalize(&full) {
                Ok(c) => c,
                Err(_) => return Ok(()),
            }
        };
        match self.dirs.get_mut(&canonical) {
            Some(watch) => watch.rel = Some(rel.to_owned()),
            None => {
                let watch = match self.watcher.watch_directory(&canonical) {
                    Ok(w) => w,
                    Err(WatcherError::Watch { .. }) if !rel.as_os_str().is_empty() => {
                        return Ok(()); // vanished meanwhile
                    }
                    Err(e) => return Err(e.into()),
                };
                self.owners
                    .insert(watch, WatchOwner::Dir(canonical.clone()));
                self.dirs.insert(
                    canonical,
                    DirWatch {
                        watch,
                        rel: Some(rel.to_owned()),
                        link_rels: BTreeSet::new(),
                    },
                );
            }
        }
        let entries = match fs::read_dir(&full) {
            Ok(entries) => entries,
            Err(source) if rel.as_os_str().is_empty() => {
                return Err(CollectorError::Root {
                    path: self.config.root.clone(),
                    source,
                });
            }
            Err(_) => return Ok(()),
        };
        let mut names: Vec<PathBuf> = entries
            .filter_map(|e| e.ok())
            .map(|e| rel.join(e.file_name()))
            .collect();
        // Oldest names first is not knowable here; sorted is at least stable.
        names.sort();
        let seen: BTreeSet<&PathBuf> = names.iter().collect();
        let vanished: Vec<PathBuf> = self
            .paths
            .keys()
            .chain(self.links.keys())
            .filter(|p| p.parent() == Some(rel) && !seen.contains(p))
            .cloned()
            .collect();
        for path in names.iter().chain(vanished.iter()) {
            self.examine(path)?;
        }
        Ok(())
    }

    pub(super) fn full_path(&self, rel: &Path) -> PathBuf {
        if rel.as_os_str().is_empty() {
            self.config.root.clone()
        } else {
            self.config.root.join(rel)
        }
    }

    /// Looks at one root-relative path and brings the views in line with it.
    pub(super) fn examine(&mut self, rel: &Path) -> Result<(), CollectorError> {
        let full = self.full_path(rel);
        let Ok(meta) = fs::symlink_metadata(&full) else {
            self.unlink(rel);
            self.detach(rel);
            return Ok(());
        };
        let kind = meta.file_type();
        if kind.is_dir() {
            self.unlink(rel);
            self.detach(rel);
            return self.scan_dir(rel);
        }
        if kind.is_symlink() {
            self.track_link(rel, &full);
            return match fs::metadata(&full) {
                Ok(target) if target.is_file() => self.attach(rel, &full, &target),
                _ => {
                    // Dangling for now (kubelet between rename and reopen):
                    // the link's directory watch will tell us when it returns.
                    self.detach(rel);
                    Ok(())
                }
            };
        }
        self.unlink(rel);
        if kind.is_file() {
            self.attach(rel, &full, &meta)
        } else {
            self.detach(rel);
            Ok(())
        }
    }

    /// Watches the directory a symlink points into, so a target that is
    /// renamed and re-created there is noticed.
    pub(super) fn track_link(&mut self, rel: &Path, full: &Path) {
        let Ok(target) = fs::read_link(full) else {
            return;
        };
        let target = full.parent().unwrap_or(Path::new("/")).join(target);
        let Some(dir) = target.parent().and_then(|d| fs::canonicalize(d).ok()) else {
            self.unlink(rel);
            return;
        };
        if self.links.get(rel) == Some(&dir) {
            return;
        }
        self.unlink(rel);
        if !self.dirs.contains_key(&dir) {
            let Ok(watch) = self.watcher.watch_directory(&dir) else {
                return;
            };
            self.owners.insert(watch, WatchOwner::Dir(dir.clone()));
            self.dirs.insert(
                dir.clone(),
                DirWatch {
                    watch,
                    rel: None,
                    link_rels: BTreeSet::new(),
                },
            );
        }
        if let Some(watch) = self.dirs.get_mut(&dir) {
            watch.link_rels.insert(rel.to_owned());
        }
        self.links.insert(rel.to_owned(), dir);
    }

    /// Forgets that `rel` is a symlink, dropping its directory watch if unused.
    pub(super) fn unlink(&mut self, rel: &Path) {
        let Some(dir) = self.links.remove(rel) else {
            return;
        };
        if let Some(watch) = self.dirs.get_mut(&dir) {
            watch.link_rels.remove(rel);
            if watch.link_rels.is_empty() && watch.rel.is_none() {
                let id = watch.watch;
                self.dirs.remove(&dir);
                self.owners.remove(&id);
                let _ = self.watcher.unwatch(id);
            }
        }
    }

    /// Makes `rel` lead to the file `meta` describes, opening it if new.
    pub(super) fn attach(
        &mut self,
        rel: &Path,
        full: &Path,
        meta: &Metadata,
    ) -> Result<(), CollectorError> {
        let inode = (meta.dev(), meta.ino());
        if let Some(id) = self.paths.get(rel)
            && self.files.get(id).is_some_and(|f| (f.dev, f.ino) == inode)
        {
            return Ok(());
        }
        self.detach(rel);
        let id = match self.by_inode.get(&inode) {
            Some(id) => *id,
            None => match self.open(rel, full)? {
                Some(id) => id,
                None => return Ok(()),
            },
        };
        let file = self.files.get_mut(&id).expect("indexed file exists");
        file.paths.insert(rel.to_owned());
        if file.retired_at.take().is_some() {
            self.retired.remove(&id);
        }
        self.paths.insert(rel.to_owned(), id);
        Ok(())
    }

    pub(super) fn open(
        &mut self,
        rel: &Path,
        full: &Path,
    ) -> Result<Option<FileId>, CollectorError> {
        let file = match open_noatime(full) {
            Ok(file) => file,
            Err(error) => {
                tracing::warn!(path = %full.display(), %error, "Cannot open log file; skipping it until it changes.");
                return Ok(None);
            }
        };
        let Ok(meta) = file.metadata() else {
            return Ok(None);
        };
        let inode = (meta.dev(), meta.ino());
        if let Some(id) = self.by_inode.get(&inode) {
            // Replaced between stat and open: the new inode is already known.
            return Ok(Some(*id));
        }
        let watch = match self.watcher.watch_file(full) {
            Ok(watch) => watch,
            Err(WatcherError::Watch { .. }) => return Ok(None), // gone meanwhile
            Err(error) => return Err(error.into()),
        };
        self.next_id += 1;
        let id = FileId(self.next_id);
        let source: Arc<str> = Arc::from(full.to_string_lossy().as_ref());
        let mut tailed = TailedFile::new(id, file, inode, source);
        tailed.watch = Some(watch);
        tailed.paths.insert(rel.to_owned());
        self.files.insert(id, tailed);
        self.by_inode.insert(inode, id);
        self.owners.insert(watch, WatchOwner::File(id));
        tracing::debug!(path = %full.display(), ?inode, "Tailing file.");
        // At start-up, files are placed once the scan has found them all.
        if !self.starting {
            self.place(id)?;
        }
        self.enqueue(id);
        Ok(Some(id))
    }

    /// `rel` no longer leads to the file it did: if no other path does, the
    /// file is retired: drained, then closed after `rotate_wait`.
    pub(super) fn detach(&mut self, rel: &Path) {
        let Some(id) = self.paths.remove(rel) else {
            return;
        };
        let Some(file) = self.files.get_mut(&id) else {
            return;
        };
        file.paths.remove(rel);
        if file.paths.is_empty() && file.retired_at.is_none() {
            file.retired_at = Some(Instant::now());
            self.retired.insert(id);
            self.stats.files_rotated += 1;
            self.enqueue(id);
        }
    }
}

/// Opens a log file for reading without updating its access time (the
/// kernel otherwise touches the inode on reads); falls back to a plain open
/// where that is not allowed (files of another user).
fn open_noatime(path: &Path) -> std::io::Result<File> {
    use std::os::unix::fs::OpenOptionsExt;
    match File::options()
        .read(true)
        .custom_flags(libc::O_NOATIME)
        .open(path)
    {
        Err(e) if e.raw_os_error() == Some(libc::EPERM) => File::open(path),
        other => other,
    }
}
