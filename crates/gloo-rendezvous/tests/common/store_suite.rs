//! The store conformance suite: every store passes the same tests. Included by `conformance.rs`
//! (the stores of this crate) and `torch_store.rs` (a real PyTorch `TCPStore` server).
//!
//! Each store is a [`Fixture`] that hands out independent clients of one shared store (for the
//! in-process store, clones of one `Arc`; for the network stores, separate connections), and
//! the `conformance!` macro instantiates every test of [`suite`] for it.

use std::time::Duration;

use gloo_rendezvous::{CompareSet, Error, MAX_VALUE_LEN, Store};
use gloo_testing::deadline;

/// One store under test, handing out clients.
pub(crate) trait Fixture: Send + Sync {
    fn client(&self) -> Box<dyn Store>;
    /// Whether `add` refuses to overflow `i64` (PyTorch's store wraps around instead).
    fn refuses_overflow(&self) -> bool {
        true
    }
}

/// The tests, each over any fixture.
pub(crate) mod suite {
    use super::*;

    pub(crate) fn set_get_binary_empty_and_slash_keys(fx: &dyn Fixture) {
        let s = fx.client();
        let d = deadline(10);
        let all_bytes: Vec<u8> = (0..=255u8).collect();
        s.set(b"a/b/c", b"slash", d).unwrap();
        s.set(b"empty", b"", d).unwrap();
        s.set(&all_bytes, &all_bytes, d).unwrap();
        s.set(b"", b"empty key", d).unwrap();
        assert_eq!(s.get(b"a/b/c", d).unwrap(), b"slash");
        assert_eq!(s.get(b"empty", d).unwrap(), b"");
        assert_eq!(s.get(&all_bytes, d).unwrap(), all_bytes);
        assert_eq!(s.get(b"", d).unwrap(), b"empty key");
        s.set(b"a/b/c", b"replaced", d).unwrap();
        assert_eq!(fx.client().get(b"a/b/c", d).unwrap(), b"replaced");
        assert_eq!(s.try_get(b"empty", d).unwrap(), Some(Vec::new()));
        assert_eq!(s.try_get(b"never", d).unwrap(), None);
    }

