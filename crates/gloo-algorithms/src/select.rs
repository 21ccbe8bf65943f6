//! Collectives, algorithms, and the one table that picks an algorithm for a call.

use crate::names::named_ids;

named_ids! {
    /// The collectives, as named in errors, fingerprints and environment variables.
    #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
    #[non_exhaustive]
    pub enum Collective {
        /// [`Group::allreduce`](crate::Group::allreduce) and its variants.
        Allreduce = 1 => "allreduce",
        /// [`Group::reduce`](crate::Group::reduce).
        Reduce = 2 => "reduce",
        /// [`Group::broadcast`](crate::Group::broadcast).
        Broadcast = 3 => "broadcast",
        /// [`Group::allgather`](crate::Group::allgather).
        Allgather = 4 => "allgather",
        /// [`Group::allgatherv`](crate::Group::allgatherv).
        Allgatherv = 5 => "allgatherv",
        /// [`Group::gather`](crate::Group::gather).
        Gather = 6 => "gather",
        /// [`Group::gatherv`](crate::Group::gatherv).
        Gatherv = 7 => "gatherv",
        /// [`Group::scatter`](crate::Group::scatter).
        Scatter = 8 => "scatter",
        /// [`Group::scatterv`](crate::Group::scatterv).
        Scatterv = 9 => "scatterv",
        /// [`Group::reduce_scatter`](crate::Group::reduce_scatter).
        ReduceScatter = 10 => "reduce_scatter",
        /// [`Group::reduce_scatterv`](crate::Group::reduce_scatterv).
        ReduceScatterv = 11 => "reduce_scatterv",
        /// [`Group::alltoall`](crate::Group::alltoall).
        Alltoall = 12 => "alltoall",
        /// [`Group::alltoallv`](crate::Group::alltoallv).
        Alltoallv = 13 => "alltoallv",
        /// [`Group::barrier`](crate::Group::barrier).
        Barrier = 14 => "barrier",
        /// [`Group::send`](crate::Group::send) / [`Group::recv`](crate::Group::recv).
        SendRecv = 15 => "send_recv",
    }
}

impl Collective {
    /// The environment variable that overrides this collective's algorithm, e.g.
    /// `GLOO_ALGORITHM_ALLREDUCE`.
    pub fn env_var(self) -> String {
        format!("GLOO_ALGORITHM_{}", self.name().to_ascii_uppercase())
    }

    /// The algorithms that implement this collective.
    pub fn algorithms(self) -> &'static [Algorithm] {
        use Algorithm::*;
        match self {
            Collective::Allreduce => &[Ring, HalvingDoubling, Bcube, RecursiveDoubling],
            Collective::Broadcast => &[BinomialTree, ScatterAllgather, Chain],
            Collective::Allgather => &[Ring, Bruck],
            Collective::Allgatherv | Collective::ReduceScatter | Collective::ReduceScatterv => {
                &[Ring]
            }
            Collective::Reduce => &[BinomialTree],
            Collective::Gather
            | Collective::Gatherv
            | Collective::Scatter
            | Collective::Scatterv => &[Direct, BinomialTree],
            Collective::Alltoall | Collective::Alltoallv => &[Pairwise],
            Collective::Barrier => &[Dissemination],
            Collective::SendRecv => &[Direct],
        }
    }

    /// The names of [`algorithms`](Self::algorithms), for error messages.
    pub fn algorithm_names(self) -> Vec<&'static str> {
        self.algorithms().iter().map(|a| a.name()).collect()
    }
}

