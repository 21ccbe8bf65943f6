//! Shared memory between ranks on one host: the byte channels under the Rust Gloo's `shm`
//! transport.
//!
//! What it does:
//! - [`ShmListener`] sets up pairs of processes: an abstract unix socket with a random name
//!   (its [address bytes](ShmListener::address_bytes) go through the store), the peer's
//!   credentials from the kernel (another user is refused), a handshake that checks job,
//!   group size and ranks, and a segment (a sealed memfd, mode `0600`) passed over the socket
//!   with each side's doorbell. Nothing has a name in any file system, so a rank killed at
//!   any moment leaves nothing in `/dev/shm`.
//! - A [`Channel`] is one end of the pair: a non-blocking, ordered byte stream each way
//!   through a single-producer/single-consumer [`ring`] per direction. Inside [`lending`],
//!   large writes go single-copy: the reader copies straight from the writer's memory with
//!   `process_vm_readv` where the kernel allows it (probed at set-up), through the ring where
//!   it does not.
//! - [`wait`] spins, then yields the CPU, then sleeps on an eventfd doorbell, so ranks that
//!   outnumber the cores still make progress; [`Channel::prepare_sleep`],
//!   [`Channel::doorbell`] and [`Channel::socket`] let an outside poller do the sleeping.
//! - A liveness thread per process bumps this process's heartbeat in every segment and
//!   watches each peer: a dead peer (its socket hangs up) or a frozen one (its heartbeat
//!   stands still for the [peer timeout](ShmConfig::peer_timeout)) becomes
//!   [`Error::PeerLost`] naming it.
//!
//! The shared segment is untrusted input, like a socket: the peer may store anything into it
//! at any time. Each side keeps its own indices privately and checks every value it loads;
//! a value no honest peer stores is [`Error::Protocol`] naming the peer, never a panic, a
//! fault or a hang (`tests/rogue.rs`). Unsafe code lives only in `src/sys/` (memfd, mmap,
//! `SCM_RIGHTS`, `SO_PEERCRED`, eventfd, poll, `process_vm_readv`), each block with a
//! `// SAFETY:` comment; `src/sys/mapping.rs` says why copying bytes out of memory a peer
//! may write concurrently is sound.
//!
//! What it does not do: matching, framing, credit or fingerprints (the transport engine of
//! `gloo-transport` does those over any byte stream), choosing shm for some peers and tcp for
//! others, or placing ranks on cores.
//!
//! Two ranks, here threads of one process:
//!
//! ```
//! use gloo_shm::{Interest, ShmConfig, ShmListener};
//! use gloo_transport::Rank;
//! use std::time::{Duration, Instant};
//!
//! let deadline = Instant::now() + Duration::from_secs(10);
//! let l0 = ShmListener::bind(ShmConfig::new("doc", Rank(0), 2))?;
//! let l1 = ShmListener::bind(ShmConfig::new("doc", Rank(1), 2))?;
//! let addr = l0.address_bytes(); // published through the store in a real job
//! let dialer = std::thread::spawn(move || -> gloo_shm::Result<()> {
//!     let mut ch = l1.connect(Rank(0), &addr, deadline)?; // the higher rank dials
//!     let mut sent = 0;
//!     while sent < 5 {
//!         sent += ch.write(&[&b"hello"[sent..]])?;
//!         if sent < 5 {
//!             ch.wait(Interest::WRITE, deadline)?;
//!         }
//!     }
//!     Ok(())
//! });
//! let mut ch = l0.accept(deadline)?;
//! let mut buf = [0u8; 5];
//! let mut got = 0;
//! while got < 5 {
//!     got += ch.read(&mut buf[got..])?;
//!     if got < 5 {
//!         ch.wait(Interest::READ, deadline)?;
//!     }
//! }
//! assert_eq!(&buf, b"hello");
//! dialer.join().unwrap()?;
//! # Ok::<(), gloo_shm::Error>(())
//! ```

// Not `forbid` at the crate root: `src/sys/` must be able to allow unsafe code. Every other
// module opens with `#![forbid(unsafe_code)]`, which nothing inside it can relax, and the
// unit test `every_module_outside_sys_forbids_unsafe` keeps it so.
#![deny(unsafe_code)]

#[cfg(not(loom))]
mod channel;
#[cfg(not(loom))]
mod config;
mod error;
#[cfg(not(loom))]
mod hello;
#[cfg(not(loom))]
mod monitor;
pub mod ring;
#[cfg(all(feature = "rogue", not(loom)))]
pub mod rogue;
#[cfg(not(loom))]
mod segment;
#[cfg(not(loom))]
mod setup;
mod sync;
mod sys;
#[cfg(not(loom))]
mod wait;

#[cfg(not(loom))]
pub use channel::{Channel, Interest, Lending, SleepHandle, lending};
#[cfg(not(loom))]
pub use config::{
    DEFAULT_LEND_MIN, DEFAULT_PEER_TIMEOUT, DEFAULT_RING_CAPACITY, DEFAULT_SPIN, DEFAULT_YIELD,
    ShmConfig, SingleCopy,
};
pub use error::{Error, Result};
#[cfg(not(loom))]
pub use segment::{MAX_CAPACITY, MIN_CAPACITY, MappedRing};
#[cfg(not(loom))]
pub use setup::ShmListener;
#[cfg(not(loom))]
pub use wait::wait;

#[cfg(test)]
mod tests {
    /// Unsafe code lives only in `src/sys/`: every other source file forbids it.
    #[test]
    fn every_module_outside_sys_forbids_unsafe() {
        fn walk(dir: &std::path::Path, out: &mut Vec<std::path::PathBuf>) {
            for e in std::fs::read_dir(dir).unwrap() {
                let p = e.unwrap().path();
                if p.is_dir() {
                    if p.file_name().unwrap() != "sys" {
                        walk(&p, out);
                    }
                } else if p.extension().is_some_and(|x| x == "rs") {
                    out.push(p);
                }
            }
        }
        let src = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
        let mut files = Vec::new();
        walk(&src, &mut files);
        assert!(files.len() > 3, "found only {files:?}");
        for f in files {
            if f.ends_with("lib.rs") {
                continue;
            }
            let text = std::fs::read_to_string(&f).unwrap();
            assert!(
                text.contains("#![forbid(unsafe_code)]"),
                "{} does not forbid unsafe code",
                f.display()
            );
        }
    }
}
