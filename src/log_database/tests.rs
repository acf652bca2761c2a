//! Store tests: a model-based test against a naive in-memory store, crash
//! tests that cut and flip the files, retention, and a full disk.

use std::collections::BTreeMap;
use std::fs;
use std::path::Path;

use proptest::prelude::*;
use rand::{RngExt, SeedableRng};

use super::flush::NS_PER_HOUR;
use super::labels::Labels;
use super::query::{Direction, LineFilter, MatchOp, Matcher, Query};
use super::*;

fn labels(i: usize) -> Labels {
    match i % 4 {
        0 => Labels::new([("app", "a"), ("team", "x")]),
        1 => Labels::new([("app", "b"), ("team", "x")]),
        2 => Labels::new([("app", "a"), ("team", "y")]),
        _ => Labels::new([("app", "c")]),
    }
}

fn selector(i: usize) -> Vec<Matcher> {
    match i % 5 {
        0 => vec![Matcher::equal("app", "a")],
        1 => vec![Matcher::new("app", MatchOp::Regex, "a|b").unwrap()],
        2 => vec![
            Matcher::new("app", MatchOp::NotEqual, "a").unwrap(),
            Matcher::equal("team", "x"),
        ],
        3 => vec![Matcher::new("team", MatchOp::Regex, ".+").unwrap()],
        _ => vec![
            Matcher::new("app", MatchOp::Regex, ".+").unwrap(),
            Matcher::new("team", MatchOp::NotRegex, "y").unwrap(),
        ],
    }
}

/// Settings where only explicit flushes write (the model knows when).
fn manual_flush() -> Config {
    Config {
        block_bytes: usize::MAX / 4,
        flush_bytes: usize::MAX / 4,
        max_head_bytes: usize::MAX / 2,
        ..Config::default()
    }
}

#[derive(Clone, Debug)]
enum Op {
    Write(Vec<(usize, i64, String)>, Option<(u8, u8)>),
    Flush,
    Reopen,
    Query {
        selector: usize,
        start: i64,
        len: i64,
        backward: bool,
        limit: usize,
        contains: Option<String>,
    },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (
            prop::collection::vec((0..4usize, 0..50_000i64, "[a-e]{0,12}"), 1..20),
            prop::option::of((0..3u8, any::<u8>()))
        )
            .prop_map(|(e, c)| Op::Write(e, c)),
        2 => Just(Op::Flush),
        1 => Just(Op::Reopen),
        3 => (0..5usize, 0..50_000i64, 1..60_000i64, any::<bool>(), 1..40usize, prop::option::of("[a-e]{0,2}"))
            .prop_map(|(selector, start, len, backward, limit, contains)| Op::Query {
                selector, start, len, backward, limit, contains,
            }),
    ]
}

#[derive(Default)]
struct Model {
    /// (labels, ts, line, durable)
    entries: Vec<(Labels, i64, Vec<u8>, bool)>,
    pending: BTreeMap<String, Option<Vec<u8>>>,
    durable: BTreeMap<String, Vec<u8>>,
}

impl Model {
    fn flush(&mut self) {
        for e in &mut self.entries {
            e.3 = true;
        }
        for (k, v) in std::mem::take(&mut self.pending) {
            match v {
                Some(v) => self.durable.insert(k, v),
                None => self.durable.remove(&k),
            };
        }
    }
}

