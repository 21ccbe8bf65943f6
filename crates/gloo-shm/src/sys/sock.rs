//! Unix-domain socket helpers: passing descriptors (`SCM_RIGHTS`) and the peer's credentials
//! (`SO_PEERCRED`), which std does not offer on stable Rust.

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::os::unix::net::UnixStream;

/// The most descriptors one message carries (a segment and a doorbell).
pub(crate) const MAX_FDS: usize = 4;

/// Room for the control message of [`MAX_FDS`] descriptors, aligned for `cmsghdr`.
#[repr(C, align(8))]
struct CmsgBuf([u8; 64]);

fn cmsg_space(n: usize) -> usize {
    // SAFETY: CMSG_SPACE is a pure size computation.
    unsafe { libc::CMSG_SPACE((n * size_of::<libc::c_int>()) as u32) as usize }
}

/// Send `bytes` (at least one) with `fds` attached, in one `sendmsg`. Returns the bytes sent;
/// the descriptors travel with the first byte.
pub(crate) fn send_with_fds(
    sock: &UnixStream,
    bytes: &[u8],
    fds: &[BorrowedFd<'_>],
) -> io::Result<usize> {
    if fds.len() > MAX_FDS || bytes.is_empty() {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, "bad descriptor message"));
    }
    let mut cmsg = CmsgBuf([0; 64]);
    let space = cmsg_space(fds.len());
    debug_assert!(space <= cmsg.0.len());
    let mut iov =
        libc::iovec { iov_base: bytes.as_ptr() as *mut libc::c_void, iov_len: bytes.len() };
    // SAFETY: msghdr is plain data; all-zero is a valid empty header.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    if !fds.is_empty() {
        msg.msg_control = cmsg.0.as_mut_ptr().cast();
        msg.msg_controllen = space as _;
        // SAFETY: msg_control points at `space` bytes of aligned, zeroed storage, enough for
        // one header carrying fds.len() ints (CMSG_SPACE above), so CMSG_FIRSTHDR is non-null
        // and CMSG_DATA has room for the descriptors.
        unsafe {
            let hdr = libc::CMSG_FIRSTHDR(&msg);
            (*hdr).cmsg_level = libc::SOL_SOCKET;
            (*hdr).cmsg_type = libc::SCM_RIGHTS;
            (*hdr).cmsg_len = libc::CMSG_LEN((fds.len() * size_of::<libc::c_int>()) as u32) as _;
            let data = libc::CMSG_DATA(hdr).cast::<libc::c_int>();
            for (i, fd) in fds.iter().enumerate() {
                data.add(i).write_unaligned(fd.as_raw_fd());
            }
        }
    }
    // SAFETY: `msg` points at `iov` and `cmsg`, both live across the call; the socket is open.
    let n = unsafe { libc::sendmsg(sock.as_raw_fd(), &msg, libc::MSG_NOSIGNAL) };
    if n < 0 { Err(io::Error::last_os_error()) } else { Ok(n as usize) }
}

/// Receive into `buf` and take ownership of up to [`MAX_FDS`] descriptors that came with it
/// (close-on-exec). Descriptors beyond that are discarded by the kernel (`MSG_CTRUNC`), which
/// is reported as an error; so is a control message that is not `SCM_RIGHTS`.
pub(crate) fn recv_with_fds(
    sock: &UnixStream,
    buf: &mut [u8],
) -> io::Result<(usize, Vec<OwnedFd>)> {
    let mut cmsg = CmsgBuf([0; 64]);
    let space = cmsg_space(MAX_FDS);
    let mut iov = libc::iovec { iov_base: buf.as_mut_ptr().cast(), iov_len: buf.len() };
    // SAFETY: msghdr is plain data; all-zero is a valid empty header.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = cmsg.0.as_mut_ptr().cast();
    msg.msg_controllen = space as _;
    // SAFETY: `msg` points at `iov` (over `buf`, exclusively borrowed) and `cmsg`, both live
    // across the call; the socket is open.
    let n = unsafe { libc::recvmsg(sock.as_raw_fd(), &mut msg, libc::MSG_CMSG_CLOEXEC) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    let mut fds = Vec::new();
    let mut bad = None;
    // SAFETY: the kernel filled `msg`'s control area; CMSG_FIRSTHDR/NXTHDR walk it within
    // msg_controllen, and each SCM_RIGHTS payload holds (cmsg_len - CMSG_LEN(0)) / 4 new
    // descriptors that now belong to this process, which OwnedFd takes over exactly once.
    unsafe {
        let mut hdr = libc::CMSG_FIRSTHDR(&msg);
        while !hdr.is_null() {
            let data_len = ((*hdr).cmsg_len as usize).saturating_sub(libc::CMSG_LEN(0) as usize);
            if (*hdr).cmsg_level == libc::SOL_SOCKET && (*hdr).cmsg_type == libc::SCM_RIGHTS {
                let data = libc::CMSG_DATA(hdr).cast::<libc::c_int>();
                for i in 0..data_len / size_of::<libc::c_int>() {
                    fds.push(OwnedFd::from_raw_fd(data.add(i).read_unaligned()));
                }
            } else {
                bad = Some(((*hdr).cmsg_level, (*hdr).cmsg_type));
            }
            hdr = libc::CMSG_NXTHDR(&msg, hdr);
        }
    }
    if msg.msg_flags & libc::MSG_CTRUNC != 0 {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "too many descriptors in one message",
        ));
    }
    if let Some((level, kind)) = bad {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("unexpected control message (level {level}, type {kind})"),
        ));
    }
    Ok((n as usize, fds))
}

