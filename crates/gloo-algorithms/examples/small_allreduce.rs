//! Times small allreduces between two threads over tcp against the transport's own exchange
//! of the same message (one send and one receive per rank in one batch), to show what the
//! collective layer adds per call. Run with `cargo run --release --example small_allreduce`.

use std::time::{Duration, Instant};

use gloo_algorithms::{Group, Options, ReduceOp, select::EnvOverrides};
use gloo_transport::tcp::{TcpConfig, TcpListener};
use gloo_transport::{Communicator, Op, Rank, Slot};

const ITERS: usize = 20_000;

fn main() {
    let listeners: Vec<_> = (0..2)
        .map(|r| TcpListener::bind(TcpConfig::loopback("small", Rank(r), 2)).expect("bind"))
        .collect();
    let addrs: Vec<Vec<u8>> = listeners.iter().map(|l| l.address_bytes()).collect();
    let out = std::thread::scope(|s| {
        let hs: Vec<_> = listeners
            .into_iter()
            .map(|l| {
                let addrs = addrs.clone();
                s.spawn(move || {
                    let deadline = Instant::now() + Duration::from_secs(60);
                    let comm = l.connect_all(&addrs, deadline).expect("connect");
                    let me = comm.rank().0;
                    let peer = Rank(1 - me);
                    // The transport alone: one exchange of 4 bytes per iteration.
                    let t = Instant::now();
                    let (a, mut b) = ([1u8; 4], [0u8; 4]);
                    for i in 0..ITERS {
                        let slot = Slot::new(7, i as u32);
                        let mut ops = [Op::send(peer, slot, &a), Op::recv(peer, slot, &mut b)];
                        comm.run(&mut ops, deadline).expect("exchange");
                    }
                    let raw = t.elapsed() / ITERS as u32;
                    let g = Group::with_overrides(comm, EnvOverrides::default());
                    let o = Options::new();
                    let mut v = [1f32];
                    let t = Instant::now();
                    for _ in 0..ITERS {
                        v[0] = 1.0;
                        g.allreduce(&mut v, ReduceOp::Sum, &o).expect("allreduce");
                    }
                    let ar = t.elapsed() / ITERS as u32;
                    assert_eq!(v[0], 2.0);
                    (raw, ar)
                })
            })
            .collect();
        hs.into_iter().map(|h| h.join().expect("rank thread")).collect::<Vec<_>>()
    });
    for (r, (raw, ar)) in out.iter().enumerate() {
        let extra = ar.as_secs_f64() * 1e6 - raw.as_secs_f64() * 1e6;
        println!("rank {r}: exchange {raw:?}  allreduce(1 f32) {ar:?}  difference {extra:.2}µs");
    }
}
