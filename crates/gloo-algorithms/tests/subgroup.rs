//! Subgroups (`Group::split`, `Group::subgroup`): every collective against the oracle on
//! subgroups at 2–8 ranks (loopback with havoc, and tcp with real processes), subgroups
//! running at once, keys reordering ranks, nested splits, point-to-point in subgroup ranks,
//! and the typed errors for non-members, bad lists and disagreeing members.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::*;
use gloo_algorithms::{Error, Group, Options, ReduceOp, select::EnvOverrides};
use gloo_testing::procs::{self, Board};
use gloo_transport::Rank;
use gloo_transport::tcp::{TcpConfig, TcpListener};

fn o(secs: u64) -> Options {
    Options::new().with_timeout(Duration::from_secs(secs))
}

/// The parent ranks of `g`'s members, in subgroup order, learnt by an allgather on `g`
/// itself (so it also checks that the subgroup's numbering is the one its members use).
fn members<C: gloo_transport::Communicator>(g: &Group<C>, parent_rank: Rank) -> Vec<u32> {
    let mut all = vec![0u32; g.size() as usize];
    g.allgather(&[parent_rank.0], &mut all, &o(60)).unwrap();
    all
}

#[test]
fn every_collective_on_split_subgroups_matches_the_oracle_at_2_to_8_ranks() {
    for n in 2..=8u32 {
        for colors in [2u32, 3] {
            let seed = u64::from(n * 10 + colors);
            let got = on_ranks(n, seed, |g| {
                let me = g.rank().0;
                // Keys from the highest rank down: subgroup ranks run against parent order.
                let sub = g.split(Some(me % colors), -i64::from(me), &o(60)).unwrap().unwrap();
                every_collective_on_this_rank(&sub, seed ^ u64::from(me % colors));
                members(&sub, g.rank())
            });
            for (r, m) in got.iter().enumerate() {
                let want: Vec<u32> =
                    (0..n).rev().filter(|&p| p % colors == r as u32 % colors).collect();
                assert_eq!(m, &want, "n={n} colors={colors}: members seen by rank {r}");
            }
        }
    }
}

#[test]
fn every_collective_on_a_listed_subgroup_of_a_split_matches_the_oracle() {
    for n in [6u32, 8] {
        let got = on_ranks(n, u64::from(n), |g| {
            let me = g.rank().0;
            // Halves, then the first three ranks of each half in reverse order: a map of a map.
            let half = g.split(Some(me * 2 / n), 0, &o(60)).unwrap().unwrap();
            let h = half.rank().0;
            if h >= 3 {
                return None;
            }
            let sub = half.subgroup(&[Rank(2), Rank(1), Rank(0)]).unwrap();
            assert_eq!(sub.rank(), Rank(2 - h));
            every_collective_on_this_rank(&sub, 7);
            Some(members(&sub, g.rank()))
        });
        let half = n / 2;
        for (r, m) in got.iter().enumerate() {
            let base = r as u32 / half * half;
            let want = (r as u32 - base < 3).then(|| vec![base + 2, base + 1, base]);
            assert_eq!(m, &want, "n={n}: rank {r}");
        }
    }
}

#[test]
fn split_orders_by_key_then_rank_and_leaves_out_ranks_without_a_color() {
    let got = on_ranks_plain(6, |g| {
        let me = g.rank().0;
        let color = (me != 2).then_some(9);
        // Keys 1, 0, -, 1, 0, 1: the 0s first (ranks 1, 4), then the 1s (ranks 0, 3, 5).
        let key = [1, 0, 0, 1, 0, 1][me as usize];
        let sub = g.split(color, key, &o(60)).unwrap();
        // The parent goes on working beside the subgroup.
        let mut v = [1u32];
        g.allreduce(&mut v, ReduceOp::Sum, &o(60)).unwrap();
        assert_eq!(v[0], 6);
        let sub = sub?;
        let mut root = [if sub.rank() == Rank(0) { 100 + me } else { 0 }];
        sub.broadcast(&mut root, Rank(0), &o(60)).unwrap();
        assert_eq!(root[0], 101, "subgroup rank 0 is parent rank 1");
        Some((sub.rank().0, members(&sub, g.rank())))
    });
    let m = vec![1, 4, 0, 3, 5];
    assert_eq!(got[2], None);
    for (r, want_rank) in [(0, 2), (1, 0), (3, 3), (4, 1), (5, 4)] {
        assert_eq!(got[r], Some((want_rank, m.clone())), "rank {r}");
    }
}

