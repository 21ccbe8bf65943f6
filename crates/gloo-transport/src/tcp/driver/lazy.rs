//! Lazy connection: each pair of ranks connects on its first use.
//!
//! A lazy communicator keeps its listening socket in its poller for its whole life. Posting
//! an operation that needs a peer with no connection asks for a dial ([`Lazy::want`]); every
//! pump then starts the dials asked for, accepts incoming connections, and moves each
//! handshake forward without blocking (the same [`step`] and [`dial`] as the full mesh's
//! set-up). A connection whose handshake completes and is kept becomes the peer's stream,
//! and the frames queued for that peer while it had none go out first.
//!
//! # One connection per pair, even when both ranks dial at once
//!
//! Each side keeps a [`Link`] per peer, changed only under the driver's lock. The acceptor
//! of an authenticated connection from rank `c` decides (and says, in the handshake's last
//! frame) whether to keep it:
//!
//! - it declines when it already has a connection to `c` (or is accepting one), or when it
//!   has failed `c`;
//! - it declines when its own dial to `c` is under way and it is the LOWER rank;
//! - otherwise it accepts: when idle, when its own dial was declined, and, as the HIGHER
//!   rank, even while its own dial to `c` is under way.
//!
//! Why this is race-free: take ranks `l < h`. Rank `l` dials at most once (it dials only from
//! `Idle`). Suppose both dial. At `l`, `h`'s dial is decided either while `l` is `Dialling`
//! (declined by the second rule) or after `l`'s own dial finished (declined by the first);
//! it cannot find `l` idle, since `l` was dialling before it. So `h`'s dial is always
//! declined. At `h`, `l`'s dial finds `h` `Dialling` or `Declined` (never connected: the
//! only other connection would be `h`'s own dial, which `l` declines), so it is accepted.
//! If only one side dials, the other finds itself `Idle` (or, for `h`, `Declined` is
//! impossible without a dial of its own) and accepts; a dial it would later want finds the
//! link no longer `Idle` and is never started. In every case exactly one connection is
//! accepted, both sides agree which (the verdict travels on it), and data is only ever
//! written to an accepted connection: frames posted before it exists wait in the peer's
//! queue, in order, and follow the verdict on that connection. A rank whose dial was
//! declined waits for the peer's dial. That dial was under way when it declined, and a dial
//! ends within the handshake timeout, connected or failed; so when no connection from the
//! peer has been accepted after twice that, the peer's dial failed (it has failed us in
//! turn), and the operations with it fail with [`Error::PeerLost`] rather than waiting for
//! their deadlines.
//!
//! # Errors
//!
//! A dial that fails (refused, reset, no handshake within the handshake timeout) fails the
//! operations with that peer with [`Error::PeerLost`] naming it and the cause; a peer that
//! fails authentication gives [`Error::Auth`]. Neither poisons the group: a rank that cannot
//! be reached may simply have finished and dropped its communicator, which a refused
//! connection cannot tell from a death. Incoming connections that fail their handshake (bad
//! bytes, a wrong token, silence past the handshake timeout) are dropped with a log line
//! and affect nobody; at most [`MAX_INCOMING`] of them are held at once (the oldest is
//! dropped to make room for a new one).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use mio::{Interest, Registry, Token};

use super::TcpLink;
use crate::engine::Engine;
use crate::proto::{Handshake, HandshakeConfig, fresh_nonce};
use crate::tcp::config::Layer;
use crate::tcp::connect::{Conn, ConnStream, LISTEN, MAX_INCOMING, data_stream, dial, step};
use crate::{Error, Rank};

/// The engine a lazy communicator attaches its connections to.
type Eng = Engine<TcpLink>;

/// This rank's view of its connection to one peer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Link {
    /// No connection and none being made.
    Idle,
    /// Our dial (the connection with this token) is under way.
    Dialling(usize),
    /// The peer declined our dial (at this time): its own dial to us is under way or done.
    Declined(Instant),
    /// We accepted the peer's dial (the connection with this token) and are writing the
    /// verdict.
    Accepting(usize),
    /// Connected or failed, as the peer's `Peer` says.
    Settled,
}

