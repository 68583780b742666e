//! Verify: is this object the local file, part by part, whoever uploaded it?
//!
//! What S3 says comes from [`crate::remote::facts`]; the local file is hashed here, cut with S3's
//! own part layout, and [`compare::compare`], a pure function, turns both into a typed report of
//! every difference. On request (`--download`), or when nothing else can decide (no checksum and an
//! ETag that is not an MD5; or a difference whose part cannot be named otherwise), the object's
//! bytes are read by the one ranged reader ([`crate::remote::ranged`]) and compared byte by byte
//! with the local file, never stored.

mod after_upload;
pub(crate) mod compare;
mod prove;

use std::ops::Range;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::TryStreamExt as _;
use rayon::prelude::*;
use serde::Serialize;

pub use self::after_upload::{AfterUpload, after_upload, after_upload_or_bytes};
pub use self::compare::{Comparison, PartDiff};
pub(crate) use self::prove::by_listed_etag;
pub use self::prove::{Proof, prove};
pub use crate::compare::Compared;
pub use crate::remote::facts::{Method, RemoteFacts};

use crate::error::{Changed, Error};
use crate::exec::{blocking, on_pool};
use crate::hash::{self, RangeHash};
use crate::remote::facts::{Learned, remote_facts};
use crate::remote::ranged::{Chunk, PIECE, Pinned, RangedReader, Window, pieces};
use crate::retry::Policy;
use crate::s3::S3Api;
use crate::s3::S3ErrorKind;
use crate::source::Source;
use crate::vocab::ChecksumAlgorithm;
use crate::vocab::ObjectUrl;

/// The outcome.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "verdict", rename_all = "snake_case")]
pub enum Verdict {
    /// Every comparison made matched, and at least one compared content.
    Identical,
    /// Something differs.
    Differs,
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
    /// What was compared with the local file, in words: the bytes the server sends, or only the
    /// values it reports (which prove what it says it holds, not the bytes).
    pub compared: String,
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
    /// Counts the local bytes as they are hashed or compared (a progress bar), when shown.
    pub meter: Option<crate::progress::Meter>,
}

/// Hashes the local file over `ranges` on the rayon pool (the async task only waits).
async fn hash_local(
    src: Arc<Source>,
    ranges: Vec<Range<u64>>,
    alg: Option<ChecksumAlgorithm>,
    md5: bool,
    meter: Option<crate::progress::Meter>,
) -> Vec<RangeHash> {
    on_pool(move || {
        ranges
            .par_iter()
            .map(|r| {
                // Mapped in one call, hashed, and given back: verifying (or proving, for a tree)
                // a file never holds more of it resident than the ranges being hashed.
                let _ = src.populate(r.clone());
                let h = hash::hash_range(alg, md5, &src.bytes()[r.start as usize..r.end as usize]);
                src.release(r.clone());
                if let Some(m) = &meter {
                    m.add(r.end - r.start);
                }
                h
            })
            .collect()
    })
    .await
}

