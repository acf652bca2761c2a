//! One sink's thread: catch up from the store, follow live writes, and
//! deliver batch after batch, keeping the cursor in the store.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::thread::JoinHandle;
use std::time::Duration;

use axum::body::Bytes;
use tokio::sync::broadcast::error::RecvError;

use super::batch::Batch;
use super::cursor::{Cursor, Filter, key};
use super::deliver::{Http, Sent, backoff};
use super::{Format, ForwardError, SinkConfig, SinkStatus};
use crate::log_database::query::{Matcher, Query};
use crate::log_database::{Database, WriteBatch, now_ns};
use crate::log_database::{Deleted, entries_after};
use crate::shutdown::Shutdown;

/// Writes a sink may leave waiting for it in the store's channel before
/// it lets go of them and reads them from the store instead.
const MAX_QUEUED: usize = 64;

/// The running sinks: their figures and their threads.
pub type Started = (Vec<Arc<SinkStatus>>, Vec<JoinHandle<()>>);

/// Starts a thread per sink; they stop when `shutdown` fires (each
/// abandoning the try in flight; what it has not delivered is read again
/// from the store on the next start).
pub fn start(
    db: Arc<Database>,
    sinks: Vec<SinkConfig>,
    shutdown: Shutdown,
) -> Result<Started, ForwardError> {
    let mut statuses = Vec::new();
    let mut threads = Vec::new();
    for config in sinks {
        let http = Http::new(config.endpoint.ca_file.as_deref())?;
        let status = Arc::new(SinkStatus {
            name: config.name.clone(),
            ..SinkStatus::default()
        });
        statuses.push(status.clone());
        let (db, shutdown) = (db.clone(), shutdown.clone());
        let name = config.name.clone();
        let thread = std::thread::Builder::new()
            .name(format!("forward-{name}"))
            .spawn(move || {
                let runtime = match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(r) => r,
                    Err(error) => {
                        tracing::error!(sink = config.name, %error, "Cannot start the sink's runtime; it forwards nothing.");
                        return;
                    }
                };
                let mut sink = Sink::new(db, config, status, shutdown, http, runtime);
                sink.run();
            })
            .map_err(|e| ForwardError::Start(name, e))?;
        threads.push(thread);
    }
    Ok((statuses, threads))
}

struct Sink {
    db: Arc<Database>,
    config: SinkConfig,
    status: Arc<SinkStatus>,
    shutdown: Shutdown,
    http: Http,
    runtime: tokio::runtime::Runtime,
    cursor: Cursor,
    batch: Batch,
    /// The request builders (one used, by the sink's format).
    otlp: super::otlp::Encoder,
    loki: super::loki::Encoder,
    /// Live writes, while the sink keeps up with them.
    live: Option<tokio::sync::broadcast::Receiver<Arc<crate::log_database::Appended>>>,
    /// When `behind_entries` was last counted.
    behind_counted: std::time::Instant,
    /// When a rejected batch was last logged (at most one a minute).
    last_reject_log: Option<std::time::Instant>,
    /// What retention deletes.
    deleted: std::sync::mpsc::Receiver<Arc<Vec<Deleted>>>,
}

impl Sink {
    fn new(
        db: Arc<Database>,
        config: SinkConfig,
        status: Arc<SinkStatus>,
        shutdown: Shutdown,
        http: Http,
        runtime: tokio::runtime::Runtime,
    ) -> Self {
        let cursor = db
            .checkpoints()
            .get(&Cursor::checkpoint(&config.name))
            .and_then(|bytes| Cursor::decode(bytes))
            .unwrap_or_else(|| Cursor {
                from: config.from,
                ..Cursor::default()
            });
        status.from.store(cursor.from, Ordering::Relaxed);
        let deleted = db.watch_retention();
        Self {
            deleted,
            db,
            config,
            status,
            shutdown,
            http,
            runtime,
            cursor,
            batch: Batch::default(),
            otlp: Default::default(),
            loki: Default::default(),
            last_reject_log: None,
            behind_counted: std::time::Instant::now(),
            live: None,
        }
    }

