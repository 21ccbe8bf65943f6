//! Checks on error chains: what a reporter that walks `source()` (anyhow's `{:#}`, a loop in
//! `main`) would print.

use std::error::Error;
use std::io;

/// The messages of `e` and of every error under it, outermost first.
pub fn chain(e: &(dyn Error + 'static)) -> Vec<String> {
    let mut out = vec![e.to_string()];
    let mut next = e.source();
    // Bounded: a chain longer than this is a cycle, which no error of ours builds.
    while let Some(s) = next {
        assert!(out.len() < 64, "an error chain of more than 64 links: {out:#?}");
        out.push(s.to_string());
        next = s.source();
    }
    out
}

/// The chain of `e` (see [`chain`]), after checking that it prints each message once: no
/// message is empty and none contains the text of an error further down the chain.
pub fn chain_printed_once(e: &(dyn Error + 'static)) -> Vec<String> {
    let c = chain(e);
    for (i, m) in c.iter().enumerate() {
        assert!(!m.is_empty(), "message {i} of the chain is empty: {c:#?}");
        for (j, later) in c.iter().enumerate().skip(i + 1) {
            assert!(
                !m.contains(later.as_str()),
                "message {i} of the chain repeats message {j}: {c:#?}"
            );
        }
    }
    c
}

/// The deepest error of the chain of `e`, when it is an `io::Error`.
pub fn deepest_io<'a>(e: &'a (dyn Error + 'static)) -> Option<&'a io::Error> {
    let mut last: &'a (dyn Error + 'static) = e;
    while let Some(s) = last.source() {
        last = s;
    }
    last.downcast_ref::<io::Error>()
}
