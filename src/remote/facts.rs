//! What S3 says about an object, reduced to what a comparison (verify, upload's read-back, the
//! coming download) needs: size, ETag and what it is, the object checksum, the part layout and
//! each part's checksum where the server lists them.
//!
//! Where the truth comes from, in order: GetObjectAttributes (every part's size and checksum,
//! paged); where the server lacks it (Garage) or lists no per-part checksums, the part sizes from
//! HEAD `?partNumber=N` and the object checksum and ETag from HEAD.

use std::ops::Range;

use futures::{StreamExt as _, TryStreamExt as _, stream};
use serde::Serialize;

use crate::error::Error;
use crate::remote::ranged::Pinned;
use crate::s3::{HeadInfo, ObjectAttributes, ObjectRead, RemoteChecksum};
use crate::vocab::ETag;
use crate::vocab::EtagKind;
use crate::vocab::ObjectUrl;

/// HEAD `?partNumber` requests in flight.
const HEADS_IN_FLIGHT: usize = 16;

/// Where the remote truth came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Method {
    /// GetObjectAttributes with per-part checksums.
    ObjectAttributes,
    /// The part layout from HEAD `?partNumber`, the object checksum and ETag from HEAD.
    HeadLayout,
    /// The bytes themselves, by ranged GETs.
    Download,
}

impl std::fmt::Display for Method {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Method::ObjectAttributes => "GetObjectAttributes",
            Method::HeadLayout => "HEAD",
            Method::Download => "download",
        })
    }
}

/// What S3 says about an object.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RemoteFacts {
    /// Size in bytes.
    pub size: u64,
    /// The ETag.
    pub etag: Option<ETag>,
    /// What the ETag is: an MD5 unless SSE-KMS or SSE-C.
    pub etag_kind: EtagKind,
    /// Version id, on versioned buckets.
    pub version_id: Option<String>,
    /// The object checksum.
    pub checksum: Option<RemoteChecksum>,
    /// Part sizes in order (one entry for a single-part object).
    pub layout: Vec<u64>,
    /// Whether the object was uploaded in parts (its ETag and composite carry `-N`).
    pub multipart: bool,
    /// Each part's checksum, when GetObjectAttributes lists them (else empty).
    pub part_checksums: Vec<Option<String>>,
    /// Why something the server reported was set aside as unusable (a checksum of the wrong
    /// length for its algorithm, a part layout that disagrees with the ETag): the server's
    /// answer, not a difference in the data. What is left is what can still be proven.
    pub set_aside: Option<String>,
}

impl RemoteFacts {
    /// The byte range of each part.
    pub fn ranges(&self) -> Vec<Range<u64>> {
        let mut at = 0;
        self.layout
            .iter()
            .map(|len| {
                let r = at..at + len;
                at += len;
                r
            })
            .collect()
    }

    /// What one HEAD says: everything but the part layout and the parts' checksums (the layout is
    /// left empty; see [`RemoteFacts::multipart`] for whether it has parts).
    pub fn from_head(head: &HeadInfo) -> RemoteFacts {
        RemoteFacts {
            size: head.size,
            etag: head.etag.clone(),
            etag_kind: EtagKind::of(head.sse.as_deref(), head.sse_c),
            version_id: head.version_id.clone(),
            checksum: head.checksum.clone(),
            multipart: head.etag.as_ref().is_some_and(|e| e.parts().is_some())
                || head
                    .checksum
                    .as_ref()
                    .is_some_and(|c| c.value.contains('-')),
            ..RemoteFacts::default()
        }
    }

    /// The number of parts the ETag or checksum names (`-N`), for a multipart object.
    pub fn parts_named(&self) -> Option<u32> {
        self.etag.as_ref().and_then(ETag::parts).or_else(|| {
            let c = self.checksum.as_ref()?;
            c.value.rsplit_once('-').and_then(|(_, n)| n.parse().ok())
        })
    }

    /// The object as it was when these facts were read, for pinning reads to it.
    pub fn pinned(&self) -> Pinned {
        Pinned {
            etag: self.etag.clone(),
            version_id: self.version_id.clone(),
        }
    }
}

/// The facts, and how they were learned.
#[derive(Debug, Clone)]
pub(crate) struct Learned {
    /// What S3 says.
    pub facts: RemoteFacts,
    /// Where the truth came from.
    pub method: Method,
    /// Why that method (for the report).
    pub why: String,
    /// The HEAD reply these facts started from (storage class, content type, ... for reports).
    pub head: HeadInfo,
}

/// Why `c` cannot be a checksum of its algorithm (the decoded value's length is wrong, or it is
/// not base64), or `None` when it can be.
pub(crate) fn malformed(c: &RemoteChecksum) -> Option<String> {
    use base64::Engine as _;
    let value = c.value.split_once('-').map_or(c.value.as_str(), |(v, _)| v);
    let want = c.algorithm.digest_len();
    match base64::engine::general_purpose::STANDARD.decode(value) {
        Ok(d) if d.len() == want => None,
        Ok(d) => Some(format!(
            "the server reports a {} checksum of {} bytes, but a {} is {want} bytes: that is the \
             server's answer, not a difference in the data, and it is set aside",
            c.algorithm,
            d.len(),
            c.algorithm
        )),
        Err(_) => Some(format!(
            "the server reports a {} checksum that is not base64 ({}): set aside",
            c.algorithm, c.value
        )),
    }
}

