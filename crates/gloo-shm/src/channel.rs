//! One end of a pair's bidirectional byte channel.
#![forbid(unsafe_code)]

use std::fs::File;
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::net::UnixStream;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use gloo_transport::Rank;

use crate::config::ShmConfig;
use crate::error::{Error, Result};
use crate::monitor::Watched;
use crate::ring::{Consumer, Producer, RingError, sleep};
use crate::segment::{MappedRing, Segment, SideWords};
use crate::sys::cma::{self, Remote};
use crate::sys::event::{self, Watch};

/// What a wait waits for on one channel.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Interest {
    /// Bytes to read (or the peer's close or loss, which `read` reports).
    pub read: bool,
    /// Room to write (or the peer's loss, which `write` reports).
    pub write: bool,
}

impl Interest {
    /// Readable.
    pub const READ: Interest = Interest { read: true, write: false };
    /// Writable.
    pub const WRITE: Interest = Interest { read: false, write: true };
    /// Either.
    pub const BOTH: Interest = Interest { read: true, write: true };
}

/// A lend out on our producer: the range and how much of it `write` has reported taken.
#[derive(Debug)]
struct LendOut {
    addr: u64,
    len: u64,
    reported: u64,
}

/// One end of a connected pair: a non-blocking, ordered, reliable byte stream each way
/// through two rings in a shared segment, made by [`ShmListener`](crate::ShmListener).
///
/// - [`Channel::write`] copies what fits into the outgoing ring (never blocks); inside
///   [`lending`](crate::lending) large writes may instead lend their bytes for the peer to
///   copy itself (single copy).
/// - [`Channel::read`] copies out what is there (never blocks); `Ok(0)` for a non-empty
///   buffer means "nothing yet". Bytes the peer wrote before it closed or died are still
///   read; after them comes [`Error::Closed`] (a clean close) or [`Error::PeerLost`].
/// - [`Channel::ready`] says whether a read or write would make progress, and
///   [`wait`](crate::wait) spins, yields, then sleeps until one would, for any set of
///   channels; [`Channel::prepare_sleep`] and the descriptors let an outside poller do the
///   sleeping instead.
///
/// A peer that breaks the protocol (stores an impossible index, a bad lend) fails the
/// channel with [`Error::Protocol`]; the error is sticky.
#[derive(Debug)]
pub struct Channel {
    me: Rank,
    peer: Rank,
    peer_pid: u32,
    tx: Producer<MappedRing>,
    rx: Consumer<MappedRing>,
    mine: SideWords,
    theirs: SideWords,
    /// The set-up socket, kept open: its hang-up is our death signal to the peer.
    sock: UnixStream,
    /// The peer's doorbell.
    peer_bell: File,
    /// Ours (shared by every channel of one listener).
    bell: Arc<File>,
    watch: Arc<Watched>,
    /// We may lend: the peer proved at set-up that it can read our memory.
    can_lend: bool,
    /// We may take the peer's lends: we proved we can read its memory.
    can_pull: bool,
    lend_min: usize,
    out: Option<LendOut>,
    /// Bytes of an ended lend the peer took beyond what `write` reported: the next write
    /// reports them first (they are the leading bytes of what it is offered again).
    pending: u64,
    pub(crate) spin: Duration,
    pub(crate) yield_for: Duration,
    pub(crate) slice: Duration,
    failed: Option<Error>,
    closed: bool,
    /// Our private copy of our "sleeping" word (see [`sleep`]).
    sleeps: Arc<std::sync::Mutex<u64>>,
    /// The peer's last sleep we rang its doorbell for.
    rung: u64,
    /// Our side of the segment: 0 for the acceptor, 1 for the dialer.
    #[cfg_attr(not(feature = "rogue"), allow(dead_code))]
    side: usize,
    _segment: Segment,
}

/// What set-up hands to [`Channel::new`].
pub(crate) struct Parts {
    pub(crate) peer: Rank,
    pub(crate) peer_pid: u32,
    pub(crate) segment: Segment,
    /// Our side: 0 for the acceptor (lower rank, the segment's creator), 1 for the dialer.
    pub(crate) side: usize,
    pub(crate) sock: UnixStream,
    pub(crate) peer_bell: File,
    pub(crate) bell: Arc<File>,
    pub(crate) can_lend: bool,
    pub(crate) can_pull: bool,
}

