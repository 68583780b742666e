//! What a test arranges (faults, page sizes, dates, another writer) and observes (counts, what
//! is stored).

use std::sync::atomic::Ordering;

use super::FakeS3;
use super::digest::{digest, md5_etag};
use crate::s3::WriteReply;
use crate::vocab::{ChecksumAlgorithm, ObjectSettings};

impl FakeS3 {
    /// Holds the next requests until `n` are in flight together (once; at most `within`), so
    /// that a test can show a client sends `n` at a time without racing the scheduler, or (when
    /// `n` is one more than the client may send) that it never sends more. Listing pages are
    /// not held (they count as in flight).
    pub fn gather(&self, n: usize, within: std::time::Duration) {
        *self.gather_for.lock().unwrap() = within;
        self.gather.store(n, Ordering::SeqCst);
    }

    /// While `held`, every UploadPart waits at the fake (in flight, its request slot taken)
    /// until this is called again with `false`.
    pub fn hold_parts(&self, held: bool) {
        self.parts_held.send_replace(held);
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

    /// The next UploadPart of part `number` is handed over twice (as the SDK sends a body again
    /// after a timeout) and leaves a dropped copy that outranks the stored one, as Garage 2.5
    /// does with an unfinished copy: CompleteMultipartUpload answers `InvalidPart` until the part
    /// is stored again.
    pub fn leave_dropped_copy(&self, number: u32) {
        self.state.lock().unwrap().drop_copy_of = Some(number);
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
}
