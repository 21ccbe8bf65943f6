//! Where ranks meet: the key-value store the bench publishes its addresses in.
//!
//! The bench needs only two operations: publish a value under a key, and wait for a key.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::cli::StoreUrl;
use crate::error::{Error, Result};

/// The largest value the bench accepts from a store, so a corrupt entry cannot make it
/// allocate without bound.
const MAX_VALUE: u64 = 1 << 20;

/// The two store operations the bench needs.
pub(crate) trait Kv: Send + Sync {
    /// Publish `value` under `key`.
    fn set(&self, key: &str, value: &[u8]) -> Result<()>;
    /// Wait until `key` exists (or `deadline` passes) and return its value.
    fn get(&self, key: &str, deadline: Instant) -> Result<Vec<u8>>;
}

/// Open the store a `--store` URL names.
pub(crate) fn open(url: &StoreUrl) -> Result<Box<dyn Kv>> {
    match url {
        StoreUrl::File(dir) => Ok(Box::new(FileKv::new(dir)?)),
        StoreUrl::Tcp(_) => Err(Error::NotAvailable {
            what: format!("--store {url}"),
            needs: "gloo-rendezvous's TcpStore",
        }),
        StoreUrl::Redis(_) => Err(Error::NotAvailable {
            what: format!("--store {url}"),
            needs: "gloo-rendezvous's RedisStore",
        }),
        StoreUrl::Env => Err(Error::NotAvailable {
            what: "--store env://".to_string(),
            needs: "gloo-rendezvous's env:// start-up",
        }),
    }
}

/// A directory of files, one per key, each written to a temporary name and renamed into place
/// so that a reader never sees a partly written value.
pub(crate) struct FileKv {
    dir: PathBuf,
}

impl FileKv {
    /// Use (and create if needed) `dir`.
    pub(crate) fn new(dir: &Path) -> Result<FileKv> {
        std::fs::create_dir_all(dir)
            .map_err(|e| Error::io(format!("creating the store directory {}", dir.display()), e))?;
        Ok(FileKv { dir: dir.to_path_buf() })
    }

    fn path(&self, key: &str) -> Result<PathBuf> {
        let ok = !key.is_empty()
            && key
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
            && !key.starts_with('.');
        if ok {
            Ok(self.dir.join(key))
        } else {
            Err(Error::Invalid(format!("store key '{key}' is not a plain file name")))
        }
    }
}

impl Kv for FileKv {
    fn set(&self, key: &str, value: &[u8]) -> Result<()> {
        let path = self.path(key)?;
        let tmp = self.dir.join(format!(".tmp.{key}.{}", std::process::id()));
        std::fs::write(&tmp, value)
            .map_err(|e| Error::io(format!("writing store key {key} to {}", tmp.display()), e))?;
        std::fs::rename(&tmp, &path)
            .map_err(|e| Error::io(format!("publishing store key {key} at {}", path.display()), e))
    }

    fn get(&self, key: &str, deadline: Instant) -> Result<Vec<u8>> {
        let path = self.path(key)?;
        let start = Instant::now();
        loop {
            match std::fs::metadata(&path) {
                Ok(m) if m.len() > MAX_VALUE => {
                    return Err(Error::Invalid(format!(
                        "store key {key} holds {} bytes, more than the {MAX_VALUE} accepted",
                        m.len()
                    )));
                }
                Ok(_) => {
                    return std::fs::read(&path)
                        .map_err(|e| Error::io(format!("reading store key {key}"), e));
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(Error::io(format!("looking for store key {key}"), e)),
            }
            if Instant::now() >= deadline {
                return Err(Error::Timeout {
                    what: format!("store key {key} in {}", self.dir.display()),
                    waited: start.elapsed().as_secs_f64(),
                });
            }
            std::thread::sleep(Duration::from_millis(2));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_store_round_trips_and_times_out_naming_the_key() {
        let dir = std::env::temp_dir().join(format!("gloo-bench-kv-test-{}", std::process::id()));
        let kv = FileKv::new(&dir).unwrap();
        kv.set("a.b-1", b"hello").unwrap();
        let soon = Instant::now() + Duration::from_secs(5);
        assert_eq!(kv.get("a.b-1", soon).unwrap(), b"hello");
        let err = kv.get("missing", Instant::now() + Duration::from_millis(20)).unwrap_err();
        assert!(err.to_string().contains("missing"), "{err}");
        assert!(kv.set("../escape", b"x").is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