    pub(crate) fn one_mib_value(fx: &dyn Fixture) {
        let s = fx.client();
        let d = deadline(20);
        let big: Vec<u8> =
            (0..1 << 20).map(|i: u32| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect();
        s.set(b"big", &big, d).unwrap();
        assert_eq!(fx.client().get(b"big", d).unwrap(), big);
    }

    pub(crate) fn oversized_value_is_refused(fx: &dyn Fixture) {
        let s = fx.client();
        let too_big = vec![7u8; MAX_VALUE_LEN + 1];
        let err = s.set(b"huge", &too_big, deadline(20)).unwrap_err();
        assert!(matches!(err, Error::InvalidArgument { .. }), "{err}");
        assert_eq!(s.try_get(b"huge", deadline(5)).unwrap(), None);
        // The store still works afterwards.
        s.set(b"after", b"ok", deadline(5)).unwrap();
        assert_eq!(s.get(b"after", deadline(5)).unwrap(), b"ok");
    }

    pub(crate) fn get_waits_for_a_later_set(fx: &dyn Fixture) {
        let reader = fx.client();
        let writer = fx.client();
        let t = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(100));
            writer.set(b"later", b"value", deadline(10)).unwrap();
        });
        assert_eq!(reader.get(b"later", deadline(10)).unwrap(), b"value");
        t.join().unwrap();
    }

    pub(crate) fn get_times_out_naming_the_key(fx: &dyn Fixture) {
        let s = fx.client();
        let d = std::time::Instant::now() + Duration::from_millis(300);
        let err = s.get(b"missing/key", d).unwrap_err();
        match &err {
            Error::Timeout { keys, .. } => assert_eq!(keys, &vec![b"missing/key".to_vec()]),
            other => panic!("expected a timeout, got {other}"),
        }
        assert!(err.to_string().contains("missing/key"), "{err}");
        // The client is still usable after a timed-out wait.
        s.set(b"after-timeout", b"x", deadline(5)).unwrap();
        assert_eq!(s.get(b"after-timeout", deadline(5)).unwrap(), b"x");
    }

    pub(crate) fn wait_lists_only_the_missing_keys(fx: &dyn Fixture) {
        let s = fx.client();
        s.set(b"a", b"1", deadline(5)).unwrap();
        let d = std::time::Instant::now() + Duration::from_millis(300);
        let err = s.wait(&[b"a", b"b", b"c"], d).unwrap_err();
        let mut missing = err.missing_keys().expect("a timeout").to_vec();
        missing.sort();
        assert_eq!(missing, vec![b"b".to_vec(), b"c".to_vec()]);
        s.multi_set(&[(b"b", b"2"), (b"c", b"3")], deadline(5)).unwrap();
        s.wait(&[b"a", b"b", b"c"], deadline(5)).unwrap();
    }

    pub(crate) fn multi_get_and_multi_set(fx: &dyn Fixture) {
        let s = fx.client();
        let keys: Vec<Vec<u8>> = (0..200).map(|i| format!("m/{i}").into_bytes()).collect();
        let values: Vec<Vec<u8>> = (0..200).map(|i| vec![i as u8; i]).collect();
        let pairs: Vec<(&[u8], &[u8])> =
            keys.iter().zip(&values).map(|(k, v)| (k.as_slice(), v.as_slice())).collect();
        s.multi_set(&pairs, deadline(10)).unwrap();
        let refs: Vec<&[u8]> = keys.iter().map(Vec::as_slice).collect();
        assert_eq!(fx.client().multi_get(&refs, deadline(10)).unwrap(), values);
        // multi_get waits for a key set later.
        let writer = fx.client();
        let t = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(50));
            writer.set(b"m/late", b"late", deadline(10)).unwrap();
        });
        let got = s.multi_get(&[b"m/0", b"m/late"], deadline(10)).unwrap();
        assert_eq!(got, vec![Vec::new(), b"late".to_vec()]);
        t.join().unwrap();
    }

    pub(crate) fn add_is_a_counter(fx: &dyn Fixture) {
        let s = fx.client();
        let d = deadline(5);
        assert_eq!(s.add(b"counter", 5, d).unwrap(), 5);
        assert_eq!(s.add(b"counter", -7, d).unwrap(), -2);
        assert_eq!(s.add(b"counter", 0, d).unwrap(), -2);
        assert_eq!(s.get(b"counter", d).unwrap(), b"-2");
        s.set(b"not-a-number", b"abc", d).unwrap();
        let err = s.add(b"not-a-number", 1, d).unwrap_err();
        assert!(matches!(err, Error::InvalidArgument { .. }), "{err}");
        assert!(err.to_string().contains("not-a-number"), "{err}");
        if !fx.refuses_overflow() {
            return;
        }
        s.set(b"max", i64::MAX.to_string().as_bytes(), d).unwrap();
        let err = s.add(b"max", 1, d).unwrap_err();
        assert!(matches!(err, Error::InvalidArgument { .. }), "{err}");
        assert_eq!(s.get(b"max", d).unwrap(), i64::MAX.to_string().as_bytes());
    }

    pub(crate) fn concurrent_adds_from_many_clients(fx: &dyn Fixture) {
        let clients: Vec<Box<dyn Store>> = (0..8).map(|_| fx.client()).collect();
        std::thread::scope(|sc| {
            for c in &clients {
                sc.spawn(move || {
                    for _ in 0..25 {
                        c.add(b"shared-counter", 1, deadline(30)).unwrap();
                    }
                });
            }
        });
        assert_eq!(fx.client().add(b"shared-counter", 0, deadline(5)).unwrap(), 200);
    }

    pub(crate) fn compare_set_semantics(fx: &dyn Fixture) {
        let s = fx.client();
        let d = deadline(5);
        assert_eq!(
            s.compare_set(b"cas", Some(b"x"), b"y", d).unwrap(),
            CompareSet::Mismatch { current: None }
        );
        assert_eq!(s.try_get(b"cas", d).unwrap(), None);
        assert_eq!(s.compare_set(b"cas", None, b"first", d).unwrap(), CompareSet::Swapped);
        assert_eq!(
            s.compare_set(b"cas", None, b"second", d).unwrap(),
            CompareSet::Mismatch { current: Some(b"first".to_vec()) }
        );
        assert_eq!(
            s.compare_set(b"cas", Some(b"wrong"), b"second", d).unwrap(),
            CompareSet::Mismatch { current: Some(b"first".to_vec()) }
        );
        assert_eq!(s.compare_set(b"cas", Some(b"first"), b"", d).unwrap(), CompareSet::Swapped);
        assert_eq!(s.get(b"cas", d).unwrap(), b"");
        assert_eq!(s.compare_set(b"cas", Some(b""), b"third", d).unwrap(), CompareSet::Swapped);
        assert_eq!(s.get(b"cas", d).unwrap(), b"third");
    }

    pub(crate) fn compare_set_race_has_one_winner(fx: &dyn Fixture) {
        let clients: Vec<Box<dyn Store>> = (0..8).map(|_| fx.client()).collect();
        let wins: usize = std::thread::scope(|sc| {
            let handles: Vec<_> = clients
                .iter()
                .enumerate()
                .map(|(i, c)| {
                    sc.spawn(move || {
                        c.compare_set(b"claim", None, format!("{i}").as_bytes(), deadline(30))
                            .unwrap()
                    })
                })
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().unwrap())
                .filter(|o| *o == CompareSet::Swapped)
                .count()
        });
        assert_eq!(wins, 1);
    }

    pub(crate) fn append_concatenates(fx: &dyn Fixture) {
        let s = fx.client();
        let d = deadline(5);
        s.append(b"log", b"ab", d).unwrap();
        s.append(b"log", b"", d).unwrap();
        s.append(b"log", b"cd", d).unwrap();
        assert_eq!(s.get(b"log", d).unwrap(), b"abcd");
        let clients: Vec<Box<dyn Store>> = (0..4).map(|_| fx.client()).collect();
        std::thread::scope(|sc| {
            for c in &clients {
                sc.spawn(move || {
                    for _ in 0..20 {
                        c.append(b"log2", b"x", deadline(30)).unwrap();
                    }
                });
            }
        });
        assert_eq!(s.get(b"log2", d).unwrap(), vec![b'x'; 80]);
    }

    pub(crate) fn delete_removes(fx: &dyn Fixture) {
        let s = fx.client();
        let d = deadline(5);
        s.set(b"gone", b"v", d).unwrap();
        assert!(s.delete(b"gone", d).unwrap());
        assert!(!s.delete(b"gone", d).unwrap());
        assert_eq!(s.try_get(b"gone", d).unwrap(), None);
        let short = std::time::Instant::now() + Duration::from_millis(100);
        assert!(s.get(b"gone", short).unwrap_err().is_timeout());
    }

    pub(crate) fn many_waiters_wake_on_one_set(fx: &dyn Fixture) {
        let waiters: Vec<Box<dyn Store>> = (0..16).map(|_| fx.client()).collect();
        let writer = fx.client();
        std::thread::scope(|sc| {
            let handles: Vec<_> =
                waiters.iter().map(|w| sc.spawn(move || w.get(b"go", deadline(30)))).collect();
            std::thread::sleep(Duration::from_millis(50));
            writer.set(b"go", b"now", deadline(5)).unwrap();
            for h in handles {
                assert_eq!(h.join().unwrap().unwrap(), b"now");
            }
        });
    }

    pub(crate) fn a_key_deleted_during_a_wait_is_waited_for_again(fx: &dyn Fixture) {
        let waiter = fx.client();
        let writer = fx.client();
        std::thread::scope(|sc| {
            let w = sc.spawn(|| waiter.multi_get(&[b"dw/a", b"dw/b", b"dw/a"], deadline(20)));
            let d = deadline(10);
            writer.set(b"dw/a", b"1", d).unwrap();
            assert!(writer.delete(b"dw/a", d).unwrap());
            writer.set(b"dw/b", b"2", d).unwrap();
            // `a` is gone again: the wait must still be waiting for it.
            let short = std::time::Instant::now() + Duration::from_millis(300);
            assert!(writer.wait(&[b"dw/a"], short).unwrap_err().is_timeout());
            writer.set(b"dw/a", b"3", d).unwrap();
            let got = w.join().unwrap().unwrap();
            assert_eq!(got, vec![b"3".to_vec(), b"2".to_vec(), b"3".to_vec()]);
        });
    }

    pub(crate) fn concurrent_calls_on_one_client(fx: &dyn Fixture) {
        // One client shared by threads: a waiting get must not block a set on the same client.
        let s = fx.client();
        std::thread::scope(|sc| {
            let waiter = sc.spawn(|| s.get(b"same-client", deadline(10)));
            std::thread::sleep(Duration::from_millis(50));
            s.set(b"same-client", b"v", deadline(5)).unwrap();
            assert_eq!(waiter.join().unwrap().unwrap(), b"v");
        });
    }
}

macro_rules! conformance {
    ($name:ident, $fixture:expr) => {
        mod $name {
            use super::*;
            fn fx() -> Box<dyn Fixture> {
                gloo_testing::init_tracing();
                Box::new($fixture)
            }
            conformance!(@tests
                set_get_binary_empty_and_slash_keys, one_mib_value, oversized_value_is_refused,
                get_waits_for_a_later_set, get_times_out_naming_the_key,
                wait_lists_only_the_missing_keys, multi_get_and_multi_set, add_is_a_counter,
                concurrent_adds_from_many_clients, compare_set_semantics,
                compare_set_race_has_one_winner, append_concatenates, delete_removes,
                many_waiters_wake_on_one_set, concurrent_calls_on_one_client,
                a_key_deleted_during_a_wait_is_waited_for_again);
        }
    };
    (@tests $($test:ident),*) => {
        $(
            #[test]
            fn $test() {
                suite::$test(&*fx());
            }
        )*
    };
}
