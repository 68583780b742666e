//! The full MD5 of an object already in S3 (`tally md5`), and reading an upload back
//! (`--read-back`).
//!
//! A multipart ETag is not an MD5, yet catalogues and partners ask for one. When the ETag is the MD5
//! (one PutObject, not SSE-KMS/SSE-C) it is used without reading anything. Otherwise the object is
//! read by the streaming reader ([`StreamReader`]: GETs of 8 MiB pieces, a window of 32 MiB, every
//! GET pinned to the ETag) and its bodies are fed as they arrive, in order and without a copy, to
//! the one MD5 worker ([`SequentialMd5`]) on its own thread, so the async threads only move bytes.
//!
//! With `--state FILE` the hasher's state and the byte offset ([`SavedState`]) are saved regularly
//! (after a piece), on Ctrl-C/SIGTERM, on `--time-limit` and on errors; a later run with the same
//! file continues from there, and refuses if the object changed in between. The time limit stops a
//! run between pieces, and every run hashes at least one piece before it can, so a short limit
//! still makes progress.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use futures::StreamExt as _;
use md5::Md5;
use md5::digest::Digest as _;
use serde::Serialize;
use tokio_util::sync::CancellationToken;

use crate::compare;
use crate::error::{Changed, Error};
use crate::exec::blocking;
use crate::hash::SequentialMd5;
use crate::remote::md5_state::{self, SavedState};
use crate::remote::ranged::{PIECE, Pinned, StreamReader, Streamed, Window, pieces};
use crate::remote::tags::{TagOutcome, tag_md5};
use crate::retry::Policy;
use crate::s3::S3ErrorKind;
use crate::s3::{HeadInfo, S3Api};
use crate::vocab::ETag;
use crate::vocab::ObjectUrl;

/// Batches of about a MiB queued for the MD5 worker beyond the reader's window.
const MD5_QUEUE: usize = 16;
/// Save the state after at least this many bytes...
const CHECKPOINT_BYTES: u64 = 256 * 1024 * 1024;
/// ...or this much time, whichever comes first (a checkpoint is one small fsync'd file).
const CHECKPOINT_EVERY: Duration = Duration::from_secs(2);
/// The most of `--time-limit` kept in reserve for saving the state and exiting.
const MAX_RESERVE: Duration = Duration::from_secs(10);

/// Options of `tally md5`.
#[derive(Debug, Clone, Default)]
pub(crate) struct Md5Options {
    /// Checkpoint file.
    pub state: Option<PathBuf>,
    /// Stop cleanly before this much time has passed (needs `state`). Every run hashes at least
    /// one piece (8 MiB) first, so a limit shorter than one piece's read is exceeded by that read.
    pub time_limit: Option<Duration>,
    /// Store the MD5 as a tag with this name.
    pub tag: Option<String>,
    /// Read the bytes even when the ETag is the MD5 (read-back).
    pub force_read: bool,
    /// Counts the bytes read (a progress bar; a resumed run starts from its saved offset).
    pub meter: Option<crate::progress::Meter>,
}

/// Where the MD5 came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum Md5Source {
    /// The ETag is the MD5: nothing was read.
    Etag,
    /// The object was read and hashed.
    Stream,
}

/// The report of `tally md5`.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Md5Report {
    /// Bucket.
    pub bucket: String,
    /// Key.
    pub key: String,
    /// Whether the MD5 is complete (false: stopped by the time limit or a signal; run again).
    pub finished: bool,
    /// The MD5, hex.
    pub md5: Option<String>,
    /// The MD5, base64 (as Content-MD5).
    pub md5_base64: Option<String>,
    /// Object size.
    pub size: u64,
    /// The object's ETag.
    pub etag: Option<ETag>,
    /// The object's version id.
    pub version_id: Option<String>,
    /// `etag` (the ETag is the MD5) or `stream` (the object was read).
    pub source: Md5Source,
    /// Bytes hashed so far (the object size when finished).
    pub offset: u64,
    /// Where this run started (0, or the offset of a saved state).
    pub resumed_from: u64,
    /// The state file, when one is in use.
    pub state_file: Option<PathBuf>,
    /// The tag written (name and outcome), if asked.
    pub tag: Option<(String, TagOutcome)>,
    /// Why tagging failed, if it did (the MD5 is still reported).
    pub tag_error: Option<String>,
    /// Seconds.
    pub seconds: f64,
    /// MiB read and hashed per second in this run.
    pub mib_per_s: f64,
}

