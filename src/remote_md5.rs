//! The full MD5 of an object already in S3, and storing it as a tag.
//!
//! A multipart ETag is not an MD5, yet catalogues and partners ask for one. When the ETag is the MD5
//! (one PutObject, not SSE-KMS/SSE-C) it is used without reading anything. Otherwise the object is
//! read with parallel ranged GETs (8 MiB each, 16 in flight: a bounded read-ahead window) and fed,
//! in order, to one MD5 hasher on its own thread, so the async threads only move bytes.
//!
//! With `--state FILE` the hasher's internal state and the byte offset are saved regularly, on
//! Ctrl-C/SIGTERM, on `--time-limit` and on errors, with the object's ETag and version id; a later
//! run with the same file continues from there, and refuses if the object changed in between.
//! Every GET carries `If-Match` with the ETag, so an object replaced mid-read is detected.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use bytes::Bytes;
use futures::{StreamExt as _, stream};
use md5::Md5;
use md5::digest::Digest as _;
use md5::digest::common::hazmat::{SerializableState, SerializedState};
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use crate::config::ObjectUrl;
use crate::error::{Error, S3Error, S3ErrorKind};
use crate::s3::S3Api;

/// Bytes per ranged GET.
const CHUNK: u64 = 8 * 1024 * 1024;
/// Ranged GETs in flight: the read-ahead window is `CHUNK * WINDOW`.
const WINDOW: usize = 16;
/// Save the state after at least this many bytes...
const CHECKPOINT_BYTES: u64 = 256 * 1024 * 1024;
/// ...or this much time, whichever comes first (a checkpoint is one small fsync'd file).
const CHECKPOINT_EVERY: Duration = Duration::from_secs(2);
/// The tag-set limit S3 enforces (LocalStack does not: tally checks).
pub const MAX_TAGS: usize = 10;
/// Names the hasher-state encoding: the exact md-5 version whose `SerializableState` wrote it.
const HASHER: &str = "md-5 0.11.0 SerializableState";

/// What `--state FILE` holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct SavedState {
    format: u32,
    hasher: String,
    bucket: String,
    key: String,
    etag: String,
    version_id: Option<String>,
    size: u64,
    offset: u64,
    /// The MD5 hasher's internal state after `offset` bytes, base64.
    state: String,
}

/// Options of `tally md5`.
#[derive(Debug, Clone, Default)]
pub struct Md5Options {
    /// Checkpoint file.
    pub state: Option<PathBuf>,
    /// Stop cleanly before this much time has passed (needs `state`).
    pub time_limit: Option<Duration>,
    /// Store the MD5 as a tag with this name.
    pub tag: Option<String>,
    /// Read the bytes even when the ETag is the MD5 (read-back).
    pub force_read: bool,
}

/// What happened to the tag.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum TagOutcome {
    /// The tag was added, the other tags kept.
    Added,
    /// The object already carried the same tag: nothing was written.
    AlreadyPresent,
    /// A tag of that name held another value; it now holds this MD5.
    Replaced {
        /// The value it held.
        old: String,
    },
}

/// The report of `tally md5`.
#[derive(Debug, Clone, Serialize)]
pub struct Md5Report {
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
    pub etag: Option<String>,
    /// The object's version id.
    pub version_id: Option<String>,
    /// `etag` (the ETag is the MD5) or `stream` (the object was read).
    pub source: &'static str,
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

fn state_error(path: &Path, why: impl std::fmt::Display) -> Error {
    Error::Usage(format!(
        "state file {}: {why}: check the path, or remove the file to start over",
        path.display()
    ))
}

fn load_state(path: &Path) -> Result<Option<SavedState>, Error> {
    match std::fs::read(path) {
        Ok(b) => serde_json::from_slice(&b)
            .map(Some)
            .map_err(|e| state_error(path, format!("unreadable ({e})"))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(state_error(path, e)),
    }
}

/// Writes the state atomically (temporary file, fsync, rename): a crash leaves the old or the new.
fn save_state(path: &Path, s: &SavedState) -> Result<(), Error> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let tmp = path.with_extension("tmp");
    let write = || -> std::io::Result<()> {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)?;
        f.write_all(&serde_json::to_vec_pretty(s).expect("state serializes"))?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)?;
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::File::open(dir)?.sync_all()?;
        }
        Ok(())
    };
    write().map_err(|e| state_error(path, e))
}

