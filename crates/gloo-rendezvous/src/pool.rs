//! What the clients of a store server share (ours over TCP, PyTorch's TCPStore, Redis): a
//! pool of idle connections, so concurrent calls each use their own and a call reuses an
//! idle one, and, for the two that speak a framed protocol of their own, the loop that runs
//! a call on a pooled connection and reconnects while the deadline allows.

use std::io;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::error::{Error, Failure, Result};
use crate::store::Backoff;

/// Whether a request may be sent again after its connection failed mid-call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Retry {
    /// Idempotent: send it again on a new connection.
    Always,
    /// Not idempotent: send it again only if it cannot have reached the server.
    OnlyIfUnsent,
}

/// Idle connections to one server.
#[derive(Debug)]
pub(crate) struct Pool<C> {
    idle: Mutex<Vec<C>>,
}

impl<C> Default for Pool<C> {
    fn default() -> Self {
        Pool { idle: Mutex::new(Vec::new()) }
    }
}

impl<C> Pool<C> {
    /// An idle connection, if there is one.
    pub(crate) fn take(&self) -> Option<C> {
        self.lock().pop()
    }

    /// Keep `conn` for the next call (it holds no unanswered request).
    pub(crate) fn put_back(&self, conn: C) {
        self.lock().push(conn);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<C>> {
        // A panic while holding the lock cannot leave the list half-updated (a push or a
        // pop), so a poisoned lock is still safe to use.
        self.idle.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// How a round trip on a connection failed.
#[derive(Debug)]
pub(crate) enum Fail {
    /// The connection failed; `sent`: the request may have reached the server.
    Conn { sent: bool, err: io::Error },
    /// No answer by the reply deadline.
    NoAnswer,
    /// The server sent something that is not a valid answer.
    Protocol(Error),
    /// A plain connection's first answer is a TLS record: the server speaks TLS.
    SpeaksTls,
}

impl From<Error> for Fail {
    fn from(e: Error) -> Self {
        Fail::Protocol(e)
    }
}

/// A connection that can tell, without blocking, whether it still looks open.
pub(crate) trait Liveness {
    fn alive(&self) -> bool;
}

/// Who a pooled call talks to, for its errors: `what` ("the store", "the torch store") at
/// `endpoint`, and the call's key if it has one.
pub(crate) struct Server<'a> {
    pub(crate) what: &'static str,
    pub(crate) endpoint: &'a str,
    pub(crate) key: Option<&'a [u8]>,
}

impl<C: Liveness> Pool<C> {
    /// Run `attempt` on an idle connection, or on one `open` makes. A connection that
    /// answered goes back to the pool, whatever the answer said (`Ok` of `attempt`); one
    /// that failed is dropped (it is broken, or holds an unanswered request) and the call
    /// goes on with another, with back-off, until `deadline`, unless the request may have
    /// reached the server and `retry` forbids sending it again. Replies are awaited until
    /// `reply_deadline`; `no_answer` makes the error when none came by then (given how long
    /// the call waited since `start`).
    #[allow(clippy::too_many_arguments)] // Each is one decision of the caller's protocol.
    pub(crate) fn call<T>(
        &self,
        server: Server<'_>,
        retry: Retry,
        start: Instant,
        deadline: Instant,
        reply_deadline: Instant,
        mut open: impl FnMut(Instant) -> Result<C>,
        mut attempt: impl FnMut(&mut C, Instant) -> std::result::Result<Result<T>, Fail>,
        no_answer: impl FnOnce(Duration) -> Error,
    ) -> Result<T> {
        let mut backoff = Backoff::new(Duration::from_millis(200));
        loop {
            let mut conn = match self.take() {
                // A request that must not be sent twice goes only on a connection that
                // still looks open (a closed one would fail after sending, maybe).
                Some(c) if retry == Retry::OnlyIfUnsent && !c.alive() => continue,
                Some(c) => c,
                None => open(deadline)?,
            };
            let fail = match attempt(&mut conn, reply_deadline) {
                Ok(answer) => {
                    self.put_back(conn);
                    return answer;
                }
                Err(f) => f,
            };
            // The connection is dropped here: it failed, or holds an unanswered request.
            drop(conn);
            match fail {
                Fail::NoAnswer => return Err(no_answer(start.elapsed())),
                Fail::Protocol(e) => return Err(e),
                // Only a connection's first answer is checked, and that is the handshake's.
                Fail::SpeaksTls => {
                    return Err(Error::Protocol {
                        detail: format!("{} at {} answered in TLS", server.what, server.endpoint),
                    });
                }
                Fail::Conn { sent, err } => {
                    if sent && retry == Retry::OnlyIfUnsent {
                        let doing = format!(
                            "connection to {} at {} lost after the request was sent; whether it \
                             took effect is unknown",
                            server.what, server.endpoint
                        );
                        return Err(Error::io(server.key, doing, err));
                    }
                    tracing::debug!(
                        endpoint = %server.endpoint, error = %err,
                        "{} connection lost; reconnecting", server.what
                    );
                    if !backoff.sleep(deadline) {
                        let last = Failure::io("connection lost", err);
                        return Err(Error::unreachable(server.endpoint, last, start.elapsed()));
                    }
                }
            }
        }
    }
}
