//! The engine's state machine: per-peer protocol state, the posted operations, and the bytes
//! between them and the links.
//!
//! Everything here runs under the communicator's lock, with non-blocking link calls only. A
//! caller of `progress` hands in its own operations (`Mine`): only those buffers are read or
//! written, and only during that call. Data for a receive posted by another thread "parks"
//! the link's read side until its owner comes to read the payload straight into its buffer.
//! Time comes in as an argument (`now`), so the liveness rules run without a clock.

use std::collections::VecDeque;

use crate::hash::Map;
use std::io::{self, IoSlice};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use super::Link;
use crate::proto::{
    ABORT_REASON_MAX, Body, CHECK_LEN, DATA_CHUNK, EAGER_CREDIT, EAGER_MAX, FrameReader,
    HEADER_LEN, Header, Incoming, Matcher, Message, Opcode, Outcome, PeerProto, Ranks, Step,
    check_block, crc32c, crc32c_append, encode_with_fp,
};
use crate::{Error, Fingerprint, Op, OpKind, OpState, Pending, Rank, Result, Slot};

/// Staging buffer for headers and small payloads, per peer.
const RBUF: usize = 64 * 1024;
/// The largest eager-message buffer a peer keeps for reuse: small messages are the ones
/// whose allocation would show, and two of these per peer bound what is kept.
const SPARE_EAGER_MAX: usize = 4096;
/// Payloads at least this long are read straight into the destination, past the staging.
const DIRECT_MIN: u64 = 4096;
/// The largest single read or write call.
const MAX_IO: u64 = 1 << 30;
/// How many bytes one pump reads from (or writes to) one peer before moving on. Without a
/// bound, a receiver slower than its sender stays inside one pump for a whole multi-GiB
/// message: the other peers wait, and so does the liveness tick between pumps, until the
/// sender takes the silent receiver for a dead one. 16 MiB is a few milliseconds here.
const PUMP_BUDGET: u64 = 16 << 20;
/// How many frames one pump takes from one peer before moving on to the next. A peer that
/// floods small frames (heartbeats, empty messages) gets this share of every pump and no
/// more, so the other pairs wait for at most this many of its frames per pump, not for
/// [`PUMP_BUDGET`] bytes of them (half a million heartbeats). Large payloads still move up
/// to the byte budget per pump.
const PUMP_FRAMES: u32 = 64;
/// How many pending operations a [`Error::Timeout`] lists.
const MAX_PENDING_LISTED: usize = 8;

/// Operation ids of different engines of one process never collide: each engine takes the
/// next block of 2^40 ids, so an operation handed to the wrong communicator is recognised as
/// foreign rather than confused with one of its own.
static ID_BLOCKS: AtomicU64 = AtomicU64::new(1);

/// How an engine behaves: its waiting strategy and its liveness timers.
///
/// ```
/// use gloo_transport::engine::EngineConfig;
/// use std::time::Duration;
/// let cfg = EngineConfig::default()
///     .busy_poll(Duration::from_micros(50))
///     .peer_timeout(Some(Duration::from_secs(10)));
/// assert_eq!(cfg.peer_timeout_value(), Some(Duration::from_secs(10)));
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EngineConfig {
    busy_poll: Duration,
    spin: Duration,
    peer_timeout: Option<Duration>,
    integrity: bool,
}

impl Default for EngineConfig {
    /// No busy polling; a peer heard from for nothing in 5 seconds is lost; no integrity
    /// check.
    fn default() -> EngineConfig {
        EngineConfig {
            busy_poll: Duration::ZERO,
            spin: Duration::ZERO,
            peer_timeout: Some(Duration::from_secs(5)),
            integrity: false,
        }
    }
}

impl EngineConfig {
    /// How long a waiting call keeps trying its links before it sleeps (yielding the CPU
    /// between tries). Spinning cuts small-message latency when every rank has a core.
    pub fn busy_poll(mut self, window: Duration) -> EngineConfig {
        self.busy_poll = window;
        self
    }

    /// How much of the busy-poll window, at its start, spins without giving the CPU away
    /// (the rest yields between tries). Spinning answers fastest when every rank has a core
    /// of its own; when ranks outnumber cores it steals the time slice the peer needs, so
    /// leave it at zero then (the default).
    pub fn spin(mut self, spin: Duration) -> EngineConfig {
        self.spin = spin;
        self
    }

    /// The spinning part of the busy-poll window.
    pub fn spin_value(&self) -> Duration {
        self.spin.min(self.busy_poll)
    }

    /// A peer heard from for nothing (not even a heartbeat) for this long is
    /// [`PeerLost`](Error::PeerLost); heartbeats go out every quarter of it (at most every
    /// second). `None` turns heartbeats and the liveness check off, for a transport whose
    /// links report a dead peer themselves (the in-process one).
    pub fn peer_timeout(mut self, timeout: Option<Duration>) -> EngineConfig {
        self.peer_timeout = timeout.map(|t| t.max(Duration::from_millis(1)));
        self
    }

    /// Check the integrity of every frame: each carries a CRC32C of its header and of its
    /// payload (the [check block](crate::proto::CHECK_LEN)), verified before the header is
    /// acted on and before the payload completes an operation, so bytes corrupted between
    /// the ranks (which TCP's 16-bit checksum can miss) fail the pair with
    /// [`Protocol`](Error::Protocol) naming the peer instead of returning wrong data.
    ///
    /// Every rank's engine must agree: a transport with a handshake (tcp) refuses a peer
    /// whose setting differs, naming both. Costs one CRC32C pass (hardware-accelerated,
    /// SSE 4.2 or ARMv8 `crc`) over every byte sent and received.
    pub fn integrity(mut self, on: bool) -> EngineConfig {
        self.integrity = on;
        self
    }

    /// Whether every frame is checked ([`integrity`](EngineConfig::integrity)).
    pub fn integrity_value(&self) -> bool {
        self.integrity
    }

    /// The busy-poll window.
    pub fn busy_poll_value(&self) -> Duration {
        self.busy_poll
    }

    /// The peer timeout.
    pub fn peer_timeout_value(&self) -> Option<Duration> {
        self.peer_timeout
    }

    /// The heartbeat interval and the liveness tick's period.
    pub(crate) fn timers(&self) -> (Option<Duration>, Duration) {
        match self.peer_timeout {
            Some(t) => {
                let hb = Duration::from_secs(1).min(t / 4);
                (Some(hb), (hb / 4).clamp(Duration::from_millis(5), Duration::from_millis(250)))
            }
            // No liveness: the tick only flushes what callers left queued.
            None => (None, Duration::from_millis(20)),
        }
    }
}

enum Rx {
    /// Between frames, or inside a header.
    Idle,
    /// Collecting an eager payload into an owned, credit-bounded buffer.
    Eager { slot: Slot, fp: Option<Fingerprint>, buf: Vec<u8> },
    /// Delivering `Data` payload of `xfer` at `offset` to `recv` (or discarding it).
    Data { xfer: u64, recv: Option<u64>, offset: u64 },
    /// Collecting an abort reason (at most 1 KiB).
    Abort { buf: Vec<u8> },
}

/// A `Data` frame whose header or payload is part-way out of the link, written from its
/// owner's buffer.
struct Active {
    send: u64,
    /// The header, then its check block on a connection that checks integrity.
    hdr: [u8; HEADER_LEN + CHECK_LEN],
    hdr_len: usize,
    hdr_sent: usize,
    pos: u64,
    left: u64,
}

struct Peer<L> {
    rank: Rank,
    link: Option<L>,
    proto: PeerProto,
    reader: FrameReader,
    /// Every frame to and from this peer carries a check block.
    integrity: bool,
    rbuf: Box<[u8]>,
    rs: usize,
    re: usize,
    rx: Rx,
    out: VecDeque<u8>,
    active: Option<Active>,
    /// Sends the peer cleared, in order, whose next `Data` frame is not yet started.
    cleared: Vec<u64>,
    /// Copies of small sends withdrawn after their `Rts` went out and before the peer's
    /// `Cts` came, by send id: the message goes from here when the peer asks for it.
    orphans: Map<u64, Vec<u8>>,
    /// The bytes held in `orphans` (at most [`EAGER_CREDIT`]).
    orphaned: u64,
    /// Buffers of eager messages delivered from this peer, kept (empty) for the next ones:
    /// no allocation per small message. Two, because the next call's message can arrive in
    /// the same read as the current one's, before that is delivered; at most
    /// [`SPARE_EAGER_MAX`] bytes of capacity each.
    spare: smallvec::SmallVec<[Vec<u8>; 2]>,
    readable: bool,
    writable: bool,
    /// The wire saw the peer close (or the link fail): an end of stream or an error waits
    /// behind the data, so a short read does not use the readiness up.
    hangup: bool,
    said_goodbye: bool,
    dead: Option<Error>,
    /// When the peer was last heard from, and last written to; moved only by [`stamp`],
    /// never back.
    last_heard: Instant,
    last_sent: Instant,
}