named_ids! {
    /// An algorithm (a schedule of messages) that implements one or more collectives.
    #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
    #[non_exhaustive]
    pub enum Algorithm {
        /// Ring: reduce-scatter then allgather around the ring, each block cut into segments
        /// ([`Options::segment_bytes`](crate::Options)) with two segments in flight.
        /// Bandwidth-optimal; latency grows with the world size.
        Ring = 1 => "ring",
        /// Rabenseifner: recursive-halving reduce-scatter then recursive-doubling allgather. A
        /// world size that is not a power of two folds its extra ranks into their neighbours
        /// first and unfolds them at the end.
        HalvingDoubling = 2 => "halving_doubling",
        /// BCube: the ranks form a mixed-radix hypercube whose digits are at most
        /// [`Options::bcube_base`](crate::Options); each step reduce-scatters within a group of
        /// one digit, then the steps run backwards as allgathers.
        Bcube = 3 => "bcube",
        /// Recursive doubling: whole buffers exchanged with partners at distance 1, 2, 4, ...
        /// (extra ranks folded as in halving-doubling). Fewest rounds; for small messages.
        RecursiveDoubling = 4 => "recursive_doubling",
        /// Binomial tree rooted at the call's root.
        BinomialTree = 5 => "binomial",
        /// Broadcast as a binomial scatter of blocks followed by a ring allgather (van de Geijn),
        /// for large messages.
        ScatterAllgather = 6 => "scatter_allgather",
        /// Bruck's allgather: ⌈log2 n⌉ rounds, for small messages.
        Bruck = 7 => "bruck",
        /// Dissemination barrier: ⌈log2 n⌉ rounds of zero-byte messages.
        Dissemination = 8 => "dissemination",
        /// Pairwise exchange: in step `s` every rank sends to `rank + s` and receives from
        /// `rank - s`, each block cut into segments
        /// ([`Options::segment_bytes`](crate::Options)) with two in flight each way.
        Pairwise = 9 => "pairwise",
        /// A single point-to-point message; for gather and scatter, every block exchanged
        /// directly with the root.
        Direct = 10 => "direct",
        /// Broadcast down a line of ranks from the root, the buffer cut into segments
        /// ([`Options::segment_bytes`](crate::Options)) that each rank passes on as soon as
        /// it has them: the root sends the buffer once, and every link is busy at once.
        Chain = 11 => "chain",
    }
}

/// One row of the selection table: for `collective`, at `min_ranks` ranks or more and a
/// message of fewer than `bytes_below` bytes, use `algorithm`. The first matching row wins.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rule {
    /// The collective the row is for.
    pub collective: Collective,
    /// The row applies at this world size or above.
    pub min_ranks: u32,
    /// The row applies to messages shorter than this many bytes (the buffer for allreduce and
    /// broadcast, the whole output for allgather).
    pub bytes_below: u64,
    /// What to run.
    pub algorithm: Algorithm,
}

const fn rule(
    collective: Collective,
    min_ranks: u32,
    bytes_below: u64,
    algorithm: Algorithm,
) -> Rule {
    Rule { collective, min_ranks, bytes_below, algorithm }
}

const KIB: u64 = 1024;

