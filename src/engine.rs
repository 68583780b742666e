//! The transfer engine: one budget for every transfer of a command, and the part pipeline.
//!
//! This is the file that schedules parts across files. A command (one file, or many) makes one
//! [`Engine`]; every transfer it runs shares its two limits:
//!
//! - **requests in flight**: every S3 request of every transfer goes through [`Limited`], which
//!   holds one of `concurrency` slots for the duration of the call (its SDK retries included). The
//!   slots are handed out first come, first served, so a huge file's parts and a tree's small files
//!   interleave instead of one starving the other. One exception: with `--concurrency` left out,
//!   a prefix download's small objects (one GET each) and a tree upload's small files (one
//!   PutObject each), at most [`BY_PLACES_MAX`] bytes, are bounded by their places among the
//!   objects or files in progress instead (`DownloadOptions::small_by_places`,
//!   `TreeConfig::small_by_places`). And a tree upload's read-back listing holds none: the run
//!   may await it while the requests holding slots are not polled (`batch::upload::upload_tree`).
//! - **bytes ahead**: before a part's bytes are touched (hashed from the memory map, or, for a
//!   download, received), its length is reserved from a byte budget. A download's part holds it
//!   until the part is written and recorded ([`Engine::parts`]); an upload's part only while it is
//!   hashed ([`Engine::parts_hashed`]): once hashed, its pages leave the resident set and come back
//!   only as they go into the socket, a few at a time (`upload::send`), so the parts on the wire
//!   cost no resident memory and `--concurrency` alone says how many there are (issue 24).
//!   Reservations are taken in part order within a transfer, so the oldest part of every transfer
//!   can always finish: the budget cannot deadlock, and memory does not grow with the number or
//!   the size of the files, nor with the number of parts in flight.
//!
//! [`Engine::parts`] is the pipeline a transfer runs its parts through: reserve (in order) ->
//! prepare on the CPU pool (at most [`crate::exec::hash_ahead`] ahead, results kept in order so a
//! whole-file hash can follow) -> an in-order hook -> the network step (at most the transfer's own
//! concurrency, in any order). Uploads hash then send; a download would fetch then hash and write,
//! through the same gates.

use std::future::Future;
use std::sync::Arc;

use bytes::Bytes;
use futures::{Stream, StreamExt as _, TryStreamExt as _, stream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::error::Error;
use crate::s3::S3Error;
use crate::s3::{
    CompletedPart, HeadInfo, HeldPart, InProgress, MultipartWrite, ObjectAttributes, ObjectRead,
    RangeBody, S3Api, Tagging, WriteReply,
};
use crate::vocab::ETag;
use crate::vocab::{ChecksumAlgorithm, ChecksumType, PartHash};
use crate::vocab::{ObjectSettings, ObjectUrl};

/// The largest object whose one request (a GET or a PutObject) may go by places instead of a
/// request slot, with `--concurrency` left out: such a request is mostly a round trip, with
/// little on the wire.
pub(crate) const BY_PLACES_MAX: u64 = 8 * 1024 * 1024;

/// The byte budget is counted in KiB, so that a semaphore's `u32` acquisitions cover 5 GiB parts.
const UNIT: u64 = 1024;

/// The two limits every transfer of a command shares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// S3 requests in flight at most, across every transfer (`--concurrency`).
    pub concurrency: usize,
    /// Bytes reserved at most: upload parts being hashed, download parts being received.
    pub bytes_ahead: u64,
}

/// The most bytes a command reserves by default: 1 GiB. For an upload these are the parts being
/// hashed (at most [`crate::exec::hash_ahead`] of them anyway); for a download, the windows of
/// the parts being received. Parts on the wire are bounded by `--concurrency`, not by this.
pub(crate) const DEFAULT_BYTES_AHEAD: u64 = 1 << 30;

impl Limits {
    /// The default for `concurrency` slots and parts of `part_size`: every slot busy with one part,
    /// and every hashing thread with [`crate::exec::hash_ahead`] parts ready behind them, but never
    /// more than [`DEFAULT_BYTES_AHEAD`] bytes (with 100 MiB parts, 10 at once instead of 68). A
    /// part larger than the budget still runs, alone ([`Engine::reserve`]).
    pub fn for_parts(concurrency: usize, part_size: u64) -> Limits {
        // An automatic part size ([`crate::plan::AUTO`]) is at most its largest.
        let part_size = crate::plan::largest_part(part_size);
        let parts = concurrency + crate::exec::hash_ahead();
        Limits {
            concurrency,
            bytes_ahead: part_size
                .saturating_mul(parts as u64)
                .min(DEFAULT_BYTES_AHEAD),
        }
    }
}

