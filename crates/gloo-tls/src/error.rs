//! The crate's error type.

use std::fmt;
use std::io;
use std::path::PathBuf;
use std::sync::Arc;

/// A result with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What can go wrong setting TLS up (errors on a live connection are `std::io::Error`s of the
/// stream, which the transport turns into its own typed errors naming the peer).
///
/// A [`File`](Error::File) error keeps the operating system's `io::Error` (shared, so the
/// error stays `Clone`) as its [`source`](std::error::Error::source); its `Display` names the
/// file and what was being done, not the `io::Error`'s text, so a reporter that walks the
/// chain prints each message once. Equality compares the `io::Error`s as
/// [`gloo_transport::io_errors_match`] does.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub enum Error {
    /// A file could not be read (or, for the minting command, written).
    File {
        /// The file.
        path: PathBuf,
        /// What was being done with it ("cannot read", ...), without `source`'s text.
        doing: String,
        /// The error itself.
        source: Arc<io::Error>,
    },
    /// A private key file that users other than its owner may read.
    KeyPermissions {
        /// The key file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// A certificate, key or CA is unusable, or does not name what this process is.
    Config {
        /// What was wrong and how to fix it.
        detail: String,
    },
}

impl Error {
    pub(crate) fn config(detail: impl Into<String>) -> Error {
        Error::Config { detail: detail.into() }
    }

    /// An [`Error::File`]: `doing` with `path` failed with `e`.
    pub(crate) fn file(path: &std::path::Path, doing: &str, e: io::Error) -> Error {
        Error::File { path: path.to_path_buf(), doing: doing.into(), source: Arc::new(e) }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::File { path, doing, .. } => write!(f, "{}: {doing}", path.display()),
            Error::KeyPermissions { path, mode } => write!(
                f,
                "the private key file {} is readable by group or others (mode {mode:04o}); a \
                 key others can read is no longer this rank's alone: run `chmod 600 {}`",
                path.display(),
                path.display()
            ),
            Error::Config { detail } => f.write_str(detail),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::File { source, .. } => Some(&**source),
            _ => None,
        }
    }
}

/// Field by field, with the `io::Error` of an [`Error::File`] compared by
/// [`gloo_transport::io_errors_match`].
impl PartialEq for Error {
    fn eq(&self, other: &Error) -> bool {
        use Error::*;
        // One arm per variant of `self` (no wildcard), so a new variant cannot be left out.
        match self {
            File { path, doing, source } => matches!(other,
                File { path: p, doing: d, source: s }
                    if (path, doing) == (p, d) && gloo_transport::io_errors_match(source, s)),
            KeyPermissions { path, mode } => matches!(other,
                KeyPermissions { path: p, mode: m } if (path, mode) == (p, m)),
            Config { detail } => matches!(other, Config { detail: d } if detail == d),
        }
    }
}

impl Eq for Error {}
