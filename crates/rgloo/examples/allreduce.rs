//! The README's program: a multi-process allreduce started from the launcher's environment.
//! `crates/rgloo/tests/readme.rs` checks that the README shows this file and runs it.

fn main() -> Result<(), rgloo::Error> {
    let job = rgloo::init()?;
    let g = job.group();
    let mut v = vec![g.rank().0 as f32 + 1.0; 4];
    g.allreduce(&mut v, rgloo::ReduceOp::Sum, &rgloo::Options::new())?;
    println!("rank {} of {}: {v:?}", g.rank().0, g.size());
    Ok(())
}
