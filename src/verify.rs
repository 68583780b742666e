//! Verify: is this object the local file, part by part, whoever uploaded it?
//!
//! Fetching (what S3 says about the object) and hashing (the local file, cut with S3's own part
//! layout) live here beside [`compare`], a pure function that turns both into a typed report of
//! every difference. Where the truth comes from, in order:
//!
//! 1. GetObjectAttributes: every part's size and checksum (paged), the object checksum and ETag;
//! 2. where the server lacks it (Garage) or the object has no per-part checksums: part sizes from
//!    HEAD `?partNumber=N`, the object checksum from HEAD with checksum mode, and the ETag;
//! 3. on request (`--download`), or when nothing else can decide (no checksum and an ETag that is
//!    not an MD5; or a difference whose part cannot be named otherwise): ranged GETs compared byte
//!    by byte with the local file, never stored.

use std::ops::Range;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::{StreamExt as _, TryStreamExt as _, stream};
use rayon::prelude::*;
use serde::Serialize;

use crate::config::ObjectUrl;
use crate::error::{Error, S3ErrorKind};
use crate::hash::{self, ChecksumAlgorithm, ChecksumType, Digest, RangeHash};
use crate::s3::{HeadInfo, RemoteChecksum, S3Api};
use crate::source::Source;

/// Ranged GETs are at most this long (each is held in memory while compared).
const GET_CHUNK: u64 = 8 * 1024 * 1024;
/// Requests in flight for HEAD-per-part and ranged GETs.
const FETCH_CONCURRENCY: usize = 16;

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

/// What `tally upload` confirmed by reading the stored object's attributes back after completing.
#[derive(Debug, Clone, Serialize)]
pub struct AfterUpload {
    /// Where the truth came from.
    pub method: Method,
    /// Why.
    pub why: String,
    /// The stored object's checksum equals the local one (None: S3 reported none).
    pub checksum_matches: Option<bool>,
    /// The stored ETag equals the local one (None: not an MD5, or not reported).
    pub etag_matches: Option<bool>,
    /// Parts whose stored checksum was compared one by one.
    pub parts_compared: u32,
}

/// Reads the stored object's attributes back after an upload and compares them with the hashes
/// the upload computed (no second read of the file). Fails with a mismatch naming what differs.
pub async fn after_upload<C: S3Api>(
    s3: &C,
    obj: &ObjectUrl,
    parts: &[hash::PartHash],
    upload_id: Option<&str>,
) -> Result<AfterUpload, Error> {
    let layout: Vec<u64> = parts.iter().map(|p| p.len).collect();
    let (remote, method, why) = remote_facts(s3, obj, Some(&layout)).await?;
    let local_size: u64 = layout.iter().sum();
    let mismatch = |what: String, expected: String, actual: String| Error::Mismatch {
        what,
        expected,
        actual,
        upload_id: upload_id.map(str::to_owned),
    };
    if remote.size != local_size {
        return Err(mismatch(
            "stored object size".into(),
            local_size.to_string(),
            remote.size.to_string(),
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
    let (checksum, etag, diffs, parts_compared) = compare(local_size, &local, &remote);
    if let Some(d) = diffs.first() {
        return Err(mismatch(
            format!("stored part {} checksum", d.number),
            d.local.clone(),
            d.remote.clone(),
        ));
    }
    if let Some(c) = checksum.as_ref().filter(|c| !c.matches) {
        return Err(mismatch(
            "stored object checksum".into(),
            c.local.clone(),
            c.remote.clone(),
        ));
    }
    if let Ok(e) = etag
        .as_ref()
        .map_err(|_| ())
        .and_then(|e| if e.matches { Err(()) } else { Ok(e) })
    {
        return Err(mismatch(
            "stored object ETag".into(),
            e.local.clone(),
            e.remote.clone(),
        ));
    }
    Ok(AfterUpload {
        method,
        why,
        checksum_matches: checksum.map(|c| c.matches),
        etag_matches: etag.ok().map(|e| e.matches),
        parts_compared,
    })
}

/// The outcome.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "verdict", content = "reason", rename_all = "snake_case")]
pub enum Verdict {
    /// Every comparison made matched, and at least one compared content.
    Identical,
    /// Something differs.
    Differs,
    /// Nothing could decide (with the reason).
    Unverifiable(String),
}

/// One value compared: what the local file gives and what S3 reports.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Compared {
    /// From the local file.
    pub local: String,
    /// From S3.
    pub remote: String,
    /// Whether they are equal.
    pub matches: bool,
}

impl Compared {
    fn new(local: String, remote: String) -> Compared {
        let matches = local == remote;
        Compared {
            local,
            remote,
            matches,
        }
    }
}

/// A part whose bytes differ.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PartDiff {
    /// Part number.
    pub number: u32,
    /// Its byte range in the object.
    pub range: Range<u64>,
    /// The local value (a checksum, or the first differing byte's offset when downloaded).
    pub local: String,
    /// The remote value.
    pub remote: String,
}

/// What S3 says about an object, reduced to what verify compares.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RemoteFacts {
    /// Size in bytes.
    pub size: u64,
    /// ETag, unquoted.
    pub etag: Option<String>,
    /// Whether the ETag is an MD5 (not under SSE-KMS or SSE-C).
    pub etag_is_md5: bool,
    /// The object checksum.
    pub checksum: Option<RemoteChecksum>,
    /// Part sizes in order (one entry for a single-part object).
    pub layout: Vec<u64>,
    /// Whether the object was uploaded in parts (its ETag and composite carry `-N`).
    pub multipart: bool,
    /// Each part's checksum, when GetObjectAttributes lists them (else empty).
    pub part_checksums: Vec<Option<String>>,
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
}

