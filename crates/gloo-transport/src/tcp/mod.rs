//! The TCP transport: a full mesh of TCP connections driven by the callers' own threads.
//!
//! What it does: binds one chosen address (never the wildcard; see [`TcpConfig`]),
//! connects every pair of ranks with an authenticated handshake ([`TcpListener`]), and runs
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
//! A background thread per communicator sends a `Heartbeat` about every second (a quarter of
//! the [peer timeout](TcpConfig::peer_timeout) when that is shorter) and, while no caller is
//! inside `progress`, drains control and eager frames. A peer heard from for nothing within
//! the peer timeout is [`PeerLost`](crate::Error::PeerLost) (time during which we ourselves
//! leave its data unread, because the receive it belongs to is not being driven, does not
//! count); an end of stream or a reset is `PeerLost` at once. Both poison the communicator, as
//! does an `Abort`. A peer that said `Goodbye` before closing (it dropped its communicator)
//! fails only the operations still waiting on it, so ranks may finish in any order; messages
//! it sent before leaving are still delivered. A peer that breaks the protocol or fails authentication only has its own
//! connection closed (see the error scopes on [`Communicator`](crate::Communicator)).
//! Dropping a [`TcpComm`] says `Goodbye` (or, when a lost peer poisoned it, sends `Abort`
//! with that loss as the reason, so the survivors learn why), joins the heartbeat thread and
//! closes every socket. Cancelling an operation part-way through its message closes only that
//! peer's connection, with a `Goodbye` when the stream is between frames; on a poisoned
//! communicator a cancel closes nothing.

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