impl Channel {
    pub(crate) fn new(config: &ShmConfig, p: Parts) -> std::io::Result<Channel> {
        let side = p.side;
        let mine = p.segment.side(side);
        let theirs = p.segment.side(1 - side);
        let watch = Watched::new(
            p.peer_pid,
            mine.clone(),
            theirs.clone(),
            p.sock.try_clone()?,
            config.peer_timeout,
            p.bell.clone(),
        );
        crate::monitor::register(&watch);
        Ok(Channel {
            me: config.rank,
            peer: p.peer,
            peer_pid: p.peer_pid,
            tx: Producer::new(p.segment.ring(side)),
            rx: Consumer::new(p.segment.ring(1 - side)),
            mine,
            theirs,
            sock: p.sock,
            peer_bell: p.peer_bell,
            bell: p.bell,
            watch,
            can_lend: p.can_lend,
            can_pull: p.can_pull,
            lend_min: config.lend_min,
            out: None,
            pending: 0,
            spin: config.spin,
            yield_for: config.yield_for,
            slice: (config.peer_timeout / 4).min(Duration::from_millis(250)),
            failed: None,
            closed: false,
            sleeps: Arc::new(std::sync::Mutex::new(0)),
            rung: 0,
            side,
            _segment: p.segment,
        })
    }

    /// This rank.
    pub fn rank(&self) -> Rank {
        self.me
    }

    /// The peer's rank.
    pub fn peer(&self) -> Rank {
        self.peer
    }

    /// The peer's process id, as the kernel reported it for the set-up socket.
    pub fn peer_pid(&self) -> u32 {
        self.peer_pid
    }

    /// Whether large writes inside [`lending`](crate::lending) go single-copy on this
    /// channel (the peer could read our memory at set-up).
    pub fn single_copy(&self) -> bool {
        self.can_lend
    }

    fn fail(&mut self, e: Error) -> Error {
        if self.failed.is_none() {
            self.failed = Some(e.clone());
        }
        e
    }

    fn protocol(&mut self, e: RingError) -> Error {
        let e = Error::Protocol { peer: Some(self.peer), detail: e.to_string() };
        self.fail(e)
    }

    /// A loss is not stored in `failed`: the monitor's mark is sticky already, and bytes the
    /// peer wrote before it died must still be readable.
    fn lost(&self, reason: String) -> Error {
        Error::PeerLost { peer: self.peer, reason }
    }

    /// Tell the peer something changed (bytes written or read, a lend taken or made): ring
    /// its doorbell if it said it sleeps (the handshake of [`sleep`]).
    fn notify(&mut self) {
        if sleep::must_ring(self.theirs.sleeping(), &mut self.rung) {
            // A failed ring only delays the peer to the end of its bounded sleep slice.
            let _ = event::ring(&self.peer_bell);
        }
    }

    /// Write a prefix of the concatenation of `bufs` into the outgoing ring; returns the bytes
    /// written, 0 when the ring is full. Errors: the peer is lost or closed (nobody will read
    /// them), a protocol breach, or this end was closed.
    pub fn write(&mut self, bufs: &[&[u8]]) -> Result<usize> {
        self.write_inner(bufs, false)
    }

