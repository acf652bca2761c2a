//! The daemon's memory ceiling: `--memory-limit`, or the container's cgroup
//! limit, and what happens near it. Memory is a sum of configured bounds
//! (see the README's "Memory" section); this is the last line of defence
//! for what no bound foresaw, so that the kernel's OOM killer never has to
//! act:
//!
//! - at [`Pressure::High`] (85 % of the limit) ingestion slows down (the
//!   store is flushed at once and the collector pauses briefly between
//!   batches: the files keep the lines) and new queries are refused with
//!   503;
//! - at [`Pressure::Critical`] (95 %) running queries are stopped too.
//!
//! It also bounds what the allocator keeps after a burst of queries
//! ([`bound_allocator_arenas`]).

use std::path::Path;

/// Fraction of the limit at which the daemon starts shedding load.
const HIGH: f64 = 0.85;
/// Fraction at which running queries are stopped.
const CRITICAL: f64 = 0.95;

/// How close the process is to its ceiling.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Pressure {
    /// Below 85 % (or no limit known).
    Normal,
    /// At or above 85 %: slow ingestion, refuse new queries.
    High,
    /// At or above 95 %: stop running queries too.
    Critical,
}

/// The ceiling and a way to compare the process against it.
#[derive(Clone, Copy, Debug, Default)]
pub struct MemoryLimit {
    /// The ceiling in bytes, if any.
    pub limit: Option<u64>,
}

impl MemoryLimit {
    /// `flag` if given, else the cgroup's limit (v2 `memory.max`, or v1
    /// `memory.limit_in_bytes`), else none.
    pub fn detect(flag: Option<u64>) -> Self {
        Self {
            limit: flag.or_else(|| cgroup_limit(Path::new("/sys/fs/cgroup"))),
        }
    }

    /// The pressure now (one small read of `/proc/self/statm`).
    pub fn pressure(&self) -> Pressure {
        let Some(limit) = self.limit.filter(|l| *l > 0) else {
            return Pressure::Normal;
        };
        let used = resident_bytes() as f64 / limit as f64;
        if used >= CRITICAL {
            Pressure::Critical
        } else if used >= HIGH {
            Pressure::High
        } else {
            Pressure::Normal
        }
    }
}

/// The process's resident memory in bytes (0 if it cannot be read).
pub fn resident_bytes() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: u64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    // SAFETY: sysconf has no preconditions.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    pages * page.max(4096) as u64
}

/// The memory limit of the cgroup mounted at `root`, if one is set.
fn cgroup_limit(root: &Path) -> Option<u64> {
    let read = |p: &str| std::fs::read_to_string(root.join(p)).ok();
    let v2 = read("memory.max").map(|v| v.trim().to_owned());
    let text = match v2 {
        Some(v) if v == "max" => return None,
        Some(v) => v,
        None => read("memory/memory.limit_in_bytes")?.trim().to_owned(),
    };
    let limit: u64 = text.parse().ok()?;
    // cgroup v1 says "no limit" with a huge number.
    (limit < 1 << 60).then_some(limit)
}

/// glibc arenas the daemon's allocations spread over, unless
/// `MALLOC_ARENA_MAX` says otherwise. glibc gives each thread that
/// allocates under contention an arena of its own, up to eight per core,
/// and keeps what a thread frees in that arena: on a busy node the query
/// workers' arenas held the peak RSS at 116–120 MiB. Four arenas held it
/// at 78–82 MiB for the same CPU per line; two held it at 71 MiB but
/// raised query p99 under load from ~31 to ~40 ms (posts/18).
const ALLOCATOR_ARENAS: i32 = 4;

/// The arena count to set: none when the operator set `MALLOC_ARENA_MAX`
/// (glibc reads it itself).
fn arena_limit(env: Option<&std::ffi::OsStr>) -> Option<i32> {
    env.is_none().then_some(ALLOCATOR_ARENAS)
}

/// Bounds the allocator's per-thread arenas (see [`ALLOCATOR_ARENAS`]).
/// Call first in `main`, before any thread starts.
pub fn bound_allocator_arenas() {
    let Some(arenas) = arena_limit(std::env::var_os("MALLOC_ARENA_MAX").as_deref()) else {
        return;
    };
    // SAFETY: mallopt only sets an allocator parameter; called before
    // other threads exist, nothing allocates concurrently.
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, arenas);
    }
    // Other C libraries (musl) keep no per-thread arenas of glibc's kind.
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    let _ = arenas;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arenas_are_bounded_unless_the_operator_chose() {
        assert_eq!(arena_limit(None), Some(ALLOCATOR_ARENAS));
        assert_eq!(arena_limit(Some(std::ffi::OsStr::new("8"))), None);
    }

    #[test]
    fn cgroup_limits_are_read_in_both_versions() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(cgroup_limit(dir.path()), None);
        std::fs::write(dir.path().join("memory.max"), "max\n").unwrap();
        assert_eq!(cgroup_limit(dir.path()), None);
        std::fs::write(dir.path().join("memory.max"), "268435456\n").unwrap();
        assert_eq!(cgroup_limit(dir.path()), Some(256 << 20));
        let v1 = tempfile::tempdir().unwrap();
        std::fs::create_dir(v1.path().join("memory")).unwrap();
        std::fs::write(
            v1.path().join("memory/memory.limit_in_bytes"),
            "9223372036854771712\n",
        )
        .unwrap();
        assert_eq!(cgroup_limit(v1.path()), None);
        std::fs::write(v1.path().join("memory/memory.limit_in_bytes"), "1073741824").unwrap();
        assert_eq!(cgroup_limit(v1.path()), Some(1 << 30));
    }

    #[test]
    fn pressure_follows_resident_memory() {
        let rss = resident_bytes();
        assert!(rss > 0);
        assert_eq!(MemoryLimit { limit: None }.pressure(), Pressure::Normal);
        assert_eq!(
            MemoryLimit {
                limit: Some(rss * 100)
            }
            .pressure(),
            Pressure::Normal
        );
        assert_eq!(
            MemoryLimit {
                limit: Some(rss / 2)
            }
            .pressure(),
            Pressure::Critical
        );
    }
}
