//! The connected state of one communicator: sockets, protocol state, posted operations.
//!
//! Everything here runs under the communicator's mutex, with non-blocking I/O only. A caller
//! of `progress` hands in its own operations (`Mine`): only those buffers are read or written,
//! and only during that call. Data for a receive posted by another thread "parks" the
//! socket's read side until its owner comes to read the payload straight into its buffer.
//!
//! A lazy communicator (see [`lazy`]) also owns its listening socket and the handshakes of
//! connections being made; a peer with no connection yet has a `Peer` with no stream, whose
//! queued frames wait for the connection.

mod lazy;

pub(crate) use lazy::Lazy;

use std::collections::{HashMap, HashSet, VecDeque};
use std::io::{self, IoSlice};
use std::time::{Duration, Instant};

use mio::{Events, Poll, Registry, Token};

use super::stream::ByteStream;
use crate::proto::{
    ABORT_REASON_MAX, Body, DATA_CHUNK, FrameReader, HEADER_LEN, Header, Incoming, Matcher,
    Message, Opcode, Outcome, PeerProto, Step, encode_with_fp,
};
use crate::{Error, Fingerprint, Op, OpKind, OpState, Pending, Rank, Result, Slot};

/// The token of the waker that interrupts a sleeping poller.
pub(crate) const WAKE: Token = Token(usize::MAX);
/// Staging buffer for headers and small payloads, per peer.
const RBUF: usize = 64 * 1024;
/// Payloads at least this long are read straight into the destination, past the staging.
const DIRECT_MIN: u64 = 4096;
/// The largest single read or write syscall.
const MAX_IO: u64 = 1 << 30;
/// How many bytes one pump reads from (or writes to) one peer before moving on. Without a
/// bound, a receiver slower than its sender stays inside one pump for a whole multi-GiB
/// message: the other peers wait, and so does the liveness tick between pumps, until the
/// sender takes the silent receiver for a dead one. 16 MiB is a few milliseconds here.
const PUMP_BUDGET: u64 = 16 << 20;

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

/// A `Data` frame whose header or payload is part-way out of the socket, written from its
/// owner's buffer.
struct Active {
    send: u64,
    hdr: [u8; HEADER_LEN],
    hdr_sent: usize,
    pos: u64,
    left: u64,
}

pub(crate) struct Peer {
    rank: Rank,
    stream: Option<Box<dyn ByteStream>>,
    proto: PeerProto,
    reader: FrameReader,
    rbuf: Box<[u8]>,
    rs: usize,
    re: usize,
    rx: Rx,
    out: VecDeque<u8>,
    active: Option<Active>,
    /// Sends the peer cleared, in order, whose next `Data` frame is not yet started.
    cleared: Vec<u64>,
    readable: bool,
    writable: bool,
    said_goodbye: bool,
    dead: Option<Error>,
    pub(crate) last_heard: Instant,
    pub(crate) last_sent: Instant,
}

impl Peer {
    pub(crate) fn new(rank: Rank, stream: Box<dyn ByteStream>, leftover: &[u8]) -> Peer {
        let mut peer = Peer::unconnected(rank);
        peer.attach(stream, leftover);
        peer
    }

    /// A peer of a lazy communicator with no connection yet: frames for it queue up until
    /// [`attach`](Peer::attach).
    pub(crate) fn unconnected(rank: Rank) -> Peer {
        let mut reader = FrameReader::new(Some(rank));
        reader.set_peer(rank);
        let now = Instant::now();
        Peer {
            rank,
            stream: None,
            proto: PeerProto::new(rank),
            reader,
            rbuf: Box::default(),
            rs: 0,
            re: 0,
            rx: Rx::Idle,
            out: VecDeque::new(),
            active: None,
            cleared: Vec::new(),
            readable: true,
            writable: true,
            said_goodbye: false,
            dead: None,
            last_heard: now,
            last_sent: now,
        }
    }

