//! The bootstrap: from (store, transport listener, rank, size) to a connected communicator.

use std::time::{Duration, Instant};

use gloo_transport::{LazyListener, Listener, Rank};

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

/// Tag and version of the run marker at `gloo/bootstrap/run`: `"GBN1"`, the run's id
/// ([`RUN_ID_LEN`] random bytes), the time the run is over by (`u64` LE, milliseconds since
/// the Unix epoch: the deadline of the latest rank to join, plus [`LINGER`]).
const RUN_MAGIC: &[u8; 4] = b"GBN1";
/// The length of a run id.
const RUN_ID_LEN: usize = 16;
/// How far another host's clock may be ahead of ours before a run it marked as over is
/// taken for over when it is not.
const CLOCK_SLACK: Duration = Duration::from_secs(5);
/// Most attempts at joining or starting a run while other ranks change the marker.
const RUN_ATTEMPTS: usize = 64;

/// Tag and version of the failure record at `gloo/bootstrap/last-failure`: `"GBF1"`, the
/// failed run's id, the time the record expires (`u64` LE, milliseconds since the Unix epoch:
/// the failed run's own end, its latest rank's deadline plus [`LINGER`]), then the failure as
/// the run published it (`GBR1`, see [`encode_failure`]).
const FAILED_MAGIC: &[u8; 4] = b"GBF1";
/// How long a rank other than 0 that finds a live failure record waits for rank 0 of a new
/// run (which deletes the record) before it takes itself for a late rank of the failed run:
/// this, or a quarter of the time left to its deadline if that is shorter.
const NEW_RUN_GRACE: Duration = Duration::from_secs(3);

/// How often a rank other than 0 that waits for its run's result looks for the run's
/// failure record.
const RECORD_CHECK: Duration = Duration::from_secs(1);

/// The store key of the failure record.
fn failure_record_key() -> Vec<u8> {
    format!("{PREFIX}/last-failure").into_bytes()
}

/// What a failed run leaves behind for the ranks that arrive after it ended.
#[derive(Debug, Clone, PartialEq, Eq)]
struct FailureRecord {
    id: [u8; RUN_ID_LEN],
    expires_ms: u64,
    cause: Error,
}

impl FailureRecord {
    fn encode(&self) -> Vec<u8> {
        let mut v = FAILED_MAGIC.to_vec();
        v.extend_from_slice(&self.id);
        v.extend_from_slice(&self.expires_ms.to_le_bytes());
        v.extend_from_slice(&encode_failure(&self.cause));
        v
    }

    /// The record in `v`; `None` for anything else (untrusted: the store may hold anything).
    fn decode(v: &[u8]) -> Option<FailureRecord> {
        let rest = v.strip_prefix(&FAILED_MAGIC[..])?;
        if rest.len() < RUN_ID_LEN + 8 {
            return None;
        }
        let (id, rest) = rest.split_at(RUN_ID_LEN);
        let (t, cause) = rest.split_at(8);
        // Only a published failure (not a result with addresses) of a start-up kind is a
        // cause; its rank list is bounded by the bytes present.
        if cause.get(..5)
            != Some(
                &[RESULT_MAGIC[0], RESULT_MAGIC[1], RESULT_MAGIC[2], RESULT_MAGIC[3], FAILED][..],
            )
        {
            return None;
        }
        let cause = match read_result(cause, 0, u32::MAX) {
            Err(e) if is_start_up_failure(&e) => e,
            _ => return None,
        };
        Some(FailureRecord {
            id: id.try_into().ok()?,
            expires_ms: u64::from_le_bytes(t.try_into().ok()?),
            cause,
        })
    }

    fn is_over(&self, now_ms: u64) -> bool {
        now_ms > self.expires_ms
    }
}

/// Rank 0 after its run failed, before it deletes the run's keys: leave the failure for the
/// ranks that arrive after the run ended, until the run's own end (best effort: logged).
fn record_failure(store: &dyn Store, run: &Run, cause: &Error, deadline: Instant) {
    let write = || -> Result<()> {
        let expires_ms = match store.try_get(&run_marker_key(), deadline)? {
            Some(v) => match Marker::decode(&v) {
                Some(m) if m.id == run.id => m.over_by_ms,
                _ => unix_ms() + LINGER.as_millis() as u64,
            },
            None => unix_ms() + LINGER.as_millis() as u64,
        };
        let record = FailureRecord { id: run.id, expires_ms, cause: cause.clone() };
        store.set(&failure_record_key(), &record.encode(), deadline)
    };
    if let Err(e) = write() {
        tracing::warn!(error = %gloo_transport::ErrorChain(&e), "could not leave the failed bootstrap's record in the store");
    }
}

