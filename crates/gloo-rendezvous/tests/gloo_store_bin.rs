//! The standalone `gloo-store` binary (feature `cli`): serves clients holding the token from
//! the named environment variable, and refuses a routable address without a token.
#![cfg(feature = "cli")]

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

use gloo_rendezvous::{Error, Store, TcpStore};
use gloo_testing::deadline;

const BIN: &str = env!("CARGO_BIN_EXE_gloo-store");

/// Kills the server when the test ends, whatever happens.
struct Killed(std::process::Child);
impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn serves_clients_that_hold_the_token() {
    let mut child = Command::new(BIN)
        .args(["--listen", "127.0.0.1:0", "--token-env", "STORE_TEST_TOKEN"])
        .env("STORE_TEST_TOKEN", "bin-token-0123456789")
        .env("RUST_LOG", "info")
        .env("NO_COLOR", "1")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let _guard = Killed(child);
    // The first log line names the bound address: "... gloo-store serving addr=127.0.0.1:P".
    let mut line = String::new();
    BufReader::new(stderr).read_line(&mut line).unwrap();
    let addr = line
        .split_whitespace()
        .find_map(|w| w.strip_prefix("addr="))
        .unwrap_or_else(|| panic!("no address in {line:?}"))
        .trim_matches(|c: char| !c.is_ascii_graphic())
        .to_string();
    let store =
        TcpStore::connect(addr.clone(), Some(b"bin-token-0123456789"), deadline(10)).unwrap();
    store.set(b"k", b"v", deadline(10)).unwrap();
    assert_eq!(store.get(b"k", deadline(10)).unwrap(), b"v");
    let err = TcpStore::connect(addr, Some(b"other-token-0123456789"), deadline(10)).unwrap_err();
    assert!(matches!(err, Error::Auth { .. }), "{err}");
}

#[test]
fn refuses_a_routable_address_without_a_token() {
    let out = Command::new(BIN).args(["--listen", "0.0.0.0:0"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("without a token"), "{stderr}");
}

#[test]
fn rejects_bad_arguments() {
    let out = Command::new(BIN).args(["--listen"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let out = Command::new(BIN).args(["--frobnicate"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let out = Command::new(BIN)
        .args(["--listen", "127.0.0.1:0", "--token-env", "SURELY_UNSET_VAR_X"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("SURELY_UNSET_VAR_X"));
}
