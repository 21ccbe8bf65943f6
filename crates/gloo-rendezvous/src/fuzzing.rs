//! Entry points for the cargo-fuzz targets in `fuzz/` (feature `fuzzing`, hidden from the
//! docs): each feeds untrusted bytes to the crate's private decoders exactly as the network
//! or a store would. Not an API: nothing here is stable.

/// The TCP store server's request handling (`store_server`): `data` is a script of reads
/// from three client connections. Its first byte sets the mode (bit 0: the server wants a
/// token); then each step is a connection byte and a length byte followed by that many bytes,
/// which the connection "reads" (connection byte 0xff: every parked wait times out; 0xfe: the
/// connection named by the next byte hangs up). After each step the server's answers must be
/// well-formed frames and its bookkeeping consistent.
pub fn store_server(data: &[u8]) {
    const CONNS: usize = 3;
    let Some((&mode, mut rest)) = data.split_first() else { return };
    let token = (mode & 1 != 0).then_some(&b"fuzz-store-token-0123456789"[..]);
    let Ok(mut h) = crate::tcp::Harness::new(token, CONNS) else { return };
    while let [sel, n, tail @ ..] = rest {
        match *sel {
            0xff => {
                h.expire_all();
                rest = &rest[1..];
            }
            0xfe => {
                h.hang_up(usize::from(*n) % CONNS);
                rest = tail;
            }
            sel => {
                let take = usize::from(*n).min(tail.len());
                h.feed(usize::from(sel) % CONNS, &tail[..take]);
                rest = &tail[take..];
            }
        }
        for c in 0..CONNS {
            answers_are_frames(&h.take_output(c));
        }
        h.check();
    }
}

/// Whatever the server wrote is a sequence of whole answer frames within the frame limit.
fn answers_are_frames(mut out: &[u8]) {
    while !out.is_empty() {
        assert!(out.len() >= 4, "a partial answer prefix");
        let len = u32::from_le_bytes([out[0], out[1], out[2], out[3]]) as usize;
        assert!((5..=crate::tcp::proto::MAX_FRAME).contains(&len), "an answer of {len} bytes");
        assert!(out.len() >= 4 + len, "a partial answer");
        out = &out[4 + len..];
    }
}

/// The TCP store client's answer decoders (`store_client`): `data` is what a server sends.
pub fn store_client(data: &[u8]) {
    crate::tcp::fuzz_answers(data);
}

/// The torch store client's reply decoders (`torch_client`): `data` is what a PyTorch
/// `TCPStore` server sends, each answer preceded by a byte that picks the request.
pub fn torch_client(data: &[u8]) {
    crate::torch::fuzz_replies(data);
}

/// The Redis store's reply interpretation (`redis_reply`): `data` is a RESP reply.
#[cfg(feature = "redis")]
pub fn redis_reply(data: &[u8]) {
    crate::redis_store::fuzz_reply(data);
}

/// The bootstrap's decoders of store values (`bootstrap`): the first byte picks the decoder
/// (0 mod 3: the published result, 1: a rank's entry, 2: the run marker and the failure
/// record), the rest is the value.
pub fn bootstrap(data: &[u8]) {
    crate::bootstrap::fuzz_decoders(data);
}
