//! The transport conformance suite over TCP with mutual TLS (the session wrapping each
//! connection before the transport's handshake): full mesh, with a token on top, with busy
//! polling off, and lazily connected.

use std::sync::OnceLock;

use gloo_testing::rogue::{bind_group, connect_threads};
use gloo_testing::tls::Pki;
use gloo_testing::{conformance, deadline};
use gloo_transport::tcp::{Security, TcpComm, TcpConfig, TcpListener};
use gloo_transport::{Communicator, Listener, Rank};

const JOB: &str = "conformance-tls";

/// One PKI for every group of this file (the suite's groups have at most 8 ranks).
fn pki() -> &'static Pki {
    static PKI: OnceLock<Pki> = OnceLock::new();
    PKI.get_or_init(|| Pki::new(JOB, 8))
}

/// Rank `r` of a group of `size` on loopback, with TLS.
fn tls(r: u32, size: u32) -> TcpConfig {
    let layer = pki().rank(r).layer(JOB, Rank(r)).expect("rank r's certificate is rank r's");
    TcpConfig::loopback(JOB, Rank(r), size).stream_layer(layer)
}

/// A connected group, each rank's configuration from `cfg(rank)`, full mesh or lazy.
fn group_with(size: u32, lazy: bool, cfg: impl Fn(u32) -> TcpConfig) -> Vec<TcpComm> {
    let (listeners, addrs) = bind_group(size, |r| TcpListener::bind(cfg(r)).expect("bind"));
    if lazy {
        return listeners
            .into_iter()
            .map(|l| l.connect_lazy(&addrs, deadline(30)).expect("connect_lazy"))
            .collect();
    }
    connect_threads(listeners, &addrs, deadline(60))
        .into_iter()
        .map(|t| t.join().expect("connect thread").expect("connect_all"))
        .collect()
}

fn factory(size: u32) -> Vec<Box<dyn Communicator>> {
    conformance::boxed(group_with(size, false, |r| tls(r, size)))
}

gloo_testing::conformance_tests!(factory);

/// TLS with a job token on top (the token's challenge-response runs inside the session).
mod token {
    fn factory(size: u32) -> Vec<Box<dyn gloo_transport::Communicator>> {
        gloo_testing::conformance::boxed(super::group_with(size, false, |r| {
            super::tls(r, size).security(super::Security::Token(b"a-token-on-top-of-tls".to_vec()))
        }))
    }
    gloo_testing::conformance_tests!(factory);
}

/// TLS with busy polling off: readiness events alone must drive the sessions.
mod sleeping {
    fn factory(size: u32) -> Vec<Box<dyn gloo_transport::Communicator>> {
        gloo_testing::conformance::boxed(super::group_with(size, false, |r| {
            super::tls(r, size).busy_poll(std::time::Duration::ZERO)
        }))
    }
    gloo_testing::conformance_tests!(factory);
}

/// TLS with each pair connecting on its first use (both ranks may dial at once).
mod lazy {
    fn factory(size: u32) -> Vec<Box<dyn gloo_transport::Communicator>> {
        gloo_testing::conformance::boxed(super::group_with(size, true, |r| super::tls(r, size)))
    }
    gloo_testing::conformance_tests!(factory);
}

#[test]
fn listener_binds_and_connects_with_a_tls_layer() {
    fn is_listener<L: Listener>() {}
    is_listener::<TcpListener>();
    let comms = group_with(3, false, |r| tls(r, 3));
    gloo_testing::rogue::all_exchange(&comms, deadline(30));
}
