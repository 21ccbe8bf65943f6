//! [`FileStore`]: a store in a directory of a shared file system.

use std::fs::{self, File, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime};

use crate::error::{Error, Result};
use crate::store::{
    Backoff, CompareSet, MAX_VALUE_LEN, Store, add_counter, check_key, check_value,
};

/// A lock file older than this belongs to a process that died holding it: every critical
/// section is a read, a small write and a rename, far shorter than this.
const STALE_LOCK: Duration = Duration::from_secs(30);

/// Polling back-off cap: short enough that a rendezvous of many ranks finishes promptly,
/// long enough that idle waiters cost little.
const POLL_CAP: Duration = Duration::from_millis(20);

/// Encoded keys longer than this are replaced by their SHA-256, to stay under the 255-byte
/// file-name limit of common file systems.
const MAX_ENCODED: usize = 200;

/// A store in a directory, for ranks that share a file system (NFS, Lustre, a local disk).
///
/// Each key is one file whose name encodes the key (`k` + the key with every byte outside
/// `[A-Za-z0-9_-]` written as `%XX`; long keys by their SHA-256). Writes go to a temp file
/// created exclusively with mode `0600`, then are renamed over the key's file, so a reader sees
/// the old value or the new one, never a partly written file. Reads open with `O_NOFOLLOW` and
/// accept only regular files, so a symbolic link (or FIFO, or device) planted at a key's path is
/// refused with [`Error::Refused`]. Every write takes a per-key lock file created with
/// `O_CREAT|O_EXCL`, which makes [`add`](Store::add), [`compare_set`](Store::compare_set) and
/// [`append`](Store::append) atomic across processes and hosts. Waits poll with a short
/// back-off (a file system offers nothing to block on that works over NFS).
#[derive(Debug)]
pub struct FileStore {
    dir: PathBuf,
}

/// Refuse a directory another user could tamper with: one owned by another user (who could
/// replace any key, or the directory itself), or one every user may write to without the
/// sticky bit (anyone could delete or rename the job's files).
fn check_private(dir: &Path, meta: &fs::Metadata) -> Result<()> {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let me = fs::metadata("/proc/self")
        .map_err(|e| Error::io(None, "reading this process's user id from /proc/self", e))?
        .uid();
    if meta.uid() != me {
        return Err(Error::Config {
            detail: format!(
                "the store directory {} is owned by user {}, not by this process's user {me}: \
                 its owner could replace the job's keys; use a directory of your own",
                dir.display(),
                meta.uid()
            ),
        });
    }
    let mode = meta.permissions().mode();
    if mode & 0o002 != 0 && mode & 0o1000 == 0 {
        return Err(Error::Config {
            detail: format!(
                "the store directory {} is writable by every user and has no sticky bit \
                 (mode {:o}): anyone could delete or replace the job's keys; `chmod o-w` it or \
                 use a private directory",
                dir.display(),
                mode & 0o7777
            ),
        });
    }
    Ok(())
}

/// Distinguishes temp files made by one process.
static TEMP_COUNTER: AtomicU64 = AtomicU64::new(0);

impl FileStore {
    /// A store in `dir`, created (mode `0700`) if missing. A directory owned by another user,
    /// or writable by every user without the sticky bit, is refused with
    /// [`Error::Config`] naming it: whoever can write there can replace the job's keys.
    pub fn new(dir: impl Into<PathBuf>) -> Result<Self> {
        let dir = dir.into();
        fs::DirBuilder::new().recursive(true).mode(0o700).create(&dir).map_err(|e| {
            Error::io(None, format!("creating store directory {}", dir.display()), e)
        })?;
        let meta = fs::metadata(&dir)
            .map_err(|e| Error::io(None, format!("inspecting {}", dir.display()), e))?;
        if !meta.is_dir() {
            return Err(Error::Config { detail: format!("{} is not a directory", dir.display()) });
        }
        check_private(&dir, &meta)?;
        Ok(FileStore { dir })
    }

    /// The store's directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Remove every key, lock and temp file of this store, then the directory if it is empty
    /// (for a finished job). Files that are not the store's are left alone.
    pub fn cleanup(&self) -> Result<()> {
        let entries = fs::read_dir(&self.dir)
            .map_err(|e| Error::io(None, format!("listing {}", self.dir.display()), e))?;
        for entry in entries {
            let entry = entry.map_err(|e| Error::io(None, "listing store directory", e))?;
            let name = entry.file_name();
            let ours =
                name.as_encoded_bytes().first().is_some_and(|c| matches!(c, b'k' | b'l' | b't'));
            if ours {
                match fs::remove_file(entry.path()) {
                    Ok(()) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(e) => return Err(Error::io(None, "removing a store file", e)),
                }
            }
        }
        // Another job's files or a concurrent writer may still be there; then the directory
        // stays, which is harmless.
        let _ = fs::remove_dir(&self.dir);
        Ok(())
    }

