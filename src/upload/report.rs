//! What an upload reports: the values it computed and what S3's replies confirmed.

use std::path::PathBuf;

use serde::Serialize;

use crate::error::Error;
use crate::hash::ObjectChecksum;
use crate::s3::WriteReply;

/// How the object was written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Method {
    /// One PutObject.
    SinglePut,
    /// A multipart upload.
    Multipart,
}

impl std::fmt::Display for Method {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Method::SinglePut => "single_put",
            Method::Multipart => "multipart",
        })
    }
}

/// The outcome of one comparison between a local value and what S3 reported.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Check {
    /// S3 reported the value tally computed.
    Matched,
    /// S3 did not report the value, so it could not be compared.
    NotReported,
    /// The ETag is not an MD5 under SSE-KMS, so it was not compared.
    NotComparableKms,
    /// No MD5 was computed (`--content-md5` computes it), so the ETag was not predicted.
    NotPredicted,
}

/// What tally confirmed against S3's replies during the upload.
#[derive(Debug, Clone, Serialize)]
pub struct Checks {
    /// Parts whose checksum S3 echoed back equal to the local one (the rest were not echoed).
    pub part_checksums_matched: u32,
    /// Parts whose ETag S3 returned equal to the local MD5.
    pub part_etags_matched: u32,
    /// The object checksum S3 reported against the one derived locally.
    pub object_checksum: Check,
    /// The object ETag against the one derived locally.
    pub etag: Check,
}

/// The report of a finished upload (printed as JSON with `--json`).
#[derive(Debug, Clone, Serialize)]
pub struct UploadReport {
    /// Bucket.
    pub bucket: String,
    /// Key.
    pub key: String,
    /// Bytes uploaded.
    pub size: u64,
    /// Part size used (after growing to fit 10,000 parts); the size for a single PUT.
    pub part_size: u64,
    /// Number of parts (1 for a single PUT).
    pub parts: u32,
    /// `multipart` or `single_put`.
    pub method: Method,
    /// The object checksum computed locally, as S3 prints it.
    pub checksum: ObjectChecksum,
    /// The ETag computed locally (unquoted); None when no MD5 was computed.
    pub etag: Option<String>,
    /// The multipart upload id (none for a single PUT).
    pub upload_id: Option<String>,
    /// The object version, on versioned buckets.
    pub version_id: Option<String>,
    /// What S3's replies confirmed.
    pub checks: Checks,
    /// Parts sent by this run.
    pub parts_sent: u32,
    /// Parts already in S3 from an interrupted run, not sent again.
    pub parts_skipped: u32,
    /// Whether this run resumed an interrupted upload.
    pub resumed: bool,
    /// The manifest kept as an audit record (`--keep-manifest`).
    pub manifest: Option<PathBuf>,
    /// The whole file's MD5 (hex), when computed (`--md5-tag`, `--read-back`, or a single PUT).
    pub md5: Option<String>,
    /// The MD5 tag written (`--md5-tag`).
    pub md5_tag: Option<(String, crate::remote::tags::TagOutcome)>,
    /// Why the MD5 tag could not be written (the upload itself succeeded).
    pub md5_tag_error: Option<String>,
    /// Reads it took until the object read back equal (`--read-back`).
    pub read_back_reads: Option<u32>,
    /// What reading the stored object back confirmed (absent with `--no-verify`).
    pub verified: Option<crate::verify::AfterUpload>,
    /// Seconds from the start of the command to the first part's first byte being sent: the cost
    /// of getting going (for a resume: reading the manifest, ListParts, re-hashing).
    pub seconds_to_first_send: Option<f64>,
    /// Wall time in seconds, from opening the file to the last check.
    pub seconds: f64,
    /// Throughput in MiB/s.
    pub mib_per_s: f64,
}

/// Compares a checksum S3 reported with the local one. Servers that report a composite without
/// its `-N` suffix (as GetObjectAttributes does) are compared on the value alone.
pub(crate) fn compare_checksum(
    what: &str,
    local: &str,
    reported: Option<&str>,
    upload_id: Option<&str>,
) -> Result<Check, Error> {
    let Some(reported) = reported else {
        return Ok(Check::NotReported);
    };
    if same_checksum(local, reported) {
        Ok(Check::Matched)
    } else {
        Err(mismatch(what, local, reported, upload_id))
    }
}

/// Whether S3's `reported` checksum is the `local` one: equal, or equal to its value without the
/// composite's `-N` suffix when S3 left that off.
pub(crate) fn same_checksum(local: &str, reported: &str) -> bool {
    let local_value = local.split_once('-').map_or(local, |(v, _)| v);
    reported == local || (!reported.contains('-') && reported == local_value)
}

/// Compares an ETag (unquoted hex, with `-N` for multipart) with S3's, unless SSE-KMS makes the
/// ETag something other than an MD5.
pub(crate) fn compare_etag(
    what: &str,
    local: Option<&str>,
    reply: &WriteReply,
    upload_id: Option<&str>,
) -> Result<Check, Error> {
    if !reply.etag_is_md5() {
        return Ok(Check::NotComparableKms);
    }
    let Some(local) = local else {
        return Ok(Check::NotPredicted);
    };
    match reply.etag.as_deref().map(|e| e.trim_matches('"')) {
        None => Ok(Check::NotReported),
        Some(e) if e == local => Ok(Check::Matched),
        Some(e) => Err(mismatch(what, local, e, upload_id)),
    }
}

pub(crate) fn mismatch(what: &str, expected: &str, actual: &str, upload_id: Option<&str>) -> Error {
    Error::Mismatch {
        what: what.to_owned(),
        expected: expected.to_owned(),
        actual: actual.to_owned(),
        upload_id: upload_id.map(str::to_owned),
    }
}