/// The shared budget of one command. Cheap to share by reference across the transfers' tasks.
#[derive(Debug)]
pub struct Engine {
    limits: Limits,
    /// Whether a PutObject of at most [`BY_PLACES_MAX`] bytes holds no request slot (its
    /// file's place among the files in progress is its bound): [`Engine::small_puts_by_places`].
    puts_by_places: bool,
    requests: Arc<Semaphore>,
    bytes: Arc<Semaphore>,
    byte_units: u32,
}

/// How long a part holds its reservation in [`Engine::pipeline`].
#[derive(Debug, Clone, Copy)]
enum Hold {
    /// Until its `send` returned.
    UntilSent,
    /// Until its `prepare` returned.
    WhilePrepared,
}

/// Bytes of the budget held by one part; released when dropped.
#[derive(Debug)]
pub struct Reservation {
    permit: OwnedSemaphorePermit,
}

impl Reservation {
    /// Gives back all but `len` bytes of this reservation (rounded up to the budget's KiB): for
    /// bytes reserved before their exact size was known.
    pub(crate) fn keep(&mut self, len: u64) {
        let keep = usize::try_from(len.div_ceil(UNIT)).unwrap_or(usize::MAX);
        let extra = self.permit.num_permits().saturating_sub(keep);
        if extra > 0 {
            drop(self.permit.split(extra));
        }
    }
}

impl Engine {
    /// An engine with these limits (a concurrency of 0 is taken as 1).
    pub fn new(limits: Limits) -> Engine {
        let concurrency = limits.concurrency.max(1);
        let byte_units =
            u32::try_from(limits.bytes_ahead.div_ceil(UNIT).max(1)).unwrap_or(u32::MAX);
        Engine {
            limits: Limits {
                concurrency,
                ..limits
            },
            puts_by_places: false,
            requests: Arc::new(Semaphore::new(concurrency)),
            bytes: Arc::new(Semaphore::new(byte_units as usize)),
            byte_units,
        }
    }

    /// This engine, with a PutObject of at most [`BY_PLACES_MAX`] bytes through [`Limited`]
    /// sent without a request slot: the caller bounds those by the files it keeps in progress
    /// (a tree upload with `--concurrency` left out).
    pub(crate) fn small_puts_by_places(self) -> Engine {
        Engine {
            puts_by_places: true,
            ..self
        }
    }

    /// The limits this engine enforces.
    pub fn limits(&self) -> Limits {
        self.limits
    }

    /// Reserves `len` bytes of the budget, waiting for earlier reservations to be released. A part
    /// larger than the whole budget takes all of it (and so runs alone) rather than waiting forever.
    pub async fn reserve(&self, len: u64) -> Reservation {
        let units = u32::try_from(len.div_ceil(UNIT))
            .unwrap_or(u32::MAX)
            .min(self.byte_units);
        let permit = self
            .bytes
            .clone()
            .acquire_many_owned(units)
            .await
            .expect("the engine never closes its budget");
        Reservation { permit }
    }

    /// Runs one S3 request `fut` in one of the `concurrency` slots.
    pub async fn request<T>(&self, fut: impl Future<Output = T>) -> T {
        let _slot = self
            .requests
            .acquire()
            .await
            .expect("the engine never closes its slots");
        fut.await
    }

    /// The S3 client `s3` with every request counted against this engine's slots.
    pub fn limit<'a, C: S3Api>(&'a self, s3: &'a C) -> Limited<'a, C> {
        Limited {
            inner: s3,
            engine: self,
        }
    }