impl<L: Link> Peer<L> {
    /// A peer with no link yet: frames for it queue up until [`attach`](Peer::attach).
    fn unconnected(rank: Rank, integrity: bool, now: Instant) -> Peer<L> {
        Peer {
            rank,
            link: None,
            proto: PeerProto::new(rank),
            reader: if integrity {
                FrameReader::with_integrity(Some(rank))
            } else {
                FrameReader::new(Some(rank))
            },
            integrity,
            rbuf: Box::default(),
            rs: 0,
            re: 0,
            rx: Rx::Idle,
            out: VecDeque::new(),
            active: None,
            cleared: Vec::new(),
            orphans: Map::default(),
            orphaned: 0,
            spare: smallvec::SmallVec::new(),
            readable: true,
            writable: true,
            hangup: false,
            said_goodbye: false,
            dead: None,
            last_heard: now,
            last_sent: now,
        }
    }

    /// Keep `buf` (a delivered eager message's) for a next eager message, if it is small
    /// and there is room.
    fn keep_spare(&mut self, mut buf: Vec<u8>) {
        if self.spare.len() < self.spare.inline_size() && buf.capacity() <= SPARE_EAGER_MAX {
            buf.clear();
            self.spare.push(buf);
        }
    }

    /// An eager message of `len` bytes from this peer was delivered: return its credit when
    /// enough is due.
    fn eager_consumed(&mut self, len: u64) {
        if let Some(c) = self.proto.eager_consumed(len) {
            self.push(Header::new(Opcode::Credit, 0, 0, c), None, &[]);
        }
    }

    /// Collect the payload of an eager message into an owned buffer (bounded by
    /// [`EAGER_MAX`] and charged against the credit window), to be matched once whole.
    fn collect_eager(&mut self, slot: Slot, fp: Option<Fingerprint>, len: u64) {
        let mut buf = self.spare.pop().unwrap_or_default();
        buf.reserve_exact(len as usize);
        self.rx = Rx::Eager { slot, fp, buf };
    }

    /// Give the peer its link; `early` holds bytes already read from it.
    fn attach(&mut self, link: L, early: &[u8], now: Instant) {
        let mut rbuf = vec![0u8; RBUF.max(early.len())].into_boxed_slice();
        rbuf[..early.len()].copy_from_slice(early);
        self.rbuf = rbuf;
        self.rs = 0;
        self.re = early.len();
        self.link = Some(link);
        self.readable = true;
        self.writable = true;
        self.last_heard = now;
        self.last_sent = now;
    }

    /// Whether this peer has no link yet (and no failure).
    fn is_unconnected(&self) -> bool {
        self.link.is_none() && self.dead.is_none()
    }

    /// Send a frame at once when nothing is queued before it (no frame part-sent, none
    /// queued, nothing buffered in the link, the link writable) and it needs no check block
    /// (with integrity on, [`push`](Peer::push) computes it): straight from the caller's
    /// buffer into the link, without the copy into the queue and the pump that would write
    /// it out later. What the link does not take now is queued, as `push` queues it; an
    /// error is left for the pump to meet and report on its next write.
    fn send_now(&mut self, h: Header, fp: Option<&Fingerprint>, payload: &[u8], now: Instant) {
        let direct =
            self.out.is_empty() && self.active.is_none() && self.writable && !self.integrity;
        let Some(link) = self.link.as_mut().filter(|l| direct && !l.has_pending_output()) else {
            return self.push(h, fp, payload);
        };
        let mut b = [0u8; HEADER_LEN + Fingerprint::LEN];
        let n = encode_with_fp(h, fp, &mut b);
        let asked = n + payload.len();
        let sent = loop {
            match link.write_vectored(&[IoSlice::new(&b[..n]), IoSlice::new(payload)]) {
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Ok(k) if k > 0 => break k.min(asked),
                // Nothing taken (no room, or an error the pump will meet again).
                _ => break 0,
            }
        };
        let drains = link.drains_on_short_io();
        if sent > 0 {
            stamp(&mut self.last_sent, now);
        }
        if sent < asked {
            if sent > 0 && drains {
                self.writable = false;
            }
            let hdr_rest = &b[sent.min(n)..n];
            self.out.extend(hdr_rest);
            self.out.extend(&payload[sent.saturating_sub(n)..]);
        }
    }

    fn push(&mut self, h: Header, fp: Option<&Fingerprint>, payload: &[u8]) {
        let mut b = [0u8; HEADER_LEN + Fingerprint::LEN];
        let n = encode_with_fp(h, fp, &mut b);
        if self.integrity {
            // Header, check block, then the body (fingerprint and payload) it covers.
            let (head, fp) = b[..n].split_at(HEADER_LEN);
            let mut header = [0u8; HEADER_LEN];
            header.copy_from_slice(head);
            let body_crc = crc32c_append(crc32c(fp), payload);
            self.out.extend(header);
            self.out.extend(check_block(&header, body_crc));
            self.out.extend(fp);
        } else {
            self.out.extend(&b[..n]);
        }
        self.out.extend(payload);
    }

    /// Whether we are not reading this peer because the data in hand belongs to a receive
    /// whose owner is not inside `progress` (so nobody may write its buffer now).
    fn read_stalled(&self, active: &[u64]) -> bool {
        matches!(self.rx, Rx::Data { recv: Some(id), .. } if !active.contains(&id))
    }
}

enum SendSt {
    AwaitCts,
    /// Cleared; `next` is the offset of the next `Data` frame to start.
    Streaming {
        xfer: u64,
        next: u64,
    },
    /// An eager message queued for a peer that has no link yet: done once it has one.
    Queued,
    Done,
    Failed(Error),
}

enum RecvSt {
    Posted,
    Eager(Message),
    Transfer {
        peer: Rank,
        /// The transfer, for tests that look at its progress.
        #[cfg_attr(not(test), allow(dead_code))]
        xfer: u64,
    },
    Done {
        peer: Rank,
        len: u64,
    },
    Failed(Error),
}

enum Rec {
    Send { to: Rank, slot: Slot, len: u64, st: SendSt },
    Recv { from: Ranks, slot: Slot, cap: u64, fp: Option<Fingerprint>, len: u64, st: RecvSt },
}

/// What one pump may still take from one peer.
struct Budget {
    bytes: u64,
    frames: u32,
}

impl Budget {
    fn new() -> Budget {
        Budget { bytes: PUMP_BUDGET, frames: PUMP_FRAMES }
    }
}

/// The operations of the calling thread, whose buffers it may touch.
pub(crate) struct Mine<'s, 'b> {
    pub(crate) ops: &'s mut [Op<'b>],
}

impl Mine<'_, '_> {
    fn find(&self, id: u64) -> Option<usize> {
        self.ops.iter().position(|o| o.state() == OpState::Posted(id))
    }
}

fn recv_buf<'x>(op: &'x mut Op<'_>) -> &'x mut [u8] {
    match op.kind_mut() {
        OpKind::Recv { buf, .. } | OpKind::RecvAny { buf, .. } => buf,
        OpKind::Send { .. } => &mut [],
    }
}

fn send_buf<'x>(op: &'x Op<'_>) -> &'x [u8] {
    match op.kind() {
        OpKind::Send { buf, .. } => buf,
        _ => &[],
    }
}

/// The run of ids one caller added to [`Engine::mark_active`]'s list.
pub(crate) struct Marked {
    first: Option<u64>,
    len: usize,
}

/// What reading a peer produced that needs state beyond the peer.
enum RxEvent {
    Arrived(Message),
    /// An eager header whose whole payload is staged after it, not yet read by the frame
    /// reader: see [`Engine::deliver_staged`].
    Staged {
        slot: Slot,
        fp: Option<Fingerprint>,
        len: u64,
    },
    Cleared {
        send: u64,
        xfer: u64,
    },
    DataDone {
        recv: u64,
    },
    Aborted(String),
    /// Nothing more to do on this peer now.
    Stop,
}

/// The I/O-free core of a communicator: operations, matching per `(peer, slot)`,
/// receive-from-any, the fingerprint rules, framing, eager credit and rendezvous transfers,
/// cancellation, abort, the three error scopes and the liveness clock, over one [`Link`] per
/// peer.
///
/// [`EngineComm`](super::EngineComm) drives it and implements
/// [`Communicator`](crate::Communicator) on top; a transport meets it only in its
/// [`Wire`](super::Wire) hooks and when it builds the communicator, through the few public
/// methods below (attach a link, mark readiness, close a peer).
pub struct Engine<L> {
    me: Rank,
    peers: Vec<Option<Peer<L>>>,
    matcher: Matcher,
    recs: Map<u64, Rec>,
    next_id: u64,
    pub(crate) poison: Option<Error>,
    pub(crate) aborted: Option<Error>,
    /// Posted operations whose owners are inside `progress` right now, for the liveness
    /// tick. An owner marks them only when another thread could tick (before it first lets
    /// go of the lock) or when it ticks itself, so a call that never waits costs nothing.
    /// Each call's ids are one run (a list, not a set: a call adds and removes a run as
    /// cheaply as it pushes and truncates, and only the rare tick searches it).
    active: Vec<u64>,
    /// When [`tick_if_due`](Engine::tick_if_due) next runs the liveness tick.
    next_tick: Instant,
    pub(crate) cfg: EngineConfig,
    /// Heartbeat interval and peer timeout; `None` when liveness is off.
    liveness: Option<(Duration, Duration)>,
    /// The liveness tick's period.
    pub(crate) period: Duration,
    /// Peers an operation was posted for while they had no link, for [`Wire::want`].
    ///
    /// [`Wire::want`]: super::Wire::want
    pub(crate) wanted: Vec<Rank>,
    /// Links closed since the wire last looked, for [`Wire::closed`].
    ///
    /// [`Wire::closed`]: super::Wire::closed
    pub(crate) closed: Vec<(Rank, L)>,
    /// The matcher's outcomes for one arrival (kept to reuse its allocation).
    outcomes: Vec<Outcome>,
}

