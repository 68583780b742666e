//! The S3 boundary: the few operations tally needs, as one trait, and its aws-sdk-s3 implementation.
//!
//! Everything above this module speaks [`S3Api`] with tally's own types; the SDK's types stay here.
//! Tests wrap the real client in decorators that inject faults (a wrong checksum, a failed part).

use std::future::Future;
use std::time::Duration;

use aws_config::BehaviorVersion;
use aws_config::retry::RetryConfig;
use aws_runtime::auth::PayloadSigningOverride;
use aws_sdk_s3::config::interceptors::BeforeTransmitInterceptorContextMut;
use aws_sdk_s3::config::{
    ConfigBag, Intercept, Region, RequestChecksumCalculation, ResponseChecksumValidation,
    RuntimeComponents,
};
use aws_sdk_s3::error::{BoxError, DisplayErrorContext, ProvideErrorMetadata, SdkError};
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{self as s3t, CompletedMultipartUpload};
use bytes::Bytes;

use crate::config::{Connection, ObjectUrl};
use crate::error::{Error, S3Error};
use crate::hash::{ChecksumAlgorithm, ChecksumType, PartHash};

/// What S3 answered to a write (PutObject, UploadPart, CompleteMultipartUpload).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WriteReply {
    /// The ETag, quoted as S3 sends it.
    pub etag: Option<String>,
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
        !matches!(self.sse.as_deref(), Some(s) if s.starts_with("aws:kms"))
    }
}

/// A part to list in CompleteMultipartUpload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CompletedPart {
    /// Part number.
    pub number: u32,
    /// The ETag UploadPart returned.
    pub etag: String,
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
    /// ETag as S3 returns it (quoted).
    pub etag: String,
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
    /// ETag (unquoted).
    pub etag: Option<String>,
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
    /// ETag (unquoted).
    pub etag: Option<String>,
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
}

impl HeadInfo {
    /// Whether the ETag is an MD5 of the content (not under SSE-KMS or SSE-C).
    pub fn etag_is_md5(&self) -> bool {
        !self.sse_c && !matches!(self.sse.as_deref(), Some(s) if s.starts_with("aws:kms"))
    }
}

/// The S3 operations tally uses. Implementations must be cheap to share across tasks.
///
/// Every body comes with its precomputed [`PartHash`]: implementations send the checksum and
/// Content-MD5 with it so that S3 verifies the bytes on receipt, and must not hash the body again.
pub trait S3Api: Send + Sync {
    /// PutObject of a whole (small) object.
    fn put_object(
        &self,
        obj: &ObjectUrl,
        alg: ChecksumAlgorithm,
        body: Bytes,
        hash: &PartHash,
    ) -> impl Future<Output = Result<WriteReply, S3Error>> + Send;

    /// CreateMultipartUpload with the checksum algorithm and type; returns the upload id.
    fn create_multipart(
        &self,
        obj: &ObjectUrl,
        alg: ChecksumAlgorithm,
        kind: ChecksumType,
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

    /// A label for the endpoint, part of what identifies an upload locally ("aws" for AWS).
    fn endpoint_label(&self) -> String;

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

    /// GetObject of the byte range `range` (kept small by callers: it is held in memory), only if
    /// the object's ETag is still `if_match` when given (else PreconditionFailed).
    fn get_range(
        &self,
        obj: &ObjectUrl,
        range: std::ops::Range<u64>,
        if_match: Option<&str>,
    ) -> impl Future<Output = Result<Bytes, S3Error>> + Send;
}

/// [`S3Api`] over aws-sdk-s3.
#[derive(Debug, Clone)]
pub struct SdkS3 {
    client: aws_sdk_s3::Client,
    endpoint: Option<String>,
    timeout: Duration,
}

/// The slowest body transfer tally waits for before it calls a request stalled: 64 KiB/s.
const MIN_BODY_RATE: u64 = 64 * 1024;

/// Per-request timeout for a request carrying `body_len` bytes: the base plus the time the body
/// needs at [`MIN_BODY_RATE`].
fn attempt_timeout(base: Duration, body_len: u64) -> Duration {
    base + Duration::from_secs(body_len / MIN_BODY_RATE)
}

/// A config override giving one request its own attempt timeout.
fn timeout_override(d: Duration) -> aws_sdk_s3::config::Builder {
    aws_sdk_s3::config::Builder::default().timeout_config(
        aws_sdk_s3::config::timeout::TimeoutConfig::builder()
            .operation_attempt_timeout(d)
            .build(),
    )
}

impl SdkS3 {
    /// Builds a client from the standard AWS chain (env, profile, SSO, instance metadata) and the
    /// overrides in `conn`.
    ///
    /// The SDK's own request checksums are turned off: tally sends precomputed ones.
    pub async fn connect(conn: &Connection) -> Result<SdkS3, Error> {
        let mut loader = aws_config::defaults(BehaviorVersion::latest());
        if let Some(p) = &conn.profile {
            loader = loader.profile_name(p);
        }
        if let Some(r) = &conn.region {
            loader = loader.region(Region::new(r.clone()));
        }
        let shared = loader.load().await;
        SdkS3::from_shared_config(&shared, conn)
    }

