//! Placing ranks on cores: which CPUs there are, and binding this process's threads to one.
//!
//! Two ranks that share a core wait for each other's time slices: measured here with tcp, a
//! 4 B allreduce of two ranks took 7.9 µs with the ranks on different cores and 27.9 µs with
//! both on one, so an unpinned run reads either by chance. A launcher that starts the ranks
//! of one host binds each to a core of its own when there are enough
//! ([`cores_for`]), as `mpirun` does; with more ranks than cores it leaves them unbound and
//! the transport's waits give the CPU away early (see
//! [`ShmConfig::oversubscribed`](crate::ShmConfig::oversubscribed)).
#![forbid(unsafe_code)]

use std::io;

/// The CPUs this thread may run on, in increasing order.
pub fn allowed_cpus() -> io::Result<Vec<usize>> {
    crate::sys::affinity::allowed()
}

/// The number of CPUs online on this machine (not only those this thread may use: a rank
/// already bound to one core still counts the machine's cores when it asks whether the
/// ranks of its host outnumber them).
pub fn online_cpus() -> usize {
    std::fs::read_to_string("/sys/devices/system/cpu/online")
        .ok()
        .and_then(|s| parse_cpu_list(s.trim()))
        .map(|l| l.len())
        .filter(|n| *n > 0)
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
}

/// Whether this thread may run on one CPU only (a launcher placed it: it has that core to
/// itself, as far as its own job goes). `false` when the affinity cannot be read.
pub fn bound_to_one_cpu() -> bool {
    allowed_cpus().is_ok_and(|c| c.len() == 1)
}

/// Run the calling thread, and the threads it starts from now on, on `cpu` only. Call it
/// first thing in a rank's `main`, before any thread starts, to bind the whole process.
pub fn bind_to_cpu(cpu: usize) -> io::Result<()> {
    crate::sys::affinity::set(&[cpu])
}

/// One CPU per rank for `ranks` ranks, each on a distinct physical core where the machine
/// has enough (hyperthread siblings last), from the CPUs this thread may use; `None` when
/// there are fewer such CPUs than ranks (the ranks then stay unbound).
pub fn cores_for(ranks: usize) -> io::Result<Option<Vec<usize>>> {
    let cpus = allowed_cpus()?;
    if ranks > cpus.len() {
        return Ok(None);
    }
    // Order by (thread index within its core, package, core): the first CPU of every core
    // comes before any second hyperthread.
    let key = |c: usize| {
        let read = |f: &str| {
            std::fs::read_to_string(format!("/sys/devices/system/cpu/cpu{c}/topology/{f}"))
                .ok()
                .and_then(|s| s.trim().parse::<usize>().ok())
        };
        let siblings = std::fs::read_to_string(format!(
            "/sys/devices/system/cpu/cpu{c}/topology/thread_siblings_list"
        ))
        .ok()
        .and_then(|s| parse_cpu_list(s.trim()))
        .unwrap_or_default();
        let nth = siblings.iter().position(|s| *s == c).unwrap_or(0);
        (nth, read("physical_package_id").unwrap_or(0), read("core_id").unwrap_or(c), c)
    };
    let mut ordered = cpus;
    ordered.sort_by_key(|c| key(*c));
    ordered.truncate(ranks);
    Ok(Some(ordered))
}

/// Parse a kernel CPU list (`0-3,8,10-11`); `None` when it is malformed.
pub fn parse_cpu_list(s: &str) -> Option<Vec<usize>> {
    let mut out = Vec::new();
    if s.is_empty() {
        return Some(out);
    }
    for part in s.split(',') {
        match part.split_once('-') {
            Some((a, b)) => {
                let (a, b) = (a.parse::<usize>().ok()?, b.parse::<usize>().ok()?);
                if b < a || b - a > 1 << 16 {
                    return None;
                }
                out.extend(a..=b);
            }
            None => out.push(part.parse().ok()?),
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_lists_parse() {
        assert_eq!(parse_cpu_list("0-3,8,10-11"), Some(vec![0, 1, 2, 3, 8, 10, 11]));
        assert_eq!(parse_cpu_list("5"), Some(vec![5]));
        assert_eq!(parse_cpu_list(""), Some(vec![]));
        for bad in ["a", "3-1", "1,,2", "0-99999999"] {
            assert_eq!(parse_cpu_list(bad), None, "{bad}");
        }
    }

    #[test]
    fn default_waits_spin_only_on_a_cpu_of_its_own() {
        use crate::{DEFAULT_SPIN, DEFAULT_YIELD, OVERSUBSCRIBED_YIELD, ShmConfig};
        use gloo_transport::Rank;
        use std::time::Duration;
        let waits = |c: &ShmConfig| (c.spin, c.yield_for);
        let cfg = ShmConfig::new("waits", Rank(0), 2);
        let allowed = allowed_cpus().unwrap();
        // On threads of their own, so the test runner's threads keep their affinity.
        let bound = std::thread::spawn({
            let (cfg, cpu) = (cfg.clone(), allowed[0]);
            move || {
                bind_to_cpu(cpu).unwrap();
                assert!(bound_to_one_cpu());
                (waits(&cfg.for_local_ranks(1)), waits(&cfg.for_local_ranks(online_cpus() + 1)))
            }
        })
        .join()
        .unwrap();
        assert_eq!(bound.0, (DEFAULT_SPIN, DEFAULT_YIELD));
        assert_eq!(bound.1, (Duration::ZERO, OVERSUBSCRIBED_YIELD));
        if allowed.len() > 1 {
            // Unbound: the whole window yields.
            assert!(!bound_to_one_cpu());
            assert_eq!(
                waits(&cfg.for_local_ranks(1)),
                (Duration::ZERO, DEFAULT_SPIN + DEFAULT_YIELD)
            );
        }
        // Waits the caller chose are kept whatever the placement.
        let mine = cfg.spin(Duration::from_micros(7), Duration::from_micros(9));
        let want = (Duration::from_micros(7), Duration::from_micros(9));
        assert_eq!(waits(&mine.for_local_ranks(1)), want);
        assert_eq!(waits(&mine.for_local_ranks(online_cpus() + 1)), want);
    }

    #[test]
    fn cores_for_gives_distinct_allowed_cpus_or_none() {
        let allowed = allowed_cpus().unwrap();
        let n = allowed.len();
        let got = cores_for(n).unwrap().unwrap();
        let mut sorted = got.clone();
        sorted.sort_unstable();
        sorted.dedup();
        assert_eq!(sorted.len(), n, "{got:?}");
        assert!(got.iter().all(|c| allowed.contains(c)));
        assert_eq!(cores_for(n + 1).unwrap(), None);
        assert!(online_cpus() >= n);
    }
}