/// The report of one verification.
#[derive(Debug, Clone, Serialize)]
pub struct VerifyReport {
    /// Bucket.
    pub bucket: String,
    /// Key.
    pub key: String,
    /// Where the truth came from.
    pub method: Method,
    /// Why that method.
    pub why: String,
    /// The outcome.
    #[serde(flatten)]
    pub verdict: Verdict,
    /// Local size and S3's.
    pub size: Compared,
    /// The object checksum (composite `-N` or full-object), when S3 has one.
    pub checksum: Option<Compared>,
    /// Its algorithm and type.
    pub checksum_algorithm: Option<String>,
    /// The ETag, when it is an MD5 and was compared.
    pub etag: Option<Compared>,
    /// Why the ETag was not compared, if it was not.
    pub etag_note: Option<String>,
    /// Number of parts in the object.
    pub parts: u32,
    /// Parts compared one by one (by checksum or by bytes).
    pub parts_compared: u32,
    /// Every part that differs.
    pub differing_parts: Vec<PartDiff>,
    /// Attempts made (more than one with `--wait`).
    pub attempts: u32,
    /// Seconds spent.
    pub seconds: f64,
    /// Local bytes hashed or compared per second, GiB/s.
    pub gib_per_s: f64,
}

/// Options of `tally verify`.
#[derive(Debug, Clone, Default)]
pub struct VerifyOptions {
    /// Compare the bytes by ranged GETs, whatever else is available.
    pub download: bool,
    /// Also compare the ETag when a checksum already decides (costs an MD5 of the file).
    pub etag: bool,
    /// Retry while the object is missing or differs, for this long.
    pub wait: Option<Duration>,
}

/// Which local hashes the comparison needs.
fn local_needs(remote: &RemoteFacts, opts: &VerifyOptions) -> (Option<ChecksumAlgorithm>, bool) {
    let alg = remote.checksum.as_ref().map(|c| c.algorithm);
    // A 32-bit CRC is a weak witness on its own: add the MD5 where the ETag can be compared.
    let weak = matches!(
        alg,
        None | Some(ChecksumAlgorithm::Crc32 | ChecksumAlgorithm::Crc32c)
    );
    (
        alg,
        remote.etag_is_md5 && remote.etag.is_some() && (weak || opts.etag),
    )
}

