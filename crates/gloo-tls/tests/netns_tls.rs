//! A multi-process job on routable addresses with no job token (issue 10 §3): two network
//! namespaces joined by a veth pair (created here, removed at the end; needs root and
//! iproute2), four ranks started from the environment as torchrun would, two in each
//! namespace. Rank 0 hosts the TCP store over TLS on its routable address; every rank binds
//! its routable address with the TLS layer and no token (which the transport would refuse
//! without TLS); the ranks exchange with each other and allreduce.

mod common;

use std::net::IpAddr;

use gloo_testing::netns::NetnsPair;
use gloo_testing::procs;
use gloo_testing::tls::Pki;

const JOB: &str = "netns-tls";
const SUBNET: u8 = 47;
const BIND_ENV: &str = "GLOO_TEST_BIND";

#[test]
fn a_tls_job_on_routable_addresses_needs_no_token() {
    if procs::child_rank().is_some() {
        let bind: IpAddr = std::env::var(BIND_ENV).unwrap().parse().unwrap();
        common::tls_rank(JOB, bind);
        return;
    }
    let pair = NetnsPair::new("tls", SUBNET).unwrap_or_else(|e| panic!("{e}"));
    let pki = Pki::new(JOB, 4);
    let dir = tempfile::tempdir().unwrap();
    let master = NetnsPair::addr(SUBNET, 0);
    // Ranks 0 and 3 in namespace a, ranks 1 and 2 in namespace b.
    let side = |r: u32| usize::from(r == 1 || r == 2);
    let group = procs::spawn_self_in(
        "a_tls_job_on_routable_addresses_needs_no_token",
        4,
        |r| pair.exec_prefix(side(r)),
        |r| {
            let d = dir.path().join(r.to_string());
            std::fs::create_dir(&d).unwrap();
            let f = pki.write_rank(&d, r, 0o600);
            vec![
                ("RANK".into(), r.to_string()),
                ("WORLD_SIZE".into(), "4".into()),
                ("MASTER_ADDR".into(), master.to_string()),
                ("MASTER_PORT".into(), "29500".into()),
                ("GLOO_TLS_CA".into(), f.ca.display().to_string()),
                ("GLOO_TLS_CERT".into(), f.cert.display().to_string()),
                ("GLOO_TLS_KEY".into(), f.key.display().to_string()),
                (BIND_ENV.into(), NetnsPair::addr(SUBNET, side(r)).to_string()),
            ]
        },
    );
    for o in group.wait(gloo_testing::deadline(180)) {
        gloo_testing::rogue::assert_ran_one_test(&o);
        assert!(o.stdout.contains("job done over TLS"), "{}", o.report("did not finish the job"));
    }
    drop(pair);
}
