//! The bootstrap: from (store, transport listener, rank, size) to a connected communicator.

use std::time::{Duration, Instant};

use gloo_transport::{Listener, Rank};

use crate::error::{Error, Result};
use crate::store::{CompareSet, Store};

/// Every bootstrap key starts with this, so a store shared with the application stays tidy.
const PREFIX: &str = "gloo/bootstrap";

/// Tag and version of a published entry: `"GBS1"`, world size (u32 LE), address bytes.
const ENTRY_MAGIC: &[u8; 4] = b"GBS1";

/// Tag and version of the outcome rank 0 (or a rank that found a failure) publishes.
const RESULT_MAGIC: &[u8; 4] = b"GBR1";

/// The longest address a transport may publish (a store entry is untrusted input).
const MAX_ADDRESS: usize = 4096;

/// How long rank 0 waits for the missing entries before it looks for a failure published by
/// another rank and checks what arrived.
const SLICE: Duration = Duration::from_millis(200);

/// How long rank 0 keeps the store's keys (and, when it hosts the store, the store) for the
/// other ranks to read a failure, at most.
const LINGER: Duration = Duration::from_secs(2);

fn key(what: &str, rank: u32) -> Vec<u8> {
    format!("{PREFIX}/{what}/{rank}").into_bytes()
}

fn named(what: &str) -> Vec<u8> {
    format!("{PREFIX}/{what}").into_bytes()
}

/// Connect this rank into a group of `size` ranks through `store`, and return the
/// transport's communicator.
///
/// The rendezvous is [`exchange_addresses`] (see there for its checks and for what every rank
/// learns when the start-up fails); then the full mesh is connected with
/// [`Listener::connect_all`], which parses (and rejects, naming the rank) the address bytes
/// before dialling anything.
///
/// Every rank connects to every other before this returns; for large jobs in which a rank
/// talks to few peers, [`connect_lazy`] connects each pair on its first use instead.
pub fn connect<L: Listener>(
    store: &dyn Store,
    listener: L,
    rank: Rank,
    size: u32,
    deadline: Instant,
) -> Result<L::Comm> {
    let start = Instant::now();
    let addrs = exchange_addresses(store, rank, size, &listener.address_bytes(), deadline)?;
    let comm = listener.connect_all(&addrs, deadline)?;
    tracing::debug!(rank = rank.0, size, waited = ?start.elapsed(), "group connected");
    Ok(comm)
}

/// Like [`connect`], but the communicator connects each pair of ranks on its first use
/// ([`Listener::connect_lazy`]) instead of the full mesh up front: the same rendezvous (so a
/// rank that never shows up is still named in [`Error::MissingRanks`], and every address is
/// checked before this returns), then a communicator with no connection yet.
///
/// A transport without a lazy mode fails with its configuration error
/// ([`Error::Transport`] holding [`gloo_transport::Error::Config`]) rather than quietly
/// connecting the full mesh. The TCP transport has one; see `gloo_transport::tcp` for what
/// lazy connection means for errors and aborts.
pub fn connect_lazy<L: Listener>(
    store: &dyn Store,
    listener: L,
    rank: Rank,
    size: u32,
    deadline: Instant,
) -> Result<L::Comm> {
    let start = Instant::now();
    let addrs = exchange_addresses(store, rank, size, &listener.address_bytes(), deadline)?;
    let comm = listener.connect_lazy(&addrs, deadline)?;
    tracing::debug!(rank = rank.0, size, waited = ?start.elapsed(), "lazy group ready");
    Ok(comm)
}