/// Sets aside a reported checksum that cannot be one of its algorithm (see [`malformed`]),
/// with the parts' checksums of the same algorithm.
fn set_aside_malformed(facts: &mut RemoteFacts) {
    if let Some(why) = facts.checksum.as_ref().and_then(malformed) {
        tracing::warn!("{why}");
        facts.checksum = None;
        facts.part_checksums.clear();
        facts.set_aside = Some(why);
    }
}

/// Whether a part layout learned from HEAD `?partNumber` fits the object: as many parts as its
/// ETag or checksum names, adding up to its size. A server that ignores `?partNumber` (s3s-fs)
/// answers the whole object for part 1: the layout then cannot be known from it.
fn layout_fits(facts: &RemoteFacts, layout: &[u64]) -> Result<(), String> {
    let total: u64 = layout.iter().sum();
    let named = facts.parts_named();
    if total == facts.size && named.is_none_or(|n| n as usize == layout.len()) {
        return Ok(());
    }
    Err(format!(
        "the server's part layout is inconsistent (HEAD ?partNumber gives {} part{} of {total} \
         bytes in all; the object is {} bytes{}): it does not answer ?partNumber, so its \
         checksum and ETag cannot be recomputed locally and only the bytes can be compared",
        layout.len(),
        if layout.len() == 1 { "" } else { "s" },
        facts.size,
        named.map(|n| format!(" in {n} parts")).unwrap_or_default()
    ))
}

/// Learns what S3 says about `obj`: HEAD (size, checksum, ETag, encryption), then
/// GetObjectAttributes where the server has it, then the part layout from HEAD `?partNumber`
/// when nothing else gives it (or `known_layout`, when the caller knows it: right after an upload).
pub(crate) async fn remote_facts<C: ObjectRead>(
    s3: &C,
    obj: &ObjectUrl,
    known_layout: Option<&[u64]>,
) -> Result<Learned, Error> {
    let mut learned = learn(s3, obj, known_layout).await?;
    // What was set aside is part of why: the report says it wherever the truth came from.
    if let Some(aside) = &learned.facts.set_aside
        && !learned.why.contains(aside.as_str())
    {
        learned.why = format!("{}; {aside}", learned.why);
    }
    Ok(learned)
}

async fn learn<C: ObjectRead>(
    s3: &C,
    obj: &ObjectUrl,
    known_layout: Option<&[u64]>,
) -> Result<Learned, Error> {
    let head = s3
        .head_object(obj, None)
        .await
        .map_err(Error::s3("HeadObject", None, None))?;
    let mut facts = RemoteFacts::from_head(&head);
    set_aside_malformed(&mut facts);
    // Called once, on whichever way out is taken.
    let learned = move |facts, method, why: &str| Learned {
        facts,
        method,
        why: why.into(),
        head,
    };
    if !facts.multipart && facts.checksum.is_some() {
        // A single-part object with its checksum: GetObjectAttributes would add nothing.
        facts.layout = vec![facts.size];
        let why = "a single-part object: its checksum and ETag cover it whole";
        return Ok(learned(facts, Method::HeadLayout, why));
    }
    let attrs =
        s3.object_attributes(obj)
            .await
            .map_err(Error::s3("GetObjectAttributes", None, None))?;
    if let Some(a) = &attrs
        && add_attributes(&mut facts, a)
    {
        let why = "GetObjectAttributes lists every part's size and checksum";
        return Ok(learned(facts, Method::ObjectAttributes, why));
    }
    if !facts.multipart {
        facts.layout = vec![facts.size];
        let why = if attrs.is_some() {
            "a single-part object: its checksum and ETag cover it whole"
        } else {
            "a single-part object (the server does not implement GetObjectAttributes)"
        };
        return Ok(learned(facts, Method::HeadLayout, why));
    }
    let layout = match known_layout {
        Some(l) => l.to_vec(),
        None => part_layout(s3, obj).await?,
    };
    if let Err(why) = layout_fits(&facts, &layout) {
        tracing::warn!("{obj}: {why}");
        set_aside_layout(&mut facts, why.clone());
        return Ok(learned(facts, Method::HeadLayout, &why));
    }
    facts.layout = layout;
    let why_no_attrs = match (why_no_attrs(attrs.as_ref()), &facts.set_aside) {
        ("", Some(set_aside)) => set_aside.clone(),
        ("", None) => "GetObjectAttributes gives no part layout for this object".into(),
        (why, _) => why.to_owned(),
    };
    let why =
        format!("{why_no_attrs}: part sizes from HEAD ?partNumber, checksum and ETag from HEAD");
    Ok(learned(facts, Method::HeadLayout, &why))
}

