//! Filling generated protobuf messages in place. A sink builds one
//! request per batch; building each into the last one's vectors and
//! strings keeps their allocations, so that a request of thousands of
//! records costs a handful of allocations instead of several per record.
//! What one stream of a batch no longer needs, another takes: lists give
//! their extra elements to a [`Pool`]. Held memory stays bounded by the
//! batch size: elements are as many as a batch's entries at most, and a
//! string keeps a large buffer only while it holds a large value.

/// A string or byte buffer larger than this is not kept for a value a
/// quarter its size.
const KEEP: usize = 4096;

/// `list` with exactly `n` elements: the first ones kept for reuse, the
/// rest defaulted (for lists of a fixed length).
pub fn fit<T: Default>(list: &mut Vec<T>, n: usize) -> &mut [T] {
    list.truncate(n);
    list.resize_with(n, T::default);
    list
}

/// Elements that lists gave up, for lists that grow.
#[derive(Debug)]
pub struct Pool<T>(Vec<T>);

impl<T> Default for Pool<T> {
    fn default() -> Self {
        Self(Vec::new())
    }
}

impl<T: Default> Pool<T> {
    /// `list` with exactly `n` elements: extra ones go to the pool, missing
    /// ones come from it (or are new).
    pub fn fit<'a>(&mut self, list: &'a mut Vec<T>, n: usize) -> &'a mut [T] {
        if list.len() > n {
            self.0.extend(list.drain(n..));
        } else {
            let take = (n - list.len()).min(self.0.len());
            let at = self.0.len() - take;
            list.extend(self.0.drain(at..));
            list.resize_with(n, T::default);
        }
        list
    }

    /// Takes every element of `list`.
    pub fn give(&mut self, list: &mut Vec<T>) {
        self.0.append(list);
    }
}

/// Whether a buffer of `capacity` is worth keeping for `len` bytes.
fn keep(capacity: usize, len: usize) -> bool {
    capacity <= KEEP || len >= capacity / 4
}

/// Sets `target` to `value`, reusing its buffer.
pub fn set(target: &mut String, value: &str) {
    if !keep(target.capacity(), value.len()) {
        *target = String::new();
    }
    target.clear();
    target.push_str(value);
}

/// Sets `target` to `value`, reusing its buffer.
pub fn set_bytes(target: &mut Vec<u8>, value: &[u8]) {
    if !keep(target.capacity(), value.len()) {
        *target = Vec::new();
    }
    target.clear();
    target.extend_from_slice(value);
}

/// Sets `target` to `bytes` as text, reusing its buffer; invalid UTF-8 is
/// replaced (a protobuf `string` must be valid UTF-8).
pub fn set_text(target: &mut String, bytes: &[u8]) {
    match std::str::from_utf8(bytes) {
        Ok(text) => set(target, text),
        Err(_) => set(target, &String::from_utf8_lossy(bytes)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_and_strings_are_refilled_in_place() {
        let mut pool = Pool::default();
        let mut list = vec![String::from("keep"), String::from("spare")];
        let kept = list[0].as_ptr();
        assert_eq!(pool.fit(&mut list, 1).len(), 1);
        assert_eq!(list[0].as_ptr(), kept);
        let mut other = Vec::new();
        assert_eq!(pool.fit(&mut other, 2), ["spare", ""]);
        assert_eq!(fit(&mut list, 3), ["keep", "", ""]);
        set(&mut list[0], "new");
        assert_eq!(list[0], "new");
        set_text(&mut list[2], b"bad \xff");
        assert_eq!(list[2], "bad \u{fffd}");
        // A large buffer is not kept for a small value.
        let mut big = "x".repeat(100_000);
        set(&mut big, "small");
        assert!(big.capacity() < 100_000);
        pool.give(&mut list);
        assert!(list.is_empty());
    }
}
