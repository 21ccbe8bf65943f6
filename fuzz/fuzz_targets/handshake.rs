//! Both sides of the handshake (token and insecure, eager and lazy), fed arbitrary bytes in
//! arbitrary pieces as the peer's: never a panic, never done for a peer that did not
//! authenticate, and never more output than the protocol's frames.
#![no_main]

use gloo_transport::Rank;
use gloo_transport::proto::{Handshake, HandshakeConfig, job_hash};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else { return };
    let Some((&split, input)) = rest.split_first() else { return };
    let token = (mode & 1 != 0).then(|| b"fuzz-token-0123456789".to_vec());
    let cfg =
        |me| HandshakeConfig { job: job_hash("fuzz"), me: Rank(me), size: 4, token: token.clone() };
    let mut hs = if mode & 2 != 0 {
        Handshake::connector(cfg(2), Rank(1), [7; 32])
    } else {
        Handshake::acceptor(cfg(1), [9; 32])
    };
    if mode & 4 != 0 {
        hs = hs.lazy();
    }
    let piece = usize::from(split % 48) + 1;
    for chunk in input.chunks(piece) {
        let out = hs.output().len();
        hs.consumed_output(out);
        match hs.feed(chunk) {
            Ok(used) => assert!(used <= chunk.len()),
            Err(_) => return,
        }
        if hs.pending_verdict().is_some() {
            hs.decide(mode & 8 != 0);
        }
        // Two Hello frames and two Auth frames are the most a side ever queues at once.
        assert!(hs.output().len() <= 2 * (32 + 80 + 32 + 32));
        if let Some(peer) = hs.done() {
            // Without a token anybody can finish a handshake; with one, random bytes cannot
            // produce a MAC that verifies, so a fuzzer reaching `done` found a forgery.
            assert!(token.is_none(), "authenticated {peer} without the token");
            return;
        }
    }
});
