//! A kubelet-like writer of container logs: the directory layout, CRI lines
//! (split into `P` pieces like containerd, stdout and stderr in one file),
//! rotation as the kubelet does it, and pod removal.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, UNIX_EPOCH};

/// A node's `/var/log`, under a directory of the test's.
pub struct Node {
    root: PathBuf,
}

/// One container's log, written as the runtime writes it.
pub struct Container {
    dir: PathBuf,
    link: PathBuf,
    file: File,
    /// Pieces are cut at this many message bytes (containerd: 16 KiB).
    pub split_at: usize,
    /// Rotated files kept, besides the live one (kubelet: max files - 1).
    pub keep: usize,
    rotations: usize,
}

/// Formats ns since the epoch as RFC 3339 with nanoseconds.
pub fn rfc3339(ns: i64) -> String {
    humantime::format_rfc3339_nanos(UNIX_EPOCH + Duration::from_nanos(ns.max(0) as u64)).to_string()
}

impl Node {
    /// Lays out `<root>/var/log/{pods,containers}`.
    pub fn new(root: &Path) -> io::Result<Self> {
        fs::create_dir_all(root.join("var/log/pods"))?;
        fs::create_dir_all(root.join("var/log/containers"))?;
        Ok(Self {
            root: root.to_owned(),
        })
    }

    /// `/var/log/containers`, the collector's root.
    pub fn containers(&self) -> PathBuf {
        self.root.join("var/log/containers")
    }

    fn pod_dir(&self, namespace: &str, pod: &str, uid: &str) -> PathBuf {
        self.root
            .join(format!("var/log/pods/{namespace}_{pod}_{uid}"))
    }

    /// Starts a container: its `0.log` and the `/var/log/containers` link.
    pub fn start(
        &self,
        namespace: &str,
        pod: &str,
        uid: &str,
        container: &str,
    ) -> io::Result<Container> {
        let dir = self.pod_dir(namespace, pod, uid).join(container);
        fs::create_dir_all(&dir)?;
        let id = format!(
            "{:064x}",
            xxhash_rust::xxh3::xxh3_128(format!("{namespace}/{pod}/{uid}/{container}").as_bytes())
        );
        let link = self
            .containers()
            .join(format!("{pod}_{namespace}_{container}-{}.log", &id[..64]));
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.join("0.log"))?;
        if fs::symlink_metadata(&link).is_err() {
            std::os::unix::fs::symlink(dir.join("0.log"), &link)?;
        }
        Ok(Container {
            dir,
            link,
            file,
            split_at: 16 * 1024,
            keep: 4,
            rotations: 0,
        })
    }

    /// Removes a pod's links and log directory, as the kubelet does after
    /// the pod is deleted.
    pub fn remove_pod(&self, namespace: &str, pod: &str, uid: &str) -> io::Result<()> {
        let prefix = format!("{pod}_{namespace}_");
        for entry in fs::read_dir(self.containers())?.flatten() {
            if entry.file_name().to_string_lossy().starts_with(&prefix) {
                fs::remove_file(entry.path())?;
            }
        }
        fs::remove_dir_all(self.pod_dir(namespace, pod, uid))
    }
}

impl Container {
    /// The `/var/log/containers` link.
    pub fn link(&self) -> &Path {
        &self.link
    }

    /// Writes one message on `stream` at `ts` (ns): `P` pieces, then `F`.
    pub fn write(&mut self, stream: &str, ts: i64, message: &[u8]) -> io::Result<()> {
        let time = rfc3339(ts);
        let mut out = Vec::with_capacity(message.len() + 64);
        let mut rest = message;
        while rest.len() > self.split_at {
            let (piece, tail) = rest.split_at(self.split_at);
            out.extend_from_slice(format!("{time} {stream} P ").as_bytes());
            out.extend_from_slice(piece);
            out.push(b'\n');
            rest = tail;
        }
        out.extend_from_slice(format!("{time} {stream} F ").as_bytes());
        out.extend_from_slice(rest);
        out.push(b'\n');
        self.file.write_all(&out)
    }

