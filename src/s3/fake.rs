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

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use bytes::Bytes;
use md5::Digest as _;

use super::paging::paginate;
use super::{
    CompletedPart, ETag, HeadInfo, HeldPart, InProgress, MultipartWrite, ObjectAttributes,
    ObjectRead, RemoteChecksum, Tagging, WriteReply,
};
use crate::s3::S3Error;
use crate::vocab::{ChecksumAlgorithm, ChecksumType, PartHash};
use crate::vocab::{ObjectSettings, ObjectUrl, Sse};

/// The raw digest of `data` with `alg`, computed with the hash crates directly.
fn digest(alg: ChecksumAlgorithm, data: &[u8]) -> Vec<u8> {
    let crc = |a, width: usize| crc_fast::checksum(a, data).to_be_bytes()[8 - width..].to_vec();
    match alg {
        ChecksumAlgorithm::Sha256 => sha2::Sha256::digest(data).to_vec(),
        ChecksumAlgorithm::Sha1 => sha1::Sha1::digest(data).to_vec(),
        ChecksumAlgorithm::Crc32 => crc(crc_fast::CrcAlgorithm::Crc32IsoHdlc, 4),
        ChecksumAlgorithm::Crc32c => crc(crc_fast::CrcAlgorithm::Crc32Iscsi, 4),
        ChecksumAlgorithm::Crc64nvme => crc(crc_fast::CrcAlgorithm::Crc64Nvme, 8),
        ChecksumAlgorithm::Sha512 => sha2::Sha512::digest(data).to_vec(),
        ChecksumAlgorithm::Md5 => md5(data).to_vec(),
        // The one-shot functions, not the streaming states tally's hash module uses.
        ChecksumAlgorithm::Xxhash64 => xxhash_rust::xxh64::xxh64(data, 0).to_be_bytes().to_vec(),
        ChecksumAlgorithm::Xxhash3 => xxhash_rust::xxh3::xxh3_64(data).to_be_bytes().to_vec(),
        ChecksumAlgorithm::Xxhash128 => xxhash_rust::xxh3::xxh3_128(data).to_be_bytes().to_vec(),
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().fold(String::new(), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

fn md5(data: &[u8]) -> [u8; 16] {
    <[u8; 16]>::from(md5::Md5::digest(data))
}

fn md5_etag(data: &[u8]) -> ETag {
    ETag::new(&hex(&md5(data)))
}

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
        self.requests.fetch_add(1, Ordering::SeqCst);
        let now = self.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        self.peak_in_flight.fetch_max(now, Ordering::SeqCst);
        let want = self.gather.load(Ordering::SeqCst);
        if want > 0 {
            // Bounded: a client that never has `want` requests out at once is seen to proceed
            // one at a time, and the test's assertion on the peak says so.
            let until = std::time::Instant::now() + *self.gather_for.lock().unwrap();
            while self.in_flight.load(Ordering::SeqCst) < want && std::time::Instant::now() < until
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

    /// Holds the next requests until `n` are in flight together (once; at most `within`), so
    /// that a test can show a client sends `n` at a time without racing the scheduler, or (when
    /// `n` is one more than the client may send) that it never sends more.
    pub fn gather(&self, n: usize, within: std::time::Duration) {
        *self.gather_for.lock().unwrap() = within;
        self.gather.store(n, Ordering::SeqCst);
    }

    /// The most requests that were ever in flight at once.
    pub fn peak_in_flight(&self) -> usize {
        self.peak_in_flight.load(Ordering::SeqCst)
    }

    /// After `n` more UploadPart requests, the next one (stored first if `store`) never answers
    /// and [`FakeS3::crashed`] resolves.
    pub fn crash_after(&self, n: u32, store: bool) {
        let mut s = self.state.lock().unwrap();
        s.crash_after = Some((s.part_uploads + n, store));
        self.crashed.store(false, Ordering::SeqCst);
    }

    /// Answers normally again.
    pub fn disarm(&self) {
        let mut s = self.state.lock().unwrap();
        s.crash_after = None;
        s.lose_create_replies = 0;
        self.crashed.store(false, Ordering::SeqCst);
    }

    /// Resolves once a crash was triggered.
    pub async fn crashed(&self) {
        loop {
            let notified = self.crash.notified();
            if self.crashed.load(Ordering::SeqCst) {
                return;
            }
            notified.await;
        }
    }

    /// The next `n` CreateMultipartUpload requests create their upload, then fail as if the
    /// connection broke before the reply arrived.
    pub fn lose_create_replies(&self, n: u32) {
        self.state.lock().unwrap().lose_create_replies = n;
    }

    /// Treats the algorithms S3 added in 2026 (SHA512, MD5, XXHASH64/3/128) as Garage 2.5 and
    /// LocalStack 2026.3 do: a PutObject's checksum is ignored (not checked, not stored, not
    /// echoed) and CreateMultipartUpload with one is refused (400 InvalidRequest).
    pub fn without_recent_algorithms(&self) {
        self.state.lock().unwrap().recent_unsupported = true;
    }

    /// ListMultipartUploads answers 501 NotImplemented from now on, as s3s-fs 0.14 does.
    pub fn without_upload_listing(&self) {
        self.state.lock().unwrap().no_upload_listing = true;
    }

    /// Another client's DeleteObject of `key`.
    pub fn delete_object(&self, key: &str) {
        let mut st = self.state.lock().unwrap();
        st.objects.remove(key);
        st.layouts.remove(key);
    }

    /// Every AbortMultipartUpload fails from now on (500 InternalError); the upload stays.
    pub fn refuse_aborts(&self) {
        self.state.lock().unwrap().refuse_aborts = true;
    }

    /// ListParts answers at most `n` parts a page (S3: 1,000).
    pub fn set_page_size(&self, n: usize) {
        self.state.lock().unwrap().page_size = Some(n.max(1));
    }

    /// Drops part `number` from every upload in progress, as a server that lost or expired it
    /// would; returns how many uploads held it.
    pub fn lose_part(&self, number: u32) -> usize {
        let mut s = self.state.lock().unwrap();
        s.uploads
            .values_mut()
            .filter_map(|u| u.parts.remove(&number))
            .count()
    }

    /// The numbers of the parts the uploads in progress hold, in order.
    pub fn held_parts(&self) -> Vec<u32> {
        let s = self.state.lock().unwrap();
        let mut v: Vec<u32> = s
            .uploads
            .values()
            .flat_map(|u| u.parts.keys().copied())
            .collect();
        v.sort_unstable();
        v
    }

    /// Sets when upload `upload_id` was started (seconds since the epoch; the fake otherwise
    /// numbers them 1, 2, ...); false if there is no such upload.
    pub fn set_initiated(&self, upload_id: &str, secs: i64) -> bool {
        let mut s = self.state.lock().unwrap();
        s.uploads
            .get_mut(upload_id)
            .map(|u| u.initiated = secs)
            .is_some()
    }

    /// Requests of any kind that reached the server so far.
    pub fn requests(&self) -> u32 {
        self.requests.load(Ordering::SeqCst)
    }

    /// UploadPart requests that reached the server so far.
    pub fn part_uploads(&self) -> u32 {
        self.state.lock().unwrap().part_uploads
    }

    /// CreateMultipartUpload requests that reached the server so far.
    pub fn creates(&self) -> u32 {
        self.state.lock().unwrap().creates
    }

    /// Successful CompleteMultipartUpload calls.
    pub fn completes(&self) -> u32 {
        self.state.lock().unwrap().completes
    }

    /// ListParts pages served so far.
    pub fn list_parts_pages(&self) -> u32 {
        self.state.lock().unwrap().list_parts_pages
    }

    /// HeadObject requests that reached the server so far.
    pub fn heads(&self) -> u32 {
        self.state.lock().unwrap().heads
    }

    /// ListObjectsV2 pages served so far.
    pub fn list_pages(&self) -> u32 {
        self.state.lock().unwrap().list_pages
    }

    /// Uploads in progress.
    pub fn uploads_in_progress(&self) -> usize {
        self.state.lock().unwrap().uploads.len()
    }

    /// The stored object.
    pub fn object(&self, key: &str) -> Option<Vec<u8>> {
        self.state
            .lock()
            .unwrap()
            .objects
            .get(key)
            .map(|(d, _, _)| d.clone())
    }

    /// The settings (storage class, content type, metadata, tags, encryption) the object was
    /// written with.
    pub fn settings(&self, key: &str) -> Option<ObjectSettings> {
        self.state.lock().unwrap().settings.get(key).cloned()
    }

    /// The object's tag set.
    pub fn tags(&self, key: &str) -> Option<Vec<(String, String)>> {
        self.state.lock().unwrap().tags.get(key).cloned()
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

    /// Another writer's PutObject of `data` at `key` (SHA-256 checksum, MD5 ETag).
    pub fn replace_object(&self, key: &str, data: Vec<u8>) {
        use base64::Engine as _;
        let b64 = base64::engine::general_purpose::STANDARD;
        let reply = WriteReply {
            etag: Some(md5_etag(&data)),
            checksum: Some(b64.encode(digest(ChecksumAlgorithm::Sha256, &data))),
            ..WriteReply::default()
        };
        let mut st = self.state.lock().unwrap();
        st.layouts.remove(key);
        st.objects
            .insert(key.to_owned(), (data, ChecksumAlgorithm::Sha256, reply));
        Self::store_settings(&mut st, key, &ObjectSettings::default());
    }

    /// Answers GetObjectAttributes (size, ETag, checksum, and each part's size and checksum for
    /// multipart objects), as AWS and LocalStack do; by default it answers as Garage does
    /// (not implemented).
    pub fn answer_attributes(&self) {
        self.state.lock().unwrap().attributes = true;
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

impl MultipartWrite for FakeS3 {
    async fn put_object(
        &self,
        obj: &ObjectUrl,
        alg: ChecksumAlgorithm,
        body: Bytes,
        hash: &PartHash,
        settings: &ObjectSettings,
    ) -> Result<WriteReply, S3Error> {
        let _in_flight = self.request().await;
        if settings.if_absent && self.state.lock().unwrap().objects.contains_key(&obj.key) {
            return Err(err("PreconditionFailed", 412));
        }
        let ignored = alg.is_recent() && self.state.lock().unwrap().recent_unsupported;
        let checksum = if ignored {
            // As Garage and LocalStack: the header is not looked at; Content-MD5 still is.
            if hash.md5.is_some_and(|m| md5(&body) != m) {
                return Err(err("BadDigest", 400));
            }
            None
        } else {
            Some(Self::verify(alg, &body, hash)?)
        };
        let reply = WriteReply {
            etag: Some(Self::etag_under(settings, md5_etag(&body))),
            checksum,
            sse: Self::sse(settings),
            ..WriteReply::default()
        };
        let mut s = self.state.lock().unwrap();
        s.layouts.remove(&obj.key);
        s.objects
            .insert(obj.key.clone(), (body.to_vec(), alg, reply.clone()));
        Self::store_settings(&mut s, &obj.key, settings);
        Ok(reply)
    }

    async fn create_multipart(
        &self,
        obj: &ObjectUrl,
        alg: ChecksumAlgorithm,
        kind: ChecksumType,
        settings: &ObjectSettings,
    ) -> Result<String, S3Error> {
        let _in_flight = self.request().await;
        let mut s = self.state.lock().unwrap();
        if alg.is_recent() && s.recent_unsupported {
            return Err(S3Error::from_response(
                Some("InvalidRequest"),
                Some(400),
                format!("fake: unsupported checksum algorithm {alg}"),
            ));
        }
        s.creates += 1;
        s.next_id += 1;
        let id = format!("upload-{}", s.next_id);
        let initiated = s.next_id as i64;
        s.uploads.insert(
            id.clone(),
            Upload {
                key: obj.key.clone(),
                alg,
                kind,
                initiated,
                parts: BTreeMap::new(),
                settings: settings.clone(),
            },
        );
        if s.lose_create_replies > 0 {
            s.lose_create_replies -= 1;
            return Err(S3Error::transport(
                "fake: connection reset before the reply".into(),
            ));
        }
        Ok(id)
    }

    async fn upload_part(
        &self,
        _obj: &ObjectUrl,
        upload_id: &str,
        number: u32,
        alg: ChecksumAlgorithm,
        body: Bytes,
        hash: &PartHash,
    ) -> Result<WriteReply, S3Error> {
        let _in_flight = self.request().await;
        let checksum = Self::verify(alg, &body, hash)?;
        let (crash, etag, sse) = {
            let mut s = self.state.lock().unwrap();
            s.part_uploads += 1;
            let crash = s.crash_after.filter(|(at, _)| s.part_uploads > *at);
            let store = crash.is_none_or(|(_, store)| store);
            let Some(up) = s.uploads.get_mut(upload_id) else {
                return Err(err("NoSuchUpload", 404));
            };
            if up.alg != alg {
                return Err(err("InvalidRequest", 400));
            }
            let etag = Self::etag_under(&up.settings, md5_etag(&body));
            let sse = Self::sse(&up.settings);
            if store {
                up.parts.insert(
                    number,
                    Stored {
                        // A copy, as a server has: the body is a view of the caller's memory map.
                        data: Bytes::copy_from_slice(&body),
                        checksum: checksum.clone(),
                        etag: etag.clone(),
                    },
                );
            }
            (crash.is_some(), etag, sse)
        };
        if crash {
            self.crashed.store(true, Ordering::SeqCst);
            self.crash.notify_waiters();
            std::future::pending::<()>().await;
        }
        Ok(WriteReply {
            etag: Some(etag),
            checksum: Some(checksum),
            sse,
            ..WriteReply::default()
        })
    }

    async fn complete_multipart(
        &self,
        obj: &ObjectUrl,
        upload_id: &str,
        _alg: ChecksumAlgorithm,
        parts: &[CompletedPart],
        full_object: Option<&str>,
    ) -> Result<WriteReply, S3Error> {
        let _in_flight = self.request().await;
        let mut s = self.state.lock().unwrap();
        let Some(up) = s.uploads.get(upload_id).cloned() else {
            return Err(err("NoSuchUpload", 404));
        };
        let mut data = Vec::new();
        let mut raw = Vec::new();
        let mut md5s = Vec::new();
        let mut layout = Vec::new();
        for (i, p) in parts.iter().enumerate() {
            let held = up
                .parts
                .get(&p.number)
                .ok_or_else(|| err("InvalidPart", 400))?;
            if p.number as usize != i + 1 || held.etag != p.etag || held.checksum != p.checksum {
                return Err(err("InvalidPart", 400));
            }
            data.extend_from_slice(&held.data);
            layout.push((held.data.len() as u64, held.checksum.clone()));
            raw.extend_from_slice(&digest(up.alg, &held.data));
            md5s.extend_from_slice(&md5(&held.data));
        }
        let checksum = match up.kind {
            ChecksumType::FullObject => {
                let whole = B64.encode(digest(up.alg, &data));
                if full_object.is_some_and(|f| f != whole) {
                    return Err(err("BadDigest", 400));
                }
                whole
            }
            ChecksumType::Composite => {
                format!("{}-{}", B64.encode(digest(up.alg, &raw)), parts.len())
            }
        };
        let etag = ETag::new(&format!("{}-{}", hex(&md5(&md5s)), parts.len()));
        let reply = WriteReply {
            checksum: Some(checksum),
            etag: Some(Self::etag_under(&up.settings, etag)),
            sse: Self::sse(&up.settings),
            ..WriteReply::default()
        };
        s.uploads.remove(upload_id);
        s.layouts.insert(obj.key.clone(), layout);
        s.objects
            .insert(obj.key.clone(), (data, up.alg, reply.clone()));
        Self::store_settings(&mut s, &obj.key, &up.settings);
        s.completes += 1;
        Ok(reply)
    }

    async fn complete_multipart_if_absent(
        &self,
        obj: &ObjectUrl,
        upload_id: &str,
        alg: ChecksumAlgorithm,
        parts: &[CompletedPart],
        full_object: Option<&str>,
    ) -> Result<WriteReply, S3Error> {
        if self.state.lock().unwrap().objects.contains_key(&obj.key) {
            let _in_flight = self.request().await;
            return Err(err("PreconditionFailed", 412));
        }
        self.complete_multipart(obj, upload_id, alg, parts, full_object)
            .await
    }

    async fn abort_multipart(&self, _obj: &ObjectUrl, upload_id: &str) -> Result<(), S3Error> {
        let _in_flight = self.request().await;
        let mut st = self.state.lock().unwrap();
        if st.refuse_aborts {
            return Err(err("InternalError", 500));
        }
        match st.uploads.remove(upload_id) {
            Some(_) => Ok(()),
            None => Err(err("NoSuchUpload", 404)),
        }
    }

    async fn list_parts(
        &self,
        _obj: &ObjectUrl,
        upload_id: &str,
        _alg: ChecksumAlgorithm,
    ) -> Result<Vec<HeldPart>, S3Error> {
        let _in_flight = self.request().await;
        let pages = paginate(|marker| async move { self.parts_page(upload_id, marker) }).await?;
        Ok(pages.into_iter().flatten().collect())
    }

    async fn list_uploads(&self, _bucket: &str, prefix: &str) -> Result<Vec<InProgress>, S3Error> {
        let _in_flight = self.request().await;
        let s = self.state.lock().unwrap();
        if s.no_upload_listing {
            return Err(S3Error::from_response(
                Some("NotImplemented"),
                Some(501),
                "ListMultipartUploads is not implemented".into(),
            ));
        }
        let mut out: Vec<InProgress> = s
            .uploads
            .iter()
            .filter(|(_, u)| u.key.starts_with(prefix))
            .map(|(id, u)| InProgress {
                key: u.key.clone(),
                upload_id: id.clone(),
                initiated: Some(u.initiated),
            })
            .collect();
        out.sort_by(|a, b| (&a.key, a.initiated).cmp(&(&b.key, b.initiated)));
        Ok(out)
    }

    fn endpoint_label(&self) -> String {
        "fake".into()
    }
}

impl ObjectRead for FakeS3 {
    async fn object_attributes(
        &self,
        obj: &ObjectUrl,
    ) -> Result<Option<ObjectAttributes>, S3Error> {
        let _in_flight = self.request().await;
        let s = self.state.lock().unwrap();
        if !s.attributes {
            return Ok(None);
        }
        let (data, alg, reply) = s
            .objects
            .get(&obj.key)
            .ok_or_else(|| err("NoSuchKey", 404))?;
        let layout = s.layouts.get(&obj.key);
        Ok(Some(ObjectAttributes {
            size: Some(data.len() as u64),
            etag: reply.etag.clone(),
            checksum: reply.checksum.as_ref().map(|v| RemoteChecksum {
                algorithm: *alg,
                kind: None,
                // GetObjectAttributes gives a composite without its `-N`.
                value: v.split('-').next().unwrap_or(v).to_owned(),
            }),
            parts_count: layout.map(|l| l.len() as u32),
            parts: layout
                .into_iter()
                .flatten()
                .enumerate()
                .map(|(i, (size, checksum))| super::RemotePart {
                    number: i as u32 + 1,
                    size: *size,
                    checksum: Some(checksum.clone()),
                })
                .collect(),
        }))
    }

    async fn head_object(
        &self,
        obj: &ObjectUrl,
        part_number: Option<u32>,
    ) -> Result<HeadInfo, S3Error> {
        let _in_flight = self.request().await;
        let mut s = self.state.lock().unwrap();
        s.heads += 1;
        let s = s;
        let (data, alg, reply) = s
            .objects
            .get(&obj.key)
            .ok_or_else(|| err("NotFound", 404))?;
        let settings = s.settings.get(&obj.key);
        let layout = s.layouts.get(&obj.key);
        let size = match (part_number, layout) {
            (None, _) => data.len() as u64,
            (Some(n), Some(l)) => l
                .get(n as usize - 1)
                .map(|(size, _)| *size)
                .ok_or_else(|| err("InvalidPartNumber", 416))?,
            (Some(1), None) => data.len() as u64,
            (Some(_), None) => return Err(err("InvalidPartNumber", 416)),
        };
        Ok(HeadInfo {
            size,
            parts_count: part_number.and(layout.map(|l| l.len() as u32)),
            etag: reply.etag.clone(),
            checksum: reply.checksum.clone().map(|value| RemoteChecksum {
                algorithm: *alg,
                kind: None,
                value,
            }),
            sse: reply.sse.clone(),
            storage_class: settings
                .and_then(|x| x.storage_class)
                .map(|c| c.as_str().to_owned()),
            content_type: settings.and_then(|x| x.content_type.clone()),
            metadata_count: settings.map_or(0, |x| x.metadata.len()),
            tag_count: s.tags.get(&obj.key).map(|t| t.len() as u32),
            ..HeadInfo::default()
        })
    }

    async fn get_range(
        &self,
        obj: &ObjectUrl,
        range: std::ops::Range<u64>,
        if_match: Option<&ETag>,
    ) -> Result<Bytes, S3Error> {
        let _in_flight = self.request().await;
        let s = self.state.lock().unwrap();
        let (data, _, reply) = s
            .objects
            .get(&obj.key)
            .ok_or_else(|| err("NoSuchKey", 404))?;
        if if_match.is_some_and(|want| reply.etag.as_ref() != Some(want)) {
            return Err(err("PreconditionFailed", 412));
        }
        Ok(Bytes::copy_from_slice(
            &data[range.start as usize..range.end as usize],
        ))
    }

    async fn list_page(
        &self,
        _bucket: &str,
        prefix: &str,
        token: Option<&str>,
        start_after: Option<&str>,
    ) -> Result<super::ListPage, S3Error> {
        let _in_flight = self.request().await;
        let mut s = self.state.lock().unwrap();
        s.list_pages += 1;
        let page = s.page_size.unwrap_or(1000).max(1);
        // The token is the last key of the page before (the fake's own format); it goes on from
        // there, as S3's does, whatever StartAfter says.
        let after = token.or(start_after);
        let mut keys: Vec<(&String, u64, Option<ETag>)> = s
            .objects
            .iter()
            .filter(|(k, _)| k.starts_with(prefix) && after.is_none_or(|t| k.as_str() > t))
            .map(|(k, (d, _, r))| (k, d.len() as u64, r.etag.clone()))
            .collect();
        keys.sort_by(|a, b| a.0.cmp(b.0));
        let more = keys.len() > page;
        keys.truncate(page);
        let objects: Vec<super::ListedObject> = keys
            .into_iter()
            .map(|(k, size, etag)| super::ListedObject {
                key: k.clone(),
                size,
                etag,
            })
            .collect();
        let next = more
            .then(|| objects.last().map(|o| o.key.clone()))
            .flatten();
        Ok(super::ListPage { objects, next })
    }

    /// The range in pieces of [`FakeS3::STREAM_PIECE`] bytes; the object's checksum comes with a
    /// read of the whole object, as S3 sends it.
    async fn get_stream(
        &self,
        obj: &ObjectUrl,
        range: std::ops::Range<u64>,
        _part: Option<u32>,
        if_match: Option<&ETag>,
        _version_id: Option<&str>,
    ) -> Result<super::RangeBody, S3Error> {
        let _in_flight = self.request().await;
        let s = self.state.lock().unwrap();
        let (data, alg, reply) = s
            .objects
            .get(&obj.key)
            .ok_or_else(|| err("NoSuchKey", 404))?;
        if if_match.is_some_and(|want| reply.etag.as_ref() != Some(want)) {
            return Err(err("PreconditionFailed", 412));
        }
        let whole = range.start == 0 && range.end == data.len() as u64;
        let checksum = reply
            .checksum
            .clone()
            .filter(|_| whole)
            .map(|value| RemoteChecksum {
                algorithm: *alg,
                kind: None,
                value,
            });
        let bytes = Bytes::copy_from_slice(&data[range.start as usize..range.end as usize]);
        let pieces: Vec<Result<Bytes, S3Error>> = (0..bytes.len())
            .step_by(Self::STREAM_PIECE)
            .map(|at| Ok(bytes.slice(at..(at + Self::STREAM_PIECE).min(bytes.len()))))
            .collect();
        Ok(super::RangeBody {
            checksum,
            etag: reply.etag.clone(),
            body: Box::pin(futures::stream::iter(pieces)),
        })
    }
}

impl FakeS3 {
    /// Bytes per piece of a streamed body.
    pub const STREAM_PIECE: usize = 16 * 1024;
}

impl Tagging for FakeS3 {
    async fn get_tags(
        &self,
        obj: &ObjectUrl,
        _version: Option<&str>,
    ) -> Result<Vec<(String, String)>, S3Error> {
        let _in_flight = self.request().await;
        let s = self.state.lock().unwrap();
        if !s.objects.contains_key(&obj.key) {
            return Err(err("NoSuchKey", 404));
        }
        Ok(s.tags.get(&obj.key).cloned().unwrap_or_default())
    }

    async fn put_tags(
        &self,
        obj: &ObjectUrl,
        _version: Option<&str>,
        tags: &[(String, String)],
    ) -> Result<(), S3Error> {
        let _in_flight = self.request().await;
        let mut s = self.state.lock().unwrap();
        if !s.objects.contains_key(&obj.key) {
            return Err(err("NoSuchKey", 404));
        }
        s.tags.insert(obj.key.clone(), tags.to_vec());
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
                Bytes::from_static(b"hellO"),
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
                Bytes::from_static(b"hello"),
                &h,
                &ObjectSettings::default(),
            )
            .await
            .unwrap_err();
        assert_eq!(e.code.as_deref(), Some("BadDigest"), "a wrong Content-MD5");
    }
}