fn restore(s: &SavedState, path: &Path) -> Result<Md5, Error> {
    if s.hasher != HASHER {
        return Err(state_error(
            path,
            format!(
                "saved by another hasher ({}), this tally reads {HASHER}",
                s.hasher
            ),
        ));
    }
    let raw = B64
        .decode(&s.state)
        .map_err(|e| state_error(path, format!("hasher state is not base64 ({e})")))?;
    let st = SerializedState::<Md5>::try_from(&raw[..])
        .map_err(|_| state_error(path, "hasher state has the wrong length"))?;
    Md5::deserialize(&st).map_err(|_| state_error(path, "hasher state is invalid"))
}

enum Msg {
    Data(Bytes),
    Snapshot(tokio::sync::oneshot::Sender<Vec<u8>>),
}

/// The object's MD5: from the ETag when that is the MD5, else by reading it (see the module docs).
/// Returns a report with `finished: false` when stopped by the time limit or `cancel`, the state
/// saved.
pub async fn remote_md5<C: S3Api>(
    s3: &C,
    obj: &ObjectUrl,
    opts: &Md5Options,
    cancel: &CancellationToken,
) -> Result<Md5Report, Error> {
    let started = Instant::now();
    if opts.time_limit.is_some() && opts.state.is_none() {
        return Err(Error::Usage(
            "--time-limit needs --state FILE, so the next run can continue where this one stops"
                .into(),
        ));
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
        source: "stream",
        offset: 0,
        resumed_from: 0,
        state_file: opts.state.clone(),
        tag: None,
        tag_error: None,
        seconds: 0.0,
        mib_per_s: 0.0,
    };
    let etag_md5 = head.etag.as_deref().filter(|e| {
        head.etag_is_md5() && e.len() == 32 && e.bytes().all(|b| b.is_ascii_hexdigit())
    });
    if let Some(e) = etag_md5.filter(|_| !opts.force_read) {
        report.source = "etag";
        report.finished = true;
        report.offset = head.size;
        report.md5 = Some(e.to_ascii_lowercase());
    } else {
        stream_md5(s3, obj, &head, opts, cancel, started, &mut report).await?;
    }
    if let (Some(md5), Some(name)) = (report.md5.clone(), &opts.tag) {
        match tag_md5(s3, obj, report.version_id.as_deref(), name, &md5).await {
            Ok(outcome) => report.tag = Some((name.clone(), outcome)),
            Err(e) => report.tag_error = Some(e.to_string()),
        }
    }
    if let Some(m) = &report.md5 {
        let raw: Vec<u8> = (0..16)
            .map(|i| u8::from_str_radix(&m[2 * i..2 * i + 2], 16).unwrap_or(0))
            .collect();
        report.md5_base64 = Some(B64.encode(raw));
    }
    report.seconds = started.elapsed().as_secs_f64();
    report.mib_per_s =
        (report.offset - report.resumed_from) as f64 / (1024.0 * 1024.0) / report.seconds.max(1e-9);
    Ok(report)
}

