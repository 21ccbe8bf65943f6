//! Entry points for the cargo-fuzz targets in `fuzz/` (feature `fuzzing`, hidden from the
//! docs): each feeds untrusted bytes to one of the crate's private decoders. Not an API.
#![forbid(unsafe_code)]

use crate::hello::{MAX_MSG, Msg};

/// A set-up message body as a peer sends it over the pair's socket: decoding never panics,
/// and a message that decodes encodes back to the same bytes.
pub fn hello(body: &[u8]) {
    if let Ok(msg) = Msg::decode(body) {
        assert!(body.len() <= MAX_MSG);
        let again = msg.encode();
        assert_eq!(&again[4..], body, "a decoded message does not encode back to its bytes");
        assert_eq!(Msg::decode(&again[4..]).as_ref(), Ok(&msg));
    }
}