/// The table the automatic choice reads, first match wins; collectives with one algorithm
/// have no row.
///
/// **Provenance: measured** on a 2-core KVM guest, 2026-11-27, tcp over loopback, quiet machine,
/// with `gloo-bench --ranks N --algorithm A --max-bytes 4M --no-limits` for N = 2 and 4 and
/// each allreduce algorithm (p50 per size). Recursive doubling was fastest up to 64 KiB at both
/// world sizes (4 B: 11 µs vs 15–20 µs at 2 ranks, 36 µs vs 77 µs at 4); at 4 ranks
/// halving-doubling won from 512 KiB to 1 MiB (1.35 ms vs 1.68 ms ring at 1 MiB) and ring from
/// 2 MiB (5.5 ms vs 7.7 ms at 4 MiB); at 2 ranks halving-doubling never won, and recursive
/// doubling (one full exchange) stayed within 5% of ring up to 1 MiB.
///
/// Broadcast and allgather: same machine, 2026-11-27 09:00 UTC, with
/// `gloo-bench --ranks N --collective C --algorithm A --max-bytes 16M --no-limits
/// --time-per-size 0.25` for N = 2, 4, 8 (the 4- and 8-rank runs share 2 cores, so they weigh
/// CPU time more than a network would). Allgather (bytes = the whole output): Bruck won up to
/// 64 KiB at 4 ranks (51 µs vs 86 µs at 16 B) and up to 128 KiB at 8 (445 µs vs 454 µs there;
/// 170 µs vs 420 µs at 128 B); ring won above (at 16 MiB: 13.9 ms vs 27.4 ms at 4 ranks); at 2
/// ranks both are one exchange and ring was level or ahead from 2 KiB.
///
/// Broadcast, gather and scatter: re-measured 2026-12 on the same machine, busy (load 5-11
/// from other jobs, so figures are rough; each pair alternated and run twice), with
/// `gloo-bench --ranks N --collective C --algorithm A --min-bytes 4K --max-bytes 64M
/// --step-factor 4 --time-per-size 0.3 --no-limits --no-check`, and CPU time per call (both
/// ranks, `perf stat -e task-clock`, 13 calls minus 3). Broadcast (before the chain, below) at 4 ranks: the binomial
/// tree won at every size from 1 MiB (p50 0.63-0.83 ms vs 1.41-1.52 at 1 MiB, 6.6-7.0 vs
/// 8.7-9.2 at 4 MiB, 24-29 vs 46-47 at 16 MiB, 107-111 vs 121-128 at 64 MiB; CPU 108 vs 128
/// ms per 64 MiB call: on loopback every byte is copied by a CPU, and scatter-allgather moves
/// 4/3 of the binomial's bytes), where the earlier table had chosen scatter-allgather from 2
/// MiB; at 8 ranks scatter-allgather won from 4 MiB (7.9-11.8 ms vs 10.8-17.5; 16 MiB 36-49 vs
/// 40-66) and lost at 1 MiB (3.7-5.3 vs 3.3-3.5), so it starts at 8 ranks and 4 MiB (5 to 7
/// ranks were not measured and keep the tree). Gather and scatter: the direct exchange with
/// the root (every block straight into or out of the root's buffer) won or tied at 2, 4 and 8
/// ranks from 4 KiB to 64 MiB (4 ranks, 16 MiB: gather 5.4-5.7 ms vs 8.2-11.7, scatter 5.6-6.6
/// vs 9.6-11.8; 64 MiB CPU per call 24.6 vs 39.8 ms gather, 31.9 vs 44.8 scatter; at 2 ranks,
/// where both are one message, the tree's root copied every block through scratch), except
/// 4-rank scatter at 1 MiB (0.31-0.33 ms vs 0.27-0.29), within the noise of a busy machine, so
/// gather and scatter have no rows: direct, their first algorithm, everywhere.
///
/// Broadcast with the pipelined chain: same machine, 2026-12-07, tcp over loopback, with
/// `gloo-bench --ranks N --collective broadcast --algorithm A --min-bytes 1M --max-bytes 64M
/// --step-factor 4 --time-per-size 0.5 --no-limits`, each run twice (p50). From 1 MiB (two
/// segments of the default 512 KiB) the chain won or tied at every size at 2, 3 and 4 ranks
/// (1 MiB: 133-201 µs vs 311-351 at 2 ranks, 374 vs 1,455 at 3, 486-820 vs 897-1,100 at 4;
/// 4 ranks, 64 MiB: 56.7-64.1 ms vs 59.3-75.5) and lost below it, where it is one segment
/// passed down n - 1 hops (4 ranks, 512 KiB: 296 vs 259 µs). At 8 ranks it beat the tree at
/// every size from 1 MiB and scatter-allgather from 16 MiB (31.3-32.2 ms vs 39.7-41.6; 64
/// MiB 125 vs 153), but not at 4 MiB (7.7-8.2 ms vs 6.5-7.1), so 8 ranks and more scatter
/// from 1 MiB to 16 MiB; 5 to 7 ranks were not measured and take the chain.
pub const TABLE: &[Rule] = &[
    rule(Collective::Allreduce, 1, 64 * KIB, Algorithm::RecursiveDoubling),
    rule(Collective::Allreduce, 3, 2048 * KIB, Algorithm::HalvingDoubling),
    rule(Collective::Allreduce, 1, 2048 * KIB, Algorithm::RecursiveDoubling),
    rule(Collective::Allreduce, 1, u64::MAX, Algorithm::Ring),
    rule(Collective::Broadcast, 1, 1024 * KIB, Algorithm::BinomialTree),
    rule(Collective::Broadcast, 8, 16384 * KIB, Algorithm::ScatterAllgather),
    rule(Collective::Broadcast, 1, u64::MAX, Algorithm::Chain),
    rule(Collective::Allgather, 3, 128 * KIB, Algorithm::Bruck),
    rule(Collective::Allgather, 1, u64::MAX, Algorithm::Ring),
];

