//! The serverless remote MD5: one step of the relay that AWS Step Functions drives through Lambda
//! (`deploy/relay/`), over the same code as `tally md5` ([`crate::remote::md5`]).
//!
//! A step takes a small JSON document ([`RelayDoc`]: the object, how far the hash has gone and
//! the MD5 hasher's state) and returns it updated; the state machine feeds it back until `done`,
//! then hands it to the tag step. Two steps ([`Step`]), deployed as two functions so each has only
//! the permissions it needs:
//! - [`Step::Hash`] (GetObject): the ETag when it is the MD5 (one PUT, not SSE-KMS/SSE-C), else
//!   ranged GETs pinned to the ETag (`If-Match`), hashed in order until the invocation's budget is
//!   spent, always at least one 8 MiB piece. (The version is checked by the HEAD that starts every
//!   step; the GETs carry no version id, so the function needs no s3:GetObjectVersion.)
//! - [`Step::Tag`] (GetObject, Get/PutObjectTagging): the MD5 merged into the object's tags, the
//!   other tags kept (PutObjectTagging alone would replace them all).
//!
//! Every step first checks (HEAD) that the object is still the one the execution started for
//! (ETag, version, size): a replaced or deleted object ends the execution with
//! [`RelayError::ObjectChanged`], never with an MD5 of other bytes or a tag on another object.
//!
//! The budget ([`budget`]) comes from the deadline the Lambda runtime gives, less a safety
//! margin; when that deadline is absent or already past (local emulators send a fixed
//! 600,000 ms, i.e. 1970) the configured fallback is used instead of hashing nothing or forever.
//! A step stops only between pieces: a GET that stalls past the margin makes the invocation time
//! out, and the state machine's retry repeats that step from the document it was given (the
//! step's own progress is lost, nothing else).
//!
//! On an unversioned bucket the tag step's HEAD and its PutObjectTagging are two requests: an
//! object replaced between them would get the old object's MD5. The step therefore looks again
//! after writing; if the object changed meanwhile it takes its tag back off (when it still holds
//! this MD5) and fails with `ObjectChanged`. Versioned buckets have no such window (the tag is
//! written to the version hashed).

use std::time::{Duration, Instant, SystemTime};

use lambda_runtime::LambdaEvent;
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use crate::error::Error;
use crate::remote::md5::{Md5Source, hash_stretch, md5_from_hex};
use crate::remote::md5_state::SavedState;
use crate::remote::tags::{TagOutcome, tag_md5};
use crate::s3::S3ErrorKind;
use crate::s3::{HeadInfo, S3Api};
use crate::vocab::ObjectUrl;

/// The longest a Lambda invocation can run (15 minutes): a deadline further away than this (and a
/// minute of slack) is not a real one.
const LAMBDA_MAX: Duration = Duration::from_secs(16 * 60);
/// The least time an invocation needs to hash one piece and answer; with less left, the step
/// refuses rather than overrun the function's timeout.
const MIN_LEFT: Duration = Duration::from_secs(1);
/// The safety margin kept before the deadline: a tenth of the time left, between these bounds. It
/// covers the piece being read when the budget runs out (a run stops only between pieces) and
/// the answer.
const MARGIN_MIN: Duration = Duration::from_millis(500);
const MARGIN_MAX: Duration = Duration::from_secs(30);
/// The fallback budget when `TALLY_RELAY_BUDGET` is not set.
pub const DEFAULT_BUDGET: Duration = Duration::from_secs(60);

/// Which step a function runs (`TALLY_RELAY_STEP`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Step {
    /// Hash on from the document's offset (the "initial" and "intermediate" states).
    Hash,
    /// Store the finished MD5 as a tag.
    Tag,
}

/// A function's settings, from its environment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RelayConfig {
    /// The step this function runs.
    pub step: Step,
    /// `TALLY_RELAY_BUDGET`: the budget when the runtime's deadline is unknown, and a cap on one
    /// derived from the deadline; [`DEFAULT_BUDGET`] (no cap) when not set.
    pub budget: Option<Duration>,
    /// The tag's name.
    pub tag: String,
}

