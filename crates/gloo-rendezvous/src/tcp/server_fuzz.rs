//! The server's request handling without its event loop, for the `store_server` fuzz target
//! (feature `fuzzing`): bytes are appended to a connection's read buffer and handled exactly
//! as a read from the socket would be, and the answers are taken from its write buffer.
//!
//! The connections' sockets are never read or written here: each is an unconnected socket
//! (a bound listener's descriptor), so a fuzzing run opens no connection and leaves nothing
//! in `TIME_WAIT`.

use super::*;

/// A server with `conns` connections, driven by hand.
pub(crate) struct Harness {
    server: Server,
}

/// A socket nobody connects to, standing in for a client connection.
fn idle_stream() -> io::Result<ServerStream> {
    let l = std::net::TcpListener::bind("127.0.0.1:0")?;
    let fd = std::os::fd::OwnedFd::from(l);
    Ok(ServerStream::Plain(mio::net::TcpStream::from_std(std::net::TcpStream::from(fd))))
}

impl Harness {
    pub(crate) fn new(token: Option<&[u8]>, conns: usize) -> io::Result<Harness> {
        let addr = SocketAddr::from(([127, 0, 0, 1], 0));
        let mut server = Server::new(
            Poll::new()?,
            TcpListener::bind(addr)?,
            None,
            ServerConfig::with_token(token),
            Arc::new(AtomicBool::new(false)),
            Arc::new(AtomicUsize::new(0)),
            0,
        );
        let now = Instant::now();
        for _ in 0..conns {
            server.next_gen += 1;
            server.conns.push(Some(Conn {
                stream: idle_stream()?,
                peer: addr,
                generation: server.next_gen,
                phase: Phase::Hello,
                rbuf: Vec::new(),
                wbuf: Vec::new(),
                wpos: 0,
                accepted: now,
                last_read: now,
                waiters: 0,
                queued: false,
            }));
            server.live += 1;
        }
        Ok(Harness { server })
    }

    /// Hand `bytes` to connection `idx` as if just read from its socket; `false` when the
    /// server drops the connection (or it was dropped before).
    pub(crate) fn feed(&mut self, idx: usize, bytes: &[u8]) -> bool {
        let Some(mut conn) = self.server.conns.get_mut(idx).and_then(Option::take) else {
            return false;
        };
        conn.rbuf.extend_from_slice(bytes);
        match self.server.process_frames(idx, &mut conn) {
            Ok(()) => {
                self.server.conns[idx] = Some(conn);
                true
            }
            Err(Drop_(_)) => {
                self.server.close(idx, conn, None);
                false
            }
        }
    }

    /// Connection `idx` closes (a client hanging up).
    pub(crate) fn hang_up(&mut self, idx: usize) {
        if let Some(conn) = self.server.conns.get_mut(idx).and_then(Option::take) {
            self.server.close(idx, conn, None);
        }
    }

    /// Every parked wait times out now.
    pub(crate) fn expire_all(&mut self) {
        self.server.expire_waiters(Instant::now() + Duration::from_secs(8 * 24 * 3600));
    }

    /// What the server has written to connection `idx` and not yet sent (taken: the client
    /// read it).
    pub(crate) fn take_output(&mut self, idx: usize) -> Vec<u8> {
        self.server.dirty.clear();
        match self.server.conns.get_mut(idx).and_then(Option::as_mut) {
            Some(conn) => {
                conn.wpos = 0;
                conn.queued = false;
                std::mem::take(&mut conn.wbuf)
            }
            None => Vec::new(),
        }
    }

    /// The server's bookkeeping agrees with itself: each connection counts exactly its parked
    /// waits, each wait counts exactly its absent keys (and has at least one, or it would
    /// have been answered), and the key index lists exactly the parked waits.
    pub(crate) fn check(&self) {
        let s = &self.server;
        for (idx, conn) in s.conns.iter().enumerate() {
            let Some(conn) = conn else { continue };
            let parked = s
                .waiters
                .values()
                .filter(|w| w.conn == idx && w.conn_gen == conn.generation)
                .count();
            assert_eq!(parked, conn.waiters, "connection {idx} counts its parked waits wrong");
        }
        for (id, w) in &s.waiters {
            let absent = w.keys.iter().filter(|k| !s.table.contains(k)).count();
            assert_eq!(w.missing, absent, "wait {id} counts its missing keys wrong");
            assert!(absent > 0, "wait {id} has every key and was not answered");
            for k in &w.keys {
                assert!(s.by_key.get(k).is_some_and(|ids| ids.contains(id)), "wait {id} unindexed");
            }
        }
        for ids in s.by_key.values() {
            assert!(!ids.is_empty(), "an empty key index entry was kept");
            for id in ids {
                assert!(s.waiters.contains_key(id), "the key index names a finished wait {id}");
            }
        }
        assert_eq!(s.live, s.conns.iter().flatten().count(), "live connections miscounted");
    }
}
