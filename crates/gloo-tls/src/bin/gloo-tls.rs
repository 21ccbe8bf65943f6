//! `gloo-tls mint`: make a job's CA and every rank's certificate and key, for users without a
//! PKI of their own.
//!
//! ```text
//! gloo-tls mint --job job-42 --world-size 8 --out ./job-42-tls [--days 30]
//! ```
//!
//! writes `ca.pem`, `rank-<r>.pem` and `rank-<r>.key` (mode 0600) for every rank, and
//! `store.pem` / `store.key` for a standalone `gloo-store`. Give rank `r` the three files
//! through `GLOO_TLS_CA=ca.pem GLOO_TLS_CERT=rank-<r>.pem GLOO_TLS_KEY=rank-<r>.key`.
#![forbid(unsafe_code)]

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use gloo_tls::mint::{Validity, write_job};

#[derive(Parser)]
#[command(name = "gloo-tls", version, about = "TLS certificates for Rust Gloo jobs")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Mint a new CA for one job, and a certificate and key per rank (plus one for a
    /// standalone store), into a directory. Nothing existing is overwritten; the CA's key
    /// is not kept.
    Mint {
        /// The job id the certificates name (`gloo://<job>/rank/<r>`); the job id every rank
        /// gives the transport.
        #[arg(long)]
        job: String,
        /// The number of ranks.
        #[arg(long)]
        world_size: u32,
        /// The directory to write into (created if missing).
        #[arg(long)]
        out: PathBuf,
        /// How many days the certificates stay valid.
        #[arg(long, default_value_t = 30)]
        days: u32,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Mint { job, world_size, out, days } => {
            match write_job(&out, &job, world_size, Validity::days(days)) {
                Ok(files) => {
                    for f in files {
                        println!("{}", f.display());
                    }
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("gloo-tls mint: {e}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}
