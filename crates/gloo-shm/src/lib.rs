//! Shared memory between ranks on one host: the byte channels under the Rust Gloo's `shm`
//! transport.
//!
//! (Crate docs are completed with the channel API below.)

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
pub use channel::{Channel, Interest, Lending, lending};
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