/// The 16 bytes of a 32-digit hex MD5.
pub(crate) fn md5_from_hex(text: &str) -> Option<[u8; 16]> {
    if text.len() != 32 || !text.is_ascii() {
        return None;
    }
    let mut out = [0u8; 16];
    for (i, b) in out.iter_mut().enumerate() {
        *b = u8::from_str_radix(&text[2 * i..2 * i + 2], 16).ok()?;
    }
    Some(out)
}

/// When a run with `limit` must stop reading: the limit less a reserve for saving the state (a
/// tenth of the limit, at most 10 s). A state is one small fsync'd file: the reserve never eats the
/// whole limit, and the first piece of each run is hashed whatever the deadline.
fn stop_reading_at(started: Instant, limit: Duration) -> Instant {
    started + limit.saturating_sub((limit / 10).min(MAX_RESERVE))
}

/// The object's MD5: from the ETag when that is the MD5, else by reading it (see the module docs).
/// Returns a report with `finished: false` when stopped by the time limit or `cancel`, the state
/// saved.
pub(crate) async fn remote_md5<C: S3Api>(
    s3: &C,
    obj: &ObjectUrl,
    opts: &Md5Options,
    cancel: &CancellationToken,
) -> Result<Md5Report, Error> {
    let started = Instant::now();
    match opts.time_limit {
        Some(_) if opts.state.is_none() => {
            return Err(Error::Usage(
                "--time-limit needs --state FILE, so the next run can continue where this one stops"
                    .into(),
            ));
        }
        Some(limit) if limit.is_zero() => {
            return Err(Error::Usage(
                "--time-limit 0s leaves no time to hash anything: give at least 1s".into(),
            ));
        }
        _ => {}
    }
    let head = s3
        .head_object(obj, None)
        .await
        .map_err(Error::s3("HeadObject", None, None))?;
    let mut report = Md5Report {
        bucket: obj.bucket.clone(),
        key: obj.key.clone(),
        finished: false,
        md5: None,
        md5_base64: None,
        size: head.size,
        etag: head.etag.clone(),
        version_id: head.version_id.clone(),
        source: Md5Source::Stream,
        offset: 0,
        resumed_from: 0,
        state_file: opts.state.clone(),
        tag: None,
        tag_error: None,
        seconds: 0.0,
        mib_per_s: 0.0,
    };
    let etag_md5 = head
        .etag
        .as_ref()
        .map(ETag::as_str)
        .filter(|_| head.etag_is_md5())
        .and_then(md5_from_hex);
    let digest = match etag_md5.filter(|_| !opts.force_read) {
        Some(d) => {
            report.source = Md5Source::Etag;
            report.finished = true;
            report.offset = head.size;
            Some(d)
        }
        None => stream_md5(s3, obj, &head, opts, cancel, started, &mut report).await?,
    };
    if let Some(d) = digest {
        report.md5 = Some(crate::vocab::hex(&d));
        report.md5_base64 = Some(B64.encode(d));
    }
    if let (Some(md5), Some(name)) = (report.md5.clone(), &opts.tag) {
        match tag_md5(s3, obj, report.version_id.as_deref(), name, &md5).await {
            Ok(outcome) => report.tag = Some((name.clone(), outcome)),
            Err(e) => report.tag_error = Some(e.to_string()),
        }
    }
    report.seconds = started.elapsed().as_secs_f64();
    report.mib_per_s =
        (report.offset - report.resumed_from) as f64 / (1024.0 * 1024.0) / report.seconds.max(1e-9);
    Ok(report)
}

