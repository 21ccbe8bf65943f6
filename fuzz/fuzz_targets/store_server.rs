//! The TCP store server's request parser and command handling, fed as three clients'
//! reads (see `gloo_rendezvous::fuzzing::store_server` for the script format): no panic, only
//! whole answer frames within the limit, and the server's wait bookkeeping consistent after
//! every step (with and without a token).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| gloo_rendezvous::fuzzing::store_server(data));
