//! [`PrefixStore`]: scopes every key under a prefix, so many jobs can share one store.

use std::time::Instant;

use crate::error::{Error, Result};
use crate::store::{CompareSet, Store};

/// A view of another store in which every key is stored as `prefix/key`.
///
/// Errors name keys as the caller of this view named them (the prefix is stripped), so a
/// timeout reads the same whether or not the store is shared.
#[derive(Debug, Clone)]
pub struct PrefixStore<S> {
    inner: S,
    prefix: Vec<u8>,
}

impl<S: Store> PrefixStore<S> {
    /// Scope `inner` under `prefix` (a `/` is put between the prefix and each key).
    pub fn new(inner: S, prefix: impl AsRef<[u8]>) -> Self {
        let mut prefix = prefix.as_ref().to_vec();
        prefix.push(b'/');
        PrefixStore { inner, prefix }
    }

    /// The store underneath.
    pub fn inner(&self) -> &S {
        &self.inner
    }

    fn scoped(&self, key: &[u8]) -> Vec<u8> {
        let mut k = Vec::with_capacity(self.prefix.len() + key.len());
        k.extend_from_slice(&self.prefix);
        k.extend_from_slice(key);
        k
    }

    fn unscope(&self, key: Vec<u8>) -> Vec<u8> {
        match key.strip_prefix(self.prefix.as_slice()) {
            Some(rest) => rest.to_vec(),
            None => key,
        }
    }

    /// Strip the prefix from keys named in an error.
    fn unscope_err(&self, e: Error) -> Error {
        match e {
            Error::Timeout { keys, waited } => {
                Error::Timeout { keys: keys.into_iter().map(|k| self.unscope(k)).collect(), waited }
            }
            Error::Io { key, doing, source } => {
                Error::Io { key: key.map(|k| self.unscope(k)), doing, source }
            }
            Error::InvalidArgument { key, what } => {
                Error::InvalidArgument { key: key.map(|k| self.unscope(k)), what }
            }
            Error::Refused { key, detail } => Error::Refused { key: self.unscope(key), detail },
            other => other,
        }
    }
}

impl<S: Store> Store for PrefixStore<S> {
    fn set(&self, key: &[u8], value: &[u8], deadline: Instant) -> Result<()> {
        self.inner.set(&self.scoped(key), value, deadline).map_err(|e| self.unscope_err(e))
    }

    fn get(&self, key: &[u8], deadline: Instant) -> Result<Vec<u8>> {
        self.inner.get(&self.scoped(key), deadline).map_err(|e| self.unscope_err(e))
    }

    fn try_get(&self, key: &[u8], deadline: Instant) -> Result<Option<Vec<u8>>> {
        self.inner.try_get(&self.scoped(key), deadline).map_err(|e| self.unscope_err(e))
    }

    fn wait(&self, keys: &[&[u8]], deadline: Instant) -> Result<()> {
        let scoped: Vec<Vec<u8>> = keys.iter().map(|k| self.scoped(k)).collect();
        let refs: Vec<&[u8]> = scoped.iter().map(Vec::as_slice).collect();
        self.inner.wait(&refs, deadline).map_err(|e| self.unscope_err(e))
    }

    fn add(&self, key: &[u8], delta: i64, deadline: Instant) -> Result<i64> {
        self.inner.add(&self.scoped(key), delta, deadline).map_err(|e| self.unscope_err(e))
    }

    fn compare_set(
        &self,
        key: &[u8],
        expected: Option<&[u8]>,
        new: &[u8],
        deadline: Instant,
    ) -> Result<CompareSet> {
        self.inner
            .compare_set(&self.scoped(key), expected, new, deadline)
            .map_err(|e| self.unscope_err(e))
    }

    fn multi_get(&self, keys: &[&[u8]], deadline: Instant) -> Result<Vec<Vec<u8>>> {
        let scoped: Vec<Vec<u8>> = keys.iter().map(|k| self.scoped(k)).collect();
        let refs: Vec<&[u8]> = scoped.iter().map(Vec::as_slice).collect();
        self.inner.multi_get(&refs, deadline).map_err(|e| self.unscope_err(e))
    }

    fn multi_set(&self, pairs: &[(&[u8], &[u8])], deadline: Instant) -> Result<()> {
        let scoped: Vec<Vec<u8>> = pairs.iter().map(|(k, _)| self.scoped(k)).collect();
        let refs: Vec<(&[u8], &[u8])> =
            scoped.iter().zip(pairs).map(|(k, (_, v))| (k.as_slice(), *v)).collect();
        self.inner.multi_set(&refs, deadline).map_err(|e| self.unscope_err(e))
    }

    fn append(&self, key: &[u8], value: &[u8], deadline: Instant) -> Result<()> {
        self.inner.append(&self.scoped(key), value, deadline).map_err(|e| self.unscope_err(e))
    }

    fn delete(&self, key: &[u8], deadline: Instant) -> Result<bool> {
        self.inner.delete(&self.scoped(key), deadline).map_err(|e| self.unscope_err(e))
    }
}
