//! The parts not yet in S3: hashed from the mapping, sent with their checksum, checked, recorded.

use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Instant;

use futures::TryStreamExt as _;
use tokio::sync::oneshot;

use crate::error::Error;
use crate::exec::{blocking, on_pool};
use crate::hash::{self, FileHasher, WholeFile};
use crate::manifest::PartRecord;
use crate::plan::Part;
use crate::s3::{S3Api, WriteReply};
use crate::seam;
use crate::source::Source;
use crate::vocab::ETag;
use crate::vocab::{ChecksumAlgorithm, PartHash};

use super::Run;
use super::hedge;
use super::report::{compare_checksum, compare_etag};
use super::session::{DonePart, Session};
use crate::s3::throttle::counting;

/// Hashes and uploads every part not yet done through the engine's pipeline (bytes reserved in
/// order, hashing at most `hash_ahead` parts ahead, at most `--concurrency` parts of this file in
/// flight, and the engine's request slots shared with every other transfer); checks each reply
/// and records it durably before counting it.
///
/// Each part's body is taken from the mapping once ([`Source::part`]) and shared by the hash and
/// the send (the SDK's retries resend the same value); its pages are read ahead when the part is
/// admitted, released once it is hashed, and released again as the send faults them back in
/// ([`release_behind`]). The engine's byte budget bounds the parts being hashed; `--concurrency`
/// alone bounds the parts in flight, which cost only what their sockets take in one interval.
///
/// `whole`: the whole-file hasher (`--file-hash`, `--md5-tag`, `--read-back`, the caller's check),
/// fed in the same chunk loop as each part's checksum, see `Chain`; returned with every byte of
/// the file in it (parts S3 already holds are read for it too: the manifest keeps no hasher state).
pub(crate) async fn parts<C: S3Api>(
    run: &Run<'_, C>,
    start: &Session,
    first_send: &OnceLock<Instant>,
    whole: Option<FileHasher>,
) -> Result<(Vec<DonePart>, Option<WholeFile>), Error> {
    let (alg, md5) = (start.alg, run.cfg.content_md5);
    let have: HashSet<u32> = start.done.iter().map(|d| d.part.number).collect();
    let have = &have;
    let chain = whole.map(Chain::new);
    let chain = &chain;
    let flights = &hedge::Flights::default();
    // Every part, in order: the ones S3 already holds are only fed to the whole-file hasher, if any.
    let todo = start
        .parts()
        .filter(move |p| chain.is_some() || !have.contains(&p.number));
    let done = run
        .engine
        .parts_hashed(
            todo,
            |p: &Part| p.len,
            |part: Part| {
                let body = run.src.part(&part);
                let send = !have.contains(&part.number);
                // Called in part order: this part's turn with the whole-file hasher, if any.
                let turn = chain.as_ref().map(Chain::next_turn);
                let stage = HashStage {
                    src: run.src.clone(),
                    alg,
                    md5,
                    send,
                };
                stage.run(part, body, turn)
            },
            |prepared| std::future::ready(Ok(prepared)),
            |(part, body, hash): (Part, bytes::Bytes, Option<PartHash>)| {
                send_part(run, start, flights, first_send, part, body, hash)
            },
            run.cfg.concurrency,
        )
        .try_filter_map(|d| std::future::ready(Ok(d)))
        .try_collect()
        .await?;
    let whole = match chain {
        Some(c) => Some(c.finish().await?),
        None => None,
    };
    Ok((done, whole))
}

/// The hashing stage of one part, on the pool: what it needs besides the part.
struct HashStage {
    src: std::sync::Arc<Source>,
    alg: ChecksumAlgorithm,
    md5: bool,
    /// Whether the part is to be sent (S3 does not hold it yet).
    send: bool,
}