    pub(crate) fn write_inner(&mut self, bufs: &[&[u8]], may_lend: bool) -> Result<usize> {
        if let Some(e) = &self.failed {
            return Err(e.clone());
        }
        if self.closed {
            return Err(Error::InvalidArgument {
                what: format!("write to rank {} after close", self.peer),
            });
        }
        // Bytes the peer already took count as written even if it closed or died since.
        if self.pending > 0 {
            let total: usize = bufs.iter().map(|b| b.len()).sum();
            let n = (self.pending as usize).min(total);
            self.pending -= n as u64;
            return Ok(n);
        }
        if let Some(out) = &self.out {
            let offered = bufs.iter().find(|b| !b.is_empty()).map(|b| b.as_ptr() as u64);
            if offered == Some(out.addr + out.reported) && may_lend {
                let n = self.lend_progress()?;
                if n > 0 {
                    return Ok(n);
                }
            } else {
                // Offered something else (or outside a lending scope): end the lend first.
                self.end_lend()?;
                return self.write_inner(bufs, may_lend);
            }
        }
        if let Some(reason) = self.watch.lost() {
            return Err(self.lost(reason));
        }
        if self.watch.peer_closed() {
            return Err(self.lost("it closed its end of the channel".into()));
        }
        if self.out.is_some() {
            return Ok(0);
        }
        if may_lend
            && self.can_lend
            && let Some(first) = bufs.iter().find(|b| !b.is_empty())
            && first.len() >= self.lend_min
            && self.tx.lend(first.as_ptr() as u64, first.len())
        {
            let len = first.len().min(crate::ring::MAX_LEND) as u64;
            self.out = Some(LendOut { addr: first.as_ptr() as u64, len, reported: 0 });
            self.notify();
            return self.lend_progress();
        }
        let n = self.tx.write(bufs).map_err(|e| self.protocol(e))?;
        if n > 0 {
            self.notify();
        }
        Ok(n)
    }

    /// Report what the peer took of the current lend since the last report; end the lend
    /// once all is taken.
    fn lend_progress(&mut self) -> Result<usize> {
        let taken = self.tx.lent_taken().map_err(|e| self.protocol(e))?;
        let out = self.out.as_mut().expect("called with a lend out");
        let n = taken - out.reported;
        out.reported = taken;
        if taken == out.len {
            self.end_lend()?;
        }
        Ok(n as usize)
    }

    /// End the lend out, if any: what the peer took beyond the reports becomes `pending`.
    pub(crate) fn end_lend(&mut self) -> Result<()> {
        let Some(out) = self.out.take() else { return Ok(()) };
        let taken = self.tx.end_lend().map_err(|e| self.protocol(e))?;
        self.pending += taken - out.reported.min(taken);
        Ok(())
    }

    /// Read available bytes into `buf`; returns the count, 0 when nothing is there yet (for a
    /// non-empty `buf`). Bytes written before the peer closed or died come first; then
    /// [`Error::Closed`] or [`Error::PeerLost`].
    pub fn read(&mut self, buf: &mut [u8]) -> Result<usize> {
        if let Some(e) = &self.failed {
            return Err(e.clone());
        }
        if buf.is_empty() {
            return Ok(0);
        }
        let n = self.rx.read(buf).map_err(|e| self.protocol(e))?;
        if n > 0 {
            self.notify();
            return Ok(n);
        }
        if self.can_pull {
            let n = self.pull(buf)?;
            if n > 0 {
                return Ok(n);
            }
        }
        // Nothing now: say why, if the peer is gone. Its flags are read before the ring is
        // checked again, so bytes it wrote before closing or dying are never lost.
        let closed = self.watch.peer_closed();
        let lost = self.watch.lost();
        if closed || lost.is_some() {
            let n = self.rx.read(buf).map_err(|e| self.protocol(e))?;
            if n > 0 {
                return Ok(n);
            }
            return Err(match lost {
                Some(reason) if !closed => self.lost(reason),
                _ => Error::Closed { peer: self.peer },
            });
        }
        Ok(0)
    }

    /// Copy from the peer's lend, if one waits at this point of the stream.
    fn pull(&mut self, buf: &mut [u8]) -> Result<usize> {
        // Claim in pieces of at most 4 MiB, so the lender sees progress while we copy.
        const PIECE: usize = 4 << 20;
        let Some(lent) = self.rx.lent().map_err(|e| self.protocol(e))? else {
            return Ok(0);
        };
        let n = (lent.remaining as usize).min(buf.len()).min(PIECE);
        match cma::read(self.peer_pid, lent.addr, &mut buf[..n]) {
            Remote::Copied(k) if k > 0 => {
                if self.rx.claim(lent, k as u64) {
                    self.notify();
                    Ok(k)
                } else {
                    Ok(0)
                }
            }
            Remote::Copied(_) | Remote::BadAddress => Err(self.fail(Error::Protocol {
                peer: Some(self.peer),
                detail: format!(
                    "lent {} bytes at {:#x}, which its process does not map",
                    lent.remaining, lent.addr
                ),
            })),
            Remote::Gone => Err(self.lost(format!("process {} exited", self.peer_pid))),
            Remote::Refused(e) | Remote::Failed(e) => Err(self.fail(Error::io(
                Some(self.peer),
                "reading a lend with process_vm_readv (the set-up probe had allowed it)",
                e,
            ))),
        }
    }