/// Compares local hashes (cut with `remote.layout`) with what S3 reports. Pure.
///
/// Returns the object checksum comparison, the ETag comparison (or why not), the parts whose
/// checksums differ, and how many parts were compared one by one.
pub fn compare(
    local_size: u64,
    local: &[RangeHash],
    remote: &RemoteFacts,
) -> (
    Option<Compared>,
    Result<Compared, String>,
    Vec<PartDiff>,
    u32,
) {
    let ranges = remote.ranges();
    let mut diffs = Vec::new();
    let mut compared = 0;
    if remote.part_checksums.len() == local.len() {
        for (i, (l, r)) in local.iter().zip(&remote.part_checksums).enumerate() {
            let (Some(l), Some(r)) = (&l.checksum, r) else {
                continue;
            };
            compared += 1;
            if &l.base64() != r {
                diffs.push(PartDiff {
                    number: i as u32 + 1,
                    range: ranges[i].clone(),
                    local: l.base64(),
                    remote: r.clone(),
                });
            }
        }
    }
    let checksum = remote.checksum.as_ref().and_then(|rc| {
        let digests: Vec<&Digest> = local.iter().filter_map(|h| h.checksum.as_ref()).collect();
        if digests.len() != local.len() || local_size != remote.size {
            return None;
        }
        let full = rc.kind == Some(ChecksumType::FullObject)
            || (rc.kind.is_none() && rc.algorithm == ChecksumAlgorithm::Crc64nvme);
        let value = if !remote.multipart {
            // One PutObject: the checksum of the whole body.
            digests.first()?.base64()
        } else if full && hash::is_crc(rc.algorithm) {
            let pairs: Vec<(&Digest, u64)> = digests
                .iter()
                .copied()
                .zip(remote.layout.iter().copied())
                .collect();
            hash::combine_crcs(rc.algorithm, &pairs).base64()
        } else if full {
            return None;
        } else {
            hash::composite(rc.algorithm, &digests)
        };
        // GetObjectAttributes reports composites without "-N": compare the value, and N when given.
        let remote_value = rc.value.clone();
        let local_cmp = if remote_value.contains('-') {
            value
        } else {
            value.split('-').next().unwrap_or_default().to_owned()
        };
        Some(Compared::new(local_cmp, remote_value))
    });
    let etag = match (&remote.etag, remote.etag_is_md5) {
        (None, _) => Err("S3 returned no ETag".to_owned()),
        (Some(_), false) => Err("not an MD5 under SSE-KMS/SSE-C, not compared".to_owned()),
        (Some(e), true) => {
            let md5s: Option<Vec<[u8; 16]>> = local.iter().map(|h| h.md5).collect();
            match md5s {
                None => {
                    Err("not compared: the checksum decides (--etag compares it too)".to_owned())
                }
                Some(_) if local_size != remote.size => Err("sizes differ".to_owned()),
                Some(m) if !remote.multipart => Ok(Compared::new(hash::hex(&m[0]), e.clone())),
                Some(m) => Ok(Compared::new(hash::etag_of_md5s(&m), e.clone())),
            }
        }
    };
    (checksum, etag, diffs, compared)
}

/// Hashes the local file over `ranges` on the rayon pool (the async task only waits).
async fn hash_local(
    src: Arc<Source>,
    ranges: Vec<Range<u64>>,
    alg: Option<ChecksumAlgorithm>,
    md5: bool,
) -> Vec<RangeHash> {
    tokio::task::spawn_blocking(move || {
        ranges
            .par_iter()
            .map(|r| hash::hash_range(alg, md5, &src.bytes()[r.start as usize..r.end as usize]))
            .collect()
    })
    .await
    .expect("hashing does not panic")
}

