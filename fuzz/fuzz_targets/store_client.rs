//! The TCP store client's answer decoders, fed what a (hostile) server sends: each frame is
//! decoded as the answer to every kind of request; no panic, no value beyond its frame.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| gloo_rendezvous::fuzzing::store_client(data));
