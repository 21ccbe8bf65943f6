//! The bootstrap: from (store, transport listener, rank, size) to a connected communicator.

use std::time::{Duration, Instant};

use gloo_transport::{Listener, Rank};

use crate::error::{Error, Result};
use crate::store::{CompareSet, Store};

/// Every bootstrap key starts with this, so a store shared with the application stays tidy.
const PREFIX: &str = "gloo/bootstrap";

/// Tag and version of a published entry: `"GBS1"`, world size (u32 LE), address bytes.
const ENTRY_MAGIC: &[u8; 4] = b"GBS1";

/// The longest address a transport may publish (a store entry is untrusted input).
const MAX_ADDRESS: usize = 4096;

/// How often a waiting rank looks for an abort (a rank claimed twice) between waits.
const SLICE: Duration = Duration::from_millis(200);

fn key(what: &str, rank: u32) -> Vec<u8> {
    format!("{PREFIX}/{what}/{rank}").into_bytes()
}

fn abort_key() -> Vec<u8> {
    format!("{PREFIX}/abort").into_bytes()
}

fn done_key() -> Vec<u8> {
    format!("{PREFIX}/done").into_bytes()
}

/// Connect this rank into a group of `size` ranks through `store`, and return the
/// transport's communicator.
///
/// Each rank claims its rank number with a compare-and-set (so two processes started with the
/// same rank both get [`Error::RankConflict`] — the one that lost the claim at once, the one
/// that won it while it waits — and neither hangs), publishes its listener's address bytes
/// tagged with the world size, waits for every rank's entry, checks them, and connects the full
/// mesh with [`Listener::connect_all`]. A rank that never publishes is named in
/// [`Error::MissingRanks`]; an entry that is not a well-formed entry is [`Error::BadAddress`]
/// naming its rank, and the transport parses (and rejects) the address bytes themselves before
/// dialling anything.
///
/// Once every rank has read every address, the last one to do so deletes the bootstrap's
/// keys, so a store may serve one run after another. Runs that overlap in time need a
/// [`PrefixStore`](crate::PrefixStore) each: while a run is in its rendezvous, a rank number
/// it claimed counts as claimed. A run that fails before every rank has read every address
/// leaves its keys behind (a Redis store's expiry removes them).
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
    let (addrs, start) = exchange(store, &listener, rank, size, deadline)?;
    let comm = listener.connect_all(&addrs, deadline)?;
    tracing::debug!(rank = rank.0, size, waited = ?start.elapsed(), "group connected");
    Ok(comm)
}

/// Like [`connect`], but the communicator connects each pair of ranks on its first use
/// ([`Listener::connect_lazy`]) instead of the full mesh up front: the same claim, publish
/// and wait for every rank's address (so a rank that never shows up is still named in
/// [`Error::MissingRanks`], and every address is checked before this returns), then a
/// communicator with no connection yet.
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
    let (addrs, start) = exchange(store, &listener, rank, size, deadline)?;
    let comm = listener.connect_lazy(&addrs, deadline)?;
    tracing::debug!(rank = rank.0, size, waited = ?start.elapsed(), "lazy group ready");
    Ok(comm)
}

/// The rendezvous shared by both modes: claim the rank, publish this rank's address, wait
/// for every rank's and check them. Returns every rank's address bytes, indexed by rank, and
/// when the rendezvous started.
fn exchange<L: Listener>(
    store: &dyn Store,
    listener: &L,
    rank: Rank,
    size: u32,
    deadline: Instant,
) -> Result<(Vec<Vec<u8>>, Instant)> {
    if size == 0 || rank.0 >= size {
        return Err(Error::InvalidArgument {
            key: None,
            what: format!("rank {} is not in a world of {size} ranks", rank.0),
        });
    }
    let start = Instant::now();
    claim(store, rank.0, deadline)?;

    let address = listener.address_bytes();
    let mut entry = Vec::with_capacity(8 + address.len());
    entry.extend_from_slice(ENTRY_MAGIC);
    entry.extend_from_slice(&size.to_le_bytes());
    entry.extend_from_slice(&address);
    store.set(&key("addr", rank.0), &entry, deadline)?;
    tracing::debug!(rank = rank.0, size, "published address; waiting for the others");

    let entries = collect(store, rank.0, size, start, deadline)?;
    let mut addrs = Vec::with_capacity(size as usize);
    for (r, e) in entries.into_iter().enumerate() {
        addrs.push(parse_entry(r as u32, size, e)?);
    }
    // A conflict noticed after the last wait still stops the group.
    check_abort(store, deadline)?;
    tidy_up(store, size, deadline);
    Ok((addrs, start))
}