/// Reads and hashes the object from the saved offset (or 0); `None` when stopped before the end
/// (the state saved, `report.offset` says how far).
async fn stream_md5<C: S3Api>(
    s3: &C,
    obj: &ObjectUrl,
    head: &HeadInfo,
    opts: &Md5Options,
    cancel: &CancellationToken,
    started: Instant,
    report: &mut Md5Report,
) -> Result<Option<[u8; 16]>, Error> {
    let mut saved = SavedState::new(obj, head);
    let mut hasher = Md5::new();
    if let Some(path) = &opts.state {
        let p = path.clone();
        if let Some(old) = blocking(move || md5_state::load(&p)).await? {
            hasher = old.resume_for(obj, head, path)?;
            saved = old;
        }
    }
    report.resumed_from = saved.offset;
    let deadline = opts.time_limit.map(|l| stop_reading_at(started, l));
    let stretch = hash_stretch(
        s3,
        obj,
        head,
        hasher,
        &mut saved,
        deadline,
        opts.state.as_deref(),
        cancel,
        opts.meter.as_ref(),
    )
    .await;
    report.offset = saved.offset;
    let digest = stretch?;
    if digest.is_some()
        && let Some(path) = opts.state.clone()
    {
        blocking(move || md5_state::remove(&path)).await;
    }
    report.finished = digest.is_some();
    Ok(digest)
}

/// Hashes the object `head` describes from `saved.offset` on, `hasher` holding the MD5 of the
/// bytes before it: the one loop behind `tally md5` and the serverless relay
/// (`tally-md5-relay`). Stops at the end (`Some(digest)`), or (`None`) at `stop_at` or on `cancel`,
/// but only between pieces and once it has hashed one, so every call progresses. `saved` is kept
/// current as it goes (offset and hasher state after the last whole piece) and, with `save_to`,
/// written there regularly, when stopped, and on an error that leaves the object as it was.
#[allow(clippy::too_many_arguments)] // the state, the clock and the checkpoint file are each the caller's
pub(crate) async fn hash_stretch<C: S3Api>(
    s3: &C,
    obj: &ObjectUrl,
    head: &HeadInfo,
    hasher: Md5,
    saved: &mut SavedState,
    stop_at: Option<Instant>,
    save_to: Option<&std::path::Path>,
    cancel: &CancellationToken,
    meter: Option<&crate::progress::Meter>,
) -> Result<Option<[u8; 16]>, Error> {
    let from = saved.offset;
    let mut md5 = SequentialMd5::resume(hasher, MD5_QUEUE);
    let pin = Pinned {
        etag: head.etag.clone(),
        version_id: head.version_id.clone(),
    };
    let mut reader = StreamReader::new(
        s3,
        obj,
        &pin,
        pieces(std::slice::from_ref(&(from..head.size)), PIECE),
        Window::STREAM,
    );
    if let Some(m) = meter {
        m.begin(head.size, from);
    }
    let mut at = At {
        offset: from,
        between: true,
        last_save: (from, Instant::now()),
    };
    let outcome: Result<bool, Error> = loop {
        if at.offset == head.size {
            break Ok(true);
        }
        // The time limit stops a run only between pieces and once it has hashed something: every
        // run progresses.
        let limit = stop_at.filter(|_| at.between && at.offset > from);
        // A limit already passed stops the run now: a sleep registered with the timer would only
        // fire once this task yields, and feeding the worker seldom makes it yield.
        if limit.is_some_and(|d| Instant::now() >= d) {
            break Ok(false);
        }
        let next = tokio::select! {
            biased;
            () = cancel.cancelled() => break Ok(false),
            () = sleep_until(limit) => break Ok(false),
            n = reader.next() => n,
        };
        match next {
            None => {
                break Err(Error::Internal(
                    "the ranged reader ended before the object did",
                ));
            }
            Some(Err(e)) => break Err(e),
            Some(Ok(bytes)) => at.feed(&mut md5, bytes, saved, save_to, meter).await?,
        }
    };
    drop(reader);
    settle(outcome, md5, saved, at.offset, save_to).await
}

