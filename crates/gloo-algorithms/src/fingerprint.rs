//! What a collective call says about itself in every message's fingerprint.
//!
//! Layout of the 32 bytes (all integers little-endian):
//!
//! | bytes  | field |
//! |--------|-------|
//! | 0..8   | epoch: the group's call counter for the tag (point-to-point calls set bit 63) |
//! | 8      | collective id; bit 7 set marks a relayed alarm |
//! | 9      | element type id |
//! | 10     | op id (0: none) |
//! | 11     | algorithm id |
//! | 12..16 | root (`u32::MAX`: none) |
//! | 16..24 | element count |
//! | 24..28 | tag |
//! | 28..32 | parameter: ring segment size, bcube base, or a hash of a counts list |

use std::fmt;

use gloo_transport::Fingerprint;

use crate::element::DType;
use crate::reduce_op::op_name;
use crate::select::{Algorithm, Collective};

/// Bit 7 of the collective byte: this fingerprint was relayed by a rank that saw a mismatch.
const RELAY: u8 = 0x80;

/// A decoded fingerprint: what one rank was doing when it sent or expected a message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CallInfo {
    /// The per-tag call number.
    pub epoch: u64,
    /// The collective (`None` if the id is unknown, e.g. the message was not ours).
    pub collective: Option<Collective>,
    /// Whether this was relayed by a rank that had itself seen a mismatch.
    pub relayed: bool,
    /// The element type.
    pub dtype: Option<DType>,
    /// The op id (see [`ReduceOp`](crate::ReduceOp)); 0 for collectives that do not reduce.
    pub op: u8,
    /// The algorithm.
    pub algorithm: Option<Algorithm>,
    /// The root, for rooted collectives.
    pub root: Option<u32>,
    /// The element count (per rank for allgather-like collectives).
    pub count: u64,
    /// The tag.
    pub tag: u32,
    /// Segment size, bcube base, or a hash of a counts list.
    pub param: u32,
}

impl CallInfo {
    /// A description with epoch 0.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        collective: Collective,
        dtype: Option<DType>,
        op: u8,
        algorithm: Algorithm,
        root: Option<u32>,
        count: u64,
        tag: u32,
        param: u32,
    ) -> CallInfo {
        CallInfo {
            epoch: 0,
            collective: Some(collective),
            relayed: false,
            dtype,
            op,
            algorithm: Some(algorithm),
            root,
            count,
            tag,
            param,
        }
    }

    /// Encode as a fingerprint.
    pub fn encode(&self) -> Fingerprint {
        let mut b = [0u8; Fingerprint::LEN];
        b[0..8].copy_from_slice(&self.epoch.to_le_bytes());
        b[8] = self.collective.map_or(0, |c| c as u8) | if self.relayed { RELAY } else { 0 };
        b[9] = self.dtype.map_or(0, |d| d as u8);
        b[10] = self.op;
        b[11] = self.algorithm.map_or(0, |a| a as u8);
        b[12..16].copy_from_slice(&self.root.unwrap_or(u32::MAX).to_le_bytes());
        b[16..24].copy_from_slice(&self.count.to_le_bytes());
        b[24..28].copy_from_slice(&self.tag.to_le_bytes());
        b[28..32].copy_from_slice(&self.param.to_le_bytes());
        Fingerprint(b)
    }

    /// Decode a fingerprint (any 32 bytes decode; unknown ids become `None`).
    pub fn decode(fp: &Fingerprint) -> CallInfo {
        let b = &fp.0;
        let u32_at = |i: usize| u32::from_le_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]]);
        let mut count = [0u8; 8];
        count.copy_from_slice(&b[16..24]);
        let root = u32_at(12);
        CallInfo {
            epoch: fp.epoch(),
            collective: Collective::from_id(b[8] & !RELAY),
            relayed: b[8] & RELAY != 0,
            dtype: DType::from_id(b[9]),
            op: b[10],
            algorithm: Algorithm::from_id(b[11]),
            root: (root != u32::MAX).then_some(root),
            count: u64::from_le_bytes(count),
            tag: u32_at(24),
            param: u32_at(28),
        }
    }

    /// The fields in which `self` and `other` differ, each as "field: ours X, theirs Y".
    pub fn differences(&self, theirs: &CallInfo) -> Vec<String> {
        let mut out = Vec::new();
        let mut diff = |field: &str, a: String, b: String| {
            if a != b {
                out.push(format!("{field}: ours {a}, theirs {b}"));
            }
        };
        let name = |c: Option<Collective>| c.map_or("unknown".to_string(), |c| c.to_string());
        diff("collective", name(self.collective), name(theirs.collective));
        let dt = |d: Option<DType>| d.map_or("none".to_string(), |d| d.to_string());
        diff("dtype", dt(self.dtype), dt(theirs.dtype));
        diff("op", op_name(self.op).to_string(), op_name(theirs.op).to_string());
        let al = |a: Option<Algorithm>| a.map_or("unknown".to_string(), |a| a.to_string());
        diff("algorithm", al(self.algorithm), al(theirs.algorithm));
        let root = |r: Option<u32>| r.map_or("none".to_string(), |r| r.to_string());
        diff("root", root(self.root), root(theirs.root));
        diff("count", self.count.to_string(), theirs.count.to_string());
        // Tags from 2^31 up are subgroups' (derived from how the subgroup was made): two of
        // them differing most often means the ranks disagree about a subgroup's members.
        let tag = if self.tag.min(theirs.tag) >= crate::subgroup::DERIVED {
            "tag (of a subgroup: do the ranks agree on its members?)"
        } else {
            "tag"
        };
        diff(tag, self.tag.to_string(), theirs.tag.to_string());
        diff(
            "parameter (segment size, bcube base or counts)",
            self.param.to_string(),
            theirs.param.to_string(),
        );
        diff("call number on the tag", self.epoch.to_string(), theirs.epoch.to_string());
        out
    }
}