    fn run(&mut self) {
        while !self.shutdown.is_triggered() {
            self.status.caught_up.store(false, Ordering::Relaxed);
            // A long catch-up (a back-fill, a receiver back after a day)
            // holds no subscription: writes would wait in memory for it.
            self.live = None;
            if !self.catch_up() || !self.deliver() {
                return;
            }
            // Then subscribe, and read what came meanwhile: nothing is
            // missed (what was read already is told apart by the filter).
            self.live = Some(self.db.subscribe());
            if !self.catch_up() || !self.deliver() {
                return;
            }
            self.status.caught_up.store(true, Ordering::Relaxed);
            self.count_behind(true);
            if !self.follow() {
                return;
            }
        }
    }

    /// Counts what retention deleted before this sink sent it.
    fn count_losses(&mut self) {
        while let Ok(deleted) = self.deleted.try_recv() {
            let mut lost = 0u64;
            for block in deleted.iter() {
                let k = key(&block.labels);
                // Read into the batch in hand is not lost: it goes out yet.
                let sent_to = match self.batch.streams.iter().find(|s| s.key == k) {
                    Some(held) => held.position.ts,
                    None => self
                        .cursor
                        .streams
                        .get(&k)
                        .map_or(self.cursor.from - 1, |p| p.ts),
                };
                lost += entries_after(block.min_ts, block.max_ts, block.count, sent_to);
            }
            // Streams retention removed whole leave the cursor too, so it
            // stays as large as the store's stream list, not its history.
            let live: std::collections::HashSet<u64> =
                self.db.stream_labels().iter().map(|l| key(l)).collect();
            self.cursor.streams.retain(|k, _| live.contains(k));
            if lost > 0 {
                self.status.lost_entries.fetch_add(lost, Ordering::Relaxed);
                tracing::warn!(
                    sink = self.config.name,
                    lost,
                    "Retention deleted entries this sink had not sent yet (it lagged past --retention-period or --retention-size); counted in lost_entries."
                );
            }
        }
    }

    /// Counts the stored entries past the cursor, at most once a second
    /// unless `now`. A sink that follows live writes is behind by its
    /// batch alone (and the writes on their way to it, for milliseconds).
    fn count_behind(&mut self, now: bool) {
        if self.status.caught_up.load(Ordering::Relaxed) {
            self.status.behind_entries.store(0, Ordering::Relaxed);
            return;
        }
        if !now && self.behind_counted.elapsed() < Duration::from_secs(1) {
            return;
        }
        self.behind_counted = std::time::Instant::now();
        let cursor = &self.cursor;
        let behind = self.db.count_after(|id| {
            cursor
                .streams
                .get(&id.0)
                .map_or(cursor.from - 1, |position| position.ts)
        });
        self.status.behind_entries.store(behind, Ordering::Relaxed);
    }

    /// Reads every stream from its position. `false`: stopping.
    fn catch_up(&mut self) -> bool {
        self.count_losses();
        self.count_behind(true);
        let mut filter = Filter::default();
        for labels in self.db.stream_labels() {
            let k = key(&labels);
            let selector: Vec<Matcher> = labels.iter().map(|(n, v)| Matcher::equal(n, v)).collect();
            let query = Query {
                start: self.cursor.start_of(k),
                ..Query::new(selector)
            };
            let entries = match self.db.query(query) {
                Ok(entries) => entries,
                Err(error) => {
                    tracing::warn!(sink = self.config.name, stream = %labels, %error, "Cannot read a stream to forward; it is tried again on the next catch-up.");
                    continue;
                }
            };
            let observed = now_ns();
            let mut at = None;
            for entry in entries {
                // The selector also matches streams with more labels.
                if *entry.labels != *labels || !filter.is_new(&self.cursor, k, entry.timestamp) {
                    continue;
                }
                // A delivery empties the batch: the stream is added again.
                let i = *at.get_or_insert_with(|| self.batch.stream(&self.cursor, &labels, k));
                self.batch
                    .push(i, entry.timestamp, observed, entry.level, &entry.line);
                self.pending();
                if self.batch.bytes >= self.config.batch_bytes {
                    if !self.deliver() {
                        return false;
                    }
                    at = None;
                }
            }
        }
        true
    }