async fn stream_md5<C: S3Api>(
    s3: &C,
    obj: &ObjectUrl,
    head: &crate::s3::HeadInfo,
    opts: &Md5Options,
    cancel: &CancellationToken,
    started: Instant,
    report: &mut Md5Report,
) -> Result<(), Error> {
    let etag = head.etag.clone().unwrap_or_default();
    let mut saved = SavedState {
        format: 1,
        hasher: HASHER.into(),
        bucket: obj.bucket.clone(),
        key: obj.key.clone(),
        etag: etag.clone(),
        version_id: head.version_id.clone(),
        size: head.size,
        offset: 0,
        state: String::new(),
    };
    let mut hasher = Md5::new();
    if let Some(path) = &opts.state {
        let p = path.clone();
        let loaded = tokio::task::spawn_blocking(move || load_state(&p))
            .await
            .expect("reading the state does not panic")?;
        if let Some(old) = loaded {
            if old.bucket != saved.bucket || old.key != saved.key {
                return Err(state_error(
                    path,
                    format!("it belongs to s3://{}/{}", old.bucket, old.key),
                ));
            }
            if old.etag != saved.etag
                || old.version_id != saved.version_id
                || old.size != saved.size
            {
                return Err(Error::Usage(format!(
                    "s3://{}/{} changed since the state was saved (ETag {} then, {} now): remove {} to hash the new object from the start",
                    obj.bucket,
                    obj.key,
                    old.etag,
                    saved.etag,
                    path.display()
                )));
            }
            hasher = restore(&old, path)?;
            saved.offset = old.offset;
        }
    }
    report.resumed_from = saved.offset;
    let deadline = opts.time_limit.map(|limit| {
        // Leave time to save the state before the limit.
        let margin = (limit / 10).clamp(Duration::from_secs(1), Duration::from_secs(10));
        started + limit.saturating_sub(margin)
    });

    let (tx, mut rx) = tokio::sync::mpsc::channel::<Msg>(4);
    let worker = std::thread::spawn(move || {
        while let Some(msg) = rx.blocking_recv() {
            match msg {
                Msg::Data(b) => hasher.update(&b),
                Msg::Snapshot(reply) => {
                    let _ = reply.send(hasher.serialize().to_vec());
                }
            }
        }
        hasher
    });

    let ranges: Vec<std::ops::Range<u64>> = (saved.offset..head.size)
        .step_by(CHUNK as usize)
        .map(|s| s..(s + CHUNK).min(head.size))
        .collect();
    let etag_ref = etag.as_str();
    let mut chunks = stream::iter(ranges)
        .map(|r| async move {
            let len = r.end - r.start;
            let b = s3.get_range(obj, r, Some(etag_ref)).await?;
            if b.len() as u64 != len {
                return Err(S3Error::transport(format!(
                    "short read: {} of {len} bytes",
                    b.len()
                )));
            }
            Ok(b)
        })
        .buffered(WINDOW);
    let mut offset = saved.offset;
    let mut last_save = (offset, Instant::now());
    let sleep_until = |d: Option<Instant>| async move {
        match d {
            Some(d) => tokio::time::sleep_until(d.into()).await,
            None => std::future::pending().await,
        }
    };
    let outcome: Result<bool, Error> = loop {
        let next = tokio::select! {
            biased;
            () = cancel.cancelled() => break Ok(false),
            () = sleep_until(deadline) => break Ok(false),
            n = chunks.next() => n,
        };
        match next {
            None => break Ok(true),
            Some(Err(e)) => {
                let changed = e.status == Some(412);
                let err = if changed {
                    Error::Usage(format!(
                        "s3://{}/{} was replaced while it was being read (its ETag changed): run again to hash the new object",
                        obj.bucket, obj.key
                    ))
                } else {
                    Error::S3 {
                        op: "GetObject",
                        part: None,
                        upload_id: None,
                        source: e,
                    }
                };
                break Err(err);
            }
            Some(Ok(b)) => {
                crate::seam::pause("chunk").await;
                offset += b.len() as u64;
                if tx.send(Msg::Data(b)).await.is_err() {
                    break Err(Error::Usage("the MD5 thread stopped".into()));
                }
                if opts.state.is_some()
                    && (offset - last_save.0 >= CHECKPOINT_BYTES
                        || last_save.1.elapsed() >= CHECKPOINT_EVERY)
                {
                    checkpoint(&tx, &mut saved, offset, opts).await?;
                    last_save = (offset, Instant::now());
                }
            }
        }
    };
    drop(chunks);
    // Whatever stopped the run, what was hashed so far is saved (a replaced object excepted).
    let finished = match outcome {
        Ok(done) => done,
        Err(e @ Error::Usage(_)) => return Err(e),
        Err(e) => {
            if opts.state.is_some() && offset > saved.offset {
                checkpoint(&tx, &mut saved, offset, opts).await?;
            }
            return Err(e);
        }
    };
    report.offset = offset;
    if !finished {
        checkpoint(&tx, &mut saved, offset, opts).await?;
        return Ok(());
    }
    drop(tx);
    let hasher =
        tokio::task::spawn_blocking(move || worker.join().expect("the MD5 thread does not panic"))
            .await
            .expect("joining does not panic");
    report.md5 = Some(crate::hash::hex(&hasher.finalize()));
    report.finished = true;
    if let Some(path) = opts.state.clone() {
        let _ = tokio::task::spawn_blocking(move || std::fs::remove_file(path)).await;
    }
    Ok(())
}

/// Saves the hasher's state after `offset` bytes (the hasher thread has them all: the channel is
/// in order).
async fn checkpoint(
    tx: &tokio::sync::mpsc::Sender<Msg>,
    saved: &mut SavedState,
    offset: u64,
    opts: &Md5Options,
) -> Result<(), Error> {
    let Some(path) = opts.state.clone() else {
        return Ok(());
    };
    let (reply, state) = tokio::sync::oneshot::channel();
    tx.send(Msg::Snapshot(reply))
        .await
        .map_err(|_| Error::Usage("the MD5 thread stopped".into()))?;
    let raw = state
        .await
        .map_err(|_| Error::Usage("the MD5 thread stopped".into()))?;
    saved.offset = offset;
    saved.state = B64.encode(raw);
    let s = saved.clone();
    tokio::task::spawn_blocking(move || save_state(&path, &s))
        .await
        .expect("saving does not panic")
}

