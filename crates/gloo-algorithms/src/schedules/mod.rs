//! The schedules: who sends which bytes to whom, in which round. They work on byte buffers;
//! the only typed code they call is the reduction handed to them.
//!
//! Every schedule leaves bitwise-identical results on every rank: each block of a reduction
//! is computed once, by one rank, and then copied (ring, halving-doubling, bcube), or every
//! rank computes the same expression with the same operands in the same order (recursive
//! doubling puts the lower half's value on the left).

use std::ops::Range;

use gloo_transport::{OpKind, OpState};
use smallvec::{SmallVec, smallvec};

use crate::ctx::{Ctx, Ops, bytes_of, carve, partition};
use crate::element::ByteFn;
use crate::error::{Error, Result};
use crate::ring::{self, At, Land, Mem, ring_pass};

/// The step of the message that hands a folded rank its result (after the at most 64 steps
/// of halving and doubling, below the steps the context reserves at the top).
const STEP_UNFOLD: u32 = 1 << 16;

/// The largest power of two not above `n` (`n >= 1`).
fn pow2_floor(n: usize) -> usize {
    1 << (usize::BITS - 1 - n.leading_zeros())
}

/// The lowest set bit of a relative rank, or the first power of two at or above `n` for the
/// root: the size of the binomial subtree a relative rank heads.
fn subtree_mask(vr: usize, n: usize) -> usize {
    if vr == 0 { n.next_power_of_two() } else { 1 << vr.trailing_zeros() }
}

mod allreduce;
mod exchange;
#[cfg(test)]
mod tests;
mod trees;

pub(crate) use allreduce::*;
pub(crate) use exchange::*;
pub(crate) use trees::*;
