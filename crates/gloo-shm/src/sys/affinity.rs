//! CPU affinity of the calling thread (`sched_getaffinity`, `sched_setaffinity`).

use std::io;

use super::check;

/// The CPUs the calling thread may run on, in increasing order.
pub(crate) fn allowed() -> io::Result<Vec<usize>> {
    // SAFETY: an all-zero cpu_set_t is a valid (empty) set.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: `set` is a valid cpu_set_t of the size passed, written by the kernel only.
    check(unsafe { libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) })?;
    let max = 8 * std::mem::size_of::<libc::cpu_set_t>();
    // SAFETY: CPU_ISSET reads the set within its size (`c` is below the bits it holds).
    Ok((0..max).filter(|&c| unsafe { libc::CPU_ISSET(c, &set) }).collect())
}

/// Let the calling thread (and the threads it starts afterwards) run on `cpus` only.
pub(crate) fn set(cpus: &[usize]) -> io::Result<()> {
    let max = 8 * std::mem::size_of::<libc::cpu_set_t>();
    if cpus.is_empty() || cpus.iter().any(|&c| c >= max) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("CPU list {cpus:?} is empty or names a CPU beyond {max}"),
        ));
    }
    // SAFETY: an all-zero cpu_set_t is a valid (empty) set.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    for &c in cpus {
        // SAFETY: `c` is below the number of bits the set holds (checked above).
        unsafe { libc::CPU_SET(c, &mut set) };
    }
    // SAFETY: `set` is a valid cpu_set_t of the size passed, only read by the kernel.
    check(unsafe { libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) })?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn binding_to_one_allowed_cpu_and_back() {
        let before = allowed().unwrap();
        assert!(!before.is_empty());
        // On a thread of its own, so the test runner's threads keep their affinity.
        std::thread::spawn(move || {
            set(&before[..1]).unwrap();
            assert_eq!(allowed().unwrap(), before[..1]);
            set(&before).unwrap();
            assert_eq!(allowed().unwrap(), before);
            assert!(set(&[]).is_err());
            assert!(set(&[1 << 20]).is_err());
        })
        .join()
        .unwrap();
    }
}