/// Count this rank as done with the bootstrap's keys; the last rank deletes them. Best
/// effort: the group is formed whatever happens here, so a failure is only logged.
fn tidy_up(store: &dyn Store, size: u32, deadline: Instant) {
    let tidy = || -> Result<()> {
        // Every rank increments only after it has read every address, so when the count
        // reaches the world size nobody needs a key any more.
        if store.add(&done_key(), 1, deadline)? != i64::from(size) {
            return Ok(());
        }
        for r in 0..size {
            store.delete(&key("addr", r), deadline)?;
            store.delete(&key("claim", r), deadline)?;
        }
        store.delete(&done_key(), deadline)?;
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
            // Tell the winner and everybody else, so nobody waits on a broken group.
            store.set(&abort_key(), why.as_bytes(), deadline)?;
            Err(Error::RankConflict { rank, detail: why })
        }
    }
}

fn check_abort(store: &dyn Store, deadline: Instant) -> Result<()> {
    if let Some(why) = store.try_get(&abort_key(), deadline)? {
        let why = String::from_utf8_lossy(&why).into_owned();
        let rank = why
            .strip_prefix("rank ")
            .and_then(|s| s.split(' ').next())
            .and_then(|s| s.parse().ok())
            .unwrap_or(u32::MAX);
        return Err(Error::RankConflict { rank, detail: why });
    }
    Ok(())
}

/// Wait for every rank's entry, in slices so an abort is noticed while waiting.
fn collect(
    store: &dyn Store,
    me: u32,
    size: u32,
    start: Instant,
    deadline: Instant,
) -> Result<Vec<Vec<u8>>> {
    let keys: Vec<Vec<u8>> = (0..size).map(|r| key("addr", r)).collect();
    let mut have: Vec<Option<Vec<u8>>> = vec![None; size as usize];
    loop {
        let missing: Vec<u32> = (0..size).filter(|r| have[*r as usize].is_none()).collect();
        if missing.is_empty() {
            return Ok(have.into_iter().map(Option::unwrap_or_default).collect());
        }
        let refs: Vec<&[u8]> = missing.iter().map(|r| keys[*r as usize].as_slice()).collect();
        let slice_end = deadline.min(Instant::now() + SLICE);
        match store.multi_get(&refs, slice_end) {
            Ok(values) => {
                for (r, v) in missing.iter().zip(values) {
                    have[*r as usize] = Some(v);
                }
            }
            Err(Error::Timeout { keys: still, .. }) => {
                check_abort(store, deadline)?;
                // Fetch the entries that did arrive, so the next slice waits only for the rest.
                let arrived: Vec<&[u8]> =
                    refs.iter().copied().filter(|k| !still.iter().any(|s| s == k)).collect();
                if !arrived.is_empty() {
                    let values = store.multi_get(&arrived, deadline)?;
                    for (k, v) in arrived.iter().zip(values) {
                        if let Some(r) = keys.iter().position(|x| x.as_slice() == *k) {
                            have[r] = Some(v);
                        }
                    }
                }
                if Instant::now() >= deadline {
                    let ranks: Vec<u32> =
                        (0..size).filter(|r| have[*r as usize].is_none() && *r != me).collect();
                    return Err(Error::MissingRanks { ranks, waited: start.elapsed() });
                }
            }
            // The store is unreachable for now: keep trying until the whole deadline (the
            // store may be restarting); past it, report the store, not the ranks.
            Err(Error::Unreachable { endpoint, detail, .. }) => {
                if Instant::now() >= deadline {
                    return Err(Error::Unreachable { endpoint, detail, waited: start.elapsed() });
                }
            }
            Err(e) => return Err(e),
        }
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
        return Err(bad(format!(
            "it was started with a world of {theirs} ranks, this rank with {size}"
        )));
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
        assert!(matches!(parse_entry(2, 8, ok), Err(Error::BadAddress { rank: 2, .. })));
        assert!(matches!(
            parse_entry(3, 4, b"junk".to_vec()),
            Err(Error::BadAddress { rank: 3, .. })
        ));
        let mut empty = ENTRY_MAGIC.to_vec();
        empty.extend_from_slice(&4u32.to_le_bytes());
        assert!(matches!(parse_entry(0, 4, empty), Err(Error::BadAddress { rank: 0, .. })));
    }
}
