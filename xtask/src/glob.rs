//! `*` globs for `--only`: `*` matches any run of characters (including `/`), everything else
//! matches itself.

/// Whether `name` matches `pattern`, where `*` matches any (possibly empty) run of characters.
pub fn matches(pattern: &str, name: &str) -> bool {
    let (p, n): (Vec<char>, Vec<char>) = (pattern.chars().collect(), name.chars().collect());
    let (mut pi, mut ni) = (0, 0);
    // Where the last `*` was and how much of the name it had swallowed when we backtrack.
    let mut star: Option<(usize, usize)> = None;
    while ni < n.len() {
        if pi < p.len() && p[pi] == '*' {
            star = Some((pi, ni));
            pi += 1;
        } else if pi < p.len() && p[pi] == n[ni] {
            pi += 1;
            ni += 1;
        } else if let Some((sp, sn)) = star {
            // Let the last `*` swallow one more character and retry from just after it.
            pi = sp + 1;
            ni = sn + 1;
            star = Some((sp, sn + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|&c| c == '*')
}

#[cfg(test)]
mod tests {
    use super::matches;

    #[test]
    fn literal_names_match_only_themselves() {
        assert!(matches("lint/fmt", "lint/fmt"));
        assert!(!matches("lint/fmt", "lint/fmt2"));
        assert!(!matches("lint/fmt", "lint/fm"));
        assert!(!matches("", "x"));
        assert!(matches("", ""));
    }

    #[test]
    fn stars_match_any_run() {
        assert!(matches("transport/*", "transport/loom"));
        assert!(matches("transport/*", "transport/"));
        assert!(!matches("transport/*", "rendezvous/redis"));
        assert!(matches("*loom*", "transport/loom"));
        assert!(matches("*/redis", "rendezvous/redis"));
        assert!(matches("*", "anything/at/all"));
        assert!(matches("t*t*p", "transport/tcp"));
        assert!(!matches("t*t*q", "transport/tcp"));
        assert!(matches("a*b*c", "aXbYbZc"));
        assert!(!matches("a*b", "aXbYc"));
        assert!(matches("**", ""));
    }
}