    /// Bytes in the live file.
    pub fn size(&self) -> io::Result<u64> {
        Ok(self.file.metadata()?.len())
    }

    /// The rotated files (`0.log.*`), oldest first.
    fn rotated_files(&self) -> io::Result<Vec<PathBuf>> {
        let mut files: Vec<PathBuf> = fs::read_dir(&self.dir)?
            .flatten()
            .map(|e| e.path())
            .filter(|p| {
                p.file_name()
                    .is_some_and(|n| n.to_string_lossy().starts_with("0.log."))
            })
            .collect();
        files.sort();
        Ok(files)
    }

    /// Rotates as the kubelet does: the previous rotated file is gzipped,
    /// `0.log` is renamed to `0.log.<timestamp>` and reopened, and rotated
    /// files beyond `keep` are removed, oldest first.
    pub fn rotate(&mut self) -> io::Result<()> {
        let rotated = self.rotated_files()?;
        for plain in rotated
            .iter()
            .filter(|p| p.extension().is_none_or(|e| e != "gz" && e != "tmp"))
        {
            let tmp = plain.with_extension(format!(
                "{}.tmp",
                plain
                    .extension()
                    .map(|e| e.to_string_lossy().into_owned())
                    .unwrap_or_default()
            ));
            let mut gz =
                flate2::write::GzEncoder::new(File::create(&tmp)?, flate2::Compression::fast());
            io::copy(&mut File::open(plain)?, &mut gz)?;
            gz.finish()?.sync_all()?;
            let mut done = plain.clone().into_os_string();
            done.push(".gz");
            fs::rename(&tmp, done)?;
            fs::remove_file(plain)?;
        }
        self.rotations += 1;
        let stamp = humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string();
        let stamp: String = stamp.chars().filter(|c| c.is_ascii_digit()).collect();
        let name = format!(
            "0.log.{}-{}.{:04}",
            &stamp[..8],
            &stamp[8..14],
            self.rotations
        );
        fs::rename(self.dir.join("0.log"), self.dir.join(name))?;
        self.file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("0.log"))?;
        let mut old = self.rotated_files()?;
        while old.len() > self.keep {
            fs::remove_file(old.remove(0))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_pieces_and_rotation() {
        let dir = tempfile::tempdir().unwrap();
        let node = Node::new(dir.path()).unwrap();
        let mut c = node.start("default", "web-1", "uid-1", "nginx").unwrap();
        c.split_at = 4;
        c.write("stdout", 1_700_000_000_000_000_000, b"abcdefghij")
            .unwrap();
        let text = fs::read_to_string(c.link()).unwrap();
        assert_eq!(
            text,
            "2023-11-14T22:13:20.000000000Z stdout P abcd\n2023-11-14T22:13:20.000000000Z stdout P efgh\n2023-11-14T22:13:20.000000000Z stdout F ij\n"
        );
        let name = c.link().file_name().unwrap().to_string_lossy().into_owned();
        assert!(
            monitoring_rs::log_collector::kubernetes::names::parse_container_link(&name).is_some(),
            "{name}"
        );
        c.keep = 2;
        for _ in 0..4 {
            c.write("stderr", 1, b"x").unwrap();
            c.rotate().unwrap();
        }
        let pod_dir = dir.path().join("var/log/pods/default_web-1_uid-1/nginx");
        let mut names: Vec<String> = fs::read_dir(&pod_dir)
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        assert_eq!(names.len(), 3, "{names:?}");
        assert_eq!(names[0], "0.log");
        assert!(
            names[1].ends_with(".gz") && !names[2].ends_with(".gz"),
            "{names:?}"
        );
        node.remove_pod("default", "web-1", "uid-1").unwrap();
        assert!(fs::read_dir(node.containers()).unwrap().next().is_none());
    }
}
