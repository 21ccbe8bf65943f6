//! What a certificate says its holder is: one URI name, `gloo://<job>/rank/<r>` or
//! `gloo://<job>/store`.
//!
//! The job id is percent-encoded (every byte other than ASCII letters, digits and `-._~`
//! becomes `%XX`, upper-case hex), so any job id fits in a URI and each has exactly one
//! spelling; the rank is decimal without leading zeros. A name is compared as a whole
//! string, so a certificate issued with another spelling of the same job (lower-case hex,
//! `rank/007`) is refused rather than interpreted.

use std::fmt;

use gloo_transport::Rank;

/// The scheme every name starts with.
pub(crate) const SCHEME: &str = "gloo://";

/// What a certificate's holder may act as within its job.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Role {
    /// Rank `r` of the job: may connect to the other ranks as `r` and use the job's store.
    Rank(Rank),
    /// A TCP store serving the job (the standalone `gloo-store`); never a rank.
    Store,
}

/// The identity bound to a certificate: a job and a role in it.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Identity {
    job: String,
    role: Role,
}

impl Identity {
    /// Rank `rank` of job `job`.
    pub fn rank(job: &str, rank: Rank) -> Identity {
        Identity { job: job.to_string(), role: Role::Rank(rank) }
    }

    /// The store of job `job`.
    pub fn store(job: &str) -> Identity {
        Identity { job: job.to_string(), role: Role::Store }
    }

    /// The job id.
    pub fn job(&self) -> &str {
        &self.job
    }

    /// The role within the job.
    pub fn role(&self) -> Role {
        self.role
    }

    /// The rank, for a rank's identity.
    pub fn as_rank(&self) -> Option<Rank> {
        match self.role {
            Role::Rank(r) => Some(r),
            Role::Store => None,
        }
    }

    /// The URI a certificate for this identity carries as a subject alternative name.
    pub fn uri(&self) -> String {
        let job = encode_job(&self.job);
        match self.role {
            Role::Rank(r) => format!("{SCHEME}{job}/rank/{}", r.0),
            Role::Store => format!("{SCHEME}{job}/store"),
        }
    }

    /// Parse a URI name; `None` unless it is the canonical spelling of an identity (so
    /// that `parse(uri)?.uri() == uri`).
    pub fn parse(uri: &str) -> Option<Identity> {
        let rest = uri.strip_prefix(SCHEME)?;
        let (job, path) = rest.split_once('/')?;
        let job = decode_job(job)?;
        let role = if path == "store" {
            Role::Store
        } else {
            let digits = path.strip_prefix("rank/")?;
            let canonical = digits == "0" || (!digits.starts_with('0') && !digits.is_empty());
            if !canonical || !digits.bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
            Role::Rank(Rank(digits.parse().ok()?))
        };
        let id = Identity { job, role };
        // Only the one canonical spelling is accepted.
        (id.uri() == uri).then_some(id)
    }
}

impl fmt::Display for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.uri())
    }
}

fn unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~')
}

/// Percent-encode a job id for the authority part of the URI.
pub(crate) fn encode_job(job: &str) -> String {
    let mut out = String::with_capacity(job.len());
    for &b in job.as_bytes() {
        if unreserved(b) {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Decode a percent-encoded job id; `None` for an empty id, a bad escape or bytes that are
/// not UTF-8. (Canonical form is checked by the caller by encoding again.)
fn decode_job(s: &str) -> Option<String> {
    if s.is_empty() {
        return None;
    }
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = b.get(i + 1..i + 3)?;
            let hex = std::str::from_utf8(hex).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rank_and_store_uris() {
        assert_eq!(Identity::rank("job-42", Rank(3)).uri(), "gloo://job-42/rank/3");
        assert_eq!(Identity::store("job-42").uri(), "gloo://job-42/store");
        assert_eq!(Identity::rank("a b/c%", Rank(0)).uri(), "gloo://a%20b%2Fc%25/rank/0");
        assert_eq!(Identity::rank("é", Rank(1)).uri(), "gloo://%C3%A9/rank/1");
    }

    #[test]
    fn parse_round_trips_and_refuses_other_spellings() {
        for id in [
            Identity::rank("job-42", Rank(3)),
            Identity::rank("a b/c%", Rank(u32::MAX)),
            Identity::store("x"),
            Identity::rank("é~._-", Rank(0)),
        ] {
            assert_eq!(Identity::parse(&id.uri()), Some(id.clone()), "{id}");
        }
        for bad in [
            "gloo://job/rank/03",
            "gloo://job/rank/",
            "gloo://job/rank/-1",
            "gloo://job/rank/+1",
            "gloo://job/rank/4294967296",
            "gloo://job/rank/1/",
            "gloo://job/ranks/1",
            "gloo://job/store/",
            "gloo:///rank/1",
            "gloo://job",
            "gloo://a%2fb/rank/1",
            "gloo://a%41/rank/1",
            "gloo://a b/rank/1",
            "gloo://%ZZ/rank/1",
            "gloo://%C3/rank/1",
            "https://job/rank/1",
            "GLOO://job/rank/1",
        ] {
            assert_eq!(Identity::parse(bad), None, "{bad}");
        }
    }
}