/// Stores `md5_hex` as tag `name`, merged with the object's existing tags (never dropping them).
/// Does nothing if the same tag is already there; refuses clearly past S3's 10-tag limit.
pub async fn tag_md5<C: S3Api>(
    s3: &C,
    obj: &ObjectUrl,
    version: Option<&str>,
    name: &str,
    md5_hex: &str,
) -> Result<TagOutcome, Error> {
    let unsupported = |e: &S3Error| {
        Error::Usage(format!(
            "this server does not support object tagging ({e}): the MD5 was not stored as a tag"
        ))
    };
    let mut tags = match s3.get_tags(obj, version).await {
        Ok(t) => t,
        Err(e) if e.kind == S3ErrorKind::Unsupported => return Err(unsupported(&e)),
        Err(source) => return Err(Error::s3("GetObjectTagging", None, None)(source)),
    };
    let count = tags.len();
    let outcome = match tags.iter_mut().find(|(k, _)| k == name) {
        Some((_, v)) if v == md5_hex => return Ok(TagOutcome::AlreadyPresent),
        Some((_, v)) => {
            let old = std::mem::replace(v, md5_hex.to_owned());
            TagOutcome::Replaced { old }
        }
        None if count >= MAX_TAGS => {
            return Err(Error::Usage(format!(
                "s3://{}/{} already has {} tags, S3's limit: the MD5 tag '{name}' was not added (remove a tag first)",
                obj.bucket, obj.key, count
            )));
        }
        None => {
            tags.push((name.to_owned(), md5_hex.to_owned()));
            TagOutcome::Added
        }
    };
    match s3.put_tags(obj, version, &tags).await {
        Ok(()) => Ok(outcome),
        Err(e) if e.kind == S3ErrorKind::Unsupported => Err(unsupported(&e)),
        Err(source) => Err(Error::s3("PutObjectTagging", None, None)(source)),
    }
}

/// Reads the object back and compares its MD5 with `local_md5_hex`, retrying with backoff (0.5 s
/// doubling to 10 s) for up to `budget` while it is missing or differs (a store that still returns
/// an older version). Returns the number of reads; a mismatch if it never matches.
pub async fn read_back<C: S3Api>(
    s3: &C,
    obj: &ObjectUrl,
    local_md5_hex: &str,
    budget: Duration,
) -> Result<u32, Error> {
    let deadline = Instant::now() + budget;
    let mut delay = Duration::from_millis(500);
    let opts = Md5Options {
        force_read: true,
        ..Md5Options::default()
    };
    let never = CancellationToken::new();
    let mut attempts = 0;
    loop {
        attempts += 1;
        crate::seam::pause("readback").await;
        let seen = match remote_md5(s3, obj, &opts, &never).await {
            Ok(r) if r.md5.as_deref() == Some(local_md5_hex) => return Ok(attempts),
            Ok(r) => r.md5.unwrap_or_default(),
            Err(Error::S3 { source, .. }) if source.kind == S3ErrorKind::NotFound => {
                "no object".into()
            }
            // Replaced while being read: read again.
            Err(Error::Usage(m)) if m.contains("was replaced") => {
                "an object replaced mid-read".into()
            }
            Err(e) => return Err(e),
        };
        if Instant::now() + delay >= deadline {
            return Err(Error::Mismatch {
                what: format!("object read back after {attempts} reads: its MD5"),
                expected: local_md5_hex.to_owned(),
                actual: seen,
                upload_id: None,
            });
        }
        tracing::info!(attempts, "read-back differs; retrying");
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(Duration::from_secs(10));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hasher_state_resumes_at_any_offset() {
        let data: Vec<u8> = (0..100_003u32).map(|i| (i % 251) as u8).collect();
        let want = Md5::digest(&data);
        for cut in [0, 1, 63, 64, 65, 4096, 99_999] {
            let mut h = Md5::new();
            h.update(&data[..cut]);
            let saved = SavedState {
                format: 1,
                hasher: HASHER.into(),
                bucket: "b".into(),
                key: "k".into(),
                etag: "e".into(),
                version_id: None,
                size: data.len() as u64,
                offset: cut as u64,
                state: B64.encode(h.serialize()),
            };
            let text = serde_json::to_string(&saved).unwrap();
            let back: SavedState = serde_json::from_str(&text).unwrap();
            let mut h2 = restore(&back, Path::new("s")).unwrap();
            h2.update(&data[cut..]);
            assert_eq!(h2.finalize(), want, "cut at {cut}");
        }
    }

    #[test]
    fn a_state_from_another_hasher_is_refused() {
        let s = SavedState {
            format: 1,
            hasher: "md-5 9.9".into(),
            bucket: "b".into(),
            key: "k".into(),
            etag: "e".into(),
            version_id: None,
            size: 1,
            offset: 0,
            state: String::new(),
        };
        assert!(
            restore(&s, Path::new("s"))
                .unwrap_err()
                .to_string()
                .contains("another hasher")
        );
    }
}