    /// Follows live writes until the sink falls behind them (`true`: catch
    /// up again) or stops (`false`).
    fn follow(&mut self) -> bool {
        let mut filter = Filter::default();
        loop {
            // Writes wait in the channel for every subscriber: one that
            // delivers slower than they come reads them from the store
            // instead, so that what waits stays small.
            let Some(live) = self.live.as_mut().filter(|l| l.len() <= MAX_QUEUED) else {
                self.live = None;
                return !self.shutdown.is_triggered();
            };
            let wait = match self.batch.since {
                Some(since) => self.config.batch_wait.saturating_sub(since.elapsed()),
                None => Duration::from_secs(3600),
            };
            let shutdown = self.shutdown.clone();
            let event = self.runtime.block_on(async {
                tokio::select! {
                    received = live.recv() => Some(received),
                    () = tokio::time::sleep(wait) => None,
                    () = shutdown.wait() => Some(Err(RecvError::Closed)),
                }
            });
            self.count_losses();
            match event {
                None => {
                    if !self.deliver() {
                        return false;
                    }
                }
                Some(Ok(appended)) => {
                    let observed = now_ns();
                    for stream in &appended.streams {
                        let (labels, entries, k) =
                            (stream.labels(), &stream.entries, stream.id().0);
                        let mut at = None;
                        for i in 0..entries.len() {
                            let ts = entries.timestamps[i];
                            if filter.is_new(&self.cursor, k, ts) {
                                let stream = *at.get_or_insert_with(|| {
                                    self.batch.stream(&self.cursor, labels, k)
                                });
                                self.batch.push(
                                    stream,
                                    ts,
                                    observed,
                                    entries.level(i),
                                    entries.line(i),
                                );
                            }
                        }
                    }
                    self.pending();
                    if self.batch.bytes >= self.config.batch_bytes && !self.deliver() {
                        return false;
                    }
                }
                Some(Err(RecvError::Lagged(_))) => {
                    // Slower than the writes: read the rest from the store.
                    return self.deliver();
                }
                Some(Err(RecvError::Closed)) => {
                    self.deliver();
                    return false;
                }
            }
        }
    }

    /// Shows how much the batch holds.
    fn pending(&self) {
        self.status
            .pending_entries
            .store(self.batch.entries as u64, Ordering::Relaxed);
    }

