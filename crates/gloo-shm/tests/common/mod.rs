//! Helpers shared by this crate's test files (what other crates' tests could use lives in
//! `gloo-testing`).
#![allow(dead_code, unreachable_pub)]

use std::time::{Duration, Instant};

use gloo_shm::{Channel, Error, Interest, ShmConfig, ShmListener};
use gloo_transport::Rank;

/// A deadline `secs` seconds from now.
pub fn deadline(secs: u64) -> Instant {
    Instant::now() + Duration::from_secs(secs)
}

/// Two connected channels in this process: (rank 0's end, rank 1's end).
pub fn pair(c0: ShmConfig, c1: ShmConfig) -> (Channel, Channel) {
    let l0 = ShmListener::bind(c0).unwrap();
    let l1 = ShmListener::bind(c1).unwrap();
    let addr = l0.address_bytes();
    let t = std::thread::spawn(move || l1.connect(Rank(0), &addr, deadline(30)).unwrap());
    let a = l0.accept(deadline(30)).unwrap();
    (a, t.join().unwrap())
}

/// Configs for ranks 0 and 1 of job `job` with `capacity`-byte rings.
pub fn configs(job: &str, capacity: usize) -> (ShmConfig, ShmConfig) {
    (
        ShmConfig::new(job, Rank(0), 2).ring_capacity(capacity),
        ShmConfig::new(job, Rank(1), 2).ring_capacity(capacity),
    )
}

/// Write all of `bytes`, waiting for room.
pub fn send_all(ch: &mut Channel, mut bytes: &[u8], deadline: Instant) -> Result<(), Error> {
    while !bytes.is_empty() {
        let n = ch.write(&[bytes])?;
        bytes = &bytes[n..];
        if n == 0 {
            ch.wait(Interest::WRITE, deadline)?;
        }
    }
    Ok(())
}

/// Fill all of `buf`, waiting for bytes.
pub fn recv_exact(ch: &mut Channel, buf: &mut [u8], deadline: Instant) -> Result<(), Error> {
    let mut got = 0;
    while got < buf.len() {
        let n = ch.read(&mut buf[got..])?;
        got += n;
        if n == 0 {
            ch.wait(Interest::READ, deadline)?;
        }
    }
    Ok(())
}

/// A deterministic pattern: byte `i` of stream `seed`.
pub fn pattern(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// The names in /dev/shm now.
pub fn dev_shm() -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir("/dev/shm")
        .map(|d| {
            d.filter_map(|e| e.ok()).map(|e| e.file_name().to_string_lossy().into_owned()).collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}
