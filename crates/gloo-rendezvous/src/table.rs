//! The key-value table behind the in-process store ([`HashStore`](crate::HashStore)) and
//! the TCP store server: what each write does to the map and the limits it checks, in one
//! place, so the two stores cannot drift apart. Each write says whether it created a key,
//! because a created key is what completes a parked wait (each store wakes its waiters its
//! own way: a condition variable, or answers on other connections).

use std::collections::HashMap;

use crate::error::Result;
use crate::store::{add_counter, check_key, check_value};

/// The outcome of [`Table::compare_set`].
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Swap<'t> {
    /// The value was replaced; `created` when the key did not exist before.
    Swapped { created: bool },
    /// The key held something else (`None`: it was absent); nothing changed.
    Mismatch(Option<&'t [u8]>),
}

/// Keys and values, both arbitrary bytes within the limits of `store`.
#[derive(Debug, Default)]
pub(crate) struct Table {
    map: HashMap<Vec<u8>, Vec<u8>>,
}

impl Table {
    pub(crate) fn get(&self, key: &[u8]) -> Option<&[u8]> {
        self.map.get(key).map(Vec::as_slice)
    }

    pub(crate) fn contains(&self, key: &[u8]) -> bool {
        self.map.contains_key(key)
    }

    pub(crate) fn len(&self) -> usize {
        self.map.len()
    }

    /// Store `value` under `key`; true when the key is new.
    pub(crate) fn set(&mut self, key: &[u8], value: &[u8]) -> Result<bool> {
        check_value(key, value.len())?;
        Ok(match self.map.get_mut(key) {
            // Overwriting reuses the key and the value's allocation.
            Some(v) => {
                v.clear();
                v.extend_from_slice(value);
                false
            }
            None => {
                self.map.insert(key.to_vec(), value.to_vec());
                true
            }
        })
    }

    /// Add `delta` to the decimal counter under `key` (absent: 0); the new value, and true
    /// when the key is new.
    pub(crate) fn add(&mut self, key: &[u8], delta: i64) -> Result<(i64, bool)> {
        check_key(key)?;
        let new = add_counter(key, self.get(key), delta)?;
        let created = self.map.insert(key.to_vec(), new.to_string().into_bytes()).is_none();
        Ok((new, created))
    }

    /// Replace the value under `key` with `new` if it is `expected` (`None`: absent).
    pub(crate) fn compare_set(
        &mut self,
        key: &[u8],
        expected: Option<&[u8]>,
        new: &[u8],
    ) -> Result<Swap<'_>> {
        check_value(key, new.len())?;
        if self.get(key) != expected {
            return Ok(Swap::Mismatch(self.get(key)));
        }
        let created = self.map.insert(key.to_vec(), new.to_vec()).is_none();
        Ok(Swap::Swapped { created })
    }

    /// Store every pair, or none when one is over a limit; the keys that are new.
    pub(crate) fn multi_set<'k>(&mut self, pairs: &[(&'k [u8], &[u8])]) -> Result<Vec<&'k [u8]>> {
        for (k, v) in pairs {
            check_value(k, v.len())?;
        }
        let mut created = Vec::new();
        for (k, v) in pairs {
            if self.map.insert(k.to_vec(), v.to_vec()).is_none() {
                created.push(*k);
            }
        }
        Ok(created)
    }

    /// Append `value` to the value under `key` (absent: empty); true when the key is new.
    pub(crate) fn append(&mut self, key: &[u8], value: &[u8]) -> Result<bool> {
        let old = self.map.get(key).map(Vec::len);
        check_value(key, old.unwrap_or(0).saturating_add(value.len()))?;
        self.map.entry(key.to_vec()).or_default().extend_from_slice(value);
        Ok(old.is_none())
    }

    /// Remove `key`; true when it existed.
    pub(crate) fn delete(&mut self, key: &[u8]) -> Result<bool> {
        check_key(key)?;
        Ok(self.map.remove(key).is_some())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{MAX_KEY_LEN, MAX_VALUE_LEN};

    #[test]
    fn writes_say_whether_they_created_the_key() {
        let mut t = Table::default();
        assert_eq!(t.set(b"a", b"1"), Ok(true));
        assert_eq!(t.set(b"a", b"22"), Ok(false));
        assert_eq!(t.get(b"a"), Some(&b"22"[..]));
        assert_eq!(t.add(b"n", 5), Ok((5, true)));
        assert_eq!(t.add(b"n", -7), Ok((-2, false)));
        assert_eq!(t.append(b"s", b"x"), Ok(true));
        assert_eq!(t.append(b"s", b"y"), Ok(false));
        assert_eq!(t.get(b"s"), Some(&b"xy"[..]));
        assert_eq!(t.compare_set(b"c", None, b"v"), Ok(Swap::Swapped { created: true }));
        assert_eq!(t.compare_set(b"c", Some(b"v"), b"w"), Ok(Swap::Swapped { created: false }));
        assert_eq!(t.compare_set(b"c", None, b"z"), Ok(Swap::Mismatch(Some(&b"w"[..]))));
        assert_eq!(t.compare_set(b"d", Some(b"v"), b"z"), Ok(Swap::Mismatch(None)));
        assert!(!t.contains(b"d"));
        assert_eq!(t.multi_set(&[(b"a", b"3"), (b"m", b"4")]), Ok(vec![&b"m"[..]]));
        assert_eq!(t.delete(b"m"), Ok(true));
        assert_eq!(t.delete(b"m"), Ok(false));
        assert_eq!(t.len(), 4);
    }

    #[test]
    fn a_write_over_a_limit_changes_nothing() {
        let mut t = Table::default();
        let long_key = vec![b'k'; MAX_KEY_LEN + 1];
        assert!(t.set(&long_key, b"v").is_err());
        assert!(t.add(&long_key, 1).is_err());
        assert!(t.delete(&long_key).is_err());
        let big = vec![0u8; MAX_VALUE_LEN + 1];
        assert!(t.multi_set(&[(b"ok", b"v"), (b"big", &big)]).is_err());
        assert!(!t.contains(b"ok"), "multi_set stores all or nothing");
        t.set(b"s", &big[..MAX_VALUE_LEN]).unwrap();
        assert!(t.append(b"s", b"!").is_err());
        assert_eq!(t.get(b"s").map(<[u8]>::len), Some(MAX_VALUE_LEN));
        t.set(b"n", b"not a number").unwrap();
        assert!(t.add(b"n", 1).is_err());
        assert_eq!(t.get(b"n"), Some(&b"not a number"[..]));
    }
}
