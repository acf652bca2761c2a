//! Realistic log messages from a small deterministic generator: access
//! logs, JSON logs, plain app logs with levels, stack-trace lines.

use std::io::Write;

/// A small deterministic generator (xorshift), so every corpus is the same.
pub struct Rng(pub u64);

impl Rng {
    /// The next number.
    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    /// A number below `n`.
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }
}

const PATHS: &[&str] = &[
    "/api/orders",
    "/api/users/42",
    "/healthz",
    "/static/app.js",
    "/api/checkout",
    "/login",
];
const WORDS: &[&str] = &[
    "connection",
    "request",
    "timeout",
    "user",
    "cache",
    "miss",
    "upstream",
    "retry",
    "session",
    "token",
    "query",
    "db",
    "slow",
    "ok",
];

/// One realistic message: access logs, JSON logs, plain app logs, stack traces.
pub fn message(rng: &mut Rng, out: &mut Vec<u8>) {
    let kind = rng.below(10);
    message_of(kind, rng, out);
}

/// A message of one kind: 0–3 access log, 4–6 JSON, 7–8 plain app log with
/// a level, 9 a stack-trace line.
pub fn message_of(kind: u64, rng: &mut Rng, out: &mut Vec<u8>) {
    match kind {
        0..=3 => {
            let status = [200, 200, 200, 201, 304, 404, 500][rng.below(7) as usize];
            write!(
                out,
                "10.{}.{}.{} - - [20/Nov/2026:10:{:02}:{:02} +0000] \"GET {} HTTP/1.1\" {} {} \"-\" \"Mozilla/5.0 (X11; Linux x86_64)\"",
                rng.below(256), rng.below(256), rng.below(256), rng.below(60), rng.below(60),
                PATHS[rng.below(PATHS.len() as u64) as usize], status, rng.below(50_000)
            )
            .unwrap();
        }
        4..=6 => {
            write!(
                out,
                "{{\"level\":\"{}\",\"msg\":\"{} {}\",\"trace_id\":\"{:016x}\",\"duration_ms\":{},\"user\":{}}}",
                ["info", "info", "warn", "error", "debug"][rng.below(5) as usize],
                WORDS[rng.below(WORDS.len() as u64) as usize],
                WORDS[rng.below(WORDS.len() as u64) as usize],
                rng.next_u64(), rng.below(2000), rng.below(100_000)
            )
            .unwrap();
        }
        7 | 8 => {
            write!(
                out,
                "{} [{}] ",
                ["INFO", "WARN", "ERROR", "DEBUG"][rng.below(4) as usize],
                rng.below(64)
            )
            .unwrap();
            for _ in 0..3 + rng.below(12) {
                out.extend_from_slice(WORDS[rng.below(WORDS.len() as u64) as usize].as_bytes());
                out.push(b' ');
            }
        }
        _ => {
            write!(
                out,
                "\tat com.example.service.Handler{}.handle(Handler.java:{})",
                rng.below(40),
                rng.below(900)
            )
            .unwrap();
        }
    }
}