    /// Runs `items` (the parts of one transfer, in order) through the pipeline:
    /// - `len(item)` bytes are reserved, in order;
    /// - `prepare(item)` runs (CPU work: it should use [`crate::exec::on_pool`]), at most
    ///   [`crate::exec::hash_ahead`] items ahead, and its results are passed on in order;
    /// - `in_order(prepared)` sees each result in item order (a whole-file hash);
    /// - `send(prepared)` runs at most `concurrency` at a time, in any order; the reservation is
    ///   released when it returns.
    ///
    /// Returns the `send` results (in completion order), or the first error.
    pub fn parts<'s, I, P, D, FP, FutP, FO, FutO, FS, FutS>(
        &'s self,
        items: impl IntoIterator<Item = I> + 's,
        len: impl Fn(&I) -> u64 + 's,
        prepare: FP,
        in_order: FO,
        send: FS,
        concurrency: usize,
    ) -> impl Stream<Item = Result<D, Error>> + 's
    where
        I: 's,
        P: 's,
        D: 's,
        FP: Fn(I) -> FutP + 's,
        FutP: Future<Output = Result<P, Error>> + 's,
        FO: Fn(P) -> FutO + 's,
        FutO: Future<Output = Result<P, Error>> + 's,
        FS: Fn(P) -> FutS + 's,
        FutS: Future<Output = Result<D, Error>> + 's,
    {
        self.pipeline(
            items,
            len,
            prepare,
            in_order,
            send,
            concurrency,
            Hold::UntilSent,
        )
    }

    /// [`Engine::parts`], except that a part's reservation is released as soon as `prepare`
    /// returned: the budget then bounds the parts being prepared (hashed), not the parts on the
    /// wire, and `concurrency` alone bounds those. For uploads, whose `prepare` hashes a part from
    /// the mapping and whose `send` keeps the part's pages out of the resident set as they go
    /// into the socket (`upload::send`), so that parts in flight cost no resident memory.
    pub fn parts_hashed<'s, I, P, D, FP, FutP, FO, FutO, FS, FutS>(
        &'s self,
        items: impl IntoIterator<Item = I> + 's,
        len: impl Fn(&I) -> u64 + 's,
        prepare: FP,
        in_order: FO,
        send: FS,
        concurrency: usize,
    ) -> impl Stream<Item = Result<D, Error>> + 's
    where
        I: 's,
        P: 's,
        D: 's,
        FP: Fn(I) -> FutP + 's,
        FutP: Future<Output = Result<P, Error>> + 's,
        FO: Fn(P) -> FutO + 's,
        FutO: Future<Output = Result<P, Error>> + 's,
        FS: Fn(P) -> FutS + 's,
        FutS: Future<Output = Result<D, Error>> + 's,
    {
        self.pipeline(
            items,
            len,
            prepare,
            in_order,
            send,
            concurrency,
            Hold::WhilePrepared,
        )
    }

    #[allow(clippy::too_many_arguments)]
    fn pipeline<'s, I, P, D, FP, FutP, FO, FutO, FS, FutS>(
        &'s self,
        items: impl IntoIterator<Item = I> + 's,
        len: impl Fn(&I) -> u64 + 's,
        prepare: FP,
        in_order: FO,
        send: FS,
        concurrency: usize,
        hold: Hold,
    ) -> impl Stream<Item = Result<D, Error>> + 's
    where
        I: 's,
        P: 's,
        D: 's,
        FP: Fn(I) -> FutP + 's,
        FutP: Future<Output = Result<P, Error>> + 's,
        FO: Fn(P) -> FutO + 's,
        FutO: Future<Output = Result<P, Error>> + 's,
        FS: Fn(P) -> FutS + 's,
        FutS: Future<Output = Result<D, Error>> + 's,
    {
        stream::iter(items)
            .then(move |item| {
                let n = len(&item);
                async move { (self.reserve(n).await, item) }
            })
            .map(move |(held, item)| {
                let prepared = prepare(item);
                async move {
                    let p = prepared.await?;
                    let held = match hold {
                        Hold::UntilSent => Some(held),
                        Hold::WhilePrepared => None,
                    };
                    Ok::<_, Error>((held, p))
                }
            })
            .buffered(crate::exec::hash_ahead())
            .and_then(move |(held, p)| {
                let next = in_order(p);
                async move { next.await.map(|p| (held, p)) }
            })
            .map_ok(move |(held, p)| {
                let sent = send(p);
                async move {
                    let out = sent.await;
                    drop(held);
                    out
                }
            })
            .try_buffer_unordered(concurrency.max(1))
    }
}