    /// [`Channel::read`] in the shape of a non-blocking `std::io::Read` (as a transport
    /// engine's link reads): `WouldBlock` for nothing yet, `Ok(0)` for the peer's clean
    /// close, and other errors as `io::Error`s that carry the typed [`Error`] (see its
    /// `From` conversion).
    pub fn read_io(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        match self.read(buf) {
            Ok(0) if !buf.is_empty() => Err(std::io::ErrorKind::WouldBlock.into()),
            Ok(n) => Ok(n),
            Err(Error::Closed { .. }) => Ok(0),
            Err(e) => Err(e.into()),
        }
    }

    /// [`Channel::write`] in the shape of a non-blocking `std::io::Write::write_vectored`:
    /// `WouldBlock` for no room. At most the first 16 slices are written from (a prefix, as
    /// the contract allows).
    pub fn write_io(&mut self, bufs: &[std::io::IoSlice<'_>]) -> std::io::Result<usize> {
        let mut slices: [&[u8]; 16] = [&[]; 16];
        let n = bufs.len().min(16);
        for (s, b) in slices.iter_mut().zip(bufs) {
            *s = b;
        }
        let want: usize = slices[..n].iter().map(|s| s.len()).sum();
        match self.write(&slices[..n]) {
            Ok(0) if want > 0 => Err(std::io::ErrorKind::WouldBlock.into()),
            Ok(k) => Ok(k),
            Err(e) => Err(e.into()),
        }
    }

    /// Whether bytes (or a lend) from the peer wait to be read, from the shared indices only
    /// (`&self`): a peer with unread bytes is alive (liveness asks this before declaring a
    /// silent peer lost). A scribbled index can make it say yes wrongly, never crash.
    pub fn input_waiting(&self) -> bool {
        use crate::ring::RingMem;
        let incoming = self._segment.ring(1 - self.side);
        incoming.tail().load(Ordering::Acquire) != self.rx.consumed()
            || (self.can_pull && incoming.lend_state().load(Ordering::Acquire) != 0)
    }

    /// Whether a read or write (as `interest` says) would make progress now: bytes or a lend
    /// to read, room to write or a lend taken, or an end to report (close, loss, a failure).
    pub fn ready(&mut self, interest: Interest) -> bool {
        if self.failed.is_some() || self.watch.lost().is_some() {
            return true;
        }
        if interest.read {
            match self.rx.available() {
                Ok(0) => {}
                Ok(_) | Err(_) => return true,
            }
            if self.can_pull && !matches!(self.rx.lent(), Ok(None)) {
                return true;
            }
            if self.watch.peer_closed() {
                return true;
            }
        }
        if interest.write {
            if self.pending > 0 || self.watch.peer_closed() {
                return true;
            }
            if let Some(out) = &self.out {
                if !matches!(self.tx.lent_taken(), Ok(t) if t == out.reported) {
                    return true;
                }
            } else if !matches!(self.tx.room(), Ok(0)) {
                return true;
            }
        }
        false
    }

    /// Before sleeping on [`Channel::doorbell`]: tell the peer to ring it, then check once
    /// more. Returns true if the channel is ready after all (do not sleep). Call
    /// [`Channel::after_sleep`] when awake.
    pub fn prepare_sleep(&mut self, interest: Interest) -> bool {
        let sleeps = self.sleeps.clone();
        let mut count = sleeps.lock().unwrap_or_else(|p| p.into_inner());
        sleep::announce(self.mine.sleeping(), &mut count);
        if self.ready(interest) {
            sleep::clear(self.mine.sleeping(), &mut count);
            return true;
        }
        false
    }

    /// After a sleep prepared with [`Channel::prepare_sleep`].
    pub fn after_sleep(&mut self) {
        let mut count = self.sleeps.lock().unwrap_or_else(|p| p.into_inner());
        sleep::clear(self.mine.sleeping(), &mut count);
    }

    /// A handle with which a sleeper that does not hold the channel (an engine's `Sleeper`,
    /// while the channel sits in its link table) announces a sleep and checks readiness.
    pub fn sleep_handle(&self) -> SleepHandle {
        SleepHandle {
            mine: self.mine.clone(),
            incoming: self._segment.ring(1 - self.side),
            outgoing: self._segment.ring(self.side),
            watch: self.watch.clone(),
            sleeps: self.sleeps.clone(),
            bell: self.bell.clone(),
            sock: self.sock.try_clone().ok().map(Arc::new),
        }
    }

    /// This process's doorbell (an eventfd, shared by the channels of one listener): readable
    /// when a peer rang it. Drain it with [`Channel::drain_doorbell`] after waking.
    pub fn doorbell(&self) -> BorrowedFd<'_> {
        self.bell.as_fd()
    }

