//! Every collective over tcp with mutual TLS (gloo-tls), with real processes (the test binary
//! re-executes itself as ranks) at world sizes 2, 3, 4 and 8: each rank loads its own
//! certificate from `GLOO_TLS_CA`/`_CERT`/`_KEY`, as a real job does.

mod common;

use gloo_algorithms::{Group, select::EnvOverrides};
use gloo_testing::procs::{self, Board};
use gloo_testing::tls::Pki;
use gloo_transport::Rank;
use gloo_transport::tcp::{TcpConfig, TcpListener};

const NAME: &str = "every_collective_over_tls_at_2_3_4_and_8_ranks";

fn job(size: u32) -> String {
    format!("algo-tls-{size}")
}

#[test]
fn every_collective_over_tls_at_2_3_4_and_8_ranks() {
    if let Some((rank, size)) = procs::child_rank() {
        let board = Board::from_env().expect("the parent passes a board");
        let job = job(size);
        let tls = gloo_tls::TlsConfig::from_env().unwrap().expect("the parent sets GLOO_TLS_*");
        let layer = tls.layer(&job, Rank(rank)).unwrap();
        let cfg = TcpConfig::loopback(&job, Rank(rank), size).stream_layer(layer);
        let listener = TcpListener::bind(cfg).unwrap();
        board.put(rank, &listener.address_bytes()).unwrap();
        let addrs = board.get_all(size, gloo_testing::deadline(60)).unwrap();
        let comm = listener.connect_all(&addrs, gloo_testing::deadline(60)).unwrap();
        let g = Group::with_overrides(comm, EnvOverrides::default());
        common::every_collective_on_this_rank(&g, 43);
        return;
    }
    for n in [2, 3, 4, 8] {
        let pki = Pki::new(&job(n), n);
        let dir = tempfile::tempdir().unwrap();
        let board = Board::fresh(&job(n)).unwrap();
        let group = procs::spawn_self_with(NAME, n, |r| {
            let d = dir.path().join(r.to_string());
            std::fs::create_dir(&d).unwrap();
            let f = pki.write_rank(&d, r, 0o600);
            vec![
                board.env(),
                ("GLOO_TLS_CA".into(), f.ca.display().to_string()),
                ("GLOO_TLS_CERT".into(), f.cert.display().to_string()),
                ("GLOO_TLS_KEY".into(), f.key.display().to_string()),
            ]
        });
        for outcome in group.wait(gloo_testing::deadline(240)) {
            gloo_testing::rogue::assert_ran_one_test(&outcome);
        }
    }
}