/// A rank other than 0, before it joins a run: if a run failed and ended lately (its record
/// is live), this rank is a late rank of that run unless rank 0 of a new run shows up (it
/// deletes the record) within [`NEW_RUN_GRACE`]; a late rank fails with the run's cause.
fn heed_failure_record(store: &dyn Store, start: Instant, deadline: Instant) -> Result<()> {
    let key = failure_record_key();
    let left = deadline.saturating_duration_since(Instant::now());
    let grace_end = Instant::now() + NEW_RUN_GRACE.min(left / 4);
    let mut backoff = crate::store::Backoff::new(Duration::from_millis(50));
    loop {
        let Some(v) = store.try_get(&key, deadline)? else { return Ok(()) };
        let record = match FailureRecord::decode(&v) {
            Some(r) if !r.is_over(unix_ms()) => r,
            // Expired, or not a record: a new run starts as usual (its rank 0 deletes it).
            _ => return Ok(()),
        };
        if !backoff.sleep(grace_end) {
            tracing::info!(
                run = %hex(&record.id),
                "a run of the bootstrap failed before this rank arrived, and no new run started"
            );
            return Err(Error::RunFailed {
                run: hex(&record.id),
                cause: Box::new(record.cause),
                waited: start.elapsed(),
            });
        }
    }
}

/// A run id as the store keys show it.
fn hex(id: &[u8; RUN_ID_LEN]) -> String {
    id.iter().map(|b| format!("{b:02x}")).collect()
}

/// The store key of the run marker.
fn run_marker_key() -> Vec<u8> {
    format!("{PREFIX}/run").into_bytes()
}

/// One run of the rendezvous: every key but the run marker lives under the run's own prefix,
/// `gloo/bootstrap/<run id in hex>/`, so no run ever reads another's claims, entries, result
/// or counters.
struct Run {
    id: [u8; RUN_ID_LEN],
    prefix: String,
}

impl Run {
    fn new(id: &[u8; RUN_ID_LEN]) -> Run {
        Run { id: *id, prefix: format!("{PREFIX}/{}", hex(id)) }
    }

    /// Delete the run marker if it still marks this run (the run is over: the next one
    /// starts afresh at once instead of when this one's end has passed).
    fn end(&self, store: &dyn Store, deadline: Instant) -> Result<()> {
        let key = run_marker_key();
        if let Some(v) = store.try_get(&key, deadline)?
            && Marker::decode(&v).is_some_and(|m| m.id == self.id)
        {
            store.delete(&key, deadline)?;
        }
        Ok(())
    }

    fn key(&self, what: &str, rank: u32) -> Vec<u8> {
        format!("{}/{what}/{rank}", self.prefix).into_bytes()
    }

    fn named(&self, what: &str) -> Vec<u8> {
        format!("{}/{what}", self.prefix).into_bytes()
    }
}

/// A run marker's contents.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Marker {
    id: [u8; RUN_ID_LEN],
    over_by_ms: u64,
}

impl Marker {
    fn encode(&self) -> Vec<u8> {
        let mut v = RUN_MAGIC.to_vec();
        v.extend_from_slice(&self.id);
        v.extend_from_slice(&self.over_by_ms.to_le_bytes());
        v
    }

    /// The marker in `v`; `None` for anything else (untrusted: the store may hold anything).
    fn decode(v: &[u8]) -> Option<Marker> {
        let rest = v.strip_prefix(&RUN_MAGIC[..])?;
        if rest.len() != RUN_ID_LEN + 8 {
            return None;
        }
        let (id, t) = rest.split_at(RUN_ID_LEN);
        Some(Marker { id: id.try_into().ok()?, over_by_ms: u64::from_le_bytes(t.try_into().ok()?) })
    }

    /// Whether the run it marks is over (by this host's clock, with [`CLOCK_SLACK`]).
    fn is_over(&self, now_ms: u64) -> bool {
        now_ms > self.over_by_ms.saturating_add(CLOCK_SLACK.as_millis() as u64)
    }
}

