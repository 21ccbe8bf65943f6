//! TLS for the job's TCP store: both ends present a certificate of the job, and each accepts
//! any identity of the job in the other (a rank, or a standalone store), but nothing of
//! another job or CA.
//!
//! Which rank may change which keys is not checked here: the store is shared by the whole
//! job, as it is with a job token. What TLS adds is that nobody outside the job can reach it,
//! and nobody on the path can read or change it.

use std::io;
use std::sync::Arc;

use rustls::client::ClientConfig;
use rustls::server::ServerConfig;

use crate::config::TlsConfig;
use crate::session::{Socket, TlsStream};
use crate::verify::Expect;

/// Makes the server side of TLS sessions, with one configuration.
#[derive(Clone, Debug)]
pub struct TlsAcceptor {
    cfg: Arc<ServerConfig>,
}

impl TlsAcceptor {
    /// The server side of a session over an accepted connection. Nothing is sent or read
    /// yet: the handshake runs inside the stream's reads and writes.
    pub fn accept<S: Socket>(&self, sock: S) -> io::Result<TlsStream<S>> {
        TlsStream::server(sock, self.cfg.clone())
    }
}

/// Makes the client side of TLS sessions, with one configuration.
#[derive(Clone, Debug)]
pub struct TlsConnector {
    cfg: Arc<ClientConfig>,
}

impl TlsConnector {
    /// The client side of a session over a connected socket; the handshake runs inside the
    /// stream's reads and writes (the first write or flush sends the `ClientHello`).
    pub fn connect<S: Socket>(&self, sock: S) -> io::Result<TlsStream<S>> {
        TlsStream::client(sock, self.cfg.clone())
    }
}

impl TlsConfig {
    /// The store server's side: present this certificate, require a client certificate of
    /// this job (any rank, or a store identity).
    pub fn store_acceptor(&self) -> TlsAcceptor {
        TlsAcceptor { cfg: self.server_config(Expect::AnyOfJob) }
    }

    /// A store client's side: present this certificate, require the server's to be of this
    /// job (the rank hosting the store, or a standalone store's identity).
    pub fn store_connector(&self) -> TlsConnector {
        TlsConnector { cfg: self.client_config(Expect::AnyOfJob) }
    }
}
