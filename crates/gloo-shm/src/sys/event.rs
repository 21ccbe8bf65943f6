//! The doorbell a sleeping rank is woken through (an `eventfd`), and `poll`.
//!
//! An eventfd rather than a futex on a word of the mapping: it is a descriptor, so one
//! `poll` (or a mio registry, next to TCP sockets) waits on every peer's doorbell and every
//! peer's socket hang-up at once, and a peer that dies while we sleep wakes us through the
//! socket. The ring keeps the fast path free of system calls: a doorbell is rung only when
//! the shared "sleeping" flag says its owner went to sleep.

use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd};
use std::time::Duration;

use super::check;

/// A new non-blocking, close-on-exec eventfd.
pub(crate) fn eventfd() -> io::Result<File> {
    // SAFETY: eventfd takes plain integer arguments and returns a new descriptor or -1.
    let fd = check(unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) })?;
    // SAFETY: `fd` was just returned by eventfd, so it is open and owned by nobody else.
    Ok(unsafe { File::from_raw_fd(fd) })
}

/// Add one to an eventfd's counter, waking whoever polls it. A full counter (`WouldBlock`)
/// already means "wake up", so it is not an error.
pub(crate) fn ring(bell: &File) -> io::Result<()> {
    match (&*bell).write(&1u64.to_ne_bytes()) {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(()),
        Err(e) => Err(e),
    }
}

/// Reset an eventfd's counter (non-blocking; nothing to read is fine).
pub(crate) fn drain(bell: &File) {
    let mut buf = [0u8; 8];
    // WouldBlock (already zero) and any other error leave nothing to do: the doorbell only
    // shortens a sleep that is bounded anyway.
    let _ = (&*bell).read(&mut buf);
}

/// What `poll` saw on one descriptor.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Revents {
    /// Readable (a doorbell rang, or socket data).
    pub(crate) readable: bool,
    /// Hung up or in error (a socket whose peer is gone).
    pub(crate) hangup: bool,
}

/// What to wait for on one descriptor.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Watch {
    /// Readable (a doorbell) or hung up.
    Readable,
    /// Only hung up: a socket whose data we do not want woken by (a peer that writes to it
    /// must not turn our sleep into a busy loop), but whose end we must see.
    HangUp,
}

/// Wait until one of `fds` shows what it is watched for, or `timeout` passes (`None`: no
/// limit). `EINTR` counts as a timeout of zero (the caller re-checks its state and loops).
pub(crate) fn poll(
    fds: &[(BorrowedFd<'_>, Watch)],
    timeout: Option<Duration>,
    out: &mut Vec<Revents>,
) -> io::Result<()> {
    let mut pfds: Vec<libc::pollfd> = fds
        .iter()
        .map(|(fd, watch)| libc::pollfd {
            fd: fd.as_raw_fd(),
            events: match watch {
                Watch::Readable => libc::POLLIN | libc::POLLRDHUP,
                Watch::HangUp => libc::POLLRDHUP,
            },
            revents: 0,
        })
        .collect();
    // Round up, so a sub-millisecond timeout still sleeps instead of spinning on poll.
    let ms = match timeout {
        None => -1,
        Some(t) => t.as_micros().div_ceil(1000).min(i32::MAX as u128) as libc::c_int,
    };
    // SAFETY: `pfds` is a valid array of `pfds.len()` pollfds for the duration of the call;
    // the descriptors are borrowed, so open.
    let ret = unsafe { libc::poll(pfds.as_mut_ptr(), pfds.len() as libc::nfds_t, ms) };
    out.clear();
    if ret < 0 {
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
    out.extend(pfds.iter().map(|p| Revents {
        readable: p.revents & libc::POLLIN != 0,
        hangup: p.revents & (libc::POLLHUP | libc::POLLRDHUP | libc::POLLERR | libc::POLLNVAL) != 0,
    }));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsFd;
    use std::os::unix::net::UnixStream;

    #[test]
    fn a_rung_doorbell_wakes_poll_and_a_closed_socket_hangs_up() {
        let bell = eventfd().unwrap();
        let (a, b) = UnixStream::pair().unwrap();
        let mut out = Vec::new();
        let fds = [(bell.as_fd(), Watch::Readable), (a.as_fd(), Watch::HangUp)];
        poll(&fds, Some(Duration::from_millis(1)), &mut out).unwrap();
        assert_eq!(out, vec![Revents::default(); 2]);
        // Data on a socket watched only for hang-up does not end the wait.
        std::io::Write::write_all(&mut &b, b"noise").unwrap();
        poll(&fds, Some(Duration::from_millis(1)), &mut out).unwrap();
        assert_eq!(out, vec![Revents::default(); 2]);
        ring(&bell).unwrap();
        poll(&fds, Some(Duration::from_secs(10)), &mut out).unwrap();
        assert!(out[0].readable && !out[1].hangup);
        drain(&bell);
        drop(b);
        poll(&fds, Some(Duration::from_secs(10)), &mut out).unwrap();
        assert!(!out[0].readable && out[1].hangup);
    }
}
