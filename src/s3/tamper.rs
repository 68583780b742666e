//! A decorator for tests (feature `fake`): any client, with hooks that alter what one request
//! sends or what its reply says, so a test shows what tally does when bytes, checksums or replies
//! go wrong, against the fake or a real server, without forwarding every method by hand.

use bytes::Bytes;

use super::{
    CompletedPart, ETag, HeadInfo, HeldPart, InProgress, MultipartWrite, ObjectAttributes,
    ObjectRead, Tagging, WriteReply,
};
use crate::s3::S3Error;
use crate::vocab::{ChecksumAlgorithm, ChecksumType, PartHash};
use crate::vocab::{ObjectSettings, ObjectUrl};

type PartHook = Box<dyn Fn(u32, &mut PartHash) + Send + Sync>;
type ReplyHook = Box<dyn Fn(u32, &mut WriteReply) + Send + Sync>;
type CompleteHook = Box<dyn Fn(&mut WriteReply) + Send + Sync>;
type BodyHook = std::sync::Arc<dyn Fn(u32, u64, &mut Vec<u8>) + Send + Sync>;
type HeadHook = Box<dyn Fn(&mut HeadInfo) + Send + Sync>;
type PutHook = Box<dyn Fn() + Send + Sync>;

/// `inner` with hooks; every operation without a hook is forwarded unchanged.
pub struct Tamper<C> {
    inner: C,
    part_sent: Option<PartHook>,
    part_reply: Option<ReplyHook>,
    complete_reply: Option<CompleteHook>,
    body_received: Option<BodyHook>,
    head_reply: Option<HeadHook>,
    put_sent: Option<PutHook>,
    gets: std::sync::atomic::AtomicU32,
}

impl<C> Tamper<C> {
    /// `inner`, unchanged until hooks are added.
    pub fn new(inner: C) -> Tamper<C> {
        Tamper {
            inner,
            part_sent: None,
            part_reply: None,
            complete_reply: None,
            body_received: None,
            head_reply: None,
            put_sent: None,
            gets: std::sync::atomic::AtomicU32::new(0),
        }
    }

    /// Alters the bytes of streamed GETs as they arrive: called with the GET's number (from 1, in
    /// the order they were answered), the offset of the piece in the object, and the piece.
    pub fn body_received(
        mut self,
        f: impl Fn(u32, u64, &mut Vec<u8>) + Send + Sync + 'static,
    ) -> Self {
        self.body_received = Some(std::sync::Arc::new(f));
        self
    }

    /// Alters the precomputed hash sent with UploadPart `number` (its checksum or Content-MD5
    /// header), not the body: the server then sees bytes that do not match what was declared.
    pub fn part_sent(mut self, f: impl Fn(u32, &mut PartHash) + Send + Sync + 'static) -> Self {
        self.part_sent = Some(Box::new(f));
        self
    }

    /// Runs when a PutObject is sent, before the server reads its body (a body read from a
    /// file is read after this).
    pub fn put_sent(mut self, f: impl Fn() + Send + Sync + 'static) -> Self {
        self.put_sent = Some(Box::new(f));
        self
    }

    /// Alters the reply to UploadPart `number`.
    pub fn part_reply(mut self, f: impl Fn(u32, &mut WriteReply) + Send + Sync + 'static) -> Self {
        self.part_reply = Some(Box::new(f));
        self
    }

    /// Alters the reply to CompleteMultipartUpload.
    pub fn complete_reply(mut self, f: impl Fn(&mut WriteReply) + Send + Sync + 'static) -> Self {
        self.complete_reply = Some(Box::new(f));
        self
    }

    /// Alters every HeadObject reply (of the object or of a part).
    pub fn head_reply(mut self, f: impl Fn(&mut HeadInfo) + Send + Sync + 'static) -> Self {
        self.head_reply = Some(Box::new(f));
        self
    }

    /// Streamed GETs answered so far (counted once [`Tamper::body_received`] is set).
    pub fn streamed_gets(&self) -> u32 {
        self.gets.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// The wrapped client.
    pub fn inner(&self) -> &C {
        &self.inner
    }

    /// The wrapped client, hooks dropped.
    pub fn into_inner(self) -> C {
        self.inner
    }
}

impl<C: MultipartWrite> MultipartWrite for Tamper<C> {
    async fn put_object(
        &self,
        obj: &ObjectUrl,
        alg: ChecksumAlgorithm,
        body: crate::s3::PutBody,
        hash: &PartHash,
        settings: &ObjectSettings,
    ) -> Result<WriteReply, S3Error> {
        if let Some(f) = &self.put_sent {
            f();
        }
        self.inner.put_object(obj, alg, body, hash, settings).await
    }

