//! The bootstrap's decoders of store values (untrusted: anyone who can write the store can
//! plant them): rank 0's published result, a rank's published entry and the run marker. No
//! panic; a result or marker accepted re-encodes to the same bytes; every entry error names
//! the rank.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| gloo_rendezvous::fuzzing::bootstrap(data));
