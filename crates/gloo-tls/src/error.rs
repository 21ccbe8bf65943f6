//! The crate's error type.

use std::fmt;
use std::path::PathBuf;

/// A result with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What can go wrong setting TLS up (errors on a live connection are `std::io::Error`s of the
/// stream, which the transport turns into its own typed errors naming the peer).
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Error {
    /// A file could not be read (or, for the minting command, written).
    File {
        /// The file.
        path: PathBuf,
        /// What failed.
        detail: String,
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
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::File { path, detail } => write!(f, "{}: {detail}", path.display()),
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

impl std::error::Error for Error {}
