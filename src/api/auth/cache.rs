//! A small time-bounded cache for review answers, with one lifetime for
//! yes and another for no, as the kubelet's webhook caches have.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How long a TokenReview's answer is kept (the kubelet's default).
pub const TOKEN_TTL: Duration = Duration::from_secs(120);
/// How long an allowed SubjectAccessReview is kept (the kubelet's default).
pub const ALLOWED_TTL: Duration = Duration::from_secs(300);
/// How long a denied SubjectAccessReview is kept (the kubelet's default).
pub const DENIED_TTL: Duration = Duration::from_secs(30);
/// Entries kept at most; past this, expired ones go, then all.
const MAX_ENTRIES: usize = 10_000;

/// Answers by key, each until its time is up.
pub struct Cache<K, V> {
    entries: Mutex<HashMap<K, (V, Instant)>>,
    yes: Duration,
    no: Duration,
}

impl<K: Eq + Hash + Clone, V: Clone> Cache<K, V> {
    /// Keeps positive answers for `yes`, negative ones for `no`.
    pub fn new(yes: Duration, no: Duration) -> Self {
        Self {
            entries: Mutex::new(HashMap::new()),
            yes,
            no,
        }
    }

    /// The answer for `key`, if still fresh.
    pub fn get(&self, key: &K) -> Option<V> {
        let entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        entries
            .get(key)
            .filter(|(_, until)| Instant::now() < *until)
            .map(|(v, _)| v.clone())
    }

    /// Keeps `value` for `key`; `positive` picks the lifetime.
    pub fn insert(&self, key: K, value: V, positive: bool) {
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        if entries.len() >= MAX_ENTRIES {
            let now = Instant::now();
            entries.retain(|_, (_, until)| now < *until);
            if entries.len() >= MAX_ENTRIES {
                entries.clear();
            }
        }
        let ttl = if positive { self.yes } else { self.no };
        entries.insert(key, (value, Instant::now() + ttl));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn yes_and_no_expire_separately() {
        let cache = Cache::new(Duration::from_secs(60), Duration::from_millis(1));
        cache.insert("a", true, true);
        cache.insert("b", false, false);
        std::thread::sleep(Duration::from_millis(5));
        assert_eq!(cache.get(&"a"), Some(true));
        assert_eq!(cache.get(&"b"), None);
    }
}
