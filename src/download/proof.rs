//! What a download can be checked against, decided from what S3 says about the object
//! ([`RemoteFacts`]), and the words the report uses for it. Pure.
//!
//! - Each part on its own, as it arrives: against S3's part checksums (GetObjectAttributes), or
//!   the checksum S3 sends with a GET of exactly that part; a single-part object against its
//!   checksum, or its ETag when that is the MD5 of its bytes.
//! - The whole object once every part is in: the composite checksum from the parts' checksums,
//!   the full-object CRC combined from the parts' CRCs, the multipart ETag from the parts' MD5s
//!   (never under SSE-KMS or SSE-C), with `verify`'s own comparison ([`crate::verify::compare`]).

use serde::Serialize;

use crate::compare::{self, Check};
use crate::hash::RangeHash;
use crate::remote::facts::RemoteFacts;
use crate::s3::RemoteChecksum;
use crate::verify::{Comparison, VerifyOptions};
use crate::vocab::EtagKind;
use crate::vocab::{ChecksumAlgorithm, ChecksumType};

/// What one part is compared with when it arrives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Against {
    /// A part checksum S3 listed (GetObjectAttributes).
    PartChecksum(ChecksumAlgorithm, String),
    /// The checksum S3 sent with the GET of exactly this part.
    ReplyChecksum(ChecksumAlgorithm, String),
    /// The checksum of a single-part object (the part is the whole object).
    ObjectChecksum(ChecksumAlgorithm, String),
    /// The ETag of a single-part object that is the MD5 of its bytes (hex).
    Md5Etag(String),
}

impl Against {
    /// The value the part's bytes hash to, in the form this is compared in.
    fn local(&self, h: &RangeHash) -> Option<String> {
        match self {
            Against::Md5Etag(_) => h.md5.map(|m| crate::vocab::hex(&m)),
            _ => h.checksum.as_ref().map(crate::vocab::Digest::base64),
        }
    }

    fn expected(&self) -> &str {
        match self {
            Against::PartChecksum(_, v)
            | Against::ReplyChecksum(_, v)
            | Against::ObjectChecksum(_, v)
            | Against::Md5Etag(v) => v,
        }
    }

    /// Whether `h` matches: `Ok(())`, or the value the bytes hash to.
    pub(crate) fn check(&self, h: &RangeHash) -> Result<(), String> {
        let local = self.local(h).unwrap_or_else(|| "nothing".into());
        let ok = match self {
            Against::Md5Etag(e) => local == e.trim_matches('"'),
            _ => compare::checksum(&local, Some(self.expected())) == Check::Matched,
        };
        if ok { Ok(()) } else { Err(local) }
    }

    /// The value S3 reports.
    pub(crate) fn s3_value(&self) -> String {
        self.expected().to_owned()
    }

    /// What it is, for messages: "S3's SHA256 part checksum".
    pub(crate) fn describe(&self) -> String {
        match self {
            Against::PartChecksum(a, _) => format!("S3's {a} part checksum"),
            Against::ReplyChecksum(a, _) => format!("the {a} checksum S3 sent with it"),
            Against::ObjectChecksum(a, _) => format!("the object's {a} checksum"),
            Against::Md5Etag(_) => "the object's ETag (its MD5)".into(),
        }
    }
}

/// What to hash and what each part is checked against, for one object.
#[derive(Debug, Clone)]
pub(crate) struct Plan {
    /// The checksum every part is hashed with.
    pub alg: Option<ChecksumAlgorithm>,
    /// Whether every part's MD5 is computed (for the ETag).
    pub md5: bool,
    /// Per part, what it is checked against on arrival, when known before the GET.
    pub parts: Vec<Option<Against>>,
    /// Whether the object is multipart (a checksum S3 sends with a GET of one part is then that
    /// part's).
    pub multipart: bool,
}