impl HashStage {
    /// Hashes `part` (its `body` from the mapping) when it is to be sent, and feeds the
    /// whole-file hasher on its `turn`, if any. `None` for a part only fed to that hasher.
    async fn run(
        self,
        part: Part,
        body: bytes::Bytes,
        turn: Option<(oneshot::Receiver<FileHasher>, oneshot::Sender<FileHasher>)>,
    ) -> Result<(Part, bytes::Bytes, Option<PartHash>), Error> {
        let HashStage {
            src,
            alg,
            md5,
            send,
        } = self;
        let data = body.clone();
        seam::pause("hash").await;
        // Read the part into the page cache now, while the parts before it are hashed
        // (a hint that may start I/O, so on a blocking thread).
        let (ahead, range) = (src.clone(), part.range());
        blocking(move || ahead.will_need(range)).await.ok();
        // With a whole-file hasher, wait (asynchronously) until the part before this
        // one handed it on: the parts of this file are then hashed one after another.
        // The hasher is lost only when the part before failed (its error comes first
        // out of the ordered pipeline, so this one's is never seen) or the whole
        // upload was dropped (Ctrl-C).
        let mut file = match turn {
            Some((prev, next)) => Some((prev.await.map_err(|_| Error::Interrupted)?, next)),
            None => None,
        };
        // A file that shrank would fault (SIGBUS) when its lost pages are read: look
        // first. The stat and the hashing both run on the pool; the part's pages are
        // mapped in one call before hashing (not one fault per 64 KiB).
        let range = part.range();
        let hash = on_pool(move || {
            src.check_unchanged()?;
            if send || file.is_some() {
                src.populate(range.clone()).ok();
            }
            let hash = match &mut file {
                Some((h, _)) if send => Some(hash::hash_part_and_file(alg, md5, &data, h)),
                Some((h, _)) => {
                    h.update(&data);
                    None
                }
                None => send.then(|| hash::hash_part(alg, md5, &data)),
            };
            if let Some((h, next)) = file {
                // The next part's turn; nobody waits for it once the pipeline stopped.
                let _ = next.send(h);
            }
            // Hashed: out of the resident set until it goes into the socket (the
            // page cache keeps it, so the send faults it back in without a read).
            src.release(range);
            Ok::<_, Error>(hash)
        })
        .await?;
        Ok((part, body, hash))
    }
}

/// Sends one hashed part (hedged when it lags), checks S3's reply and records it in the journal
/// before counting it. `None` for a part that was not to be sent.
async fn send_part<C: S3Api>(
    run: &Run<'_, C>,
    start: &Session,
    flights: &hedge::Flights,
    first_send: &OnceLock<Instant>,
    part: Part,
    body: bytes::Bytes,
    hash: Option<PartHash>,
) -> Result<Option<DonePart>, Error> {
    let (alg, upload_id) = (start.alg, start.upload_id.as_str());
    let Some(hash) = hash else {
        return Ok(None);
    };
    seam::pause("part").await;
    // The file may have shrunk since it was hashed: sending would read lost pages.
    let src = run.src.clone();
    blocking(move || src.check_unchanged()).await?;
    first_send.get_or_init(Instant::now);
    let (target, hash_ref) = (&run.cfg.target, &hash);
    // Every request's body counter: more than one request, or a body handed over more than once
    // (the SDK retried after a timeout), means the server may hold another copy of the part.
    let bodies = Mutex::new(Vec::<Arc<AtomicU64>>::new());
    let sending = hedge::send(
        flights,
        part.len,
        run.cfg.hedge,
        |moved| {
            let body = body.clone();
            bodies.lock().expect("bodies").push(moved.clone());
            counting(
                moved,
                run.s3
                    .upload_part(target, upload_id, part.number, alg, body, hash_ref),
            )
        },
        || {
            run.progress.note(&format!(
                "part {} moves far slower than the others: sending it again on \
                 another connection (the first answer wins)",
                part.number
            ))
        },
    );
    let (reply, etag) = checked(run, upload_id, &part, &hash, sending).await?;
    let twice = sent_twice(&bodies.into_inner().expect("bodies"), part.len);
    journal(start, &part, &hash, &etag, twice).await?;
    run.progress.part_done(part.len);
    Ok(Some(DonePart {
        part,
        hash,
        etag,
        checksum_echoed: reply.checksum.is_some(),
        sent_twice: twice,
    }))
}