/// A connection in its handshake.
struct Pending {
    conn: Conn,
    /// Readiness arrived since the last step.
    ready: bool,
}

/// The lazy-connection state of a communicator.
pub(crate) struct Lazy {
    listener: mio::net::TcpListener,
    addrs: Vec<Option<SocketAddr>>,
    hs: HandshakeConfig,
    layer: Option<Layer>,
    hs_timeout: Duration,
    /// Whether every frame carries a check block (both sides of a pair must agree).
    integrity: bool,
    links: Links,
    conns: HashMap<usize, Pending>,
    /// Tokens of handshaking connections start above every rank (peers' tokens are their
    /// ranks) and are never reused.
    next_token: usize,
    /// The listener may have connections to accept.
    accept_ready: bool,
    /// Incoming connections in `conns`.
    incoming: usize,
    /// Peers to dial at the next pump.
    want: Vec<Rank>,
    /// Whether each rank is in `want` (a receive from any of many ranks asks for each).
    wanted: Vec<bool>,
}

/// The [`Link`] to every peer, and how many are `Declined` (the pump looks for expired
/// declines only when some are).
struct Links {
    v: Vec<Link>,
    declined: usize,
}

impl Links {
    fn set(&mut self, i: usize, link: Link) {
        let was = matches!(self.v[i], Link::Declined(_));
        let is = matches!(link, Link::Declined(_));
        self.declined = self.declined + usize::from(is) - usize::from(was);
        self.v[i] = link;
    }

    fn get(&self, i: usize) -> Option<&Link> {
        self.v.get(i)
    }

    fn contains(&self, link: &Link) -> bool {
        self.v.contains(link)
    }
}

impl std::ops::Index<usize> for Links {
    type Output = Link;

    fn index(&self, i: usize) -> &Link {
        &self.v[i]
    }
}

impl Lazy {
    pub(crate) fn new(
        listener: mio::net::TcpListener,
        addrs: Vec<Option<SocketAddr>>,
        hs: HandshakeConfig,
        layer: Option<Layer>,
        hs_timeout: Duration,
        integrity: bool,
    ) -> Lazy {
        let n = addrs.len();
        Lazy {
            listener,
            hs,
            layer,
            hs_timeout,
            integrity,
            links: Links { v: vec![Link::Idle; n], declined: 0 },
            conns: HashMap::new(),
            next_token: n,
            // Connections may have queued in the backlog before the listener was registered.
            accept_ready: true,
            incoming: 0,
            want: Vec::new(),
            wanted: vec![false; n],
            addrs,
        }
    }

    /// An operation needs `peer`, which has no connection: dial it unless a connection is
    /// already being made.
    pub(crate) fn want(&mut self, peer: Rank) {
        let i = peer.index();
        if self.links.get(i) == Some(&Link::Idle) && !self.wanted[i] {
            self.wanted[i] = true;
            self.want.push(peer);
        }
    }

    /// A poll event for a token that is not a peer's.
    pub(crate) fn note(&mut self, token: Token) {
        if token == LISTEN {
            self.accept_ready = true;
        } else if let Some(p) = self.conns.get_mut(&token.0) {
            p.ready = true;
        }
    }

    fn token(&mut self) -> usize {
        let t = self.next_token;
        self.next_token += 1;
        t
    }

