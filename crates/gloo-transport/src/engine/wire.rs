//! The two traits a transport implements: [`Link`] (bytes to and from one peer) and [`Wire`]
//! (readiness, one thread's sleep, and waking it).

use std::io::{self, IoSlice};
use std::time::{Duration, Instant};

use super::Engine;
use crate::{Error, Rank};

/// The byte movement to and from one peer: an ordered, reliable byte stream each way.
///
/// The [engine](super) speaks the wire protocol over this and nothing else. Every method is
/// non-blocking; the engine calls them only with its lock held, from whichever thread is
/// driving the communicator, never two at once for one link.
///
/// # The contract
///
/// - **Ordering and reliability.** The bytes [`read`](Link::read) returns on one side are
///   exactly the bytes the other side's [`write_vectored`](Link::write_vectored) accepted,
///   in the same order, with nothing lost, duplicated or altered, until the link closes. A
///   link need not keep message boundaries: any split of the stream into reads is allowed
///   (the engine reassembles frames from arbitrary pieces).
/// - **Non-blocking.** `read` and `write_vectored` return `Err(WouldBlock)` when nothing can
///   move now; `Interrupted` is retried. Neither may block.
/// - **What "readable" means.** After a read returned `WouldBlock` (or, when
///   [`drains_on_short_io`](Link::drains_on_short_io) is true, fewer bytes than asked), the
///   engine does not read that link again until its [`Wire`] reports it readable from
///   [`Wire::note_ready`] (or the caller busy-polls). So a wire must report a link readable,
///   and end a [`Sleeper::sleep`] early, whenever bytes arrive on it, its peer closes it, or
///   it fails; a spurious report costs one read. When it learns of a close or a failure
///   (epoll's `EPOLLRDHUP`, `EPOLLERR`), it also says so with
///   [`Engine::set_closed`]: the close may have come with the last data, and then the short
///   read of that data must not use the readiness up. The same holds for "writable" after a
///   write returned `WouldBlock` or a short count.
/// - **A closed peer.** `read` returning `Ok(0)` is the end of the stream: the peer closed its
///   side after everything it wrote was read. The engine takes that for a clean close when
///   the peer said goodbye first, and for a lost peer (which poisons the group) otherwise. Any
///   other error from `read` or `write_vectored`, and `Ok(0)` from a write of a non-empty
///   buffer, is a broken link: the peer is lost. A link whose peer died must report it
///   within bounded time (an error or end of stream); a peer that is only silent is caught
///   by the engine's heartbeats.
/// - **Typed errors.** A link that knows more than an `io::ErrorKind` may carry a
///   [`crate::Error`] naming its peer inside the `io::Error` (`io::Error::new(kind, error)`).
///   [`Protocol`](crate::Error::Protocol) and [`Auth`](crate::Error::Auth) then keep their
///   scope, that peer only (a peer that scribbled on a shared ring breaks its own link, not
///   the group), and a [`PeerLost`](crate::Error::PeerLost) keeps the link's reason; any
///   other error, or one naming another rank, is a lost peer as above.
/// - **A peer that broke the link's own protocol.** A link that checks its peer's bytes
///   itself (TLS: records, certificates) says why it refuses them by the kind of an error it
///   makes itself (not an operating-system error): `InvalidData` is the peer breaking the
///   link's protocol (forged or truncated records), [`Error::Protocol`](crate::Error) for that
///   peer, as garbage frames are; `PermissionDenied` is a peer that failed the link's
///   authentication, [`Error::Auth`](crate::Error). Either closes that peer's link and fails
///   what depends on it without poisoning the group. Every other error is a broken link.
/// - **No borrowed memory kept.** A write copies (or sends) the bytes it accepts before it
///   returns; the slices passed in are the caller's buffers and are gone afterwards.
///
/// A link is closed by dropping it (the engine hands it back to [`Wire::closed`] first).
pub trait Link: Send + 'static {
    /// Read into `buf`; `Ok(0)` is the end of the stream, `WouldBlock` means nothing now.
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize>;

    /// Write a prefix of the concatenation of `bufs`; `WouldBlock` means no room now.
    fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize>;

    /// Whether a read or write that moved fewer bytes than asked means the readiness was
    /// used up (true of a plain socket under edge-triggered epoll: the next change raises a
    /// new event). Then the engine skips the extra call that would only return
    /// `WouldBlock`. A link that buffers (TLS) returns `false`, the default.
    fn drains_on_short_io(&self) -> bool {
        false
    }

    /// Whether the link holds output of its own not yet sent (TLS records).
    fn has_pending_output(&self) -> bool {
        false
    }

    /// Push such output on: `Ok` once all of it is sent, `WouldBlock` when there is no room
    /// for the rest.
    fn flush_pending(&mut self) -> io::Result<()> {
        Ok(())
    }

    /// Whether bytes from the peer are waiting to be read. Liveness asks before declaring a
    /// silent peer lost: bytes this side has not read yet (because its process was
    /// descheduled between its last read and the check) prove the peer alive. The default,
    /// `false`, proves nothing.
    fn input_waiting(&self) -> bool {
        false
    }
}