impl fmt::Display for CallInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.collective {
            Some(c) => write!(f, "{c}")?,
            None => f.write_str("unknown call")?,
        }
        write!(f, " #{} on tag {}", self.epoch, self.tag)?;
        if let Some(d) = self.dtype {
            write!(f, ", {d}")?;
        }
        write!(f, " × {}", self.count)?;
        if self.op != 0 {
            write!(f, ", op {}", op_name(self.op))?;
        }
        if let Some(r) = self.root {
            write!(f, ", root {r}")?;
        }
        if let Some(a) = self.algorithm {
            write!(f, ", {a}")?;
        }
        if self.relayed {
            f.write_str(" (relayed by a rank that saw a mismatch)")?;
        }
        Ok(())
    }
}

/// FNV-1a over a list of counts, for the fingerprint's parameter field.
pub(crate) fn hash_counts(counts: &[usize]) -> u32 {
    let mut h: u32 = 0x811c_9dc5;
    for c in counts {
        for b in (*c as u64).to_le_bytes() {
            h ^= u32::from(b);
            h = h.wrapping_mul(0x0100_0193);
        }
    }
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn call_info_round_trips() {
        let mut c = CallInfo::new(
            Collective::Gatherv,
            Some(DType::BF16),
            0,
            Algorithm::BinomialTree,
            Some(3),
            77,
            9,
            hash_counts(&[1, 2, 3]),
        );
        c.epoch = 41;
        let fp = c.encode();
        assert_eq!(fp.epoch(), 41);
        assert_eq!(CallInfo::decode(&fp), c);
        c.relayed = true;
        c.root = None;
        assert_eq!(CallInfo::decode(&c.encode()), c);
    }

    #[test]
    fn differences_name_the_fields() {
        let a = CallInfo::new(
            Collective::Allreduce,
            Some(DType::F32),
            1,
            Algorithm::Ring,
            None,
            10,
            0,
            0,
        );
        let mut b = a;
        b.count = 12;
        b.op = 3;
        let d = a.differences(&b);
        assert_eq!(
            d,
            vec!["op: ours sum, theirs min".to_string(), "count: ours 10, theirs 12".to_string()]
        );
    }

    #[test]
    fn differing_subgroup_tags_point_at_the_members() {
        let a = CallInfo::new(
            Collective::Barrier,
            None,
            0,
            Algorithm::Dissemination,
            None,
            0,
            1 << 31,
            0,
        );
        let b = CallInfo { tag: (1 << 31) + 5, ..a };
        assert_eq!(
            a.differences(&b),
            vec![format!(
                "tag (of a subgroup: do the ranks agree on its members?): ours {}, theirs {}",
                a.tag, b.tag
            )]
        );
        let c = CallInfo { tag: 3, ..a };
        assert!(a.differences(&c)[0].starts_with("tag: "), "{:?}", a.differences(&c));
    }

    #[test]
    fn counts_hash_depends_on_order() {
        assert_ne!(hash_counts(&[1, 2]), hash_counts(&[2, 1]));
        assert_ne!(hash_counts(&[]), hash_counts(&[0]));
    }
}