    /// Give the peer its connection; `leftover` holds bytes already read past the handshake.
    pub(crate) fn attach(&mut self, stream: Box<dyn ByteStream>, leftover: &[u8]) {
        let mut rbuf = vec![0u8; RBUF.max(leftover.len())].into_boxed_slice();
        rbuf[..leftover.len()].copy_from_slice(leftover);
        self.rbuf = rbuf;
        self.rs = 0;
        self.re = leftover.len();
        self.stream = Some(stream);
        self.readable = true;
        self.writable = true;
        let now = Instant::now();
        self.last_heard = now;
        self.last_sent = now;
    }

    /// Whether this is a lazy communicator's peer with no connection yet (and no failure).
    pub(crate) fn is_unconnected(&self) -> bool {
        self.stream.is_none() && self.dead.is_none()
    }

    fn push(&mut self, h: Header, fp: Option<&Fingerprint>, payload: &[u8]) {
        let mut b = [0u8; HEADER_LEN + Fingerprint::LEN];
        let n = encode_with_fp(h, fp, &mut b);
        self.out.extend(&b[..n]);
        self.out.extend(payload);
    }

    /// Whether we are not reading this peer because the data in hand belongs to a receive
    /// whose owner is not inside `progress` (so nobody may write its buffer now).
    fn read_stalled(&self, active: &HashSet<u64>) -> bool {
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
    /// An eager message queued for a peer that is not connected yet: done once connected.
    Queued,
    Done,
    Failed(Error),
}

enum RecvSt {
    Posted,
    Eager(Message),
    Transfer { peer: Rank },
    Done { peer: Rank, len: u64 },
    Failed(Error),
}

enum Rec {
    Send { to: Rank, slot: Slot, len: u64, st: SendSt },
    Recv { from: Vec<Rank>, slot: Slot, cap: u64, fp: Option<Fingerprint>, len: u64, st: RecvSt },
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

/// What reading a peer produced that needs state beyond the peer.
enum RxEvent {
    Arrived(Message),
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

pub(crate) struct Driver {
    pub(crate) me: Rank,
    pub(crate) poll: Option<(Poll, Events)>,
    registry: Registry,
    pub(crate) peers: Vec<Option<Peer>>,
    matcher: Matcher,
    recs: HashMap<u64, Rec>,
    next_id: u64,
    pub(crate) poison: Option<Error>,
    pub(crate) aborted: Option<Error>,
    pub(crate) in_progress: usize,
    /// Posted operations whose owners are inside `progress` right now.
    active: HashSet<u64>,
    /// The connection state of a lazy communicator; `None` for the full mesh.
    pub(crate) lazy: Option<Box<Lazy>>,
    /// When [`tick_if_due`](Driver::tick_if_due) next runs the liveness tick.
    next_tick: Instant,
}

impl Driver {
    pub(crate) fn new(me: Rank, poll: Poll, peers: Vec<Option<Peer>>) -> io::Result<Driver> {
        let registry = poll.registry().try_clone()?;
        Ok(Driver {
            me,
            poll: Some((poll, Events::with_capacity(256))),
            registry,
            peers,
            matcher: Matcher::new(),
            recs: HashMap::new(),
            next_id: 1,
            poison: None,
            aborted: None,
            in_progress: 0,
            active: HashSet::new(),
            lazy: None,
            next_tick: Instant::now(),
        })
    }