impl RelayConfig {
    /// Reads `TALLY_RELAY_STEP` (`hash` or `tag`), `TALLY_RELAY_BUDGET` (a duration, default
    /// 60s) and `TALLY_RELAY_TAG` (default `md5`) through `var`.
    pub fn from_env(var: impl Fn(&str) -> Option<String>) -> Result<RelayConfig, String> {
        let step = match var("TALLY_RELAY_STEP").as_deref() {
            Some("hash") => Step::Hash,
            Some("tag") => Step::Tag,
            other => {
                return Err(format!(
                    "TALLY_RELAY_STEP is {}: set it to hash or tag",
                    other.map_or("not set".into(), |v| format!("'{v}'"))
                ));
            }
        };
        let budget = match var("TALLY_RELAY_BUDGET") {
            None => None,
            Some(v) => match crate::vocab::parse_duration(&v) {
                Ok(d) if !d.is_zero() => Some(d),
                _ => {
                    return Err(format!(
                        "TALLY_RELAY_BUDGET is '{v}': give a duration such as 500ms, 1s or 60s"
                    ));
                }
            },
        };
        let tag = var("TALLY_RELAY_TAG").unwrap_or_else(|| "md5".into());
        if tag.is_empty() || tag.len() > 128 {
            return Err("TALLY_RELAY_TAG must be a tag key of 1 to 128 characters".into());
        }
        Ok(RelayConfig { step, budget, tag })
    }
}

/// The tag a tag step wrote.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TagDone {
    /// The tag's name.
    pub name: String,
    /// What happened to it.
    pub outcome: TagOutcome,
}

/// What passes from step to step (input = output; a few hundred bytes of JSON, far below the
/// Step Functions payload limit of 256 KiB).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RelayDoc {
    /// Bucket.
    pub bucket: String,
    /// Key.
    pub key: String,
    /// The version the execution is for, on versioned buckets (`version-id` in an Object
    /// Created event's `detail.object`).
    #[serde(default, alias = "version-id")]
    pub version_id: Option<String>,
    /// The ETag the execution is for (quotes optional, as S3 events give it).
    pub etag: String,
    /// The object's size, when the event gave it.
    #[serde(default)]
    pub size: Option<u64>,
    /// Bytes hashed so far.
    #[serde(default)]
    pub offset: u64,
    /// The MD5 hasher's state after `offset` bytes, base64 (none at 0).
    #[serde(default)]
    pub state: Option<String>,
    /// Whether `md5` is final.
    #[serde(default)]
    pub done: bool,
    /// The MD5, hex, once done.
    #[serde(default)]
    pub md5: Option<String>,
    /// Where the MD5 came from.
    #[serde(default)]
    pub(crate) source: Option<Md5Source>,
    /// Hash invocations so far.
    #[serde(default)]
    pub invocations: u32,
    /// The tag written, after the tag step.
    #[serde(default)]
    pub tag: Option<TagDone>,
}

/// Why a step failed; [`RelayError::error_type`] is the name a state machine's Retry and Catch
/// match.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RelayError {
    /// The object was replaced or deleted since the execution started: not retryable.
    #[error("{0}")]
    ObjectChanged(String),
    /// Throttling, a server error or a timeout, after the SDK's own retries: retry the step.
    #[error("{0}")]
    S3Transient(String),
    /// Any other S3 refusal (denied, no such bucket, ...).
    #[error("{0}")]
    S3Error(String),
    /// The document or its state cannot be used.
    #[error("{0}")]
    BadInput(String),
    /// The merged tag set would exceed S3's 10 tags.
    #[error("{0}")]
    TagLimit(String),
    /// The invocation has too little time left to hash anything.
    #[error("{0}")]
    TooLittleTime(String),
}

impl RelayError {
    /// The Lambda `errorType` (the Step Functions error name).
    pub fn error_type(&self) -> &'static str {
        match self {
            RelayError::ObjectChanged(_) => "ObjectChanged",
            RelayError::S3Transient(_) => "S3Transient",
            RelayError::S3Error(_) => "S3Error",
            RelayError::BadInput(_) => "BadInput",
            RelayError::TagLimit(_) => "TagLimit",
            RelayError::TooLittleTime(_) => "TooLittleTime",
        }
    }
}