/// Compares the object's bytes with the local file over `ranges` (its parts), read by the ranged
/// reader in pieces of at most 8 MiB, compared on the pool as they arrive, never stored. Returns
/// the parts that differ (with the first differing offset).
async fn compare_bytes<C: S3Api>(
    s3: &C,
    obj: &ObjectUrl,
    src: &Arc<Source>,
    ranges: &[Range<u64>],
    pin: &Pinned,
    meter: Option<&crate::progress::Meter>,
) -> Result<Vec<PartDiff>, Error> {
    let firsts: Vec<(usize, Option<u64>)> = RangedReader::with(
        s3,
        obj,
        pin,
        pieces(ranges, PIECE),
        Window::DEFAULT,
        |c: Chunk| {
            let src = src.clone();
            if let Some(m) = meter {
                m.add(c.body.len() as u64);
            }
            async move {
                let (of, r) = (c.piece.of, c.piece.range.clone());
                let first = on_pool(move || {
                    let local = &src.bytes()[r.start as usize..r.end as usize];
                    local
                        .iter()
                        .zip(c.body.iter())
                        .position(|(a, b)| a != b)
                        .map(|i| r.start + i as u64)
                })
                .await;
                Ok((of, first))
            }
        },
    )
    .try_collect()
    .await?;
    let mut diffs: Vec<PartDiff> = Vec::new();
    for (of, first) in firsts {
        let Some(at) = first else { continue };
        let number = of as u32 + 1;
        if diffs.last().is_some_and(|d| d.number == number) {
            continue;
        }
        diffs.push(PartDiff {
            number,
            range: ranges[of].clone(),
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
    let learned = remote_facts(s3, obj, None).await?;
    let mut report = first_report(obj, &learned, src.len());
    if !report.size.matches {
        report.verdict = Verdict::Differs;
        report.why = format!(
            "{}; the sizes differ, so no content was compared",
            learned.why
        );
        return Ok(finish(report, started, 0));
    }
    let remote = &learned.facts;
    let (alg, md5) = compare::local_needs(remote, opts);
    let decidable = alg.is_some() || md5;
    let target = Target { s3, obj, src };
    if opts.download || !decidable {
        report.method = Method::Download;
        report.why = why_bytes(remote, opts);
        let ranges = remote.ranges();
        let diffs = target
            .compare_bytes(&ranges, &remote.pinned(), opts.meter.as_ref())
            .await?;
        report.parts_compared = ranges.len() as u32;
        report.verdict = if diffs.is_empty() {
            Verdict::Identical
        } else {
            Verdict::Differs
        };
        report.differing_parts = diffs;
    } else {
        by_hashes(&target, &mut report, remote, (alg, md5), opts).await?;
    }
    Ok(finish(report, started, src.len()))
}

/// The object being verified and the local file it is compared with.
struct Target<'a, C> {
    s3: &'a C,
    obj: &'a ObjectUrl,
    src: &'a Arc<Source>,
}

impl<C: S3Api> Target<'_, C> {
    /// [`compare_bytes`] over `ranges` of this object.
    async fn compare_bytes(
        &self,
        ranges: &[Range<u64>],
        pin: &Pinned,
        meter: Option<&crate::progress::Meter>,
    ) -> Result<Vec<PartDiff>, Error> {
        compare_bytes(self.s3, self.obj, self.src, ranges, pin, meter).await
    }
}

/// The report before anything is compared but the sizes: what S3 says and why.
fn first_report(obj: &ObjectUrl, learned: &Learned, local_size: u64) -> VerifyReport {
    let remote = &learned.facts;
    VerifyReport {
        bucket: obj.bucket.clone(),
        key: obj.key.clone(),
        method: learned.method,
        why: learned.why.clone(),
        compared: REPORTED.into(),
        verdict: Verdict::Identical,
        size: Compared::new(local_size.to_string(), remote.size.to_string()),
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
    }
}

/// Why the bytes are compared: asked for, or nothing else can decide.
fn why_bytes(remote: &RemoteFacts, opts: &VerifyOptions) -> String {
    if opts.download {
        "--download: the bytes compared with the local file".into()
    } else if let Some(why) = &remote.set_aside {
        why.clone()
    } else {
        format!(
            "no checksum, and the ETag {}: only the bytes can decide",
            if remote.etag.is_none() {
                "is missing"
            } else {
                "is not an MD5 (SSE-KMS/SSE-C)"
            }
        )
    }
}

/// Hashes the local file with S3's part layout and compares it with what S3 reports; when the
/// object differs but nothing per part says where, the parts are found by their bytes.
async fn by_hashes<C: S3Api>(
    target: &Target<'_, C>,
    report: &mut VerifyReport,
    remote: &RemoteFacts,
    (alg, md5): (Option<ChecksumAlgorithm>, bool),
    opts: &VerifyOptions,
) -> Result<(), Error> {
    let ranges = remote.ranges();
    let local_size = target.src.len();
    let local = hash_local(
        target.src.clone(),
        ranges.clone(),
        alg,
        md5,
        opts.meter.clone(),
    )
    .await;
    let c = compare::compare(local_size, &local, remote);
    let differs = c.differs();
    report.etag_note = c.etag_note();
    report.checksum = c.checksum;
    report.etag = c.etag;
    report.parts_compared = c.parts_compared;
    report.differing_parts = c.differing_parts;
    report.verdict = if differs {
        Verdict::Differs
    } else {
        Verdict::Identical
    };
    if !differs || !report.differing_parts.is_empty() {
        return Ok(());
    }
    // The object differs, but nothing per part says where: find the parts by their bytes.
    let why = report.why.clone();
    report.differing_parts = target
        .compare_bytes(&ranges, &remote.pinned(), None)
        .await?;
    report.parts_compared = ranges.len() as u32;
    if report.differing_parts.is_empty() {
        // Every byte the server sends is the file's: the value it reports does not describe
        // its own bytes (moto names a CRC32 CRC32C). The bytes decide; the report says so.
        report.verdict = Verdict::Identical;
        report.method = Method::Download;
        report.why = format!(
            "{why}; the server's reported {} does not describe the bytes it sends (its \
             answer, not a difference in the data): the bytes were compared and decide",
            if report.checksum.as_ref().is_some_and(|c| !c.matches) {
                "checksum"
            } else {
                "ETag"
            }
        );
    } else {
        report.why = format!("{why}; the differing parts were found by downloading and comparing");
    }
    Ok(())
}

/// [`VerifyReport::compared`] when only reported values were compared.
const REPORTED: &str = "the server's reported checksum/ETag with the local file's (what the server \
     says it holds, not its bytes: --download compares the bytes)";
/// [`VerifyReport::compared`] when the bytes were.
const BYTES: &str = "the bytes the server sent with the local file's, byte by byte";

fn finish(mut r: VerifyReport, started: Instant, bytes: u64) -> VerifyReport {
    if r.method == Method::Download {
        r.compared = BYTES.into();
    }
    r.seconds = started.elapsed().as_secs_f64();
    r.gib_per_s = bytes as f64 / (1u64 << 30) as f64 / r.seconds.max(1e-9);
    r
}

/// `tally verify FILE s3://BUCKET/KEY`: verifies, retrying under [`Policy::WAIT`] for up to
/// `opts.wait` while the object is missing, differs, or is replaced while it is read.
pub async fn verify<C: S3Api>(
    s3: &C,
    file: &std::path::Path,
    obj: &ObjectUrl,
    opts: &VerifyOptions,
) -> Result<VerifyReport, Error> {
    let path = file.to_owned();
    let src = Arc::new(blocking(move || Source::open(&path)).await?);
    let mut backoff = opts
        .wait
        .map(|w| Policy::WAIT.start().until(Instant::now() + w));
    loop {
        let attempts = backoff.as_ref().map_or(1, |b| b.attempt());
        if let Some(m) = &opts.meter {
            // Each attempt reads the file again.
            m.take_back(u64::MAX);
        }
        let result = verify_once(s3, &src, obj, opts).await;
        let retry = match &result {
            Ok(r) => r.verdict == Verdict::Differs,
            Err(Error::S3 { source, .. }) => source.kind == S3ErrorKind::NotFound,
            Err(Error::ObjectChanged {
                when: Changed::WhileRead,
                ..
            }) => true,
            Err(_) => false,
        };
        let again = match backoff.as_mut() {
            Some(b) if retry => b.wait().await,
            _ => false,
        };
        if !again {
            return result.map(|mut r| {
                r.attempts = attempts;
                r
            });
        }
        tracing::info!(attempts, "object missing or different; retrying");
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::*;
    use crate::s3::MultipartWrite as _;
    use crate::s3::fake::FakeS3;

    /// Stores `content` at `obj` in one PutObject with its SHA-256.
    async fn put_sha256(s3: &FakeS3, obj: &ObjectUrl, content: &[u8]) {
        let alg = ChecksumAlgorithm::Sha256;
        s3.put_object(
            obj,
            alg,
            Bytes::copy_from_slice(content).into(),
            &hash::hash_part(alg, true, content),
            &crate::vocab::ObjectSettings::default(),
        )
        .await
        .unwrap();
    }

    #[tokio::test]
    async fn download_names_the_first_differing_byte() {
        let s3 = FakeS3::default();
        let obj = ObjectUrl::parse("s3://bkt/v").unwrap();
        let content: Vec<u8> = (0..(PIECE as usize + 5000))
            .map(|i| (i % 241) as u8)
            .collect();
        put_sha256(&s3, &obj, &content).await;
        let dir = tempfile::tempdir().unwrap();
        let same = dir.path().join("same");
        std::fs::write(&same, &content).unwrap();
        let mut other = content.clone();
        let at = PIECE as usize + 17;
        other[at] ^= 0x40;
        let changed = dir.path().join("changed");
        std::fs::write(&changed, &other).unwrap();
        let opts = VerifyOptions {
            download: true,
            ..VerifyOptions::default()
        };
        let r = verify(&s3, &same, &obj, &opts).await.unwrap();
        assert_eq!(
            (r.verdict, r.method),
            (Verdict::Identical, Method::Download)
        );
        let r = verify(&s3, &changed, &obj, &opts).await.unwrap();
        assert_eq!(r.verdict, Verdict::Differs);
        assert_eq!(r.differing_parts.len(), 1);
        assert_eq!(r.differing_parts[0].number, 1);
        assert_eq!(
            r.differing_parts[0].local,
            format!("bytes differ from offset {at}")
        );
    }

    /// The local bytes are counted as they are read, once per attempt, whether hashed (the
    /// server's checksums decide) or compared with the object's (`--download`).
    #[tokio::test]
    async fn the_meter_counts_every_local_byte_once() {
        let s3 = FakeS3::default();
        let obj = ObjectUrl::parse("s3://bkt/m").unwrap();
        let content: Vec<u8> = (0..(PIECE as usize * 2 + 123))
            .map(|i| (i % 239) as u8)
            .collect();
        put_sha256(&s3, &obj, &content).await;
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("f");
        std::fs::write(&file, &content).unwrap();
        for download in [false, true] {
            use crate::progress::Progress as _;
            let bar = crate::progress::Bar::new();
            let meter = bar.meter().unwrap();
            let opts = VerifyOptions {
                download,
                meter: Some(meter.clone()),
                ..VerifyOptions::default()
            };
            let r = verify(&s3, &file, &obj, &opts).await.unwrap();
            assert_eq!(r.verdict, Verdict::Identical);
            assert_eq!(meter.counted(), content.len() as u64, "download {download}");
        }
    }

    /// A server reporting a checksum that does not describe its bytes (moto names a CRC32
    /// CRC32C; stores a SHA-256 under SHA512): the server's answer, and the bytes decide.
    #[tokio::test]
    async fn a_server_checksum_that_cannot_be_right_is_set_aside_and_the_bytes_decide() {
        use crate::s3::tamper::Tamper;
        let content: Vec<u8> = (0..70_000).map(|i| (i % 251) as u8).collect();
        let dir = tempfile::tempdir().unwrap();
        let same = dir.path().join("same");
        std::fs::write(&same, &content).unwrap();
        let mut other = content.clone();
        other[123] ^= 1;
        let changed = dir.path().join("changed");
        std::fs::write(&changed, &other).unwrap();
        let obj = ObjectUrl::parse("s3://bkt/v").unwrap();
        for (alg, wrong) in [
            // Right length, wrong value.
            (ChecksumAlgorithm::Crc32c, "AAAAAA=="),
            // A 32-byte value under SHA512.
            (
                ChecksumAlgorithm::Sha512,
                "SKKmw0+TXPL5trFCH0RJKA0kmcLjwHHzqb5kBeETDx8=",
            ),
        ] {
            let s3 = Tamper::new(FakeS3::default()).head_reply(move |h| {
                if let Some(c) = h.checksum.as_mut() {
                    c.value = wrong.into();
                }
            });
            s3.inner()
                .put_object(
                    &obj,
                    alg,
                    Bytes::copy_from_slice(&content).into(),
                    &hash::hash_part(alg, true, &content),
                    &crate::vocab::ObjectSettings::default(),
                )
                .await
                .unwrap();
            let r = verify(&s3, &same, &obj, &VerifyOptions::default())
                .await
                .unwrap();
            assert_eq!(r.verdict, Verdict::Identical, "{alg}: {}", r.why);
            assert!(
                r.why.contains("the server's answer") || r.why.contains("its answer"),
                "{alg}: {}",
                r.why
            );
            // Never at the price of a changed file passing.
            let r = verify(&s3, &changed, &obj, &VerifyOptions::default())
                .await
                .unwrap();
            assert_eq!(r.verdict, Verdict::Differs, "{alg}");
        }
    }
}
