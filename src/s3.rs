//! The S3 boundary: the few operations tally needs, as three small traits with tally's own reply
//! types, and their aws-sdk-s3 implementation ([`SdkS3`], in `s3/sdk.rs`).
//!
//! Everything above this module speaks [`ObjectRead`], [`MultipartWrite`] and [`Tagging`] (or
//! [`S3Api`], all three); the SDK's types stay in `s3/`. Tests wrap a client in decorators that
//! inject faults (a wrong checksum, a failed part), or use the in-memory [`fake`] (feature `fake`).

use std::future::Future;

use bytes::Bytes;

use crate::vocab::ETag;
use crate::vocab::{ChecksumAlgorithm, ChecksumType, PartHash};
use crate::vocab::{ObjectSettings, ObjectUrl};

mod body;
mod connection;
mod create;
mod endpoint;
mod error;
mod errors;
#[cfg(any(test, feature = "fake"))]
pub mod fake;
pub(crate) mod identity;
mod interceptors;
mod paging;
mod sdk;
#[cfg(any(test, feature = "fake"))]
pub mod tamper;
pub(crate) mod throttle;
mod watch;

pub use body::{FileRange, PutBody};
pub use connection::{ConnectError, Connection, DEFAULT_TIMEOUT};
pub use create::create_upload;
pub use endpoint::{is_local_or_ip, is_loopback, plain_http_warning};
pub use error::{NetworkCause, S3Error, S3ErrorKind};
pub use sdk::SdkS3;

/// What S3 answered to a write (PutObject, UploadPart, CompleteMultipartUpload).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WriteReply {
    /// The ETag.
    pub etag: Option<ETag>,
    /// The checksum S3 reports for the algorithm in use (base64, `-N` for composites).
    pub checksum: Option<String>,
    /// The checksum type S3 reports, if any (`COMPOSITE` / `FULL_OBJECT`).
    pub checksum_type: Option<String>,
    /// Server-side encryption applied (`AES256`, `aws:kms`, `aws:kms:dsse`).
    pub sse: Option<String>,
    /// The object version, on versioned buckets.
    pub version_id: Option<String>,
}

impl WriteReply {
    /// Whether the ETag is an MD5 of the bytes: not under SSE-KMS (or SSE-C, which tally never sends).
    pub fn etag_is_md5(&self) -> bool {
        crate::vocab::EtagKind::of(self.sse.as_deref(), false).is_md5()
    }
}

/// A part to list in CompleteMultipartUpload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CompletedPart {
    /// Part number.
    pub number: u32,
    /// The ETag UploadPart returned.
    pub etag: ETag,
    /// The part's checksum, base64.
    pub checksum: String,
}

/// A part S3 holds for an upload in progress (ListParts).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeldPart {
    /// Part number.
    pub number: u32,
    /// Size in bytes.
    pub size: u64,
    /// Its ETag.
    pub etag: ETag,
    /// The part's checksum for the upload's algorithm, when the server reports it.
    pub checksum: Option<String>,
}

/// A multipart upload in progress (ListMultipartUploads).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InProgress {
    /// Key.
    pub key: String,
    /// Upload id.
    pub upload_id: String,
    /// When it was started, seconds since the epoch.
    pub initiated: Option<i64>,
}

/// An object's checksum as S3 reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteChecksum {
    /// The algorithm.
    pub algorithm: ChecksumAlgorithm,
    /// Composite or full-object, when the server says.
    pub kind: Option<ChecksumType>,
    /// The base64 value (a composite may carry `-N`).
    pub value: String,
}

/// One part of a completed object as GetObjectAttributes lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemotePart {
    /// Part number.
    pub number: u32,
    /// Size in bytes.
    pub size: u64,
    /// The part's checksum (base64), when the object has one.
    pub checksum: Option<String>,
}

/// GetObjectAttributes (ETag, Checksum, ObjectParts, ObjectSize), every page of parts.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ObjectAttributes {
    /// Size in bytes.
    pub size: Option<u64>,
    /// The ETag.
    pub etag: Option<ETag>,
    /// The object checksum (GetObjectAttributes gives composites without `-N`).
    pub checksum: Option<RemoteChecksum>,
    /// Number of parts, for multipart objects.
    pub parts_count: Option<u32>,
    /// Every part with its size and checksum; empty when the object has no per-part checksums.
    pub parts: Vec<RemotePart>,
}

/// HeadObject with checksum mode enabled (optionally of one part).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct HeadInfo {
    /// Content length: the object's, or the part's with `part_number`.
    pub size: u64,
    /// The ETag.
    pub etag: Option<ETag>,
    /// The object checksum.
    pub checksum: Option<RemoteChecksum>,
    /// x-amz-mp-parts-count, when asked for a part of a multipart object.
    pub parts_count: Option<u32>,
    /// Server-side encryption (`AES256`, `aws:kms`, `aws:kms:dsse`).
    pub sse: Option<String>,
    /// Whether the object is encrypted with a customer key (SSE-C).
    pub sse_c: bool,
    /// Version id.
    pub version_id: Option<String>,
    /// x-amz-storage-class (AWS omits it for STANDARD; Garage never sends it).
    pub storage_class: Option<String>,
    /// Content-Type.
    pub content_type: Option<String>,
    /// Number of user metadata entries (x-amz-meta-*).
    pub metadata_count: usize,
    /// x-amz-tagging-count, when the server sends it.
    pub tag_count: Option<u32>,
}

