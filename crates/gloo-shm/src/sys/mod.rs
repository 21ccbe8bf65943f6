//! The crate's only unsafe code: thin wrappers over the Linux system calls shared memory needs.
//!
//! Each wrapper checks what it can (bounds, alignment, return values) and turns failures into
//! `io::Error`s; each `unsafe` block says in a `// SAFETY:` comment why it is sound. Nothing
//! here knows about rings, peers or protocols: the rest of the crate, which forbids unsafe
//! code, builds those from these pieces.
//!
//! - [`memfd`]: anonymous shared files (memfd), their seals, and the checks a received one
//!   must pass before it is mapped.
//! - [`mapping`]: a fixed-size shared mapping, with atomic words and byte copies into it.
//! - [`sock`]: file descriptors over a unix-domain socket (`SCM_RIGHTS`) and the peer's
//!   credentials (`SO_PEERCRED`).
//! - [`event`]: the doorbell (an `eventfd`) and `poll` over several descriptors.
//! - [`cma`]: single-copy reads from another process (`process_vm_readv`).
#![allow(unsafe_code)]

#[cfg(not(loom))]
pub(crate) mod cma;
#[cfg(not(loom))]
pub(crate) mod event;
#[cfg(loom)]
pub(crate) mod loom_mem;
#[cfg(not(loom))]
pub(crate) mod mapping;
#[cfg(not(loom))]
pub(crate) mod memfd;
#[cfg(not(loom))]
pub(crate) mod sock;

#[cfg(not(loom))]
use std::io;

/// The effective user id of this process.
#[cfg(not(loom))]
pub(crate) fn euid() -> u32 {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() }
}

/// `Ok(ret)` for a non-negative system-call result, the thread's `errno` otherwise.
#[cfg(not(loom))]
fn check(ret: libc::c_int) -> io::Result<libc::c_int> {
    if ret < 0 { Err(io::Error::last_os_error()) } else { Ok(ret) }
}