/// The rendezvous without a transport: publish this rank's `address`, and return every
/// rank's, indexed by rank, once all `size` ranks have published theirs.
///
/// Store traffic grows linearly with the ranks: each rank claims its rank number with a
/// `compare_set`, publishes one entry (its address, tagged with the world size) and waits for
/// one key; rank 0 gathers every entry with multi-key waits, checks each as it arrives, and
/// publishes one value holding every address (or the failure it found). No rank reads another
/// rank's entry one key at a time.
///
/// Every rank learns why a start-up failed, promptly and with the same error:
/// - two processes with one rank number: [`Error::RankConflict`] on every rank (the process
///   that lost the claim publishes the failure at once);
/// - ranks started with different world sizes: [`Error::WorldSizeMismatch`] naming the rank and
///   both sizes, on every rank, including the misconfigured one, as soon as rank 0 sees its
///   entry (a rank outside rank 0's world learns rank 0's size from its result);
/// - a malformed entry: [`Error::BadAddress`] naming its rank;
/// - ranks that never publish: [`Error::MissingRanks`] naming them, on every rank, just before
///   the deadline (rank 0 publishes the list; if rank 0 itself is missing, every rank works
///   out the list from the store).
///
/// After a failure, rank 0 keeps the store's keys for up to 2 s until every rank that joined
/// has read the failure, so that the ranks learn it even when rank 0's process hosts the store
/// and exits next, then deletes them. Once every rank has read the addresses, the last one
/// deletes the bootstrap's keys. Either way a store may serve one run after another. Runs that
/// overlap in time need a [`PrefixStore`](crate::PrefixStore) each: while a run is in its
/// rendezvous, a rank number it claimed counts as claimed. A run whose rank 0 dies leaves its
/// keys behind (a Redis store's expiry removes them; a file store's directory needs cleaning).
pub fn exchange_addresses(
    store: &dyn Store,
    rank: Rank,
    size: u32,
    address: &[u8],
    deadline: Instant,
) -> Result<Vec<Vec<u8>>> {
    let rank = rank.0;
    if size == 0 || rank >= size {
        return Err(Error::InvalidArgument {
            key: None,
            what: format!("rank {rank} is not in a world of {size} ranks"),
        });
    }
    if address.is_empty() || address.len() > MAX_ADDRESS {
        return Err(Error::InvalidArgument {
            key: None,
            what: format!("an address of {} bytes (1 to {MAX_ADDRESS} allowed)", address.len()),
        });
    }
    let start = Instant::now();
    // A margin before the deadline for telling every rank which ranks are missing.
    let margin = ((deadline.saturating_duration_since(start)) / 20)
        .clamp(Duration::from_millis(20), Duration::from_secs(1));
    claim(store, rank, deadline)?;
    store.add(&named("joined"), 1, deadline)?;

    let mut entry = Vec::with_capacity(8 + address.len());
    entry.extend_from_slice(ENTRY_MAGIC);
    entry.extend_from_slice(&size.to_le_bytes());
    entry.extend_from_slice(address);
    store.set(&key("addr", rank), &entry, deadline)?;
    tracing::debug!(rank, size, "published address; waiting for the others");

    let outcome = if rank == 0 {
        lead(store, size, entry, start, deadline, margin)
    } else {
        follow(store, rank, size, start, deadline, margin)
    };
    match outcome {
        Ok(addrs) => {
            tidy_up(store, rank, size, deadline);
            Ok(addrs)
        }
        Err(e) => {
            if rank == 0 && is_start_up_failure(&e) {
                linger(store, deadline);
                // The run is over: its keys must not block (or mislead) the next run on this
                // store, so rank 0 deletes them. Best effort, bounded on its own.
                clear(store, size, Instant::now() + Duration::from_secs(2));
            } else if is_start_up_failure(&e) {
                // Tell rank 0 this rank has read the failure (best effort).
                let _ = store.add(&named("failed"), 1, deadline.max(Instant::now() + margin));
            }
            Err(e)
        }
    }
}

/// Whether `e` is a failure of the group's start-up that every rank is told (not a store or
/// argument error of this rank alone).
fn is_start_up_failure(e: &Error) -> bool {
    matches!(
        e,
        Error::MissingRanks { .. }
            | Error::RankConflict { .. }
            | Error::BadAddress { .. }
            | Error::WorldSizeMismatch { .. }
    )
}

/// Rank 0 after a failure: keep going until every other rank that joined has read the
/// failure, for at most [`LINGER`] and never past the deadline.
fn linger(store: &dyn Store, deadline: Instant) {
    let end = deadline.min(Instant::now() + LINGER);
    while Instant::now() < end {
        let read = |what| store.add(&named(what), 0, end);
        match (read("joined"), read("failed")) {
            (Ok(joined), Ok(failed)) if failed >= joined - 1 => return,
            (Ok(_), Ok(_)) => std::thread::sleep(Duration::from_millis(10)),
            _ => return,
        }
    }
}