    /// Builds a client from an already loaded AWS configuration (credentials, region) and the
    /// overrides in `conn`. `conn.region` and `conn.profile` are applied by [`SdkS3::connect`].
    pub fn from_shared_config(
        shared: &aws_config::SdkConfig,
        conn: &Connection,
    ) -> Result<SdkS3, Error> {
        let endpoint = conn
            .endpoint_url
            .clone()
            .or_else(|| shared.endpoint_url().map(str::to_owned));
        let mut b = aws_sdk_s3::config::Builder::from(shared)
            .request_checksum_calculation(RequestChecksumCalculation::WhenRequired)
            .response_checksum_validation(ResponseChecksumValidation::WhenRequired)
            // Adaptive: standard retries (exponential backoff with jitter, a retry-token bucket
            // shared by every request of the client) plus a client-side rate limiter that slows
            // the whole transfer down when S3 throttles, instead of every task hammering.
            .retry_config(
                RetryConfig::adaptive()
                    .with_max_attempts(8)
                    .with_initial_backoff(Duration::from_millis(200))
                    .with_max_backoff(Duration::from_secs(20)),
            )
            .timeout_config(
                aws_sdk_s3::config::timeout::TimeoutConfig::builder()
                    .connect_timeout(conn.timeout.min(Duration::from_secs(10)))
                    .operation_attempt_timeout(conn.timeout)
                    .build(),
            );
        if shared.region().is_none() {
            if endpoint.is_some() {
                b = b.region(Region::from_static("us-east-1"));
            } else {
                return Err(Error::Config(
                    "no AWS region configured: pass --region, set AWS_REGION, or set region in your profile"
                        .into(),
                ));
            }
        }
        if let Some(e) = &endpoint {
            if !(e.starts_with("http://") || e.starts_with("https://")) {
                return Err(Error::Usage(format!(
                    "endpoint URL '{e}' must start with http:// or https://"
                )));
            }
            b = b.endpoint_url(e);
        }
        if let Some(w) = endpoint.as_deref().and_then(plain_http_warning) {
            tracing::warn!("{w}");
        }
        let path_style = conn.path_style || endpoint.as_deref().is_some_and(is_local_or_ip);
        b = b.force_path_style(path_style);
        Ok(SdkS3 {
            client: aws_sdk_s3::Client::from_conf(b.build()),
            endpoint,
            timeout: conn.timeout,
        })
    }