/// The credentials of the process at the other end of a connected unix socket, as the kernel
/// recorded them when the connection was made.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Cred {
    pub(crate) pid: u32,
    pub(crate) uid: u32,
    pub(crate) gid: u32,
}

/// `SO_PEERCRED` of `sock`.
pub(crate) fn peer_cred(sock: &UnixStream) -> io::Result<Cred> {
    let mut cred = libc::ucred { pid: 0, uid: 0, gid: 0 };
    let mut len = size_of::<libc::ucred>() as libc::socklen_t;
    // SAFETY: `cred` and `len` are valid for writes of the sizes given; the socket is open.
    let ret = unsafe {
        libc::getsockopt(
            sock.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_PEERCRED,
            (&raw mut cred).cast(),
            &mut len,
        )
    };
    super::check(ret)?;
    if len as usize != size_of::<libc::ucred>() || cred.pid <= 0 {
        return Err(io::Error::other("SO_PEERCRED gave no peer process"));
    }
    Ok(Cred { pid: cred.pid as u32, uid: cred.uid, gid: cred.gid })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;
    use std::os::fd::AsFd;

    #[test]
    fn descriptors_and_credentials_cross_a_socket_pair() {
        let (a, b) = UnixStream::pair().unwrap();
        let cred = peer_cred(&b).unwrap();
        assert_eq!(cred.pid, std::process::id());
        assert_eq!(cred.uid, super::super::euid());

        let (mut r, w) = UnixStream::pair().unwrap();
        send_with_fds(&a, b"x", &[w.as_fd()]).unwrap();
        drop(w);
        let mut buf = [0u8; 8];
        let (n, fds) = recv_with_fds(&b, &mut buf).unwrap();
        assert_eq!((n, buf[0], fds.len()), (1, b'x', 1));
        // The received descriptor is the write end: writing through it reaches `r`.
        let w2 = UnixStream::from(fds.into_iter().next().unwrap());
        std::io::Write::write_all(&mut &w2, b"through").unwrap();
        let mut got = [0u8; 7];
        r.read_exact(&mut got).unwrap();
        assert_eq!(&got, b"through");
    }

    #[test]
    fn too_many_descriptors_is_an_error_not_a_leak() {
        let (a, b) = UnixStream::pair().unwrap();
        let many: Vec<_> = (0..MAX_FDS + 3).map(|_| UnixStream::pair().unwrap().0).collect();
        // Send more than MAX_FDS by hand-building two messages' worth in one: send_with_fds
        // refuses, so use MAX_FDS and check the receiver takes them all.
        assert!(
            send_with_fds(&a, b"y", &many.iter().map(|s| s.as_fd()).collect::<Vec<_>>()).is_err()
        );
        send_with_fds(&a, b"y", &many[..MAX_FDS].iter().map(|s| s.as_fd()).collect::<Vec<_>>())
            .unwrap();
        let (_, fds) = recv_with_fds(&b, &mut [0u8; 4]).unwrap();
        assert_eq!(fds.len(), MAX_FDS);
    }
}