impl<L> std::fmt::Debug for Engine<L> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field("rank", &self.me)
            .field("size", &self.peers.len())
            .field("poison", &self.poison)
            .finish_non_exhaustive()
    }
}

impl<L: Link> Engine<L> {
    /// An engine for rank `me` of a group of `size`, with no link yet: attach one per peer
    /// with [`attach`](Engine::attach) (a lazy transport attaches them later, from
    /// [`Wire::drive`](super::Wire::drive); frames for a peer wait until it has one).
    pub fn new(me: Rank, size: u32, cfg: EngineConfig) -> Engine<L> {
        let now = Instant::now();
        let peers = (0..size)
            .map(|r| (Rank(r) != me).then(|| Peer::unconnected(Rank(r), cfg.integrity, now)))
            .collect();
        let (hb, period) = cfg.timers();
        let liveness = hb.zip(cfg.peer_timeout);
        Engine {
            me,
            peers,
            matcher: Matcher::new(),
            recs: Map::default(),
            next_id: ID_BLOCKS.fetch_add(1, Ordering::Relaxed) << 40,
            poison: None,
            aborted: None,
            active: Vec::new(),
            next_tick: now,
            cfg,
            liveness,
            period,
            wanted: Vec::new(),
            closed: Vec::new(),
            outcomes: Vec::new(),
        }
    }

    /// This engine's rank.
    pub fn rank(&self) -> Rank {
        self.me
    }

    /// The group's size.
    pub fn size(&self) -> u32 {
        self.peers.len() as u32
    }

    /// Give `peer` its link; `early` holds bytes already read from the link (past a
    /// handshake) that the protocol must see first, usually none. Frames queued for the peer
    /// while it had no link go out first, and eager sends queued for it complete. Ignored for
    /// a peer that already has a link or has failed, and for this rank itself.
    pub fn attach(&mut self, peer: Rank, link: L, early: &[u8]) {
        self.attach_at(peer, link, early, Instant::now());
    }

    pub(crate) fn attach_at(&mut self, peer: Rank, link: L, early: &[u8], now: Instant) {
        let Some(p) = self.peers.get_mut(peer.index()).and_then(Option::as_mut) else { return };
        if !p.is_unconnected() {
            return;
        }
        p.attach(link, early, now);
        // The eager messages queued for it count as sent, as they would on a linked peer.
        for rec in self.recs.values_mut() {
            if let Rec::Send { to, st, .. } = rec
                && *to == peer
                && matches!(st, SendSt::Queued)
            {
                *st = SendSt::Done;
            }
        }
    }

    /// Note that the link to `peer` may be readable and/or writable now (a wire calls this
    /// from [`Wire::note_ready`](super::Wire::note_ready)). Never clears readiness: the
    /// engine does that itself when a link says `WouldBlock`.
    pub fn set_ready(&mut self, peer: Rank, readable: bool, writable: bool) {
        if let Some(Some(p)) = self.peers.get_mut(peer.index()) {
            p.readable |= readable;
            p.writable |= writable;
        }
    }

    /// Note that the peer closed its side of the link to `peer`, or the link failed (epoll's
    /// `EPOLLRDHUP` or `EPOLLERR`): an end of stream or an error waits behind whatever data is
    /// there. The engine then reads that link until it sees it, even past a short read that
    /// would otherwise have used the readiness up ([`Link::drains_on_short_io`]): the close
    /// came with the data, and no new readiness will announce it.
    pub fn set_closed(&mut self, peer: Rank) {
        if let Some(Some(p)) = self.peers.get_mut(peer.index()) {
            p.readable = true;
            p.hangup = true;
        }
    }

    /// Note that every link may be readable and writable (for a wire that cannot tell which).
    pub fn set_all_ready(&mut self) {
        for p in self.peers.iter_mut().flatten() {
            p.readable = true;
            p.writable = true;
        }
    }

    /// Whether `peer` has neither a link nor a failure yet.
    pub fn is_unconnected(&self, peer: Rank) -> bool {
        self.peers.get(peer.index()).and_then(Option::as_ref).is_some_and(Peer::is_unconnected)
    }

    /// Whether the connection to `peer` has failed (operations with it fail).
    pub fn is_failed(&self, peer: Rank) -> bool {
        self.peers.get(peer.index()).and_then(Option::as_ref).is_some_and(|p| p.dead.is_some())
    }

    /// The fatal error of the group, if it has one.
    pub fn poisoned(&self) -> Option<&Error> {
        self.poison.as_ref()
    }

    /// Fail `peer`: close its link and fail every operation that depends on it with `error`.
    /// With `poison`, a [`PeerLost`](Error::PeerLost) or [`Aborted`](Error::Aborted) error
    /// also poisons the group (see the error scopes on
    /// [`Communicator`](crate::Communicator)); a wire uses this when it cannot reach a peer.
    pub fn close_peer(&mut self, peer: Rank, error: Error, poison: bool) {
        if self.peers.get(peer.index()).is_some_and(Option::is_some) {
            self.fail_peer(peer, error, poison);
        }
    }

