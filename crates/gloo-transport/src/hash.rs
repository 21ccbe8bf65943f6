//! The hash maps of the engine and of the per-peer protocol state.
//!
//! They are looked up several times per operation on the latency path (posting, matching,
//! every `progress` round of a busy-polling wait), where std's SipHash-1-3 showed as 15% of a
//! 2-rank 4-byte allreduce over shared memory in `perf`. foldhash (hashbrown's default hasher)
//! hashes a `u64` in a few instructions and is still seeded at random per process: some keys
//! come from a peer (the transfer ids of its requests to send), and a fixed hash would let a
//! peer that holds the token aim them all at one bucket; the number a peer can make us hold
//! stays bounded by the engine regardless.

/// A hash map with foldhash's per-process random seed.
pub(crate) type Map<K, V> = std::collections::HashMap<K, V, foldhash::fast::RandomState>;
/// A hash set with foldhash's per-process random seed.
pub(crate) type Set<K> = std::collections::HashSet<K, foldhash::fast::RandomState>;
