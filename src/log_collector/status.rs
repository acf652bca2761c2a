//! What a running collector shows on `/status` and `/metrics`. The API
//! knows collectors only through [`CollectorStatus`].

use std::sync::RwLock;

use super::directory::CollectorStats;
use super::kubernetes::KubernetesStats;

/// A collector's figures at one moment.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct CollectorReport {
    /// The collector's counters.
    #[serde(skip)]
    pub counters: CollectorStats,
    /// Files open for reading.
    pub files_watched: u64,
    /// Bytes written to the files but not yet read.
    pub lag_bytes: u64,
    /// Lines per second over the last refresh interval.
    pub lines_per_second: f64,
    /// Bytes per second over the last refresh interval.
    pub bytes_per_second: f64,
    /// When lines and checkpoints were last handed to the store (ns).
    pub last_checkpoint: Option<i64>,
    /// The Kubernetes layer's counters (absent for the directory collector).
    #[serde(skip)]
    pub kubernetes: Option<KubernetesStats>,
}

/// Anything that can say what the collector is doing.
pub trait CollectorStatus: Send + Sync {
    /// The current figures.
    fn report(&self) -> CollectorReport;
}

/// A report refreshed by the collector's thread and read by the API.
impl CollectorStatus for RwLock<CollectorReport> {
    fn report(&self) -> CollectorReport {
        self.read().unwrap_or_else(|e| e.into_inner()).clone()
    }
}