    fn path(&self, kind: u8, key: &[u8]) -> PathBuf {
        let mut name = String::with_capacity(1 + key.len());
        name.push(kind as char);
        name.push_str(&encode_key(key));
        self.dir.join(name)
    }

    /// The value of `key` now, refusing anything but a regular file.
    fn read(&self, key: &[u8]) -> Result<Option<Vec<u8>>> {
        let path = self.path(b'k', key);
        let file = match OpenOptions::new()
            .read(true)
            // O_NONBLOCK: a FIFO planted at the path must not block the open.
            .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
            .open(&path)
        {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) if e.raw_os_error() == Some(libc::ELOOP) => {
                return Err(Error::Refused {
                    key: key.to_vec(),
                    detail: format!("{} is a symbolic link; not followed", path.display()),
                });
            }
            Err(e) => return Err(Error::io(Some(key), format!("opening {}", path.display()), e)),
        };
        let meta = file.metadata().map_err(|e| Error::io(Some(key), "inspecting value file", e))?;
        if !meta.is_file() {
            return Err(Error::Refused {
                key: key.to_vec(),
                detail: format!("{} is not a regular file", path.display()),
            });
        }
        if meta.len() > MAX_VALUE_LEN as u64 {
            return Err(Error::Protocol {
                detail: format!("{} holds {} bytes, over the limit", path.display(), meta.len()),
            });
        }
        let mut value = Vec::with_capacity(meta.len() as usize);
        file.take(MAX_VALUE_LEN as u64 + 1)
            .read_to_end(&mut value)
            .map_err(|e| Error::io(Some(key), "reading value file", e))?;
        if value.len() > MAX_VALUE_LEN {
            return Err(Error::Protocol {
                detail: format!("{} grew over the value limit while read", path.display()),
            });
        }
        Ok(Some(value))
    }

    /// Whether `key` exists now (a planted link counts; reading it is then refused).
    fn exists(&self, key: &[u8]) -> Result<bool> {
        match fs::symlink_metadata(self.path(b'k', key)) {
            Ok(_) => Ok(true),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(Error::io(Some(key), "checking value file", e)),
        }
    }

    /// Replace the value of `key` (the caller holds its lock): temp file, then rename.
    fn write(&self, key: &[u8], value: &[u8]) -> Result<()> {
        let path = self.path(b'k', key);
        if let Ok(meta) = fs::symlink_metadata(&path)
            && !meta.is_file()
        {
            return Err(Error::Refused {
                key: key.to_vec(),
                detail: format!("{} is not a regular file; not replaced", path.display()),
            });
        }
        let tmp = self.dir.join(format!(
            "t{}-{}-{:016x}",
            std::process::id(),
            TEMP_COUNTER.fetch_add(1, Ordering::Relaxed),
            random_u64()
        ));
        let result = (|| {
            let mut f = create_exclusive(&tmp)?;
            f.write_all(value)?;
            drop(f);
            fs::rename(&tmp, &path)
        })();
        if let Err(e) = result {
            let _ = fs::remove_file(&tmp);
            return Err(Error::io(Some(key), format!("writing {}", path.display()), e));
        }
        Ok(())
    }

    fn remove(&self, key: &[u8]) -> Result<bool> {
        match fs::remove_file(self.path(b'k', key)) {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(Error::io(Some(key), "removing value file", e)),
        }
    }

    /// Take the per-key lock, retrying with back-off until the deadline.
    fn lock(&self, key: &[u8], deadline: Instant) -> Result<LockGuard> {
        let path = self.path(b'l', key);
        let start = Instant::now();
        let mut backoff = Backoff::new(Duration::from_millis(5));
        loop {
            match create_exclusive(&path) {
                Ok(_) => return Ok(LockGuard { path }),
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                    let stale = fs::symlink_metadata(&path)
                        .and_then(|m| m.modified())
                        .ok()
                        .and_then(|t| SystemTime::now().duration_since(t).ok())
                        .is_some_and(|age| age > STALE_LOCK);
                    if stale {
                        tracing::warn!(lock = %path.display(), "removing a stale store lock file");
                        let _ = fs::remove_file(&path);
                        continue;
                    }
                }
                Err(e) => {
                    return Err(Error::io(
                        Some(key),
                        format!("creating lock {}", path.display()),
                        e,
                    ));
                }
            }
            if !backoff.sleep(deadline) {
                let doing = format!(
                    "lock {} still held by another process after {:.1} s",
                    path.display(),
                    start.elapsed().as_secs_f64()
                );
                return Err(Error::io(Some(key), doing, std::io::ErrorKind::TimedOut.into()));
            }
        }
    }

    /// Poll until every key exists, then read them.
    fn poll<T>(
        &self,
        keys: &[&[u8]],
        deadline: Instant,
        mut read: impl FnMut(&[&[u8]]) -> Result<Option<T>>,
    ) -> Result<T> {
        for k in keys {
            check_key(k)?;
        }
        let start = Instant::now();
        let mut backoff = Backoff::new(POLL_CAP);
        loop {
            if let Some(v) = read(keys)? {
                return Ok(v);
            }
            if !backoff.sleep(deadline) {
                let mut missing = Vec::new();
                for k in keys {
                    if !self.exists(k)? {
                        missing.push(k.to_vec());
                    }
                }
                return Err(Error::Timeout { keys: missing, waited: start.elapsed() });
            }
        }
    }
}