    pub(crate) fn bell(&self) -> &Arc<File> {
        &self.bell
    }

    /// Reset the doorbell after a wake.
    pub fn drain_doorbell(&self) {
        event::drain(&self.bell);
    }

    /// The set-up socket: it hangs up (`POLLRDHUP`/`POLLHUP`) when the peer process dies.
    /// Watch it for hang-up only; the peer sends nothing on it after set-up.
    pub fn socket(&self) -> BorrowedFd<'_> {
        self.sock.as_fd()
    }

    /// Check the peer now: its socket (death) and what the liveness thread found (death,
    /// freeze). The same checks run in every sleep and on every liveness tick.
    pub fn check_peer(&mut self) -> Result<()> {
        if let Some(e) = &self.failed {
            return Err(e.clone());
        }
        let mut rev = Vec::new();
        if event::poll(&[(self.sock.as_fd(), Watch::HangUp)], Some(Duration::ZERO), &mut rev)
            .is_ok()
            && rev.first().is_some_and(|r| r.hangup)
            && !self.watch.peer_closed()
        {
            self.watch.mark_lost(self.watch.hangup_reason());
        }
        match self.watch.lost() {
            Some(reason) => Err(self.lost(reason)),
            None => Ok(()),
        }
    }

    /// Say goodbye: the peer reads what we wrote, then [`Error::Closed`]. Writing after this
    /// is an error; reading goes on. Dropping the channel closes it too.
    pub fn close(&mut self) {
        if !self.closed {
            // A lend must not outlive the borrow it came from; lending() ends them, so this
            // finds none unless a scope was left by a panic.
            let _ = self.end_lend();
            self.closed = true;
            self.mine.closed().store(1, Ordering::Release);
            self.notify();
        }
    }

    /// The segment, for the rogue view.
    #[cfg(feature = "rogue")]
    pub(crate) fn segment(&self) -> &Segment {
        &self._segment
    }

    #[cfg(feature = "rogue")]
    pub(crate) fn side(&self) -> usize {
        self.side
    }
}

impl Drop for Channel {
    fn drop(&mut self) {
        self.close();
    }
}

/// Run `f` with `channels` allowed to lend: a write of at least the configured size (256 KiB
/// by default) through [`Lending::write`] publishes the address of its bytes instead of copying
/// them, and the peer copies them straight into its own buffer with `process_vm_readv`. Every
/// lend is ended before this returns (also when `f` panics), so the peer never reads the bytes
/// after their borrow `'b` ends; the bytes it took before that are reported by later writes.
///
/// Channels whose peer cannot read our memory (the set-up probe failed: Yama, containers)
/// just copy through the ring.
pub fn lending<'b, R>(
    channels: &mut [&mut Channel],
    f: impl FnOnce(&mut Lending<'_, '_, 'b>) -> R,
) -> R {
    struct EndAll<'x, 'c>(&'x mut [&'c mut Channel]);
    impl Drop for EndAll<'_, '_> {
        fn drop(&mut self) {
            for ch in self.0.iter_mut() {
                // An error here (a peer that scribbled on the lend state) already failed the
                // channel, which reports it on its next call.
                let _ = ch.end_lend();
            }
        }
    }
    let guard = EndAll(channels);
    let mut lending = Lending { channels: &mut *guard.0, _bytes: std::marker::PhantomData };
    f(&mut lending)
}

