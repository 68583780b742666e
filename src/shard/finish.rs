//! `tally shard finish`: complete the shared upload once every slice is in S3, and verify it.
//!
//! What is proven, and what is not: every part was hashed by a worker from its file (whose size
//! and fingerprint matched the plan) and verified by S3 against that checksum on receipt. The
//! finisher reads every part's checksum back from ListParts (every page), refuses to complete
//! unless each planned part is there with the planned size and a checksum of the plan's
//! algorithm, computes the object checksum from them itself, and checks S3's object against it
//! and part by part as `tally upload` does. It does not read the file (the point is that no one
//! machine reads all of it): `tally verify FILE s3://BUCKET/KEY` compares the object with a file.

use std::collections::{BTreeSet, HashMap};
use std::time::Instant;

use serde::Serialize;

use crate::compare::Check;
use crate::error::Error;
use crate::hash::{self, ObjectChecksum};
use crate::plan::Plan;
use crate::progress::Progress;
use crate::s3::S3ErrorKind;
use crate::s3::{CompletedPart, HeldPart, S3Api, WriteReply};
use crate::upload::session;
use crate::verify::AfterUpload;
use crate::vocab::{ChecksumAlgorithm, PartHash};

use super::slice::slice_of;
use super::{PlanAt, ShardError, ShardPlan};

/// What `tally shard finish` did (printed as JSON with `--json`).
#[derive(Debug, Clone, Serialize)]
pub(crate) struct FinishReport {
    /// Bucket.
    pub bucket: String,
    /// Key.
    pub key: String,
    /// The upload completed.
    pub upload_id: String,
    /// Bytes.
    pub size: u64,
    /// Part size.
    pub part_size: u64,
    /// Parts.
    pub parts: u32,
    /// The plan's slices.
    pub shards: u32,
    /// The object checksum computed here from the part checksums S3 listed.
    pub checksum: ObjectChecksum,
    /// S3's object checksum (Complete's reply) against it.
    pub object_checksum: Check,
    /// Whether Complete was sent with `If-None-Match: *` (not with `--replace`, nor to a server
    /// that refuses the header, where a HEAD just before is the only check).
    pub if_none_match: bool,
    /// The ETag S3 returned for the object.
    pub stored_etag: Option<String>,
    /// The object version, on versioned buckets.
    pub version_id: Option<String>,
    /// What reading the stored object back confirmed (absent with `--no-verify`).
    pub verified: Option<AfterUpload>,
    /// Wall time in seconds.
    pub seconds: f64,
}

impl FinishReport {
    /// The text report.
    pub(crate) fn text(&self) -> String {
        let mut s = format!(
            "completed s3://{}/{} ({} bytes, {} parts from {} shards), upload {}\n",
            self.bucket, self.key, self.size, self.parts, self.shards, self.upload_id
        );
        s += &format!(
            "  checksum  {} {} ({}): {}\n",
            self.checksum.algorithm,
            self.checksum.value,
            self.checksum.kind,
            match self.object_checksum {
                Check::Matched =>
                    "S3's equals the one computed here from the checksums S3 verified for each part",
                _ => "not reported by the server, not compared",
            }
        );
        match &self.verified {
            Some(v) => {
                let said = |m: Option<bool>| match m {
                    Some(true) => "matches",
                    Some(false) => "DIFFERS",
                    None => "not comparable",
                };
                s += &format!(
                    "  verified  read back with {}: checksum {}, {} parts compared one by one\n",
                    v.method,
                    said(v.checksum_matches),
                    v.parts_compared
                );
            }
            None => s += "  verified  not read back (--no-verify)\n",
        }
        s += &format!(
            "  not read  the file itself: `tally verify FILE s3://{}/{}` compares the object with it\n",
            self.bucket, self.key
        );
        s
    }
}

/// Completes the plan's upload if every planned part is in S3 as a worker sends it, then verifies
/// the object. Missing parts: [`ShardError::Incomplete`] naming the slices to run again, nothing
/// completed. An object already at the key: [`ShardError::ObjectExists`], unless the plan says
/// `--replace`.
pub(crate) async fn finish<C: S3Api>(
    s3: &C,
    at: &PlanAt,
    plan: &ShardPlan,
    verify: bool,
    progress: &dyn Progress,
) -> Result<FinishReport, Error> {
    let started = Instant::now();
    super::run::same_endpoint(s3, plan)?;
    let part_plan = plan.part_plan(at)?;
    let target = plan.target();
    let alg = plan.checksum;
    let uid = plan.upload_id.as_str();
    let held = match s3.list_parts(&target, uid, alg).await {
        Ok(h) => h,
        Err(e) if e.kind == S3ErrorKind::NotFound => return Err(super::run::gone(plan)),
        Err(e) => return Err(Error::s3("ListParts", None, Some(uid))(e)),
    };
    let Held { hashes, parts } =
        match_plan(&part_plan, &held, alg).map_err(|m| incomplete(plan, &m))?;
    let local = hash::multipart_checksum(alg, alg.multipart_type(), &hashes);
    let (reply, if_none_match) = complete_if_key_free(s3, plan, &parts, &local, progress).await?;
    let object_checksum = session::check_object(&local, &reply, uid)?;
    let verified = if verify {
        Some(crate::verify::after_upload(s3, &target, alg, &hashes, Some(uid)).await?)
    } else {
        None
    };
    Ok(FinishReport {
        bucket: plan.bucket.clone(),
        key: plan.key.clone(),
        upload_id: plan.upload_id.clone(),
        size: plan.size,
        part_size: plan.part_size,
        parts: plan.parts,
        shards: plan.shards,
        checksum: local,
        object_checksum,
        if_none_match,
        stored_etag: reply.etag.as_ref().map(|e| e.as_str().to_owned()),
        version_id: reply.version_id,
        verified,
        seconds: started.elapsed().as_secs_f64(),
    })
}