impl HeadInfo {
    /// Whether the ETag is an MD5 of the content (not under SSE-KMS or SSE-C).
    pub fn etag_is_md5(&self) -> bool {
        crate::vocab::EtagKind::of(self.sse.as_deref(), self.sse_c).is_md5()
    }
}
/// The body of a ranged GET as it arrives, with what the reply said about those bytes.
pub struct RangeBody {
    /// The checksum header of the reply, asked for with checksum mode: a part's own checksum when
    /// the range is exactly one part on servers that send it; the object's for a whole-object
    /// read; `None` when the server sent none.
    pub checksum: Option<RemoteChecksum>,
    /// The object's ETag, as the reply gives it.
    pub etag: Option<ETag>,
    /// The body, in the pieces the transport delivers (a few KiB to a few hundred KiB each):
    /// nothing is collected, so memory stays bounded whatever the range's length.
    pub body: futures::stream::BoxStream<'static, Result<Bytes, S3Error>>,
}

impl std::fmt::Debug for RangeBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RangeBody")
            .field("checksum", &self.checksum)
            .field("etag", &self.etag)
            .finish_non_exhaustive()
    }
}

/// One object of a listing (ListObjectsV2).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListedObject {
    /// Its key.
    pub key: String,
    /// Size in bytes.
    pub size: u64,
    /// Its ETag, as the listing gives it (an MD5 of a single-part object's bytes unless it is
    /// encrypted with SSE-KMS or SSE-C; a server may leave it out).
    pub etag: Option<ETag>,
}

/// One page of a listing (ListObjectsV2): its objects in key order, and the token of the next
/// page, `None` after the last.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ListPage {
    /// The objects of this page.
    pub objects: Vec<ListedObject>,
    /// The continuation token of the next page.
    pub next: Option<String>,
}

/// Reading objects: HEAD, GetObjectAttributes and ranged GETs.
pub trait ObjectRead: Send + Sync {
    /// GetObjectAttributes with every page of parts; `Ok(None)` when the server does not
    /// implement it.
    fn object_attributes(
        &self,
        obj: &ObjectUrl,
    ) -> impl Future<Output = Result<Option<ObjectAttributes>, S3Error>> + Send;

    /// HeadObject with checksum mode, of the object or of one part.
    fn head_object(
        &self,
        obj: &ObjectUrl,
        part_number: Option<u32>,
    ) -> impl Future<Output = Result<HeadInfo, S3Error>> + Send;

    /// GetObject of the byte range `range` (kept small by callers: it is held in memory), only if
    /// the object's ETag is still `if_match` when given (else PreconditionFailed).
    fn get_range(
        &self,
        obj: &ObjectUrl,
        range: std::ops::Range<u64>,
        if_match: Option<&ETag>,
    ) -> impl Future<Output = Result<Bytes, S3Error>> + Send;

    /// One page of ListObjectsV2 of `bucket` under `prefix` (the first with `token` None), in key
    /// order, starting after the key `start_after` when given (S3's StartAfter; a `token` goes on
    /// from where its page ended); read a whole listing as a stream with `remote::listing`.
    /// The default answers NotImplemented (test doubles that do not list).
    fn list_page(
        &self,
        bucket: &str,
        prefix: &str,
        token: Option<&str>,
        start_after: Option<&str>,
    ) -> impl Future<Output = Result<ListPage, S3Error>> + Send {
        let _ = (bucket, prefix, token, start_after);
        async {
            Err(S3Error::from_response(
                Some("NotImplemented"),
                Some(501),
                "listing objects".into(),
            ))
        }
    }

    /// GetObject of the byte range `range` as a stream (see [`RangeBody`]), with checksum mode on,
    /// only if the object's ETag is still `if_match` when given (else PreconditionFailed), of
    /// version `version_id` when given. With `part`, the range is that part of a multipart object
    /// and is asked for as `?partNumber=N` (S3 then sends the part's own checksum); else with a
    /// `Range` header. The caller checks the length of what arrives.
    ///
    /// The default reads the range with [`ObjectRead::get_range`] (held whole in memory, no
    /// checksum header, version ignored): for test doubles only; real clients stream.
    fn get_stream(
        &self,
        obj: &ObjectUrl,
        range: std::ops::Range<u64>,
        part: Option<u32>,
        if_match: Option<&ETag>,
        version_id: Option<&str>,
    ) -> impl Future<Output = Result<RangeBody, S3Error>> + Send {
        let _ = (part, version_id);
        let read = self.get_range(obj, range, if_match);
        async move {
            let body = read.await?;
            Ok(RangeBody {
                checksum: None,
                etag: None,
                body: Box::pin(futures::stream::once(async move { Ok(body) })),
            })
        }
    }