/// The channels inside [`lending`]; `'b` is how long lent bytes stay borrowed.
pub struct Lending<'s, 'c, 'b> {
    channels: &'s mut [&'c mut Channel],
    _bytes: std::marker::PhantomData<fn(&'b ()) -> &'b ()>,
}

impl<'b> Lending<'_, '_, 'b> {
    // No `&mut Channel` is handed out: with one, a caller could swap a channel with a lend
    // out of the scope (`mem::swap`), and the lend would outlive the bytes it points at.

    /// [`Channel::read`] on channel `i`.
    pub fn read(&mut self, i: usize, buf: &mut [u8]) -> Result<usize> {
        self.channels[i].read(buf)
    }

    /// [`Channel::ready`] on channel `i`.
    pub fn ready(&mut self, i: usize, interest: Interest) -> bool {
        self.channels[i].ready(interest)
    }

    /// [`Channel::peer`] of channel `i`.
    pub fn peer(&self, i: usize) -> Rank {
        self.channels[i].peer()
    }

    /// The number of channels.
    pub fn len(&self) -> usize {
        self.channels.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.channels.is_empty()
    }

    /// Like [`Channel::write`] on channel `i`, but a large first buffer is lent rather than
    /// copied: the call returns how many of its leading bytes the peer has taken so far (0
    /// at first). Offer the rest again (the same bytes, at the same address) to go on; wait
    /// for [`Interest::WRITE`] in between. The peer may have taken more than the last report
    /// when the scope ends: the channel's next write (in a scope or not) reports those bytes
    /// first, so, as with any byte stream, offer the bytes not yet reported again.
    pub fn write(&mut self, i: usize, bufs: &[&'b [u8]]) -> Result<usize> {
        self.channels[i].write_inner(bufs, true)
    }

    /// [`wait`](crate::wait) on these channels.
    pub fn wait(&mut self, interests: &[Interest], deadline: Instant) -> Result<Option<usize>> {
        crate::wait::wait(self.channels, interests, deadline)
    }
}

/// What an outside sleeper needs of one channel: announce a sleep on it (then ring-or-check,
/// as [`Channel::prepare_sleep`]), clear it, and its descriptors. Cheap to clone; `Send` and
/// `Sync`. Its readiness check reads only the shared indices (it cannot see the channel's
/// private ones), so it may report ready spuriously, which costs one look at the channel,
/// never a missed wake.
#[derive(Clone, Debug)]
pub struct SleepHandle {
    mine: SideWords,
    incoming: MappedRing,
    outgoing: MappedRing,
    watch: Arc<Watched>,
    sleeps: Arc<std::sync::Mutex<u64>>,
    bell: Arc<File>,
    sock: Option<Arc<UnixStream>>,
}

impl SleepHandle {
    /// Mark this side sleeping on the channel, then check it: true means it may be ready
    /// (bytes or a lend to read, room to write, the peer closed or lost): do not sleep, and
    /// the mark is already cleared.
    pub fn prepare_sleep(&self, interest: Interest) -> bool {
        use crate::ring::RingMem;
        let mut count = self.sleeps.lock().unwrap_or_else(|p| p.into_inner());
        sleep::announce(self.mine.sleeping(), &mut count);
        let (tail_in, head_in) = (
            self.incoming.tail().load(Ordering::Acquire),
            self.incoming.head().load(Ordering::Relaxed),
        );
        let (tail_out, head_out) = (
            self.outgoing.tail().load(Ordering::Relaxed),
            self.outgoing.head().load(Ordering::Acquire),
        );
        let ready = self.watch.lost().is_some()
            || self.watch.peer_closed()
            || (interest.read
                && (tail_in != head_in || self.incoming.lend_state().load(Ordering::Acquire) != 0))
            || (interest.write
                && (tail_out.wrapping_sub(head_out) < self.outgoing.capacity() as u64
                    || self.outgoing.lend_state().load(Ordering::Acquire) != 0));
        if ready {
            sleep::clear(self.mine.sleeping(), &mut count);
        }
        ready
    }