/// Every planned part as S3 holds it: its hash and its entry in CompleteMultipartUpload.
struct Held {
    hashes: Vec<PartHash>,
    parts: Vec<CompletedPart>,
}

/// Matches each planned part with the one S3 `held`: same size, a checksum of `alg`. Otherwise
/// the parts that are missing or wrong, each with why.
fn match_plan(
    part_plan: &Plan,
    held: &[HeldPart],
    alg: ChecksumAlgorithm,
) -> Result<Held, Vec<(u32, String)>> {
    let by_number: HashMap<u32, &HeldPart> = held.iter().map(|h| (h.number, h)).collect();
    let mut missing: Vec<(u32, String)> = Vec::new();
    let mut hashes = Vec::new();
    let mut parts = Vec::new();
    for part in part_plan.parts() {
        let Some(h) = by_number.get(&part.number) else {
            missing.push((part.number, "not in S3".into()));
            continue;
        };
        if h.size != part.len {
            missing.push((
                part.number,
                format!("{} bytes in S3, {} planned", h.size, part.len),
            ));
            continue;
        }
        let Some((text, digest)) = h
            .checksum
            .as_deref()
            .and_then(|c| Some((c, decode(c, alg)?)))
        else {
            missing.push((part.number, format!("held without a {alg} checksum")));
            continue;
        };
        hashes.push(PartHash {
            checksum: digest,
            md5: None,
            len: part.len,
        });
        parts.push(CompletedPart {
            number: part.number,
            etag: h.etag.clone(),
            checksum: text.to_owned(),
        });
    }
    if missing.is_empty() {
        Ok(Held { hashes, parts })
    } else {
        Err(missing)
    }
}

/// [`ShardError::Incomplete`]: how many parts are missing (the first few, with why) and the
/// slices to run again.
fn incomplete(plan: &ShardPlan, missing: &[(u32, String)]) -> Error {
    let slices: BTreeSet<u32> = missing
        .iter()
        .map(|(n, _)| slice_of(*n, plan.shards, plan.parts))
        .collect();
    let mut detail: Vec<String> = missing
        .iter()
        .take(3)
        .map(|(n, why)| format!("part {n} {why}"))
        .collect();
    if missing.len() > 3 {
        detail.push("...".into());
    }
    ShardError::Incomplete {
        missing: missing.len(),
        parts: plan.parts,
        detail: detail.join(", "),
        slices: slices
            .iter()
            .map(u32::to_string)
            .collect::<Vec<_>>()
            .join(", "),
        upload_id: plan.upload_id.clone(),
    }
    .into()
}

/// Completes the upload unless an object is already at the key (not with `--replace`): a HEAD
/// first, then Complete with `If-None-Match: *`, or without it on a server that refuses the
/// header. The reply, and whether `If-None-Match` was sent.
async fn complete_if_key_free<C: S3Api>(
    s3: &C,
    plan: &ShardPlan,
    parts: &[CompletedPart],
    local: &ObjectChecksum,
    progress: &dyn Progress,
) -> Result<(WriteReply, bool), Error> {
    let target = plan.target();
    let alg = plan.checksum;
    let uid = plan.upload_id.as_str();
    let exists = |consequence: String| -> Error {
        ShardError::ObjectExists {
            bucket: plan.bucket.clone(),
            key: plan.key.clone(),
            consequence,
        }
        .into()
    };
    let kept = format!("nothing was completed, upload {uid} is kept");
    if !plan.replace {
        // If-None-Match below closes the race where the server supports it; this HEAD is what
        // protects the key where it does not.
        match s3.head_object(&target, None).await {
            Ok(_) => return Err(exists(kept)),
            Err(e) if e.kind == S3ErrorKind::NotFound => {}
            Err(e) => return Err(Error::s3("HeadObject", None, Some(uid))(e)),
        }
    }
    // Tests act here: an object written between the HEAD above and Complete.
    crate::seam::pause("complete").await;
    let mut if_none_match = !plan.replace;
    let completed = session::complete_listed(s3, &target, uid, alg, parts, local, if_none_match);
    let reply = match completed.await {
        Err(Error::S3 { source, .. }) if source.kind == S3ErrorKind::PreconditionFailed => {
            return Err(exists(kept));
        }
        Err(Error::S3 { source, .. })
            if if_none_match && source.kind == S3ErrorKind::Unsupported =>
        {
            progress.note(&format!(
                "this server refuses If-None-Match on CompleteMultipartUpload ({source}): completing without it; the key was free a moment ago"
            ));
            if_none_match = false;
            session::complete_listed(s3, &target, uid, alg, parts, local, false).await?
        }
        r => r?,
    };
    Ok((reply, if_none_match))
}

/// A part checksum as ListParts gives it (base64), if it is one of `alg`.
fn decode(b64: &str, alg: ChecksumAlgorithm) -> Option<crate::vocab::Digest> {
    use base64::Engine as _;
    let bytes = base64::engine::general_purpose::STANDARD.decode(b64).ok()?;
    (bytes.len() == alg.digest_len()).then(|| crate::vocab::Digest::from_bytes(bytes))
}