    /// ListMultipartUploads under `prefix`, every page.
    pub async fn list_uploads(
        &self,
        bucket: &str,
        prefix: &str,
    ) -> Result<Vec<InProgress>, S3Error> {
        let mut out = Vec::new();
        let (mut key_marker, mut id_marker) = (None::<String>, None::<String>);
        loop {
            let page = self
                .client
                .list_multipart_uploads()
                .bucket(bucket)
                .prefix(prefix)
                .set_key_marker(key_marker.clone())
                .set_upload_id_marker(id_marker.clone())
                .send()
                .await
                .map_err(s3_error)?;
            for u in page.uploads() {
                out.push(InProgress {
                    key: u.key().unwrap_or_default().to_owned(),
                    upload_id: u.upload_id().unwrap_or_default().to_owned(),
                    initiated: u.initiated().map(|t| t.secs()),
                });
            }
            if page.is_truncated() != Some(true) {
                return Ok(out);
            }
            key_marker = page.next_key_marker().map(str::to_owned);
            id_marker = page.next_upload_id_marker().map(str::to_owned);
            if key_marker.is_none() && id_marker.is_none() {
                return Ok(out);
            }
        }
    }
}

/// Whether an endpoint URL names localhost or an IP address (virtual-host addressing cannot work there).
pub fn is_local_or_ip(url: &str) -> bool {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let authority = rest.split('/').next().unwrap_or("");
    let host = if let Some(v6) = authority.strip_prefix('[') {
        v6.split(']').next().unwrap_or("")
    } else {
        authority.rsplit_once(':').map_or(authority, |(h, _)| h)
    };
    host == "localhost" || host.ends_with(".localhost") || host.parse::<std::net::IpAddr>().is_ok()
}

/// The warning for an endpoint that sends data unencrypted to another machine, if it does.
pub fn plain_http_warning(url: &str) -> Option<String> {
    (url.starts_with("http://") && !is_loopback(url)).then(|| {
        format!(
            "{url} is plain http to another machine: requests are signed, but data and metadata cross the network unencrypted; use https"
        )
    })
}

/// Whether an endpoint URL names this machine (localhost, 127.0.0.0/8, ::1).
pub fn is_loopback(url: &str) -> bool {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let authority = rest.split('/').next().unwrap_or("");
    let host = if let Some(v6) = authority.strip_prefix('[') {
        v6.split(']').next().unwrap_or("")
    } else {
        authority.rsplit_once(':').map_or(authority, |(h, _)| h)
    };
    host == "localhost"
        || host.ends_with(".localhost")
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// Makes SigV4 sign the body with a SHA-256 tally already computed instead of hashing it again.
#[derive(Debug)]
struct PrecomputedPayloadHash(String);

impl Intercept for PrecomputedPayloadHash {
    fn name(&self) -> &'static str {
        "PrecomputedPayloadHash"
    }

    fn modify_before_signing(
        &self,
        _ctx: &mut BeforeTransmitInterceptorContextMut<'_>,
        _rc: &RuntimeComponents,
        cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        cfg.interceptor_state()
            .store_put(PayloadSigningOverride::Precomputed(self.0.clone()));
        Ok(())
    }
}

/// Keeps GetObjectAttributes cheap on servers that do not implement it: some (Garage) answer the
/// request as a plain GET and stream the whole object back. A reply that is not XML, or is larger
/// than any attributes page, has its body dropped unread, and the call fails as "not implemented".
#[derive(Debug)]
struct AttributesGuard;

/// Larger than any GetObjectAttributes page (1,000 parts).
const MAX_ATTRIBUTES_REPLY: u64 = 16 * 1024 * 1024;

impl Intercept for AttributesGuard {
    fn name(&self) -> &'static str {
        "AttributesGuard"
    }

    fn modify_before_deserialization(
        &self,
        ctx: &mut aws_sdk_s3::config::interceptors::BeforeDeserializationInterceptorContextMut<'_>,
        _rc: &RuntimeComponents,
        _cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        let resp = ctx.response_mut();
        let headers = resp.headers();
        let xml = headers
            .get("content-type")
            .is_some_and(|t| t.contains("xml"));
        let len: Option<u64> = headers.get("content-length").and_then(|l| l.parse().ok());
        if resp.status().is_success() && (!xml || len.is_some_and(|l| l > MAX_ATTRIBUTES_REPLY)) {
            *resp.body_mut() = aws_sdk_s3::primitives::SdkBody::empty();
            return Err(
                "the server answered GetObjectAttributes with something else (not implemented)"
                    .into(),
            );
        }
        Ok(())
    }
}

macro_rules! with_checksum {
    ($builder:expr, $alg:expr, $value:expr) => {
        match $alg {
            ChecksumAlgorithm::Sha256 => $builder.checksum_sha256($value),
            ChecksumAlgorithm::Sha1 => $builder.checksum_sha1($value),
            ChecksumAlgorithm::Crc32 => $builder.checksum_crc32($value),
            ChecksumAlgorithm::Crc32c => $builder.checksum_crc32_c($value),
            ChecksumAlgorithm::Crc64nvme => $builder.checksum_crc64_nvme($value),
        }
    };
}

/// The first additional checksum an SDK output carries, with its algorithm.
macro_rules! any_checksum {
    ($out:expr) => {
        [
            (ChecksumAlgorithm::Sha256, $out.checksum_sha256()),
            (ChecksumAlgorithm::Sha1, $out.checksum_sha1()),
            (ChecksumAlgorithm::Crc32, $out.checksum_crc32()),
            (ChecksumAlgorithm::Crc32c, $out.checksum_crc32_c()),
            (ChecksumAlgorithm::Crc64nvme, $out.checksum_crc64_nvme()),
        ]
        .into_iter()
        .find_map(|(a, v)| v.map(|v| (a, v.to_owned())))
    };
}