fn run_model(ops: Vec<Op>) {
    let dir = tempfile::tempdir().unwrap();
    let mut db = Some(Database::open(dir.path(), manual_flush()).unwrap().0);
    let mut model = Model::default();
    let mut seq = 0i64;
    for op in ops {
        let d = db.as_ref().unwrap();
        match op {
            Op::Write(entries, checkpoint) => {
                let mut batch = WriteBatch::default();
                for (stream, ts, line) in entries {
                    // Unique timestamps keep the expected order unambiguous.
                    seq += 1;
                    let ts = ts * 100_000 + seq;
                    let l = labels(stream);
                    model
                        .entries
                        .push((l.clone(), ts, line.clone().into_bytes(), false));
                    batch
                        .streams
                        .push(StreamEntries::with(l, vec![(ts, line.into_bytes())]));
                }
                let mut flushes = false;
                if let Some((key, value)) = checkpoint {
                    let key = format!("k{key}");
                    let value = (value % 4 != 0).then(|| vec![value]);
                    // Forgetting a checkpoint (a finished source) flushes,
                    // and so does the first checkpoint of a new source.
                    flushes = value.is_none()
                        || (!model.durable.contains_key(&key) && !model.pending.contains_key(&key));
                    model.pending.insert(key.clone(), value.clone());
                    batch.checkpoints.push((key, value));
                }
                d.write(&batch).unwrap();
                if flushes {
                    model.flush();
                }
            }
            Op::Flush => {
                d.flush().unwrap();
                model.flush();
            }
            Op::Reopen => {
                drop(db.take());
                db = Some(Database::open(dir.path(), manual_flush()).unwrap().0);
                model.entries.retain(|e| e.3);
                model.pending.clear();
            }
            Op::Query {
                selector: s,
                start,
                len,
                backward,
                limit,
                contains,
            } => {
                let (start, end) = (start * 100_000, (start + len) * 100_000);
                let mut q = Query::new(selector(s));
                q.start = start;
                q.end = end;
                q.limit = limit;
                q.direction = if backward {
                    Direction::Backward
                } else {
                    Direction::Forward
                };
                if let Some(c) = &contains {
                    q.filters.push(LineFilter::contains(c.as_bytes(), false));
                }
                let got: Vec<(Labels, i64, Vec<u8>)> = d
                    .query(q.clone())
                    .unwrap()
                    .map(|e| ((*e.labels).clone(), e.timestamp, e.line))
                    .collect();
                let mut want: Vec<(Labels, i64, Vec<u8>)> = model
                    .entries
                    .iter()
                    .filter(|(l, ts, line, _)| {
                        q.selector.iter().all(|m| m.matches(l))
                            && *ts >= start
                            && *ts < end
                            && q.keeps(line)
                    })
                    .map(|(l, ts, line, _)| (l.clone(), *ts, line.clone()))
                    .collect();
                want.sort_by_key(|e| e.1);
                if backward {
                    want.reverse();
                }
                want.truncate(limit);
                assert_eq!(got, want, "query {q:?}");
            }
        }
        let d = db.as_ref().unwrap();
        assert_eq!(d.checkpoints(), model.durable);
        let mut want_series: Vec<Labels> = model.entries.iter().map(|e| e.0.clone()).collect();
        want_series.sort();
        want_series.dedup();
        let want_series: Vec<Labels> = want_series
            .into_iter()
            .filter(|l| selector(4).iter().all(|m| m.matches(l)))
            .collect();
        let got_series: Vec<Labels> = d
            .series(&selector(4), TimeRange::ALL)
            .unwrap()
            .iter()
            .map(|l| (**l).clone())
            .collect();
        assert_eq!(got_series, want_series);
        assert_eq!(d.stats().entries, model.entries.len() as u64);
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]
    #[test]
    fn store_matches_a_naive_model(ops in prop::collection::vec(op(), 1..40)) {
        run_model(ops);
    }
}

fn entry_batch(stream: usize, from: i64, n: i64, checkpoint: &str) -> WriteBatch {
    WriteBatch {
        streams: vec![StreamEntries::with(
            labels(stream),
            (from..from + n).map(|i| {
                (
                    i * 1_000_000,
                    format!("stream {stream} line {i} {}", "x".repeat((i % 37) as usize))
                        .into_bytes(),
                )
            }),
        )],
        checkpoints: vec![(checkpoint.to_owned(), Some(from.to_le_bytes().to_vec()))],
    }
}

fn all_lines(db: &Database) -> Vec<(i64, Vec<u8>)> {
    let q = Query::new(vec![Matcher::new("app", MatchOp::Regex, ".+").unwrap()]);
    db.query(q)
        .unwrap()
        .map(|e| (e.timestamp, e.line))
        .collect()
}

fn copy_dir(from: &Path, to: &Path) {
    fs::create_dir_all(to).unwrap();
    for entry in fs::read_dir(from).unwrap().flatten() {
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            fs::copy(entry.path(), target).unwrap();
        }
    }
}

fn segment_files(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for p in fs::read_dir(dir.join("partitions")).unwrap().flatten() {
        for s in fs::read_dir(p.path()).unwrap().flatten() {
            out.push(s.path());
        }
    }
    out.sort();
    out
}

