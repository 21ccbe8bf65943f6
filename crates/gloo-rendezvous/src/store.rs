//! The [`Store`] trait every store implements, and helpers the stores share.

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::error::{Error, Result};

/// The largest value any store accepts (64 MiB): addresses and rendezvous data are small, and
/// the bound lets the network stores check a peer's length before allocating.
pub const MAX_VALUE_LEN: usize = 64 << 20;

/// The largest key any store accepts (4 KiB).
pub const MAX_KEY_LEN: usize = 4096;

/// The outcome of [`Store::compare_set`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum CompareSet {
    /// The key held the expected value (or was absent, when absence was expected) and now
    /// holds the new value.
    Swapped,
    /// The key held something else; nothing was changed.
    Mismatch {
        /// What the key held (`None`: the key was absent).
        current: Option<Vec<u8>>,
    },
}

/// A key-value store that ranks rendezvous through.
///
/// Keys and values are arbitrary bytes: empty values and keys containing `/` work in every
/// store. Every call takes a deadline; a call that waits for keys returns
/// [`Error::Timeout`] listing the keys still missing when the deadline passes, and a call that
/// cannot reach its store returns an error by the deadline too (never a hang).
///
/// Counters written by [`add`](Store::add) are stored as decimal ASCII (`b"42"`), so
/// [`get`](Store::get) on a counter returns its text.
pub trait Store: Send + Sync {
    /// Set `key` to `value`, replacing any previous value, and wake everybody waiting for it.
    fn set(&self, key: &[u8], value: &[u8], deadline: Instant) -> Result<()>;

    /// The value of `key`, waiting until it exists or the deadline passes.
    fn get(&self, key: &[u8], deadline: Instant) -> Result<Vec<u8>> {
        let mut values = self.multi_get(&[key], deadline)?;
        values.pop().ok_or_else(|| Error::Protocol {
            detail: "store answered a one-key multi_get with no value".into(),
        })
    }

    /// The value of `key` if it exists now, without waiting.
    fn try_get(&self, key: &[u8], deadline: Instant) -> Result<Option<Vec<u8>>>;

    /// Wait until every key in `keys` exists.
    fn wait(&self, keys: &[&[u8]], deadline: Instant) -> Result<()>;

    /// Add `delta` to the counter at `key` (absent counts as 0) atomically, and return the
    /// new value. A key holding something that is not a decimal `i64`, or an overflow, is an
    /// [`Error::InvalidArgument`] naming the key.
    fn add(&self, key: &[u8], delta: i64, deadline: Instant) -> Result<i64>;

    /// Set `key` to `new` only if it holds `expected` (`None`: only if it is absent),
    /// atomically with respect to every other client of the store.
    fn compare_set(
        &self,
        key: &[u8],
        expected: Option<&[u8]>,
        new: &[u8],
        deadline: Instant,
    ) -> Result<CompareSet>;

    /// The values of every key in `keys`, in order, waiting until all of them exist.
    fn multi_get(&self, keys: &[&[u8]], deadline: Instant) -> Result<Vec<Vec<u8>>>;

    /// Set several keys.
    fn multi_set(&self, pairs: &[(&[u8], &[u8])], deadline: Instant) -> Result<()>;

    /// Append `value` to the value at `key` (absent counts as empty) atomically.
    fn append(&self, key: &[u8], value: &[u8], deadline: Instant) -> Result<()>;

    /// Delete `key`; returns whether it existed.
    fn delete(&self, key: &[u8], deadline: Instant) -> Result<bool>;
}

impl<S: Store + ?Sized> Store for Arc<S> {
    fn set(&self, key: &[u8], value: &[u8], deadline: Instant) -> Result<()> {
        (**self).set(key, value, deadline)
    }
    fn get(&self, key: &[u8], deadline: Instant) -> Result<Vec<u8>> {
        (**self).get(key, deadline)
    }
    fn try_get(&self, key: &[u8], deadline: Instant) -> Result<Option<Vec<u8>>> {
        (**self).try_get(key, deadline)
    }
    fn wait(&self, keys: &[&[u8]], deadline: Instant) -> Result<()> {
        (**self).wait(keys, deadline)
    }
    fn add(&self, key: &[u8], delta: i64, deadline: Instant) -> Result<i64> {
        (**self).add(key, delta, deadline)
    }
    fn compare_set(
        &self,
        key: &[u8],
        expected: Option<&[u8]>,
        new: &[u8],
        deadline: Instant,
    ) -> Result<CompareSet> {
        (**self).compare_set(key, expected, new, deadline)
    }
    fn multi_get(&self, keys: &[&[u8]], deadline: Instant) -> Result<Vec<Vec<u8>>> {
        (**self).multi_get(keys, deadline)
    }
    fn multi_set(&self, pairs: &[(&[u8], &[u8])], deadline: Instant) -> Result<()> {
        (**self).multi_set(pairs, deadline)
    }
    fn append(&self, key: &[u8], value: &[u8], deadline: Instant) -> Result<()> {
        (**self).append(key, value, deadline)
    }
    fn delete(&self, key: &[u8], deadline: Instant) -> Result<bool> {
        (**self).delete(key, deadline)
    }
}

/// Check a key against the limits every store shares.
pub(crate) fn check_key(key: &[u8]) -> Result<()> {
    if key.len() > MAX_KEY_LEN {
        return Err(Error::InvalidArgument {
            key: Some(key[..64].to_vec()),
            what: format!("key of {} bytes exceeds the limit of {MAX_KEY_LEN}", key.len()),
        });
    }
    Ok(())
}

/// Check a value against the limits every store shares.
pub(crate) fn check_value(key: &[u8], value_len: usize) -> Result<()> {
    check_key(key)?;
    if value_len > MAX_VALUE_LEN {
        return Err(Error::InvalidArgument {
            key: Some(key.to_vec()),
            what: format!("value of {value_len} bytes exceeds the limit of {MAX_VALUE_LEN}"),
        });
    }
    Ok(())
}

/// The new counter value after adding `delta` to the stored `current` (absent: 0).
pub(crate) fn add_counter(key: &[u8], current: Option<&[u8]>, delta: i64) -> Result<i64> {
    let old = match current {
        None => 0,
        Some(bytes) => std::str::from_utf8(bytes)
            .ok()
            .and_then(|s| s.parse::<i64>().ok())
            .ok_or_else(|| Error::InvalidArgument {
                key: Some(key.to_vec()),
                what: format!(
                    "add on a key holding {:?}, which is not a decimal i64 counter",
                    bytes.escape_ascii().to_string()
                ),
            })?,
    };
    old.checked_add(delta).ok_or_else(|| Error::InvalidArgument {
        key: Some(key.to_vec()),
        what: format!("counter {old} + {delta} overflows i64"),
    })
}

/// Exponential back-off for stores that poll (file, Redis): starts at 1 ms, doubles to a cap,
/// and never sleeps past the deadline.
#[derive(Debug)]
pub(crate) struct Backoff {
    next: Duration,
    cap: Duration,
}

impl Backoff {
    pub(crate) fn new(cap: Duration) -> Self {
        Backoff { next: Duration::from_millis(1), cap }
    }

    /// Sleep for the next interval; returns false (without sleeping) once the deadline passed.
    pub(crate) fn sleep(&mut self, deadline: Instant) -> bool {
        let now = Instant::now();
        if now >= deadline {
            return false;
        }
        std::thread::sleep(self.next.min(deadline - now));
        self.next = (self.next * 2).min(self.cap);
        true
    }
}