/// An S3 client whose every request holds one of its engine's slots. Everything a command sends
/// (parts, single PUTs, Create/Complete, ListParts, the read-back after an upload) goes through one;
/// the exceptions are in the module doc (a small PutObject by places: [`Engine::small_puts_by_places`]).
#[derive(Debug)]
pub struct Limited<'a, C> {
    inner: &'a C,
    engine: &'a Engine,
}

impl<C: MultipartWrite> MultipartWrite for Limited<'_, C> {
    async fn put_object(
        &self,
        obj: &ObjectUrl,
        alg: ChecksumAlgorithm,
        body: crate::s3::PutBody,
        hash: &PartHash,
        settings: &ObjectSettings,
    ) -> Result<WriteReply, S3Error> {
        let by_places = self.engine.puts_by_places && body.len() <= BY_PLACES_MAX;
        let inner = self.inner.put_object(obj, alg, body, hash, settings);
        if by_places {
            return inner.await;
        }
        self.engine.request(inner).await
    }

    async fn create_multipart(
        &self,
        obj: &ObjectUrl,
        alg: ChecksumAlgorithm,
        kind: ChecksumType,
        settings: &ObjectSettings,
    ) -> Result<String, S3Error> {
        let inner = self.inner.create_multipart(obj, alg, kind, settings);
        self.engine.request(inner).await
    }

    async fn upload_part(
        &self,
        obj: &ObjectUrl,
        upload_id: &str,
        number: u32,
        alg: ChecksumAlgorithm,
        body: Bytes,
        hash: &PartHash,
    ) -> Result<WriteReply, S3Error> {
        let inner = self
            .inner
            .upload_part(obj, upload_id, number, alg, body, hash);
        self.engine.request(inner).await
    }

    async fn complete_multipart(
        &self,
        obj: &ObjectUrl,
        upload_id: &str,
        alg: ChecksumAlgorithm,
        parts: &[CompletedPart],
        full_object: Option<&str>,
    ) -> Result<WriteReply, S3Error> {
        let inner = self
            .inner
            .complete_multipart(obj, upload_id, alg, parts, full_object);
        self.engine.request(inner).await
    }

    async fn complete_multipart_if_absent(
        &self,
        obj: &ObjectUrl,
        upload_id: &str,
        alg: ChecksumAlgorithm,
        parts: &[CompletedPart],
        full_object: Option<&str>,
    ) -> Result<WriteReply, S3Error> {
        let inner =
            self.inner
                .complete_multipart_if_absent(obj, upload_id, alg, parts, full_object);
        self.engine.request(inner).await
    }

    async fn abort_multipart(&self, obj: &ObjectUrl, upload_id: &str) -> Result<(), S3Error> {
        let inner = self.inner.abort_multipart(obj, upload_id);
        self.engine.request(inner).await
    }

    async fn list_parts(
        &self,
        obj: &ObjectUrl,
        upload_id: &str,
        alg: ChecksumAlgorithm,
    ) -> Result<Vec<HeldPart>, S3Error> {
        let inner = self.inner.list_parts(obj, upload_id, alg);
        self.engine.request(inner).await
    }

    async fn list_uploads(&self, bucket: &str, prefix: &str) -> Result<Vec<InProgress>, S3Error> {
        let inner = self.inner.list_uploads(bucket, prefix);
        self.engine.request(inner).await
    }

    fn endpoint_label(&self) -> String {
        self.inner.endpoint_label()
    }
}