/// Delete every bootstrap key of a failed run of `size` ranks (best effort: logged).
fn clear(store: &dyn Store, size: u32, deadline: Instant) {
    let all = || -> Result<()> {
        for r in 0..size {
            store.delete(&key("addr", r), deadline)?;
            store.delete(&key("claim", r), deadline)?;
        }
        for what in ["result", "joined", "failed", "done"] {
            store.delete(&named(what), deadline)?;
        }
        Ok(())
    };
    if let Err(e) = all() {
        tracing::warn!(error = %e, "could not delete a failed bootstrap's keys from the store");
    }
}

/// Rank 0: gather every entry, check each as it arrives, publish the addresses or the
/// failure found.
fn lead(
    store: &dyn Store,
    size: u32,
    own: Vec<u8>,
    start: Instant,
    deadline: Instant,
    margin: Duration,
) -> Result<Vec<Vec<u8>>> {
    let keys: Vec<Vec<u8>> = (0..size).map(|r| key("addr", r)).collect();
    let mut addrs: Vec<Option<Vec<u8>>> = vec![None; size as usize];
    addrs[0] = Some(parse_entry(0, size, own)?);
    let give_up = deadline.checked_sub(2 * margin).unwrap_or(deadline).max(start);
    loop {
        let missing: Vec<u32> = (0..size).filter(|r| addrs[*r as usize].is_none()).collect();
        if missing.is_empty() {
            break;
        }
        let refs: Vec<&[u8]> = missing.iter().map(|r| keys[*r as usize].as_slice()).collect();
        let slice_end = give_up.min(Instant::now() + SLICE);
        let arrived: Vec<(u32, Vec<u8>)> = match store.multi_get(&refs, slice_end) {
            Ok(values) => missing.iter().copied().zip(values).collect(),
            Err(Error::Timeout { keys: still, .. }) => {
                // A set, so a slice costs O(N), not O(N^2), with thousands of ranks missing.
                let still: std::collections::HashSet<&[u8]> =
                    still.iter().map(Vec::as_slice).collect();
                let (got, want): (Vec<u32>, Vec<&[u8]>) = missing
                    .iter()
                    .zip(&refs)
                    .filter(|(_, k)| !still.contains(*k))
                    .map(|(r, k)| (*r, *k))
                    .unzip();
                if want.is_empty() {
                    Vec::new()
                } else {
                    got.into_iter().zip(store.multi_get(&want, deadline)?).collect()
                }
            }
            // The store is unreachable for now: keep trying until the whole deadline (the
            // store may be restarting); past it, report the store, not the ranks.
            Err(Error::Unreachable { endpoint, detail, .. }) => {
                if Instant::now() >= deadline {
                    return Err(Error::Unreachable { endpoint, detail, waited: start.elapsed() });
                }
                std::thread::sleep(Duration::from_millis(10));
                continue;
            }
            Err(e) => return Err(e),
        };
        for (r, entry) in arrived {
            match parse_entry(r, size, entry) {
                Ok(a) => addrs[r as usize] = Some(a),
                Err(e) => return publish_failure(store, e, size, deadline),
            }
        }
        if let Some(v) = store.try_get(&named("result"), deadline)? {
            return read_result(&v, 0, size);
        }
        if Instant::now() >= give_up && addrs.iter().any(Option::is_none) {
            let ranks = (0..size).filter(|r| addrs[*r as usize].is_none()).collect();
            let e = Error::MissingRanks { ranks, waited: start.elapsed() };
            return publish_failure(store, e, size, deadline);
        }
    }
    // Every entry arrived and checked out.
    let addrs: Vec<Vec<u8>> = addrs.into_iter().map(Option::unwrap_or_default).collect();
    let blob = encode_addresses(size, &addrs);
    match store.compare_set(&named("result"), None, &blob, deadline)? {
        CompareSet::Swapped => Ok(addrs),
        // A rank published a failure first: it holds for everybody.
        CompareSet::Mismatch { current } => read_result(&current.unwrap_or_default(), 0, size),
    }
}

