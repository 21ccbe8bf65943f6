//! The PyTorch TCPStore client's reply decoders (`TorchStore`), fed what a (hostile) torch
//! server sends, in pieces of any size, with a silence and then a close at the end: the
//! handshake, CHECK, values, multi-key answers, waits and their cancel; no panic, no value
//! over its limit.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| gloo_rendezvous::fuzzing::torch_client(data));
