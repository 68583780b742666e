//! An in-memory S3 for unit, property and integration tests (feature `fake`).
//!
//! It checks what S3 checks, with its own code: each body against the checksum and Content-MD5
//! sent with it, and CompleteMultipartUpload's part list. It builds composite checksums, the
//! full-object CRC and multipart ETags from the stored bytes with the hash crates directly, never
//! with tally's `hash` module, so a bug there cannot be agreed with here. ListParts comes in pages
//! ([`FakeS3::set_page_size`]) through the same marker loop as the real client. It counts requests,
//! can "crash" (stop answering) after a given number of part uploads so a test can drop an upload
//! mid-flight like a kill -9, and can lose the reply of CreateMultipartUpload after creating the
//! upload, as a reset connection does. Between runs a test can lose a stored part
//! ([`FakeS3::lose_part`], as a part expired by the server would be) or date an upload
//! ([`FakeS3::set_initiated`]).
//!
//! By concern: the state here; [`knobs`] (what a test arranges and observes), [`write`] (PutObject
//! and the multipart operations), [`read`] (HEAD, attributes, GETs, listing, tags) and [`digest`]
//! (the hash crates, called directly).

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use bytes::Bytes;
use md5::Digest as _;

use super::{ETag, HeldPart, WriteReply};
use crate::s3::S3Error;
use crate::vocab::{ChecksumAlgorithm, ChecksumType, PartHash};
use crate::vocab::{ObjectSettings, Sse};

mod digest;
mod knobs;
mod read;
mod write;

use digest::{digest, hex, md5};

#[derive(Debug, Clone)]
struct Stored {
    data: Bytes,
    checksum: String,
    etag: ETag,
}

#[derive(Debug, Clone)]
struct Upload {
    key: String,
    alg: ChecksumAlgorithm,
    kind: ChecksumType,
    initiated: i64,
    parts: BTreeMap<u32, Stored>,
    settings: ObjectSettings,
}

#[derive(Debug, Default)]
struct State {
    next_id: u64,
    /// AbortMultipartUpload fails (500) and leaves the upload.
    refuse_aborts: bool,
    uploads: HashMap<String, Upload>,
    objects: HashMap<String, (Vec<u8>, ChecksumAlgorithm, WriteReply)>,
    /// Each object's settings as its PutObject or CreateMultipartUpload gave them.
    settings: HashMap<String, ObjectSettings>,
    /// Each object's tag set (set at upload, replaced by PutObjectTagging).
    tags: HashMap<String, Vec<(String, String)>>,
    part_uploads: u32,
    creates: u32,
    completes: u32,
    list_parts_pages: u32,
    /// HeadObject requests served (answered or not).
    heads: u32,
    /// ListObjectsV2 pages served.
    list_pages: u32,
    crash_after: Option<(u32, bool)>,
    lose_create_replies: u32,
    page_size: Option<usize>,
    /// Each completed multipart object's parts: size and checksum (base64).
    layouts: HashMap<String, Vec<(u64, String)>>,
    /// Whether GetObjectAttributes is answered (with every part of multipart objects).
    attributes: bool,
    /// Whether the 2026 algorithms are treated as Garage and LocalStack treat them.
    recent_unsupported: bool,
    /// Whether ListMultipartUploads answers 501 NotImplemented (as s3s-fs does).
    no_upload_listing: bool,
    /// The part number whose next UploadPart leaves a dropped copy ([`FakeS3::leave_dropped_copy`]).
    drop_copy_of: Option<u32>,
    /// Parts (upload id, number) whose dropped copy outranks the stored one.
    shadowed: std::collections::HashSet<(String, u32)>,
}

/// The fake. See the module docs.
#[derive(Debug, Default)]
pub struct FakeS3 {
    state: Mutex<State>,
    crashed: AtomicBool,
    crash: tokio::sync::Notify,
    in_flight: std::sync::atomic::AtomicUsize,
    peak_in_flight: std::sync::atomic::AtomicUsize,
    gather: std::sync::atomic::AtomicUsize,
    gather_for: Mutex<std::time::Duration>,
    requests: std::sync::atomic::AtomicU32,
    /// While true, every UploadPart waits at the fake ([`FakeS3::hold_parts`]).
    parts_held: tokio::sync::watch::Sender<bool>,
}

/// One request in flight at the fake, counted until dropped.
struct InFlight<'a>(&'a std::sync::atomic::AtomicUsize);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

fn err(code: &str, status: u16) -> S3Error {
    S3Error::from_response(Some(code), Some(status), format!("fake: {code}"))
}