    async fn create_multipart(
        &self,
        obj: &ObjectUrl,
        alg: ChecksumAlgorithm,
        kind: ChecksumType,
        settings: &ObjectSettings,
    ) -> Result<String, S3Error> {
        self.inner.create_multipart(obj, alg, kind, settings).await
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
        let mut sent = hash.clone();
        if let Some(f) = &self.part_sent {
            f(number, &mut sent);
        }
        let mut reply = self
            .inner
            .upload_part(obj, upload_id, number, alg, body, &sent)
            .await?;
        if let Some(f) = &self.part_reply {
            f(number, &mut reply);
        }
        Ok(reply)
    }

    async fn complete_multipart(
        &self,
        obj: &ObjectUrl,
        upload_id: &str,
        alg: ChecksumAlgorithm,
        parts: &[CompletedPart],
        full_object: Option<&str>,
    ) -> Result<WriteReply, S3Error> {
        let mut reply = self
            .inner
            .complete_multipart(obj, upload_id, alg, parts, full_object)
            .await?;
        if let Some(f) = &self.complete_reply {
            f(&mut reply);
        }
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
        let mut reply = self
            .inner
            .complete_multipart_if_absent(obj, upload_id, alg, parts, full_object)
            .await?;
        if let Some(f) = &self.complete_reply {
            f(&mut reply);
        }
        Ok(reply)
    }

    async fn abort_multipart(&self, obj: &ObjectUrl, upload_id: &str) -> Result<(), S3Error> {
        self.inner.abort_multipart(obj, upload_id).await
    }

    async fn list_parts(
        &self,
        obj: &ObjectUrl,
        upload_id: &str,
        alg: ChecksumAlgorithm,
    ) -> Result<Vec<HeldPart>, S3Error> {
        self.inner.list_parts(obj, upload_id, alg).await
    }

    async fn list_uploads(&self, bucket: &str, prefix: &str) -> Result<Vec<InProgress>, S3Error> {
        self.inner.list_uploads(bucket, prefix).await
    }

    fn endpoint_label(&self) -> String {
        self.inner.endpoint_label()
    }
}

impl<C: ObjectRead> ObjectRead for Tamper<C> {
    async fn object_attributes(
        &self,
        obj: &ObjectUrl,
    ) -> Result<Option<ObjectAttributes>, S3Error> {
        self.inner.object_attributes(obj).await
    }

    async fn head_object(
        &self,
        obj: &ObjectUrl,
        part_number: Option<u32>,
    ) -> Result<HeadInfo, S3Error> {
        let mut reply = self.inner.head_object(obj, part_number).await?;
        if let Some(f) = &self.head_reply {
            f(&mut reply);
        }
        Ok(reply)
    }

    async fn get_range(
        &self,
        obj: &ObjectUrl,
        range: std::ops::Range<u64>,
        if_match: Option<&ETag>,
    ) -> Result<Bytes, S3Error> {
        self.inner.get_range(obj, range, if_match).await
    }

    async fn list_page(
        &self,
        bucket: &str,
        prefix: &str,
        token: Option<&str>,
        start_after: Option<&str>,
    ) -> Result<super::ListPage, S3Error> {
        self.inner
            .list_page(bucket, prefix, token, start_after)
            .await
    }

    async fn get_stream(
        &self,
        obj: &ObjectUrl,
        range: std::ops::Range<u64>,
        part: Option<u32>,
        if_match: Option<&ETag>,
        version_id: Option<&str>,
    ) -> Result<super::RangeBody, S3Error> {
        let reply = self
            .inner
            .get_stream(obj, range.clone(), part, if_match, version_id)
            .await?;
        Ok(self.received(reply, range.start))
    }

    async fn get_whole(
        &self,
        obj: &ObjectUrl,
        size: u64,
        if_match: Option<&ETag>,
    ) -> Result<super::RangeBody, S3Error> {
        let reply = self.inner.get_whole(obj, size, if_match).await?;
        Ok(self.received(reply, 0))
    }
}

impl<C> Tamper<C> {
    /// `reply` (a GET's, its body starting at byte `start` of the object) as the test's
    /// `body_received` hook changes it.
    fn received(&self, mut reply: super::RangeBody, start: u64) -> super::RangeBody {
        if let Some(f) = &self.body_received {
            let n = self.gets.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1;
            let f = f.clone();
            let mut at = start;
            reply.body = Box::pin(futures::StreamExt::map(reply.body, move |piece| {
                piece.map(|b| {
                    let mut v = b.to_vec();
                    f(n, at, &mut v);
                    at += b.len() as u64;
                    Bytes::from(v)
                })
            }));
        }
        reply
    }
}

impl<C: Tagging> Tagging for Tamper<C> {
    async fn get_tags(
        &self,
        obj: &ObjectUrl,
        version: Option<&str>,
    ) -> Result<Vec<(String, String)>, S3Error> {
        self.inner.get_tags(obj, version).await
    }

    async fn put_tags(
        &self,
        obj: &ObjectUrl,
        version: Option<&str>,
        tags: &[(String, String)],
    ) -> Result<(), S3Error> {
        self.inner.put_tags(obj, version, tags).await
    }
}