/// Where a stretch is.
struct At {
    /// Bytes fed to the worker: what a checkpoint saves, wherever the run stops.
    offset: u64,
    /// Between two pieces (where the time limit may stop the run).
    between: bool,
    /// The offset and time of the last checkpoint.
    last_save: (u64, Instant),
}

impl At {
    /// Feeds `bytes` to the MD5 worker; at the end of a piece, writes a checkpoint to `save_to`
    /// when enough bytes or time went by since the last.
    async fn feed(
        &mut self,
        md5: &mut SequentialMd5,
        bytes: Streamed,
        saved: &mut SavedState,
        save_to: Option<&std::path::Path>,
        meter: Option<&crate::progress::Meter>,
    ) -> Result<(), Error> {
        self.offset += bytes.body.len() as u64;
        if let Some(m) = meter {
            m.add(bytes.body.len() as u64);
        }
        md5.feed(bytes.body).await;
        self.between = bytes.last;
        if !bytes.last {
            return Ok(());
        }
        crate::seam::pause("chunk").await;
        if save_to.is_some()
            && (self.offset - self.last_save.0 >= CHECKPOINT_BYTES
                || self.last_save.1.elapsed() >= CHECKPOINT_EVERY)
        {
            checkpoint(md5, saved, self.offset, save_to).await?;
            self.last_save = (self.offset, Instant::now());
        }
        Ok(())
    }
}

/// Sleeps until `d`, or forever without one.
async fn sleep_until(d: Option<Instant>) {
    match d {
        Some(d) => tokio::time::sleep_until(d.into()).await,
        None => std::future::pending().await,
    }
}

/// What the run comes to once it stopped at `offset` (`outcome`: whether the object ended, or
/// why not): the digest, or `None` with the state saved to go on from.
async fn settle(
    outcome: Result<bool, Error>,
    mut md5: SequentialMd5,
    saved: &mut SavedState,
    offset: u64,
    save_to: Option<&std::path::Path>,
) -> Result<Option<[u8; 16]>, Error> {
    // Whatever stopped the run, what was hashed so far is saved, unless the object was replaced
    // (the state would describe another object) or the worker is gone.
    let finished = match outcome {
        Ok(done) => done,
        Err(e @ (Error::ObjectChanged { .. } | Error::Internal(_))) => return Err(e),
        Err(e) => {
            if offset > saved.offset {
                checkpoint(&mut md5, saved, offset, save_to).await?;
            }
            return Err(e);
        }
    };
    if !finished {
        checkpoint(&mut md5, saved, offset, save_to).await?;
        return Ok(None);
    }
    saved.offset = offset;
    Ok(Some(blocking(move || md5.finish()).await))
}

/// Records the hasher's state after `offset` bytes in `saved` (the worker has them all: its queue
/// is in order) and writes it to `save_to`, if given.
async fn checkpoint(
    md5: &mut SequentialMd5,
    saved: &mut SavedState,
    offset: u64,
    save_to: Option<&std::path::Path>,
) -> Result<(), Error> {
    let hasher = md5
        .snapshot()
        .await
        .ok_or(Error::Internal("the MD5 thread stopped"))?;
    saved.capture(offset, &hasher);
    let Some(path) = save_to.map(ToOwned::to_owned) else {
        return Ok(());
    };
    let s = saved.clone();
    blocking(move || md5_state::save(&path, &s)).await
}

