//! The byte stream under the driver: a non-blocking socket, or a TLS session over one.

use std::io::{self, IoSlice, Read, Write};

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
}