    /// Start the dials asked for, accept, and move handshakes on (all of them when `force`,
    /// else those with readiness or past their time). Returns whether a peer was connected
    /// or failed.
    pub(crate) fn drive(&mut self, d: &mut Eng, reg: &Registry, force: bool, now: Instant) -> bool {
        let mut moved = false;
        if !self.want.is_empty() {
            for r in std::mem::take(&mut self.want) {
                self.wanted[r.index()] = false;
                // A poisoned communicator runs no more operations: no point connecting.
                if d.poisoned().is_none() {
                    moved |= self.start_dial(d, reg, r, now);
                }
            }
        }
        if self.accept_ready || force {
            self.accept(reg, now);
        }
        if self.links.declined > 0 {
            moved |= self.expire_declined(d, now);
        }
        if !self.conns.is_empty() {
            let due: Vec<usize> = self
                .conns
                .iter()
                .filter(|(_, p)| p.ready || force || now >= p.conn.until)
                .map(|(t, _)| *t)
                .collect();
            for t in due {
                moved |= self.advance(d, reg, t, now);
            }
        }
        moved
    }

    fn start_dial(&mut self, d: &mut Eng, reg: &Registry, r: Rank, now: Instant) -> bool {
        let i = r.index();
        if self.links[i] != Link::Idle || !d.is_unconnected(r) {
            return false;
        }
        let Some(addr) = self.addrs[i] else { return false };
        let t = self.token();
        let lost = |e: std::io::Error| Error::PeerLost {
            peer: r,
            reason: format!("could not connect to {addr}: {e}"),
        };
        let started = dial(addr)
            .map_err(lost)
            .and_then(|s| ConnStream::new(self.layer.as_ref(), Some(r), s))
            .and_then(|mut s| {
                let interest = Interest::READABLE | Interest::WRITABLE;
                reg.register(s.io().source(), Token(t), interest).map_err(lost)?;
                Ok(s)
            });
        let (stream, nonce) = match started.and_then(|s| Ok((s, fresh_nonce()?))) {
            Ok(x) => x,
            Err(e) => {
                self.links.set(i, Link::Settled);
                d.close_peer(r, e, false);
                return true;
            }
        };
        tracing::debug!(rank = %self.hs.me, peer = %r, %addr, "dialling on first use");
        let mut hs = Handshake::connector(self.hs.clone(), r, nonce).lazy();
        if self.integrity {
            hs = hs.integrity();
        }
        let conn = Conn {
            stream,
            hs,
            leftover: Vec::new(),
            until: now + self.hs_timeout,
            dialled: Some((r, false)),
        };
        self.conns.insert(t, Pending { conn, ready: true });
        self.links.set(i, Link::Dialling(t));
        false
    }