/// The table's choice for `collective` at `ranks` ranks and `bytes` bytes.
///
/// ```
/// use gloo_algorithms::{Algorithm, Collective, select::choose};
/// assert_eq!(choose(Collective::Allreduce, 4, 4), Algorithm::RecursiveDoubling);
/// assert_eq!(choose(Collective::Allreduce, 4, 64 << 20), Algorithm::Ring);
/// assert_eq!(choose(Collective::Barrier, 4, 0), Algorithm::Dissemination);
/// ```
pub fn choose(collective: Collective, ranks: u32, bytes: u64) -> Algorithm {
    TABLE
        .iter()
        .find(|r| r.collective == collective && ranks >= r.min_ranks && bytes < r.bytes_below)
        .map(|r| r.algorithm)
        // Collectives without rows have exactly one algorithm.
        .unwrap_or(collective.algorithms()[0])
}

/// Algorithm overrides read from the environment, one variable per collective.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct EnvOverrides {
    by_collective: Vec<(Collective, Algorithm)>,
}

impl EnvOverrides {
    /// Read every `GLOO_ALGORITHM_<COLLECTIVE>` variable; an unknown or inapplicable name is
    /// an error that lists the valid ones.
    pub fn from_env() -> Result<EnvOverrides, crate::Error> {
        Self::from_lookup(|k| std::env::var(k).ok())
    }

    /// As [`from_env`](Self::from_env), reading variables through `lookup` (for tests and
    /// for launchers that carry their own environment).
    pub fn from_lookup(
        lookup: impl Fn(&str) -> Option<String>,
    ) -> Result<EnvOverrides, crate::Error> {
        let mut by_collective = Vec::new();
        for c in Collective::ALL {
            let var = c.env_var();
            let Some(value) = lookup(&var) else { continue };
            let name = value.trim().to_ascii_lowercase();
            match Algorithm::from_name(&name) {
                Some(a) if c.algorithms().contains(&a) => by_collective.push((c, a)),
                _ => {
                    return Err(crate::Error::UnknownAlgorithm {
                        collective: c,
                        source: var,
                        name: value,
                        valid: c.algorithm_names(),
                    });
                }
            }
        }
        Ok(EnvOverrides { by_collective })
    }

