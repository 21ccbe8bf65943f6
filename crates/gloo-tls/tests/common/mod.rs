//! One rank of a real job over TLS, started from the environment as torchrun starts ranks:
//! `env://` start-up (rank 0 hosts the TCP store over TLS), the transport with the TLS layer
//! and no token, then an exchange between every pair and an allreduce.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};

use gloo_algorithms::{Group, Options, ReduceOp};
use gloo_rendezvous::{Error, connect_from_env};
use gloo_testing::deadline;
use gloo_testing::rogue::exchange_with;
use gloo_transport::tcp::{TcpConfig, TcpListener};
use gloo_transport::{Communicator, Rank};

/// Run this process as a rank of job `job`, its transport listening on `bind`.
pub(crate) fn tls_rank(job: &str, bind: IpAddr) {
    let vars: HashMap<String, String> = std::env::vars().collect();
    assert!(!vars.contains_key("GLOO_AUTH_TOKEN"), "this job must run without a job token");
    let config_err = |e: &dyn std::fmt::Display| Error::Config { detail: e.to_string() };
    let group = connect_from_env(
        &vars,
        |env| {
            let rank = Rank(env.rank);
            let files = env.tls.as_ref().expect("the parent gives every rank GLOO_TLS_*");
            let tls = files.load().map_err(|e| config_err(&e))?;
            let plain = TcpConfig::new(job, rank, env.size).bind_addr(SocketAddr::new(bind, 0));
            if !bind.is_loopback() {
                // Without TLS (and no token) the routable address is refused...
                let e = TcpListener::bind(plain.clone()).expect_err("a routable bind without auth");
                assert!(e.to_string().contains("GLOO_AUTH_TOKEN"), "{e}");
            }
            // ... and with it, it is not.
            let layer = tls.layer(job, rank).map_err(|e| config_err(&e))?;
            TcpListener::bind(plain.stream_layer(layer)).map_err(|e| config_err(&e))
        },
        deadline(120),
    )
    .unwrap_or_else(|e| panic!("env:// start-up over TLS: {e}"));
    let comm = &group.comm;
    let me = comm.rank();
    let others: Vec<Rank> = (0..comm.size()).map(Rank).filter(|r| *r != me).collect();
    exchange_with(comm, &others, 1, 300_000, deadline(60))
        .unwrap_or_else(|e| panic!("rank {me}: exchange: {e}"));
    let g = Group::new(comm as &dyn Communicator).expect("a group");
    let mut v = vec![me.0 as f32 + 1.0; 100_000];
    g.allreduce(&mut v, ReduceOp::Sum, &Options::default())
        .unwrap_or_else(|e| panic!("rank {me}: allreduce: {e}"));
    let n = comm.size() as f32;
    assert!(v.iter().all(|x| *x == n * (n + 1.0) / 2.0), "rank {me}: wrong allreduce result");
    println!("rank {me}: job done over TLS");
}