/// Decides what to hash and what each part is checked against.
pub(crate) fn plan(facts: &RemoteFacts) -> Plan {
    let (alg, md5) = crate::verify::compare::local_needs(facts, &VerifyOptions::default());
    let n = facts.layout.len();
    let parts: Vec<Option<Against>> = if !facts.multipart {
        let single = match (&facts.checksum, &facts.etag) {
            (Some(c), _) if !c.value.contains('-') => {
                Some(Against::ObjectChecksum(c.algorithm, c.value.clone()))
            }
            (_, Some(e)) if facts.etag_kind.is_md5() && e.parts().is_none() && md5 => {
                Some(Against::Md5Etag(e.as_str().to_owned()))
            }
            _ => None,
        };
        vec![single; n.max(1)]
    } else {
        match (&facts.checksum, facts.part_checksums.len() == n) {
            (Some(c), true) => facts
                .part_checksums
                .iter()
                .map(|v| {
                    v.as_ref()
                        .map(|v| Against::PartChecksum(c.algorithm, v.clone()))
                })
                .collect(),
            _ => vec![None; n],
        }
    };
    Plan {
        alg,
        md5,
        parts,
        multipart: facts.multipart,
    }
}

impl Plan {
    /// What part `i` is checked against: known up front, else the checksum S3 sent with its GET
    /// when that can only be the part's own (a multipart object, a value without `-N`, not a
    /// full-object CRC, the algorithm hashed).
    pub(crate) fn against(&self, i: usize, reply: Option<&RemoteChecksum>) -> Option<Against> {
        if let Some(a) = self.parts.get(i).cloned().flatten() {
            return Some(a);
        }
        let r = reply?;
        (self.multipart
            && !r.value.contains('-')
            && r.kind != Some(ChecksumType::FullObject)
            && Some(r.algorithm) == self.alg)
            .then(|| Against::ReplyChecksum(r.algorithm, r.value.clone()))
    }
}

/// One thing a download was checked against.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub(crate) struct Proof {
    /// `part_checksums`, `reply_checksums`, `object_checksum`, `composite_checksum`,
    /// `full_object_crc`, `multipart_etag` or `md5_etag`.
    pub kind: &'static str,
    /// The algorithm, for checksums.
    pub algorithm: Option<String>,
    /// In words, as the text report prints it.
    pub text: String,
}

/// What was proven, from the parts checked alone (`alone[i]`: what part `i` was checked against,
/// if anything) and the whole-object comparison `c` (all matched: a mismatch never gets here).
pub(crate) fn proofs(facts: &RemoteFacts, alone: &[Option<Against>], c: &Comparison) -> Vec<Proof> {
    let mut out = Vec::new();
    if facts.multipart {
        out.extend(parts_alone(facts, alone));
    }
    if let (Some(cmp), Some(rc)) = (&c.checksum, &facts.checksum)
        && cmp.matches
    {
        out.push(object_checksum(facts, rc));
    }
    // A hidden layout's ETag, found by searching the part size, is said by the download.
    let searched = facts.etag_kind == EtagKind::Unpredictable;
    if c.etag.as_ref().is_some_and(|e| e.matches) && !searched {
        out.push(if facts.multipart {
            Proof {
                kind: "multipart_etag",
                algorithm: None,
                text: format!(
                    "the multipart ETag, from the {} parts' MD5s",
                    facts.layout.len()
                ),
            }
        } else {
            Proof {
                kind: "md5_etag",
                algorithm: None,
                text: "the ETag, the MD5 of the object".into(),
            }
        });
    }
    out
}