fn checksum_type(t: Option<&s3t::ChecksumType>) -> Option<ChecksumType> {
    match t {
        Some(s3t::ChecksumType::Composite) => Some(ChecksumType::Composite),
        Some(s3t::ChecksumType::FullObject) => Some(ChecksumType::FullObject),
        _ => None,
    }
}

macro_rules! checksum_of {
    ($out:expr, $alg:expr) => {
        match $alg {
            ChecksumAlgorithm::Sha256 => $out.checksum_sha256(),
            ChecksumAlgorithm::Sha1 => $out.checksum_sha1(),
            ChecksumAlgorithm::Crc32 => $out.checksum_crc32(),
            ChecksumAlgorithm::Crc32c => $out.checksum_crc32_c(),
            ChecksumAlgorithm::Crc64nvme => $out.checksum_crc64_nvme(),
        }
        .map(str::to_owned)
    };
}

/// Sends a body-carrying request with its payload hash: the precomputed SHA-256 when there is one,
/// otherwise UNSIGNED-PAYLOAD (the body is still covered by the signed checksum and Content-MD5
/// headers, which S3 verifies).
macro_rules! send_signed {
    ($req:expr, $alg:expr, $hash:expr, $timeout:expr) => {
        if $alg == ChecksumAlgorithm::Sha256 {
            $req.customize()
                .interceptor(PrecomputedPayloadHash($hash.checksum.hex()))
                .config_override(timeout_override($timeout))
                .send()
                .await
        } else {
            $req.customize()
                .disable_payload_signing()
                .config_override(timeout_override($timeout))
                .send()
                .await
        }
    };
}

fn sdk_alg(alg: ChecksumAlgorithm) -> s3t::ChecksumAlgorithm {
    match alg {
        ChecksumAlgorithm::Sha256 => s3t::ChecksumAlgorithm::Sha256,
        ChecksumAlgorithm::Sha1 => s3t::ChecksumAlgorithm::Sha1,
        ChecksumAlgorithm::Crc32 => s3t::ChecksumAlgorithm::Crc32,
        ChecksumAlgorithm::Crc32c => s3t::ChecksumAlgorithm::Crc32C,
        ChecksumAlgorithm::Crc64nvme => s3t::ChecksumAlgorithm::Crc64Nvme,
    }
}

/// Reduces an SDK error to an [`S3Error`]. Uses only the error code, message, status and the
/// transport's description: no request headers, so no signatures or keys.
pub(crate) fn s3_error<E>(e: SdkError<E, aws_sdk_s3::config::http::HttpResponse>) -> S3Error
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    match &e {
        SdkError::ServiceError(se) => {
            let status = se.raw().status().as_u16();
            let err = se.err();
            S3Error::from_response(
                err.code(),
                Some(status),
                err.message().unwrap_or_default().to_owned(),
            )
            .with_bucket_region(se.raw().headers().get("x-amz-bucket-region"))
        }
        SdkError::ResponseError(r) => S3Error::from_response(
            None,
            Some(r.raw().status().as_u16()),
            "unreadable response".into(),
        )
        .with_bucket_region(r.raw().headers().get("x-amz-bucket-region")),
        SdkError::TimeoutError(_) => S3Error::transport("timed out".into()),
        _ => {
            let text = DisplayErrorContext(&e).to_string();
            if text.contains("credentials") || text.contains("identity") {
                S3Error {
                    kind: crate::error::S3ErrorKind::Credentials,
                    code: None,
                    status: None,
                    message: "no usable AWS credentials found".into(),
                    region: None,
                }
            } else {
                S3Error::transport(text)
            }
        }
    }
}

/// Up to `d` of random-looking extra wait, so retries from many tasks do not line up.
fn jitter(d: Duration) -> Duration {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |t| u64::from(t.subsec_nanos()));
    let mixed = nanos.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 11;
    Duration::from_nanos(mixed % (d.as_nanos() as u64).max(1))
}

