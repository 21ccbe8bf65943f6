//! The `gloo-tls mint` command (feature `cli`): what it writes (a CA, a certificate and a
//! `0600` key per rank, a store's), that it never overwrites, and that its output runs a real
//! job: three processes started from the environment with `GLOO_TLS_*` pointing at the files.
#![cfg(feature = "cli")]

mod common;

use std::net::{IpAddr, Ipv4Addr};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;

use gloo_testing::procs;
use gloo_tls::{Identity, TlsConfig};
use gloo_transport::Rank;

const BIN: &str = env!("CARGO_BIN_EXE_gloo-tls");
const JOB: &str = "minted job/1";
const DIR_ENV: &str = "GLOO_TEST_PKI";

fn mint(out: &Path, world: &str) -> std::process::Output {
    Command::new(BIN)
        .args(["mint", "--job", JOB, "--world-size", world, "--out"])
        .arg(out)
        .output()
        .expect("the gloo-tls binary runs")
}

fn mode(p: &Path) -> u32 {
    std::fs::metadata(p).unwrap().permissions().mode() & 0o777
}

#[test]
fn minted_files_run_a_real_job() {
    if let Some((rank, _)) = procs::child_rank() {
        let dir = std::path::PathBuf::from(std::env::var(DIR_ENV).unwrap());
        // The files really are this rank's.
        let tls = TlsConfig::from_pem_files(
            dir.join("ca.pem"),
            dir.join(format!("rank-{rank}.pem")),
            dir.join(format!("rank-{rank}.key")),
        )
        .unwrap();
        assert_eq!(tls.identity(), &Identity::rank(JOB, Rank(rank)));
        common::tls_rank(JOB, IpAddr::V4(Ipv4Addr::LOCALHOST));
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("pki");
    let o = mint(&out, "3");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let listed = String::from_utf8_lossy(&o.stdout);
    for name in ["ca.pem", "rank-0.pem", "rank-0.key", "rank-2.key", "store.pem", "store.key"] {
        assert!(listed.contains(name), "{name} not listed: {listed}");
    }
    for r in 0..3 {
        assert_eq!(mode(&out.join(format!("rank-{r}.key"))), 0o600);
    }
    assert_eq!(mode(&out.join("store.key")), 0o600);
    assert!(!out.join("ca.key").exists(), "the CA's key must not be kept");
    let store =
        TlsConfig::from_pem_files(out.join("ca.pem"), out.join("store.pem"), out.join("store.key"))
            .unwrap();
    assert_eq!(store.identity(), &Identity::store(JOB));
    // Nothing is overwritten.
    let again = mint(&out, "3");
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("cannot create"), "{again:?}");
    let zero = mint(&tmp.path().join("none"), "0");
    assert!(!zero.status.success());
    // A job of three processes from the files.
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let group = procs::spawn_self_with("minted_files_run_a_real_job", 3, |r| {
        vec![
            ("RANK".into(), r.to_string()),
            ("WORLD_SIZE".into(), "3".into()),
            ("MASTER_ADDR".into(), "127.0.0.1".into()),
            ("MASTER_PORT".into(), port.to_string()),
            ("GLOO_TLS_CA".into(), out.join("ca.pem").display().to_string()),
            ("GLOO_TLS_CERT".into(), out.join(format!("rank-{r}.pem")).display().to_string()),
            ("GLOO_TLS_KEY".into(), out.join(format!("rank-{r}.key")).display().to_string()),
            (DIR_ENV.into(), out.display().to_string()),
        ]
    });
    for o in group.wait(gloo_testing::deadline(180)) {
        gloo_testing::rogue::assert_ran_one_test(&o);
        assert!(o.stdout.contains("job done over TLS"), "{}", o.report("did not finish the job"));
    }
}
