//! Two Linux network namespaces joined by a veth pair, for tests that need routable
//! addresses without touching the host's own network (needs root and `ip` from iproute2).
//!
//! Namespace `a` holds `10.231.<subnet>.1/24`, namespace `b` holds `10.231.<subnet>.2/24`;
//! both have their loopback up. Dropping the pair deletes both namespaces (which deletes the
//! veth pair with them), so a test leaves nothing behind, even when it panics.

use std::net::Ipv4Addr;
use std::process::Command;

/// Run `ip` with `args`, failing with its stderr.
fn ip(args: &[&str]) -> Result<(), String> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .map_err(|e| format!("cannot run `ip` (install iproute2): {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "`ip {}` failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// Whether this process runs as root (network namespaces need it).
pub fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status").is_ok_and(|s| {
        s.lines()
            .any(|l| l.starts_with("Uid:") && l.split_whitespace().nth(1).is_some_and(|u| u == "0"))
    })
}

/// Two namespaces joined by a veth pair (see the module docs).
#[derive(Debug)]
pub struct NetnsPair {
    names: [String; 2],
}

impl NetnsPair {
    /// Create the pair, tagged `tag` (a few letters) and numbered by this process, on
    /// `10.231.<subnet>.0/24`. Fails with a message that says what is missing (root, `ip`).
    pub fn new(tag: &str, subnet: u8) -> Result<NetnsPair, String> {
        if !is_root() {
            return Err("network namespaces need root: run this test as root (CI does)".into());
        }
        let id = std::process::id() % 100_000;
        let names = [format!("gloo-{tag}-{id}-a"), format!("gloo-{tag}-{id}-b")];
        // Interface names have at most 15 bytes.
        let (va, vb) = (format!("gv{id}a"), format!("gv{id}b"));
        ip(&["netns", "add", &names[0]])?;
        let pair = NetnsPair { names: names.clone() };
        ip(&["netns", "add", &names[1]])?;
        ip(&[
            "link", "add", &va, "netns", &names[0], "type", "veth", "peer", "name", &vb, "netns",
            &names[1],
        ])?;
        for (ns, dev, host) in [(&names[0], &va, 1), (&names[1], &vb, 2)] {
            let cidr = format!("10.231.{subnet}.{host}/24");
            ip(&["-n", ns, "addr", "add", &cidr, "dev", dev])?;
            ip(&["-n", ns, "link", "set", dev, "up"])?;
            ip(&["-n", ns, "link", "set", "lo", "up"])?;
        }
        Ok(pair)
    }

    /// The address in namespace `i` (0 or 1) of the pair on `subnet`.
    pub fn addr(subnet: u8, i: usize) -> Ipv4Addr {
        Ipv4Addr::new(10, 231, subnet, i as u8 + 1)
    }

    /// The command prefix that runs a program in namespace `i` (0 or 1).
    pub fn exec_prefix(&self, i: usize) -> Vec<String> {
        vec!["ip".into(), "netns".into(), "exec".into(), self.names[i].clone()]
    }

    /// The namespaces' names.
    pub fn names(&self) -> &[String; 2] {
        &self.names
    }
}

impl Drop for NetnsPair {
    fn drop(&mut self) {
        for n in &self.names {
            let _ = ip(&["netns", "del", n]);
        }
    }
}
