//! The frame reader (plain, and checking integrity when the first byte's top bit is set),
//! fed arbitrary bytes in arbitrary pieces: it must never panic, never hand out more payload
//! than a header announced, and stop at the first error.
#![no_main]

use gloo_transport::proto::{FrameReader, HEADER_LEN, Step};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // The first byte chooses the piece size, so the reader sees every split.
    let Some((&split, mut input)) = data.split_first() else { return };
    let piece = usize::from(split % 64) + 1;
    let mut reader =
        if split & 0x80 != 0 { FrameReader::with_integrity(None) } else { FrameReader::new(None) };
    let mut announced: u64 = 0;
    while !input.is_empty() {
        let take = piece.min(input.len());
        let mut chunk = &input[..take];
        while !chunk.is_empty() {
            match reader.feed(chunk) {
                Ok((used, step)) => {
                    assert!(used <= chunk.len(), "used more than given");
                    match step {
                        Step::Header(h, _) => {
                            assert_eq!(announced, 0, "a header inside a payload");
                            announced = h.payload_len();
                        }
                        Step::Payload(p) => {
                            assert!(p.len() as u64 <= announced, "more payload than announced");
                            announced -= p.len() as u64;
                        }
                        Step::NeedMore => assert_eq!(used, chunk.len(), "NeedMore left input"),
                        other => panic!("a reader step this target does not know: {other:?}"),
                    }
                    if used == 0 {
                        break;
                    }
                    chunk = &chunk[used..];
                }
                Err(_) => return,
            }
        }
        input = &input[take..];
    }
    assert!(HEADER_LEN == 32);
});
