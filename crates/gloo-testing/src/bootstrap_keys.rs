//! The bootstrap's store keys as a test sees them, for tests that plant a rank's entry (a
//! rank of the run in progress publishing garbage) or wait for a run's keys.
//!
//! A run's keys live under `gloo/bootstrap/<run id in hex>/`; the run marker
//! `gloo/bootstrap/run` holds `"GBN1"`, the 16-byte run id and the wall-clock time the run is
//! over by (`u64` LE, milliseconds since the Unix epoch). This mirrors
//! `gloo-rendezvous/src/bootstrap.rs` on purpose: a test that planted keys in a format the
//! library no longer reads would fail.

/// The key of the run marker.
pub const RUN_MARKER: &[u8] = b"gloo/bootstrap/run";

/// The key of the failure record a failed run leaves for ranks that arrive after it ended:
/// `"GBF1"`, the run id (16 bytes), the time it expires (`u64` LE, ms since the Unix epoch),
/// then the failure as published.
pub const FAILURE_RECORD: &[u8] = b"gloo/bootstrap/last-failure";

/// A failure record for run `id`, expiring at `expires_ms`, whose cause is a world-size
/// mismatch: `rank` was started with `size` ranks, rank 0 with `expected`.
pub fn world_size_failure_record(
    id: [u8; 16],
    expires_ms: u64,
    (rank, size, expected): (u32, u32, u32),
) -> Vec<u8> {
    let mut v = b"GBF1".to_vec();
    v.extend_from_slice(&id);
    v.extend_from_slice(&expires_ms.to_le_bytes());
    // The failure as published: tag, "failed", kind 4 (world size), three fields, no ranks.
    v.extend_from_slice(b"GBR1");
    v.extend_from_slice(&[1, 4]);
    for f in [rank, size, expected, 0] {
        v.extend_from_slice(&f.to_le_bytes());
    }
    v
}

/// `record` (a failure record's value) with its expiry set to `expires_ms`.
pub fn with_record_expiry(record: &[u8], expires_ms: u64) -> Vec<u8> {
    assert!(record.starts_with(b"GBF1") && record.len() >= 28, "not a failure record");
    let mut v = record.to_vec();
    v[20..28].copy_from_slice(&expires_ms.to_le_bytes());
    v
}

/// A run marker for run `id` that is never over, and the prefix (with no trailing slash) its
/// keys live under: set it before the ranks start, and they join that run.
pub fn planted_run(id: [u8; 16]) -> (Vec<u8>, String) {
    let mut v = b"GBN1".to_vec();
    v.extend_from_slice(&id);
    v.extend_from_slice(&u64::MAX.to_le_bytes());
    (v, prefix_of(&id))
}

/// The prefix of the run a marker's value names; `None` if it is not a marker.
pub fn run_prefix(marker: &[u8]) -> Option<String> {
    let rest = marker.strip_prefix(b"GBN1")?;
    (rest.len() == 24).then(|| prefix_of(&rest[..16]))
}

fn prefix_of(id: &[u8]) -> String {
    let hex: String = id.iter().map(|b| format!("{b:02x}")).collect();
    format!("gloo/bootstrap/{hex}")
}
