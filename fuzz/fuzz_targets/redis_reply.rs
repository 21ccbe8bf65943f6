//! The part of the Redis store's reply path that is ours: a RESP reply (parsed by the
//! `redis` crate, as from the socket) interpreted as the answer to a read of three keys and
//! to a compare-and-set; no panic, no value over the store's limit.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| gloo_rendezvous::fuzzing::redis_reply(data));