/// Reads the object back and compares its MD5 with `local_md5_hex`, retrying under
/// [`Policy::WAIT`] for up to `budget` while it is missing, differs, or is replaced mid-read (a
/// store that still returns an older version). Returns the number of reads; a mismatch if it never
/// matches.
pub(crate) async fn read_back<C: S3Api>(
    s3: &C,
    obj: &ObjectUrl,
    local_md5_hex: &str,
    budget: Duration,
) -> Result<u32, Error> {
    let mut backoff = Policy::WAIT.start().until(Instant::now() + budget);
    let opts = Md5Options {
        force_read: true,
        ..Md5Options::default()
    };
    let never = CancellationToken::new();
    loop {
        let attempts = backoff.attempt();
        crate::seam::pause("readback").await;
        let seen = match remote_md5(s3, obj, &opts, &never).await {
            Ok(r) if r.md5.as_deref() == Some(local_md5_hex) => return Ok(attempts),
            Ok(r) => r.md5.unwrap_or_default(),
            Err(Error::S3 { source, .. }) if source.kind == S3ErrorKind::NotFound => {
                "no object".into()
            }
            Err(Error::ObjectChanged {
                when: Changed::WhileRead,
                ..
            }) => "an object replaced mid-read".into(),
            Err(e) => return Err(e),
        };
        if !backoff.wait().await {
            return Err(compare::mismatch(
                &format!("object read back after {attempts} reads: its MD5"),
                local_md5_hex,
                &seen,
                None,
            ));
        }
        tracing::info!(attempts, "read-back differs; retrying");
    }
}

#[cfg(test)]
mod tests {
    use crate::hash;
    use bytes::Bytes;

    use super::*;
    use crate::s3::fake::FakeS3;
    use crate::s3::{MultipartWrite as _, ObjectRead as _};
    use crate::vocab::ChecksumAlgorithm;

    fn data(len: usize) -> Vec<u8> {
        let mut x = 0x9E37_79B9_7F4A_7C15u64;
        (0..len)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect()
    }

    /// A multipart object in the fake (its ETag is not an MD5, so it must be read).
    async fn multipart(s3: &FakeS3, obj: &ObjectUrl, content: &[u8], part: usize) {
        let alg = ChecksumAlgorithm::Sha256;
        let id = s3
            .create_multipart(
                obj,
                alg,
                alg.multipart_type(),
                &crate::vocab::ObjectSettings::default(),
            )
            .await
            .unwrap();
        let mut done = Vec::new();
        for (i, p) in content.chunks(part).enumerate() {
            let h = hash::hash_part(alg, true, p);
            let n = i as u32 + 1;
            let r = s3
                .upload_part(obj, &id, n, alg, Bytes::copy_from_slice(p), &h)
                .await
                .unwrap();
            done.push(crate::s3::CompletedPart {
                number: n,
                etag: r.etag.unwrap(),
                checksum: h.checksum.base64(),
            });
        }
        s3.complete_multipart(obj, &id, alg, &done, None)
            .await
            .unwrap();
    }

    #[test]
    fn the_reserve_never_eats_the_whole_limit() {
        let t = Instant::now();
        for (limit, reserve) in [(1, 100), (10, 1000), (60, 6000), (3600, 10_000)] {
            let limit = Duration::from_secs(limit);
            assert_eq!(
                stop_reading_at(t, limit),
                t + limit - Duration::from_millis(reserve),
                "{limit:?}"
            );
        }
    }