/// Milliseconds since the Unix epoch (0 for a clock set before it).
fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// 16 bytes from the system's random source.
fn random_id() -> Result<[u8; RUN_ID_LEN]> {
    use ring::rand::SecureRandom;
    let mut id = [0u8; RUN_ID_LEN];
    ring::rand::SystemRandom::new()
        .fill(&mut id)
        .map_err(|_| Error::Config { detail: "the system random source failed".into() })?;
    Ok(id)
}

/// Join the run in progress on this store, or start one: the marker's run while it is not
/// over; a fresh run in place of a marker whose run is over (a job that died and left its
/// keys) or that is not a marker at all. Every rank that arrives while a run is in progress
/// joins it, and pushes its end back to its own deadline.
fn join_run(store: &dyn Store, deadline: Instant) -> Result<Run> {
    let key = run_marker_key();
    let wait = deadline.saturating_duration_since(Instant::now()) + LINGER;
    let fresh = Marker { id: random_id()?, over_by_ms: unix_ms() + wait.as_millis() as u64 };
    let mut expected: Option<Vec<u8>> = None;
    for _ in 0..RUN_ATTEMPTS {
        let current = match store.compare_set(
            &key,
            expected.as_deref(),
            &fresh.encode(),
            deadline,
        )? {
            CompareSet::Swapped => {
                if expected.is_some() {
                    tracing::info!(
                        "the store held the keys of an earlier run that is over (a job that died \
                         before it cleaned up); started a new run in its place"
                    );
                }
                return Ok(Run::new(&fresh.id));
            }
            CompareSet::Mismatch { current } => current,
        };
        let Some(current) = current else {
            // Deleted in between (the previous run tidied up): start one.
            expected = None;
            continue;
        };
        match Marker::decode(&current) {
            Some(m) if !m.is_over(unix_ms()) => {
                if fresh.over_by_ms > m.over_by_ms {
                    let later = Marker { over_by_ms: fresh.over_by_ms, ..m };
                    match store.compare_set(&key, Some(&current), &later.encode(), deadline)? {
                        CompareSet::Swapped => {}
                        // Changed in between: look again.
                        CompareSet::Mismatch { .. } => {
                            expected = Some(current);
                            continue;
                        }
                    }
                }
                return Ok(Run::new(&m.id));
            }
            // Over, or not a marker: replace it.
            _ => expected = Some(current),
        }
    }
    Err(Error::Protocol {
        detail: format!(
            "the run marker {} changed {RUN_ATTEMPTS} times while this rank tried to join",
            crate::error::KeyDisplay(&key)
        ),
    })
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
/// ([`LazyListener::connect_lazy`]) instead of the full mesh up front: the same rendezvous
/// (so a rank that never shows up is still named in [`Error::MissingRanks`], and every
/// address is checked before this returns), then a communicator with no connection yet.
///
/// Only a transport with a lazy mode (a [`LazyListener`]) is accepted, so asking one without
/// it does not compile. The TCP transport has one; see `gloo_transport::tcp` for what lazy
/// connection means for errors and aborts.
///
/// ```
/// // A transport with a lazy mode is accepted ...
/// fn lazy<L: gloo_transport::LazyListener>(store: &dyn gloo_rendezvous::Store, l: L) {
///     let deadline = std::time::Instant::now();
///     let _ = gloo_rendezvous::connect_lazy(store, l, gloo_transport::Rank(0), 1, deadline);
/// }
/// ```
///
/// ```compile_fail
/// // ... one with only the full mesh (a `Listener` that is not a `LazyListener`) is refused
/// // at compile time.
/// fn lazy<L: gloo_transport::Listener>(store: &dyn gloo_rendezvous::Store, l: L) {
///     let deadline = std::time::Instant::now();
///     let _ = gloo_rendezvous::connect_lazy(store, l, gloo_transport::Rank(0), 1, deadline);
/// }
/// ```
pub fn connect_lazy<L: LazyListener>(
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
/// and exits next, then deletes them, leaving one small record of the failure (run id, cause,
/// the ranks it names) at `gloo/bootstrap/last-failure` until the failed run's own end (its
/// latest rank's deadline plus 2 s). A rank other than 0 that arrives while that record is
/// live (a late rank of the failed run: its peers are gone) fails with [`Error::RunFailed`],
/// carrying the run's cause, unless rank 0 of a new run shows up first: it waits for one 3 s
/// at most (or a quarter of its time left, if shorter) instead of its whole deadline. Rank 0
/// of every new run deletes the record as soon as it has claimed its rank, so a job restarted
/// on the store at once is not stopped by it (its ranks 1.. wait those seconds for their
/// rank 0), and after the record's end any rank ignores it. A rank that joined the run just
/// as rank 0 was cleaning it up finds the record while it waits (it looks once a second)
/// and fails with the same [`Error::RunFailed`]. (A store served by rank 0's own
/// process is gone with it: a rank that arrives then finds no store at all, and reports it
/// unreachable at its deadline.) Once every rank has read the addresses, the last one
/// deletes the bootstrap's keys. Either way a store may serve one run after another. Runs that
/// overlap in time need a [`PrefixStore`](crate::PrefixStore) each: while a run is in its
/// rendezvous, a rank number it claimed counts as claimed.
///
/// A run that dies (rank 0 killed mid-rendezvous, a rank killed before it cleaned up) leaves
/// its keys behind, and a job restarted on the same store with the same prefix must not take
/// them for its own. So every run has a random id, and all its keys but the run marker
/// (`gloo/bootstrap/run`: the id and the wall-clock time by which the run is over, its
/// latest rank's deadline plus 2 s) live under `gloo/bootstrap/<id>/`: a new run never reads
/// a dead run's entries or result, so it never connects to a stale address. A rank joins the
/// run the marker names while that run is not over, else replaces the marker with a new run.
/// A job restarted before the dead run is over (plus 5 s for clocks of other hosts that run
/// ahead) joins the dead run, finds its rank claimed and fails at once with
/// [`Error::RankConflict`] on every rank, saying when it can start again; after that it starts
/// a fresh run. (Ranks' wall clocks are assumed to agree within those 5 s.) The dead run's keys stay in the store as litter (a Redis store's expiry
/// removes them).
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
    if rank != 0 {
        heed_failure_record(store, start, deadline)?;
    }
    let run = join_run(store, deadline)?;
    let run = &run;
    claim(store, run, rank, deadline)?;
    if rank == 0 {
        // Rank 0 of a new run: a failed run's record no longer describes this store's state
        // (and, expired, it would be litter).
        store.delete(&failure_record_key(), deadline)?;
    }
    store.add(&run.named("joined"), 1, deadline)?;

    let mut entry = Vec::with_capacity(8 + address.len());
    entry.extend_from_slice(ENTRY_MAGIC);
    entry.extend_from_slice(&size.to_le_bytes());
    entry.extend_from_slice(address);
    store.set(&run.key("addr", rank), &entry, deadline)?;
    tracing::debug!(rank, size, "published address; waiting for the others");

    let outcome = if rank == 0 {
        lead(store, run, size, entry, start, deadline, margin)
    } else {
        follow(store, run, rank, size, start, deadline, margin)
    };
    match outcome {
        Ok(addrs) => {
            tidy_up(store, run, rank, size, deadline);
            Ok(addrs)
        }
        Err(e) => {
            if rank == 0 && is_start_up_failure(&e) {
                linger(store, run, deadline);
                // The run is over: its keys must not block (or mislead) the next run on this
                // store, so rank 0 deletes them, leaving only the failure's record for the
                // ranks that arrive late. Best effort, bounded on its own.
                let tidy_by = Instant::now() + Duration::from_secs(2);
                record_failure(store, run, &e, tidy_by);
                clear(store, run, size, tidy_by);
            } else if is_start_up_failure(&e) {
                // Tell rank 0 this rank has read the failure (best effort).
                let _ = store.add(&run.named("failed"), 1, deadline.max(Instant::now() + margin));
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
fn linger(store: &dyn Store, run: &Run, deadline: Instant) {
    let end = deadline.min(Instant::now() + LINGER);
    while Instant::now() < end {
        let read = |what| store.add(&run.named(what), 0, end);
        match (read("joined"), read("failed")) {
            (Ok(joined), Ok(failed)) if failed >= joined - 1 => return,
            (Ok(_), Ok(_)) => std::thread::sleep(Duration::from_millis(10)),
            _ => return,
        }
    }
}

/// Delete every bootstrap key of a failed run of `size` ranks (best effort: logged).
fn clear(store: &dyn Store, run: &Run, size: u32, deadline: Instant) {
    let all = || -> Result<()> {
        for r in 0..size {
            store.delete(&run.key("addr", r), deadline)?;
            store.delete(&run.key("claim", r), deadline)?;
        }
        for what in ["result", "joined", "failed", "done"] {
            store.delete(&run.named(what), deadline)?;
        }
        run.end(store, deadline)
    };
    if let Err(e) = all() {
        tracing::warn!(error = %gloo_transport::ErrorChain(&e), "could not delete a failed bootstrap's keys from the store");
    }
}

/// Rank 0: gather every entry, check each as it arrives, publish the addresses or the
/// failure found.
fn lead(
    store: &dyn Store,
    run: &Run,
    size: u32,
    own: Vec<u8>,
    start: Instant,
    deadline: Instant,
    margin: Duration,
) -> Result<Vec<Vec<u8>>> {
    let keys: Vec<Vec<u8>> = (0..size).map(|r| run.key("addr", r)).collect();
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
            Err(Error::Unreachable { endpoint, detail, source, .. }) => {
                if Instant::now() >= deadline {
                    let waited = start.elapsed();
                    return Err(Error::Unreachable { endpoint, detail, waited, source });
                }
                std::thread::sleep(Duration::from_millis(10));
                continue;
            }
            Err(e) => return Err(e),
        };
        for (r, entry) in arrived {
            match parse_entry(r, size, entry) {
                Ok(a) => addrs[r as usize] = Some(a),
                Err(e) => return publish_failure(store, run, e, size, deadline),
            }
        }
        if let Some(v) = store.try_get(&run.named("result"), deadline)? {
            return read_result(&v, 0, size);
        }
        if Instant::now() >= give_up && addrs.iter().any(Option::is_none) {
            let ranks = (0..size).filter(|r| addrs[*r as usize].is_none()).collect();
            let e = Error::MissingRanks { ranks, waited: start.elapsed() };
            return publish_failure(store, run, e, size, deadline);
        }
    }
    // Every entry arrived and checked out.
    let addrs: Vec<Vec<u8>> = addrs.into_iter().map(Option::unwrap_or_default).collect();
    let blob = encode_addresses(size, &addrs);
    match store.compare_set(&run.named("result"), None, &blob, deadline)? {
        CompareSet::Swapped => Ok(addrs),
        // A rank published a failure first: it holds for everybody.
        CompareSet::Mismatch { current } => read_result(&current.unwrap_or_default(), 0, size),
    }
}

/// A rank other than 0: wait for rank 0's result; near the deadline, work out which ranks are
/// missing from the store itself (rank 0 may be one of them).
fn follow(
    store: &dyn Store,
    run: &Run,
    rank: u32,
    size: u32,
    start: Instant,
    deadline: Instant,
    margin: Duration,
) -> Result<Vec<Vec<u8>>> {
    let wait_end = deadline.checked_sub(margin).unwrap_or(deadline).max(start);
    let result = run.named("result");
    loop {
        // In slices, so that a rank that joined the run while rank 0 was cleaning it up (its
        // result already deleted) finds the run's failure record instead of its deadline.
        match store.get(&result, wait_end.min(Instant::now() + RECORD_CHECK)) {
            Ok(v) => return read_result(&v, rank, size),
            Err(Error::Timeout { .. }) if Instant::now() < wait_end => {
                if let Some(e) = failed_meanwhile(store, run, rank, start, deadline)? {
                    return Err(e);
                }
            }
            Err(Error::Timeout { .. }) => break,
            Err(Error::Unreachable { endpoint, detail, source, .. }) => {
                if Instant::now() >= deadline {
                    let waited = start.elapsed();
                    return Err(Error::Unreachable { endpoint, detail, waited, source });
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
    let keys: Vec<Vec<u8>> = (0..size).map(|r| run.key("addr", r)).collect();
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

/// A follower whose run failed and was cleaned up while it waited (the failure record names
/// this run): delete what this rank wrote there (rank 0 will not), and return the cause.
fn failed_meanwhile(
    store: &dyn Store,
    run: &Run,
    rank: u32,
    start: Instant,
    deadline: Instant,
) -> Result<Option<Error>> {
    let Some(record) =
        store.try_get(&failure_record_key(), deadline)?.and_then(|v| FailureRecord::decode(&v))
    else {
        return Ok(None);
    };
    if record.id != run.id {
        return Ok(None);
    }
    let _ = store.delete(&run.key("addr", rank), deadline);
    let _ = store.delete(&run.key("claim", rank), deadline);
    let _ = store.delete(&run.named("joined"), deadline);
    Ok(Some(Error::RunFailed {
        run: hex(&record.id),
        cause: Box::new(record.cause),
        waited: start.elapsed(),
    }))
}

/// Publish `failure` for every rank, unless another failure was published first, in which
/// case that one is returned (every rank reports the same failure).
fn publish_failure(
    store: &dyn Store,
    run: &Run,
    failure: Error,
    size: u32,
    deadline: Instant,
) -> Result<Vec<Vec<u8>>> {
    let value = encode_failure(&failure);
    match store.compare_set(&run.named("result"), None, &value, deadline)? {
        CompareSet::Swapped => Err(failure),
        CompareSet::Mismatch { current } => read_result(&current.unwrap_or_default(), 0, size),
    }
}

/// Count this rank as done with the bootstrap's keys (this rank deletes its own entry); the
/// last rank deletes the rest. Best effort: the group is formed whatever happens here, so a
/// failure is only logged.
fn tidy_up(store: &dyn Store, run: &Run, rank: u32, size: u32, deadline: Instant) {
    let tidy = || -> Result<()> {
        store.delete(&run.key("addr", rank), deadline)?;
        // Every rank increments only after it has read every address, so when the count
        // reaches the world size nobody needs a key any more.
        if store.add(&run.named("done"), 1, deadline)? != i64::from(size) {
            return Ok(());
        }
        for r in 0..size {
            store.delete(&run.key("claim", r), deadline)?;
        }
        for what in ["result", "joined", "failed", "done"] {
            store.delete(&run.named(what), deadline)?;
        }
        run.end(store, deadline)
    };
    if let Err(e) = tidy() {
        tracing::warn!(error = %gloo_transport::ErrorChain(&e), "could not delete the bootstrap's keys from the store");
    }
}

/// Claim `rank` with a fresh random identity; a lost claim is reported to the whole group.
fn claim(store: &dyn Store, run: &Run, rank: u32, deadline: Instant) -> Result<()> {
    let id = random_id()?;
    match store.compare_set(&run.key("claim", rank), None, &id, deadline)? {
        CompareSet::Swapped => Ok(()),
        CompareSet::Mismatch { .. } => {
            let why = format!(
                "rank {rank} was claimed by a second process (a launcher started two processes \
                 with the same rank, or a run of this job died and left its keys in the store: \
                 a new run starts in their place {} s after the dead run's deadline)",
                (LINGER + CLOCK_SLACK).as_secs(),
            );
            let e = Error::RankConflict { rank, detail: why };
            // Tell the winner and everybody else, so nobody waits on a broken group.
            let _ = store.compare_set(&run.named("result"), None, &encode_failure(&e), deadline)?;
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
        // The whole chain as text: the other ranks get only this message.
        other => {
            (K_BAD_ADDRESS, [u32::MAX, 0, 0], &[], gloo_transport::ErrorChain(other).to_string())
        }
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
            "the bootstrap's result ({} bytes at key \"{PREFIX}/<run>/result\") is corrupt: {what}",
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

/// The `bootstrap` fuzz target: the first byte picks the decoder (0 mod 3: rank 1's reading
/// of a published result in a world of 3, 1: rank 1's entry in a world of 3, 2: the run
/// marker and the failure record), the rest is the store value. Never a panic; what is accepted is what the format
/// allows.
#[cfg(feature = "fuzzing")]
pub(crate) fn fuzz_decoders(data: &[u8]) {
    let Some((&pick, value)) = data.split_first() else { return };
    if pick % 3 == 2 {
        if let Some(m) = Marker::decode(value) {
            assert_eq!(m.encode(), value, "an accepted marker re-encodes");
        }
        if let Some(r) = FailureRecord::decode(value) {
            assert!(is_start_up_failure(&r.cause), "a record's cause is a start-up failure");
            assert_eq!(FailureRecord::decode(&r.encode()), Some(r), "a record round-trips");
        }
    } else if pick % 3 == 0 {
        if let Ok(addrs) = read_result(value, 1, 3) {
            assert_eq!(addrs.len(), 3);
            assert!(addrs.iter().all(|a| !a.is_empty() && a.len() <= MAX_ADDRESS));
            assert_eq!(encode_addresses(3, &addrs), value, "an accepted result re-encodes");
        }
    } else {
        match parse_entry(1, 3, value.to_vec()) {
            Ok(addr) => assert_eq!(&value[8..], &addr[..]),
            Err(Error::BadAddress { rank, .. }) | Err(Error::WorldSizeMismatch { rank, .. }) => {
                assert_eq!(rank, 1)
            }
            Err(e) => panic!("an entry error of an unexpected kind: {e:?}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_run_is_joined_while_its_marker_says_it_is_not_over_and_replaced_after() {
        let store = crate::HashStore::new();
        let d = Instant::now() + Duration::from_secs(10);
        let first = join_run(&store, d).unwrap();
        // A second rank with a later deadline joins it and pushes its end back.
        let before = Marker::decode(&store.get(&run_marker_key(), d).unwrap()).unwrap();
        let second = join_run(&store, d + Duration::from_secs(60)).unwrap();
        assert_eq!(second.prefix, first.prefix);
        let after = Marker::decode(&store.get(&run_marker_key(), d).unwrap()).unwrap();
        assert_eq!(after.id, before.id);
        assert!(after.over_by_ms >= before.over_by_ms + 59_000, "{before:?} {after:?}");
        // Over by this host's clock only past the slack.
        let now = unix_ms();
        let m = |over_by_ms| Marker { id: [1; RUN_ID_LEN], over_by_ms };
        assert!(!m(now).is_over(now + CLOCK_SLACK.as_millis() as u64));
        assert!(m(now).is_over(now + CLOCK_SLACK.as_millis() as u64 + 1));
        assert!(!m(u64::MAX).is_over(u64::MAX));
        assert_eq!(Marker::decode(&m(42).encode()), Some(m(42)));
        // An over run is replaced by a new one.
        store.set(&run_marker_key(), &m(now.saturating_sub(60_000)).encode(), d).unwrap();
        let third = join_run(&store, d).unwrap();
        assert_ne!(third.prefix, first.prefix);
        assert_ne!(third.id, [1; RUN_ID_LEN]);
        // Ending a run deletes the marker only while it is that run's.
        first.end(&store, d).unwrap();
        assert!(store.try_get(&run_marker_key(), d).unwrap().is_some());
        third.end(&store, d).unwrap();
        assert_eq!(store.try_get(&run_marker_key(), d).unwrap(), None);
    }

    #[test]
    fn failure_records_round_trip_and_anything_else_is_no_record() {
        let cause = Error::MissingRanks { ranks: vec![2, 5], waited: Duration::from_millis(900) };
        let r = FailureRecord { id: [3; RUN_ID_LEN], expires_ms: 1234, cause };
        let v = r.encode();
        assert_eq!(FailureRecord::decode(&v), Some(r.clone()));
        assert!(!r.is_over(1234) && r.is_over(1235));
        // Cut anywhere before its message (the rest of the value, here the time waited).
        for cut in 0..v.len() - "900".len() {
            assert_eq!(FailureRecord::decode(&v[..cut]), None, "cut at {cut}");
        }
        // A record whose "cause" is a success, or a failure of an unknown kind, is no record.
        let mut ok = v[..28].to_vec();
        ok.extend_from_slice(&encode_addresses(1, &[b"a".to_vec()]));
        assert_eq!(FailureRecord::decode(&ok), None);
        let mut other = v[..28].to_vec();
        other.extend_from_slice(&encode_failure(&Error::Config { detail: "x".into() }));
        other[28 + 5] = 9; // an unknown failure kind
        assert_eq!(FailureRecord::decode(&other), None);
        // A rank list longer than the bytes behind it is refused, never allocated.
        let mut forged = v.clone();
        forged[28 + 18..28 + 22].copy_from_slice(&u32::MAX.to_le_bytes());
        assert_eq!(FailureRecord::decode(&forged), None);
    }

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
