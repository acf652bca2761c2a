//! Stand-ins for a cluster, for tests, demos and benchmarks: a fake API
//! server that the real kube-rs client talks to, a kubelet-like writer of
//! container logs, message generators (ten real applications' formats), and a harness that runs the real
//! daemon binary. A workspace member of its own so the daemon never links it.

pub mod api_server;
pub mod apps;
pub mod daemon;
pub mod kubelet;
pub mod messages;
pub mod reviews;
pub mod slices;

/// A fixed instant for test data, relative to the present: the start of the
/// hour a day ago, in nanoseconds since the epoch. Data stamped from it is
/// always well inside the default 7-day retention, whenever a test runs,
/// and falls in a single hourly partition.
pub fn a_day_ago_on_the_hour() -> i64 {
    const HOUR: i64 = 3_600_000_000_000;
    (now_ns() - 24 * HOUR) / HOUR * HOUR
}

/// The wall clock in nanoseconds since the epoch.
pub fn now_ns() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as i64)
}

/// Appends `text` to the file at `path`, creating it if needed, as a
/// logging program would (one `write` per call).
pub fn append(path: &std::path::Path, text: &str) {
    use std::io::Write;
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .unwrap_or_else(|e| panic!("cannot open {}: {e}", path.display()))
        .write_all(text.as_bytes())
        .unwrap_or_else(|e| panic!("cannot append to {}: {e}", path.display()));
}