impl SdkS3 {
    async fn get_range_once(
        &self,
        obj: &ObjectUrl,
        range: std::ops::Range<u64>,
        if_match: Option<&str>,
    ) -> Result<Bytes, S3Error> {
        let len = range.end - range.start;
        let out = self
            .client
            .get_object()
            .bucket(&obj.bucket)
            .key(&obj.key)
            .range(format!("bytes={}-{}", range.start, range.end - 1))
            .set_if_match(if_match.map(|e| format!("\"{}\"", e.trim_matches('"'))))
            .customize()
            .config_override(timeout_override(attempt_timeout(self.timeout, len)))
            .send()
            .await
            .map_err(s3_error)?;
        let body = out
            .body
            .collect()
            .await
            .map_err(|e| S3Error::transport(format!("reading the body: {e}")))?;
        let bytes = body.into_bytes();
        if bytes.len() as u64 != len {
            return Err(S3Error::transport(format!(
                "short body: {} of {len} bytes",
                bytes.len()
            )));
        }
        Ok(bytes)
    }
}

impl S3Api for SdkS3 {
    async fn put_object(
        &self,
        obj: &ObjectUrl,
        alg: ChecksumAlgorithm,
        body: Bytes,
        hash: &PartHash,
    ) -> Result<WriteReply, S3Error> {
        let req = self
            .client
            .put_object()
            .bucket(&obj.bucket)
            .key(&obj.key)
            .content_length(body.len() as i64)
            .set_content_md5(hash.content_md5())
            .body(ByteStream::from(body));
        let timeout = attempt_timeout(self.timeout, hash.len);
        let req = with_checksum!(req, alg, hash.checksum.base64());
        let out = send_signed!(req, alg, hash, timeout).map_err(s3_error)?;
        Ok(WriteReply {
            etag: out.e_tag().map(str::to_owned),
            checksum: checksum_of!(out, alg),
            checksum_type: out.checksum_type().map(|t| t.as_str().to_owned()),
            sse: out.server_side_encryption().map(|s| s.as_str().to_owned()),
            version_id: out.version_id().map(str::to_owned),
        })
    }

    async fn create_multipart(
        &self,
        obj: &ObjectUrl,
        alg: ChecksumAlgorithm,
        kind: ChecksumType,
    ) -> Result<String, S3Error> {
        let mut req = self
            .client
            .create_multipart_upload()
            .bucket(&obj.bucket)
            .key(&obj.key)
            .checksum_algorithm(sdk_alg(alg));
        if kind == ChecksumType::FullObject {
            req = req.checksum_type(s3t::ChecksumType::FullObject);
        }
        let out = req.send().await.map_err(s3_error)?;
        out.upload_id().map(str::to_owned).ok_or_else(|| {
            S3Error::from_response(
                None,
                None,
                "CreateMultipartUpload returned no upload id".into(),
            )
        })
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
        let req = self
            .client
            .upload_part()
            .bucket(&obj.bucket)
            .key(&obj.key)
            .upload_id(upload_id)
            .part_number(number as i32)
            .content_length(body.len() as i64)
            .set_content_md5(hash.content_md5())
            .body(ByteStream::from(body));
        let timeout = attempt_timeout(self.timeout, hash.len);
        let req = with_checksum!(req, alg, hash.checksum.base64());
        let out = send_signed!(req, alg, hash, timeout).map_err(s3_error)?;
        Ok(WriteReply {
            etag: out.e_tag().map(str::to_owned),
            checksum: checksum_of!(out, alg),
            checksum_type: None,
            sse: out.server_side_encryption().map(|s| s.as_str().to_owned()),
            version_id: None,
        })
    }

    async fn complete_multipart(
        &self,
        obj: &ObjectUrl,
        upload_id: &str,
        alg: ChecksumAlgorithm,
        parts: &[CompletedPart],
        full_object: Option<&str>,
    ) -> Result<WriteReply, S3Error> {
        let parts = parts
            .iter()
            .map(|p| {
                let b = s3t::CompletedPart::builder()
                    .part_number(p.number as i32)
                    .e_tag(&p.etag);
                with_checksum!(b, alg, &p.checksum).build()
            })
            .collect();
        let mut req = self
            .client
            .complete_multipart_upload()
            .bucket(&obj.bucket)
            .key(&obj.key)
            .upload_id(upload_id)
            .multipart_upload(
                CompletedMultipartUpload::builder()
                    .set_parts(Some(parts))
                    .build(),
            );
        if let Some(full) = full_object {
            req = req.checksum_type(s3t::ChecksumType::FullObject);
            req = with_checksum!(req, alg, full);
        }
        // One attempt: the caller confirms what happened before it ever sends another.
        let out = req
            .customize()
            .config_override(
                aws_sdk_s3::config::Builder::default().retry_config(RetryConfig::disabled()),
            )
            .send()
            .await
            .map_err(s3_error)?;
        Ok(WriteReply {
            etag: out.e_tag().map(str::to_owned),
            checksum: checksum_of!(out, alg),
            checksum_type: out.checksum_type().map(|t| t.as_str().to_owned()),
            sse: out.server_side_encryption().map(|s| s.as_str().to_owned()),
            version_id: out.version_id().map(str::to_owned),
        })
    }

