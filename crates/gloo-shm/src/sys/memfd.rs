//! Anonymous shared files (memfd): created exclusively, mode `0600`, sealed against resizing.
//!
//! A memfd has no name in any file system (`/dev/shm` stays empty), so nothing is left behind
//! when every process holding it dies, even of `SIGKILL`. Its seals matter for safety: a
//! mapping of a file that someone truncates raises `SIGBUS` on the next access, so a segment
//! is only mapped once it is sealed against shrinking ([`check_received`]).

use std::ffi::CString;
use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd};
use std::os::unix::fs::{MetadataExt, PermissionsExt};

use super::check;

/// The seals every segment carries: no shrinking (the `SIGBUS` guard), no growing, and no
/// further changes to the seals.
pub(crate) const SEALS: libc::c_int = libc::F_SEAL_SHRINK | libc::F_SEAL_GROW | libc::F_SEAL_SEAL;

/// A new memfd of `len` bytes named `name` (the name is only a label in `/proc/<pid>/fd`),
/// mode `0600`, close-on-exec, sealed with [`SEALS`].
pub(crate) fn create(name: &str, len: u64) -> io::Result<File> {
    let name = CString::new(name).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    // SAFETY: `name` is a valid NUL-terminated string that outlives the call; the flags are
    // valid for memfd_create; the call has no other preconditions.
    let fd = check(unsafe {
        libc::memfd_create(name.as_ptr(), libc::MFD_CLOEXEC | libc::MFD_ALLOW_SEALING)
    })?;
    // SAFETY: `fd` was just returned by memfd_create, so it is open and owned by nobody else.
    let file = unsafe { File::from_raw_fd(fd) };
    // A memfd starts with mode 0777; only processes that may ptrace us can reach it through
    // /proc, but 0600 says what it is for and is what the receiver checks.
    file.set_permissions(std::fs::Permissions::from_mode(0o600))?;
    file.set_len(len)?;
    add_seals(&file, SEALS)?;
    Ok(file)
}

fn add_seals(file: &File, seals: libc::c_int) -> io::Result<()> {
    // SAFETY: F_ADD_SEALS takes an int argument and only acts on the open descriptor, which
    // `file` keeps open for the duration of the call.
    check(unsafe { libc::fcntl(file.as_raw_fd(), libc::F_ADD_SEALS, seals) }).map(|_| ())
}

/// The seals of `file`; `EINVAL` when it does not support seals (it is not a memfd).
pub(crate) fn seals(file: &File) -> io::Result<libc::c_int> {
    // SAFETY: F_GET_SEALS takes no argument and only reads the descriptor's state; `file`
    // keeps the descriptor open for the duration of the call.
    check(unsafe { libc::fcntl(file.as_raw_fd(), libc::F_GET_SEALS) })
}

/// Why a received segment file is refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Refusal {
    /// Not a regular file.
    NotRegular,
    /// Not a memfd with [`SEALS`] (a plain file can be truncated under our mapping).
    NotSealed { seals: Option<libc::c_int> },
    /// Owned by another user.
    Owner { uid: u32, ours: u32 },
    /// Readable or writable by someone other than its owner.
    Mode { mode: u32 },
    /// Not the size the handshake agreed on.
    Size { len: u64, want: u64 },
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Refusal::NotRegular => f.write_str("not a regular file"),
            Refusal::NotSealed { seals: None } => {
                f.write_str("not a sealable memfd (a plain file could be truncated under us)")
            }
            Refusal::NotSealed { seals: Some(s) } => {
                write!(f, "seals {s:#x} lack shrink, grow and seal ({SEALS:#x})")
            }
            Refusal::Owner { uid, ours } => write!(f, "owned by uid {uid}, we are uid {ours}"),
            Refusal::Mode { mode } => write!(f, "mode {mode:04o}, want 0600"),
            Refusal::Size { len, want } => write!(f, "{len} bytes, want {want}"),
        }
    }
}

/// Check a segment file received from a peer before mapping it: a sealed memfd (so it cannot
/// shrink under the mapping), owned by us, mode `0600`, exactly `want` bytes long. The seals
/// are checked before the size, so the size cannot change between the check and the mapping.
pub(crate) fn check_received(file: &File, want: u64) -> io::Result<Result<(), Refusal>> {
    let meta = file.metadata()?;
    if !meta.file_type().is_file() {
        return Ok(Err(Refusal::NotRegular));
    }
    match seals(file) {
        Ok(s) if s & SEALS == SEALS => {}
        Ok(s) => return Ok(Err(Refusal::NotSealed { seals: Some(s) })),
        Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {
            return Ok(Err(Refusal::NotSealed { seals: None }));
        }
        Err(e) => return Err(e),
    }
    let ours = super::euid();
    if meta.uid() != ours {
        return Ok(Err(Refusal::Owner { uid: meta.uid(), ours }));
    }
    let mode = meta.mode() & 0o7777;
    if mode != 0o600 {
        return Ok(Err(Refusal::Mode { mode }));
    }
    // Sealed against shrinking and growing above, so this size is the size for good.
    let len = file.metadata()?.len();
    if len != want {
        return Ok(Err(Refusal::Size { len, want }));
    }
    Ok(Ok(()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fresh_memfd_passes_the_checks_and_cannot_shrink() {
        let f = create("gloo-shm-test", 8192).unwrap();
        assert_eq!(check_received(&f, 8192).unwrap(), Ok(()));
        assert_eq!(check_received(&f, 4096).unwrap(), Err(Refusal::Size { len: 8192, want: 4096 }));
        assert!(f.set_len(4096).is_err(), "the shrink seal must refuse truncation");
        assert!(f.set_len(16384).is_err(), "the grow seal must refuse growth");
    }

    #[test]
    fn an_unsealed_or_loose_file_is_refused() {
        let dir = tempfile_dir();
        let path = dir.join("plain");
        let f = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&path)
            .unwrap();
        f.set_len(4096).unwrap();
        assert_eq!(check_received(&f, 4096).unwrap(), Err(Refusal::NotSealed { seals: None }));
        std::fs::remove_dir_all(dir).unwrap();

        let m = create("gloo-shm-test", 4096).unwrap();
        m.set_permissions(std::fs::Permissions::from_mode(0o644)).unwrap();
        assert_eq!(check_received(&m, 4096).unwrap(), Err(Refusal::Mode { mode: 0o644 }));
    }

    fn tempfile_dir() -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!(
            "gloo-shm-memfd-{}-{:?}",
            std::process::id(),
            std::thread::current().id()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }
}