    /// The override for `collective`, if one was set.
    pub fn algorithm(&self, collective: Collective) -> Option<Algorithm> {
        self.by_collective.iter().find(|(c, _)| *c == collective).map(|(_, a)| *a)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_collective_has_a_choice_at_every_size() {
        for c in Collective::ALL {
            for ranks in [1, 2, 3, 16] {
                for bytes in [0, 1, 8191, 8192, 1 << 20, u64::MAX - 1] {
                    assert!(c.algorithms().contains(&choose(c, ranks, bytes)), "{c} {bytes}");
                }
            }
        }
    }

    /// The allreduce rows as measured (see [`TABLE`]), at both sides of every threshold:
    /// recursive doubling below 64 KiB; from 3 ranks halving-doubling up to 2 MiB; at 1 or 2
    /// ranks recursive doubling up to 2 MiB; ring from 2 MiB.
    #[test]
    fn allreduce_follows_the_measured_table() {
        use Algorithm::{HalvingDoubling as Hd, RecursiveDoubling as Rd, Ring};
        let cases: [(u32, u64, Algorithm); 16] = [
            (1, 0, Rd),
            (2, 0, Rd),
            (2, 64 * KIB - 1, Rd),
            (2, 64 * KIB, Rd),
            (2, 2048 * KIB - 1, Rd),
            (2, 2048 * KIB, Ring),
            (1, 2048 * KIB, Ring),
            (3, 4, Rd),
            (3, 64 * KIB - 1, Rd),
            (3, 64 * KIB, Hd),
            (3, 2048 * KIB - 1, Hd),
            (3, 2048 * KIB, Ring),
            (16, 64 * KIB - 1, Rd),
            (16, 1 << 20, Hd),
            (16, 64 << 20, Ring),
            (16, u64::MAX, Ring),
        ];
        for (ranks, bytes, want) in cases {
            assert_eq!(
                choose(Collective::Allreduce, ranks, bytes),
                want,
                "{ranks} ranks, {bytes} B"
            );
        }
    }

    /// Collectives with one algorithm have no row and always get it; those with several
    /// offer exactly the ones their docs name (the values a `GLOO_ALGORITHM_*` variable
    /// accepts), the table's default first.
    #[test]
    fn each_collective_offers_its_algorithms() {
        use Algorithm::*;
        let want: [(Collective, &[Algorithm]); 15] = [
            (Collective::Allreduce, &[Ring, HalvingDoubling, Bcube, RecursiveDoubling]),
            (Collective::Reduce, &[BinomialTree]),
            (Collective::Broadcast, &[BinomialTree, ScatterAllgather, Chain]),
            (Collective::Allgather, &[Ring, Bruck]),
            (Collective::Allgatherv, &[Ring]),
            (Collective::Gather, &[Direct, BinomialTree]),
            (Collective::Gatherv, &[Direct, BinomialTree]),
            (Collective::Scatter, &[Direct, BinomialTree]),
            (Collective::Scatterv, &[Direct, BinomialTree]),
            (Collective::ReduceScatter, &[Ring]),
            (Collective::ReduceScatterv, &[Ring]),
            (Collective::Alltoall, &[Pairwise]),
            (Collective::Alltoallv, &[Pairwise]),
            (Collective::Barrier, &[Dissemination]),
            (Collective::SendRecv, &[Direct]),
        ];
        for (c, algorithms) in want {
            assert_eq!(c.algorithms(), algorithms, "{c}");
            let names: Vec<&str> = algorithms.iter().map(|a| a.name()).collect();
            assert_eq!(c.algorithm_names(), names, "{c}");
            if !TABLE.iter().any(|r| r.collective == c) {
                assert_eq!(choose(c, 5, 1 << 20), algorithms[0], "{c}");
            }
        }
    }

    /// Names and wire ids, as errors, fingerprints and environment variables spell them.
    #[test]
    fn names_and_ids_round_trip() {
        let names = [
            "allreduce",
            "reduce",
            "broadcast",
            "allgather",
            "allgatherv",
            "gather",
            "gatherv",
            "scatter",
            "scatterv",
            "reduce_scatter",
            "reduce_scatterv",
            "alltoall",
            "alltoallv",
            "barrier",
            "send_recv",
        ];
        for (i, (c, name)) in Collective::ALL.into_iter().zip(names).enumerate() {
            assert_eq!(c.name(), name);
            assert_eq!(c.to_string(), name);
            assert_eq!(c as usize, i + 1);
            assert_eq!(Collective::from_id(i as u8 + 1), Some(c));
            assert_eq!(c.env_var(), format!("GLOO_ALGORITHM_{}", name.to_ascii_uppercase()));
        }
        assert_eq!(Collective::from_id(0), None);
        assert_eq!(Collective::from_id(16), None);
        let names = [
            "ring",
            "halving_doubling",
            "bcube",
            "recursive_doubling",
            "binomial",
            "scatter_allgather",
            "bruck",
            "dissemination",
            "pairwise",
            "direct",
        ];
        for (i, (a, name)) in Algorithm::ALL.into_iter().zip(names).enumerate() {
            assert_eq!(a.name(), name);
            assert_eq!(a.to_string(), name);
            assert_eq!(Algorithm::from_name(name), Some(a));
            assert_eq!(a as usize, i + 1);
            assert_eq!(Algorithm::from_id(i as u8 + 1), Some(a));
        }
        assert_eq!(Algorithm::from_name("Ring"), None, "names are matched as given");
        assert_eq!(Algorithm::from_id(0), None);
        assert_eq!(Algorithm::from_id(12), None);
    }

    /// `from_env` reads the process environment (in a child process started with the
    /// variables set, since a test cannot change its own environment safely): a name in any
    /// case and with spaces around it selects the algorithm, and `Group::new` refuses an
    /// algorithm of another collective, naming the variable.
    #[test]
    fn overrides_come_from_the_process_environment() {
        use gloo_testing::procs;
        const NAME: &str = "select::tests::overrides_come_from_the_process_environment";
        if let Some((rank, _)) = procs::child_rank() {
            let o = EnvOverrides::from_env();
            if rank == 0 {
                let o = o.expect("valid overrides");
                assert_eq!(o.algorithm(Collective::Allreduce), Some(Algorithm::Bcube));
                assert_eq!(o.algorithm(Collective::Allgather), Some(Algorithm::Bruck));
                assert_eq!(o.algorithm(Collective::Broadcast), None);
            } else {
                let comm = gloo_transport::loopback::group(1, Default::default()).remove(0);
                let e = crate::Group::new(comm).map(|_| ()).unwrap_err();
                assert!(e.to_string().contains("GLOO_ALGORITHM_BARRIER"), "{e}");
                assert!(matches!(o, Err(crate::Error::UnknownAlgorithm { .. })), "{o:?}");
            }
            return;
        }
        let env = |rank: u32| -> Vec<(String, String)> {
            let v = |k: &str, v: &str| (k.to_string(), v.to_string());
            if rank == 0 {
                vec![
                    v("GLOO_ALGORITHM_ALLREDUCE", " BCube "),
                    v("GLOO_ALGORITHM_ALLGATHER", "bruck"),
                ]
            } else {
                vec![v("GLOO_ALGORITHM_BARRIER", "ring")]
            }
        };
        for outcome in procs::spawn_self_with(NAME, 2, env).wait(gloo_testing::deadline(60)) {
            outcome.assert_success();
        }
    }

    #[test]
    fn broadcast_pipelines_a_chain_from_a_mebibyte_but_scatters_on_eight_ranks_to_16_mib() {
        for n in [2, 3, 4, 7, 8, 64] {
            assert_eq!(choose(Collective::Broadcast, n, 1024), Algorithm::BinomialTree);
            assert_eq!(choose(Collective::Broadcast, n, (1 << 20) - 1), Algorithm::BinomialTree);
            assert_eq!(choose(Collective::Broadcast, n, 64 << 20), Algorithm::Chain);
        }
        for n in [2, 3, 4, 7] {
            assert_eq!(choose(Collective::Broadcast, n, 1 << 20), Algorithm::Chain);
            assert_eq!(choose(Collective::Broadcast, n, 4 << 20), Algorithm::Chain);
        }
        assert_eq!(choose(Collective::Broadcast, 8, 1 << 20), Algorithm::ScatterAllgather);
        assert_eq!(choose(Collective::Broadcast, 16, (16 << 20) - 1), Algorithm::ScatterAllgather);
        assert_eq!(choose(Collective::Broadcast, 8, 16 << 20), Algorithm::Chain);
    }

    #[test]
    fn gather_and_scatter_exchange_directly_with_the_root() {
        for c in
            [Collective::Gather, Collective::Gatherv, Collective::Scatter, Collective::Scatterv]
        {
            for (ranks, bytes) in [(2, 4), (4, 4096), (8, 64 << 20), (64, 1 << 20)] {
                assert_eq!(choose(c, ranks, bytes), Algorithm::Direct, "{c} {ranks} {bytes}");
            }
        }
    }

    #[test]
    fn allgather_uses_bruck_only_below_128_kib_on_three_ranks_or_more() {
        assert_eq!(choose(Collective::Allgather, 4, 4), Algorithm::Bruck);
        assert_eq!(choose(Collective::Allgather, 8, 128 * 1024 - 1), Algorithm::Bruck);
        assert_eq!(choose(Collective::Allgather, 8, 128 * 1024), Algorithm::Ring);
        assert_eq!(choose(Collective::Allgather, 2, 4), Algorithm::Ring);
    }

    #[test]
    fn unknown_algorithm_in_the_environment_lists_the_valid_ones() {
        let e = EnvOverrides::from_lookup(|k| {
            (k == "GLOO_ALGORITHM_ALLREDUCE").then(|| "rign".to_string())
        })
        .unwrap_err();
        let text = e.to_string();
        assert!(text.contains("GLOO_ALGORITHM_ALLREDUCE"), "{text}");
        assert!(text.contains("rign"), "{text}");
        assert!(text.contains("ring, halving_doubling, bcube, recursive_doubling"), "{text}");
    }

    #[test]
    fn an_algorithm_of_another_collective_in_the_environment_is_refused() {
        let e = EnvOverrides::from_lookup(|k| {
            (k == "GLOO_ALGORITHM_BARRIER").then(|| "ring".to_string())
        });
        assert!(matches!(e, Err(crate::Error::UnknownAlgorithm { .. })), "{e:?}");
    }

    #[test]
    fn environment_overrides_are_read_per_collective() {
        let o = EnvOverrides::from_lookup(|k| match k {
            "GLOO_ALGORITHM_ALLREDUCE" => Some("Bcube".to_string()),
            "GLOO_ALGORITHM_ALLGATHER" => Some("bruck".to_string()),
            _ => None,
        })
        .unwrap();
        assert_eq!(o.algorithm(Collective::Allreduce), Some(Algorithm::Bcube));
        assert_eq!(o.algorithm(Collective::Allgather), Some(Algorithm::Bruck));
        assert_eq!(o.algorithm(Collective::Broadcast), None);
    }
}
