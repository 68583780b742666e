//! An entity tag: S3 sends and expects it in double quotes; tally holds it without.

use serde::{Deserialize, Deserializer, Serialize};

/// An object's or a part's ETag, held unquoted (`9b2cf5...-12`). [`ETag::quoted`] gives the form
/// S3 expects back (CompleteMultipartUpload, `If-Match`). Built from whatever a server or an older
/// manifest gave, quoted or not, so comparing two ETags never depends on who quoted them.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
#[serde(transparent)]
pub struct ETag(String);

impl ETag {
    /// The ETag in `raw`, with surrounding quotes (and a weak `W/` prefix) removed.
    pub fn new(raw: &str) -> ETag {
        let raw = raw.trim();
        let raw = raw.strip_prefix("W/").unwrap_or(raw);
        let raw = raw
            .strip_prefix('"')
            .and_then(|r| r.strip_suffix('"'))
            .unwrap_or(raw);
        ETag(raw.to_owned())
    }

    /// The value without quotes: an MD5 in hex (with `-N` for a multipart object) unless the object
    /// is encrypted with SSE-KMS or SSE-C.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The value in quotes, as S3 expects it back.
    pub fn quoted(&self) -> String {
        format!("\"{}\"", self.0)
    }

    /// The part count of a multipart ETag (`...-N`), if it has one.
    pub fn parts(&self) -> Option<u32> {
        self.0.rsplit_once('-').and_then(|(_, n)| n.parse().ok())
    }
}

impl std::fmt::Display for ETag {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl From<&str> for ETag {
    fn from(raw: &str) -> ETag {
        ETag::new(raw)
    }
}

impl<'de> Deserialize<'de> for ETag {
    /// Accepts the quoted form older manifests recorded as well as the bare one.
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<ETag, D::Error> {
        String::deserialize(d).map(|s| ETag::new(&s))
    }
}

/// What an object's ETag is, given its server-side encryption.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum EtagKind {
    /// The MD5 of the content (one PutObject), or of the parts' MD5s with `-N` (multipart).
    #[default]
    Md5,
    /// Under SSE-KMS (`aws:kms`, `aws:kms:dsse`): opaque, not an MD5.
    Kms,
    /// Under SSE-C: opaque, not an MD5.
    SseC,
    /// An MD5 of parts whose boundaries the server does not give (it ignores `?partNumber`):
    /// it cannot be recomputed locally, so it is not compared.
    Unpredictable,
}

impl EtagKind {
    /// The kind of ETag an object has: `sse` is `x-amz-server-side-encryption` (`AES256`,
    /// `aws:kms`, `aws:kms:dsse`), `sse_c` whether a customer key encrypts it.
    pub fn of(sse: Option<&str>, sse_c: bool) -> EtagKind {
        if sse_c {
            EtagKind::SseC
        } else if sse.is_some_and(|s| s.starts_with("aws:kms")) {
            EtagKind::Kms
        } else {
            EtagKind::Md5
        }
    }

    /// Whether the ETag can be compared with an MD5 computed locally.
    pub fn is_md5(self) -> bool {
        self == EtagKind::Md5
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quotes_are_the_etags_own_business() {
        let a = ETag::new("\"9b2cf535f27731c974343645a3985328-12\"");
        let b = ETag::new("9b2cf535f27731c974343645a3985328-12");
        assert_eq!(a, b);
        assert_eq!(a.as_str(), "9b2cf535f27731c974343645a3985328-12");
        assert_eq!(a.quoted(), "\"9b2cf535f27731c974343645a3985328-12\"");
        assert_eq!(a.parts(), Some(12));
        assert_eq!(ETag::new("W/\"abc\"").as_str(), "abc");
        assert_eq!(
            ETag::new("\"d41d8cd98f00b204e9800998ecf8427e\"").parts(),
            None
        );
        let old: ETag = serde_json::from_str("\"\\\"abc\\\"\"").unwrap();
        assert_eq!(old.as_str(), "abc", "a quoted ETag from an older manifest");
        assert_eq!(serde_json::to_string(&old).unwrap(), "\"abc\"");
    }
}