/// Learns what S3 says about `obj`: HEAD (size, checksum, ETag, encryption), then
/// GetObjectAttributes where the server has it, then the part layout from HEAD `?partNumber`
/// when nothing else gives it.
pub async fn remote_facts<C: S3Api>(
    s3: &C,
    obj: &ObjectUrl,
    known_layout: Option<&[u64]>,
) -> Result<(RemoteFacts, Method, String), Error> {
    let head = s3
        .head_object(obj, None)
        .await
        .map_err(Error::s3("HeadObject", None, None))?;
    let mut facts = RemoteFacts {
        size: head.size,
        etag: head.etag.clone(),
        etag_is_md5: head.etag_is_md5(),
        checksum: head.checksum.clone(),
        multipart: head.etag.as_deref().is_some_and(|e| e.contains('-'))
            || head
                .checksum
                .as_ref()
                .is_some_and(|c| c.value.contains('-')),
        ..RemoteFacts::default()
    };
    let attrs =
        s3.object_attributes(obj)
            .await
            .map_err(Error::s3("GetObjectAttributes", None, None))?;
    let why_no_attrs = match &attrs {
        None => "the server does not implement GetObjectAttributes",
        Some(a) if a.parts.is_empty() && a.parts_count.is_some_and(|n| n > 0) => {
            "GetObjectAttributes lists no per-part checksums for this object"
        }
        Some(_) => "",
    };
    if let Some(a) = &attrs {
        if facts.checksum.is_none() {
            facts.checksum = a.checksum.clone();
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
        if complete {
            facts.layout = a.parts.iter().map(|p| p.size).collect();
            facts.part_checksums = a.parts.iter().map(|p| p.checksum.clone()).collect();
            return Ok((
                facts,
                Method::ObjectAttributes,
                "GetObjectAttributes lists every part's size and checksum".into(),
            ));
        }
    }
    if !facts.multipart {
        facts.layout = vec![facts.size];
        let why = if attrs.is_some() {
            "a single-part object: its checksum and ETag cover it whole"
        } else {
            "a single-part object (the server does not implement GetObjectAttributes)"
        };
        return Ok((facts, Method::HeadLayout, why.into()));
    }
    facts.layout = match known_layout {
        Some(l) => l.to_vec(),
        None => part_layout(s3, obj).await?,
    };
    Ok((
        facts,
        Method::HeadLayout,
        format!("{why_no_attrs}: part sizes from HEAD ?partNumber, checksum and ETag from HEAD"),
    ))
}

/// The part sizes of a multipart object, from HEAD `?partNumber=N` (in parallel).
async fn part_layout<C: S3Api>(s3: &C, obj: &ObjectUrl) -> Result<Vec<u64>, Error> {
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
        .buffered(FETCH_CONCURRENCY)
        .try_collect()
        .await?;
    sizes.extend(rest);
    Ok(sizes)
}

/// Compares the object's bytes with the local file over `ranges`, by ranged GETs of at most
/// 8 MiB, 16 in flight, never stored. Returns the parts that differ (first differing offset).
async fn compare_bytes<C: S3Api>(
    s3: &C,
    obj: &ObjectUrl,
    src: &Arc<Source>,
    ranges: &[Range<u64>],
    etag: Option<&str>,
) -> Result<Vec<PartDiff>, Error> {
    let chunks: Vec<(u32, Range<u64>)> = ranges
        .iter()
        .enumerate()
        .flat_map(|(i, r)| {
            (r.start..r.end)
                .step_by(GET_CHUNK as usize)
                .map(move |s| (i as u32 + 1, s..(s + GET_CHUNK).min(r.end)))
        })
        .collect();
    let firsts: Vec<(u32, Option<u64>)> = stream::iter(chunks)
        .map(|(n, r)| {
            let src = src.clone();
            async move {
                let remote = s3.get_range(obj, r.clone(), etag).await.map_err(Error::s3(
                    "GetObject",
                    None,
                    None,
                ))?;
                let diff = tokio::task::spawn_blocking(move || {
                    let local = &src.bytes()[r.start as usize..r.end as usize];
                    if remote.len() != local.len() {
                        return Some(r.start + remote.len().min(local.len()) as u64);
                    }
                    local
                        .iter()
                        .zip(remote.iter())
                        .position(|(a, b)| a != b)
                        .map(|i| r.start + i as u64)
                })
                .await
                .expect("comparing does not panic");
                Ok::<_, Error>((n, diff))
            }
        })
        .buffered(FETCH_CONCURRENCY)
        .try_collect()
        .await?;
    let mut diffs: Vec<PartDiff> = Vec::new();
    for (n, first) in firsts {
        let Some(at) = first else { continue };
        if diffs.last().is_some_and(|d| d.number == n) {
            continue;
        }
        diffs.push(PartDiff {
            number: n,
            range: ranges[n as usize - 1].clone(),
            local: format!("bytes differ from offset {at}"),
            remote: "downloaded bytes".into(),
        });
    }
    Ok(diffs)
}

/// Verifies `obj` against the local file `src` once.
async fn verify_once<C: S3Api>(
    s3: &C,
    src: &Arc<Source>,
    obj: &ObjectUrl,
    opts: &VerifyOptions,
) -> Result<VerifyReport, Error> {
    let started = Instant::now();
    let (remote, mut method, mut why) = remote_facts(s3, obj, None).await?;
    let local_size = src.len();
    let size = Compared::new(local_size.to_string(), remote.size.to_string());
    let mut report = VerifyReport {
        bucket: obj.bucket.clone(),
        key: obj.key.clone(),
        method,
        why: why.clone(),
        verdict: Verdict::Identical,
        size: size.clone(),
        checksum: None,
        checksum_algorithm: remote.checksum.as_ref().map(|c| {
            format!(
                "{}{}",
                c.algorithm,
                c.kind.map(|k| format!(" {k}")).unwrap_or_default()
            )
        }),
        etag: None,
        etag_note: None,
        parts: remote.layout.len() as u32,
        parts_compared: 0,
        differing_parts: Vec::new(),
        attempts: 1,
        seconds: 0.0,
        gib_per_s: 0.0,
    };
    if !size.matches {
        report.verdict = Verdict::Differs;
        report.why = format!("{why}; the sizes differ, so no content was compared");
        return Ok(finish(report, started, 0));
    }
    let ranges = remote.ranges();
    let (alg, md5) = local_needs(&remote, opts);
    let decidable = alg.is_some() || md5;
    if opts.download || !decidable {
        method = Method::Download;
        why = if opts.download {
            "--download: the bytes compared with the local file".into()
        } else {
            format!(
                "no checksum, and the ETag {}: only the bytes can decide",
                if remote.etag.is_none() {
                    "is missing"
                } else {
                    "is not an MD5 (SSE-KMS/SSE-C)"
                }
            )
        };
        let diffs = compare_bytes(s3, obj, src, &ranges, remote.etag.as_deref()).await?;
        report.method = method;
        report.why = why;
        report.parts_compared = ranges.len() as u32;
        report.verdict = if diffs.is_empty() {
            Verdict::Identical
        } else {
            Verdict::Differs
        };
        report.differing_parts = diffs;
        return Ok(finish(report, started, local_size));
    }
    let local = hash_local(src.clone(), ranges.clone(), alg, md5).await;
    let (checksum, etag, diffs, compared) = compare(local_size, &local, &remote);
    report.checksum = checksum;
    match etag {
        Ok(c) => report.etag = Some(c),
        Err(note) => report.etag_note = Some(note),
    }
    report.parts_compared = compared;
    report.differing_parts = diffs;
    let differs = report.checksum.as_ref().is_some_and(|c| !c.matches)
        || report.etag.as_ref().is_some_and(|c| !c.matches)
        || !report.differing_parts.is_empty();
    report.verdict = if differs {
        Verdict::Differs
    } else {
        Verdict::Identical
    };
    if differs && report.differing_parts.is_empty() {
        // The object differs, but nothing per part says where: find the parts by their bytes.
        report.differing_parts =
            compare_bytes(s3, obj, src, &ranges, remote.etag.as_deref()).await?;
        report.parts_compared = ranges.len() as u32;
        report.why = format!("{why}; the differing parts were found by downloading and comparing");
    }
    Ok(finish(report, started, local_size))
}

fn finish(mut r: VerifyReport, started: Instant, bytes: u64) -> VerifyReport {
    r.seconds = started.elapsed().as_secs_f64();
    r.gib_per_s = bytes as f64 / (1u64 << 30) as f64 / r.seconds.max(1e-9);
    r
}

/// `tally verify FILE s3://BUCKET/KEY`: verifies, retrying with backoff under `opts.wait` while the
/// object is missing or differs.
pub async fn verify<C: S3Api>(
    s3: &C,
    file: &std::path::Path,
    obj: &ObjectUrl,
    opts: &VerifyOptions,
) -> Result<VerifyReport, Error> {
    let path = file.to_owned();
    let src = Arc::new(
        tokio::task::spawn_blocking(move || Source::open(&path))
            .await
            .expect("opening does not panic")?,
    );
    let deadline = opts.wait.map(|w| Instant::now() + w);
    let mut delay = Duration::from_millis(500);
    let mut attempts = 0;
    loop {
        attempts += 1;
        let result = verify_once(s3, &src, obj, opts).await;
        let retry = match &result {
            Ok(r) => r.verdict == Verdict::Differs,
            Err(Error::S3 { source, .. }) => source.kind == S3ErrorKind::NotFound,
            Err(_) => false,
        };
        match deadline {
            Some(d) if retry && Instant::now() + delay < d => {
                tracing::info!(attempts, "object missing or different; retrying");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(30));
            }
            _ => {
                return result.map(|mut r| {
                    r.attempts = attempts;
                    r
                });
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::Engine as _;

    fn local(
        data: &[u8],
        sizes: &[u64],
        alg: Option<ChecksumAlgorithm>,
        md5: bool,
    ) -> Vec<RangeHash> {
        let mut at = 0usize;
        sizes
            .iter()
            .map(|s| {
                let h = hash::hash_range(alg, md5, &data[at..at + *s as usize]);
                at += *s as usize;
                h
            })
            .collect()
    }

    #[test]
    fn the_published_aws_reply_names_the_part_that_differs() {
        // The GetObjectAttributes reply AWS publishes (S3-FACTS.md): 4 parts with SHA-256.
        let remote_parts = [
            "Y17ezXQs3T0uBd1IfCd5+b0Z3S44Gfx5IuCN431af7I=",
            "IO5OIm9O4H4UKCMYKqZ3g3sK1GK713lABEmOU991MC8=",
            "yWHu1DARkVxDJ6fJyuD9DmdNIamLjAKE26jM8cRUVQM=",
            "XxUYpRqbSiFjDrXJTrDdzJBmTNYblVqWQ6xkB5LGLlM=",
        ];
        let sizes = [16777216u64, 16777216, 16777216, 5000192];
        // Local hashes equal to parts 1, 2 and 4, and a different part 3.
        let b64 = base64::engine::general_purpose::STANDARD;
        let mut local: Vec<RangeHash> = remote_parts
            .iter()
            .zip(sizes)
            .map(|(c, len)| RangeHash {
                checksum: Some(Digest::from_bytes(b64.decode(c).unwrap())),
                md5: None,
                len,
            })
            .collect();
        local[2].checksum = Some(hash::checksum(ChecksumAlgorithm::Sha256, b"other"));
        let remote = RemoteFacts {
            size: sizes.iter().sum(),
            etag: Some("7931c2b8a6c796c7abb378bb546467cb-4".into()),
            etag_is_md5: true,
            checksum: None,
            layout: sizes.to_vec(),
            multipart: true,
            part_checksums: remote_parts.iter().map(|s| Some(s.to_string())).collect(),
        };
        let (_, etag, diffs, compared) = compare(remote.size, &local, &remote);
        assert_eq!(compared, 4);
        assert_eq!(diffs.len(), 1);
        assert_eq!(diffs[0].number, 3);
        assert_eq!(diffs[0].range, 33554432..50331648);
        assert!(etag.is_err(), "no MD5 computed: the checksums decide");
    }

    #[test]
    fn composite_full_object_and_etag_from_a_layout() {
        let data: Vec<u8> = (0..25_000u32).map(|i| (i % 253) as u8).collect();
        let sizes = [10_000u64, 10_000, 5_000];
        for (alg, kind) in [
            (ChecksumAlgorithm::Sha256, ChecksumType::Composite),
            (ChecksumAlgorithm::Crc32c, ChecksumType::Composite),
            (ChecksumAlgorithm::Crc64nvme, ChecksumType::FullObject),
        ] {
            let l = local(&data, &sizes, Some(alg), true);
            let parts: Vec<hash::PartHash> = l
                .iter()
                .map(|h| hash::PartHash {
                    checksum: h.checksum.clone().unwrap(),
                    md5: h.md5,
                    len: h.len,
                })
                .collect();
            let want = hash::multipart_checksum(alg, kind, &parts).value;
            let etag = hash::multipart_etag(&parts).unwrap();
            let mut remote = RemoteFacts {
                size: data.len() as u64,
                etag: Some(etag.clone()),
                etag_is_md5: true,
                checksum: Some(RemoteChecksum {
                    algorithm: alg,
                    kind: Some(kind),
                    value: want.clone(),
                }),
                layout: sizes.to_vec(),
                multipart: true,
                part_checksums: Vec::new(),
            };
            let (c, e, d, _) = compare(data.len() as u64, &l, &remote);
            assert!(c.unwrap().matches, "{alg}");
            assert!(e.unwrap().matches, "{alg}");
            assert!(d.is_empty());
            // GetObjectAttributes' form of a composite, without "-N", matches too.
            if kind == ChecksumType::Composite {
                remote.checksum.as_mut().unwrap().value =
                    want.split('-').next().unwrap().to_owned();
                assert!(compare(data.len() as u64, &l, &remote).0.unwrap().matches);
            }
            // One changed byte changes both.
            let mut other = data.clone();
            other[12_345] ^= 1;
            let l2 = local(&other, &sizes, Some(alg), true);
            let (c, e, _, _) = compare(data.len() as u64, &l2, &remote);
            assert!(!c.unwrap().matches && !e.unwrap().matches, "{alg}");
        }
    }

    #[test]
    fn a_kms_etag_is_never_compared() {
        let data = b"single part object";
        let l = local(data, &[data.len() as u64], None, true);
        let remote = RemoteFacts {
            size: data.len() as u64,
            etag: Some("0123456789abcdef0123456789abcdef".into()),
            etag_is_md5: false,
            layout: vec![data.len() as u64],
            ..RemoteFacts::default()
        };
        let (c, e, _, _) = compare(data.len() as u64, &l, &remote);
        assert!(c.is_none());
        assert!(e.unwrap_err().contains("SSE-KMS"));
        assert_eq!(
            local_needs(&remote, &VerifyOptions::default()),
            (None, false)
        );
    }
}