    /// Delivers the batch, trying until it is taken or refused for good,
    /// then moves the cursor past it. `false`: stopping (the batch stays
    /// undelivered, to be read again on the next start).
    fn deliver(&mut self) -> bool {
        if self.batch.is_empty() {
            return !self.shutdown.is_triggered();
        }
        let (content_type, encoding, body) = match &self.config.format {
            Format::Otlp { gzip } => {
                let raw = self.otlp.encode(&self.batch);
                if *gzip {
                    ("application/x-protobuf", Some("gzip"), gzip_bytes(raw))
                } else {
                    ("application/x-protobuf", None, Bytes::copy_from_slice(raw))
                }
            }
            Format::Loki(labels) => (
                "application/x-protobuf",
                None,
                Bytes::copy_from_slice(self.loki.encode(&self.batch, labels)),
            ),
        };
        let size = body.len() as u64;
        let mut attempt = 0;
        loop {
            let shutdown = self.shutdown.clone();
            let post = self
                .http
                .post(&self.config.endpoint, content_type, encoding, body.clone());
            let sent = self.runtime.block_on(async {
                tokio::select! {
                    sent = post => Some(sent),
                    () = shutdown.wait() => None,
                }
            });
            let Some(sent) = sent else {
                return false;
            };
            match sent {
                Sent::Delivered(answer) => {
                    let mut taken = self.batch.entries as u64;
                    if matches!(self.config.format, Format::Otlp { .. })
                        && let Some((refused, message)) = super::otlp::rejected(&answer)
                    {
                        let refused = refused.min(taken);
                        taken -= refused;
                        self.status
                            .rejected_entries
                            .fetch_add(refused, Ordering::Relaxed);
                        self.log_reject(&format!("partial success: {message}"));
                    }
                    self.status.sent_entries.fetch_add(taken, Ordering::Relaxed);
                    self.status.sent_bytes.fetch_add(size, Ordering::Relaxed);
                    *self
                        .status
                        .last_error
                        .lock()
                        .unwrap_or_else(|e| e.into_inner()) = None;
                    break;
                }
                Sent::Rejected { message, .. } => {
                    self.status
                        .rejected_entries
                        .fetch_add(self.batch.entries as u64, Ordering::Relaxed);
                    self.log_reject(&message);
                    *self
                        .status
                        .last_error
                        .lock()
                        .unwrap_or_else(|e| e.into_inner()) = Some(message);
                    break;
                }
                Sent::Retry { after, error } => {
                    attempt += 1;
                    self.status.retries.fetch_add(1, Ordering::Relaxed);
                    // Nothing waits in memory for a receiver that is down:
                    // what comes meanwhile is read from the store later.
                    self.live = None;
                    if attempt == 1 {
                        tracing::warn!(sink = self.config.name, %error, "Cannot deliver; retrying with backoff (the store keeps the entries meanwhile).");
                    }
                    *self
                        .status
                        .last_error
                        .lock()
                        .unwrap_or_else(|e| e.into_inner()) = Some(error);
                    self.count_losses();
                    let wait = after.unwrap_or_else(|| backoff(attempt));
                    let shutdown = self.shutdown.clone();
                    self.runtime.block_on(async {
                        tokio::select! {
                            () = tokio::time::sleep(wait) => {}
                            () = shutdown.wait() => {}
                        }
                    });
                    if self.shutdown.is_triggered() {
                        return false;
                    }
                }
            }
        }
        if let Some(newest) = self.batch.newest() {
            self.status
                .newest_delivered
                .fetch_max(newest, Ordering::Relaxed);
        }
        self.batch.advance(&mut self.cursor);
        self.batch.clear(self.config.batch_bytes);
        self.status.pending_entries.store(0, Ordering::Relaxed);
        self.save_cursor();
        self.count_behind(false);
        !self.shutdown.is_triggered()
    }

    /// Hands the cursor to the store: committed with its next flush.
    fn save_cursor(&self) {
        let batch = WriteBatch {
            streams: Vec::new(),
            checkpoints: vec![(
                Cursor::checkpoint(&self.config.name),
                Some(self.cursor.encode()),
            )],
        };
        if let Err(error) = self.db.write(&batch) {
            // The next batch saves it again; until then a restart re-sends.
            tracing::debug!(
                sink = self.config.name,
                ?error,
                "The cursor waits for the next batch."
            );
        }
    }

    /// The batch's first line and its stream, for a log message.
    fn sample(&self) -> Option<(String, String)> {
        self.batch.streams.first().and_then(|s| {
            s.items.first().map(|i| {
                (
                    s.labels.to_string(),
                    String::from_utf8_lossy(self.batch.line(i))
                        .chars()
                        .take(200)
                        .collect::<String>(),
                )
            })
        })
    }

    fn log_reject(&mut self, message: &str) {
        let quiet = self
            .last_reject_log
            .is_some_and(|t| t.elapsed() < Duration::from_secs(60));
        if quiet {
            return;
        }
        self.last_reject_log = Some(std::time::Instant::now());
        // The batch is intact until it is cleared after this try.
        let sample = self.sample();
        tracing::warn!(sink = self.config.name, entries = self.batch.entries, message, sample = ?sample, "The receiver refused a batch for good; it is dropped and counted (rejected_entries).");
    }
}

fn gzip_bytes(raw: &[u8]) -> Bytes {
    use std::io::Write;
    let mut encoder = flate2::write::GzEncoder::new(
        Vec::with_capacity(raw.len() / 4),
        flate2::Compression::fast(),
    );
    let _ = encoder.write_all(raw);
    Bytes::from(encoder.finish().unwrap_or_default())
}
