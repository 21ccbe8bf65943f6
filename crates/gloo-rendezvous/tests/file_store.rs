//! FileStore's security and crash-safety properties (the conformance suite covers the rest).

use std::os::unix::fs::PermissionsExt;
use std::time::{Duration, Instant, SystemTime};

use gloo_rendezvous::{Error, FileStore, Store};
use gloo_testing::deadline;

#[test]
fn symlink_planted_at_a_key_path_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let store = FileStore::new(tmp.path().join("s")).unwrap();
    let secret = tmp.path().join("secret");
    std::fs::write(&secret, b"do not read or overwrite").unwrap();
    // The documented layout: key `victim` lives in file `kvictim`.
    std::os::unix::fs::symlink(&secret, store.dir().join("kvictim")).unwrap();

    let err = store.get(b"victim", deadline(5)).unwrap_err();
    assert!(matches!(&err, Error::Refused { key, .. } if key == b"victim"), "{err}");
    let err = store.set(b"victim", b"overwritten", deadline(5)).unwrap_err();
    assert!(matches!(err, Error::Refused { .. }), "{err}");
    let err = store.compare_set(b"victim", None, b"x", deadline(5)).unwrap_err();
    assert!(matches!(err, Error::Refused { .. }), "{err}");
    assert_eq!(std::fs::read(&secret).unwrap(), b"do not read or overwrite");
}

#[test]
fn a_directory_at_a_key_path_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let store = FileStore::new(tmp.path()).unwrap();
    std::fs::create_dir(store.dir().join("kplanted")).unwrap();
    let err = store.get(b"planted", deadline(5)).unwrap_err();
    assert!(matches!(err, Error::Refused { .. }), "{err}");
}

#[test]
fn files_are_private_to_the_owner() {
    let tmp = tempfile::tempdir().unwrap();
    let store = FileStore::new(tmp.path().join("new-dir")).unwrap();
    store.set(b"k", b"v", deadline(5)).unwrap();
    store.add(b"c", 1, deadline(5)).unwrap();
    for name in ["kk", "kc"] {
        let mode = std::fs::metadata(store.dir().join(name)).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "{name}: {mode:o}");
    }
    let mode = std::fs::metadata(store.dir()).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o700, "{mode:o}");
}

#[test]
fn a_partly_written_temp_file_is_never_a_value() {
    let tmp = tempfile::tempdir().unwrap();
    let store = FileStore::new(tmp.path()).unwrap();
    // A writer that crashed mid-write leaves only its temp file behind.
    std::fs::write(store.dir().join("t999-0-00000000deadbeef"), b"half a val").unwrap();
    let short = Instant::now() + Duration::from_millis(200);
    assert!(store.get(b"half", short).unwrap_err().is_timeout());
}

#[test]
fn readers_see_whole_values_while_a_writer_replaces_them() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().to_path_buf();
    let writer = FileStore::new(&dir).unwrap();
    writer.set(b"v", &vec![b'a'; 256 << 10], deadline(5)).unwrap();
    let stop = std::sync::atomic::AtomicBool::new(false);
    std::thread::scope(|s| {
        s.spawn(|| {
            for i in 0..60u32 {
                let byte = if i % 2 == 0 { b'b' } else { b'a' };
                writer.set(b"v", &vec![byte; 256 << 10], deadline(10)).unwrap();
            }
            stop.store(true, std::sync::atomic::Ordering::SeqCst);
        });
        let reader = FileStore::new(&dir).unwrap();
        let mut reads = 0;
        while !stop.load(std::sync::atomic::Ordering::SeqCst) || reads == 0 {
            let v = reader.get(b"v", deadline(10)).unwrap();
            assert_eq!(v.len(), 256 << 10);
            assert!(v.iter().all(|b| *b == v[0]), "a torn value was read");
            reads += 1;
            assert!(reads < 1_000_000, "bounded loop");
        }
    });
}

