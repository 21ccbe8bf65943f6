//! `gloo-store`: a standalone TCP store server (not yet written; the embeddable server comes
//! first).

fn main() {
    eprintln!("gloo-store: the TCP store server is not built yet");
    std::process::exit(2);
}
