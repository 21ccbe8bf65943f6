//! Invariants of the crate graph that ARCHITECTURE.md states, checked against cargo's own view
//! of the workspace (row `xtask/self`).

use std::path::Path;
use std::process::Command;

/// The packages in `package`'s normal (not dev, not build) dependency tree with its default
/// features, one name per entry, from `cargo tree`.
fn normal_tree(package: &str) -> Vec<String> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_string());
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let out = Command::new(cargo)
        .args(["tree", "--locked", "-p", package, "-e", "normal", "--prefix", "none"])
        .args(["--format", "{p}"])
        .current_dir(root)
        .output()
        .expect("cargo runs");
    assert!(out.status.success(), "cargo tree failed: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_whitespace().next().map(str::to_string))
        .collect()
}

/// `gloo-algorithms` runs over any transport and does no I/O: no `mio` in its tree. The same
/// query finds `mio` under `gloo-transport` with its default `tcp` feature, so a query that
/// found nothing at all cannot pass for the invariant.
#[test]
fn gloo_algorithms_has_no_mio_in_its_tree() {
    let algorithms = normal_tree("gloo-algorithms");
    assert!(algorithms.iter().any(|p| p == "gloo-transport"), "{algorithms:?}");
    assert!(!algorithms.iter().any(|p| p == "mio"), "mio is in gloo-algorithms' tree");
    let transport = normal_tree("gloo-transport");
    assert!(transport.iter().any(|p| p == "mio"), "{transport:?}");
}