#[test]
fn a_stale_lock_is_broken_and_a_live_one_times_out() {
    let tmp = tempfile::tempdir().unwrap();
    let store = FileStore::new(tmp.path()).unwrap();
    let lock = store.dir().join("lcounter");
    let f = std::fs::File::create(&lock).unwrap();
    // A lock held by a process that died a minute ago.
    f.set_modified(SystemTime::now() - Duration::from_secs(60)).unwrap();
    drop(f);
    assert_eq!(store.add(b"counter", 2, deadline(5)).unwrap(), 2);

    // A fresh lock (another process inside its critical section) makes the call wait, and
    // fail by the deadline naming the key.
    std::fs::File::create(&lock).unwrap();
    let err = store.add(b"counter", 1, Instant::now() + Duration::from_millis(200)).unwrap_err();
    assert!(matches!(&err, Error::Io { key: Some(k), .. } if k == b"counter"), "{err}");
    std::fs::remove_file(&lock).unwrap();
    assert_eq!(store.add(b"counter", 1, deadline(5)).unwrap(), 3);
}

#[test]
fn cleanup_removes_the_jobs_keys_only() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("job");
    let store = FileStore::new(&dir).unwrap();
    store.set(b"a", b"1", deadline(5)).unwrap();
    store.set(b"b/c", b"2", deadline(5)).unwrap();
    store.cleanup().unwrap();
    assert!(!dir.exists(), "an emptied store directory is removed");

    let store = FileStore::new(&dir).unwrap();
    store.set(b"a", b"1", deadline(5)).unwrap();
    std::fs::write(dir.join("README"), b"not the store's").unwrap();
    store.cleanup().unwrap();
    assert!(dir.join("README").exists());
    assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 1);
}

#[test]
fn two_processes_worth_of_clients_share_one_directory() {
    // Separate FileStore values (as separate processes would hold) see each other's writes.
    let tmp = tempfile::tempdir().unwrap();
    let a = FileStore::new(tmp.path()).unwrap();
    let b = FileStore::new(tmp.path()).unwrap();
    a.set(b"x/y", b"from a", deadline(5)).unwrap();
    assert_eq!(b.get(b"x/y", deadline(5)).unwrap(), b"from a");
    assert!(b.delete(b"x/y", deadline(5)).unwrap());
    assert_eq!(a.try_get(b"x/y", deadline(5)).unwrap(), None);
}

/// A directory every user may write to (without the sticky bit), or one owned by another
/// user, is refused naming it; both used to be accepted.
#[test]
fn a_directory_others_could_tamper_with_is_refused_naming_it() {
    let tmp = tempfile::tempdir().unwrap();
    let open = tmp.path().join("world-writable");
    std::fs::create_dir(&open).unwrap();
    std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o777)).unwrap();
    let e = FileStore::new(&open).unwrap_err();
    assert!(matches!(e, Error::Config { .. }), "{e}");
    assert!(e.to_string().contains(&open.display().to_string()), "{e}");
    assert!(e.to_string().contains("sticky"), "{e}");
    // With the sticky bit (as /tmp has), others cannot remove our files: accepted.
    std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o1777)).unwrap();
    FileStore::new(&open).unwrap();

    // A directory of another user: as root, make one; otherwise "/" is one (owned by root).
    let theirs = if is_root() {
        let d = tmp.path().join("theirs");
        std::fs::create_dir(&d).unwrap();
        let status = std::process::Command::new("chown").arg("65534").arg(&d).status().unwrap();
        assert!(status.success());
        d
    } else {
        std::path::PathBuf::from("/")
    };
    let e = FileStore::new(&theirs).unwrap_err();
    assert!(e.to_string().contains("owned by user"), "{e}");
    assert!(e.to_string().contains(&theirs.display().to_string()), "{e}");
}

fn is_root() -> bool {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata("/proc/self").unwrap().uid() == 0
}
