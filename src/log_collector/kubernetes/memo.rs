//! Answers worked out once per key within a batch, with the last one at
//! hand: a batch's entries come in runs of one file, so most lookups are
//! for the key just asked about and need no hashing.

use std::collections::HashMap;
use std::hash::Hash;

/// One batch's answers by key.
pub(super) struct RunMemo<K, V> {
    all: HashMap<K, V>,
    last: Option<(K, V)>,
}

impl<K: Copy + Eq + Hash, V: Copy> RunMemo<K, V> {
    /// No answers yet.
    pub(super) fn new() -> Self {
        Self {
            all: HashMap::new(),
            last: None,
        }
    }

    /// The answer for `key`, from `work` the first time it is asked.
    pub(super) fn get(&mut self, key: K, work: impl FnOnce() -> V) -> V {
        if let Some((k, v)) = self.last
            && k == key
        {
            return v;
        }
        let v = *self.all.entry(key).or_insert_with(work);
        self.last = Some((key, v));
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_key_is_worked_out_once() {
        let mut memo = RunMemo::new();
        let mut work = 0;
        for key in [1, 1, 2, 1, 2, 2] {
            let v = memo.get(key, || {
                work += 1;
                key * 10
            });
            assert_eq!(v, key * 10);
        }
        assert_eq!(work, 2);
    }
}
