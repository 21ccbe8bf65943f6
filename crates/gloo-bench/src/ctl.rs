//! Small control exchanges between the ranks of a run (rank 0 coordinates), carried by the
//! communicator under test on a slot of their own so they never cross the measured traffic.

use std::time::Instant;

use gloo_transport::{Communicator, Op, Rank, Slot};

use crate::error::{Error, Result};

/// The control slot: a tag no collective of the bench uses.
pub(crate) const CONTROL: Slot = Slot::new(0xFFFF_FF00, 0);

/// The longest status text a rank reports to rank 0.
const STATUS_LEN: usize = 512;

/// Every rank returns rank 0's `v`.
pub(crate) fn bcast_u64(comm: &dyn Communicator, v: u64, deadline: Instant) -> Result<u64> {
    if comm.rank() == Rank(0) {
        let b = v.to_le_bytes();
        let mut ops: Vec<Op<'_>> =
            (1..comm.size()).map(|r| Op::send(Rank(r), CONTROL, &b)).collect();
        comm.run(&mut ops, deadline).map_err(|e| Error::transport("sending a control value", e))?;
        Ok(v)
    } else {
        let mut b = [0u8; 8];
        let n = comm
            .recv(Rank(0), CONTROL, &mut b, deadline)
            .map_err(|e| Error::transport("waiting for rank 0's control value", e))?;
        if n != 8 {
            return Err(Error::Peer { rank: 0, detail: format!("sent a {n}-byte control value") });
        }
        Ok(u64::from_le_bytes(b))
    }
}

/// Returns when every rank has called it.
pub(crate) fn barrier(comm: &dyn Communicator, deadline: Instant) -> Result<()> {
    gather_fixed(comm, &[1], 1, deadline)?;
    bcast_u64(comm, 0, deadline).map(|_| ())
}

/// Rank 0 gets every rank's `mine` (each exactly `len` bytes; its own first); others get
/// `None`.
fn gather_fixed(
    comm: &dyn Communicator,
    mine: &[u8],
    len: usize,
    deadline: Instant,
) -> Result<Option<Vec<Vec<u8>>>> {
    if comm.rank() != Rank(0) {
        comm.send(Rank(0), CONTROL, mine, deadline)
            .map_err(|e| Error::transport("reporting to rank 0", e))?;
        return Ok(None);
    }
    let n = comm.size() as usize;
    let mut bufs: Vec<Vec<u8>> = (1..n).map(|_| vec![0u8; len]).collect();
    let mut ops: Vec<Op<'_>> = bufs
        .iter_mut()
        .enumerate()
        .map(|(i, b)| Op::recv(Rank(i as u32 + 1), CONTROL, b))
        .collect();
    comm.run(&mut ops, deadline).map_err(|e| Error::transport("collecting reports", e))?;
    let lens: Vec<usize> = ops.iter().map(|o| o.completed().map_or(0, |(_, l)| l)).collect();
    drop(ops);
    let mut out = vec![mine.to_vec()];
    for (i, (mut b, l)) in bufs.into_iter().zip(lens).enumerate() {
        if l != len {
            return Err(Error::Peer {
                rank: i as u32 + 1,
                detail: format!("sent a {l}-byte report where {len} bytes were expected"),
            });
        }
        b.truncate(l);
        out.push(b);
    }
    Ok(Some(out))
}

/// Rank 0 gets every rank's samples (all of the same length), its own first.
pub(crate) fn gather_f64s(
    comm: &dyn Communicator,
    mine: &[f64],
    deadline: Instant,
) -> Result<Option<Vec<Vec<f64>>>> {
    let bytes: Vec<u8> = mine.iter().flat_map(|v| v.to_le_bytes()).collect();
    let all = gather_fixed(comm, &bytes, bytes.len(), deadline)?;
    Ok(all.map(|all| {
        all.iter()
            .map(|b| {
                b.chunks_exact(8)
                    .map(|c| {
                        f64::from_le_bytes(
                            c.try_into().expect("chunks_exact(8) yields 8-byte slices"),
                        )
                    })
                    .collect()
            })
            .collect()
    }))
}

/// Rank 0 gets every rank's status text (cut to 512 bytes), its own first.
pub(crate) fn gather_status(
    comm: &dyn Communicator,
    status: &str,
    deadline: Instant,
) -> Result<Option<Vec<String>>> {
    let mut b = vec![0u8; STATUS_LEN];
    let s = status.as_bytes();
    let n = s.len().min(STATUS_LEN - 2);
    b[..2].copy_from_slice(&(n as u16).to_le_bytes());
    b[2..2 + n].copy_from_slice(&s[..n]);
    let all = gather_fixed(comm, &b, STATUS_LEN, deadline)?;
    Ok(all.map(|all| {
        all.iter()
            .map(|b| {
                let n = (u16::from_le_bytes([b[0], b[1]]) as usize).min(STATUS_LEN - 2);
                String::from_utf8_lossy(&b[2..2 + n]).into_owned()
            })
            .collect()
    }))
}
