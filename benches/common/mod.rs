//! Pieces the benchmarks share: a deterministic generator of realistic log
//! messages and a few measurements.

#![allow(dead_code)]

use std::fs;

/// An environment variable as a number, or `default`.
pub fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

#[allow(unused_imports)]
pub use testkit::messages::{Rng, message, message_of};

/// A memory figure of this process from /proc/self/status, in MiB.
/// (getrusage's ru_maxrss would include the parent's peak across exec.)
pub fn status_mib(field: &str) -> f64 {
    let status = fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .unwrap_or(0.0)
        / 1024.0
}

pub fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(|a, b| a.total_cmp(b));
    values[values.len() / 2]
}