impl<C: ObjectRead> ObjectRead for Limited<'_, C> {
    async fn object_attributes(
        &self,
        obj: &ObjectUrl,
    ) -> Result<Option<ObjectAttributes>, S3Error> {
        let inner = self.inner.object_attributes(obj);
        self.engine.request(inner).await
    }

    async fn head_object(
        &self,
        obj: &ObjectUrl,
        part_number: Option<u32>,
    ) -> Result<HeadInfo, S3Error> {
        let inner = self.inner.head_object(obj, part_number);
        self.engine.request(inner).await
    }

    async fn get_range(
        &self,
        obj: &ObjectUrl,
        range: std::ops::Range<u64>,
        if_match: Option<&ETag>,
    ) -> Result<Bytes, S3Error> {
        let inner = self.inner.get_range(obj, range, if_match);
        self.engine.request(inner).await
    }

    async fn list_page(
        &self,
        bucket: &str,
        prefix: &str,
        token: Option<&str>,
        start_after: Option<&str>,
    ) -> Result<crate::s3::ListPage, S3Error> {
        let inner = self.inner.list_page(bucket, prefix, token, start_after);
        self.engine.request(inner).await
    }

    /// Holds its slot until the body is read to its end or dropped, not only until the reply's
    /// headers: a streamed body is the request's transfer.
    async fn get_stream(
        &self,
        obj: &ObjectUrl,
        range: std::ops::Range<u64>,
        part: Option<u32>,
        if_match: Option<&ETag>,
        version_id: Option<&str>,
    ) -> Result<RangeBody, S3Error> {
        let slot = self.slot().await;
        let reply = self
            .inner
            .get_stream(obj, range, part, if_match, version_id)
            .await?;
        Ok(held_until_read(reply, slot))
    }

    /// Holds its slot until the body is read to its end or dropped, as `get_stream` above does.
    async fn get_whole(
        &self,
        obj: &ObjectUrl,
        size: u64,
        if_match: Option<&ETag>,
    ) -> Result<RangeBody, S3Error> {
        let slot = self.slot().await;
        let reply = self.inner.get_whole(obj, size, if_match).await?;
        Ok(held_until_read(reply, slot))
    }
}

impl<C> Limited<'_, C> {
    /// One of the engine's request slots, owned (to ride with a streamed body).
    async fn slot(&self) -> OwnedSemaphorePermit {
        self.engine
            .requests
            .clone()
            .acquire_owned()
            .await
            .expect("the engine never closes its slots")
    }
}

/// `reply` with `slot` held until its body is read to its end or dropped: a streamed body is
/// the request's transfer.
fn held_until_read(mut reply: RangeBody, slot: OwnedSemaphorePermit) -> RangeBody {
    reply.body = Box::pin(reply.body.map(move |piece| {
        let _held = &slot;
        piece
    }));
    reply
}