impl From<Error> for RelayError {
    fn from(e: Error) -> RelayError {
        let text = e.to_string();
        match &e {
            Error::ObjectChanged { .. } => RelayError::ObjectChanged(text),
            Error::TooManyTags { .. } => RelayError::TagLimit(text),
            Error::S3 { source, .. } => match source.kind {
                S3ErrorKind::Throttled | S3ErrorKind::Transient | S3ErrorKind::Unreachable => {
                    RelayError::S3Transient(text)
                }
                // 412 to If-Match: replaced; 404 mid-way: deleted (or its version removed).
                S3ErrorKind::PreconditionFailed | S3ErrorKind::NotFound => {
                    RelayError::ObjectChanged(text)
                }
                _ => RelayError::S3Error(text),
            },
            _ => RelayError::S3Error(text),
        }
    }
}

impl From<RelayError> for lambda_runtime::Diagnostic {
    fn from(e: RelayError) -> lambda_runtime::Diagnostic {
        lambda_runtime::Diagnostic {
            error_type: e.error_type().into(),
            error_message: e.to_string(),
        }
    }
}

/// Where the time for this invocation came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Budget {
    /// From the runtime's deadline, less the margin (and at most the configured budget).
    Deadline(Duration),
    /// The runtime's deadline was absent, past or implausible: the configured budget.
    Fallback(Duration),
    /// Less than [`MIN_LEFT`] remains before the deadline.
    TooLittle(Duration),
}

/// The time a step may spend hashing, given the runtime's deadline (`deadline_ms`, milliseconds
/// since the Unix epoch; 0 when absent), the clock, and the configured budget (see the module
/// docs and [`RelayConfig::budget`]).
pub fn budget(deadline_ms: u64, now: SystemTime, configured: Option<Duration>) -> Budget {
    let deadline = SystemTime::UNIX_EPOCH + Duration::from_millis(deadline_ms);
    match deadline.duration_since(now) {
        Ok(left) if deadline_ms > 0 && left <= LAMBDA_MAX => {
            if left < MIN_LEFT {
                return Budget::TooLittle(left);
            }
            let margin = (left / 10).clamp(MARGIN_MIN, MARGIN_MAX);
            Budget::Deadline((left - margin).min(configured.unwrap_or(LAMBDA_MAX)))
        }
        _ => Budget::Fallback(configured.unwrap_or(DEFAULT_BUDGET)),
    }
}

/// The Lambda handler: runs the configured step on the invocation's document, within the time
/// its context's deadline leaves (see [`budget`]).
pub async fn handle<C: S3Api>(
    s3: &C,
    cfg: &RelayConfig,
    ev: LambdaEvent<RelayDoc>,
) -> Result<RelayDoc, RelayError> {
    let (doc, ctx) = ev.into_parts();
    match cfg.step {
        Step::Hash => {
            let time = match budget(ctx.deadline, SystemTime::now(), cfg.budget) {
                Budget::Deadline(d) | Budget::Fallback(d) => d,
                Budget::TooLittle(left) => {
                    return Err(RelayError::TooLittleTime(format!(
                        "only {} ms of the function's time left: too little to hash a piece; raise the function's Timeout (900 s is the relay's setting)",
                        left.as_millis()
                    )));
                }
            };
            hash_step(s3, doc, time).await
        }
        Step::Tag => tag_step(s3, doc, &cfg.tag).await,
    }
}

/// The object the document names, and its ETag without quotes.
fn target(doc: &RelayDoc) -> Result<(ObjectUrl, String), RelayError> {
    let etag = doc.etag.trim_matches('"').to_owned();
    if doc.bucket.is_empty() || doc.key.is_empty() || etag.is_empty() {
        return Err(RelayError::BadInput(
            "the document needs bucket, key and etag (the Object Created event's detail.bucket.name, detail.object.key and detail.object.etag)".into(),
        ));
    }
    let obj = ObjectUrl {
        bucket: doc.bucket.clone(),
        key: doc.key.clone(),
    };
    Ok((obj, etag))
}