    /// A limit already used up when reading starts (as 1 s is against a large object on a slow
    /// start) still hashes a piece per run, and the runs add up to the object's MD5.
    #[tokio::test]
    async fn every_time_limited_run_hashes_at_least_one_piece() {
        let s3 = FakeS3::default();
        let obj = ObjectUrl::parse("s3://bkt/big").unwrap();
        let content = data(3 * PIECE as usize + 12_345);
        multipart(&s3, &obj, &content, 5 * 1024 * 1024 + 7).await;
        let dir = tempfile::tempdir().unwrap();
        // The progress meter: each run starts from the offset saved before it.
        let bar = crate::progress::Bar::new();
        let meter = crate::progress::Progress::meter(&bar).unwrap();
        let opts = Md5Options {
            state: Some(dir.path().join("md5.state")),
            time_limit: Some(Duration::from_secs(1)),
            meter: Some(meter.clone()),
            ..Md5Options::default()
        };
        let never = CancellationToken::new();
        let mut offsets = Vec::new();
        let report = loop {
            assert!(offsets.len() < 10, "no end in sight: {offsets:?}");
            // Pretend the run started long ago: its whole budget is gone before the first GET.
            let r = remote_md5_started(&s3, &obj, &opts, &never).await;
            assert_eq!(
                meter.counted(),
                r.offset,
                "the meter counts from the saved offset"
            );
            if r.finished {
                break r;
            }
            assert!(
                r.offset > r.resumed_from,
                "a run made no progress: {} -> {}",
                r.resumed_from,
                r.offset
            );
            offsets.push(r.offset);
        };
        assert_eq!(
            offsets,
            vec![PIECE, 2 * PIECE, 3 * PIECE],
            "one piece a run"
        );
        let want = crate::vocab::hex(&<[u8; 16]>::from(Md5::digest(&content)));
        assert_eq!(report.md5.as_deref(), Some(want.as_str()));
        assert_eq!(report.source, Md5Source::Stream);
        assert!(
            !dir.path().join("md5.state").exists(),
            "state removed when done"
        );
    }

    /// `remote_md5` with its clock started 10 s in the past, so the time limit is spent.
    async fn remote_md5_started(
        s3: &FakeS3,
        obj: &ObjectUrl,
        opts: &Md5Options,
        cancel: &CancellationToken,
    ) -> Md5Report {
        let head = s3.head_object(obj, None).await.unwrap();
        let started = Instant::now() - Duration::from_secs(10);
        let mut report = Md5Report {
            bucket: obj.bucket.clone(),
            key: obj.key.clone(),
            finished: false,
            md5: None,
            md5_base64: None,
            size: head.size,
            etag: head.etag.clone(),
            version_id: None,
            source: Md5Source::Stream,
            offset: 0,
            resumed_from: 0,
            state_file: opts.state.clone(),
            tag: None,
            tag_error: None,
            seconds: 0.0,
            mib_per_s: 0.0,
        };
        let d = stream_md5(s3, obj, &head, opts, cancel, started, &mut report)
            .await
            .unwrap();
        report.md5 = d.map(|d| crate::vocab::hex(&d));
        report
    }

    #[tokio::test]
    async fn a_zero_limit_is_refused_and_the_etag_shortcut_reads_nothing() {
        let s3 = FakeS3::default();
        let obj = ObjectUrl::parse("s3://bkt/small").unwrap();
        let content = data(1000);
        let alg = ChecksumAlgorithm::Sha256;
        s3.put_object(
            &obj,
            alg,
            Bytes::copy_from_slice(&content).into(),
            &hash::hash_part(alg, true, &content),
            &crate::vocab::ObjectSettings::default(),
        )
        .await
        .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let never = CancellationToken::new();
        let zero = Md5Options {
            state: Some(dir.path().join("s")),
            time_limit: Some(Duration::ZERO),
            ..Md5Options::default()
        };
        let e = remote_md5(&s3, &obj, &zero, &never).await.unwrap_err();
        assert!(matches!(e, Error::Usage(_)), "{e}");
        let r = remote_md5(&s3, &obj, &Md5Options::default(), &never)
            .await
            .unwrap();
        let want: [u8; 16] = Md5::digest(&content).into();
        assert_eq!(r.source, Md5Source::Etag);
        assert_eq!(r.md5, Some(crate::vocab::hex(&want)));
        assert_eq!(r.md5_base64, Some(B64.encode(want)));
    }
}
