//! After an upload: the stored object's attributes read back and compared with the hashes the
//! upload computed (no second read of the file).

use serde::Serialize;

use crate::compare::{Check, mismatch};
use crate::error::Error;
use crate::hash::RangeHash;
use crate::remote::facts::{Method, remote_facts};
use crate::s3::S3Api;
use crate::vocab::ObjectUrl;

use super::compare::{Comparison, compare};

/// What `tally upload` confirmed by reading the stored object's attributes back after completing.
#[derive(Debug, Clone, Serialize)]
pub struct AfterUpload {
    /// Where the truth came from.
    pub method: Method,
    /// Why.
    pub why: String,
    /// The stored object's checksum equals the local one (None: S3 reported none, or none that
    /// can be derived from the parts). Never false: a difference is an error.
    pub checksum_matches: Option<bool>,
    /// The stored ETag equals the local one (None: not an MD5, not reported, or no MD5 computed).
    /// Never false: a difference is an error.
    pub etag_matches: Option<bool>,
    /// The ETag's outcome in the shared vocabulary (why it was not compared, when it was not).
    pub etag: Check,
    /// Parts whose stored checksum was compared one by one.
    pub parts_compared: u32,
    /// Why the stored checksum could not be compared, when the server keeps another algorithm
    /// than the one sent (LocalStack stores its own CRC64NVME for a checksum it ignores).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub checksum_note: Option<String>,
    /// The HEAD reply read back (storage class, content type, metadata, tags, encryption), for
    /// the upload report's object settings.
    #[serde(skip)]
    pub head: crate::s3::HeadInfo,
}

/// Reads the stored object's attributes back after an upload and compares them with the hashes
/// the upload computed. Fails with a mismatch naming what differs, and saying that the object
/// now at the key is the one the server completed (it stays there: tally does not delete it).
pub async fn after_upload<C: S3Api>(
    s3: &C,
    obj: &ObjectUrl,
    alg: crate::vocab::ChecksumAlgorithm,
    parts: &[crate::vocab::PartHash],
    upload_id: Option<&str>,
) -> Result<AfterUpload, Error> {
    read_back(s3, obj, alg, parts, upload_id)
        .await
        .map_err(|e| match e {
            Error::Mismatch {
                what,
                expected,
                actual,
                upload_id,
                then: None,
            } => Error::Mismatch {
                what,
                expected,
                actual,
                upload_id,
                then: Some(format!(
                    "the object now at {obj} is the one the server completed and may not be \
                     the file (a server that checks nothing on receipt keeps what it got): \
                     `tally verify --download FILE {obj}` compares its bytes; upload again to \
                     replace it"
                )),
            },
            e => e,
        })
}

/// [`after_upload`], and where what the server reports disagrees with the upload's hashes, the
/// bytes: the object is read back and compared with `file` byte by byte (only then: a server
/// that stores a wrong checksum, as moto does for CRC32C, costs one download). Equal bytes prove
/// the object, and the report names the server's value as its own answer; different bytes, or
/// no read, leave the mismatch as the error, saying what is at the key.
pub async fn after_upload_or_bytes<C: S3Api>(
    s3: &C,
    obj: &ObjectUrl,
    alg: crate::vocab::ChecksumAlgorithm,
    parts: &[crate::vocab::PartHash],
    upload_id: Option<&str>,
    file: &std::path::Path,
) -> Result<AfterUpload, Error> {
    let e = match after_upload(s3, obj, alg, parts, upload_id).await {
        Err(e @ Error::Mismatch { .. }) => e,
        other => return other,
    };
    let opts = crate::verify::VerifyOptions {
        download: true,
        ..Default::default()
    };
    let Ok(r) = crate::verify::verify(s3, file, obj, &opts).await else {
        return Err(e);
    };
    if r.verdict != crate::verify::Verdict::Identical {
        return Err(e);
    }
    let Ok(head) = s3.head_object(obj, None).await else {
        return Err(e);
    };
    let Error::Mismatch {
        what,
        expected,
        actual,
        ..
    } = e
    else {
        unreachable!("matched above")
    };
    let note = format!(
        "the server reports {actual} as the {what}, not {expected}, but the bytes it sends are \
         the file's, compared byte by byte: the server's value is its own answer, not the data's"
    );
    tracing::warn!("{obj}: {note}");
    Ok(AfterUpload {
        method: Method::Download,
        why: "what the server reports disagrees with the upload's hashes: the object's bytes \
              were read back and compared with the file"
            .into(),
        checksum_matches: None,
        etag_matches: None,
        etag: Check::NotPredicted,
        parts_compared: r.parts_compared,
        checksum_note: Some(note),
        head,
    })
}