#[test]
fn a_split_of_a_split_composes_the_maps() {
    let got = on_ranks(8, 9, |g| {
        let me = g.rank().0;
        // Halves (reversed), then each half's even and odd subgroup ranks.
        let half = g.split(Some(me / 4), -i64::from(me), &o(60)).unwrap().unwrap();
        let quarter = half.split(Some(half.rank().0 % 2), 0, &o(60)).unwrap().unwrap();
        let mut sum = [u64::from(me)];
        quarter.allreduce(&mut sum, ReduceOp::Sum, &o(60)).unwrap();
        (members(&quarter, g.rank()), sum[0])
    });
    for (r, (m, sum)) in got.iter().enumerate() {
        let r = r as u32;
        // Half h reversed is [4h+3, 4h+2, 4h+1, 4h]: its even positions hold the odd ranks.
        let want = if r % 2 == 1 {
            vec![r / 4 * 4 + 3, r / 4 * 4 + 1]
        } else {
            vec![r / 4 * 4 + 2, r / 4 * 4]
        };
        assert_eq!(m, &want, "rank {r}");
        assert_eq!(*sum, want.iter().map(|&p| u64::from(p)).sum::<u64>(), "rank {r}");
    }
}

#[test]
fn subgroups_of_one_process_run_at_once_from_different_threads() {
    // Two subgroups with the same members (ranks 0 and 1) on different tags. Rank 1 joins
    // `a`'s allreduce only after it has received `b`'s broadcast, which rank 0 runs on
    // another thread while its own `a` allreduce waits: this finishes only if a call on one
    // subgroup does not hold up the other's.
    let got = on_ranks(4, 5, |g| {
        let me = g.rank().0;
        let a = g.split(Some(me / 2), 0, &o(60)).unwrap().unwrap();
        let b = g.split(Some(me / 2), 0, &o(60)).unwrap().unwrap();
        assert_ne!(a.tag(), b.tag());
        let (tx, rx) = mpsc::channel();
        std::thread::scope(|s| {
            s.spawn(move || {
                let mut v = [0u64; 3];
                if b.rank() == Rank(0) {
                    v = [7, 8, 9];
                }
                b.broadcast(&mut v, Rank(0), &o(60)).unwrap();
                tx.send(v).unwrap();
            });
            if a.rank() == Rank(1) {
                let v = rx.recv_timeout(Duration::from_secs(60)).unwrap();
                assert_eq!(v, [7, 8, 9]);
            }
            let mut w = [u64::from(me) + 1; 5];
            a.allreduce(&mut w, ReduceOp::Sum, &o(60)).unwrap();
            w[0]
        })
    });
    assert_eq!(got, vec![3, 3, 7, 7]);
}

/// Non-blocking calls on a split's subgroup and on a fork of it run beside a blocking call
/// on the parent: each gets a tag of its own derived in the subgroups' range (not the
/// whole communicator's background range), and the sums of its own members.
#[test]
fn non_blocking_calls_run_on_subgroups() {
    let got = on_ranks(4, 9, |g| {
        let me = u64::from(g.rank().0);
        let sub = g.split(Some(g.rank().0 % 2), 0, &o(60)).unwrap().unwrap();
        let side = sub.fork(1).unwrap();
        let h1 = sub.start_allreduce(vec![me + 1; 3], ReduceOp::Sum, &o(60)).unwrap();
        let h2 = side.start_allreduce(vec![10 * (me + 1); 2], ReduceOp::Sum, &o(60)).unwrap();
        assert!(h1.tag() >= 1 << 31 && h2.tag() >= 1 << 31, "{} {}", h1.tag(), h2.tag());
        assert_ne!(h1.tag(), h2.tag());
        let mut w = [me];
        g.allreduce(&mut w, ReduceOp::Sum, &o(60)).unwrap();
        let b = h2.wait().unwrap();
        let a = h1.wait().unwrap();
        (a, b, w[0])
    });
    // Ranks 0 and 2 form one subgroup (1 + 3), ranks 1 and 3 the other (2 + 4).
    for (r, (a, b, w)) in got.into_iter().enumerate() {
        let s = if r % 2 == 0 { 4 } else { 6 };
        assert_eq!((a, b, w), (vec![s; 3], vec![10 * s; 2], 6), "rank {r}");
    }
}