    /// Clear the mark after the sleep.
    pub fn after_sleep(&self) {
        let mut count = self.sleeps.lock().unwrap_or_else(|p| p.into_inner());
        sleep::clear(self.mine.sleeping(), &mut count);
    }

    /// The doorbell to sleep on (readable when rung).
    pub fn doorbell(&self) -> BorrowedFd<'_> {
        self.bell.as_fd()
    }

    /// Ring our own doorbell: wakes this process's sleeper from another thread (an engine's
    /// `Waker`).
    pub fn wake(&self) {
        // A failed ring only leaves the sleeper to its bounded slice.
        let _ = event::ring(&self.bell);
    }

    /// Reset the doorbell after a wake.
    pub fn drain_doorbell(&self) {
        event::drain(&self.bell);
    }

    /// The set-up socket, to watch for hang-up (the peer's death).
    pub fn socket(&self) -> Option<BorrowedFd<'_>> {
        self.sock.as_ref().map(|s| s.as_fd())
    }

    /// Mark this side sleeping on the channel (the first half of [`prepare_sleep`]
    /// (SleepHandle::prepare_sleep)): from now on a peer that changes anything rings the
    /// doorbell, so a [`look`](SleepHandle::look) taken after this cannot miss a change.
    pub(crate) fn announce(&self) {
        let mut count = self.sleeps.lock().unwrap_or_else(|p| p.into_inner());
        sleep::announce(self.mine.sleeping(), &mut count);
    }

    /// The shared words a sleeper compares between looks (loads only; a peer that scribbles
    /// on them costs spurious wake-ups, never a missed one: every change it makes is a
    /// change).
    pub(crate) fn look(&self) -> Seen {
        use crate::ring::RingMem;
        Seen {
            tail_in: self.incoming.tail().load(Ordering::Acquire),
            lend_in: self.incoming.lend_state().load(Ordering::Acquire),
            head_out: self.outgoing.head().load(Ordering::Acquire),
            lend_out: self.outgoing.lend_state().load(Ordering::Acquire),
            end: self.watch.lost().is_some() || self.watch.peer_closed(),
        }
    }

    /// Check the set-up socket for a hang-up now (without waiting) and, if the peer did not
    /// close cleanly, mark the peer lost; returns whether it hung up.
    pub(crate) fn check_hangup(&self) -> bool {
        let Some(sock) = self.sock.as_ref() else { return false };
        let mut rev = Vec::new();
        let hung = event::poll(&[(sock.as_fd(), Watch::HangUp)], Some(Duration::ZERO), &mut rev)
            .is_ok()
            && rev.first().is_some_and(|r| r.hangup);
        if hung && !self.watch.peer_closed() {
            self.watch.mark_lost(self.watch.hangup_reason());
        }
        hung
    }
}

/// What a sleeper saw of a channel's shared words at one look. A sleeper reports a channel
/// ready only when something moved between two looks, as edge-triggered epoll reports a
/// socket: bytes left unread on purpose (they belong to a receive nobody drives now) do not
/// keep a sleeper awake.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Seen {
    /// Bytes the peer wrote to us.
    pub(crate) tail_in: u64,
    /// The peer's lend to us.
    pub(crate) lend_in: u64,
    /// Bytes the peer read of ours.
    pub(crate) head_out: u64,
    /// Our lend, as the peer took it.
    pub(crate) lend_out: u64,
    /// The peer closed or is lost.
    pub(crate) end: bool,
}

impl Seen {
    /// Whether there is news for a reader since `before`.
    pub(crate) fn readable_since(&self, before: &Seen) -> bool {
        self.tail_in != before.tail_in || self.lend_in != before.lend_in || self.end != before.end
    }

    /// Whether there is news for a writer since `before`.
    pub(crate) fn writable_since(&self, before: &Seen) -> bool {
        self.head_out != before.head_out
            || self.lend_out != before.lend_out
            || self.end != before.end
    }
}