    /// Record that the caller's posted operations are being driven; returns their ids for
    /// [`unmark_active`](Driver::unmark_active).
    pub(crate) fn mark_active(&mut self, ops: &[Op<'_>]) -> Vec<u64> {
        let ids: Vec<u64> = ops
            .iter()
            .filter_map(|op| match op.state() {
                OpState::Posted(id) => Some(id),
                _ => None,
            })
            .collect();
        self.active.extend(ids.iter().copied());
        ids
    }

    /// The caller stops driving these operations.
    pub(crate) fn unmark_active(&mut self, ids: &[u64]) {
        for id in ids {
            self.active.remove(id);
        }
    }

    /// For busy polling: let the next pump try the sockets of the peers these operations
    /// wait on, without waiting for readiness events.
    pub(crate) fn mark_ready(&mut self, ops: &[Op<'_>]) {
        let touch = |r: Rank, peers: &mut Vec<Option<Peer>>| {
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

    /// Post a new operation.
    pub(crate) fn post(&mut self, op: &mut Op<'_>) {
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
                } else if peer.proto.try_eager(len) {
                    peer.push(Header::new(Opcode::Eager, slot.0, len, 0), fp.as_ref(), buf);
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
                if unconnected && let Some(lazy) = self.lazy.as_mut() {
                    lazy.want(to);
                }
            }
            OpKind::Recv { .. } | OpKind::RecvAny { .. } => {
                let (from, slot, cap): (Vec<Rank>, Slot, u64) = match op.kind() {
                    OpKind::Recv { from, slot, buf } => (vec![*from], *slot, buf.len() as u64),
                    OpKind::RecvAny { from, slot, buf } => (from.to_vec(), *slot, buf.len() as u64),
                    OpKind::Send { .. } => unreachable!("matched above"),
                };
                if let Some(lazy) = self.lazy.as_mut() {
                    for r in &from {
                        if self.peers[r.index()].as_ref().is_some_and(Peer::is_unconnected) {
                            lazy.want(*r);
                        }
                    }
                }
                self.recs.insert(
                    id,
                    Rec::Recv { from: from.clone(), slot, cap, fp, len: 0, st: RecvSt::Posted },
                );
                // Messages a peer sent before it left are still delivered, so the matcher
                // sees every candidate first.
                if let Some(o) = self.matcher.post(id, &from, slot, cap, fp) {
                    self.apply(o);
                } else {
                    self.narrow_to_live(id);
                }
            }
        }
        op.set_state(OpState::Posted(id));
    }

    /// A posted receive may only wait for live peers: drop the dead ones from its candidates
    /// (posting it again), or fail it when none is left.
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
                            RecvSt::Transfer { peer: peer_rank }
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
            Body::Eager(v) => {
                if let Some(c) = peer.proto.eager_consumed(v.len() as u64) {
                    peer.push(Header::new(Opcode::Credit, 0, 0, c), None, &[]);
                }
            }
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

    /// Complete what can be completed among the caller's operations; returns the first
    /// failure.
    pub(crate) fn reap(&mut self, ops: &mut [Op<'_>]) -> Option<Error> {
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
                    SendSt::Failed(e) => {
                        // A failed operation is over, as a withdrawn one is: Cancelled.
                        first_err.get_or_insert_with(|| e.clone());
                        op.set_state(OpState::Cancelled);
                        self.recs.remove(&id);
                    }
                    _ => {}
                },
                Rec::Recv { st, .. } => match st {
                    RecvSt::Eager(_) => {
                        let Some(Rec::Recv { st: RecvSt::Eager(m), .. }) = self.recs.remove(&id)
                        else {
                            unreachable!("checked above")
                        };
                        let Body::Eager(data) = m.body else { unreachable!("eager state") };
                        // The matcher checked the length against this buffer, unless the
                        // caller swapped in a shorter one since.
                        match recv_buf(op).get_mut(..data.len()) {
                            Some(dst) => dst.copy_from_slice(&data),
                            None => {
                                first_err.get_or_insert_with(shrunk);
                                continue;
                            }
                        }
                        op.set_state(OpState::Done { peer: m.peer, len: data.len() });
                        if let Some(peer) = self.peers[m.peer.index()].as_mut()
                            && let Some(c) = peer.proto.eager_consumed(data.len() as u64)
                        {
                            peer.push(Header::new(Opcode::Credit, 0, 0, c), None, &[]);
                        }
                    }
                    RecvSt::Done { peer, len } => {
                        op.set_state(OpState::Done { peer: *peer, len: *len as usize });
                        self.recs.remove(&id);
                    }
                    RecvSt::Failed(e) => {
                        first_err.get_or_insert_with(|| e.clone());
                        op.set_state(OpState::Cancelled);
                        self.recs.remove(&id);
                    }
                    _ => {}
                },
            }
        }
        first_err
    }