#[test]
fn overlapping_subgroups_and_forks_run_many_calls_at_once() {
    let got = on_ranks(6, 11, |g| {
        let me = g.rank().0;
        let odd = g.split(Some(me % 2), 0, &o(60)).unwrap().unwrap();
        let low = g.split(Some(me / 3), 0, &o(60)).unwrap().unwrap();
        let odd2 = odd.fork(1).unwrap();
        let world = g.fork(1).unwrap();
        std::thread::scope(|s| {
            let t: Vec<_> = [odd, low, odd2, world]
                .into_iter()
                .enumerate()
                .map(|(i, h)| {
                    s.spawn(move || {
                        let mut last = 0;
                        for k in 0..30u64 {
                            let mut v = [u64::from(me) * 100 + k + i as u64];
                            h.allreduce(&mut v, ReduceOp::Sum, &o(60)).unwrap();
                            last = v[0];
                        }
                        last
                    })
                })
                .collect();
            t.into_iter().map(|t| t.join().unwrap()).collect::<Vec<u64>>()
        })
    });
    for (r, v) in got.iter().enumerate() {
        let r = r as u64;
        let sum = |ms: &[u64], i: u64| ms.iter().map(|m| m * 100 + 29 + i).sum::<u64>();
        let odd: Vec<u64> = (0..6).filter(|p| p % 2 == r % 2).collect();
        let low: Vec<u64> = (0..6).filter(|p| p / 3 == r / 3).collect();
        let all: Vec<u64> = (0..6).collect();
        assert_eq!(v, &vec![sum(&odd, 0), sum(&low, 1), sum(&odd, 2), sum(&all, 3)], "rank {r}");
    }
}

#[test]
fn send_and_recv_in_a_subgroup_use_subgroup_ranks() {
    let got = on_ranks(4, 3, |g| {
        if g.rank() == Rank(0) || g.rank() == Rank(2) {
            return None;
        }
        // Parent rank 3 is subgroup rank 0, parent rank 1 is subgroup rank 1.
        let sub = g.subgroup(&[Rank(3), Rank(1)]).unwrap();
        let e = sub.send(Rank(2), &[1u8], &o(5)).unwrap_err();
        assert!(matches!(e, Error::InvalidArgument { .. }), "{e:?}");
        if sub.rank() == Rank(0) {
            sub.send(Rank(1), &[3.5f64, g.rank().0.into()], &o(60)).unwrap();
            let mut back = [0u32; 2];
            assert_eq!(sub.recv(Rank(1), &mut back, &o(60)).unwrap(), 1);
            sub.send(Rank(1), &[1u8, 2, 3, 4], &o(60)).unwrap();
            Some(f64::from(back[0]))
        } else {
            let mut buf = [0f64; 4];
            assert_eq!(sub.recv(Rank(0), &mut buf, &o(60)).unwrap(), 2);
            sub.send(Rank(0), &[g.rank().0 + 40], &o(60)).unwrap();
            // Another type than was sent: the error names the sender's communicator rank.
            let e = sub.recv(Rank(0), &mut [0u32; 1], &o(60)).unwrap_err();
            assert!(matches!(e, Error::Mismatch { peer: Rank(3), .. }), "{e:?}");
            Some(buf[0] + buf[1])
        }
    });
    assert_eq!(got, vec![None, Some(6.5), None, Some(41.0)]);
}

#[test]
fn a_rank_outside_the_list_and_a_bad_list_are_typed_errors() {
    on_ranks_plain(3, |g| {
        let me = g.rank();
        match g.subgroup(&[Rank(0), Rank(1)]) {
            Ok(_) => assert_ne!(me, Rank(2), "rank 2 is not listed"),
            Err(Error::NotAMember { rank, members }) => {
                assert_eq!((rank, members), (Rank(2), vec![Rank(0), Rank(1)]));
                assert_eq!(me, Rank(2));
            }
            Err(e) => panic!("{e:?}"),
        }
        for bad in [&[][..], &[Rank(0), Rank(3)], &[Rank(1), Rank(1), Rank(0), Rank(2)]] {
            let e = g.subgroup(bad).unwrap_err();
            assert!(matches!(e, Error::InvalidGroup { .. }), "{bad:?}: {e:?}");
        }
        let e = g.fork(1 << 31).unwrap_err();
        assert!(matches!(e, Error::InvalidGroup { .. }), "{e:?}");
        // One handle per subgroup at a time, as with forks; dropped, it can be made again.
        let sub = g.subgroup(&[Rank(0), Rank(1), Rank(2)]).unwrap();
        let e = g.subgroup(&[Rank(0), Rank(1), Rank(2)]).unwrap_err();
        assert!(matches!(e, Error::TagInUse { .. }), "{e:?}");
        drop(sub);
        g.subgroup(&[Rank(0), Rank(1), Rank(2)]).unwrap();
    });
}