/// What one thread at a time sleeps in while a communicator waits: an epoll instance, a
/// condition variable, a futex word.
pub trait Sleeper: Send + 'static {
    /// Sleep until a link may have become readable or writable, the [`Waker`] is woken, or
    /// `timeout` passes, whichever comes first. Returning early is always allowed (it costs a
    /// look at the links); sleeping past an event that happened before the call is not: a
    /// wake-up or readiness that came while nobody slept must end the next sleep at once.
    fn sleep(&mut self, timeout: Duration) -> io::Result<()>;
}

/// Ends a [`Sleeper::sleep`] from another thread.
pub trait Waker: Send + Sync + 'static {
    /// Wake the sleeping thread (or make the next sleep return at once).
    fn wake(&self);
}

/// A transport's side of one communicator: where its links' readiness comes from, what one
/// waiting thread sleeps in, and what wakes it. It lives under the communicator's lock
/// beside the [`Engine`], which calls the hooks below; only [`note_ready`](Wire::note_ready)
/// must be written, the rest have defaults that do nothing.
pub trait Wire: Send + 'static {
    /// The per-peer byte stream.
    type Link: Link;
    /// What a waiting thread sleeps in.
    type Sleeper: Sleeper;
    /// What wakes it.
    type Waker: Waker;

    /// A short name for thread names and logs (`"tcp"`, `"loopback"`).
    const NAME: &'static str;

    /// After `sleeper` returned from a sleep: mark the peers whose links may be readable or
    /// writable now ([`Engine::set_ready`], or [`Engine::set_all_ready`] when the wire cannot
    /// tell which).
    fn note_ready(&mut self, sleeper: &mut Self::Sleeper, engine: &mut Engine<Self::Link>);

    /// The wire's own work, run at the start of every pump (a lazy transport's handshakes:
    /// attach each link with [`Engine::attach`] once it is ready). `force` asks for every
    /// piece of work to be tried, readiness or not. Returns whether anything changed.
    fn drive(&mut self, engine: &mut Engine<Self::Link>, force: bool, now: Instant) -> bool {
        let _ = (engine, force, now);
        false
    }

    /// An operation was posted for `peer`, which has no link yet: start connecting.
    fn want(&mut self, peer: Rank) {
        let _ = peer;
    }

    /// The engine closed the link to `peer` (it failed, broke the protocol, or a cancel broke
    /// the pair); it is dropped after this returns.
    fn closed(&mut self, peer: Rank, link: Self::Link) {
        let _ = (peer, link);
    }

    /// Whether a send of `len` bytes to `to` must use the rendezvous path even though it could
    /// go eagerly (a test transport's way to shake out algorithms that rely on buffered
    /// sends). The default, `false`, leaves the choice to the engine.
    fn rendezvous(&mut self, to: Rank, len: usize) -> bool {
        let _ = (to, len);
        false
    }

    /// How often the background thread must run [`drive`](Wire::drive) between liveness
    /// ticks while no caller is inside `progress` (a lazy transport accepts connections
    /// then); `None`, the default, leaves it to the ticks.
    fn background_nap(&self) -> Option<Duration> {
        None
    }
}

/// The engine's error for a link error `e` met while `doing` something with `peer`, when
/// the link made it to refuse the peer's bytes (see [`Link`]'s contract): `InvalidData` is a
/// [`Protocol`](Error::Protocol) error, `PermissionDenied` an [`Auth`](Error::Auth) error.
/// `None` for anything else, operating-system errors of those kinds included (`EPERM` from a
/// firewall says nothing about the peer).
pub(crate) fn refusal(peer: Option<Rank>, doing: &str, e: &io::Error) -> Option<Error> {
    if e.raw_os_error().is_some() {
        return None;
    }
    let detail = format!("{doing}: {e}");
    match e.kind() {
        io::ErrorKind::InvalidData => Some(Error::Protocol { peer, detail }),
        io::ErrorKind::PermissionDenied => Some(Error::Auth { peer, detail }),
        _ => None,
    }
}

/// A boxed link is a link: a transport whose peers use different kinds of links (shared
/// memory to some, sockets to others) attaches them as `Box<dyn Link>`.
impl Link for Box<dyn Link> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        (**self).read(buf)
    }

    fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        (**self).write_vectored(bufs)
    }

    fn drains_on_short_io(&self) -> bool {
        (**self).drains_on_short_io()
    }

    fn has_pending_output(&self) -> bool {
        (**self).has_pending_output()
    }

    fn flush_pending(&mut self) -> io::Result<()> {
        (**self).flush_pending()
    }

    fn input_waiting(&self) -> bool {
        (**self).input_waiting()
    }
}