#[test]
fn cutting_the_commit_log_keeps_every_batch_committed_before_the_cut() {
    let dir = tempfile::tempdir().unwrap();
    let (db, _) = Database::open(dir.path(), manual_flush()).unwrap();
    // After each flush: the log's length and the lines durable by then.
    let mut commits = Vec::new();
    for b in 0..8 {
        db.write(&entry_batch(
            b % 3,
            b as i64 * 100,
            50,
            &format!("src{}", b % 3),
        ))
        .unwrap();
        db.flush().unwrap();
        let len = fs::metadata(dir.path().join("manifest.log")).unwrap().len();
        commits.push((len, all_lines(&db), db.checkpoints()));
    }
    drop(db);
    let full = fs::read(dir.path().join("manifest.log")).unwrap();
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    for _ in 0..40 {
        let cut = rng.random_range(0..full.len() as u64);
        let copy = tempfile::tempdir().unwrap();
        copy_dir(dir.path(), copy.path());
        fs::write(copy.path().join("manifest.log"), &full[..cut as usize]).unwrap();
        let (db, report) = Database::open(copy.path(), manual_flush()).unwrap();
        let survivors = commits.iter().rfind(|(len, _, _)| *len <= cut);
        let lines = all_lines(&db);
        match survivors {
            Some((_, want, checkpoints)) => {
                assert_eq!(&lines, want, "cut at {cut}");
                assert_eq!(&db.checkpoints(), checkpoints);
            }
            // Cut inside the first snapshot: nothing committed is guaranteed.
            None => assert!(lines.len() <= commits[0].1.len()),
        }
        if !commits.iter().any(|(len, _, _)| *len == cut) {
            assert!(
                report.manifest.bytes_skipped > 0 || report.segment_bytes_truncated > 0,
                "cut at {cut}: {report:?}"
            );
        }
    }
}

#[test]
fn damaged_segments_and_flipped_bytes_never_serve_garbage() {
    let dir = tempfile::tempdir().unwrap();
    let (db, _) = Database::open(dir.path(), manual_flush()).unwrap();
    for b in 0..6 {
        db.write(&entry_batch(b % 2, b as i64 * 100, 80, "src"))
            .unwrap();
        db.flush().unwrap();
    }
    let written = all_lines(&db);
    drop(db);
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    for round in 0..30 {
        let copy = tempfile::tempdir().unwrap();
        copy_dir(dir.path(), copy.path());
        let segments = segment_files(copy.path());
        let target = if round % 3 == 0 {
            copy.path().join("manifest.log")
        } else {
            segments[round % segments.len()].clone()
        };
        let mut bytes = fs::read(&target).unwrap();
        let at = rng.random_range(0..bytes.len());
        if round % 2 == 0 {
            bytes.truncate(at);
        } else {
            bytes[at] ^= 1 << (round % 8);
        }
        fs::write(&target, &bytes).unwrap();
        let (db, _) = Database::open(copy.path(), manual_flush()).unwrap();
        for line in all_lines(&db) {
            assert!(
                written.contains(&line),
                "round {round}: served {line:?}, which was never written"
            );
        }
        // The store keeps working after the damage.
        db.write(&entry_batch(0, 10_000, 5, "src")).unwrap();
        db.flush().unwrap();
    }
}

#[test]
fn retention_deletes_whole_old_partitions_by_age_and_by_size() {
    let dir = tempfile::tempdir().unwrap();
    let hour = NS_PER_HOUR;
    let config = Config {
        retention_period: Duration::from_secs(3 * 3600),
        ..manual_flush()
    };
    let (db, _) = Database::open(dir.path(), config.clone()).unwrap();
    for h in 0..6 {
        db.write(&WriteBatch {
            streams: vec![StreamEntries::with(
                labels(h as usize % 2),
                vec![(h * hour + 5, format!("hour {h}").into_bytes())],
            )],
            checkpoints: vec![],
        })
        .unwrap();
    }
    db.flush().unwrap();
    assert_eq!(segment_files(dir.path()).len(), 6);
    // Now is 6h: hours 0, 1 and 2 ended more than 3h ago.
    assert_eq!(db.enforce_retention_at(6 * hour).unwrap(), 3);
    let lines: Vec<Vec<u8>> = all_lines(&db).into_iter().map(|(_, l)| l).collect();
    assert_eq!(
        lines,
        vec![b"hour 3".to_vec(), b"hour 4".to_vec(), b"hour 5".to_vec()]
    );
    assert_eq!(db.stats().partitions_dropped, 3);
    drop(db);
    let (db, report) = Database::open(dir.path(), config.clone()).unwrap();
    assert_eq!(report, RecoveryReport::default());
    assert_eq!(all_lines(&db).len(), 3);
    drop(db);

    // By size: keep only what fits, oldest first to go.
    let one = fs::metadata(&segment_files(dir.path())[0]).unwrap().len();
    let small = Config {
        retention_size: one,
        ..config
    };
    let (db, _) = Database::open(dir.path(), small).unwrap();
    assert_eq!(db.enforce_retention_at(6 * hour).unwrap(), 2);
    let lines: Vec<Vec<u8>> = all_lines(&db).into_iter().map(|(_, l)| l).collect();
    assert_eq!(lines, vec![b"hour 5".to_vec()]);
}

