//! gloo-bench: the Rust Gloo's benchmark tool (arrives with its own issue).
#![forbid(unsafe_code)]

fn main() {
    eprintln!("gloo-bench is not built yet: it arrives with its own issue (see README.md)");
    std::process::exit(2);
}