    async fn list_parts(
        &self,
        obj: &ObjectUrl,
        upload_id: &str,
        alg: ChecksumAlgorithm,
    ) -> Result<Vec<HeldPart>, S3Error> {
        let mut out = Vec::new();
        let mut marker: Option<String> = None;
        loop {
            let page = self
                .client
                .list_parts()
                .bucket(&obj.bucket)
                .key(&obj.key)
                .upload_id(upload_id)
                .set_part_number_marker(marker.clone())
                .send()
                .await
                .map_err(s3_error)?;
            for p in page.parts() {
                out.push(HeldPart {
                    number: p.part_number().unwrap_or_default() as u32,
                    size: p.size().unwrap_or_default() as u64,
                    etag: p.e_tag().unwrap_or_default().to_owned(),
                    checksum: checksum_of!(p, alg),
                });
            }
            let next = page.next_part_number_marker().map(str::to_owned);
            if page.is_truncated() != Some(true) || next.is_none() || next == marker {
                break;
            }
            marker = next;
        }
        out.sort_by_key(|p| p.number);
        Ok(out)
    }

    fn endpoint_label(&self) -> String {
        self.endpoint.clone().unwrap_or_else(|| "aws".into())
    }

    async fn object_attributes(
        &self,
        obj: &ObjectUrl,
    ) -> Result<Option<ObjectAttributes>, S3Error> {
        let mut attrs = ObjectAttributes::default();
        let mut marker: Option<String> = None;
        loop {
            let page = self
                .client
                .get_object_attributes()
                .bucket(&obj.bucket)
                .key(&obj.key)
                .object_attributes(s3t::ObjectAttributes::Etag)
                .object_attributes(s3t::ObjectAttributes::Checksum)
                .object_attributes(s3t::ObjectAttributes::ObjectParts)
                .object_attributes(s3t::ObjectAttributes::ObjectSize)
                .max_parts(1000)
                .set_part_number_marker(marker.clone())
                .customize()
                .interceptor(AttributesGuard)
                .send()
                .await;
            let page = match page.map_err(s3_error) {
                Ok(p) => p,
                Err(e) if e.kind == crate::error::S3ErrorKind::Unsupported => return Ok(None),
                // A success status with no S3 error code: the guard dropped a non-attributes reply.
                Err(e) if e.code.is_none() && e.status.is_none_or(|s| s < 300) => return Ok(None),
                Err(e) => return Err(e),
            };
            attrs.size = page.object_size().map(|s| s as u64).or(attrs.size);
            attrs.etag = page
                .e_tag()
                .map(|e| e.trim_matches('"').to_owned())
                .or(attrs.etag);
            if let Some(c) = page.checksum() {
                attrs.checksum = any_checksum!(c).map(|(algorithm, value)| RemoteChecksum {
                    algorithm,
                    kind: checksum_type(c.checksum_type()),
                    value,
                });
            }
            let Some(parts) = page.object_parts() else {
                return Ok(Some(attrs));
            };
            attrs.parts_count = parts.total_parts_count().map(|n| n as u32);
            for p in parts.parts() {
                attrs.parts.push(RemotePart {
                    number: p.part_number().unwrap_or_default() as u32,
                    size: p.size().unwrap_or_default() as u64,
                    checksum: any_checksum!(p).map(|(_, v)| v),
                });
            }
            let next = parts.next_part_number_marker().map(|n| n.to_string());
            if parts.is_truncated() != Some(true) || next.is_none() || next == marker {
                return Ok(Some(attrs));
            }
            marker = next;
        }
    }

