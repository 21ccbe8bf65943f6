//! [`HashStore`]: an in-process store for ranks that are threads of one process.

use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::Instant;

use crate::error::{Error, Result};
use crate::store::{CompareSet, Store, check_key};
use crate::table::{Swap, Table};

/// An in-process store: a map behind a mutex, with waits on a condition variable (woken by
/// every write that creates a key, so a waiter never polls).
///
/// Share it between threads with an `Arc`.
#[derive(Debug, Default)]
pub struct HashStore {
    table: Mutex<Table>,
    created: Condvar,
}

impl HashStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    /// The number of keys held.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// Whether the store holds no key.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lock(&self) -> MutexGuard<'_, Table> {
        // A panic while holding the lock cannot leave the table half-updated (every update is a
        // single insert or remove, after its checks), so a poisoned lock is still safe to use.
        self.table.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Run a write, waking the waiters when it created a key (only a new key can complete a
    /// wait: waits are for keys to exist).
    fn write<T>(&self, f: impl FnOnce(&mut Table) -> Result<(T, bool)>) -> Result<T> {
        let (out, created) = f(&mut self.lock())?;
        if created {
            self.created.notify_all();
        }
        Ok(out)
    }

    /// Wait until every key exists, then run `f` on the table under the lock.
    fn wait_then<T>(
        &self,
        keys: &[&[u8]],
        deadline: Instant,
        f: impl FnOnce(&Table) -> T,
    ) -> Result<T> {
        for k in keys {
            check_key(k)?;
        }
        let start = Instant::now();
        let mut table = self.lock();
        loop {
            if keys.iter().all(|k| table.contains(k)) {
                return Ok(f(&table));
            }
            let now = Instant::now();
            if now >= deadline {
                let keys = keys.iter().filter(|k| !table.contains(k)).map(|k| k.to_vec()).collect();
                return Err(Error::Timeout { keys, waited: start.elapsed() });
            }
            table = self
                .created
                .wait_timeout(table, deadline - now)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
    }
}

impl Store for HashStore {
    fn set(&self, key: &[u8], value: &[u8], _deadline: Instant) -> Result<()> {
        self.write(|t| Ok(((), t.set(key, value)?)))
    }

    fn try_get(&self, key: &[u8], _deadline: Instant) -> Result<Option<Vec<u8>>> {
        check_key(key)?;
        Ok(self.lock().get(key).map(<[u8]>::to_vec))
    }

    fn wait(&self, keys: &[&[u8]], deadline: Instant) -> Result<()> {
        self.wait_then(keys, deadline, |_| ())
    }

    fn add(&self, key: &[u8], delta: i64, _deadline: Instant) -> Result<i64> {
        self.write(|t| t.add(key, delta))
    }

    fn compare_set(
        &self,
        key: &[u8],
        expected: Option<&[u8]>,
        new: &[u8],
        _deadline: Instant,
    ) -> Result<CompareSet> {
        self.write(|t| {
            Ok(match t.compare_set(key, expected, new)? {
                Swap::Swapped { created } => (CompareSet::Swapped, created),
                Swap::Mismatch(current) => {
                    (CompareSet::Mismatch { current: current.map(<[u8]>::to_vec) }, false)
                }
            })
        })
    }

    fn multi_get(&self, keys: &[&[u8]], deadline: Instant) -> Result<Vec<Vec<u8>>> {
        self.wait_then(keys, deadline, |table| {
            keys.iter()
                // wait_then runs this only once every key exists, under the same lock.
                .map(|k| table.get(k).map(<[u8]>::to_vec).unwrap_or_default())
                .collect()
        })
    }

    fn multi_set(&self, pairs: &[(&[u8], &[u8])], _deadline: Instant) -> Result<()> {
        self.write(|t| Ok(((), !t.multi_set(pairs)?.is_empty())))
    }

    fn append(&self, key: &[u8], value: &[u8], _deadline: Instant) -> Result<()> {
        self.write(|t| Ok(((), t.append(key, value)?)))
    }

    fn delete(&self, key: &[u8], _deadline: Instant) -> Result<bool> {
        self.lock().delete(key)
    }
}