/// A rank other than 0: wait for rank 0's result; near the deadline, work out which ranks are
/// missing from the store itself (rank 0 may be one of them).
fn follow(
    store: &dyn Store,
    rank: u32,
    size: u32,
    start: Instant,
    deadline: Instant,
    margin: Duration,
) -> Result<Vec<Vec<u8>>> {
    let wait_end = deadline.checked_sub(margin).unwrap_or(deadline).max(start);
    let result = named("result");
    loop {
        match store.get(&result, wait_end) {
            Ok(v) => return read_result(&v, rank, size),
            Err(Error::Timeout { .. }) => break,
            Err(Error::Unreachable { endpoint, detail, .. }) => {
                if Instant::now() >= deadline {
                    return Err(Error::Unreachable { endpoint, detail, waited: start.elapsed() });
                }
                if Instant::now() >= wait_end {
                    break;
                }
            }
            Err(e) => return Err(e),
        }
    }
    // Rank 0 published nothing in time: name the ranks whose entries are missing.
    let end = deadline.max(Instant::now() + Duration::from_millis(50));
    if let Some(v) = store.try_get(&result, end)? {
        return read_result(&v, rank, size);
    }
    let keys: Vec<Vec<u8>> = (0..size).map(|r| key("addr", r)).collect();
    let refs: Vec<&[u8]> = keys.iter().map(Vec::as_slice).collect();
    let ranks: Vec<u32> = match store.wait(&refs, Instant::now()) {
        Ok(()) => vec![0],
        Err(Error::Timeout { keys: missing, .. }) => {
            let missing: std::collections::HashSet<&[u8]> =
                missing.iter().map(Vec::as_slice).collect();
            (0..size).filter(|r| missing.contains(keys[*r as usize].as_slice())).collect()
        }
        Err(e) => return Err(e),
    };
    Err(Error::MissingRanks { ranks, waited: start.elapsed() })
}

/// Publish `failure` for every rank, unless another failure was published first, in which
/// case that one is returned (every rank reports the same failure).
fn publish_failure(
    store: &dyn Store,
    failure: Error,
    size: u32,
    deadline: Instant,
) -> Result<Vec<Vec<u8>>> {
    let value = encode_failure(&failure);
    match store.compare_set(&named("result"), None, &value, deadline)? {
        CompareSet::Swapped => Err(failure),
        CompareSet::Mismatch { current } => read_result(&current.unwrap_or_default(), 0, size),
    }
}

/// Count this rank as done with the bootstrap's keys (this rank deletes its own entry); the
/// last rank deletes the rest. Best effort: the group is formed whatever happens here, so a
/// failure is only logged.
fn tidy_up(store: &dyn Store, rank: u32, size: u32, deadline: Instant) {
    let tidy = || -> Result<()> {
        store.delete(&key("addr", rank), deadline)?;
        // Every rank increments only after it has read every address, so when the count
        // reaches the world size nobody needs a key any more.
        if store.add(&named("done"), 1, deadline)? != i64::from(size) {
            return Ok(());
        }
        for r in 0..size {
            store.delete(&key("claim", r), deadline)?;
        }
        for what in ["result", "joined", "failed", "done"] {
            store.delete(&named(what), deadline)?;
        }
        Ok(())
    };
    if let Err(e) = tidy() {
        tracing::warn!(error = %e, "could not delete the bootstrap's keys from the store");
    }
}

/// Claim `rank` with a fresh random identity; a lost claim is reported to the whole group.
fn claim(store: &dyn Store, rank: u32, deadline: Instant) -> Result<()> {
    use ring::rand::SecureRandom;
    let mut id = [0u8; 16];
    ring::rand::SystemRandom::new()
        .fill(&mut id)
        .map_err(|_| Error::Config { detail: "the system random source failed".into() })?;
    match store.compare_set(&key("claim", rank), None, &id, deadline)? {
        CompareSet::Swapped => Ok(()),
        CompareSet::Mismatch { .. } => {
            let why = format!(
                "rank {rank} was claimed by a second process (a launcher started two processes \
                 with the same rank, or the store holds an earlier run of this job)"
            );
            let e = Error::RankConflict { rank, detail: why };
            // Tell the winner and everybody else, so nobody waits on a broken group.
            let _ = store.compare_set(&named("result"), None, &encode_failure(&e), deadline)?;
            Err(e)
        }
    }
}

const OK: u8 = 0;
const FAILED: u8 = 1;
const K_MISSING: u8 = 1;
const K_CONFLICT: u8 = 2;
const K_BAD_ADDRESS: u8 = 3;
const K_WORLD_SIZE: u8 = 4;