/// Ranks that disagree about a subgroup (rank 1 thinks it is {0, 1}, ranks 0 and 2 think
/// {0, 1, 2}; or ranks 0 and 1 list {0, 1} in different orders) get a typed error naming a
/// peer within the call's timeout, not a hang and not a result.
#[test]
fn disagreeing_members_are_a_typed_error_within_the_timeout() {
    let timeout = Duration::from_secs(3);
    let lists: [&[&[u32]]; 2] = [&[&[0, 1, 2], &[0, 1], &[0, 1, 2]], &[&[0, 1], &[1, 0]]];
    for views in lists {
        let n = views.len() as u32;
        let done = AtomicUsize::new(0);
        let got = on_ranks_plain(n, |g| {
            let list: Vec<Rank> = views[g.rank().index()].iter().map(|&r| Rank(r)).collect();
            let sub = g.subgroup(&list).unwrap();
            let mut v = [1f32; 16];
            let r = sub.allreduce(&mut v, ReduceOp::Sum, &Options::new().with_timeout(timeout));
            // Keep this rank's communicator until every rank has its outcome: one dropped
            // first says goodbye, and a peer still in its call would fail with `PeerLost`
            // (as a busy CI machine showed) instead of meeting the disagreement.
            done.fetch_add(1, Ordering::SeqCst);
            let until = Instant::now() + Duration::from_secs(60);
            while done.load(Ordering::SeqCst) < n as usize && Instant::now() < until {
                std::thread::sleep(Duration::from_millis(1));
            }
            r
        });
        for (rank, r) in got.iter().enumerate() {
            let e = r.as_ref().expect_err("a rank that disagrees must not get a result");
            eprintln!("rank {rank}: {e}");
            let named = match e {
                Error::Mismatch { peer, .. } => Some(*peer),
                Error::Transport { source, .. } => match source {
                    gloo_transport::Error::Timeout { pending, .. } => {
                        assert!(!pending.is_empty(), "{e}");
                        None
                    }
                    gloo_transport::Error::Aborted { .. } => None,
                    other => panic!("rank {rank}: {other:?}"),
                },
                other => panic!("rank {rank}: {other:?}"),
            };
            if let Some(peer) = named {
                assert!(peer.0 < n && peer.index() != rank, "rank {rank}: {e}");
            }
        }
    }
}

const TCP: &str = "every_collective_on_split_subgroups_over_tcp_at_4_and_5_ranks";

#[test]
fn every_collective_on_split_subgroups_over_tcp_at_4_and_5_ranks() {
    if let Some((rank, size)) = procs::child_rank() {
        let board = Board::from_env().expect("the parent passes a board");
        let job = format!("algo-sub-tcp-{size}");
        let listener = TcpListener::bind(TcpConfig::loopback(&job, Rank(rank), size)).unwrap();
        board.put(rank, &listener.address_bytes()).unwrap();
        let addrs = board.get_all(size, gloo_testing::deadline(60)).unwrap();
        let comm = listener.connect_all(&addrs, gloo_testing::deadline(60)).unwrap();
        let g = Group::with_overrides(comm, EnvOverrides::default());
        // Halves, numbered from the highest rank down; the halves run at once.
        let sub = g.split(Some(rank * 2 / size), -i64::from(rank), &o(60)).unwrap().unwrap();
        every_collective_on_this_rank(&sub, 42);
        let m = members(&sub, g.rank());
        let want: Vec<u32> = (0..size).rev().filter(|p| p * 2 / size == rank * 2 / size).collect();
        assert_eq!(m, want, "rank {rank}");
        g.barrier(&o(60)).unwrap();
        return;
    }
    for n in [4, 5] {
        let board = Board::fresh(&format!("algo-sub-tcp-{n}")).unwrap();
        let group = procs::spawn_self(TCP, n, &[board.env()]);
        for outcome in group.wait(gloo_testing::deadline(240)) {
            outcome.assert_success();
        }
    }
}