/// The parts of a multipart object checked on their own as they arrived: against S3's listed
/// part checksums, and against the checksum S3 sent with each part's GET.
fn parts_alone(facts: &RemoteFacts, alone: &[Option<Against>]) -> Vec<Proof> {
    let n = facts.layout.len();
    let count = |kind: fn(&Against) -> bool| alone.iter().flatten().filter(|a| kind(a)).count();
    let by_list = count(|a| matches!(a, Against::PartChecksum(..)));
    let by_reply = count(|a| matches!(a, Against::ReplyChecksum(..)));
    let alg = facts.checksum.as_ref().map(|c| c.algorithm.to_string());
    let of = |k: usize| {
        if k == n {
            format!("each of {n} parts")
        } else {
            format!("{k} of {n} parts")
        }
    };
    let mut out = Vec::new();
    if by_list > 0 {
        out.push(Proof {
            kind: "part_checksums",
            algorithm: alg.clone(),
            text: format!(
                "{} against S3's {} part checksums",
                of(by_list),
                alg.as_deref().unwrap_or("")
            ),
        });
    }
    if by_reply > 0 {
        out.push(Proof {
            kind: "reply_checksums",
            algorithm: alg.clone(),
            text: format!(
                "{} against the {} checksum S3 sent with it",
                of(by_reply),
                alg.as_deref().unwrap_or("")
            ),
        });
    }
    out
}

/// The object's checksum `rc`, matched: of a single-part object, a full-object CRC combined from
/// the parts', or a composite of the parts' checksums.
fn object_checksum(facts: &RemoteFacts, rc: &RemoteChecksum) -> Proof {
    let n = facts.layout.len();
    let full = rc.kind == Some(ChecksumType::FullObject)
        || (rc.kind.is_none() && rc.algorithm == ChecksumAlgorithm::Crc64nvme);
    let a = rc.algorithm;
    if !facts.multipart {
        Proof {
            kind: "object_checksum",
            algorithm: Some(a.to_string()),
            text: format!("the object's {a} checksum"),
        }
    } else if full {
        Proof {
            kind: "full_object_crc",
            algorithm: Some(a.to_string()),
            text: format!("the object's full-object {a}, combined from the {n} parts' CRCs"),
        }
    } else {
        Proof {
            kind: "composite_checksum",
            algorithm: Some(a.to_string()),
            text: format!("the object's {a} composite checksum, from the {n} parts' checksums"),
        }
    }
}

/// Why nothing could be checked, in the report's words.
pub(crate) fn nothing_because(facts: &RemoteFacts) -> String {
    if let Some(why) = &facts.set_aside {
        return why.clone();
    }
    let etag = match (facts.etag_kind, &facts.etag) {
        (EtagKind::Unpredictable, _) => "its ETag cannot be recomputed without the part layout",
        (EtagKind::Kms, _) => "its ETag is not an MD5 under SSE-KMS",
        (EtagKind::SseC, _) => "its ETag is not an MD5 under SSE-C",
        (EtagKind::Md5, None) => "S3 sent no ETag",
        (EtagKind::Md5, Some(_)) => "its ETag could not be predicted",
    };
    format!("S3 reports no checksum for this object and {etag}")
}

/// Whether the whole-object comparison found a difference.
pub(crate) fn differs(c: &Comparison) -> bool {
    c.differs()
}

/// The comparison's failing value, for the error: (what, computed, S3's).
pub(crate) fn failing(c: &Comparison, facts: &RemoteFacts) -> Option<(String, String, String)> {
    if let Some(x) = c.checksum.as_ref().filter(|x| !x.matches) {
        let a = facts
            .checksum
            .as_ref()
            .map(|c| c.algorithm.to_string())
            .unwrap_or_default();
        return Some((
            format!("S3's {a} object checksum"),
            x.local.clone(),
            x.remote.clone(),
        ));
    }
    if let Some(x) = c.etag.as_ref().filter(|x| !x.matches) {
        let what = if facts.etag_kind == EtagKind::Unpredictable {
            "the multipart ETag recomputed with every whole-MiB part size that gives its part \
             count (the server gives no part layout; an object uploaded with a part size that is \
             not whole MiB cannot be proven here either)"
        } else if facts.multipart {
            "the multipart ETag"
        } else {
            "the ETag"
        };
        return Some((what.into(), x.local.clone(), x.remote.clone()));
    }
    c.differing_parts.first().map(|d| {
        (
            format!("S3's part {} checksum", d.number),
            d.local.clone(),
            d.remote.clone(),
        )
    })
}