/// Awaits `sending` (an UploadPart of `part`), giving back the part's pages as the socket takes
/// them, and checks S3's reply ([`check_part`]): the reply and the part's ETag. A failure is the
/// file's change when the file changed under the mapping ([`changed_or`]).
pub(super) async fn checked<C: S3Api>(
    run: &Run<'_, C>,
    upload_id: &str,
    part: &Part,
    hash: &PartHash,
    sending: impl std::future::Future<Output = Result<WriteReply, crate::s3::S3Error>>,
) -> Result<(WriteReply, ETag), Error> {
    let reply = match release_behind(&run.src, part.range(), sending).await {
        Ok(r) => r,
        Err(e) => {
            let err = Error::s3("UploadPart", Some(part.number), Some(upload_id))(e);
            return Err(changed_or(&run.src, err).await);
        }
    };
    let etag = check_part(part, hash, &reply, run.cfg.object.sse.as_ref(), upload_id)?;
    Ok((reply, etag))
}

/// Records `part`, acknowledged with `etag`, in the upload's journal (if it keeps one), durably;
/// `sent_twice` when it went out more than once (a later run may have to send it again).
pub(super) async fn journal(
    start: &Session,
    part: &Part,
    hash: &PartHash,
    etag: &ETag,
    sent_twice: bool,
) -> Result<(), Error> {
    if let Some(journal) = start.journal.clone() {
        let rec = PartRecord {
            sent_twice,
            ..part_record(part, hash, etag)
        };
        blocking(move || journal.record_part(&rec)).await?;
    }
    Ok(())
}

/// Whether a part of `len` bytes whose requests' bodies counted `bodies` went out more than once:
/// two requests (hedged), or one body handed over past its length (retried by the SDK).
fn sent_twice(bodies: &[Arc<AtomicU64>], len: u64) -> bool {
    bodies.len() > 1 || bodies.iter().any(|b| b.load(Ordering::Relaxed) > len)
}

/// How often a part being sent gives back the pages the socket already took.
const RELEASE_EVERY: std::time::Duration = std::time::Duration::from_millis(50);