impl FakeS3 {
    /// Counts a request as in flight and lets other tasks run, as a network round trip would, so
    /// that requests sent together overlap here and [`FakeS3::peak_in_flight`] sees them.
    async fn request(&self) -> InFlight<'_> {
        self.counted(true).await
    }

    /// [`FakeS3::request`] for a listing page, which [`FakeS3::gather`] never holds: a client
    /// reads the listing before it can send what it lists.
    async fn listing_request(&self) -> InFlight<'_> {
        self.counted(false).await
    }

    async fn counted(&self, gathered: bool) -> InFlight<'_> {
        self.requests.fetch_add(1, Ordering::SeqCst);
        let now = self.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        self.peak_in_flight.fetch_max(now, Ordering::SeqCst);
        let want = if gathered {
            self.gather.load(Ordering::SeqCst)
        } else {
            0
        };
        if want > 0 {
            // Bounded: a client that never has `want` requests out at once is seen to proceed
            // one at a time, and the test's assertion on the peak says so.
            // Once one of the held requests sees `want` in flight, every held one goes on (the
            // gathering is over, even if one of them has ended by the time another looks).
            let until = std::time::Instant::now() + *self.gather_for.lock().unwrap();
            while self.gather.load(Ordering::SeqCst) > 0
                && self.in_flight.load(Ordering::SeqCst) < want
                && std::time::Instant::now() < until
            {
                tokio::time::sleep(std::time::Duration::from_millis(1)).await;
            }
            self.gather.store(0, Ordering::SeqCst);
        }
        for _ in 0..4 {
            tokio::task::yield_now().await;
        }
        InFlight(&self.in_flight)
    }

    /// Stores what S3 keeps with an object besides its bytes.
    fn store_settings(s: &mut State, key: &str, settings: &ObjectSettings) {
        s.settings.insert(key.to_owned(), settings.clone());
        s.tags.insert(key.to_owned(), settings.tags.clone());
    }

    /// What S3 says of the encryption in its replies.
    fn sse(settings: &ObjectSettings) -> Option<String> {
        settings.sse.as_ref().map(|s| s.as_str().to_owned())
    }

    /// The ETag of an object written with `settings` whose MD5-style ETag would be `md5_style`:
    /// under SSE-KMS an opaque value that is no MD5 of anything tally computes, as on AWS.
    fn etag_under(settings: &ObjectSettings, md5_style: ETag) -> ETag {
        match settings.sse {
            Some(Sse::Kms { .. }) => {
                let opaque = sha2::Sha256::digest(md5_style.as_str().as_bytes());
                ETag::new(&hex(&opaque[..16]))
            }
            _ => md5_style,
        }
    }

    /// Accepts a body as S3 does: its checksum and (when sent) Content-MD5 must match its bytes.
    fn verify(alg: ChecksumAlgorithm, body: &[u8], hash: &PartHash) -> Result<String, S3Error> {
        let actual = digest(alg, body);
        if actual != hash.checksum.as_bytes() {
            return Err(err("BadDigest", 400));
        }
        if hash.md5.is_some_and(|m| md5(body) != m) {
            return Err(err("BadDigest", 400));
        }
        Ok(B64.encode(actual))
    }

    /// One ListParts page: parts after `marker`, at most the page size, and the next marker.
    fn parts_page(
        &self,
        upload_id: &str,
        marker: Option<u32>,
    ) -> Result<(Vec<HeldPart>, Option<u32>), S3Error> {
        let mut s = self.state.lock().unwrap();
        s.list_parts_pages += 1;
        let size = s.page_size.unwrap_or(1000);
        let up = s
            .uploads
            .get(upload_id)
            .ok_or_else(|| err("NoSuchUpload", 404))?;
        let after = marker.unwrap_or(0);
        let mut rest = up.parts.range(after + 1..);
        let page: Vec<HeldPart> = rest
            .by_ref()
            .take(size)
            .map(|(n, p)| HeldPart {
                number: *n,
                size: p.data.len() as u64,
                etag: p.etag.clone(),
                checksum: Some(p.checksum.clone()),
            })
            .collect();
        let next = if rest.next().is_some() {
            page.last().map(|p| p.number)
        } else {
            None
        };
        Ok((page, next))
    }
}

impl FakeS3 {
    /// Bytes per piece of a streamed body.
    pub const STREAM_PIECE: usize = 16 * 1024;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::s3::MultipartWrite;
    use crate::vocab::ObjectUrl;

    fn obj() -> ObjectUrl {
        ObjectUrl {
            bucket: "b".into(),
            key: "k".into(),
        }
    }

    fn sha256_part(data: &[u8]) -> PartHash {
        PartHash {
            checksum: crate::vocab::Digest::from_bytes(sha2::Sha256::digest(data).to_vec()),
            md5: Some(md5(data)),
            len: data.len() as u64,
        }
    }

    #[tokio::test]
    async fn list_parts_follows_every_page() {
        let fake = FakeS3::default();
        fake.set_page_size(2);
        let alg = ChecksumAlgorithm::Sha256;
        let id = fake
            .create_multipart(
                &obj(),
                alg,
                ChecksumType::Composite,
                &ObjectSettings::default(),
            )
            .await
            .unwrap();
        for n in 1..=7u32 {
            let body = Bytes::from(vec![n as u8; 10]);
            let h = sha256_part(&body);
            fake.upload_part(&obj(), &id, n, alg, body, &h)
                .await
                .unwrap();
        }
        let held = fake.list_parts(&obj(), &id, alg).await.unwrap();
        let numbers: Vec<u32> = held.iter().map(|p| p.number).collect();
        assert_eq!(numbers, (1..=7).collect::<Vec<_>>());
        assert_eq!(fake.list_parts_pages(), 4, "7 parts at 2 a page");
    }

    #[tokio::test]
    async fn a_body_that_does_not_match_its_checksum_is_refused() {
        let fake = FakeS3::default();
        let mut h = sha256_part(b"hello");
        let e = fake
            .put_object(
                &obj(),
                ChecksumAlgorithm::Sha256,
                Bytes::from_static(b"hellO").into(),
                &h,
                &ObjectSettings::default(),
            )
            .await
            .unwrap_err();
        assert_eq!(e.code.as_deref(), Some("BadDigest"));
        h.md5 = Some([0; 16]);
        let e = fake
            .put_object(
                &obj(),
                ChecksumAlgorithm::Sha256,
                Bytes::from_static(b"hello").into(),
                &h,
                &ObjectSettings::default(),
            )
            .await
            .unwrap_err();
        assert_eq!(e.code.as_deref(), Some("BadDigest"), "a wrong Content-MD5");
    }
}