/// HEAD, and the object must still be the one the document is for.
async fn still_the_object<C: S3Api>(
    s3: &C,
    obj: &ObjectUrl,
    doc: &RelayDoc,
    etag: &str,
) -> Result<HeadInfo, RelayError> {
    let url = format!("s3://{}/{}", obj.bucket, obj.key);
    let head = match s3.head_object(obj, None).await {
        Ok(h) => h,
        Err(e) if e.kind == S3ErrorKind::NotFound => {
            return Err(RelayError::ObjectChanged(format!(
                "{url} was deleted after this execution started (ETag {etag}); nothing was tagged"
            )));
        }
        Err(e) => return Err(Error::s3("HeadObject", None, None)(e).into()),
    };
    let now = head.etag.as_ref().map(|e| e.as_str().trim_matches('"'));
    // Compared only where both name a version: Garage names one on PUT, none on HEAD.
    let same_version = match (&doc.version_id, &head.version_id) {
        (Some(then), Some(now)) => then == now,
        _ => true,
    };
    let same_size = doc.size.is_none_or(|s| s == head.size);
    if now != Some(etag) || !same_version || !same_size {
        return Err(RelayError::ObjectChanged(format!(
            "{url} was replaced after this execution started (ETag {etag}{}, now {}{}); its MD5 is left to the execution the new object started, and nothing was tagged",
            doc.version_id
                .as_deref()
                .map_or(String::new(), |v| format!(", version {v}")),
            now.unwrap_or("none"),
            head.version_id
                .as_deref()
                .map_or(String::new(), |v| format!(", version {v}")),
        )));
    }
    Ok(head)
}

/// The hash step: see the module docs. A finished document is returned as it is.
pub async fn hash_step<C: S3Api>(
    s3: &C,
    mut doc: RelayDoc,
    time: Duration,
) -> Result<RelayDoc, RelayError> {
    if doc.done {
        return Ok(doc);
    }
    let started = Instant::now();
    crate::seam::pause("relay_hash").await;
    let (obj, etag) = target(&doc)?;
    let head = still_the_object(s3, &obj, &doc, &etag).await?;
    doc.invocations += 1;
    doc.size = Some(head.size);
    if doc.version_id.is_none() {
        doc.version_id = head.version_id.clone();
    }
    let fresh = doc.offset == 0 && doc.state.is_none();
    if let Some(d) = md5_from_hex(&etag).filter(|_| fresh && head.etag_is_md5()) {
        doc.done = true;
        doc.md5 = Some(crate::vocab::hex(&d));
        doc.source = Some(Md5Source::Etag);
        doc.offset = head.size;
        return Ok(doc);
    }
    let mut saved = SavedState::new(&obj, &head);
    saved.offset = doc.offset;
    saved.state = doc.state.clone().unwrap_or_default();
    // The document carries no checksum of its own: the hasher's byte count is still checked.
    saved.seal();
    let hasher = saved
        .restore()
        .map_err(|why| RelayError::BadInput(format!("the document's MD5 state: {why}")))?;
    let never = CancellationToken::new();
    let digest = hash_stretch(
        s3,
        &obj,
        &head,
        hasher,
        &mut saved,
        Some(started + time),
        None,
        &never,
        None,
    )
    .await?;
    doc.source = Some(Md5Source::Stream);
    doc.offset = saved.offset;
    match digest {
        Some(d) => {
            doc.done = true;
            doc.md5 = Some(crate::vocab::hex(&d));
            doc.state = None;
        }
        None => doc.state = Some(saved.state),
    }
    tracing::info!(
        bucket = %doc.bucket,
        key = %doc.key,
        offset = doc.offset,
        done = doc.done,
        seconds = started.elapsed().as_secs_f64(),
        "relay hash step"
    );
    Ok(doc)
}

/// Removes tag `name` from the object if it holds `md5` (the tag step's own write, on an object
/// replaced while it was written), keeping the other tags.
async fn take_back<C: S3Api>(
    s3: &C,
    obj: &ObjectUrl,
    name: &str,
    md5: &str,
) -> Result<(), RelayError> {
    let tags = s3
        .get_tags(obj, None)
        .await
        .map_err(Error::s3("GetObjectTagging", None, None))?;
    if tags.iter().any(|(k, v)| k == name && v == md5) {
        let kept: Vec<(String, String)> = tags.into_iter().filter(|(k, _)| k != name).collect();
        s3.put_tags(obj, None, &kept)
            .await
            .map_err(Error::s3("PutObjectTagging", None, None))?;
    }
    Ok(())
}