/// `GBR1`, 0, world size, then per rank: address length (u32 LE), address.
fn encode_addresses(size: u32, addrs: &[Vec<u8>]) -> Vec<u8> {
    let mut v = Vec::with_capacity(9 + addrs.iter().map(|a| 4 + a.len()).sum::<usize>());
    v.extend_from_slice(RESULT_MAGIC);
    v.push(OK);
    v.extend_from_slice(&size.to_le_bytes());
    for a in addrs {
        v.extend_from_slice(&(a.len() as u32).to_le_bytes());
        v.extend_from_slice(a);
    }
    v
}

/// `GBR1`, 1, kind, three u32 (the ranks or sizes involved), a count of ranks and the ranks
/// (u32 LE each), then the message (UTF-8, the rest).
fn encode_failure(e: &Error) -> Vec<u8> {
    let (kind, fields, ranks, msg): (u8, [u32; 3], &[u32], String) = match e {
        Error::MissingRanks { ranks, waited } => {
            (K_MISSING, [0; 3], ranks, format!("{}", waited.as_millis()))
        }
        Error::RankConflict { rank, detail } => (K_CONFLICT, [*rank, 0, 0], &[], detail.clone()),
        Error::BadAddress { rank, detail } => (K_BAD_ADDRESS, [*rank, 0, 0], &[], detail.clone()),
        Error::WorldSizeMismatch { rank, size, expected } => {
            (K_WORLD_SIZE, [*rank, *size, *expected], &[], String::new())
        }
        other => (K_BAD_ADDRESS, [u32::MAX, 0, 0], &[], other.to_string()),
    };
    let mut v = RESULT_MAGIC.to_vec();
    v.push(FAILED);
    v.push(kind);
    for f in fields {
        v.extend_from_slice(&f.to_le_bytes());
    }
    v.extend_from_slice(&(ranks.len() as u32).to_le_bytes());
    for r in ranks {
        v.extend_from_slice(&r.to_le_bytes());
    }
    v.extend_from_slice(msg.as_bytes());
    v
}

/// Rank `me`'s reading of the published result: every address, or the failure as the error
/// every rank returns. The value is untrusted: anything malformed is an error, never a panic.
fn read_result(v: &[u8], me: u32, size: u32) -> Result<Vec<Vec<u8>>> {
    let corrupt = |what: &str| Error::Protocol {
        detail: format!(
            "the bootstrap's result ({} bytes at key \"{PREFIX}/result\") is corrupt: {what}",
            v.len()
        ),
    };
    let mut r = Cursor(v);
    if r.take(4) != Some(&RESULT_MAGIC[..]) {
        return Err(corrupt("no result tag"));
    }
    match r.u8().ok_or_else(|| corrupt("truncated"))? {
        OK => {
            let theirs = r.u32().ok_or_else(|| corrupt("truncated"))?;
            if theirs != size {
                return Err(Error::WorldSizeMismatch { rank: me, size, expected: theirs });
            }
            let mut addrs = Vec::with_capacity(size.min(1 << 16) as usize);
            for rank in 0..size {
                let len = r.u32().ok_or_else(|| corrupt("truncated"))? as usize;
                if len == 0 || len > MAX_ADDRESS {
                    return Err(Error::BadAddress {
                        rank,
                        detail: format!("an address of {len} bytes in the published result"),
                    });
                }
                addrs.push(r.take(len).ok_or_else(|| corrupt("truncated"))?.to_vec());
            }
            if !r.0.is_empty() {
                return Err(corrupt("bytes after the last address"));
            }
            Ok(addrs)
        }
        FAILED => {
            let kind = r.u8().ok_or_else(|| corrupt("truncated"))?;
            let f: Vec<u32> = (0..3)
                .map(|_| r.u32())
                .collect::<Option<_>>()
                .ok_or_else(|| corrupt("truncated"))?;
            let n = r.u32().ok_or_else(|| corrupt("truncated"))? as usize;
            if n > size as usize || r.0.len() < 4 * n {
                return Err(corrupt("a rank list longer than the world"));
            }
            let ranks: Vec<u32> = (0..n).filter_map(|_| r.u32()).collect();
            let msg = String::from_utf8_lossy(r.0).into_owned();
            Err(match kind {
                K_MISSING => Error::MissingRanks {
                    ranks,
                    waited: Duration::from_millis(msg.parse().unwrap_or(0)),
                },
                K_CONFLICT => Error::RankConflict { rank: f[0], detail: msg },
                K_WORLD_SIZE => Error::WorldSizeMismatch { rank: f[0], size: f[1], expected: f[2] },
                K_BAD_ADDRESS => Error::BadAddress { rank: f[0], detail: msg },
                _ => return Err(corrupt("an unknown failure kind")),
            })
        }
        _ => Err(corrupt("an unknown status")),
    }
}