    /// Record that the caller's posted operations are being driven; returns their ids for
    /// [`unmark_active`](Engine::unmark_active). Only the liveness tick reads the record,
    /// so a caller need only mark before a tick can run: before it lets go of the lock, or
    /// ticks itself.
    pub(crate) fn mark_active(&mut self, ops: &[Op<'_>]) -> Marked {
        let at = self.active.len();
        self.active.extend(ops.iter().filter_map(|op| match op.state() {
            OpState::Posted(id) => Some(id),
            _ => None,
        }));
        Marked { first: self.active.get(at).copied(), len: self.active.len() - at }
    }

    /// The caller stops driving the operations it marked.
    pub(crate) fn unmark_active(&mut self, m: Marked) {
        let Some(first) = m.first else { return };
        // Another caller's run may have left from before this one since: it is found by its
        // first id, nearly always at the end.
        if let Some(at) = self.active.iter().rposition(|id| *id == first) {
            self.active.drain(at..(at + m.len).min(self.active.len()));
        }
    }

    /// For busy polling: let the next pump try the links of the peers these operations wait
    /// on, without waiting for readiness.
    pub(crate) fn mark_ops_ready(&mut self, ops: &[Op<'_>]) {
        let touch = |r: Rank, peers: &mut Vec<Option<Peer<L>>>| {
            if let Some(Some(p)) = peers.get_mut(r.index()) {
                p.readable = true;
                p.writable = true;
            }
        };
        for op in ops {
            if op.is_done() {
                continue;
            }
            match op.kind() {
                OpKind::Send { to, .. } => touch(*to, &mut self.peers),
                OpKind::Recv { from, .. } => touch(*from, &mut self.peers),
                OpKind::RecvAny { from, .. } => {
                    for r in from.iter() {
                        touch(*r, &mut self.peers);
                    }
                }
            }
        }
    }

    /// Reject operations that cannot work, before anything is posted.
    pub(crate) fn validate(&self, ops: &[Op<'_>]) -> Result<()> {
        let size = self.peers.len() as u32;
        let check = |r: Rank| -> Result<()> {
            if r.0 >= size {
                Err(Error::invalid(format!("rank {r} is not in a group of size {size}")))
            } else if r == self.me {
                Err(Error::invalid(format!("rank {r} cannot send to or receive from itself")))
            } else {
                Ok(())
            }
        };
        for op in ops {
            match op.state() {
                OpState::New => {}
                OpState::Posted(id) if self.recs.contains_key(&id) => continue,
                OpState::Posted(id) => {
                    return Err(Error::invalid(format!(
                        "operation {id} is not posted on this communicator (cancelled?)"
                    )));
                }
                _ => continue,
            }
            match op.kind() {
                OpKind::Send { to, .. } => check(*to)?,
                OpKind::Recv { from, .. } => check(*from)?,
                OpKind::RecvAny { from, .. } => {
                    if from.is_empty() {
                        return Err(Error::invalid("recv_any from an empty set of ranks"));
                    }
                    for r in from.iter() {
                        check(*r)?;
                    }
                }
            }
        }
        Ok(())
    }

    /// Post a new operation; a send with `rendezvous` set skips the eager path. With
    /// `direct`, an eager send goes into an idle link at once ([`Peer::send_now`]); without,
    /// it is queued for the pump.
    pub(crate) fn post(&mut self, op: &mut Op<'_>, rendezvous: bool, direct: bool, now: Instant) {
        let id = self.next_id;
        self.next_id += 1;
        let fp = op.fingerprint();
        match op.kind() {
            OpKind::Send { to, slot, buf } => {
                let (to, slot, len) = (*to, *slot, buf.len() as u64);
                let peer = self.peers[to.index()].as_mut().expect("validated: a peer");
                let unconnected = peer.is_unconnected();
                if let Some(e) = &peer.dead {
                    let st = SendSt::Failed(e.clone());
                    self.recs.insert(id, Rec::Send { to, slot, len, st });
                } else if !rendezvous && peer.proto.try_eager(len) {
                    let h = Header::new(Opcode::Eager, slot.0, len, 0);
                    if direct {
                        peer.send_now(h, fp.as_ref(), buf, now);
                    } else {
                        peer.push(h, fp.as_ref(), buf);
                    }
                    if !unconnected {
                        op.set_state(OpState::Done { peer: to, len: buf.len() });
                        return;
                    }
                    // Not done before the peer is reached: a send to a rank that cannot be
                    // reached must fail, naming it, not vanish in a queue.
                    self.recs.insert(id, Rec::Send { to, slot, len, st: SendSt::Queued });
                } else {
                    let xfer = peer.proto.start_rts(id);
                    peer.push(Header::new(Opcode::Rts, slot.0, len, xfer), fp.as_ref(), &[]);
                    self.recs.insert(id, Rec::Send { to, slot, len, st: SendSt::AwaitCts });
                }
                if unconnected {
                    self.wanted.push(to);
                }
            }
            OpKind::Recv { .. } | OpKind::RecvAny { .. } => {
                // Inline for a few candidates: no allocation per posted receive.
                let (from, slot, cap): (Ranks, Slot, u64) = match op.kind() {
                    OpKind::Recv { from, slot, buf } => {
                        (smallvec::smallvec![*from], *slot, buf.len() as u64)
                    }
                    OpKind::RecvAny { from, slot, buf } => {
                        (Ranks::from_slice(from), *slot, buf.len() as u64)
                    }
                    OpKind::Send { .. } => unreachable!("matched above"),
                };
                let mut any_dead = false;
                for r in &from {
                    match self.peers[r.index()].as_ref() {
                        Some(p) if p.is_unconnected() => self.wanted.push(*r),
                        Some(p) => any_dead |= p.dead.is_some(),
                        None => {}
                    }
                }
                // Messages a peer sent before it left are still delivered, so the matcher
                // sees every candidate first.
                let o = self.matcher.post(id, &from, slot, cap, fp);
                let o = match o {
                    // A held eager message goes into the buffer in hand at once (the matcher
                    // checked its length against the buffer's).
                    Some(Outcome::Matched {
                        msg: Message { peer, body: Body::Eager(data), .. },
                        ..
                    }) => {
                        self.deliver_held(op, peer, data);
                        return;
                    }
                    o => o,
                };
                self.recs.insert(id, Rec::Recv { from, slot, cap, fp, len: 0, st: RecvSt::Posted });
                if let Some(o) = o {
                    self.apply(o);
                } else if any_dead {
                    self.narrow_to_live(id);
                }
            }
        }
        op.set_state(OpState::Posted(id));
    }

    /// A posted receive may only wait for live peers: drop the dead ones from its candidates
    /// (posting it again), or fail it when none is left. Called when a candidate may be dead
    /// (the post checks first, so that the common case costs no lookup).
    fn narrow_to_live(&mut self, id: u64) {
        let Some(Rec::Recv { from, slot, cap, fp, st, .. }) = self.recs.get_mut(&id) else {
            return;
        };
        let mut first_dead = None;
        let live: Vec<Rank> = from
            .iter()
            .copied()
            .filter(|r| match self.peers[r.index()].as_ref().and_then(|p| p.dead.as_ref()) {
                Some(e) => {
                    first_dead.get_or_insert_with(|| e.clone());
                    false
                }
                None => true,
            })
            .collect();
        let Some(e) = first_dead else { return };
        self.matcher.cancel(id);
        if live.is_empty() {
            *st = RecvSt::Failed(e);
        } else {
            // No held message matched at the first post, so this post cannot match either.
            let _ = self.matcher.post(id, &live, *slot, *cap, *fp);
        }
    }

    /// Act on a matching decision.
    fn apply(&mut self, o: Outcome) {
        match o {
            Outcome::Matched { recv, msg } => {
                let peer_rank = msg.peer;
                if let Some(Rec::Recv { len, .. }) = self.recs.get_mut(&recv) {
                    *len = msg.body.len();
                }
                let st = match msg.body {
                    Body::Eager(_) => RecvSt::Eager(msg),
                    Body::Rts { len, xfer } => {
                        let Some(peer) = self.peers[peer_rank.index()].as_mut() else { return };
                        if let Err(e) = peer.proto.clear(xfer, Some(recv), len) {
                            self.fail_peer(peer_rank, e, true);
                            return;
                        }
                        peer.push(Header::new(Opcode::Cts, msg.slot.0, 0, xfer), None, &[]);
                        if len == 0 {
                            RecvSt::Done { peer: peer_rank, len: 0 }
                        } else {
                            RecvSt::Transfer { peer: peer_rank, xfer }
                        }
                    }
                };
                if let Some(Rec::Recv { st: s, .. }) = self.recs.get_mut(&recv) {
                    *s = st;
                }
            }
            Outcome::Failed { recv, error, consumed } => {
                if let Some(Rec::Recv { st, .. }) = self.recs.get_mut(&recv) {
                    *st = RecvSt::Failed(error);
                }
                if let Some(m) = consumed {
                    self.discard(m);
                }
            }
        }
    }

    /// Drop a message nobody will receive, keeping the stream in step: return its eager
    /// credit, or accept its transfer into nowhere so the sender completes.
    fn discard(&mut self, m: Message) {
        let Some(peer) = self.peers[m.peer.index()].as_mut() else { return };
        match m.body {
            Body::Eager(v) => peer.eager_consumed(v.len() as u64),
            Body::Rts { len, xfer } => {
                if peer.dead.is_none() {
                    if let Err(e) = peer.proto.clear(xfer, None, len) {
                        self.fail_peer(m.peer, e, true);
                        return;
                    }
                    peer.push(Header::new(Opcode::Cts, m.slot.0, 0, xfer), None, &[]);
                }
            }
        }
    }

    /// Deliver the held eager message `data` from `peer` into `op`'s buffer, which holds it
    /// (the matcher checked its length at the post, and the reap checks again for a buffer
    /// swapped since): copy it, complete `op`, return the message's credit when due, and
    /// keep the buffer for the next one.
    fn deliver_held(&mut self, op: &mut Op<'_>, peer: Rank, data: Vec<u8>) {
        recv_buf(op)[..data.len()].copy_from_slice(&data);
        op.set_state(OpState::Done { peer, len: data.len() });
        if let Some(p) = self.peers[peer.index()].as_mut() {
            p.eager_consumed(data.len() as u64);
            p.keep_spare(data);
        }
    }

    /// Complete what can be completed among the caller's operations; withdraw the first that
    /// failed (its state becomes [`OpState::Cancelled`]) and return its error. Later failures
    /// stay posted, to be reported by the calls that drive them next.
    pub(crate) fn reap(&mut self, ops: &mut [Op<'_>]) -> Option<Error> {
        self.reap_inner(ops, true)
    }

    /// [`reap`](Engine::reap), withdrawing a failed operation only with `failures`; without,
    /// failures stay posted for the next call that drives them to report (and nothing is
    /// returned).
    fn reap_inner(&mut self, ops: &mut [Op<'_>], failures: bool) -> Option<Error> {
        let mut first_err = None;
        for op in ops.iter_mut() {
            let OpState::Posted(id) = op.state() else { continue };
            let Some(rec) = self.recs.get_mut(&id) else { continue };
            match rec {
                Rec::Send { to, len, st, .. } => match st {
                    SendSt::Done => {
                        op.set_state(OpState::Done { peer: *to, len: *len as usize });
                        self.recs.remove(&id);
                    }
                    SendSt::Failed(_) if failures && first_err.is_none() => {
                        let Some(Rec::Send { st: SendSt::Failed(e), .. }) = self.recs.remove(&id)
                        else {
                            unreachable!("checked above")
                        };
                        op.set_state(OpState::Cancelled);
                        first_err = Some(e);
                    }
                    _ => {}
                },
                Rec::Recv { st, .. } => match st {
                    RecvSt::Eager(m) if (recv_buf(op).len() as u64) < m.body.len() => {
                        // The caller swapped in a buffer shorter than the message matched to
                        // it: the message is dropped with its credit returned (a sender whose
                        // window shrank by it would wait forever once it was gone), and the
                        // receive fails like any other, now or at the next call that drives it.
                        let (peer, len) = (m.peer, m.body.len());
                        *st = RecvSt::Failed(shrunk());
                        if let Some(p) = self.peers[peer.index()].as_mut() {
                            p.eager_consumed(len);
                        }
                        if failures && first_err.is_none() {
                            self.recs.remove(&id);
                            op.set_state(OpState::Cancelled);
                            first_err = Some(shrunk());
                        }
                    }
                    RecvSt::Eager(_) => {
                        let Some(Rec::Recv { st: RecvSt::Eager(m), .. }) = self.recs.remove(&id)
                        else {
                            unreachable!("checked above")
                        };
                        let Body::Eager(data) = m.body else { unreachable!("eager state") };
                        self.deliver_held(op, m.peer, data);
                    }
                    RecvSt::Done { peer, len } => {
                        op.set_state(OpState::Done { peer: *peer, len: *len as usize });
                        self.recs.remove(&id);
                    }
                    RecvSt::Failed(_) if failures && first_err.is_none() => {
                        let Some(Rec::Recv { st: RecvSt::Failed(e), .. }) = self.recs.remove(&id)
                        else {
                            unreachable!("checked above")
                        };
                        op.set_state(OpState::Cancelled);
                        first_err = Some(e);
                    }
                    _ => {}
                },
            }
        }
        first_err
    }

    /// Move bytes on every linked peer; returns whether anything moved.
    pub(crate) fn pump(&mut self, mine: &mut Mine<'_, '_>, force: bool, now: Instant) -> bool {
        let mut moved = false;
        for r in 0..self.peers.len() {
            if self.peers[r].as_ref().is_none_or(|p| p.link.is_none()) {
                continue;
            }
            match self.pump_rx(r, mine, force, now) {
                Ok(m) => moved |= m,
                Err((e, poison)) => {
                    self.fail_peer(Rank(r as u32), e, poison);
                    moved = true;
                    continue;
                }
            }
            match self.pump_tx(r, mine, force, now) {
                Ok(m) => moved |= m,
                Err(e) => {
                    let after_goodbye = self.peers[r].as_ref().is_some_and(|p| p.said_goodbye);
                    self.fail_peer(Rank(r as u32), e, !after_goodbye);
                    moved = true;
                }
            }
        }
        moved
    }

    fn pump_rx(
        &mut self,
        r: usize,
        mine: &mut Mine<'_, '_>,
        force: bool,
        now: Instant,
    ) -> std::result::Result<bool, (Error, bool)> {
        let mut moved = false;
        let mut budget = Budget::new();
        loop {
            // Acting on an event may have closed this very link.
            if self.peers[r].as_ref().is_none_or(|p| p.link.is_none()) {
                return Ok(moved);
            }
            let ev = {
                let peer = self.peers[r].as_mut().expect("checked just above");
                Self::rx_step(peer, mine, force, now, &mut moved, &mut budget)?
            };
            match ev {
                RxEvent::Stop => return Ok(moved),
                RxEvent::Staged { slot, fp, len } => {
                    if !self.deliver_staged(r, mine, slot, fp, len).map_err(|e| (e, true))? {
                        let peer = self.peers[r].as_mut().expect("checked by pump");
                        peer.collect_eager(slot, fp, len);
                    }
                }
                RxEvent::Arrived(m) => {
                    // One list reused for every message: no allocation per arrival.
                    let mut outs = std::mem::take(&mut self.outcomes);
                    let arrived = self.matcher.arrive_into(m, &mut outs);
                    for o in outs.drain(..) {
                        self.apply(o);
                    }
                    self.outcomes = outs;
                    arrived.map_err(|e| (e, true))?;
                }
                RxEvent::Cleared { send, xfer } => {
                    let peer = self.peers[r].as_mut().expect("checked by pump");
                    match self.recs.get_mut(&send) {
                        Some(Rec::Send { len, st, .. }) => {
                            if *len == 0 {
                                *st = SendSt::Done;
                            } else {
                                *st = SendSt::Streaming { xfer, next: 0 };
                                peer.cleared.push(send);
                            }
                        }
                        // Withdrawn before this clear-to-send and kept: it goes from the copy.
                        _ if let Some(data) = peer.orphans.remove(&send) => {
                            peer.orphaned -= data.len() as u64;
                            let mut off = 0u64;
                            while off < data.len() as u64 {
                                let end = (off + DATA_CHUNK).min(data.len() as u64);
                                let h = Header::new(Opcode::Data, off, end - off, xfer);
                                peer.push(h, None, &data[off as usize..end as usize]);
                                off = end;
                            }
                        }
                        // Withdrawn after the communicator was poisoned: nothing will send.
                        _ if self.poison.is_some() => {}
                        _ => {
                            return Err((
                                Error::protocol(peer.rank, "clear-to-send for a withdrawn send"),
                                true,
                            ));
                        }
                    }
                }
                RxEvent::DataDone { recv } => {
                    if let Some(Rec::Recv { st, len, .. }) = self.recs.get_mut(&recv) {
                        *st = RecvSt::Done { peer: Rank(r as u32), len: *len };
                    }
                }
                RxEvent::Aborted(reason) => {
                    let e = Error::Aborted { by: Rank(r as u32), reason };
                    self.aborted.get_or_insert_with(|| e.clone());
                    self.poison.get_or_insert(e);
                    return Ok(true);
                }
            }
        }
    }

    /// Deliver an eager message from peer `r` whose payload is all staged straight into the
    /// caller's receive it matches: one copy, where the general path copies it into an owned
    /// buffer, holds it as a [`Message`] for the receive, and copies it again when the
    /// receive is reaped. Returns `false`, having read nothing, when the message takes the
    /// general path: no receive waits for it, the receive is another thread's, or the
    /// matcher must judge it (a fingerprint mismatch, a message longer than the buffer).
    fn deliver_staged(
        &mut self,
        r: usize,
        mine: &mut Mine<'_, '_>,
        slot: Slot,
        fp: Option<Fingerprint>,
        len: u64,
    ) -> Result<bool> {
        let rank = Rank(r as u32);
        let Some((recv, cap, want)) = self.matcher.first_posted(rank, slot) else {
            return Ok(false);
        };
        if len > cap || want.is_some_and(|f| fp != Some(f)) {
            return Ok(false);
        }
        let Some(i) = mine.find(recv) else { return Ok(false) };
        // The caller may have swapped in a shorter buffer since it posted: the reap reports it.
        let Some(dst) = recv_buf(&mut mine.ops[i]).get_mut(..len as usize) else {
            return Ok(false);
        };
        let peer = self.peers[r].as_mut().expect("checked by pump");
        // Through the reader, which checks the payload's integrity (when on) before a byte
        // of it reaches the buffer.
        let (n, step) = peer.reader.feed(&peer.rbuf[peer.rs..peer.re])?;
        let Step::Payload(payload) = step else {
            return Err(Error::protocol(rank, "eager payload not where its header said"));
        };
        if payload.len() != dst.len() {
            return Err(Error::protocol(rank, "eager payload shorter than staged"));
        }
        dst.copy_from_slice(payload);
        peer.rs += n;
        peer.eager_consumed(len);
        self.matcher.take_posted(recv);
        self.recs.remove(&recv);
        mine.ops[i].set_state(OpState::Done { peer: rank, len: len as usize });
        Ok(true)
    }

    /// One step of reading a peer: process staged bytes, or read more.
    fn rx_step(
        peer: &mut Peer<L>,
        mine: &mut Mine<'_, '_>,
        force: bool,
        now: Instant,
        moved: &mut bool,
        budget: &mut Budget,
    ) -> std::result::Result<RxEvent, (Error, bool)> {
        let proto_err = |e: Error| (e, true);
        loop {
            let staged = peer.re - peer.rs;
            match &mut peer.rx {
                Rx::Idle if staged > 0 => {
                    if budget.frames == 0 {
                        // This peer's share of the pump is used: the staged frames wait for
                        // the next pump (which takes them with or without readiness).
                        return Ok(RxEvent::Stop);
                    }
                    let (n, step) =
                        peer.reader.feed(&peer.rbuf[peer.rs..peer.re]).map_err(proto_err)?;
                    peer.rs += n;
                    *moved = true;
                    let Step::Header(h, fp) = step else { continue };
                    budget.frames -= 1;
                    match peer.proto.on_header(&h, fp).map_err(proto_err)? {
                        Incoming::Eager { slot, fp, len } => {
                            if len == 0 {
                                let m = Message::new(peer.rank, slot, fp, Body::Eager(Vec::new()));
                                return Ok(RxEvent::Arrived(m));
                            }
                            if !mine.ops.is_empty() && (peer.re - peer.rs) as u64 >= len {
                                // All here: it may go straight into a receive of the caller.
                                return Ok(RxEvent::Staged { slot, fp, len });
                            }
                            peer.collect_eager(slot, fp, len);
                        }
                        Incoming::Rts { slot, fp, len, xfer } => {
                            let m = Message::new(peer.rank, slot, fp, Body::Rts { len, xfer });
                            return Ok(RxEvent::Arrived(m));
                        }
                        Incoming::Cts { send, xfer } => {
                            return Ok(RxEvent::Cleared { send, xfer });
                        }
                        Incoming::Data { xfer, recv, offset, len } => {
                            if len == 0 {
                                if peer.proto.data_received(xfer, 0)
                                    && let Some(recv) = recv
                                {
                                    return Ok(RxEvent::DataDone { recv });
                                }
                                continue;
                            }
                            peer.rx = Rx::Data { xfer, recv, offset };
                        }
                        Incoming::Credit | Incoming::Heartbeat => {}
                        Incoming::Abort { len } => {
                            if len == 0 {
                                return Ok(RxEvent::Aborted(String::new()));
                            }
                            peer.rx = Rx::Abort { buf: Vec::with_capacity(len as usize) };
                        }
                        Incoming::Goodbye => peer.said_goodbye = true,
                    }
                }
                Rx::Eager { buf, .. } | Rx::Abort { buf } if staged > 0 => {
                    let (n, step) =
                        peer.reader.feed(&peer.rbuf[peer.rs..peer.re]).map_err(proto_err)?;
                    peer.rs += n;
                    *moved = true;
                    if let Step::Payload(p) = step {
                        buf.extend_from_slice(p);
                    }
                    if peer.reader.payload_left() == 0 {
                        match std::mem::replace(&mut peer.rx, Rx::Idle) {
                            Rx::Eager { slot, fp, buf } => {
                                let m = Message::new(peer.rank, slot, fp, Body::Eager(buf));
                                return Ok(RxEvent::Arrived(m));
                            }
                            Rx::Abort { buf } => {
                                return Ok(RxEvent::Aborted(untrusted_text(&buf)));
                            }
                            _ => unreachable!("matched above"),
                        }
                    }
                }
                Rx::Data { xfer, recv, offset } => {
                    let (xfer, recv, offset) = (*xfer, *recv, *offset);
                    let left = peer.reader.payload_left();
                    let idx = match recv {
                        Some(id) => match mine.find(id) {
                            Some(i) => Some(i),
                            // Another thread's buffer: park until its owner reads.
                            None => return Ok(RxEvent::Stop),
                        },
                        None => None,
                    };
                    let n = if staged > 0 {
                        let n = (staged as u64).min(left);
                        let staging = &peer.rbuf[peer.rs..peer.rs + n as usize];
                        if let Some(i) = idx {
                            let dst = checked_range(recv_buf(&mut mine.ops[i]), offset, n)
                                .ok_or_else(|| proto_err(out_of_buffer(peer.rank, xfer)))?;
                            dst.copy_from_slice(staging);
                        }
                        if peer.integrity {
                            peer.reader.consume_payload_bytes(staging).map_err(proto_err)?;
                        } else {
                            peer.reader.consume_payload(n);
                        }
                        peer.rs += n as usize;
                        n
                    } else {
                        // Out of budget: stop with the readiness kept, so the next pump
                        // goes on from here.
                        if !(peer.readable || force) || budget.bytes == 0 {
                            return Ok(RxEvent::Stop);
                        }
                        let Some(i) = idx.filter(|_| left >= DIRECT_MIN) else {
                            // Small or discarded payload: go through the staging buffer.
                            match Self::fill(peer, now, budget)? {
                                true => continue,
                                false => return Ok(RxEvent::Stop),
                            }
                        };
                        let want = left.min(MAX_IO);
                        let dst = checked_range(recv_buf(&mut mine.ops[i]), offset, want)
                            .ok_or_else(|| proto_err(out_of_buffer(peer.rank, xfer)))?;
                        let link = peer.link.as_mut().expect("pumped peers have a link");
                        let asked = dst.len();
                        match link.read(dst) {
                            Ok(0) => return Err(eof(peer)),
                            Ok(n) => {
                                stamp(&mut peer.last_heard, now);
                                budget.bytes = budget.bytes.saturating_sub(n as u64);
                                if n < asked && link.drains_on_short_io() && !peer.hangup {
                                    peer.readable = false;
                                }
                                if peer.integrity {
                                    let landed = &dst[..n];
                                    peer.reader.consume_payload_bytes(landed).map_err(proto_err)?;
                                } else {
                                    peer.reader.consume_payload(n as u64);
                                }
                                n as u64
                            }
                            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                                peer.readable = false;
                                return Ok(RxEvent::Stop);
                            }
                            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                            Err(e) => return Err(lost(peer, &e)),
                        }
                    };
                    *moved = true;
                    let done = peer.proto.data_received(xfer, n);
                    if peer.reader.payload_left() == 0 {
                        peer.rx = Rx::Idle;
                    } else {
                        peer.rx = Rx::Data { xfer, recv, offset: offset + n };
                    }
                    if done && let Some(recv) = recv {
                        return Ok(RxEvent::DataDone { recv });
                    }
                }
                _ => {
                    // Nothing staged: read more.
                    if !(peer.readable || force) || budget.bytes == 0 {
                        return Ok(RxEvent::Stop);
                    }
                    if !Self::fill(peer, now, budget)? {
                        return Ok(RxEvent::Stop);
                    }
                }
            }
        }
    }

    /// Read into the (empty) staging buffer, charging `budget`; returns whether bytes came.
    fn fill(
        peer: &mut Peer<L>,
        now: Instant,
        budget: &mut Budget,
    ) -> std::result::Result<bool, (Error, bool)> {
        if peer.rs == peer.re {
            peer.rs = 0;
            peer.re = 0;
        }
        let link = peer.link.as_mut().expect("pumped peers have a link");
        loop {
            let asked = peer.rbuf.len() - peer.re;
            match link.read(&mut peer.rbuf[peer.re..]) {
                Ok(0) => return Err(eof(peer)),
                Ok(n) => {
                    // Edge-triggered readiness: a short read drained the link, and the next
                    // arrival raises a new event, so no read is needed just to see EAGAIN;
                    // unless the peer's close came with the data (no event will follow).
                    if n < asked && link.drains_on_short_io() && !peer.hangup {
                        peer.readable = false;
                    }
                    peer.re += n;
                    stamp(&mut peer.last_heard, now);
                    budget.bytes = budget.bytes.saturating_sub(n as u64);
                    return Ok(true);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    peer.readable = false;
                    return Ok(false);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(lost(peer, &e)),
            }
        }
    }

    fn pump_tx(
        &mut self,
        r: usize,
        mine: &mut Mine<'_, '_>,
        force: bool,
        now: Instant,
    ) -> Result<bool> {
        let Some(peer) = self.peers[r].as_mut().filter(|p| p.link.is_some()) else {
            return Ok(false);
        };
        if !(peer.writable || force) {
            return Ok(false);
        }
        let mut moved = false;
        let mut budget = PUMP_BUDGET;
        loop {
            if budget == 0 {
                // The readiness stays as it is: the next pump writes on from here.
                break;
            }
            let link = peer.link.as_mut().expect("pumped peers have a link");
            if link.has_pending_output() {
                match link.flush_pending() {
                    Ok(()) => {}
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                        peer.writable = false;
                        break;
                    }
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(e) => return Err(lost(peer, &e).0),
                }
            }
            let res = if let Some(a) = &mut peer.active {
                let Some(i) = mine.find(a.send) else { break };
                let buf = send_buf(&mine.ops[i]);
                let Some(payload) = buf.get(a.pos as usize..(a.pos + a.left.min(MAX_IO)) as usize)
                else {
                    return Err(shrunk());
                };
                let bufs = [IoSlice::new(&a.hdr[a.hdr_sent..a.hdr_len]), IoSlice::new(payload)];
                let asked = bufs[0].len() + bufs[1].len();
                match link.write_vectored(&bufs) {
                    Ok(n) => {
                        let h = a.hdr_len - a.hdr_sent;
                        if n <= h {
                            a.hdr_sent += n;
                        } else {
                            a.hdr_sent = a.hdr_len;
                            a.pos += (n - h) as u64;
                            a.left -= (n - h) as u64;
                        }
                        if a.hdr_sent == a.hdr_len && a.left == 0 {
                            let (send, end) = (a.send, a.pos);
                            peer.active = None;
                            if let Some(Rec::Send { len, st, .. }) = self.recs.get_mut(&send)
                                && end == *len
                            {
                                *st = SendSt::Done;
                            }
                        }
                        Ok((n, asked))
                    }
                    Err(e) => Err(e),
                }
            } else if !peer.out.is_empty() {
                let (x, y) = peer.out.as_slices();
                let asked = x.len() + y.len();
                match link.write_vectored(&[IoSlice::new(x), IoSlice::new(y)]) {
                    Ok(n) => {
                        peer.out.drain(..n);
                        Ok((n, asked))
                    }
                    Err(e) => Err(e),
                }
            } else if let Some(k) = peer.cleared.iter().position(|s| mine.find(*s).is_some()) {
                let send = peer.cleared[k];
                let Some(Rec::Send { len, st: SendSt::Streaming { xfer, next }, .. }) =
                    self.recs.get_mut(&send)
                else {
                    peer.cleared.remove(k);
                    continue;
                };
                let chunk = (*len - *next).min(DATA_CHUNK);
                let mut hdr = [0u8; HEADER_LEN + CHECK_LEN];
                hdr[..HEADER_LEN]
                    .copy_from_slice(&Header::new(Opcode::Data, *next, chunk, *xfer).encode());
                let mut hdr_len = HEADER_LEN;
                if peer.integrity {
                    // The payload's CRC goes before the payload: one pass over the chunk now
                    // (it is about to be read for the write anyway).
                    let i = mine.find(send).expect("found by the position search above");
                    let Some(payload) =
                        send_buf(&mine.ops[i]).get(*next as usize..(*next + chunk) as usize)
                    else {
                        return Err(shrunk());
                    };
                    let mut header = [0u8; HEADER_LEN];
                    header.copy_from_slice(&hdr[..HEADER_LEN]);
                    hdr[HEADER_LEN..].copy_from_slice(&check_block(&header, crc32c(payload)));
                    hdr_len += CHECK_LEN;
                }
                peer.active =
                    Some(Active { send, hdr, hdr_len, hdr_sent: 0, pos: *next, left: chunk });
                *next += chunk;
                if *next == *len {
                    peer.cleared.remove(k);
                }
                continue;
            } else {
                break;
            };
            let drains = link.drains_on_short_io();
            match res {
                Ok((0, _)) => {
                    return Err(Error::PeerLost {
                        peer: peer.rank,
                        reason: "the connection accepts no more bytes".into(),
                    });
                }
                Ok((n, asked)) => {
                    moved = true;
                    stamp(&mut peer.last_sent, now);
                    budget = budget.saturating_sub(n as u64);
                    if n < asked && drains {
                        // The link's buffer is full; readiness comes back when it has room.
                        peer.writable = false;
                        break;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    peer.writable = false;
                    break;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    let (e, _) = lost(peer, &e);
                    return Err(e);
                }
            }
        }
        Ok(moved)
    }

    /// Before the caller's borrow ends: copy the unsent rest of any `Data` frame it was
    /// writing into the owned queue, in front of what was queued behind it. Called right
    /// after a reap of `ops` (as `progress` does), it reaps again only what it completes.
    pub(crate) fn release(&mut self, ops: &mut [Op<'_>]) {
        let mine = Mine { ops };
        let mut broken = Vec::new();
        let mut released = false;
        for peer in self.peers.iter_mut().flatten() {
            let Some(a) = &peer.active else { continue };
            let Some(i) = mine.find(a.send) else { continue };
            released = true;
            let buf = send_buf(&mine.ops[i]);
            let Some(payload) = buf.get(a.pos as usize..(a.pos + a.left) as usize) else {
                // The caller swapped the buffer for a shorter one mid-send: the frame cannot
                // be completed, so the stream is beyond repair.
                broken.push(peer.rank);
                continue;
            };
            let mut rest = VecDeque::with_capacity(a.hdr_len + payload.len() + peer.out.len());
            rest.extend(&a.hdr[a.hdr_sent..a.hdr_len]);
            rest.extend(payload);
            rest.append(&mut peer.out);
            peer.out = rest;
            let (send, end) = (a.send, a.pos + a.left);
            peer.active = None;
            if let Some(Rec::Send { len, st, .. }) = self.recs.get_mut(&send)
                && end == *len
            {
                *st = SendSt::Done;
            }
        }
        for rank in broken {
            self.fail_peer(rank, shrunk(), true);
        }
        // Mark what that completed (`progress` reaped just before, so nothing else can
        // have). Failures stay posted: the call has already returned its first error, and a
        // later one (a mismatch the alarm watch caught, say) must reach the next call that
        // drives it, not vanish here as a withdrawn operation.
        if released {
            let _ = self.reap_inner(mine.ops, false);
        }
    }

    /// Close the link to `rank`: fail every operation that depends on it.
    pub(crate) fn fail_peer(&mut self, rank: Rank, e: Error, poison: bool) {
        let Some(peer) = self.peers[rank.index()].as_mut() else { return };
        if peer.dead.is_some() {
            return;
        }
        tracing::debug!(rank = %self.me, peer = %rank, error = %crate::ErrorChain(&e), "closing connection");
        if matches!(e, Error::Cancelled { .. }) && peer.active.is_none() {
            // A cancel ends this pair only: say goodbye (best effort, between frames) so the
            // peer fails its operations with us instead of taking this rank for dead.
            peer.push(Header::new(Opcode::Goodbye, 0, 0, 0), None, &[]);
        }
        if matches!(e, Error::Cancelled { .. })
            && peer.active.is_none()
            && let Some(s) = peer.link.as_mut()
        {
            while !peer.out.is_empty() {
                let (x, y) = peer.out.as_slices();
                match s.write_vectored(&[IoSlice::new(x), IoSlice::new(y)]) {
                    Ok(n) if n > 0 => {
                        peer.out.drain(..n);
                    }
                    _ => break,
                }
            }
        }
        if let Some(link) = peer.link.take() {
            self.closed.push((rank, link));
        }
        peer.dead = Some(e.clone());
        // Release everything the peer made this rank hold: its buffers go (a peer that
        // flooded before it was cut off must not leave its flood pinned), and so do its held
        // messages, except the eager ones of a peer that left cleanly or of a pair a cancel
        // broke, which are still deliverable.
        peer.rx = Rx::Idle;
        peer.rbuf = Box::default();
        peer.rs = 0;
        peer.re = 0;
        peer.out = VecDeque::new();
        peer.active = None;
        peer.cleared = Vec::new();
        peer.orphans = Map::default();
        peer.orphaned = 0;
        let keep_eager = match e {
            Error::Cancelled { .. } => true,
            Error::PeerLost { .. } => !poison,
            _ => false,
        };
        for recv in self.matcher.drop_peer(rank, keep_eager) {
            // Withdrawn from the matcher: posted again for the other candidates, or failed.
            if let Some(Rec::Recv { from, slot, cap, fp, .. }) = self.recs.get(&recv) {
                let (from, slot, cap, fp) = (from.clone(), *slot, *cap, *fp);
                match self.matcher.post(recv, &from, slot, cap, fp) {
                    Some(o) => self.apply(o),
                    None => self.narrow_to_live(recv),
                }
            }
        }
        for rec in self.recs.values_mut() {
            match rec {
                Rec::Send { to, st, .. }
                    if *to == rank
                        && matches!(
                            st,
                            SendSt::AwaitCts | SendSt::Streaming { .. } | SendSt::Queued
                        ) =>
                {
                    *st = SendSt::Failed(e.clone());
                }
                Rec::Recv { st, .. } if matches!(&*st, RecvSt::Transfer { peer, .. } if *peer == rank) =>
                {
                    *st = RecvSt::Failed(e.clone());
                }
                _ => {}
            }
        }
        // A lost peer poisons the group; a peer that broke the protocol or failed to
        // authenticate only loses its own link (see the trait's error scopes).
        if poison && matches!(e, Error::PeerLost { .. } | Error::Aborted { .. }) {
            self.poison.get_or_insert(e);
        }
    }

    /// Queue `Abort { reason }` (cut to the 1 KiB limit) to every live peer and push it out
    /// as far as the links take it now.
    pub(crate) fn abort_peers(&mut self, reason: &str, now: Instant) {
        let mut cut = reason.len().min(ABORT_REASON_MAX as usize);
        while !reason.is_char_boundary(cut) {
            cut -= 1;
        }
        let r = &reason.as_bytes()[..cut];
        self.broadcast(Header::new(Opcode::Abort, 0, r.len() as u64, 0), r);
        let mut none: [Op<'_>; 0] = [];
        let mut mine = Mine { ops: &mut none };
        for r in 0..self.peers.len() {
            if self.peers[r].as_ref().is_some_and(|p| p.link.is_some() && p.dead.is_none()) {
                // Best effort: what does not fit now goes with the next pump.
                let _ = self.pump_tx(r, &mut mine, true, now);
            }
        }
    }

    /// Withdraw the caller's incomplete operations.
    pub(crate) fn cancel(&mut self, ops: &mut [Op<'_>]) {
        // On a poisoned communicator nothing more will run: forget the operations without
        // closing links, so the peers read this rank's Abort rather than a reset.
        let poisoned = self.poison.is_some();
        for op in ops.iter_mut() {
            let OpState::Posted(id) = op.state() else { continue };
            op.set_state(OpState::Cancelled);
            let rec = self.recs.remove(&id);
            if poisoned {
                if let Some(Rec::Recv { st: RecvSt::Posted, .. }) = rec {
                    self.matcher.cancel(id);
                }
                continue;
            }
            match rec {
                Some(Rec::Recv { st: RecvSt::Posted, .. }) => {
                    self.matcher.cancel(id);
                }
                Some(Rec::Recv { st: RecvSt::Eager(m), .. }) => {
                    // Nothing reached the buffer: the message goes back to its stream.
                    if let Some(o) = self.matcher.requeue_front(m) {
                        self.apply(o);
                    }
                }
                Some(Rec::Recv { st: RecvSt::Transfer { peer, .. }, slot, .. }) => {
                    self.fail_peer(peer, Error::Cancelled { peer, slot }, false);
                }
                Some(Rec::Send { to, slot, len, st: SendSt::AwaitCts }) => {
                    // Announced, not yet cleared: a small message is kept to go when the peer
                    // asks for it (no byte of it has moved, and the stream stays whole); a
                    // large one would cost a copy of its size, so the pair is closed.
                    let data = send_buf(op);
                    let kept = self.peers[to.index()].as_mut().is_some_and(|p| {
                        // The copy must be the message announced (a caller may have
                        // swapped the buffer since).
                        let fits = data.len() as u64 == len
                            && len <= EAGER_MAX
                            && p.orphaned + len <= EAGER_CREDIT;
                        if fits {
                            p.orphaned += data.len() as u64;
                            p.orphans.insert(id, data.to_vec());
                        }
                        fits
                    });
                    if !kept {
                        self.fail_peer(to, Error::Cancelled { peer: to, slot }, false);
                    }
                }
                Some(Rec::Send { to, slot, st: SendSt::Streaming { .. }, .. }) => {
                    self.fail_peer(to, Error::Cancelled { peer: to, slot }, false);
                }
                _ => {}
            }
        }
    }

    /// The error for a deadline that passed: a mismatch proven by rule 3, else a timeout
    /// listing what is pending.
    pub(crate) fn timeout_error(&self, ops: &[Op<'_>], waited: Duration) -> Error {
        let mut pending = Vec::new();
        for op in ops {
            let OpState::Posted(id) = op.state() else { continue };
            if let Some(e) = self.matcher.deadline_mismatch(id) {
                return e;
            }
            if pending.len() < MAX_PENDING_LISTED {
                pending.push(match self.recs.get(&id) {
                    Some(Rec::Send { to, slot, .. }) => Pending::Send { to: *to, slot: *slot },
                    Some(Rec::Recv { from, slot, .. }) => {
                        Pending::Recv { from: from.to_vec(), slot: *slot }
                    }
                    None => continue,
                });
            }
        }
        Error::Timeout { rank: self.me, waited, pending }
    }

    /// Queue a frame with no fingerprint for every live peer.
    pub(crate) fn broadcast(&mut self, h: Header, payload: &[u8]) {
        for p in self.peers.iter_mut().flatten() {
            if p.dead.is_none() {
                p.push(h, None, payload);
            }
        }
    }

    /// Whether the next liveness tick is due.
    pub(crate) fn tick_due(&self, now: Instant) -> bool {
        now >= self.next_tick
    }

    /// Run [`tick`](Engine::tick) if it is due, then not again for a period. Both the
    /// background thread and callers inside `progress` call this: a caller whose every pump
    /// moves data (a multi-GiB receive) keeps the lock for seconds, and a heartbeat that
    /// depended on the background thread winning that lock would stop, so the peer would
    /// take this busy rank for a dead one.
    pub(crate) fn tick_if_due(&mut self, now: Instant) -> bool {
        if !self.tick_due(now) {
            return false;
        }
        self.next_tick = now + self.period;
        self.tick(now)
    }

    /// Heartbeats and liveness: queue a heartbeat for every peer we have not written to for
    /// the heartbeat interval, and fail every peer we have not heard from for the peer
    /// timeout. Returns whether a peer was found lost.
    pub(crate) fn tick(&mut self, now: Instant) -> bool {
        let Some((interval, timeout)) = self.liveness else { return false };
        let mut lost = Vec::new();
        for p in self.peers.iter_mut().flatten() {
            // A peer with no link yet has nobody to hear from.
            if p.dead.is_some() || p.link.is_none() {
                continue;
            }
            if now.saturating_duration_since(p.last_sent) >= interval && p.out.is_empty() {
                p.push(Header::new(Opcode::Heartbeat, 0, 0, 0), None, &[]);
            }
            // Time during which we ourselves do not read this peer does not count, nor do
            // bytes the peer sent that we have not read yet (this process may have been
            // descheduled between its last read and this check).
            if p.read_stalled(&self.active) {
                stamp(&mut p.last_heard, now);
            } else if now.saturating_duration_since(p.last_heard) > timeout {
                if p.link.as_ref().is_some_and(|s| s.input_waiting()) {
                    stamp(&mut p.last_heard, now);
                } else {
                    lost.push((p.rank, now.saturating_duration_since(p.last_heard)));
                }
            }
        }
        let any = !lost.is_empty();
        for (rank, silent) in lost {
            let reason = format!("heard nothing (not even a heartbeat) for {silent:.1?}");
            self.fail_peer(rank, Error::PeerLost { peer: rank, reason }, true);
        }
        any
    }

    /// Messages held unmatched, from every peer.
    #[cfg(test)]
    pub(crate) fn matcher_len(&self) -> usize {
        self.matcher.unexpected_len()
    }

    /// The matcher's bookkeeping for held messages, in bytes.
    #[cfg(test)]
    pub(crate) fn bookkeeping_bytes(&self) -> usize {
        self.matcher.bookkeeping_bytes()
    }

    /// Bytes received so far of the rendezvous message the posted receive `op` takes in.
    #[cfg(test)]
    pub(crate) fn received_so_far(&self, op: &Op<'_>) -> Option<u64> {
        let OpState::Posted(id) = op.state() else { return None };
        match self.recs.get(&id)? {
            Rec::Recv { st: RecvSt::Transfer { peer, xfer }, .. } => {
                self.peers[peer.index()].as_ref()?.proto.transfer_progress(*xfer)
            }
            _ => None,
        }
    }

    /// The ranks this rank has a live link to.
    pub(crate) fn connected_peers(&self) -> Vec<Rank> {
        self.peers.iter().flatten().filter(|p| p.link.is_some()).map(|p| p.rank).collect()
    }

    /// Whether any live peer has queued bytes not yet written.
    pub(crate) fn has_unsent(&self) -> bool {
        self.peers
            .iter()
            .flatten()
            .any(|p| p.link.as_ref().is_some_and(|s| !p.out.is_empty() || s.has_pending_output()))
    }
}

fn checked_range(buf: &mut [u8], offset: u64, n: u64) -> Option<&mut [u8]> {
    let start = usize::try_from(offset).ok()?;
    let end = start.checked_add(usize::try_from(n).ok()?)?;
    buf.get_mut(start..end)
}

/// Text from a peer made safe for error messages and logs: invalid UTF-8 replaced, control
/// characters (terminal escapes, forged log lines) shown escaped.
fn untrusted_text(b: &[u8]) -> String {
    String::from_utf8_lossy(b)
        .chars()
        .flat_map(|c| {
            let esc = c.is_control().then(|| c.escape_default());
            let plain = (!c.is_control()).then_some(c);
            esc.into_iter().flatten().chain(plain)
        })
        .collect()
}

/// Move a liveness stamp to `now`, never back: the time a pump is handed may be a caller's
/// reading older than the stamp (see
/// [`Communicator::progress_at`](crate::Communicator::progress_at)), and a stamp moved back
/// would make a live peer look silent.
fn stamp(at: &mut Instant, now: Instant) {
    *at = (*at).max(now);
}

fn shrunk() -> Error {
    Error::invalid("an operation's buffer was replaced by a shorter one while it was posted")
}

fn out_of_buffer(peer: Rank, xfer: u64) -> Error {
    Error::protocol(peer, format!("data for transfer {xfer} runs past the posted buffer"))
}

fn eof<L>(peer: &Peer<L>) -> (Error, bool) {
    if peer.said_goodbye {
        (Error::PeerLost { peer: peer.rank, reason: "closed its communicator".into() }, false)
    } else {
        let reason = "the connection closed without a goodbye (the process died?)".into();
        (Error::PeerLost { peer: peer.rank, reason }, true)
    }
}

/// A link error: group-fatal, unless the peer said goodbye first (then a reset is just how
/// its close arrived). A link's refusal of the peer's bytes (see [`Link`]'s contract: a TLS
/// record forged or cut short) is that peer's protocol or authentication error, as garbage
/// frames are, and poisons nothing.
fn lost<L>(peer: &Peer<L>, e: &io::Error) -> (Error, bool) {
    // A link that knows what went wrong says so with a typed error inside the `io::Error`
    // (see the `Link` contract): a peer that broke the protocol (scribbled on a shared ring)
    // or failed authentication keeps that scope, and a loss keeps the link's own reason.
    let typed = e.get_ref().and_then(|inner| inner.downcast_ref::<Error>());
    match typed {
        Some(t @ (Error::Protocol { peer: Some(p), .. } | Error::Auth { peer: Some(p), .. }))
            if *p == peer.rank =>
        {
            return (t.clone(), true);
        }
        Some(Error::PeerLost { peer: p, reason }) if *p == peer.rank && !peer.said_goodbye => {
            return (Error::PeerLost { peer: peer.rank, reason: reason.clone() }, true);
        }
        _ => {}
    }
    // A link's own refusal of the peer's bytes by its error's kind (TLS: a forged record, a
    // failed certificate). A typed error that named another rank is not believed, whatever
    // its kind: the link's peer is lost.
    if typed.is_none()
        && let Some(refused) =
            super::refusal(Some(peer.rank), "the link refused the peer's data", e)
    {
        return (refused, false);
    }
    let reason = if peer.said_goodbye {
        format!("closed its communicator ({e})")
    } else {
        format!("connection error: {e}")
    };
    (Error::PeerLost { peer: peer.rank, reason }, !peer.said_goodbye)
}

#[cfg(test)]
mod tests {
    use super::untrusted_text;

    #[test]
    fn untrusted_text_escapes_control_characters() {
        let t = untrusted_text(b"bye\x1b[2J\r\nok\x07\xff");
        assert!(!t.chars().any(char::is_control), "{t:?}");
        assert!(t.starts_with("bye\\u{1b}[2J\\r\\nok"), "{t:?}");
    }
}
