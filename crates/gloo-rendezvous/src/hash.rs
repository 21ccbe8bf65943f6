//! [`HashStore`]: an in-process store for ranks that are threads of one process.

use std::collections::HashMap;
use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::Instant;

use crate::error::{Error, Result};
use crate::store::{CompareSet, Store, add_counter, check_key, check_value};

/// An in-process store: a map behind a mutex, with waits on a condition variable (woken by
/// every write, so a waiter never polls).
///
/// Share it between threads with an `Arc`.
#[derive(Debug, Default)]
pub struct HashStore {
    map: Mutex<HashMap<Vec<u8>, Vec<u8>>>,
    changed: Condvar,
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

    fn lock(&self) -> MutexGuard<'_, HashMap<Vec<u8>, Vec<u8>>> {
        // A panic while holding the lock cannot leave the map half-updated (every update is a
        // single insert or remove), so a poisoned lock is still safe to use.
        self.map.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Wait until every key exists, then run `f` on the map under the lock.
    fn wait_then<T>(
        &self,
        keys: &[&[u8]],
        deadline: Instant,
        f: impl FnOnce(&HashMap<Vec<u8>, Vec<u8>>) -> T,
    ) -> Result<T> {
        for k in keys {
            check_key(k)?;
        }
        let start = Instant::now();
        let mut map = self.lock();
        loop {
            if keys.iter().all(|k| map.contains_key(*k)) {
                return Ok(f(&map));
            }
            let now = Instant::now();
            if now >= deadline {
                let keys =
                    keys.iter().filter(|k| !map.contains_key(**k)).map(|k| k.to_vec()).collect();
                return Err(Error::Timeout { keys, waited: start.elapsed() });
            }
            map =
                self.changed.wait_timeout(map, deadline - now).unwrap_or_else(|p| p.into_inner()).0;
        }
    }
}

impl Store for HashStore {
    fn set(&self, key: &[u8], value: &[u8], _deadline: Instant) -> Result<()> {
        check_value(key, value.len())?;
        self.lock().insert(key.to_vec(), value.to_vec());
        self.changed.notify_all();
        Ok(())
    }

    fn try_get(&self, key: &[u8], _deadline: Instant) -> Result<Option<Vec<u8>>> {
        check_key(key)?;
        Ok(self.lock().get(key).cloned())
    }

    fn wait(&self, keys: &[&[u8]], deadline: Instant) -> Result<()> {
        self.wait_then(keys, deadline, |_| ())
    }

    fn add(&self, key: &[u8], delta: i64, _deadline: Instant) -> Result<i64> {
        check_key(key)?;
        let mut map = self.lock();
        let new = add_counter(key, map.get(key).map(Vec::as_slice), delta)?;
        map.insert(key.to_vec(), new.to_string().into_bytes());
        drop(map);
        self.changed.notify_all();
        Ok(new)
    }

    fn compare_set(
        &self,
        key: &[u8],
        expected: Option<&[u8]>,
        new: &[u8],
        _deadline: Instant,
    ) -> Result<CompareSet> {
        check_value(key, new.len())?;
        let mut map = self.lock();
        let current = map.get(key);
        if current.map(Vec::as_slice) != expected {
            return Ok(CompareSet::Mismatch { current: current.cloned() });
        }
        map.insert(key.to_vec(), new.to_vec());
        drop(map);
        self.changed.notify_all();
        Ok(CompareSet::Swapped)
    }

    fn multi_get(&self, keys: &[&[u8]], deadline: Instant) -> Result<Vec<Vec<u8>>> {
        self.wait_then(keys, deadline, |map| {
            keys.iter()
                // wait_then runs this only once every key exists, under the same lock.
                .map(|k| map.get(*k).cloned().unwrap_or_default())
                .collect()
        })
    }

    fn multi_set(&self, pairs: &[(&[u8], &[u8])], _deadline: Instant) -> Result<()> {
        for (k, v) in pairs {
            check_value(k, v.len())?;
        }
        let mut map = self.lock();
        for (k, v) in pairs {
            map.insert(k.to_vec(), v.to_vec());
        }
        drop(map);
        self.changed.notify_all();
        Ok(())
    }

    fn append(&self, key: &[u8], value: &[u8], _deadline: Instant) -> Result<()> {
        let mut map = self.lock();
        let old_len = map.get(key).map_or(0, Vec::len);
        check_value(key, old_len.saturating_add(value.len()))?;
        map.entry(key.to_vec()).or_default().extend_from_slice(value);
        drop(map);
        self.changed.notify_all();
        Ok(())
    }

    fn delete(&self, key: &[u8], _deadline: Instant) -> Result<bool> {
        check_key(key)?;
        Ok(self.lock().remove(key).is_some())
    }
}