    /// Move bytes on every peer; returns whether anything moved.
    pub(crate) fn pump(&mut self, mine: &mut Mine<'_, '_>, force: bool) -> bool {
        let mut moved = self.lazy.is_some() && self.drive_lazy(force);
        for r in 0..self.peers.len() {
            if self.peers[r].as_ref().is_none_or(|p| p.stream.is_none()) {
                continue;
            }
            match self.pump_rx(r, mine, force) {
                Ok(m) => moved |= m,
                Err((e, poison)) => {
                    self.fail_peer(Rank(r as u32), e, poison);
                    moved = true;
                    continue;
                }
            }
            match self.pump_tx(r, mine, force) {
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
    ) -> std::result::Result<bool, (Error, bool)> {
        let mut moved = false;
        let mut budget = PUMP_BUDGET;
        loop {
            // Acting on an event may have closed this very connection.
            if self.peers[r].as_ref().is_none_or(|p| p.stream.is_none()) {
                return Ok(moved);
            }
            let ev = {
                let peer = self.peers[r].as_mut().expect("checked just above");
                Self::rx_step(peer, mine, force, &mut moved, &mut budget)?
            };
            match ev {
                RxEvent::Stop => return Ok(moved),
                RxEvent::Arrived(m) => {
                    let outs = self.matcher.arrive(m).map_err(|e| (e, true))?;
                    for o in outs {
                        self.apply(o);
                    }
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

    /// One step of reading a peer: process staged bytes, or read more.
    fn rx_step(
        peer: &mut Peer,
        mine: &mut Mine<'_, '_>,
        force: bool,
        moved: &mut bool,
        budget: &mut u64,
    ) -> std::result::Result<RxEvent, (Error, bool)> {
        let proto_err = |e: Error| (e, true);
        loop {
            let staged = peer.re - peer.rs;
            match &mut peer.rx {
                Rx::Idle if staged > 0 => {
                    let (n, step) =
                        peer.reader.feed(&peer.rbuf[peer.rs..peer.re]).map_err(proto_err)?;
                    peer.rs += n;
                    *moved = true;
                    let Step::Header(h, fp) = step else { continue };
                    match peer.proto.on_header(&h, fp).map_err(proto_err)? {
                        Incoming::Eager { slot, fp, len } => {
                            if len == 0 {
                                let m = Message::new(peer.rank, slot, fp, Body::Eager(Vec::new()));
                                return Ok(RxEvent::Arrived(m));
                            }
                            // Bounded by EAGER_MAX and charged against the credit window.
                            let buf = Vec::with_capacity(len as usize);
                            peer.rx = Rx::Eager { slot, fp, buf };
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
                        if let Some(i) = idx {
                            let dst = checked_range(recv_buf(&mut mine.ops[i]), offset, n)
                                .ok_or_else(|| proto_err(out_of_buffer(peer.rank, xfer)))?;
                            dst.copy_from_slice(&peer.rbuf[peer.rs..peer.rs + n as usize]);
                        }
                        peer.rs += n as usize;
                        n
                    } else {
                        // Out of budget: stop with the readiness kept, so the next pump
                        // goes on from here.
                        if !(peer.readable || force) || *budget == 0 {
                            return Ok(RxEvent::Stop);
                        }
                        let Some(i) = idx.filter(|_| left >= DIRECT_MIN) else {
                            // Small or discarded payload: go through the staging buffer.
                            match Self::fill(peer, budget)? {
                                true => continue,
                                false => return Ok(RxEvent::Stop),
                            }
                        };
                        let want = left.min(MAX_IO);
                        let dst = checked_range(recv_buf(&mut mine.ops[i]), offset, want)
                            .ok_or_else(|| proto_err(out_of_buffer(peer.rank, xfer)))?;
                        let stream = peer.stream.as_mut().expect("pumped peers have a stream");
                        let asked = dst.len();
                        match stream.read(dst) {
                            Ok(0) => return Err(eof(peer)),
                            Ok(n) => {
                                peer.last_heard = Instant::now();
                                *budget = budget.saturating_sub(n as u64);
                                if n < asked && stream.drains_on_short_io() {
                                    peer.readable = false;
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
                    peer.reader.consume_payload(n);
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
                    if !(peer.readable || force) || *budget == 0 {
                        return Ok(RxEvent::Stop);
                    }
                    if !Self::fill(peer, budget)? {
                        return Ok(RxEvent::Stop);
                    }
                }
            }
        }
    }

    /// Read into the (empty) staging buffer, charging `budget`; returns whether bytes came.
    fn fill(peer: &mut Peer, budget: &mut u64) -> std::result::Result<bool, (Error, bool)> {
        if peer.rs == peer.re {
            peer.rs = 0;
            peer.re = 0;
        }
        let stream = peer.stream.as_mut().expect("pumped peers have a stream");
        loop {
            let asked = peer.rbuf.len() - peer.re;
            match stream.read(&mut peer.rbuf[peer.re..]) {
                Ok(0) => return Err(eof(peer)),
                Ok(n) => {
                    // Edge-triggered readiness: a short read drained the socket, and the next
                    // arrival raises a new event, so no read is needed just to see EAGAIN.
                    if n < asked && stream.drains_on_short_io() {
                        peer.readable = false;
                    }
                    peer.re += n;
                    peer.last_heard = Instant::now();
                    *budget = budget.saturating_sub(n as u64);
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

    fn pump_tx(&mut self, r: usize, mine: &mut Mine<'_, '_>, force: bool) -> Result<bool> {
        let Some(peer) = self.peers[r].as_mut().filter(|p| p.stream.is_some()) else {
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
            let stream = peer.stream.as_mut().expect("pumped peers have a stream");
            if stream.has_pending_output() {
                match stream.flush_pending() {
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
                let bufs = [IoSlice::new(&a.hdr[a.hdr_sent..]), IoSlice::new(payload)];
                let asked = bufs[0].len() + bufs[1].len();
                match stream.write_vectored(&bufs) {
                    Ok(n) => {
                        let h = HEADER_LEN - a.hdr_sent;
                        if n <= h {
                            a.hdr_sent += n;
                        } else {
                            a.hdr_sent = HEADER_LEN;
                            a.pos += (n - h) as u64;
                            a.left -= (n - h) as u64;
                        }
                        if a.hdr_sent == HEADER_LEN && a.left == 0 {
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
                match stream.write_vectored(&[IoSlice::new(x), IoSlice::new(y)]) {
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
                let hdr = Header::new(Opcode::Data, *next, chunk, *xfer).encode();
                peer.active = Some(Active { send, hdr, hdr_sent: 0, pos: *next, left: chunk });
                *next += chunk;
                if *next == *len {
                    peer.cleared.remove(k);
                }
                continue;
            } else {
                break;
            };
            let drains = stream.drains_on_short_io();
            match res {
                Ok((0, _)) => {
                    return Err(Error::PeerLost {
                        peer: peer.rank,
                        reason: "the connection accepts no more bytes".into(),
                    });
                }
                Ok((n, asked)) => {
                    moved = true;
                    peer.last_sent = Instant::now();
                    budget = budget.saturating_sub(n as u64);
                    if n < asked && drains {
                        // The socket buffer is full; an event comes when it has room.
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
    /// writing into the owned queue, in front of what was queued behind it.
    pub(crate) fn release(&mut self, ops: &mut [Op<'_>]) {
        let mine = Mine { ops };
        let mut broken = Vec::new();
        for peer in self.peers.iter_mut().flatten() {
            let Some(a) = &peer.active else { continue };
            let Some(i) = mine.find(a.send) else { continue };
            let buf = send_buf(&mine.ops[i]);
            let Some(payload) = buf.get(a.pos as usize..(a.pos + a.left) as usize) else {
                // The caller swapped the buffer for a shorter one mid-send: the frame cannot
                // be completed, so the stream is beyond repair.
                broken.push(peer.rank);
                continue;
            };
            let mut rest = VecDeque::with_capacity(HEADER_LEN + payload.len() + peer.out.len());
            rest.extend(&a.hdr[a.hdr_sent..]);
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
        // Mark what that completed.
        let _ = self.reap(mine.ops);
    }

    /// Close the connection to `rank`: fail every operation that depends on it.
    pub(crate) fn fail_peer(&mut self, rank: Rank, e: Error, poison: bool) {
        let Some(peer) = self.peers[rank.index()].as_mut() else { return };
        if peer.dead.is_some() {
            return;
        }
        tracing::debug!(rank = %self.me, peer = %rank, error = %e, "closing connection");
        if matches!(e, Error::Cancelled { .. }) && peer.active.is_none() {
            // A cancel ends this pair only: say goodbye (best effort, between frames) so the
            // peer fails its operations with us instead of taking this rank for dead.
            peer.push(Header::new(Opcode::Goodbye, 0, 0, 0), None, &[]);
        }
        if matches!(e, Error::Cancelled { .. })
            && peer.active.is_none()
            && let Some(s) = peer.stream.as_mut()
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
        if let Some(mut s) = peer.stream.take() {
            let _ = self.registry.deregister(s.source());
        }
        peer.dead = Some(e.clone());
        peer.rx = Rx::Idle;
        peer.out.clear();
        peer.active = None;
        peer.cleared.clear();
        for recv in self.matcher.drop_peer(rank) {
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
                Rec::Recv { st, .. } if matches!(&*st, RecvSt::Transfer { peer } if *peer == rank) =>
                {
                    *st = RecvSt::Failed(e.clone());
                }
                _ => {}
            }
        }
        // A lost peer poisons the group; a peer that broke the protocol or failed to
        // authenticate only loses its own connection (see the trait's error scopes).
        if poison && matches!(e, Error::PeerLost { .. } | Error::Aborted { .. }) {
            self.poison.get_or_insert(e);
        }
    }

    /// Queue `Abort { reason }` (cut to the 1 KiB limit) to every live peer and push it out
    /// as far as the sockets take it now.
    pub(crate) fn abort_peers(&mut self, reason: &str) {
        let mut cut = reason.len().min(ABORT_REASON_MAX as usize);
        while !reason.is_char_boundary(cut) {
            cut -= 1;
        }
        let r = &reason.as_bytes()[..cut];
        self.broadcast(Header::new(Opcode::Abort, 0, r.len() as u64, 0), r);
        let mut none: [Op<'_>; 0] = [];
        let mut mine = Mine { ops: &mut none };
        for r in 0..self.peers.len() {
            if self.peers[r].as_ref().is_some_and(|p| p.stream.is_some() && p.dead.is_none()) {
                // Best effort: what does not fit now goes with the next pump.
                let _ = self.pump_tx(r, &mut mine, true);
            }
        }
    }

    /// Withdraw the caller's incomplete operations.
    pub(crate) fn cancel(&mut self, ops: &mut [Op<'_>]) {
        // On a poisoned communicator nothing more will run: forget the operations without
        // closing connections, so the peers read this rank's Abort rather than a reset.
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
                Some(Rec::Recv { st: RecvSt::Transfer { peer }, slot, .. }) => {
                    self.fail_peer(peer, Error::Cancelled { peer, slot }, false);
                }
                Some(Rec::Send {
                    to,
                    slot,
                    st: SendSt::AwaitCts | SendSt::Streaming { .. },
                    ..
                }) => {
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
            if pending.len() < 8 {
                pending.push(match self.recs.get(&id) {
                    Some(Rec::Send { to, slot, .. }) => Pending::Send { to: *to, slot: *slot },
                    Some(Rec::Recv { from, slot, .. }) => {
                        Pending::Recv { from: from.clone(), slot: *slot }
                    }
                    None => continue,
                });
            }
        }
        Error::Timeout { rank: self.me, waited, pending }
    }

    /// Mark readiness from poll events.
    pub(crate) fn note_events(&mut self, events: &Events) {
        for ev in events.iter() {
            if ev.token() == WAKE {
                continue;
            }
            if let Some(Some(p)) = self.peers.get_mut(ev.token().0) {
                if ev.is_readable() || ev.is_read_closed() || ev.is_error() {
                    p.readable = true;
                }
                if ev.is_writable() || ev.is_write_closed() || ev.is_error() {
                    p.writable = true;
                }
            } else if let Some(lazy) = self.lazy.as_mut() {
                lazy.note(ev.token());
            }
        }
    }

    /// Queue a frame with no payload for every live peer.
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

    /// Run [`tick`](Driver::tick) if it is due, then not again for `period`. Both the
    /// heartbeat thread and callers inside `progress` call this: a caller whose every pump
    /// moves data (a multi-GiB receive) keeps the driver's lock for seconds, and a heartbeat
    /// that depended on the background thread winning that lock would stop, so the peer
    /// would take this busy rank for a dead one.
    pub(crate) fn tick_if_due(
        &mut self,
        now: Instant,
        period: Duration,
        timeouts: (Duration, Duration),
    ) -> bool {
        if !self.tick_due(now) {
            return false;
        }
        self.next_tick = now + period;
        self.tick(now, timeouts.0, timeouts.1)
    }

    /// Heartbeats and liveness: queue a heartbeat for every peer we have not written to for
    /// `interval`, and fail every peer we have not heard from for `timeout`.
    fn tick(&mut self, now: Instant, interval: Duration, timeout: Duration) -> bool {
        let mut lost = Vec::new();
        for p in self.peers.iter_mut().flatten() {
            // A lazy communicator's peer with no connection yet has nobody to hear from.
            if p.dead.is_some() || p.stream.is_none() {
                continue;
            }
            if now.duration_since(p.last_sent) >= interval && p.out.is_empty() {
                p.push(Header::new(Opcode::Heartbeat, 0, 0, 0), None, &[]);
            }
            // Time during which we ourselves do not read this peer does not count, nor do
            // bytes the peer sent that we have not read yet (this process may have been
            // descheduled between its last read and this check).
            if p.read_stalled(&self.active) {
                p.last_heard = now;
            } else if now.duration_since(p.last_heard) > timeout {
                if p.stream.as_ref().is_some_and(|s| s.input_waiting()) {
                    p.last_heard = now;
                } else {
                    lost.push((p.rank, now.duration_since(p.last_heard)));
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

    /// The ranks this rank has a live connection to.
    pub(crate) fn connected_peers(&self) -> Vec<Rank> {
        self.peers.iter().flatten().filter(|p| p.stream.is_some()).map(|p| p.rank).collect()
    }

    /// Whether any live peer has queued bytes not yet written.
    pub(crate) fn has_unsent(&self) -> bool {
        self.peers
            .iter()
            .flatten()
            .any(|p| p.stream.as_ref().is_some_and(|s| !p.out.is_empty() || s.has_pending_output()))
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

fn shrunk() -> Error {
    Error::invalid("an operation's buffer was replaced by a shorter one while it was posted")
}

fn out_of_buffer(peer: Rank, xfer: u64) -> Error {
    Error::protocol(peer, format!("data for transfer {xfer} runs past the posted buffer"))
}

fn eof(peer: &Peer) -> (Error, bool) {
    if peer.said_goodbye {
        (Error::PeerLost { peer: peer.rank, reason: "closed its communicator".into() }, false)
    } else {
        let reason = "the connection closed without a goodbye (the process died?)".into();
        (Error::PeerLost { peer: peer.rank, reason }, true)
    }
}

/// A connection error: group-fatal, unless the peer said goodbye first (then a reset is
/// just how its close arrived). A stream layer's verdict on the peer's bytes (forged or
/// broken records) is the peer's protocol error, as garbage frames are.
fn lost(peer: &Peer, e: &io::Error) -> (Error, bool) {
    if matches!(e.kind(), io::ErrorKind::InvalidData | io::ErrorKind::PermissionDenied) {
        return (super::stream::stream_error(Some(peer.rank), "the stream layer", e), false);
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
