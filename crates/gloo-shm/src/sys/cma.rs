//! Single-copy reads from another process's memory (`process_vm_readv`, "cross-memory
//! attach"), and the probe that tells whether the kernel allows them.
//!
//! Only the receiving side calls this, and only into a buffer it holds exclusively: the data
//! moves once, from the sender's buffer into ours, with no stop in the shared ring. Reading
//! another process's memory needs ptrace access to it (same user and, under Yama
//! `ptrace_scope` 1 or more, or in containers with a restrictive seccomp profile, more than
//! that), so the kernel may refuse; the caller then falls back to the ring.

use std::io;

/// How the kernel answered a cross-memory read.
#[derive(Debug)]
pub(crate) enum Remote {
    /// This many bytes were copied (fewer than asked only at an unmapped page).
    Copied(usize),
    /// The kernel refuses cross-memory reads of that process (`EPERM`, `EACCES`, `ENOSYS`):
    /// policy, not a fault; use the ring instead.
    Refused(io::Error),
    /// The address range is not mapped in the other process (`EFAULT`): the peer lied.
    BadAddress,
    /// The process no longer exists (`ESRCH`).
    Gone,
    /// Any other error.
    Failed(io::Error),
}

/// Copy `dst.len()` bytes from address `addr` of process `pid` into `dst`.
pub(crate) fn read(pid: u32, addr: u64, dst: &mut [u8]) -> Remote {
    if dst.is_empty() {
        return Remote::Copied(0);
    }
    let local = libc::iovec { iov_base: dst.as_mut_ptr().cast(), iov_len: dst.len() };
    let remote = libc::iovec { iov_base: addr as usize as *mut libc::c_void, iov_len: dst.len() };
    // SAFETY: `local` describes `dst`, which we borrow exclusively for the call, so the kernel
    // writing into it races with nothing in this process. `remote` is only an address in the
    // other process: the kernel checks it there and never dereferences it here.
    let n = unsafe { libc::process_vm_readv(pid as libc::pid_t, &local, 1, &remote, 1, 0) };
    if n >= 0 {
        return Remote::Copied(n as usize);
    }
    let e = io::Error::last_os_error();
    match e.raw_os_error() {
        Some(libc::EPERM | libc::EACCES | libc::ENOSYS) => Remote::Refused(e),
        Some(libc::EFAULT) => Remote::BadAddress,
        Some(libc::ESRCH) => Remote::Gone,
        _ => Remote::Failed(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reading_our_own_memory_copies_and_a_bad_address_is_reported() {
        let src = *b"single copy";
        let mut dst = [0u8; 11];
        match read(std::process::id(), src.as_ptr() as u64, &mut dst) {
            Remote::Copied(11) => assert_eq!(&dst, b"single copy"),
            Remote::Refused(e) => panic!("this machine refuses process_vm_readv of ourselves: {e}"),
            other => panic!("unexpected {other:?}"),
        }
        assert!(matches!(read(std::process::id(), 8, &mut dst), Remote::BadAddress));
    }
}