#[test]
fn a_full_disk_loses_nothing_and_recovers_by_itself() {
    let dir = tempfile::tempdir().unwrap();
    let config = Config {
        max_head_bytes: 4096,
        ..manual_flush()
    };
    let (db, _) = Database::open(dir.path(), config.clone()).unwrap();
    db.write(&entry_batch(0, 0, 10, "src")).unwrap();
    db.flush().unwrap();
    let before = db.checkpoints();

    db.inject_write_fault(Some(io::ErrorKind::StorageFull));
    db.write(&entry_batch(0, 10, 10, "src")).unwrap();
    let error = db.flush().unwrap_err().to_string();
    assert!(error.contains("log store"), "{error}");
    assert_eq!(db.stats().flush_errors, 1);
    // Nothing durable moved, but everything is still queryable.
    assert_eq!(db.checkpoints(), before);
    assert_eq!(all_lines(&db).len(), 20);
    // Memory is bounded: once heads are full, writes are refused, not lost.
    let mut refused = None;
    for i in 2..100 {
        if let Err(e) = db.write(&entry_batch(1, i * 10, 10, "src")) {
            refused = Some(e);
            break;
        }
    }
    let refused = refused.expect("writes are refused once heads are full");
    assert!(
        refused.head_bytes > 0 && refused.last_error.contains("log store"),
        "{refused}"
    );
    let accepted = all_lines(&db).len();

    db.inject_write_fault(None);
    db.flush().unwrap();
    assert_ne!(db.checkpoints(), before);
    drop(db);
    let (db, report) = Database::open(dir.path(), config).unwrap();
    assert_eq!(report, RecoveryReport::default());
    assert_eq!(all_lines(&db).len(), accepted);
}

#[test]
fn large_heads_are_cut_into_blocks_by_size_and_hour() {
    let dir = tempfile::tempdir().unwrap();
    let config = Config {
        block_bytes: 4096,
        ..Config::default()
    };
    let (db, _) = Database::open(dir.path(), config).unwrap();
    let mut batch = WriteBatch::default();
    let lines: Vec<(i64, Vec<u8>)> = (0..400)
        .map(|i| {
            (
                i * NS_PER_HOUR / 200,
                format!("line {i:04} {}", "y".repeat(60)).into_bytes(),
            )
        })
        .collect();
    batch
        .streams
        .push(StreamEntries::with(labels(0), lines.clone()));
    db.write(&batch).unwrap();
    db.flush().unwrap();
    let stats = db.stats();
    assert!(stats.chunks >= 8, "{stats:?}");
    assert_eq!(
        segment_files(dir.path()).len(),
        2,
        "two hours, two partitions"
    );
    assert_eq!(all_lines(&db), lines);
    // Newest first reads from the newest blocks.
    let mut q = Query::new(vec![Matcher::equal("app", "a")]);
    q.direction = Direction::Backward;
    q.limit = 3;
    let newest: Vec<i64> = db.query(q).unwrap().map(|e| e.timestamp).collect();
    assert_eq!(newest, vec![lines[399].0, lines[398].0, lines[397].0]);
}

#[test]
fn queries_run_while_writing() {
    let dir = tempfile::tempdir().unwrap();
    let config = Config {
        block_bytes: 2048,
        ..Config::default()
    };
    let db = Arc::new(Database::open(dir.path(), config).unwrap().0);
    let writer = {
        let db = db.clone();
        std::thread::spawn(move || {
            for i in 0..300 {
                db.write(&entry_batch(0, i * 10, 10, "src")).unwrap();
            }
            db.flush().unwrap();
        })
    };
    let mut last = 0;
    while !writer.is_finished() {
        let lines = all_lines(&db);
        assert!(lines.len() >= last, "entries never disappear");
        assert!(
            lines.windows(2).all(|w| w[0].0 <= w[1].0),
            "always in order"
        );
        last = lines.len();
    }
    writer.join().unwrap();
    assert_eq!(all_lines(&db).len(), 3000);
}

