//! The real binary over files that begin alike — hundreds of identical
//! files, files sharing only their first lines, in one folder and in
//! sub-folders — next to a real copytruncate rotation: every line of every
//! file is stored exactly once. Then LogQL nested 2,000 to 100,000 deep is
//! refused with a 4xx and the daemon keeps answering.

use std::collections::BTreeMap;
use std::fs;
use std::time::{Duration, Instant};

use monitoring_rs::log_database::query::{MatchOp, Matcher, Query};
use monitoring_rs::log_database::{Config, Database};
use testkit::append;
use testkit::daemon::DaemonCommand;

#[test]
fn files_that_begin_alike_and_a_copytruncate_lose_and_repeat_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let (root, data) = (dir.path().join("logs"), dir.path().join("data"));
    fs::create_dir_all(root.join("replicas/a")).unwrap();
    // What each file must end up with, by path.
    let mut want: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let put = |path: std::path::PathBuf, text: &str, want: &mut BTreeMap<String, Vec<String>>| {
        append(&path, text);
        want.entry(path.to_string_lossy().into_owned())
            .or_default()
            .extend(text.lines().map(str::to_owned));
    };
    for i in 0..300 {
        put(
            root.join(format!("same-{i:03}.log")),
            "starting app\nline a\nline b\n",
            &mut want,
        );
    }
    for i in 0..5 {
        put(
            root.join(format!("banner-{i}.log")),
            &format!("starting app\nother {i}\n"),
            &mut want,
        );
    }
    for i in 0..100 {
        put(
            root.join(format!("replicas/a/r{i:02}.csv")),
            "id,name\n1,x\n2,y\n",
            &mut want,
        );
    }
    let live = root.join("app.log");
    let numbered = |from: usize, to: usize| -> String {
        (from..to).map(|i| format!("app line {i:04}\n")).collect()
    };
    put(live.clone(), &numbered(0, 50), &mut want);
    let daemon = DaemonCommand::new(env!("CARGO_BIN_EXE_monitoring-rs"))
        .args([
            "--log-collector",
            "directory",
            "--flush-interval",
            "100ms",
            "--rotate-wait",
            "500ms",
        ])
        .flag("--root-path", &root)
        .flag("--data-directory", &data)
        .start();
    let total = |want: &BTreeMap<String, Vec<String>>| want.values().map(Vec::len).sum::<usize>();
    let wait_for = |lines: usize| {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let (_, body) = daemon.get("/status").unwrap_or_default();
            if body.contains(&format!("\"lines_total\":{lines},")) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "never read {lines} lines: {body}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    };
    wait_for(total(&want));
    // A real copytruncate: more lines, copy, truncate, new lines. The copy
    // continues where reading stopped; the lines after the last read live
    // only in the copy.
    append(&live, &numbered(50, 60));
    fs::copy(&live, root.join("app.log.1")).unwrap();
    fs::OpenOptions::new()
        .write(true)
        .open(&live)
        .unwrap()
        .set_len(0)
        .unwrap();
    append(&live, &numbered(60, 70));
    // Identical files keep appearing while it runs.
    for i in 300..350 {
        put(
            root.join(format!("same-{i:03}.log")),
            "starting app\nline a\nline b\n",
            &mut want,
        );
    }
    let app: Vec<String> = (0..70).map(|i| format!("app line {i:04}")).collect();

    // Deep nesting, as a URL: refused, and the daemon lives on.
    let range = r#"count_over_time({path=~".+"}[1m])"#;
    for depth in [2_000, 20_000, 100_000] {
        let q = format!("{}{range}{}", "(".repeat(depth), ")".repeat(depth));
        let encoded: String = q
            .bytes()
            .map(|b| match b {
                b'(' => "%28".to_owned(),
                b')' => "%29".to_owned(),
                b'{' => "%7B".to_owned(),
                b'}' => "%7D".to_owned(),
                b'"' => "%22".to_owned(),
                b'~' => "%7E".to_owned(),
                b'[' => "%5B".to_owned(),
                b']' => "%5D".to_owned(),
                b'=' => "%3D".to_owned(),
                other => (other as char).to_string(),
            })
            .collect();
        let status = daemon
            .get(&format!("/loki/api/v1/query?query={encoded}"))
            .map(|(s, _)| s);
        assert!(
            status.is_some_and(|s| (400..500).contains(&s)) || status.is_none(),
            "{depth}: {status:?}"
        );
        assert_eq!(
            daemon.get("/ready").map(|(s, _)| s),
            Some(200),
            "{depth}: alive"
        );
    }

    let everything = total(&want) + 10 + 10; // app.log's 10 after the copy, 10 new
    wait_for(everything);
    assert!(daemon.terminate().success());
    let (db, _) = Database::open(&data, Config::default()).unwrap();
    let mut got: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let all = Query::new(vec![Matcher::new("path", MatchOp::Regex, ".+").unwrap()]);
    for e in db.query(all).unwrap() {
        let path = e.labels.get("path").unwrap().to_owned();
        let path = if path.ends_with("app.log.1") {
            live.to_string_lossy().into_owned()
        } else {
            path
        };
        got.entry(path)
            .or_default()
            .push(String::from_utf8(e.line).unwrap());
    }
    let app_path = live.to_string_lossy().into_owned();
    let mut app_got = got.remove(&app_path).unwrap_or_default();
    app_got.sort();
    assert_eq!(app_got, app, "app.log and its copy: every line once");
    want.remove(&app_path);
    assert_eq!(got.len(), want.len(), "every file was read");
    for (path, lines) in &want {
        assert_eq!(got.get(path), Some(lines), "{path}: every line once");
    }
}