    /// GetObject of the whole object, `size` bytes as listed, with no `Range` header, with
    /// checksum mode on, only if the object's ETag is still `if_match` (else PreconditionFailed).
    /// Asked without a range, S3 (and Garage, LocalStack) send the object's own checksum with the
    /// reply; with a `Range`, even one of every byte, they send none. The caller checks the length
    /// of what arrives.
    ///
    /// The default reads `0..size` with [`ObjectRead::get_stream`] (test doubles).
    fn get_whole(
        &self,
        obj: &ObjectUrl,
        size: u64,
        if_match: Option<&ETag>,
    ) -> impl Future<Output = Result<RangeBody, S3Error>> + Send {
        self.get_stream(obj, 0..size, None, if_match, None)
    }
}

/// Writing objects: PutObject and the multipart upload life cycle.
///
/// Every body comes with its precomputed [`PartHash`]: implementations send the checksum and
/// Content-MD5 with it so that S3 verifies the bytes on receipt, and must not hash the body again.
pub trait MultipartWrite: Send + Sync {
    /// PutObject of a whole (small) object, with its storage class, content type, metadata,
    /// tags and encryption (`settings`, already resolved for the file).
    fn put_object(
        &self,
        obj: &ObjectUrl,
        alg: ChecksumAlgorithm,
        body: PutBody,
        hash: &PartHash,
        settings: &ObjectSettings,
    ) -> impl Future<Output = Result<WriteReply, S3Error>> + Send;

    /// CreateMultipartUpload with the checksum algorithm and type, sent once (no retries: a
    /// lost reply may have created an upload: [`create_upload`] finds it); returns the upload id.
    /// The object's settings (storage class, content type, metadata, tags, encryption) are given
    /// here, once for the whole upload.
    fn create_multipart(
        &self,
        obj: &ObjectUrl,
        alg: ChecksumAlgorithm,
        kind: ChecksumType,
        settings: &ObjectSettings,
    ) -> impl Future<Output = Result<String, S3Error>> + Send;

    /// UploadPart of part `number`.
    fn upload_part(
        &self,
        obj: &ObjectUrl,
        upload_id: &str,
        number: u32,
        alg: ChecksumAlgorithm,
        body: Bytes,
        hash: &PartHash,
    ) -> impl Future<Output = Result<WriteReply, S3Error>> + Send;

    /// CompleteMultipartUpload listing every part with its checksum; `full_object` carries the
    /// whole-object CRC for FULL_OBJECT uploads.
    fn complete_multipart(
        &self,
        obj: &ObjectUrl,
        upload_id: &str,
        alg: ChecksumAlgorithm,
        parts: &[CompletedPart],
        full_object: Option<&str>,
    ) -> impl Future<Output = Result<WriteReply, S3Error>> + Send;

    /// [`MultipartWrite::complete_multipart`] only if no object exists at the key yet
    /// (`If-None-Match: *`): PreconditionFailed when one does, and nothing is replaced. A server
    /// that ignores the header completes as usual; one that refuses it answers Unsupported.
    fn complete_multipart_if_absent(
        &self,
        obj: &ObjectUrl,
        upload_id: &str,
        alg: ChecksumAlgorithm,
        parts: &[CompletedPart],
        full_object: Option<&str>,
    ) -> impl Future<Output = Result<WriteReply, S3Error>> + Send;

    /// AbortMultipartUpload.
    fn abort_multipart(
        &self,
        obj: &ObjectUrl,
        upload_id: &str,
    ) -> impl Future<Output = Result<(), S3Error>> + Send;

    /// ListParts, every page, in part-number order. NotFound if the upload no longer exists.
    fn list_parts(
        &self,
        obj: &ObjectUrl,
        upload_id: &str,
        alg: ChecksumAlgorithm,
    ) -> impl Future<Output = Result<Vec<HeldPart>, S3Error>> + Send;

    /// ListMultipartUploads of `bucket` under `prefix`, every page.
    fn list_uploads(
        &self,
        bucket: &str,
        prefix: &str,
    ) -> impl Future<Output = Result<Vec<InProgress>, S3Error>> + Send;

    /// A label for the endpoint, part of what identifies an upload locally ("aws" for AWS).
    fn endpoint_label(&self) -> String;
}

/// Object tags: read and replace the tag set.
pub trait Tagging: Send + Sync {
    /// GetObjectTagging (of `version`, if given).
    fn get_tags(
        &self,
        obj: &ObjectUrl,
        version: Option<&str>,
    ) -> impl Future<Output = Result<Vec<(String, String)>, S3Error>> + Send;

    /// PutObjectTagging, replacing the whole tag set (of `version`, if given).
    fn put_tags(
        &self,
        obj: &ObjectUrl,
        version: Option<&str>,
        tags: &[(String, String)],
    ) -> impl Future<Output = Result<(), S3Error>> + Send;
}

/// Every S3 operation tally uses: implemented for anything that implements the three traits.
/// Implementations must be cheap to share across tasks.
pub trait S3Api: ObjectRead + MultipartWrite + Tagging {}

impl<T: ObjectRead + MultipartWrite + Tagging> S3Api for T {}