async fn read_back<C: S3Api>(
    s3: &C,
    obj: &ObjectUrl,
    alg: crate::vocab::ChecksumAlgorithm,
    parts: &[crate::vocab::PartHash],
    upload_id: Option<&str>,
) -> Result<AfterUpload, Error> {
    let layout: Vec<u64> = parts.iter().map(|p| p.len).collect();
    let mut learned = remote_facts(s3, obj, Some(&layout)).await?;
    let other_algorithm = set_aside_other_algorithm(&mut learned.facts, alg);
    let remote = &learned.facts;
    let local_size: u64 = layout.iter().sum();
    if remote.size != local_size {
        return Err(mismatch(
            "stored object size",
            &local_size.to_string(),
            &remote.size.to_string(),
            upload_id,
        ));
    }
    let local: Vec<RangeHash> = parts
        .iter()
        .map(|p| RangeHash {
            checksum: Some(p.checksum.clone()),
            md5: p.md5,
            len: p.len,
        })
        .collect();
    let c = compare(local_size, &local, remote);
    let wrong_checksum = check(&c, obj, alg, upload_id)?;
    Ok(AfterUpload {
        method: learned.method,
        why: learned.why,
        checksum_matches: c.checksum.map(|x| x.matches).filter(|m| *m),
        etag_matches: c.etag.map(|x| x.matches),
        etag: c.etag_check,
        parts_compared: c.parts_compared,
        checksum_note: wrong_checksum.or(other_algorithm),
        head: learned.head,
    })
}

/// The local digests are of `alg`: a checksum of another algorithm cannot be compared with them
/// (a server that ignored the one sent may store its own), and is never a mismatch. It is set
/// aside, with the parts' checksums; the note says so.
fn set_aside_other_algorithm(
    remote: &mut crate::remote::facts::RemoteFacts,
    alg: crate::vocab::ChecksumAlgorithm,
) -> Option<String> {
    let other = remote
        .checksum
        .as_ref()
        .map(|c| c.algorithm)
        .filter(|a| *a != alg)?;
    remote.checksum = None;
    remote.part_checksums.clear();
    Some(format!(
        "the server stores a {other} checksum, not the {alg} sent: not compared"
    ))
}

/// Every difference in `c` as the error it is; or, when only the checksum differs and the ETag
/// (the MD5 the server computed) proves the bytes, the note that says the server's checksum is
/// wrong.
fn check(
    c: &Comparison,
    obj: &ObjectUrl,
    alg: crate::vocab::ChecksumAlgorithm,
    upload_id: Option<&str>,
) -> Result<Option<String>, Error> {
    if let Some(d) = c.differing_parts.first() {
        return Err(mismatch(
            &format!("stored part {} checksum", d.number),
            &d.local,
            &d.remote,
            upload_id,
        ));
    }
    let mut note = None;
    let etag_proves = c.etag.as_ref().is_some_and(|x| x.matches);
    if let Some(x) = c.checksum.as_ref().filter(|x| !x.matches && etag_proves) {
        // The ETag, the MD5 the server computed of the bytes it stored, is the local MD5: the
        // bytes arrived; the checksum it reports does not describe them (moto reports a CRC32
        // under the name CRC32C). The server's answer, not a difference in the data.
        let wrong = format!(
            "the server reports {} as the {alg} checksum, not {} (the bytes' {alg}), but its \
             ETag, the MD5 of the bytes it stored, matches: the server's checksum is wrong, \
             the bytes are right",
            x.remote, x.local
        );
        tracing::warn!("{obj}: {wrong}");
        note = Some(wrong);
    } else if let Some(x) = c.checksum.as_ref().filter(|x| !x.matches) {
        return Err(mismatch(
            "stored object checksum",
            &x.local,
            &x.remote,
            upload_id,
        ));
    }
    if let Some(x) = c.etag.as_ref().filter(|x| !x.matches) {
        return Err(mismatch(
            "stored object ETag",
            &x.local,
            &x.remote,
            upload_id,
        ));
    }
    Ok(note)
}