impl<C: Tagging> Tagging for Limited<'_, C> {
    async fn get_tags(
        &self,
        obj: &ObjectUrl,
        version: Option<&str>,
    ) -> Result<Vec<(String, String)>, S3Error> {
        let inner = self.inner.get_tags(obj, version);
        self.engine.request(inner).await
    }

    async fn put_tags(
        &self,
        obj: &ObjectUrl,
        version: Option<&str>,
        tags: &[(String, String)],
    ) -> Result<(), S3Error> {
        let inner = self.inner.put_tags(obj, version, tags);
        self.engine.request(inner).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
    use std::time::Duration;

    #[tokio::test]
    async fn a_reservation_gives_back_what_it_does_not_keep() {
        use futures::FutureExt as _;
        let engine = Engine::new(Limits {
            concurrency: 1,
            bytes_ahead: 512 * UNIT,
        });
        let mut held = engine.reserve(512 * UNIT).await;
        assert!(
            engine.reserve(413 * UNIT).now_or_never().is_none(),
            "the whole budget is held"
        );
        held.keep(100 * UNIT - 1);
        let other = engine.reserve(412 * UNIT).now_or_never();
        assert!(other.is_some(), "all but 100 KiB came back");
        assert!(engine.reserve(UNIT).now_or_never().is_none(), "and no more");
        drop((held, other));
        assert!(engine.reserve(512 * UNIT).now_or_never().is_some());
    }

    #[cfg(feature = "fake")]
    #[tokio::test]
    async fn only_a_small_put_goes_by_places_and_only_when_asked() {
        use futures::FutureExt as _;
        let fake = crate::s3::fake::FakeS3::default();
        async fn put(s3: &Limited<'_, crate::s3::fake::FakeS3>, len: u64) -> WriteReply {
            let alg = ChecksumAlgorithm::Sha256;
            let body = vec![7u8; len as usize];
            let hash = crate::hash::hash_part(alg, true, &body);
            let obj = ObjectUrl::parse(&format!("s3://bkt/k{len}")).unwrap();
            let settings = ObjectSettings::default();
            s3.put_object(&obj, alg, Bytes::from(body).into(), &hash, &settings)
                .await
                .unwrap()
        }
        let limits = Limits {
            concurrency: 1,
            bytes_ahead: 1 << 30,
        };
        for by_places in [false, true] {
            let engine = Engine::new(limits);
            let engine = if by_places {
                engine.small_puts_by_places()
            } else {
                engine
            };
            let s3 = engine.limit(&fake);
            // The one slot is taken (as by a part of a big file).
            let _slot = engine.requests.clone().acquire_owned().await.unwrap();
            let mut small = put(&s3, BY_PLACES_MAX).boxed();
            let mut large = put(&s3, BY_PLACES_MAX + 1).boxed();
            // A request waiting for a slot is pending at its first poll and has not reached the
            // fake (which counts a request as it arrives); one that holds none goes to it.
            let before = fake.requests();
            assert!(futures::poll!(&mut large).is_pending());
            assert_eq!(
                fake.requests(),
                before,
                "a larger PutObject waits for a slot"
            );
            if by_places {
                tokio::time::timeout(Duration::from_secs(60), small)
                    .await
                    .expect("a small PutObject by places waits for no slot");
                assert_eq!(fake.requests(), before + 1);
            } else {
                assert!(futures::poll!(&mut small).is_pending());
                assert_eq!(fake.requests(), before, "a small one waits too");
            }
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn requests_never_exceed_the_slots() {
        let engine = Engine::new(Limits {
            concurrency: 3,
            bytes_ahead: 1 << 30,
        });
        let now = AtomicUsize::new(0);
        let peak = AtomicUsize::new(0);
        let tasks = (0..40).map(|_| {
            engine.request(async {
                let n = now.fetch_add(1, Ordering::SeqCst) + 1;
                peak.fetch_max(n, Ordering::SeqCst);
                tokio::task::yield_now().await;
                tokio::time::sleep(Duration::from_millis(1)).await;
                now.fetch_sub(1, Ordering::SeqCst);
            })
        });
        futures::future::join_all(tasks).await;
        assert_eq!(
            peak.load(Ordering::SeqCst),
            3,
            "three slots, all used, never more"
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn parts_of_several_transfers_share_the_byte_budget_without_deadlock() {
        // A budget of 3 parts of 1 MiB, 4 transfers of 6 parts each, every stage yielding.
        let mib = 1 << 20;
        let engine = Engine::new(Limits {
            concurrency: 8,
            bytes_ahead: 3 * mib,
        });
        let held = AtomicU64::new(0);
        let peak = AtomicU64::new(0);
        let order_ok = AtomicUsize::new(0);
        let transfer = |t: u32| {
            let (engine, held, peak, order_ok) = (&engine, &held, &peak, &order_ok);
            let next = std::sync::Mutex::new(0u32);
            async move {
                let next = &next;
                let sent: Vec<u32> = engine
                    .parts(
                        0..6u32,
                        |_| mib,
                        move |i| async move {
                            let h = held.fetch_add(mib, Ordering::SeqCst) + mib;
                            peak.fetch_max(h, Ordering::SeqCst);
                            tokio::task::yield_now().await;
                            Ok(i)
                        },
                        move |i| async move {
                            let mut n = next.lock().unwrap();
                            if *n == i {
                                order_ok.fetch_add(1, Ordering::SeqCst);
                            }
                            *n += 1;
                            Ok(i)
                        },
                        move |i| async move {
                            tokio::time::sleep(Duration::from_millis(u64::from(1 + (i + t) % 3)))
                                .await;
                            held.fetch_sub(mib, Ordering::SeqCst);
                            Ok(i)
                        },
                        4,
                    )
                    .try_collect()
                    .await
                    .unwrap();
                sent.len()
            }
        };
        let done = tokio::time::timeout(
            Duration::from_secs(60),
            futures::future::join_all((0..4).map(transfer)),
        )
        .await
        .expect("the pipeline finished (no deadlock)");
        assert_eq!(done, vec![6; 4]);
        assert_eq!(
            order_ok.load(Ordering::SeqCst),
            24,
            "the in-order hook saw every part in order"
        );
        assert!(
            peak.load(Ordering::SeqCst) <= 3 * mib,
            "at most the budget was held at once: {}",
            peak.load(Ordering::SeqCst)
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn parts_hashed_keep_concurrency_parts_in_flight_whatever_the_budget() {
        // A budget of two parts, eight slots: every send waits until all eight are in flight at
        // once, which only happens if the budget does not hold parts on the wire (with
        // `Engine::parts` this waits forever).
        let mib = 1 << 20;
        let engine = Engine::new(Limits {
            concurrency: 8,
            bytes_ahead: 2 * mib,
        });
        let all_in = tokio::sync::Barrier::new(8);
        let (now, peak) = (AtomicUsize::new(0), AtomicUsize::new(0));
        let (all_in, now_r, peak_r) = (&all_in, &now, &peak);
        let sent = tokio::time::timeout(
            Duration::from_secs(60),
            engine
                .parts_hashed(
                    0..16u32,
                    |_| mib,
                    |i| async move { Ok(i) },
                    |i| async move { Ok(i) },
                    move |i| async move {
                        let n = now_r.fetch_add(1, Ordering::SeqCst) + 1;
                        peak_r.fetch_max(n, Ordering::SeqCst);
                        all_in.wait().await;
                        now_r.fetch_sub(1, Ordering::SeqCst);
                        Ok(i)
                    },
                    8,
                )
                .try_collect::<Vec<u32>>(),
        )
        .await
        .expect("eight parts were in flight at once under a budget of two")
        .unwrap();
        assert_eq!(sent.len(), 16);
        assert_eq!(peak.load(Ordering::SeqCst), 8, "never more than the slots");
    }

    #[test]
    fn the_default_budget_is_every_slot_busy_but_at_most_a_gibibyte() {
        let mib = 1u64 << 20;
        let ahead = crate::exec::hash_ahead() as u64;
        // Small parts: every slot and every hashing thread busy fits in the cap.
        assert_eq!(
            Limits::for_parts(8, 8 * mib).bytes_ahead,
            (8 + ahead) * 8 * mib
        );
        // The defaults (64 slots, 100 MiB parts) would touch 6.4 GiB and more: capped.
        assert_eq!(Limits::for_parts(64, 100 * mib).bytes_ahead, 1024 * mib);
        // Parts bigger than the cap: the budget is the cap, and one part still runs.
        assert_eq!(Limits::for_parts(4, 5 * 1024 * mib).bytes_ahead, 1024 * mib);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn parts_larger_than_the_budget_all_finish_one_at_a_time() {
        // Three transfers of four 1 MiB parts under a 4 KiB budget: each part takes the whole
        // budget, so they run one after another, and every one of them finishes.
        let engine = Engine::new(Limits {
            concurrency: 8,
            bytes_ahead: 4096,
        });
        let (now, peak) = (AtomicUsize::new(0), AtomicUsize::new(0));
        let transfer = |_| {
            let (engine, now, peak) = (&engine, &now, &peak);
            async move {
                engine
                    .parts(
                        0..4u32,
                        |_| 1 << 20,
                        move |i| async move {
                            let n = now.fetch_add(1, Ordering::SeqCst) + 1;
                            peak.fetch_max(n, Ordering::SeqCst);
                            Ok(i)
                        },
                        |i| async move { Ok(i) },
                        move |i| async move {
                            tokio::task::yield_now().await;
                            now.fetch_sub(1, Ordering::SeqCst);
                            Ok(i)
                        },
                        4,
                    )
                    .try_collect::<Vec<u32>>()
                    .await
                    .unwrap()
                    .len()
            }
        };
        let done = tokio::time::timeout(
            Duration::from_secs(60),
            futures::future::join_all((0..3).map(transfer)),
        )
        .await
        .expect("parts over the budget never deadlock");
        assert_eq!(done, vec![4; 3]);
        assert_eq!(peak.load(Ordering::SeqCst), 1, "one part at a time");
    }

    #[tokio::test]
    async fn a_part_larger_than_the_budget_runs_alone() {
        let engine = Engine::new(Limits {
            concurrency: 1,
            bytes_ahead: 4096,
        });
        let big = tokio::time::timeout(Duration::from_secs(10), engine.reserve(1 << 30))
            .await
            .expect("a part over the budget is admitted");
        use futures::FutureExt as _;
        assert!(
            engine.reserve(1).now_or_never().is_none(),
            "nothing else runs beside it"
        );
        drop(big);
        assert!(engine.reserve(1).now_or_never().is_some(), "released");
    }
}