/// Holds a key's lock file; removing it on drop releases the lock.
struct LockGuard {
    path: PathBuf,
}

impl Drop for LockGuard {
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.path);
    }
}

/// Create a new file exclusively, mode `0600`, never through a link.
fn create_exclusive(path: &Path) -> std::io::Result<File> {
    OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)
}

fn random_u64() -> u64 {
    use ring::rand::SecureRandom;
    let mut b = [0u8; 8];
    // The system random source failing is not recoverable, but a temp name needs no secrecy:
    // the pid and counter already make it unique within a host.
    let _ = ring::rand::SystemRandom::new().fill(&mut b);
    u64::from_le_bytes(b)
}

/// A file-name-safe encoding of a binary key (injective: `%` itself is escaped).
fn encode_key(key: &[u8]) -> String {
    let mut s = String::with_capacity(key.len());
    for &b in key {
        if b.is_ascii_alphanumeric() || b == b'_' || b == b'-' {
            s.push(b as char);
        } else {
            s.push_str(&format!("%{b:02X}"));
        }
    }
    if s.len() > MAX_ENCODED {
        let digest = ring::digest::digest(&ring::digest::SHA256, key);
        let mut h = String::from("~");
        for b in digest.as_ref() {
            h.push_str(&format!("{b:02x}"));
        }
        return h;
    }
    s
}

impl Store for FileStore {
    fn set(&self, key: &[u8], value: &[u8], deadline: Instant) -> Result<()> {
        check_value(key, value.len())?;
        let _lock = self.lock(key, deadline)?;
        self.write(key, value)
    }

    fn try_get(&self, key: &[u8], _deadline: Instant) -> Result<Option<Vec<u8>>> {
        check_key(key)?;
        self.read(key)
    }

    fn wait(&self, keys: &[&[u8]], deadline: Instant) -> Result<()> {
        self.poll(keys, deadline, |keys| {
            for k in keys {
                if !self.exists(k)? {
                    return Ok(None);
                }
            }
            Ok(Some(()))
        })
    }

    fn add(&self, key: &[u8], delta: i64, deadline: Instant) -> Result<i64> {
        check_key(key)?;
        let _lock = self.lock(key, deadline)?;
        let new = add_counter(key, self.read(key)?.as_deref(), delta)?;
        self.write(key, new.to_string().as_bytes())?;
        Ok(new)
    }

    fn compare_set(
        &self,
        key: &[u8],
        expected: Option<&[u8]>,
        new: &[u8],
        deadline: Instant,
    ) -> Result<CompareSet> {
        check_value(key, new.len())?;
        let _lock = self.lock(key, deadline)?;
        let current = self.read(key)?;
        if current.as_deref() != expected {
            return Ok(CompareSet::Mismatch { current });
        }
        self.write(key, new)?;
        Ok(CompareSet::Swapped)
    }

    fn multi_get(&self, keys: &[&[u8]], deadline: Instant) -> Result<Vec<Vec<u8>>> {
        self.poll(keys, deadline, |keys| {
            let mut values = Vec::with_capacity(keys.len());
            for k in keys {
                match self.read(k)? {
                    Some(v) => values.push(v),
                    None => return Ok(None),
                }
            }
            Ok(Some(values))
        })
    }

    fn multi_set(&self, pairs: &[(&[u8], &[u8])], deadline: Instant) -> Result<()> {
        for (k, v) in pairs {
            check_value(k, v.len())?;
        }
        for (k, v) in pairs {
            self.set(k, v, deadline)?;
        }
        Ok(())
    }

    fn append(&self, key: &[u8], value: &[u8], deadline: Instant) -> Result<()> {
        check_key(key)?;
        let _lock = self.lock(key, deadline)?;
        let mut current = self.read(key)?.unwrap_or_default();
        check_value(key, current.len().saturating_add(value.len()))?;
        current.extend_from_slice(value);
        self.write(key, &current)
    }

    fn delete(&self, key: &[u8], deadline: Instant) -> Result<bool> {
        check_key(key)?;
        let _lock = self.lock(key, deadline)?;
        self.remove(key)
    }
}

#[cfg(test)]
mod tests {
    use super::encode_key;

    #[test]
    fn key_encoding_is_safe_and_injective() {
        assert_eq!(encode_key(b"a/b"), "a%2Fb");
        assert_eq!(encode_key(b"%2F"), "%252F");
        assert_eq!(encode_key(b".."), "%2E%2E");
        assert_eq!(encode_key(b""), "");
        let long = encode_key(&[0xffu8; 300]);
        assert!(long.starts_with('~') && long.len() == 65, "{long}");
        assert_ne!(encode_key(&[0xffu8; 300]), encode_key(&[0xfeu8; 300]));
    }
}
