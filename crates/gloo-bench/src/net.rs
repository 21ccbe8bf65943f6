//! Connecting the transport under test: each rank publishes its listening address in the
//! store, waits for everybody's and connects the full mesh.

use std::time::Instant;

use gloo_transport::Communicator;

use crate::cli::TransportKind;
use crate::error::{Error, Result};
use crate::store::Kv;

/// A connected communicator of `size` ranks over `kind`.
pub(crate) fn connect(
    kind: TransportKind,
    _rank: u32,
    _size: u32,
    _kv: &dyn Kv,
    _deadline: Instant,
) -> Result<Box<dyn Communicator>> {
    match kind {
        TransportKind::Tcp => Err(Error::NotAvailable {
            what: "the tcp transport".into(),
            needs: "gloo-transport's tcp module (TcpListener::bind / connect_all)",
        }),
    }
}