/// Why GetObjectAttributes gave no part layout, or "" when it may have.
fn why_no_attrs(attrs: Option<&ObjectAttributes>) -> &'static str {
    match attrs {
        None => "the server does not implement GetObjectAttributes",
        Some(a) if a.parts.is_empty() && a.parts_count.is_some_and(|n| n > 0) => {
            "GetObjectAttributes lists no per-part checksums for this object"
        }
        Some(_) => "",
    }
}

/// Adds what GetObjectAttributes says to `facts` (the checksum HEAD lacked, whether it has
/// parts); true when it listed every part's size and checksum, the layout then taken from it.
fn add_attributes(facts: &mut RemoteFacts, a: &ObjectAttributes) -> bool {
    if facts.checksum.is_none() && facts.set_aside.is_none() {
        facts.checksum = a.checksum.clone();
        set_aside_malformed(facts);
    }
    if a.parts_count.is_some_and(|n| n > 0) {
        facts.multipart = true;
    }
    let complete = !a.parts.is_empty()
        && a.parts_count == Some(a.parts.len() as u32)
        && a.parts
            .iter()
            .enumerate()
            .all(|(i, p)| p.number as usize == i + 1);
    if !complete || facts.set_aside.is_some() {
        return false;
    }
    facts.layout = a.parts.iter().map(|p| p.size).collect();
    facts.part_checksums = a.parts.iter().map(|p| p.checksum.clone()).collect();
    true
}

/// A part layout that does not fit the object (`why`): nothing computed from a layout can be
/// compared, only the bytes, read by ranges. The ETag stays (it pins the reads to this object)
/// but is not an MD5 to compare with.
fn set_aside_layout(facts: &mut RemoteFacts, why: String) {
    facts.layout = vec![facts.size];
    facts.multipart = false;
    facts.checksum = None;
    facts.part_checksums.clear();
    if facts.etag_kind == EtagKind::Md5 {
        // Not an MD5 under SSE-KMS or SSE-C whatever the layout: that stays said.
        facts.etag_kind = EtagKind::Unpredictable;
    }
    facts.set_aside = Some(why);
}

/// The part sizes of a multipart object, from HEAD `?partNumber=N` (in parallel).
pub(crate) async fn part_layout<C: ObjectRead>(s3: &C, obj: &ObjectUrl) -> Result<Vec<u64>, Error> {
    let first: HeadInfo = s3.head_object(obj, Some(1)).await.map_err(Error::s3(
        "HeadObject ?partNumber",
        None,
        None,
    ))?;
    let count = first.parts_count.unwrap_or(1).max(1);
    let mut sizes = vec![first.size];
    let rest: Vec<u64> = stream::iter(2..=count)
        .map(|n| async move {
            s3.head_object(obj, Some(n))
                .await
                .map(|h| h.size)
                .map_err(Error::s3("HeadObject ?partNumber", None, None))
        })
        .buffered(HEADS_IN_FLIGHT)
        .try_collect()
        .await?;
    sizes.extend(rest);
    Ok(sizes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vocab::ChecksumAlgorithm;

    fn sum(algorithm: ChecksumAlgorithm, value: &str) -> RemoteChecksum {
        RemoteChecksum {
            algorithm,
            kind: None,
            value: value.into(),
        }
    }

    #[test]
    fn a_checksum_of_the_wrong_length_is_the_server_s_answer() {
        // moto stores a SHA-256 (32 bytes) under SHA512.
        let sha256 = "SKKmw0+TXPL5trFCH0RJKA0kmcLjwHHzqb5kBeETDx8=";
        let why = malformed(&sum(ChecksumAlgorithm::Sha512, sha256)).unwrap();
        assert!(
            why.contains("32 bytes") && why.contains("64 bytes"),
            "{why}"
        );
        assert_eq!(malformed(&sum(ChecksumAlgorithm::Sha256, sha256)), None);
        // A composite's `-N` is not part of the digest.
        let composite = format!("{sha256}-3");
        assert_eq!(malformed(&sum(ChecksumAlgorithm::Sha256, &composite)), None);
        assert_eq!(malformed(&sum(ChecksumAlgorithm::Crc32c, "v32Lsg==")), None);
        assert!(malformed(&sum(ChecksumAlgorithm::Crc32, "not base64!")).is_some());
    }

    #[test]
    fn a_layout_that_disagrees_with_the_etag_does_not_fit() {
        let facts = RemoteFacts {
            size: 11,
            etag: Some(ETag::new("\"0123456789abcdef0123456789abcdef-3\"")),
            multipart: true,
            ..RemoteFacts::default()
        };
        assert!(layout_fits(&facts, &[5, 5, 1]).is_ok());
        // s3s-fs answers HEAD ?partNumber=1 with the whole object.
        let why = layout_fits(&facts, &[11]).unwrap_err();
        assert!(
            why.contains("1 part of 11 bytes") && why.contains("in 3 parts"),
            "{why}"
        );
        assert!(
            layout_fits(&facts, &[5, 5, 2]).is_err(),
            "sizes that do not add up"
        );
    }
}
