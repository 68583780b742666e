//! What an upload reports: the values it computed and what S3's replies confirmed.

use std::path::PathBuf;

use serde::Serialize;

use crate::compare;
pub use crate::compare::Check;
use crate::error::Error;
use crate::hash::ObjectChecksum;
use crate::s3::WriteReply;
use crate::vocab::EtagKind;
use crate::vocab::{ObjectSettings, Sse, StorageClass};

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
    /// The ETag S3 returned for the object (unquoted), when it returned one.
    pub stored_etag: Option<String>,
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
    /// The whole file's hashes (`--file-hash`), computed in the upload's read: format -> value
    /// (lowercase hex; the C4 id for `c4`). Empty when none was asked for.
    #[serde(skip_serializing_if = "crate::hash::FileHashes::is_empty")]
    pub file_hashes: crate::hash::FileHashes,
    /// The tags `--file-hash-tag` wrote: name and what happened.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub file_hash_tags: Vec<(String, crate::remote::tags::TagOutcome)>,
    /// Why the `--file-hash-tag` tags could not be written (the upload itself succeeded).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub file_hash_tag_error: Option<String>,
    /// Reads it took until the object read back equal (`--read-back`).
    pub read_back_reads: Option<u32>,
    /// The read-back is left to a listing of many files (a tree's file whose PutObject reply
    /// proved it): [`UploadReport::verified`] is then `None` until the tree's listing says.
    #[serde(skip)]
    pub read_back_by_listing: bool,
    /// What reading the stored object back confirmed (absent with `--no-verify`).
    pub verified: Option<crate::verify::AfterUpload>,
    /// The object settings sent, and the encryption S3 confirmed.
    pub object: ObjectReport,
    /// Seconds from the start of the command to the first part's first byte being sent: the cost
    /// of getting going (for a resume: reading the manifest, ListParts, re-hashing).
    pub seconds_to_first_send: Option<f64>,
    /// Wall time in seconds, from opening the file to the last check.
    pub seconds: f64,
    /// Throughput in MiB/s.
    pub mib_per_s: f64,
}

/// What was asked of S3 beyond the bytes, and what S3 reported back: the encryption from the
/// write's reply, the rest from the HEAD of the check after the upload (absent with `--no-verify`,
/// or where the server does not report it: Garage reports no storage class and no tag count).
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct ObjectReport {
    /// The storage class sent (none: the bucket's default, STANDARD).
    pub storage_class_requested: Option<StorageClass>,
    /// The storage class HEAD reported (AWS omits it for STANDARD).
    pub storage_class_reported: Option<String>,
    /// The Content-Type sent (given, or guessed from the file name).
    pub content_type_requested: Option<String>,
    /// The Content-Type HEAD reported.
    pub content_type_reported: Option<String>,
    /// User metadata entries sent.
    pub metadata_requested: usize,
    /// User metadata entries HEAD reported (none: not read back).
    pub metadata_reported: Option<usize>,
    /// Tags sent with the object (the `--md5-tag`, added after, is reported apart).
    pub tags_requested: usize,
    /// The tag count HEAD reported (x-amz-tagging-count; none: not reported).
    pub tags_reported: Option<u32>,
    /// The server-side encryption asked for (`AES256`, `aws:kms`).
    pub sse_requested: Option<String>,
    /// The server-side encryption S3 reported (the write's reply, else HEAD).
    pub sse_reported: Option<String>,
}

impl ObjectReport {
    /// The report of `settings` (as sent, resolved for the file), S3's write `reply` and the
    /// `head` read back after the upload, if any.
    pub fn new(
        settings: &ObjectSettings,
        reply: &WriteReply,
        head: Option<&crate::s3::HeadInfo>,
    ) -> ObjectReport {
        ObjectReport {
            storage_class_requested: settings.storage_class,
            storage_class_reported: head.and_then(|h| h.storage_class.clone()),
            content_type_requested: settings.content_type.clone(),
            content_type_reported: head.and_then(|h| h.content_type.clone()),
            metadata_requested: settings.metadata.len(),
            metadata_reported: head.map(|h| h.metadata_count),
            tags_requested: settings.tags.len(),
            tags_reported: head.and_then(|h| h.tag_count),
            sse_requested: settings.sse.as_ref().map(|s| s.as_str().to_owned()),
            sse_reported: reply
                .sse
                .clone()
                .or_else(|| head.and_then(|h| h.sse.clone())),
        }
    }
}

/// Compares a checksum S3 reported with the local one (the `-N` rule is `compare`'s): a
/// difference is an integrity error naming `what`.
pub(crate) fn compare_checksum(
    what: &str,
    local: &str,
    reported: Option<&str>,
    upload_id: Option<&str>,
) -> Result<Check, Error> {
    compare::checksum(local, reported).require(what, local, reported, upload_id)
}

/// Compares an ETag (unquoted hex, with `-N` for multipart) with the one in S3's reply, unless
/// encryption makes it something other than an MD5: as the reply says, or, when it says nothing,
/// as `requested` (the `--sse` sent) implies.
pub(crate) fn compare_etag(
    what: &str,
    local: Option<&str>,
    reply: &WriteReply,
    requested: Option<&Sse>,
    upload_id: Option<&str>,
) -> Result<Check, Error> {
    let sse = reply.sse.as_deref().or_else(|| requested.map(Sse::as_str));
    let kind = EtagKind::of(sse, false);
    let reported = reply.etag.as_ref().map(crate::vocab::ETag::as_str);
    compare::etag(local, reported, kind).require(what, local.unwrap_or(""), reported, upload_id)
}