#[test]
fn label_endpoints_answer_from_the_index() {
    let dir = tempfile::tempdir().unwrap();
    let (db, _) = Database::open(dir.path(), Config::default()).unwrap();
    for s in 0..4 {
        db.write(&entry_batch(s, 0, 3, "src")).unwrap();
    }
    assert_eq!(db.label_names(TimeRange::ALL), vec!["app", "team"]);
    assert_eq!(
        db.label_values("app", None, TimeRange::ALL).unwrap(),
        vec!["a", "b", "c"]
    );
    let team_x = [Matcher::equal("team", "x")];
    assert_eq!(
        db.label_values("app", Some(&team_x), TimeRange::ALL)
            .unwrap(),
        vec!["a", "b"]
    );
    assert!(
        db.label_values(
            "app",
            Some(&[Matcher::new("app", MatchOp::Regex, ".*").unwrap()]),
            TimeRange::new(0, 1)
        )
        .is_err()
    );
    assert_eq!(
        db.label_names(TimeRange::new(10_000_000_000, 20_000_000_000)),
        Vec::<String>::new()
    );
    let stats = db.stats();
    assert_eq!((stats.streams, stats.entries), (4, 12));
}

#[test]
fn one_process_per_data_directory() {
    let dir = tempfile::tempdir().unwrap();
    let (db, _) = Database::open(dir.path(), Config::default()).unwrap();
    let error = Database::open(dir.path(), Config::default()).err().unwrap();
    assert!(matches!(error, StoreError::Locked { .. }), "{error}");
    drop(db);
    assert!(Database::open(dir.path(), Config::default()).is_ok());
}

#[test]
fn a_finished_source_is_flushed_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let (db, _) = Database::open(dir.path(), manual_flush()).unwrap();
    db.write(&entry_batch(0, 0, 5, "src")).unwrap();
    assert_eq!(
        db.stats().chunks,
        1,
        "a new source's start is made durable at once"
    );
    db.write(&entry_batch(0, 5, 5, "src")).unwrap();
    assert_eq!(
        db.stats().chunks,
        1,
        "then writes wait for the flush interval"
    );
    let mut done = entry_batch(0, 10, 5, "src");
    done.checkpoints = vec![("src".into(), None)];
    db.write(&done).unwrap();
    assert_eq!(db.stats().chunks, 2);
    assert!(db.checkpoints().is_empty());
}

#[test]
fn a_repeated_filtered_query_reads_no_block_again() {
    let dirs = [tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap()];
    let open = |dir: &tempfile::TempDir, cache: usize| {
        let config = Config {
            query_cache_bytes: cache,
            ..manual_flush()
        };
        Database::open(dir.path(), config).unwrap().0
    };
    let (db, uncached) = (open(&dirs[0], 1 << 20), open(&dirs[1], 0));
    for d in [&db, &uncached] {
        for block in 0..20 {
            d.write(&entry_batch(block % 2, block as i64 * 50, 50, "src"))
                .unwrap();
            d.flush().unwrap();
        }
        // A block of long lines: what "x" keeps of it is too large to keep.
        let long = (0..50).map(|i| (1_000_000_000 + i, vec![b'x'; 2000]));
        let batch = WriteBatch {
            streams: vec![StreamEntries::with(labels(0), long)],
            checkpoints: Vec::new(),
        };
        d.write(&batch).unwrap();
        d.flush().unwrap();
    }
    // Lines with "line 7" are few (a handful a block); "x" is in most lines.
    let query = |d: &Database, needle: &str, start: i64, backward: bool| {
        let mut q = Query::new(vec![Matcher::new("app", MatchOp::Regex, ".+").unwrap()]);
        q.filters
            .push(LineFilter::contains(needle.as_bytes(), false));
        q.start = start;
        q.limit = 1000;
        q.direction = if backward {
            Direction::Backward
        } else {
            Direction::Forward
        };
        d.query(q)
            .unwrap()
            .map(|e| (e.timestamp, e.line))
            .collect::<Vec<_>>()
    };
    let first = query(&db, "line 7", 0, true);
    let misses = db.stats().query_cache_misses;
    assert!(misses >= 21, "every block read once: {:?}", db.stats());
    assert_eq!(db.stats().query_cache_hits, 0);
    assert_eq!(query(&db, "line 7", 0, true), first);
    assert_eq!(db.stats().query_cache_misses, misses, "no block read again");
    assert!(db.stats().query_cache_hits >= 21);
    assert!(db.stats().query_cache_bytes > 0);
    // Other ranges and directions come from the same answers, and agree
    // with a store that remembers nothing.
    for (start, backward) in [(333_000_000, true), (333_000_000, false), (0, false)] {
        assert_eq!(
            query(&db, "line 7", start, backward),
            query(&uncached, "line 7", start, backward)
        );
    }
    assert_eq!(db.stats().query_cache_misses, misses);
    for _ in 0..2 {
        assert_eq!(query(&db, "x", 0, true), query(&uncached, "x", 0, true));
    }
    let held = db.stats().query_cache_bytes;
    assert!(held < 64 << 10, "the long lines were not kept: {held}");
    assert_eq!(uncached.stats().query_cache_hits, 0);
}

