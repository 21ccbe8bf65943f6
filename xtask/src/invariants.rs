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

/// The repository stands on its own: no file in it sends a reader to the development machine's
/// folder beside the checkout (the development machine's `shared` folder), which a clone does not have. The
/// needle is assembled so that this file does not match itself.
#[test]
fn no_file_points_outside_the_repository() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let (mut hits, mut seen) = (Vec::new(), 0);
    for path in files_under(&root) {
        let text_like = matches!(
            path.extension().and_then(|e| e.to_str()),
            Some("rs" | "md" | "toml" | "sh" | "py" | "txt" | "yml" | "yaml")
        ) || path.parent().and_then(|p| p.file_name()) == Some(".ci".as_ref());
        if !text_like {
            continue;
        }
        let Ok(text) = std::fs::read_to_string(&path) else { continue };
        seen += 1;
        // Also the way an earlier ARCHITECTURE.md put it ("`DESIGN.md` in the shared
        // folder"): a pointer in words is as broken for a clone as a path.
        let needles = [
            format!("..{}", "/shared"),
            format!("/work{}", "/shared"),
            format!("the shared {}", "folder"),
        ];
        for (n, line) in text.lines().enumerate() {
            if needles.iter().any(|needle| line.contains(needle.as_str())) {
                hits.push(format!("{}:{}: {}", path.display(), n + 1, line.trim()));
            }
        }
    }
    // The walk must have read the workspace's own sources, or an empty result proves nothing.
    assert!(seen > 50, "only {seen} files read under {}", root.display());
    assert!(hits.is_empty(), "files that point outside the repository:\n{}", hits.join("\n"));
}

/// Every file under `dir`, leaving out build output, git's own files and fuzzing corpora.
fn files_under(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).expect("the repository is readable") {
        let path = entry.expect("a directory entry").path();
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
        if path.is_dir() {
            if !matches!(name, "target" | ".git" | "corpus" | "artifacts") {
                files.extend(files_under(&path));
            }
        } else {
            files.push(path);
        }
    }
    files
}

/// Every public enum of a published library crate is `#[non_exhaustive]`, so that a variant
/// added later (an opcode, an error, an operation state) is not a breaking change for users
/// who match on it. Test helpers (`gloo-testing`), the benchmark tool and the modules only the
/// test features build (`rogue`, `fuzzing`) are left out. The check reads the attributes above
/// each `pub enum` line; it found 13 enums without the attribute when it was written.
#[test]
fn public_enums_of_library_crates_are_non_exhaustive() {
    let crates = Path::new(env!("CARGO_MANIFEST_DIR")).join("../crates");
    let mut files = Vec::new();
    for entry in std::fs::read_dir(&crates).expect("crates/ is readable") {
        let dir = entry.expect("a directory entry").path();
        let name = dir.file_name().and_then(|n| n.to_str()).unwrap_or("");
        if !matches!(name, "gloo-testing" | "gloo-bench") && dir.join("src").is_dir() {
            files.extend(files_under(&dir.join("src")));
        }
    }
    let (mut enums, mut bare) = (0, Vec::new());
    for path in files.into_iter().filter(|p| p.extension().is_some_and(|e| e == "rs")) {
        let stem = path.file_stem().and_then(|s| s.to_str()).unwrap_or("");
        if matches!(stem, "rogue" | "fuzzing") {
            continue;
        }
        let text = std::fs::read_to_string(&path).expect("a source file is readable");
        let lines: Vec<&str> = text.lines().collect();
        for (i, line) in lines.iter().enumerate() {
            // A macro's template (`pub enum $ty`) is not an enum: its invocations are, and
            // they are checked here like any other.
            let Some(name) = line.trim_start().strip_prefix("pub enum ") else { continue };
            if name.starts_with('$') {
                continue;
            }
            enums += 1;
            // The attributes and doc comments right above the enum.
            let above =
                lines[..i].iter().rev().map(|l| l.trim_start()).take_while(|l| {
                    l.starts_with("#[") || l.starts_with("///") || l.starts_with("//")
                });
            if !above.clone().any(|l| l.starts_with("#[non_exhaustive]")) {
                bare.push(format!("{}:{}: {}", path.display(), i + 1, line.trim()));
            }
        }
    }
    // The walk must have found the libraries' enums (errors, opcodes, ...).
    assert!(enums > 20, "only {enums} public enums found under {}", crates.display());
    assert!(bare.is_empty(), "public enums without #[non_exhaustive]:\n{}", bare.join("\n"));
}
