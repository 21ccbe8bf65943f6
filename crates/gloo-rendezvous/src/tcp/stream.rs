//! A store connection's bytes: the plain socket, or (feature `tls`) a TLS session over it.
//!
//! With TLS the session starts at the connection's first byte, so the store's own hello
//! (and its token challenge, when a token is set too) runs inside it.

use std::io::{self, Read, Write};

/// The server's side of one client connection (non-blocking).
#[derive(Debug)]
pub(super) enum ServerStream {
    Plain(mio::net::TcpStream),
    #[cfg(feature = "tls")]
    Tls(Box<gloo_tls::TlsStream<mio::net::TcpStream>>),
}

impl ServerStream {
    pub(super) fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            ServerStream::Plain(s) => s.read(buf),
            #[cfg(feature = "tls")]
            ServerStream::Tls(s) => s.read(buf),
        }
    }

    pub(super) fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            ServerStream::Plain(s) => s.write(buf),
            #[cfg(feature = "tls")]
            ServerStream::Tls(s) => s.write_vectored(&[io::IoSlice::new(buf)]),
        }
    }

    /// Push out what the session holds of its own (handshake records, encrypted answers):
    /// `Ok` once all is on the socket, `WouldBlock` while it has no room.
    pub(super) fn flush_pending(&mut self) -> io::Result<()> {
        match self {
            ServerStream::Plain(_) => Ok(()),
            #[cfg(feature = "tls")]
            ServerStream::Tls(s) => s.flush_pending(),
        }
    }

    /// The socket, to register with the event loop.
    pub(super) fn socket(&mut self) -> &mut mio::net::TcpStream {
        match self {
            ServerStream::Plain(s) => s,
            #[cfg(feature = "tls")]
            ServerStream::Tls(s) => s.socket_mut(),
        }
    }

    /// Whether the connection is plain TCP (no TLS session).
    pub(super) fn is_plain(&self) -> bool {
        matches!(self, ServerStream::Plain(_))
    }

    /// Whether a read shorter than the buffer means the socket is drained (a plain socket
    /// under edge-triggered readiness; not a TLS session, which may hold what it read ahead).
    pub(super) fn drains_on_short_read(&self) -> bool {
        matches!(self, ServerStream::Plain(_))
    }
}

/// A client's connection to the store (blocking, with timeouts).
#[derive(Debug)]
pub(super) enum ClientStream {
    Plain(std::net::TcpStream),
    #[cfg(feature = "tls")]
    Tls(Box<gloo_tls::TlsStream<std::net::TcpStream>>),
}

impl ClientStream {
    /// The socket (for timeouts and the liveness peek).
    pub(super) fn socket(&self) -> &std::net::TcpStream {
        match self {
            ClientStream::Plain(s) => s,
            #[cfg(feature = "tls")]
            ClientStream::Tls(s) => s.socket(),
        }
    }

    /// Whether the connection is plain TCP (no TLS session).
    pub(super) fn is_plain(&self) -> bool {
        matches!(self, ClientStream::Plain(_))
    }

    /// Whether this is a TLS session whose handshake has not finished.
    pub(super) fn tls_handshaking(&self) -> bool {
        match self {
            ClientStream::Plain(_) => false,
            #[cfg(feature = "tls")]
            ClientStream::Tls(s) => !s.is_open(),
        }
    }

    /// Whether this is a TLS session whose peer answered in something that is not TLS.
    pub(super) fn peer_is_not_tls(&self) -> bool {
        match self {
            ClientStream::Plain(_) => false,
            #[cfg(feature = "tls")]
            ClientStream::Tls(s) => s.peer_is_not_tls(),
        }
    }

    /// Whether the session already holds decrypted bytes nobody asked for.
    pub(super) fn holds_input(&self) -> bool {
        match self {
            ClientStream::Plain(_) => false,
            #[cfg(feature = "tls")]
            ClientStream::Tls(s) => s.input_waiting() && s.is_open(),
        }
    }
}

impl Read for ClientStream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            ClientStream::Plain(s) => s.read(buf),
            #[cfg(feature = "tls")]
            ClientStream::Tls(s) => s.read(buf),
        }
    }
}

impl Write for ClientStream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            ClientStream::Plain(s) => s.write(buf),
            #[cfg(feature = "tls")]
            ClientStream::Tls(s) => s.write_vectored(&[io::IoSlice::new(buf)]),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            ClientStream::Plain(s) => s.flush(),
            #[cfg(feature = "tls")]
            ClientStream::Tls(s) => s.flush_pending(),
        }
    }
}
