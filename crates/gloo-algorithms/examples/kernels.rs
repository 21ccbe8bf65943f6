//! Reduce-kernel throughput against memcpy, in the same run.
//!
//! `cargo run --release -p gloo-algorithms --example kernels [MiB]` (default 64 MiB): times
//! `dst = dst + src` over f32 (and the other element types) and `dst.copy_from_slice(src)`
//! over the same buffers, and prints GB/s counted as bytes of `dst` per second for both, so
//! the ratio reads as "the kernel runs at X% of memcpy". (A reduction reads two buffers and
//! writes one; memcpy reads one and writes one.)

use std::hint::black_box;
use std::time::{Duration, Instant};

use gloo_algorithms::{Element, ReduceOp, reduce_kernel};
use half::{bf16, f16};

/// The best of `reps` runs of `f`, after one warm-up.
fn best(reps: usize, mut f: impl FnMut()) -> Duration {
    f();
    (0..reps)
        .map(|_| {
            let t = Instant::now();
            f();
            t.elapsed()
        })
        .min()
        .unwrap_or_default()
}

fn gbps(bytes: usize, d: Duration) -> f64 {
    bytes as f64 / d.as_secs_f64() / 1e9
}

fn kernel<T: Element>(name: &str, bytes: usize, reps: usize, one: T, memcpy: f64) {
    kernel_op(name, ReduceOp::Sum, bytes, reps, one, memcpy);
}

fn kernel_op<T: Element>(
    name: &str,
    op: ReduceOp<'_, T>,
    bytes: usize,
    reps: usize,
    one: T,
    memcpy: f64,
) {
    let n = bytes / std::mem::size_of::<T>();
    let mut dst = vec![one; n];
    let src = vec![one; n];
    let d = best(reps, || reduce_kernel(op, black_box(&mut dst), black_box(&src)));
    let g = gbps(bytes, d);
    let op = op.name();
    println!("{name:>5} {op:<7} {g:7.2} GB/s  {:5.1}% of memcpy", 100.0 * g / memcpy);
    black_box(&dst);
}

/// The other built-in ops too: for the half types, whose kernels convert (their cost
/// differs by op), and for f32, whose min and max carry the NaN and signed-zero rules.
fn other_ops<T: Element>(name: &str, bytes: usize, reps: usize, one: T, memcpy: f64) {
    for op in [ReduceOp::Product, ReduceOp::Min, ReduceOp::Max] {
        kernel_op(name, op, bytes, reps, one, memcpy);
    }
}

fn main() {
    let mib: usize = std::env::args().nth(1).and_then(|a| a.parse().ok()).unwrap_or(64);
    let bytes = mib << 20;
    let reps = 10;
    let mut a = vec![1u8; bytes];
    let b = vec![2u8; bytes];
    let d = best(reps, || black_box(&mut a).copy_from_slice(black_box(&b)));
    let memcpy = gbps(bytes, d);
    println!("{mib} MiB buffers, best of {reps}");
    println!("memcpy        {memcpy:7.2} GB/s");
    kernel::<f32>("f32", bytes, reps, 1.0, memcpy);
    kernel::<f64>("f64", bytes, reps, 1.0, memcpy);
    kernel::<i32>("i32", bytes, reps, 1, memcpy);
    kernel::<u8>("u8", bytes, reps, 1, memcpy);
    kernel::<f16>("f16", bytes, reps, f16::ONE, memcpy);
    kernel::<bf16>("bf16", bytes, reps, bf16::ONE, memcpy);
    other_ops::<f32>("f32", bytes, reps, 1.0, memcpy);
    other_ops::<f16>("f16", bytes, reps, f16::ONE, memcpy);
    other_ops::<bf16>("bf16", bytes, reps, bf16::ONE, memcpy);
    // Memcpy again at the end, so drift over the run shows.
    let d = best(reps, || black_box(&mut a).copy_from_slice(black_box(&b)));
    println!("memcpy (again){:7.2} GB/s", gbps(bytes, d));
}