#[test]
fn a_query_the_heads_answer_reads_no_block() {
    let dir = tempfile::tempdir().unwrap();
    let (db, _) = Database::open(dir.path(), manual_flush()).unwrap();
    db.write(&entry_batch(0, 0, 50, "src")).unwrap();
    db.flush().unwrap();
    db.write(&entry_batch(0, 50, 50, "src")).unwrap();
    let query = |limit: usize, direction: Direction| {
        let mut q = Query::new(vec![
            Matcher::equal("app", "a"),
            Matcher::equal("team", "x"),
        ]);
        q.filters.push(LineFilter::contains(b"line", false));
        q.limit = limit;
        q.direction = direction;
        let lines: Vec<i64> = db
            .query(q)
            .unwrap()
            .map(|e| e.timestamp / 1_000_000)
            .collect();
        lines
    };
    // The newest 10 are all in the head: the block is not even looked up.
    assert_eq!(
        query(10, Direction::Backward),
        (90..100).rev().collect::<Vec<_>>()
    );
    assert_eq!(
        db.stats().query_cache_misses + db.stats().query_cache_hits,
        0
    );
    // More than the head holds, or the oldest: the block is read.
    assert_eq!(
        query(60, Direction::Backward),
        (40..100).rev().collect::<Vec<_>>()
    );
    assert_eq!(query(10, Direction::Forward), (0..10).collect::<Vec<_>>());
    assert_eq!(db.stats().query_cache_misses, 1);
}

#[test]
fn tails_get_a_shared_write_and_hand_its_buffers_back() {
    let dir = tempfile::tempdir().unwrap();
    let config = Config {
        max_head_bytes: 4096,
        ..manual_flush()
    };
    let (db, _) = Database::open(dir.path(), config).unwrap();
    // No tail: nothing is taken.
    let mut batch = entry_batch(0, 0, 10, "src");
    assert!(db.write_shared(&mut batch).unwrap().is_none());
    assert_eq!(batch.streams[0].entries.len(), 10);

    // A tail receives the batch's own streams, in order; once it lets go,
    // the writer gets them back whole.
    let mut tail = db.subscribe();
    let mut batch = entry_batch(1, 10, 10, "src");
    let sent = db
        .write_shared(&mut batch)
        .unwrap()
        .expect("a tail is subscribed");
    assert!(batch.streams.is_empty());
    let received = tail.try_recv().unwrap();
    assert!(Arc::ptr_eq(&received, &sent));
    assert_eq!(received.streams[0].entries.len(), 10);
    assert!(
        Arc::try_unwrap(sent.clone()).is_err(),
        "the tail still holds it"
    );
    drop(received);
    let back = Arc::try_unwrap(sent).expect("no one else holds it");
    assert_eq!(
        back.streams[0].entries.line(0),
        entry_batch(1, 10, 1, "src").streams[0].entries.line(0)
    );
    assert_eq!(all_lines(&db).len(), 20);

    // Refused for backpressure: the batch is left as it was.
    db.inject_write_fault(Some(io::ErrorKind::StorageFull));
    let mut refused = false;
    for i in 2..100 {
        let mut batch = entry_batch(2, i * 10, 10, "src");
        if db.write_shared(&mut batch).is_err() {
            assert_eq!(batch.streams[0].entries.len(), 10);
            refused = true;
            break;
        }
        let _ = db.flush();
    }
    assert!(refused, "writes are refused once heads are full");
}
