//! Forwarding to central backends (OTLP/HTTP, Loki push), with the node's
//! store as the buffer. Each sink is a thread that reads entries from the
//! store in write order — first what it has not delivered yet (a catch-up
//! from its cursor, per stream), then every write as it happens — batches
//! them by size and age, posts them with retries, and keeps its position
//! as a store checkpoint, committed with the store's next flush. A sink
//! that cannot deliver only falls behind: collection and queries never
//! wait for it, and it catches up from the store when the receiver is
//! back, for as long as retention keeps the entries.
//!
//! Delivery is at least once: after a crash a sink resumes from its last
//! committed position, so it re-sends at most what it delivered during
//! one `--flush-interval` plus the batch in flight.

pub mod batch;
pub mod cursor;
pub mod deliver;
pub mod loki;
pub mod otlp;
mod reuse;
mod sink;

use std::sync::Mutex;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::Duration;

pub use self::deliver::Endpoint;
pub use self::loki::LokiLabels;
pub use self::sink::start;

/// Why forwarding cannot start.
#[derive(Debug, thiserror::Error)]
pub enum ForwardError {
    /// TLS for the receiver could not be set up.
    #[error("cannot set up TLS for forwarding: {0}")]
    Tls(String),
    /// A sink's thread could not start.
    #[error("cannot start the {0} sink: {1}")]
    Start(String, std::io::Error),
}

/// What a sink sends.
#[derive(Clone, Debug)]
pub enum Format {
    /// OTLP/HTTP protobuf, gzip-compressed or not.
    Otlp {
        /// `OTEL_EXPORTER_OTLP_COMPRESSION=gzip`.
        gzip: bool,
    },
    /// Loki's push protobuf, snappy-compressed.
    Loki(LokiLabels),
}

/// One sink.
#[derive(Clone, Debug)]
pub struct SinkConfig {
    /// Its name (`otlp`, `loki`): in `/status`, `/metrics` and its
    /// checkpoint.
    pub name: String,
    /// What it sends.
    pub format: Format,
    /// Where.
    pub endpoint: Endpoint,
    /// A batch is sent once its lines (plus [`batch::ENTRY_OVERHEAD`] each)
    /// reach this many bytes…
    pub batch_bytes: usize,
    /// …or this long after its first entry.
    pub batch_wait: Duration,
    /// On first start, entries older than this (ns) are not sent.
    pub from: i64,
}

/// A sink's figures, for `/status` and `/metrics`.
#[derive(Debug, Default)]
pub struct SinkStatus {
    /// Its name.
    pub name: String,
    /// Entries the receiver took.
    pub sent_entries: AtomicU64,
    /// Request bytes the receiver took (compressed).
    pub sent_bytes: AtomicU64,
    /// Tries that failed and were tried again.
    pub retries: AtomicU64,
    /// Entries the receiver refused for good (dropped).
    pub rejected_entries: AtomicU64,
    /// Entries retention deleted before the sink sent them (estimated for
    /// a block the sink had partly sent).
    pub lost_entries: AtomicU64,
    /// The newest entry time delivered, ns (0: none yet).
    pub newest_delivered: AtomicI64,
    /// Entries read from the store and not delivered yet.
    pub pending_entries: AtomicU64,
    /// Stored entries newer than the sink's position, as last counted
    /// (at most a second ago while it delivers).
    pub behind_entries: AtomicU64,
    /// Whether the sink has read everything stored (it follows live writes).
    pub caught_up: std::sync::atomic::AtomicBool,
    /// Where it started when it had delivered nothing (ns).
    pub from: AtomicI64,
    /// The last error, if the last try failed.
    pub last_error: Mutex<Option<String>>,
}

impl SinkStatus {
    /// How far behind the newest stored entry the sink is, seconds: 0
    /// when it has delivered everything it read and reads live writes.
    pub fn lag_seconds(&self, newest_stored: Option<i64>) -> f64 {
        if self.caught_up.load(Ordering::Relaxed)
            && self.pending_entries.load(Ordering::Relaxed) == 0
        {
            return 0.0;
        }
        let Some(newest) = newest_stored else {
            return 0.0;
        };
        let delivered = match self.newest_delivered.load(Ordering::Relaxed) {
            0 => self.from.load(Ordering::Relaxed),
            t => t,
        };
        (newest - delivered).max(0) as f64 / 1e9
    }

    /// Stored entries the sink has not delivered yet.
    pub fn lag_entries(&self) -> u64 {
        self.behind_entries
            .load(Ordering::Relaxed)
            .max(self.pending_entries.load(Ordering::Relaxed))
    }

    /// The sink as `/status` shows it.
    pub fn report(&self, newest_stored: Option<i64>) -> serde_json::Value {
        let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
        serde_json::json!({
            "name": self.name,
            "sent_entries": load(&self.sent_entries),
            "sent_bytes": load(&self.sent_bytes),
            "retries": load(&self.retries),
            "rejected_entries": load(&self.rejected_entries),
            "lost_entries": load(&self.lost_entries),
            "pending_entries": load(&self.pending_entries),
            "lag_seconds": self.lag_seconds(newest_stored),
            "lag_entries": self.lag_entries(),
            "last_error": self.last_error.lock().unwrap_or_else(|e| e.into_inner()).clone(),
        })
    }
}
