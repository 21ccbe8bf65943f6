//! [`TlsLayer`]: TLS between the TCP transport's sockets and its protocol.

use std::io::{self, IoSlice};
use std::sync::Arc;

use gloo_transport::Rank;
use gloo_transport::tcp::{ByteStream, StreamLayer};
use rustls::server::ServerConfig;

use crate::config::TlsConfig;
use crate::error::Result;
use crate::session::TlsStream;
use crate::verify::Expect;

/// Mutual TLS for the TCP transport ([`TcpConfig::stream_layer`]): every connection of this
/// rank is a TLS 1.3 session in which both sides present their certificates.
///
/// The session wraps each connection from its first byte, so the transport's own handshake
/// (`Hello` with job and ranks, and the token's MACs if one is set) runs inside it. The side
/// that dials requires the other's certificate to name exactly the rank it dialled; the side
/// that accepts requires a certificate of some rank of this job, and the session then stands
/// for exactly that rank: a connection whose `Hello` claims another is refused
/// ([`Error::Auth`](gloo_transport::Error::Auth)). Since the layer authenticates peers
/// ([`StreamLayer::authenticates_peers`]), a routable address may be bound without a job
/// token (one may still be set on top).
///
/// [`TcpConfig::stream_layer`]: gloo_transport::tcp::TcpConfig::stream_layer
#[derive(Debug)]
pub struct TlsLayer {
    tls: TlsConfig,
    me: Rank,
    server: Arc<ServerConfig>,
}

impl TlsConfig {
    /// The transport layer of rank `rank` of job `job`; fails unless this configuration's
    /// certificate is that rank's.
    pub fn layer(&self, job: &str, rank: Rank) -> Result<Arc<TlsLayer>> {
        self.check_rank(job, rank)?;
        Ok(Arc::new(TlsLayer {
            tls: self.clone(),
            me: rank,
            server: self.server_config(Expect::AnyRank),
        }))
    }
}

impl TlsLayer {
    /// The rank this layer is.
    pub fn rank(&self) -> Rank {
        self.me
    }
}

impl StreamLayer for TlsLayer {
    fn wrap(
        &self,
        peer: Rank,
        dialled: bool,
        socket: mio::net::TcpStream,
        early: Vec<u8>,
    ) -> io::Result<Box<dyn ByteStream>> {
        let mut s = if dialled {
            TlsStream::client(socket, self.tls.client_config(Expect::Rank(peer)))?
        } else {
            TlsStream::server(socket, self.server.clone())?
        };
        s.expect_rank(peer);
        s.push_received(&early);
        Ok(Box::new(s))
    }

    fn authenticates_peers(&self) -> bool {
        true
    }

    fn wraps_handshake(&self) -> bool {
        true
    }

    fn wrap_connection(
        &self,
        dialled: Option<Rank>,
        socket: mio::net::TcpStream,
    ) -> io::Result<Box<dyn ByteStream>> {
        let s = match dialled {
            Some(peer) => TlsStream::client(socket, self.tls.client_config(Expect::Rank(peer)))?,
            None => TlsStream::server(socket, self.server.clone())?,
        };
        Ok(Box::new(s))
    }
}

impl ByteStream for TlsStream<mio::net::TcpStream> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        TlsStream::read(self, buf)
    }

    fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        TlsStream::write_vectored(self, bufs)
    }

    fn source(&mut self) -> &mut dyn mio::event::Source {
        self.socket_mut()
    }

    fn drains_on_short_io(&self) -> bool {
        // Only right after a read that drained the socket (a write that takes less than
        // offered was cut at the session's chunk, not by the socket).
        self.read_drained()
    }

    fn has_pending_output(&self) -> bool {
        TlsStream::has_pending_output(self)
    }

    fn input_waiting(&self) -> bool {
        TlsStream::input_waiting(self)
    }

    fn flush_pending(&mut self) -> io::Result<()> {
        TlsStream::flush_pending(self)
    }

    fn connect_finished(&mut self) -> io::Result<bool> {
        self.socket_mut().connect_finished()
    }

    fn peer_rank(&self) -> Option<Rank> {
        self.peer_identity().and_then(|id| id.as_rank())
    }
}