    fn accept(&mut self, reg: &Registry, now: Instant) {
        loop {
            match self.listener.accept() {
                Ok((stream, from)) => {
                    if self.incoming >= MAX_INCOMING {
                        self.evict_oldest(reg);
                    }
                    let _ = stream.set_nodelay(true);
                    let t = self.token();
                    let interest = Interest::READABLE | Interest::WRITABLE;
                    let Ok(mut stream) = ConnStream::new(self.layer.as_ref(), None, stream) else {
                        continue;
                    };
                    if reg.register(stream.io().source(), Token(t), interest).is_err() {
                        continue;
                    }
                    let Ok(nonce) = fresh_nonce() else { continue };
                    tracing::trace!(rank = %self.hs.me, %from, "accepted");
                    let mut hs = Handshake::acceptor(self.hs.clone(), nonce).lazy();
                    if self.integrity {
                        hs = hs.integrity();
                    }
                    let until = now + self.hs_timeout;
                    let conn = Conn { stream, hs, leftover: Vec::new(), until, dialled: None };
                    self.conns.insert(t, Pending { conn, ready: true });
                    self.incoming += 1;
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    self.accept_ready = false;
                    return;
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => {
                    // Resource exhaustion (EMFILE...) is transient: the heartbeat's forced
                    // pump tries again.
                    tracing::warn!(rank = %self.hs.me, error = %crate::ErrorChain(&e), "accept failed");
                    self.accept_ready = false;
                    return;
                }
            }
        }
    }

    /// Make room for a new incoming connection by dropping the one that has been in its
    /// handshake longest. A real rank completes its handshake in a round trip or two, so
    /// under a flood of connections that say nothing it is the flood that is dropped, while
    /// a rank that dials meanwhile gets in at once rather than waiting in the backlog past
    /// its own handshake timeout.
    fn evict_oldest(&mut self, reg: &Registry) {
        let links = &self.links;
        let oldest = self
            .conns
            .iter()
            .filter(|(t, p)| p.conn.dialled.is_none() && !links.contains(&Link::Accepting(**t)))
            // Tokens grow in accept order: the lowest is the oldest (one batch of accepts
            // shares an instant, so `until` cannot tell them apart).
            .min_by_key(|(t, _)| **t)
            .map(|(t, _)| *t);
        if let Some(t) = oldest
            && let Some(mut p) = self.conns.remove(&t)
        {
            let _ = reg.deregister(p.conn.stream.io().source());
            p.conn.stream.shutdown();
            self.incoming -= 1;
            tracing::warn!(rank = %self.hs.me, max = MAX_INCOMING, "dropped an incoming connection: too many handshakes at once");
        }
    }

    /// Move one handshake on; returns whether a peer was connected or failed.
    fn advance(&mut self, d: &mut Eng, reg: &Registry, t: usize, now: Instant) -> bool {
        let Some(p) = self.conns.get_mut(&t) else { return false };
        p.ready = false;
        let mut res = step(&mut p.conn, now);
        if matches!(res, Ok(None))
            && let Some(c) = p.conn.hs.pending_verdict()
        {
            let dead = c == d.rank() || c.0 >= d.size() || d.is_failed(c);
            let accept = verdict(self.hs.me, c, self.links[c.index()], dead);
            tracing::debug!(rank = %self.hs.me, peer = %c, accept, "incoming connection");
            p.conn.hs.decide(accept);
            if accept {
                self.links.set(c.index(), Link::Accepting(t));
            }
            // Write the verdict now.
            res = step(&mut p.conn, now);
        }
        match res {
            Ok(None) => false,
            Ok(Some(rank)) => self.finish(d, reg, t, rank, now),
            Err(e) => self.failed(d, reg, t, e),
        }
    }

    /// A handshake completed on our side (our output written).
    fn finish(&mut self, d: &mut Eng, reg: &Registry, t: usize, rank: Rank, now: Instant) -> bool {
        let p = self.conns.remove(&t).expect("advance found it");
        let Conn { mut stream, hs, leftover, dialled, .. } = p.conn;
        if dialled.is_none() {
            self.incoming -= 1;
        }
        let i = rank.index();
        let ours = if dialled.is_some() { Link::Dialling(t) } else { Link::Accepting(t) };
        if hs.accepted() != Some(true) {
            // Declined, by us (the verdict is written; closing now is a clean end of
            // stream after it) or by the peer.
            let _ = reg.deregister(stream.io().source());
            if self.links[i] == Link::Dialling(t) {
                tracing::debug!(rank = %self.hs.me, peer = %rank, "dial declined; the peer's dial wins");
                self.links.set(i, Link::Declined(Instant::now()));
            }
            return false;
        }
        if self.links[i] != ours {
            // Our dial was accepted although the pair is connected another way: only a peer
            // that broke the tie-break rule can cause this. Keep the first connection.
            tracing::warn!(rank = %self.hs.me, peer = %rank, "dropping a second connection to a connected peer");
            let _ = reg.deregister(stream.io().source());
            return false;
        }
        self.links.set(i, Link::Settled);
        let attached = reg
            .reregister(stream.io().source(), Token(i), Interest::READABLE | Interest::WRITABLE)
            .map_err(|e| Error::io(Some(rank), "registering", e))
            .and_then(|()| {
                data_stream(self.layer.as_ref(), rank, dialled.is_some(), stream, leftover)
            });
        match attached {
            Ok((stream, early)) => {
                if d.is_failed(rank) {
                    return false;
                }
                d.attach_at(rank, TcpLink(stream), &early, now);
                tracing::debug!(rank = %self.hs.me, peer = %rank, dialled = dialled.is_some(), "connected on first use");
            }
            Err(e) => d.close_peer(rank, e, false),
        }
        true
    }

    /// Fail the peers whose own dial, the one that made them decline ours, has had twice the
    /// handshake timeout to arrive and has not (see the module docs); returns whether any
    /// failed.
    fn expire_declined(&mut self, d: &mut Eng, now: Instant) -> bool {
        let wait = self.hs_timeout * 2;
        let mut moved = false;
        for i in 0..self.links.v.len() {
            let Link::Declined(since) = self.links[i] else { continue };
            if now < since + wait {
                continue;
            }
            self.links.set(i, Link::Settled);
            let r = Rank(i as u32);
            let reason = format!(
                "it declined our dial for its own, and its own had not arrived {wait:?} later"
            );
            d.close_peer(r, Error::PeerLost { peer: r, reason }, false);
            moved = true;
        }
        moved
    }

    /// A handshake failed.
    fn failed(&mut self, d: &mut Eng, reg: &Registry, t: usize, e: Error) -> bool {
        let mut p = self.conns.remove(&t).expect("advance found it");
        let _ = reg.deregister(p.conn.stream.io().source());
        p.conn.stream.shutdown();
        let me = self.hs.me;
        match p.conn.dialled {
            None => {
                self.incoming -= 1;
                // An accepted connection that broke while its verdict was being written was
                // this pair's only connection.
                if let Some(c) = p.conn.hs.claimed()
                    && self.links.get(c.index()) == Some(&Link::Accepting(t))
                {
                    self.links.set(c.index(), Link::Settled);
                    let reason = format!(
                        "the connection broke during its handshake: {}",
                        crate::ErrorChain(&e)
                    );
                    d.close_peer(c, Error::PeerLost { peer: c, reason }, false);
                    return true;
                }
                tracing::warn!(rank = %me, error = %crate::ErrorChain(&e), "dropped an incoming connection");
                false
            }
            Some((r, _)) => {
                let i = r.index();
                if self.links[i] != Link::Dialling(t) {
                    // The pair connected the other way meanwhile; this dial no longer matters.
                    return false;
                }
                self.links.set(i, Link::Settled);
                let e = match e {
                    Error::Auth { .. } => e,
                    other => {
                        let addr = self.addrs[i].map_or_else(String::new, |a| a.to_string());
                        Error::PeerLost {
                            peer: r,
                            reason: format!("could not connect to {addr}: {other}"),
                        }
                    }
                };
                tracing::debug!(rank = %me, peer = %r, error = %crate::ErrorChain(&e), "dial failed");
                d.close_peer(r, e, false);
                true
            }
        }
    }
}

/// The acceptor's verdict on an authenticated connection from `peer` (see the module docs
/// for why these rules leave exactly one connection per pair).
fn verdict(me: Rank, peer: Rank, link: Link, dead: bool) -> bool {
    match link {
        _ if dead => false,
        Link::Idle | Link::Declined(_) => true,
        Link::Dialling(_) => me > peer,
        Link::Accepting(_) | Link::Settled => false,
    }
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use super::{Link, verdict};
    use crate::Rank;

    #[test]
    fn the_lower_rank_keeps_its_own_dial_and_the_higher_accepts() {
        let (l, h) = (Rank(1), Rank(5));
        // Both dialling: the lower declines the higher's dial, the higher accepts the lower's.
        assert!(!verdict(l, h, Link::Dialling(9), false));
        assert!(verdict(h, l, Link::Dialling(9), false));
        // A declined higher rank takes the lower rank's dial.
        assert!(verdict(h, l, Link::Declined(Instant::now()), false));
        // Idle sides accept; connected, accepting or failed sides decline.
        for (me, peer) in [(l, h), (h, l)] {
            assert!(verdict(me, peer, Link::Idle, false));
            assert!(!verdict(me, peer, Link::Settled, false));
            assert!(!verdict(me, peer, Link::Accepting(3), false));
            assert!(!verdict(me, peer, Link::Idle, true));
        }
    }
}
