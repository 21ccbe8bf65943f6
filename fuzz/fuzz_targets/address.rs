//! The TCP transport's published address bytes (read from the store, so untrusted): parsed
//! as the bootstrap does before dialling. No panic; every error names the rank; every
//! address accepted can be dialled (no port 0, unspecified, multicast or broadcast address,
//! also IPv4-mapped) and is exactly what the bytes say.
#![no_main]

use std::net::{IpAddr, SocketAddr};

use gloo_transport::Rank;
use gloo_transport::tcp::parse_address;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    match parse_address(Rank(7), data) {
        Ok(addr) => {
            let ip = match addr.ip() {
                IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4),
                v4 => v4,
            };
            assert_ne!(addr.port(), 0);
            assert!(!ip.is_unspecified() && !ip.is_multicast(), "{addr}");
            assert!(!matches!(ip, IpAddr::V4(v4) if v4.is_broadcast()), "{addr}");
            // The format: "GTCP", version 1, family, port (LE), the IP, for IPv6 flow and scope.
            let mut again = b"GTCP\x01".to_vec();
            match addr {
                SocketAddr::V4(a) => {
                    again.push(4);
                    again.extend_from_slice(&a.port().to_le_bytes());
                    again.extend_from_slice(&a.ip().octets());
                }
                SocketAddr::V6(a) => {
                    again.push(6);
                    again.extend_from_slice(&a.port().to_le_bytes());
                    again.extend_from_slice(&a.ip().octets());
                    again.extend_from_slice(&a.flowinfo().to_le_bytes());
                    again.extend_from_slice(&a.scope_id().to_le_bytes());
                }
            }
            assert_eq!(again, data, "{addr} is not what the bytes say");
        }
        Err(e) => assert_eq!(e.peer(), Some(Rank(7)), "{e}"),
    }
});