/// Reads a published value front to back.
struct Cursor<'a>(&'a [u8]);

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.0.len() < n {
            return None;
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Some(head)
    }
    fn u8(&mut self) -> Option<u8> {
        self.take(1).map(|b| b[0])
    }
    fn u32(&mut self) -> Option<u32> {
        self.take(4).map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }
}

/// The address bytes inside rank `rank`'s entry, after checking its tag, world size and
/// length (the transport then parses the address itself).
fn parse_entry(rank: u32, size: u32, entry: Vec<u8>) -> Result<Vec<u8>> {
    let bad = |detail: String| Error::BadAddress { rank, detail };
    if entry.len() < 8 || &entry[..4] != ENTRY_MAGIC {
        return Err(bad(format!(
            "the store entry ({} bytes) is not a bootstrap entry",
            entry.len()
        )));
    }
    let theirs = u32::from_le_bytes([entry[4], entry[5], entry[6], entry[7]]);
    if theirs != size {
        return Err(Error::WorldSizeMismatch { rank, size: theirs, expected: size });
    }
    let addr = entry[8..].to_vec();
    if addr.is_empty() || addr.len() > MAX_ADDRESS {
        return Err(bad(format!("an address of {} bytes", addr.len())));
    }
    Ok(addr)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_are_checked_before_the_transport_sees_them() {
        let mut ok = ENTRY_MAGIC.to_vec();
        ok.extend_from_slice(&4u32.to_le_bytes());
        ok.extend_from_slice(b"addr");
        assert_eq!(parse_entry(1, 4, ok.clone()).unwrap(), b"addr");
        assert!(matches!(
            parse_entry(2, 8, ok),
            Err(Error::WorldSizeMismatch { rank: 2, size: 4, expected: 8 })
        ));
        assert!(matches!(
            parse_entry(3, 4, b"junk".to_vec()),
            Err(Error::BadAddress { rank: 3, .. })
        ));
        let mut empty = ENTRY_MAGIC.to_vec();
        empty.extend_from_slice(&4u32.to_le_bytes());
        assert!(matches!(parse_entry(0, 4, empty), Err(Error::BadAddress { rank: 0, .. })));
    }

    #[test]
    fn results_round_trip_and_corrupt_ones_are_errors() {
        let addrs = vec![b"a0".to_vec(), b"addr-1".to_vec()];
        assert_eq!(read_result(&encode_addresses(2, &addrs), 1, 2).unwrap(), addrs);
        assert!(matches!(
            read_result(&encode_addresses(2, &addrs), 2, 3),
            Err(Error::WorldSizeMismatch { rank: 2, size: 3, expected: 2 })
        ));
        for e in [
            Error::MissingRanks { ranks: vec![3, 7], waited: Duration::from_millis(1500) },
            Error::RankConflict { rank: 2, detail: "twice".into() },
            Error::BadAddress { rank: 1, detail: "junk".into() },
            Error::WorldSizeMismatch { rank: 1, size: 3, expected: 2 },
        ] {
            assert_eq!(read_result(&encode_failure(&e), 0, 8).unwrap_err(), e);
        }
        // Truncated, padded or forged results are errors, never panics.
        let good = encode_addresses(2, &addrs);
        for cut in 0..good.len() {
            assert!(read_result(&good[..cut], 0, 2).is_err());
        }
        let mut long = good.clone();
        long.push(0);
        assert!(read_result(&long, 0, 2).is_err());
        let mut forged =
            encode_failure(&Error::MissingRanks { ranks: vec![1], waited: Duration::ZERO });
        forged[18] = 0xff; // a list of 255 ranks in a world of 4
        assert!(matches!(read_result(&forged, 0, 4), Err(Error::Protocol { .. })));
    }
}
