//! `gloo-store`: a standalone TCP store server for jobs whose ranks should not host it.
//!
//! ```text
//! gloo-store --listen 127.0.0.1:29500 [--token-env GLOO_AUTH_TOKEN] [--insecure]
//! ```
//!
//! With `--token-env VAR`, clients must prove they hold the token in `$VAR`. With
//! `GLOO_TLS_CA`, `GLOO_TLS_CERT` and `GLOO_TLS_KEY` set (a build with the `tls` feature), the
//! store speaks mutual TLS with that certificate (a `gloo://<job>/store` one, from
//! `gloo-tls mint`) and serves only clients holding a certificate of the same job. Without a
//! token or TLS only loopback addresses are served, unless `--insecure` is given.
#![forbid(unsafe_code)]

use std::net::SocketAddr;
use std::process::ExitCode;

use gloo_rendezvous::tcp::{ServerConfig, TcpStoreServer};

const USAGE: &str = "usage: gloo-store --listen ADDR:PORT [--token-env VAR] [--insecure]\n\
     Serves a gloo TCP store until killed. With --token-env, clients must hold the token in $VAR;\n\
     with GLOO_TLS_CA, GLOO_TLS_CERT and GLOO_TLS_KEY, clients must hold a certificate of the job.";

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    match run(std::env::args().skip(1).collect()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("gloo-store: {e}\n{USAGE}");
            ExitCode::from(2)
        }
    }
}

fn run(args: Vec<String>) -> Result<(), String> {
    let mut listen: Option<SocketAddr> = None;
    let mut cfg = ServerConfig::default();
    let mut it = args.into_iter();
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--listen" => {
                let v = it.next().ok_or("--listen needs ADDR:PORT")?;
                listen = Some(v.parse().map_err(|e| format!("--listen {v}: {e}"))?);
            }
            "--token-env" => {
                let var = it.next().ok_or("--token-env needs a variable name")?;
                let token = std::env::var(&var)
                    .map_err(|_| format!("--token-env {var}: the variable is not set"))?;
                if token.is_empty() {
                    return Err(format!("--token-env {var}: the variable is empty"));
                }
                cfg.token = Some(token.into_bytes());
            }
            "--insecure" => cfg.allow_insecure_remote = true,
            "-h" | "--help" => {
                println!("{USAGE}");
                return Ok(());
            }
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    let listen = listen.ok_or("--listen is required")?;
    #[cfg(feature = "tls")]
    {
        cfg.tls = gloo_tls::TlsConfig::from_env()
            .map_err(|e| format!("TLS: {}", gloo_transport::ErrorChain(&e)))?;
    }
    #[cfg(not(feature = "tls"))]
    if std::env::var_os("GLOO_TLS_CERT").is_some() {
        return Err(
            "GLOO_TLS_* are set, but this gloo-store was built without TLS (feature `tls`)".into(),
        );
    }
    let server = TcpStoreServer::bind_with(listen, cfg).map_err(|e| e.to_string())?;
    tracing::info!(addr = %server.local_addr(), "gloo-store serving");
    server.join();
    Ok(())
}
