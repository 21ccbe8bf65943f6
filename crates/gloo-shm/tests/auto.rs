//! Per-peer transport choice: ranks whose host identities match talk through shared memory,
//! the others through tcp, in one communicator. Several "hosts" are played on this machine
//! by giving ranks different [`HostId`]s.

use gloo_shm::LinkKind;
use gloo_shm::ShmComm;
use gloo_shm::auto::{AutoConfig, AutoListener, HostId};
use gloo_testing::conformance::pattern;
use gloo_testing::deadline;
use gloo_testing::rogue::{bind_group, connect_threads};
use gloo_transport::{Communicator, Op, Rank, Slot};

/// A group of `size` ranks, rank `r` on host `host(r)`.
fn group(job: &str, size: u32, host: impl Fn(u32) -> String) -> Vec<ShmComm> {
    let (listeners, addrs) = bind_group(size, |r| {
        AutoListener::bind(
            AutoConfig::loopback(job, Rank(r), size)
                .host_id(HostId::named(&host(r)))
                .shm(|c| c.ring_capacity(64 << 10)),
        )
        .expect("bind")
    });
    connect_threads(listeners, &addrs, deadline(30))
        .into_iter()
        .map(|t| t.join().expect("connect thread").expect("connect_all"))
        .collect()
}

/// Ranks in pairs on hosts: {0, 1} on one, {2, 3} on the next, ...
fn by_pairs(r: u32) -> String {
    format!("host-{}", r / 2)
}

fn factory(size: u32) -> Vec<Box<dyn Communicator>> {
    gloo_testing::conformance::boxed(group("conformance-auto", size, by_pairs))
}

// The whole suite over groups that mix shared memory and tcp (from 3 ranks on).
gloo_testing::conformance_tests!(factory);

#[test]
fn four_ranks_on_two_hosts_use_shm_within_and_tcp_across() {
    let comms = group("two-hosts", 4, by_pairs);
    for c in &comms {
        let me = c.rank().0;
        for p in 0..4u32 {
            let want = match () {
                _ if p == me => None,
                _ if p / 2 == me / 2 => Some(LinkKind::Shm),
                _ => Some(LinkKind::Tcp),
            };
            assert_eq!(c.link_kind(Rank(p)), want, "rank {me} to rank {p}");
        }
        assert_eq!(c.connected_peers().len(), 3);
    }
    // Every pair exchanges, both ways at once, a small and a large message.
    gloo_testing::run_ranks(comms, |c| {
        let me = c.rank().0;
        let until = deadline(60);
        for len in [5usize, 3 << 20] {
            let outs: Vec<Vec<u8>> =
                (0..4u32).map(|p| pattern(len, (me as u64) << 8 | p as u64)).collect();
            let mut ins: Vec<Vec<u8>> = (0..4).map(|_| vec![0u8; len]).collect();
            {
                let mut ops = Vec::new();
                for (p, (o, i)) in outs.iter().zip(ins.iter_mut()).enumerate() {
                    if p as u32 != me {
                        ops.push(Op::send(Rank(p as u32), Slot::new(1, 0), o));
                        ops.push(Op::recv(Rank(p as u32), Slot::new(1, 0), i));
                    }
                }
                c.run(&mut ops, until).expect("exchange with every rank");
            }
            for p in (0..4u32).filter(|p| *p != me) {
                let want = pattern(len, (p as u64) << 8 | me as u64);
                assert!(ins[p as usize] == want, "rank {me}: {len} bytes from rank {p}");
            }
        }
    });
}

#[test]
fn one_host_is_all_shm_and_every_host_apart_is_all_tcp() {
    for c in group("one-host", 3, |_| "same".into()) {
        for p in (0..3).filter(|p| *p != c.rank().0) {
            assert_eq!(c.link_kind(Rank(p)), Some(LinkKind::Shm));
        }
    }
    for c in group("apart", 3, |r| format!("h{r}")) {
        for p in (0..3).filter(|p| *p != c.rank().0) {
            assert_eq!(c.link_kind(Rank(p)), Some(LinkKind::Tcp));
        }
    }
}

#[test]
fn the_default_host_identity_puts_every_rank_of_this_machine_on_shm() {
    let (listeners, addrs) = bind_group(2, |r| {
        // No override: the identity is this machine's (or GLOO_HOST_ID's, the same for both).
        AutoListener::bind(AutoConfig::loopback("default-host", Rank(r), 2)).unwrap()
    });
    let comms: Vec<ShmComm> = connect_threads(listeners, &addrs, deadline(30))
        .into_iter()
        .map(|t| t.join().unwrap().unwrap())
        .collect();
    assert_eq!(comms[0].link_kind(Rank(1)), Some(LinkKind::Shm));
    assert_eq!(comms[1].link_kind(Rank(0)), Some(LinkKind::Shm));
}

#[test]
fn a_malformed_address_names_its_rank_before_anything_is_dialled() {
    let l = AutoListener::bind(AutoConfig::loopback("bad", Rank(0), 3)).unwrap();
    let good = l.address_bytes();
    let e = l.connect_all(&[good.clone(), good, b"gloo-auto/1:\x05".to_vec()], deadline(5));
    let e = e.unwrap_err();
    assert_eq!(e.peer(), Some(Rank(2)), "{e}");
}
