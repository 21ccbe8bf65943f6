//! The TCP transport: a mesh of TCP connections driven by the callers' own threads.
//!
//! What it does: binds one chosen address (never the wildcard; see [`TcpConfig`]),
//! connects every pair of ranks with an authenticated handshake ([`TcpListener`]) — all at
//! once, or each pair on its first use ([lazily](#lazy-connection)) — and runs
//! the [wire protocol](crate::proto) over non-blocking sockets with mio ([`TcpComm`]).
//! Small messages go eagerly; large ones are read straight into the posted buffer after a
//! ready-to-send / clear-to-send exchange. A heartbeat thread per communicator keeps liveness
//! while the application computes; it never touches a user buffer.
//!
//! What it does not do: encrypt (that is `gloo-tls`, which sits on the [`ByteStream`] seam),
//! find peers (`gloo-rendezvous`), or reconnect after a connection is lost (a lost peer is a
//! typed error; the job decides what to do).
//!
//! # Progress and threads
//!
//! [`Communicator::progress`](crate::Communicator::progress) runs on the caller's thread:
//! it posts the batch, then loops over non-blocking reads and writes, spinning for the
//! [busy-poll window](TcpConfig::busy_poll) before sleeping in `epoll`. One thread at a time
//! sleeps in the poller; others wait on a condition variable and are woken when something
//! moves. Data that arrives for another thread's receive either goes through the bounded
//! eager buffer (small messages) or makes the reading thread stop reading that socket until
//! the receive's owner reads the payload into its own buffer. A send part-way through a
//! frame when its call returns has the rest of that frame copied into an owned queue, so no
//! pointer to a caller's buffer outlives the call.
//!
//! # Liveness and errors
//!
//! Every peer is sent a `Heartbeat` when nothing else went to it for about a second (a
//! quarter of the [peer timeout](TcpConfig::peer_timeout) when that is shorter). The liveness
//! tick that does this runs on a background thread per communicator, which also drains
//! control and eager frames while no caller is inside `progress`, and on a caller's thread
//! inside `progress` whenever it is due: a caller moving a multi-GiB message holds the
//! driver's lock, and heartbeats that waited for the background thread would stop. One pump
//! moves at most 16 MiB per peer and direction, and takes at most 64 frames from a peer,
//! before it returns, so the tick (and the other peers) come round every few milliseconds
//! whatever a peer sends. A peer heard from for nothing within the peer
//! timeout is [`PeerLost`](crate::Error::PeerLost) (time during which we ourselves leave its
//! data unread, because the receive it belongs to is not being driven, does not count, and
//! neither does a silence with its bytes waiting unread in our socket); an end of stream or a
//! reset is `PeerLost` at once. Both poison the communicator, as
//! does an `Abort`. A peer that said `Goodbye` before closing (it dropped its communicator)
//! fails only the operations still waiting on it, so ranks may finish in any order; messages
//! it sent before leaving are still delivered. A peer that breaks the protocol or fails authentication only has its own
//! connection closed (see the error scopes on [`Communicator`](crate::Communicator)).
//! Dropping a [`TcpComm`] says `Goodbye` (or, when a lost peer poisoned it, sends `Abort`
//! with that loss as the reason, so the survivors learn why), joins the heartbeat thread and
//! closes every socket. Cancelling an operation part-way through its message closes only that
//! peer's connection, with a `Goodbye` when the stream is between frames; on a poisoned
//! communicator a cancel closes nothing.
//!
//! # Lazy connection
//!
//! [`TcpListener::connect_lazy`] returns a communicator with no connection at all, for large
//! jobs in which each rank talks to few peers (a ring, a tree, a pipeline). The first
//! operation posted for a peer (a send to it, or a receive that may come from it) starts a
//! non-blocking dial and the same authenticated handshake as the full mesh; the listening
//! socket stays open, and is served by every call and, while no caller is inside one, by
//! the heartbeat thread (every 10 ms), so a peer may equally dial this rank first, even
//! while it computes. Operations wait for the connection without blocking
//! anything else, bounded by their own deadlines; an eager send to a peer not connected yet
//! completes once the connection is made. When both ranks of a pair dial each other at once,
//! the handshake ends with the acceptor's verdict, and the lower rank's dial is the one
//! kept, so every pair has exactly one connection and no message is lost or reordered (the
//! argument is in the driver's `lazy` module). [`TcpComm::connected_peers`] shows which
//! pairs were connected.
//!
//! Once connected, a pair behaves exactly as in the full mesh (liveness, goodbye, loss
//! poisoning the group, abort). What differs:
//!
//! - A peer that cannot be reached (the connection is refused or reset, or the handshake
//!   does not finish within the handshake timeout, the larger of the peer timeout and one
//!   second) fails the operations with it with [`PeerLost`](crate::Error::PeerLost) naming
//!   it and the cause, or [`Auth`](crate::Error::Auth) when it fails authentication; this
//!   does not poison the group, since a refused connection cannot tell a dead rank from one
//!   that finished and dropped its communicator. The same holds for a rank whose dial was
//!   declined because the peer was dialling it: if the peer's connection has not arrived
//!   after twice the handshake timeout, the peer's dial failed, and the operations with it
//!   fail with `PeerLost` then, not at their deadlines.
//! - An abort reaches the peers connected at the time at once. A peer not connected yet
//!   learns of it when it connects: an aborted communicator still accepts connections, and
//!   the `Abort` is queued for every peer, connected or not, so it goes out on the
//!   connection as soon as it exists. A peer that never connects never hears of it, which is
//!   harmless: it needs nothing from this rank.
//! - Incoming connections that fail their handshake (garbage, a wrong token, silence) are
//!   dropped with a log line and disturb no other connection; at most 64 are held at once
//!   (the one waiting longest is dropped to make room), so a flood cannot make a
//!   communicator allocate without bound, nor keep a real rank out for long.
//! - A send cancelled while its peer was not connected yet may still be delivered when the
//!   connection comes (its bytes were already queued for that peer).

mod comm;
mod config;
mod connect;
mod driver;
mod stream;

pub use comm::TcpComm;
pub use config::{
    DEFAULT_BUSY_POLL, DEFAULT_PEER_TIMEOUT, IFNAME_ENV, MASTER_ADDR_ENV, Security, TOKEN_ENV,
    TcpConfig,
};
pub use connect::TcpListener;
pub use stream::{ByteStream, StreamLayer};