/// The tag step: see the module docs.
pub async fn tag_step<C: S3Api>(
    s3: &C,
    mut doc: RelayDoc,
    name: &str,
) -> Result<RelayDoc, RelayError> {
    let md5 = match (&doc.md5, doc.done) {
        (Some(m), true) if md5_from_hex(m).is_some() => m.clone(),
        _ => {
            return Err(RelayError::BadInput(
                "the tag step needs a finished document (done: true, md5: 32 hex digits): run the hash step until done".into(),
            ));
        }
    };
    let (obj, etag) = target(&doc)?;
    let head = still_the_object(s3, &obj, &doc, &etag).await?;
    let version = doc.version_id.clone().or(head.version_id);
    let outcome = tag_md5(s3, &obj, version.as_deref(), name, &md5).await?;
    if version.is_none()
        && let Err(changed) = still_the_object(s3, &obj, &doc, &etag).await
    {
        take_back(s3, &obj, name, &md5).await?;
        return Err(changed);
    }
    doc.tag = Some(TagDone {
        name: name.into(),
        outcome,
    });
    Ok(doc)
}

#[cfg(test)]
mod tests {
    use crate::hash;
    use bytes::Bytes;
    use lambda_runtime::Context;
    use md5::Digest as _;

    use super::*;
    use crate::remote::ranged::PIECE;
    use crate::s3::fake::FakeS3;
    use crate::s3::{CompletedPart, MultipartWrite as _};
    use crate::vocab::ChecksumAlgorithm;
    use crate::vocab::ObjectSettings;

    fn data(len: usize, seed: u64) -> Vec<u8> {
        let mut x = 0x9E37_79B9_7F4A_7C15u64 ^ seed;
        (0..len)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect()
    }

    fn md5_hex(b: &[u8]) -> String {
        crate::vocab::hex(&<[u8; 16]>::from(md5::Md5::digest(b)))
    }

    /// A multipart object (its ETag is no MD5) in the fake; returns its ETag.
    async fn multipart(s3: &FakeS3, key: &str, content: &[u8], part: usize) -> String {
        let obj = ObjectUrl::parse(&format!("s3://bkt/{key}")).unwrap();
        let alg = ChecksumAlgorithm::Sha256;
        let id = s3
            .create_multipart(&obj, alg, alg.multipart_type(), &ObjectSettings::default())
            .await
            .unwrap();
        let mut done = Vec::new();
        for (i, p) in content.chunks(part).enumerate() {
            let h = hash::hash_part(alg, true, p);
            let n = i as u32 + 1;
            let r = s3
                .upload_part(&obj, &id, n, alg, Bytes::copy_from_slice(p), &h)
                .await
                .unwrap();
            done.push(CompletedPart {
                number: n,
                etag: r.etag.unwrap(),
                checksum: h.checksum.base64(),
            });
        }
        let reply = s3
            .complete_multipart(&obj, &id, alg, &done, None)
            .await
            .unwrap();
        reply.etag.unwrap().as_str().to_owned()
    }

    /// The document an Object Created event starts with.
    fn start(key: &str, etag: &str, size: usize) -> RelayDoc {
        RelayDoc {
            bucket: "bkt".into(),
            key: key.into(),
            // As the event gives it: no quotes.
            etag: etag.trim_matches('"').into(),
            size: Some(size as u64),
            ..RelayDoc::default()
        }
    }

    fn cfg(step: Step, budget: Option<Duration>) -> RelayConfig {
        RelayConfig {
            step,
            budget,
            tag: "md5".into(),
        }
    }

    /// An invocation whose runtime deadline is `deadline_ms`.
    fn event(doc: RelayDoc, deadline_ms: u64) -> LambdaEvent<RelayDoc> {
        let mut ctx = Context::default();
        ctx.deadline = deadline_ms;
        LambdaEvent::new(doc, ctx)
    }

    fn now_ms() -> u64 {
        SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap()
            .as_millis() as u64
    }