/// Runs `sending` (a part's upload), releasing the part's pages from the resident set every
/// [`RELEASE_EVERY`] while it runs.
///
/// Why (issue 24): the HTTP client copies the part's body into the socket from the mapping, and
/// every page it copies stays mapped into the process until the body is dropped, i.e. until S3
/// answered: with 64 parts of 100 MiB in flight on slow connections that would be 6.4 GiB
/// resident. The body is one `Bytes` (the SDK's retries resend it), so it cannot release its own
/// pages as it goes; this does it from outside instead. Releasing pages still being read is safe
/// (`Source::release`): a read faults them back in from the page cache. What stays resident is
/// then about what the connections move in one interval (throughput x 50 ms), whatever the number
/// of parts in flight. The cost: each part's pages are faulted in twice (hashing, sending), minor
/// faults from the page cache, not reads of the disk (docs/link.md has the measurement).
///
/// `MADV_DONTNEED` does no I/O (it only clears page-table entries, a few microseconds for a
/// mostly unmapped 100 MiB range), so it runs here on the async thread, not on the pool.
async fn release_behind<T>(
    src: &Source,
    range: std::ops::Range<u64>,
    sending: impl std::future::Future<Output = T>,
) -> T {
    let mut tick = tokio::time::interval(RELEASE_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await;
    let mut sending = std::pin::pin!(sending);
    loop {
        tokio::select! {
            out = &mut sending => return out,
            _ = tick.tick() => src.release(range.clone()),
        }
    }
}

/// The whole-file hasher of one upload, handed from part to part in file order.
///
/// Why this design (issue 14): the whole-file digests need the bytes in file order, while the part
/// checksums were computed in parallel on the pool and a separate worker thread fed the parts in
/// order read each 100 MiB part again from memory, long after the pool had hashed it (cache-cold:
/// +13% CPU for xxh64 on a SHA-256 upload). Handing each chunk of a part to that worker while hot
/// would need part N+1's chunks to wait for part N's, i.e. pool threads blocked on one another
/// under the byte budget. Instead, with a whole-file hasher, each part is hashed in one chunk loop
/// that feeds the part checksum and the whole-file digests from the same 256 KiB in cache
/// ([`hash::hash_part_and_file`]), and the hasher's state goes from part N to part N+1 through a
/// oneshot channel: part N+1's task waits for it asynchronously (no pool thread is held waiting),
/// with its bytes already reserved in order and read ahead. Nothing can wait on a later part, so
/// there is no deadlock; the cost is that one file's parts are hashed one at a time (other files
/// of a tree still in parallel), i.e. one core's worth of hashing per such file.
struct Chain {
    /// The receiving end of the last turn handed out: the next part waits on it, and after the
    /// last part it holds the hasher with every byte in it.
    last: std::sync::Mutex<Option<oneshot::Receiver<FileHasher>>>,
}

impl Chain {
    fn new(hasher: FileHasher) -> Chain {
        let (tx, rx) = oneshot::channel();
        let _ = tx.send(hasher);
        Chain {
            last: std::sync::Mutex::new(Some(rx)),
        }
    }

    /// The next part's turn: where the hasher comes from, and where it goes after this part.
    fn next_turn(&self) -> (oneshot::Receiver<FileHasher>, oneshot::Sender<FileHasher>) {
        let (tx, rx) = oneshot::channel();
        let prev = self
            .last
            .lock()
            .expect("lock")
            .replace(rx)
            .expect("a turn is always held");
        (prev, tx)
    }

    /// The digests of every byte, once every part was hashed.
    async fn finish(&self) -> Result<WholeFile, Error> {
        let rx = self.last.lock().expect("lock").take();
        let h = rx
            .expect("finished once")
            .await
            .map_err(|_| Error::Interrupted)?;
        Ok(on_pool(move || h.finish()).await)
    }
}

/// `err`, unless the file changed under the mapping: a file cut short makes the kernel's copy of
/// the lost pages fail ("Bad address"), which the SDK reports as a network error. Then the true
/// cause is the change, and that is the error.
pub(crate) async fn changed_or(src: &std::sync::Arc<Source>, err: Error) -> Error {
    let src = src.clone();
    match blocking(move || src.check_unchanged()).await {
        Err(changed) => changed,
        Ok(()) => err,
    }
}

/// A part's reply must carry an ETag (CompleteMultipartUpload needs it), equal to the part's MD5
/// unless SSE-KMS is in force, and any checksum S3 echoes must be the one sent. Returns the ETag.
pub(crate) fn check_part(
    part: &Part,
    hash: &PartHash,
    reply: &WriteReply,
    sse: Option<&crate::vocab::Sse>,
    upload_id: &str,
) -> Result<ETag, Error> {
    let what = format!(
        "part {} (bytes {}..{})",
        part.number,
        part.offset,
        part.offset + part.len
    );
    let uid = Some(upload_id);
    compare_checksum(
        &format!("{what} checksum"),
        &hash.checksum.base64(),
        reply.checksum.as_deref(),
        uid,
    )?;
    let Some(etag) = reply.etag.clone() else {
        return Err(Error::Mismatch {
            what: format!("{what} ETag"),
            expected: hash.md5_hex().unwrap_or_else(|| "an ETag".into()),
            actual: "no ETag".into(),
            upload_id: uid.map(str::to_owned),
            then: None,
        });
    };
    compare_etag(
        &format!("{what} ETag"),
        hash.md5_hex().as_deref(),
        reply,
        sse,
        uid,
    )?;
    Ok(etag)
}

/// The manifest line for a part S3 acknowledged.
pub(crate) fn part_record(part: &Part, hash: &PartHash, etag: &ETag) -> PartRecord {
    PartRecord {
        number: part.number,
        offset: part.offset,
        len: part.len,
        checksum: hash.checksum.base64(),
        md5: hash.md5_hex().unwrap_or_default(),
        etag: etag.clone(),
        sent_twice: false,
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::AtomicU64;

    use super::sent_twice;

    #[test]
    fn a_part_went_out_twice_with_two_requests_or_a_body_past_its_length() {
        let body = |n| Arc::new(AtomicU64::new(n));
        assert!(!sent_twice(&[body(100)], 100), "one request, one body");
        assert!(!sent_twice(&[body(40)], 100), "one request cut short");
        assert!(sent_twice(&[body(140)], 100), "the SDK sent the body again");
        assert!(sent_twice(&[body(30), body(100)], 100), "hedged");
    }
}
