//! The byte stream under the driver: a non-blocking socket, or a TLS session over one.

use std::io::{self, IoSlice, Read, Write};

use crate::{Error, Rank};

/// A non-blocking, ordered, reliable byte stream registered with mio.
///
/// The driver speaks the wire protocol over this and nothing else, so a TLS layer can sit
/// between the socket and the protocol by implementing it (decrypting into `read`,
/// encrypting from `write_vectored`, and flushing its own records when asked to write).
pub trait ByteStream: Send {
    /// Read into `buf`; `Ok(0)` is the end of the stream, `WouldBlock` means nothing now.
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize>;

    /// Write a prefix of the concatenation of `bufs`; `WouldBlock` means no room now.
    fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize>;

    /// The mio source to register for readiness.
    fn source(&mut self) -> &mut dyn mio::event::Source;

    /// Whether a read or write that moved fewer bytes than asked means the readiness was
    /// used up (true of a plain socket under edge-triggered epoll: the next change raises a
    /// new event). Then the driver skips the extra call that would only return
    /// `WouldBlock`. A layer that buffers (TLS) returns `false`, the default.
    fn drains_on_short_io(&self) -> bool {
        false
    }

    /// Whether the stream holds output of its own not yet on the socket (TLS records).
    fn has_pending_output(&self) -> bool {
        false
    }

    /// Whether bytes from the peer are waiting to be read (on the socket, or decrypted and
    /// buffered by a layer). Liveness asks before declaring a silent peer lost: bytes we have
    /// not read yet (because this process was descheduled between its last read and the
    /// check) prove the peer alive. The default, `false`, proves nothing.
    fn input_waiting(&self) -> bool {
        false
    }

    /// Push such output to the socket: `Ok` once all of it is written, `WouldBlock` when the
    /// socket has no room for the rest.
    fn flush_pending(&mut self) -> io::Result<()> {
        Ok(())
    }

    /// For a connection being dialled: `Ok(true)` once the socket is connected, `Ok(false)`
    /// while the connect is under way, the error when it failed. The default: connected.
    fn connect_finished(&mut self) -> io::Result<bool> {
        Ok(true)
    }

    /// For a stream of a layer that authenticates peers: the rank its peer proved to be (the
    /// rank its certificate names), once the layer's own handshake has finished. The
    /// transport refuses a connection whose `Hello` claims another rank. `None` (the
    /// default): the stream vouches for no rank.
    fn peer_rank(&self) -> Option<Rank> {
        None
    }
}

/// A layer put between every connection's socket and the protocol: how `gloo-tls` adds TLS
/// to this transport.
///
/// Set with [`TcpConfig::stream_layer`](super::TcpConfig::stream_layer). The layer receives
/// the non-blocking socket and returns the stream the protocol runs over; its own handshake
/// (a TLS handshake) runs inside that stream's `read` and `write_vectored`, driven by the
/// communicator like any other bytes. It wraps a connection either once the transport's
/// handshake has succeeded ([`wrap`](Self::wrap)), or from the start, so that the
/// transport's handshake itself runs inside it ([`wraps_handshake`](Self::wraps_handshake)
/// and [`wrap_connection`](Self::wrap_connection): nothing of the job then crosses the
/// network in the clear).
///
/// The errors a stream makes itself (not the socket's operating-system errors) tell the
/// transport what happened by their kind: `PermissionDenied` is a peer that failed the
/// layer's authentication ([`Error::Auth`]), `InvalidData` a peer that broke the layer's
/// protocol ([`Error::Protocol`]), in the handshake and in the data phase alike (the
/// engine's [`Link`](crate::engine::Link) contract); other kinds are errors of the
/// connection.
pub trait StreamLayer: Send + Sync + 'static {
    /// Wrap the connection to `peer`. `dialled` is true on the side that connected (the
    /// higher rank, a TLS client); `early` holds bytes already read from the socket after the
    /// handshake, which belong to the layer.
    fn wrap(
        &self,
        peer: Rank,
        dialled: bool,
        socket: mio::net::TcpStream,
        early: Vec<u8>,
    ) -> io::Result<Box<dyn ByteStream>>;

    /// Whether this layer authenticates every peer itself (mutual TLS with certificates
    /// bound to ranks). Only such a layer lets a routable address be bound without a job
    /// token; the default, `false`, keeps the token requirement, so a layer that only
    /// transforms bytes never weakens the transport.
    fn authenticates_peers(&self) -> bool {
        false
    }

    /// Whether this layer wraps every connection before the transport's handshake, with
    /// [`wrap_connection`](Self::wrap_connection), instead of after it with
    /// [`wrap`](Self::wrap). Default `false`.
    fn wraps_handshake(&self) -> bool {
        false
    }

    /// Wrap a new connection before the transport's handshake (called only when
    /// [`wraps_handshake`](Self::wraps_handshake)): `dialled` is the rank this side dialled,
    /// or `None` for an accepted connection, whose peer is not known yet. A layer that
    /// [authenticates peers](Self::authenticates_peers) reports the rank it proved through
    /// [`ByteStream::peer_rank`], and the transport holds the peer's `Hello` to it. The
    /// default wraps nothing.
    fn wrap_connection(
        &self,
        dialled: Option<Rank>,
        socket: mio::net::TcpStream,
    ) -> io::Result<Box<dyn ByteStream>> {
        let _ = dialled;
        Ok(Box::new(socket))
    }
}

/// The transport's error for an I/O error of a (possibly layered) stream while `doing`
/// something with `peer` (see [`StreamLayer`] for what the kinds mean).
pub(crate) fn stream_error(peer: Option<Rank>, doing: &str, e: io::Error) -> Error {
    crate::engine::refusal(peer, doing, &e).unwrap_or_else(|| Error::io(peer, doing, e))
}

impl ByteStream for mio::net::TcpStream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        Read::read(self, buf)
    }

    fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        Write::write_vectored(self, bufs)
    }

    fn source(&mut self) -> &mut dyn mio::event::Source {
        self
    }

    fn drains_on_short_io(&self) -> bool {
        true
    }

    fn input_waiting(&self) -> bool {
        // A peek of one byte: `Ok(0)` is the end of the stream (no proof of life), an error
        // or `WouldBlock` means nothing is waiting.
        matches!(self.peek(&mut [0u8; 1]), Ok(n) if n > 0)
    }

    fn connect_finished(&mut self) -> io::Result<bool> {
        if let Some(e) = self.take_error()? {
            return Err(e);
        }
        match self.peer_addr() {
            Ok(_) => Ok(true),
            Err(e) if e.kind() == io::ErrorKind::NotConnected => Ok(false),
            Err(e) => Err(e),
        }
    }
}