    #[test]
    fn the_budget_follows_the_deadline_and_falls_back_when_it_is_absent_past_or_implausible() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_795_625_567);
        let ms = |d: SystemTime| {
            d.duration_since(SystemTime::UNIX_EPOCH)
                .unwrap()
                .as_millis() as u64
        };
        let secs = Duration::from_secs;
        // Far: a 900 s function keeps 30 s (the margin's cap); a configured budget caps it.
        assert_eq!(
            budget(ms(now + secs(900)), now, None),
            Budget::Deadline(secs(870))
        );
        assert_eq!(
            budget(ms(now + secs(900)), now, Some(secs(5))),
            Budget::Deadline(secs(5))
        );
        // Near: a tenth of what is left, at least 500 ms.
        assert_eq!(
            budget(ms(now + secs(20)), now, None),
            Budget::Deadline(secs(18))
        );
        assert_eq!(
            budget(ms(now + secs(3)), now, None),
            Budget::Deadline(Duration::from_millis(2500))
        );
        // Too near to hash a piece.
        assert_eq!(
            budget(ms(now + Duration::from_millis(400)), now, None),
            Budget::TooLittle(Duration::from_millis(400))
        );
        // Absent (0), past (the emulator's 600000 ms), and further than any Lambda runs.
        for deadline in [0, 600_000, ms(now) - 1, ms(now + secs(3600))] {
            assert_eq!(
                budget(deadline, now, None),
                Budget::Fallback(DEFAULT_BUDGET),
                "{deadline}"
            );
            assert_eq!(
                budget(deadline, now, Some(secs(1))),
                Budget::Fallback(secs(1)),
                "{deadline}"
            );
        }
    }

    #[test]
    fn the_environment_is_read_and_bad_values_refused_in_one_line() {
        let env = |pairs: &'static [(&'static str, &'static str)]| {
            move |k: &str| {
                pairs
                    .iter()
                    .find(|(n, _)| *n == k)
                    .map(|(_, v)| (*v).to_owned())
            }
        };
        let c = RelayConfig::from_env(env(&[("TALLY_RELAY_STEP", "hash")])).unwrap();
        assert_eq!(c, cfg(Step::Hash, None));
        let c = RelayConfig::from_env(env(&[
            ("TALLY_RELAY_STEP", "tag"),
            ("TALLY_RELAY_BUDGET", "1500ms"),
            ("TALLY_RELAY_TAG", "content-md5"),
        ]))
        .unwrap();
        assert_eq!(c.step, Step::Tag);
        assert_eq!(c.budget, Some(Duration::from_millis(1500)));
        assert_eq!(c.tag, "content-md5");
        for bad in [
            &[][..],
            &[("TALLY_RELAY_STEP", "Hash")][..],
            &[("TALLY_RELAY_STEP", "hash"), ("TALLY_RELAY_BUDGET", "0s")][..],
            &[("TALLY_RELAY_STEP", "hash"), ("TALLY_RELAY_BUDGET", "soon")][..],
        ] {
            let owned: Vec<(String, String)> = bad
                .iter()
                .map(|(k, v)| ((*k).into(), (*v).into()))
                .collect();
            let e = RelayConfig::from_env(|k| {
                owned.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone())
            })
            .unwrap_err();
            assert!(e.starts_with("TALLY_RELAY_") && !e.contains('\n'), "{e}");
        }
    }

    /// With the emulator's past deadline the configured budget applies; a budget too short for
    /// more than a piece still moves a piece per invocation, and the invocations add up to the
    /// object's MD5. The document stays small.
    #[tokio::test]
    async fn past_deadline_falls_back_and_the_steps_add_up_to_the_md5() {
        let s3 = FakeS3::default();
        let content = data(3 * PIECE as usize + 4321, 1);
        let etag = multipart(&s3, "big", &content, 5 * 1024 * 1024 + 3).await;
        let hash = cfg(Step::Hash, Some(Duration::from_nanos(1)));
        let mut doc = start("big", &etag, content.len());
        let mut offsets = Vec::new();
        while !doc.done {
            assert!(offsets.len() < 10, "no end in sight: {offsets:?}");
            let before = doc.offset;
            doc = handle(&s3, &hash, event(doc, 600_000)).await.unwrap();
            assert!(
                doc.offset > before,
                "an invocation made no progress at {before}"
            );
            let json = serde_json::to_vec(&doc).unwrap();
            assert!(json.len() < 1024, "{} bytes", json.len());
            // What the state machine passes on is what the next step reads.
            doc = serde_json::from_slice(&json).unwrap();
            offsets.push(doc.offset);
        }
        assert_eq!(
            offsets,
            vec![PIECE, 2 * PIECE, 3 * PIECE, content.len() as u64]
        );
        assert_eq!(doc.invocations, 4);
        assert_eq!(doc.md5.as_deref(), Some(md5_hex(&content).as_str()));
        assert_eq!(doc.source, Some(Md5Source::Stream));
        assert_eq!(doc.state, None);
    }

    /// A deadline far away: one invocation hashes the whole object. A deadline too near: a clear
    /// refusal naming what to do, nothing read.
    #[tokio::test]
    async fn a_far_deadline_hashes_all_and_a_near_one_is_refused() {
        let s3 = FakeS3::default();
        let content = data(2 * PIECE as usize + 99, 2);
        let etag = multipart(&s3, "obj", &content, 5 * 1024 * 1024).await;
        let hash = cfg(Step::Hash, None);
        let doc = handle(
            &s3,
            &hash,
            event(start("obj", &etag, content.len()), now_ms() + 600_000),
        )
        .await
        .unwrap();
        assert!(doc.done);
        assert_eq!(doc.invocations, 1);
        assert_eq!(doc.md5.as_deref(), Some(md5_hex(&content).as_str()));

        let before = s3.requests();
        let e = handle(
            &s3,
            &hash,
            event(start("obj", &etag, content.len()), now_ms() + 300),
        )
        .await
        .unwrap_err();
        assert_eq!(e.error_type(), "TooLittleTime");
        assert!(
            e.to_string().contains("raise the function's Timeout"),
            "{e}"
        );
        assert_eq!(s3.requests(), before, "nothing sent");
    }

    /// A single PUT's ETag is its MD5: one HEAD, no GET; the tag step merges the MD5 into the
    /// tags the object has, keeping them.
    #[tokio::test]
    async fn a_single_put_takes_the_etag_and_the_tag_keeps_other_tags() {
        let s3 = FakeS3::default();
        let content = data(1000, 3);
        let obj = ObjectUrl::parse("s3://bkt/small").unwrap();
        let alg = ChecksumAlgorithm::Sha256;
        let settings = ObjectSettings {
            tags: vec![("project".into(), "reel-7".into())],
            ..ObjectSettings::default()
        };
        let reply = s3
            .put_object(
                &obj,
                alg,
                Bytes::copy_from_slice(&content).into(),
                &hash::hash_part(alg, true, &content),
                &settings,
            )
            .await
            .unwrap();
        let before = s3.requests();
        let doc = start("small", reply.etag.unwrap().as_str(), content.len());
        let doc = handle(&s3, &cfg(Step::Hash, None), event(doc, 0))
            .await
            .unwrap();
        assert_eq!(s3.requests() - before, 1, "one HEAD, no GET");
        assert_eq!(doc.source, Some(Md5Source::Etag));
        assert_eq!(doc.md5.as_deref(), Some(md5_hex(&content).as_str()));

        let doc = handle(&s3, &cfg(Step::Tag, None), event(doc, 0))
            .await
            .unwrap();
        assert_eq!(doc.tag.unwrap().outcome, TagOutcome::Added);
        let mut tags = s3.tags("small").unwrap();
        tags.sort();
        assert_eq!(
            tags,
            vec![
                ("md5".into(), md5_hex(&content)),
                ("project".into(), "reel-7".into())
            ]
        );
    }

    /// The object replaced between two steps: the next hash step and the tag step both end with
    /// ObjectChanged, and no tag is written.
    #[tokio::test]
    async fn an_object_replaced_between_steps_ends_with_object_changed_and_no_tag() {
        let s3 = FakeS3::default();
        let content = data(2 * PIECE as usize + 5, 4);
        let etag = multipart(&s3, "obj", &content, 5 * 1024 * 1024).await;
        let hash = cfg(Step::Hash, Some(Duration::from_nanos(1)));
        let doc = handle(&s3, &hash, event(start("obj", &etag, content.len()), 0))
            .await
            .unwrap();
        assert!(!doc.done && doc.offset == PIECE);
        s3.replace_object("obj", data(content.len(), 5));
        let e = handle(&s3, &hash, event(doc.clone(), 0)).await.unwrap_err();
        assert_eq!(e.error_type(), "ObjectChanged", "{e}");
        assert!(e.to_string().contains("was replaced"), "{e}");

        // A tag step handed a finished document for the old object writes nothing either.
        let finished = RelayDoc {
            done: true,
            md5: Some(md5_hex(&content)),
            ..doc
        };
        let e = handle(&s3, &cfg(Step::Tag, None), event(finished, 0))
            .await
            .unwrap_err();
        assert_eq!(e.error_type(), "ObjectChanged", "{e}");
        assert!(s3.tags("obj").unwrap_or_default().is_empty());
    }

    /// The fields of an Object Created event's `detail.object` (EventBridge's names) are read as
    /// the document's; a version the server's HEAD does not name (Garage's) is no change; a
    /// version it names differently is.
    #[tokio::test]
    async fn an_event_detail_is_a_document_and_versions_compare_only_where_both_exist() {
        let s3 = FakeS3::default();
        let content = data(PIECE as usize + 10, 7);
        let etag = multipart(&s3, "obj", &content, 5 * 1024 * 1024).await;
        let detail = serde_json::json!({
            "bucket": "bkt",
            "key": "obj",
            "size": content.len(),
            "etag": etag.trim_matches('"'),
            "version-id": "v-from-the-event",
            "sequencer": "00617F0E8A29D9A1D9"
        });
        let doc: RelayDoc = serde_json::from_value(detail).unwrap();
        assert_eq!(doc.version_id.as_deref(), Some("v-from-the-event"));
        // The fake's HEAD names no version (as Garage's): not a change.
        let done = handle(&s3, &cfg(Step::Hash, None), event(doc, 0))
            .await
            .unwrap();
        assert_eq!(done.md5.as_deref(), Some(md5_hex(&content).as_str()));
        assert_eq!(done.version_id.as_deref(), Some("v-from-the-event"));
    }

    /// The object deleted between two steps: ObjectChanged, not a generic S3 error.
    #[tokio::test]
    async fn an_object_deleted_between_steps_ends_with_object_changed() {
        let s3 = FakeS3::default();
        let content = data(2 * PIECE as usize + 5, 8);
        let etag = multipart(&s3, "obj", &content, 5 * 1024 * 1024).await;
        let hash = cfg(Step::Hash, Some(Duration::from_nanos(1)));
        let doc = handle(&s3, &hash, event(start("obj", &etag, content.len()), 0))
            .await
            .unwrap();
        s3.delete_object("obj");
        let e = handle(&s3, &hash, event(doc, 0)).await.unwrap_err();
        assert_eq!(e.error_type(), "ObjectChanged", "{e}");
        assert!(e.to_string().contains("was deleted"), "{e}");
    }

    /// Malformed documents and states are refused as BadInput, before anything is read.
    #[tokio::test]
    async fn bad_documents_are_refused() {
        let s3 = FakeS3::default();
        let content = data(PIECE as usize + 1, 6);
        let etag = multipart(&s3, "obj", &content, 5 * 1024 * 1024).await;
        let hash = cfg(Step::Hash, None);
        let no_etag = RelayDoc {
            etag: String::new(),
            ..start("obj", &etag, content.len())
        };
        let bad_state = RelayDoc {
            offset: PIECE,
            state: Some("not base64!".into()),
            ..start("obj", &etag, content.len())
        };
        for doc in [no_etag, bad_state] {
            let e = handle(&s3, &hash, event(doc, 0)).await.unwrap_err();
            assert_eq!(e.error_type(), "BadInput", "{e}");
        }
        let unfinished = start("obj", &etag, content.len());
        let e = handle(&s3, &cfg(Step::Tag, None), event(unfinished, 0))
            .await
            .unwrap_err();
        assert_eq!(e.error_type(), "BadInput", "{e}");
    }
}
