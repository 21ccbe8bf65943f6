//! The byte stream under the driver: a non-blocking socket, or a TLS session over one.

use std::io::{self, IoSlice, Read, Write};

use crate::Rank;

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
}

/// A layer put between every connection's socket and the protocol once the connection's
/// handshake succeeded: how `gloo-tls` adds TLS to this transport.
///
/// Set with [`TcpConfig::stream_layer`](super::TcpConfig::stream_layer). The layer receives
/// the registered, non-blocking socket and returns the stream the protocol runs over; its own
/// handshake (a TLS handshake) runs inside that stream's `read` and `write_vectored`, driven
/// by the communicator like any other bytes. A layer that authenticates peers (checks a
/// certificate bound to `peer`) fails the stream's I/O with an error when they do not verify;
/// the communicator then reports the peer as lost, naming it.
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
}