    async fn head_object(
        &self,
        obj: &ObjectUrl,
        part_number: Option<u32>,
    ) -> Result<HeadInfo, S3Error> {
        let out = self
            .client
            .head_object()
            .bucket(&obj.bucket)
            .key(&obj.key)
            .checksum_mode(s3t::ChecksumMode::Enabled)
            .set_part_number(part_number.map(|n| n as i32))
            .send()
            .await
            .map_err(s3_error)?;
        Ok(HeadInfo {
            size: out.content_length().unwrap_or_default() as u64,
            etag: out.e_tag().map(|e| e.trim_matches('"').to_owned()),
            checksum: any_checksum!(out).map(|(algorithm, value)| RemoteChecksum {
                algorithm,
                kind: checksum_type(out.checksum_type()),
                value,
            }),
            parts_count: out.parts_count().map(|n| n as u32),
            sse: out.server_side_encryption().map(|s| s.as_str().to_owned()),
            sse_c: out.sse_customer_algorithm().is_some(),
            version_id: out.version_id().map(str::to_owned),
        })
    }

    async fn get_tags(
        &self,
        obj: &ObjectUrl,
        version: Option<&str>,
    ) -> Result<Vec<(String, String)>, S3Error> {
        let out = self
            .client
            .get_object_tagging()
            .bucket(&obj.bucket)
            .key(&obj.key)
            .set_version_id(version.map(str::to_owned))
            .send()
            .await
            .map_err(s3_error)?;
        Ok(out
            .tag_set()
            .iter()
            .map(|t| (t.key().to_owned(), t.value().to_owned()))
            .collect())
    }

    async fn put_tags(
        &self,
        obj: &ObjectUrl,
        version: Option<&str>,
        tags: &[(String, String)],
    ) -> Result<(), S3Error> {
        let set = tags
            .iter()
            .map(|(k, v)| s3t::Tag::builder().key(k).value(v).build())
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| S3Error::from_response(None, None, format!("invalid tag: {e}")))?;
        let tagging = s3t::Tagging::builder()
            .set_tag_set(Some(set))
            .build()
            .map_err(|e| S3Error::from_response(None, None, format!("invalid tags: {e}")))?;
        self.client
            .put_object_tagging()
            .bucket(&obj.bucket)
            .key(&obj.key)
            .set_version_id(version.map(str::to_owned))
            .tagging(tagging)
            .send()
            .await
            .map_err(s3_error)?;
        Ok(())
    }

    async fn get_range(
        &self,
        obj: &ObjectUrl,
        range: std::ops::Range<u64>,
        if_match: Option<&str>,
    ) -> Result<Bytes, S3Error> {
        if range.is_empty() {
            return Ok(Bytes::new());
        }
        // The SDK retries a request that fails; a body cut short after the response began is
        // retried here, with backoff and jitter.
        let mut delay = Duration::from_millis(200);
        let mut attempt = 1;
        loop {
            match self.get_range_once(obj, range.clone(), if_match).await {
                Ok(b) => return Ok(b),
                Err(e) if e.kind.is_retryable() && attempt < 5 => {
                    tracing::info!(attempt, error = %e, "ranged GET failed; retrying");
                    tokio::time::sleep(delay + jitter(delay)).await;
                    delay *= 2;
                    attempt += 1;
                }
                Err(e) => return Err(e),
            }
        }
    }

    async fn abort_multipart(&self, obj: &ObjectUrl, upload_id: &str) -> Result<(), S3Error> {
        self.client
            .abort_multipart_upload()
            .bucket(&obj.bucket)
            .key(&obj.key)
            .upload_id(upload_id)
            .send()
            .await
            .map_err(s3_error)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn local_endpoints_use_path_style() {
        for (url, local) in [
            ("http://127.0.0.1:3900", true),
            ("http://localhost:9000/", true),
            ("http://[::1]:9000", true),
            ("https://10.0.0.5", true),
            ("https://s3.us-east-1.amazonaws.com", false),
            ("https://minio.example.com:9000", false),
        ] {
            assert_eq!(is_local_or_ip(url), local, "{url}");
        }
        assert!(is_loopback("http://127.0.0.1:3900") && is_loopback("http://[::1]:1"));
        assert!(!is_loopback("http://10.0.0.5:9000") && !is_loopback("http://minio.lan"));
        assert!(
            plain_http_warning("http://10.0.0.5:9000")
                .unwrap()
                .contains("unencrypted")
        );
        assert!(plain_http_warning("https://10.0.0.5:9000").is_none());
        assert!(plain_http_warning("http://127.0.0.1:3900").is_none());
    }
}

#[cfg(test)]
pub(crate) mod fake;
