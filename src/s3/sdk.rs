//! [`SdkS3`]: the S3 traits over aws-sdk-s3 (client set-up, retries and timeouts, the operations).

use std::time::Duration;

use aws_config::BehaviorVersion;
use aws_config::retry::RetryConfig;
use aws_sdk_s3::config::{Region, RequestChecksumCalculation, ResponseChecksumValidation};
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{self as s3t, CompletedMultipartUpload};
use bytes::Bytes;

use super::endpoint::{is_local_or_ip, plain_http_warning};
use super::errors::s3_error;
use super::interceptors::{AttributesGuard, PrecomputedPayloadHash};
use super::paging::paginate;
use super::watch::{NEVER_ANSWERED, Watch, WatchedClient, default_client};
use super::{
    CompletedPart, ETag, HeadInfo, HeldPart, InProgress, MultipartWrite, ObjectAttributes,
    ObjectRead, RemoteChecksum, RemotePart, Tagging, WriteReply,
};
use crate::retry;
use crate::s3::ConnectError;
use crate::s3::Connection;
use crate::s3::{S3Error, S3ErrorKind};
use crate::vocab::{ChecksumAlgorithm, ChecksumType, PartHash};
use crate::vocab::{ObjectSettings, ObjectUrl, Sse};

/// [`super::S3Api`] over aws-sdk-s3.
#[derive(Debug, Clone)]
pub struct SdkS3 {
    client: aws_sdk_s3::Client,
    endpoint: Option<String>,
    /// The endpoint as errors name it.
    display: String,
    timeout: Duration,
    /// The process's bandwidth limit, if any (`--max-bandwidth`).
    bandwidth: Option<std::sync::Arc<super::throttle::Bandwidth>>,
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
    /// The identity is chosen by [`super::identity`]: a profile named by `--profile` or
    /// `AWS_PROFILE` supplies the credentials alone (environment keys are not used), and must exist.
    pub async fn connect(conn: &Connection) -> Result<SdkS3, ConnectError> {
        let chosen = super::identity::resolve(conn.profile.as_deref()).await?;
        let mut loader = aws_config::defaults(BehaviorVersion::latest());
        if let Some(p) = &chosen.profile {
            loader = loader.profile_name(p);
        }
        if let Some(r) = &conn.region {
            loader = loader.region(Region::new(r.clone()));
        }
        let mut shared = loader.load().await;
        if let Some(p) = &chosen.profile {
            let creds = super::identity::profile_provider(p, shared.region().cloned());
            shared = shared.into_builder().credentials_provider(creds).build();
        } else if chosen.chain_only {
            // Neither keys nor a profile: ask the rest of the chain once, so that finding nothing
            // is one line before anything is read or sent (not one error per file).
            super::identity::check_chain(&shared).await?;
        }
        SdkS3::from_shared_config(&shared, conn)
    }

    /// Builds a client from an already loaded AWS configuration (credentials, region) and the
    /// overrides in `conn`. `conn.region` and `conn.profile` are applied by [`SdkS3::connect`].
    pub fn from_shared_config(
        shared: &aws_config::SdkConfig,
        conn: &Connection,
    ) -> Result<SdkS3, ConnectError> {
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
                return Err(ConnectError(
                    "no AWS region configured: pass --region, set AWS_REGION, or set region in your profile"
                        .into(),
                ));
            }
        }
        if let Some(e) = &endpoint {
            if !(e.starts_with("http://") || e.starts_with("https://")) {
                return Err(ConnectError(format!(
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
        b = b.http_client(WatchedClient {
            inner: shared.http_client().unwrap_or_else(default_client),
            watch: Watch::new(NEVER_ANSWERED, conn.timeout),
        });
        let conf = b.build();
        let display = endpoint.clone().unwrap_or_else(|| {
            let region = conf.region().map_or("us-east-1", |r| r.as_ref());
            format!("https://s3.{region}.amazonaws.com")
        });
        Ok(SdkS3 {
            client: aws_sdk_s3::Client::from_conf(conf),
            endpoint,
            display,
            timeout: conn.timeout,
            bandwidth: conn.max_bandwidth.map(super::throttle::Bandwidth::shared),
        })
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
            ChecksumAlgorithm::Sha512 => $builder.checksum_sha512($value),
            ChecksumAlgorithm::Md5 => $builder.checksum_md5($value),
            ChecksumAlgorithm::Xxhash64 => $builder.checksum_xxhash64($value),
            ChecksumAlgorithm::Xxhash3 => $builder.checksum_xxhash3($value),
            ChecksumAlgorithm::Xxhash128 => $builder.checksum_xxhash128($value),
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
            (ChecksumAlgorithm::Sha512, $out.checksum_sha512()),
            (ChecksumAlgorithm::Md5, $out.checksum_md5()),
            (ChecksumAlgorithm::Xxhash64, $out.checksum_xxhash64()),
            (ChecksumAlgorithm::Xxhash3, $out.checksum_xxhash3()),
            (ChecksumAlgorithm::Xxhash128, $out.checksum_xxhash128()),
        ]
        .into_iter()
        .find_map(|(a, v)| v.map(|v| (a, v.to_owned())))
    };
}

/// Adds an object's settings (storage class, content type, metadata, tags, encryption) to a
/// PutObject or CreateMultipartUpload request.
macro_rules! with_settings {
    ($builder:expr, $settings:expr) => {{
        let s: &ObjectSettings = $settings;
        let mut b = $builder
            .set_storage_class(s.storage_class.map(|c| s3t::StorageClass::from(c.as_str())))
            .set_content_type(s.content_type.clone())
            .set_tagging(s.tagging())
            .set_server_side_encryption(
                s.sse
                    .as_ref()
                    .map(|e| s3t::ServerSideEncryption::from(e.as_str())),
            );
        if let Some(Sse::Kms {
            key_id: Some(id), ..
        }) = &s.sse
        {
            b = b.ssekms_key_id(id);
        }
        for (k, v) in &s.metadata {
            b = b.metadata(k, v);
        }
        b
    }};
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
            ChecksumAlgorithm::Sha512 => $out.checksum_sha512(),
            ChecksumAlgorithm::Md5 => $out.checksum_md5(),
            ChecksumAlgorithm::Xxhash64 => $out.checksum_xxhash64(),
            ChecksumAlgorithm::Xxhash3 => $out.checksum_xxhash3(),
            ChecksumAlgorithm::Xxhash128 => $out.checksum_xxhash128(),
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
        ChecksumAlgorithm::Sha512 => s3t::ChecksumAlgorithm::Sha512,
        ChecksumAlgorithm::Md5 => s3t::ChecksumAlgorithm::Md5,
        ChecksumAlgorithm::Xxhash64 => s3t::ChecksumAlgorithm::Xxhash64,
        ChecksumAlgorithm::Xxhash3 => s3t::ChecksumAlgorithm::Xxhash3,
        ChecksumAlgorithm::Xxhash128 => s3t::ChecksumAlgorithm::Xxhash128,
    }
}

impl SdkS3 {
    async fn get_range_once(
        &self,
        obj: &ObjectUrl,
        range: std::ops::Range<u64>,
        if_match: Option<&ETag>,
    ) -> Result<Bytes, S3Error> {
        let len = range.end - range.start;
        let out = self
            .client
            .get_object()
            .bucket(&obj.bucket)
            .key(&obj.key)
            .range(format!("bytes={}-{}", range.start, range.end - 1))
            .set_if_match(if_match.map(ETag::quoted))
            .customize()
            .config_override(timeout_override(attempt_timeout(self.timeout, len)))
            .send()
            .await
            .map_err(|e| s3_error(e, &self.display))?;
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

impl SdkS3 {
    async fn get_stream_once(
        &self,
        obj: &ObjectUrl,
        range: std::ops::Range<u64>,
        part: Option<u32>,
        if_match: Option<&ETag>,
        version_id: Option<&str>,
    ) -> Result<super::RangeBody, S3Error> {
        let len = range.end - range.start;
        let req = self.client.get_object().bucket(&obj.bucket).key(&obj.key);
        let req = match part {
            Some(n) => req.part_number(n as i32),
            None => req.range(format!("bytes={}-{}", range.start, range.end.max(1) - 1)),
        };
        let out = req
            .set_if_match(if_match.map(ETag::quoted))
            .set_version_id(version_id.map(str::to_owned))
            .customize()
            // Checksum mode as a plain header, not the SDK's field: the field also makes the SDK
            // hash the body to validate it, and tally hashes every byte once, itself.
            .mutate_request(|req| {
                req.headers_mut().insert("x-amz-checksum-mode", "ENABLED");
            })
            .config_override(timeout_override(attempt_timeout(self.timeout, len)))
            .send()
            .await
            .map_err(|e| s3_error(e, &self.display))?;
        let checksum = any_checksum!(out).map(|(algorithm, value)| RemoteChecksum {
            algorithm,
            kind: checksum_type(out.checksum_type()),
            value,
        });
        let etag = out.e_tag().map(ETag::new);
        let limit = self.bandwidth.clone();
        let body = futures::stream::unfold(out.body, move |mut b| {
            let limit = limit.clone();
            async move {
                let piece = b.next().await?;
                // Under --max-bandwidth a piece waits for its share before the caller sees it (and
                // before the next is read: the socket's window holds back what comes early).
                if let (Some(l), Ok(p)) = (&limit, &piece) {
                    l.take(p.len()).await;
                }
                Some((
                    piece.map_err(|e| S3Error::transport(format!("reading the body: {e}"))),
                    b,
                ))
            }
        });
        Ok(super::RangeBody {
            checksum,
            etag,
            body: Box::pin(body),
        })
    }
}

impl SdkS3 {
    /// CompleteMultipartUpload, one attempt (the caller confirms what happened before it ever
    /// sends another), with `If-None-Match` when given.
    async fn complete_once(
        &self,
        obj: &ObjectUrl,
        upload_id: &str,
        alg: ChecksumAlgorithm,
        parts: &[CompletedPart],
        full_object: Option<&str>,
        if_none_match: Option<&str>,
    ) -> Result<WriteReply, S3Error> {
        let parts = parts
            .iter()
            .map(|p| {
                let b = s3t::CompletedPart::builder()
                    .part_number(p.number as i32)
                    .e_tag(p.etag.quoted());
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
            )
            .set_if_none_match(if_none_match.map(str::to_owned));
        if let Some(full) = full_object {
            req = req.checksum_type(s3t::ChecksumType::FullObject);
            req = with_checksum!(req, alg, full);
        }
        let out = req
            .customize()
            .config_override(
                aws_sdk_s3::config::Builder::default().retry_config(RetryConfig::disabled()),
            )
            .send()
            .await
            .map_err(|e| s3_error(e, &self.display))?;
        Ok(WriteReply {
            etag: out.e_tag().map(ETag::new),
            checksum: checksum_of!(out, alg),
            checksum_type: out.checksum_type().map(|t| t.as_str().to_owned()),
            sse: out.server_side_encryption().map(|s| s.as_str().to_owned()),
            version_id: out.version_id().map(str::to_owned),
        })
    }
}

impl MultipartWrite for SdkS3 {
    async fn put_object(
        &self,
        obj: &ObjectUrl,
        alg: ChecksumAlgorithm,
        body: Bytes,
        hash: &PartHash,
        settings: &ObjectSettings,
    ) -> Result<WriteReply, S3Error> {
        let req = self
            .client
            .put_object()
            .bucket(&obj.bucket)
            .key(&obj.key)
            .content_length(body.len() as i64)
            .set_content_md5(hash.content_md5())
            .set_if_none_match(settings.if_absent.then(|| "*".to_owned()))
            .body(ByteStream::new(super::throttle::upload_body(
                body,
                self.bandwidth.as_ref(),
            )));
        let req = with_settings!(req, settings);
        let timeout = attempt_timeout(self.timeout, hash.len);
        let req = with_checksum!(req, alg, hash.checksum.base64());
        let out = send_signed!(req, alg, hash, timeout).map_err(|e| s3_error(e, &self.display))?;
        Ok(WriteReply {
            etag: out.e_tag().map(ETag::new),
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
        settings: &ObjectSettings,
    ) -> Result<String, S3Error> {
        let req = self
            .client
            .create_multipart_upload()
            .bucket(&obj.bucket)
            .key(&obj.key)
            .checksum_algorithm(sdk_alg(alg));
        let mut req = with_settings!(req, settings);
        if kind == ChecksumType::FullObject {
            req = req.checksum_type(s3t::ChecksumType::FullObject);
        }
        // One attempt: a lost reply may have created an upload, which `create_upload` looks for
        // before it ever sends another.
        let out = req
            .customize()
            .config_override(
                aws_sdk_s3::config::Builder::default().retry_config(RetryConfig::disabled()),
            )
            .send()
            .await
            .map_err(|e| s3_error(e, &self.display))?;
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
            .body(ByteStream::new(super::throttle::upload_body(
                body,
                self.bandwidth.as_ref(),
            )));
        let timeout = attempt_timeout(self.timeout, hash.len);
        let req = with_checksum!(req, alg, hash.checksum.base64());
        let out = send_signed!(req, alg, hash, timeout).map_err(|e| s3_error(e, &self.display))?;
        Ok(WriteReply {
            etag: out.e_tag().map(ETag::new),
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
        self.complete_once(obj, upload_id, alg, parts, full_object, None)
            .await
    }

    async fn complete_multipart_if_absent(
        &self,
        obj: &ObjectUrl,
        upload_id: &str,
        alg: ChecksumAlgorithm,
        parts: &[CompletedPart],
        full_object: Option<&str>,
    ) -> Result<WriteReply, S3Error> {
        self.complete_once(obj, upload_id, alg, parts, full_object, Some("*"))
            .await
    }

    async fn abort_multipart(&self, obj: &ObjectUrl, upload_id: &str) -> Result<(), S3Error> {
        self.client
            .abort_multipart_upload()
            .bucket(&obj.bucket)
            .key(&obj.key)
            .upload_id(upload_id)
            .send()
            .await
            .map_err(|e| s3_error(e, &self.display))?;
        Ok(())
    }

    async fn list_parts(
        &self,
        obj: &ObjectUrl,
        upload_id: &str,
        alg: ChecksumAlgorithm,
    ) -> Result<Vec<HeldPart>, S3Error> {
        let client = &self.client;
        let pages = paginate(|marker: Option<String>| async move {
            let page = client
                .list_parts()
                .bucket(&obj.bucket)
                .key(&obj.key)
                .upload_id(upload_id)
                .set_part_number_marker(marker)
                .send()
                .await
                .map_err(|e| s3_error(e, &self.display))?;
            let held: Vec<HeldPart> = page
                .parts()
                .iter()
                .map(|p| HeldPart {
                    number: p.part_number().unwrap_or_default() as u32,
                    size: p.size().unwrap_or_default() as u64,
                    etag: ETag::new(p.e_tag().unwrap_or_default()),
                    checksum: checksum_of!(p, alg),
                })
                .collect();
            let next = (page.is_truncated() == Some(true))
                .then(|| page.next_part_number_marker().map(str::to_owned))
                .flatten();
            Ok((held, next))
        })
        .await?;
        let mut out: Vec<HeldPart> = pages.into_iter().flatten().collect();
        out.sort_by_key(|p| p.number);
        Ok(out)
    }

    async fn list_uploads(&self, bucket: &str, prefix: &str) -> Result<Vec<InProgress>, S3Error> {
        let client = &self.client;
        let pages = paginate(
            |marker: Option<(Option<String>, Option<String>)>| async move {
                let (key_marker, id_marker) = marker.unwrap_or_default();
                let page = client
                    .list_multipart_uploads()
                    .bucket(bucket)
                    .prefix(prefix)
                    .set_key_marker(key_marker)
                    .set_upload_id_marker(id_marker)
                    .send()
                    .await
                    .map_err(|e| s3_error(e, &self.display))?;
                let uploads: Vec<InProgress> = page
                    .uploads()
                    .iter()
                    .map(|u| InProgress {
                        key: u.key().unwrap_or_default().to_owned(),
                        upload_id: u.upload_id().unwrap_or_default().to_owned(),
                        initiated: u.initiated().map(|t| t.secs()),
                    })
                    .collect();
                let next = (
                    page.next_key_marker().map(str::to_owned),
                    page.next_upload_id_marker().map(str::to_owned),
                );
                let more = page.is_truncated() == Some(true) && next != (None, None);
                Ok((uploads, more.then_some(next)))
            },
        )
        .await?;
        Ok(pages.into_iter().flatten().collect())
    }

    fn endpoint_label(&self) -> String {
        self.endpoint.clone().unwrap_or_else(|| "aws".into())
    }
}

impl ObjectRead for SdkS3 {
    async fn object_attributes(
        &self,
        obj: &ObjectUrl,
    ) -> Result<Option<ObjectAttributes>, S3Error> {
        let client = &self.client;
        let pages = paginate(|marker: Option<String>| async move {
            let page = client
                .get_object_attributes()
                .bucket(&obj.bucket)
                .key(&obj.key)
                .object_attributes(s3t::ObjectAttributes::Etag)
                .object_attributes(s3t::ObjectAttributes::Checksum)
                .object_attributes(s3t::ObjectAttributes::ObjectParts)
                .object_attributes(s3t::ObjectAttributes::ObjectSize)
                .max_parts(1000)
                .set_part_number_marker(marker)
                .customize()
                .interceptor(AttributesGuard)
                .send()
                .await
                .map_err(|e| s3_error(e, &self.display))?;
            let parts = page.object_parts();
            let next = parts
                .filter(|p| p.is_truncated() == Some(true))
                .and_then(|p| p.next_part_number_marker().map(|n| n.to_string()));
            Ok((page, next))
        })
        .await;
        let pages = match pages {
            Ok(p) => p,
            Err(e) if e.kind == S3ErrorKind::Unsupported => return Ok(None),
            // A success status with no S3 error code: the guard dropped a non-attributes reply.
            Err(e) if e.code.is_none() && e.status.is_none_or(|s| s < 300) => return Ok(None),
            Err(e) => return Err(e),
        };
        let mut attrs = ObjectAttributes::default();
        for page in &pages {
            attrs.size = page.object_size().map(|s| s as u64).or(attrs.size);
            attrs.etag = page.e_tag().map(ETag::new).or(attrs.etag.take());
            if let Some(c) = page.checksum() {
                attrs.checksum = any_checksum!(c).map(|(algorithm, value)| RemoteChecksum {
                    algorithm,
                    kind: checksum_type(c.checksum_type()),
                    value,
                });
            }
            let Some(parts) = page.object_parts() else {
                continue;
            };
            attrs.parts_count = parts.total_parts_count().map(|n| n as u32);
            attrs.parts.extend(parts.parts().iter().map(|p| RemotePart {
                number: p.part_number().unwrap_or_default() as u32,
                size: p.size().unwrap_or_default() as u64,
                checksum: any_checksum!(p).map(|(_, v)| v),
            }));
        }
        Ok(Some(attrs))
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
            .map_err(|e| s3_error(e, &self.display))?;
        Ok(HeadInfo {
            size: out.content_length().unwrap_or_default() as u64,
            etag: out.e_tag().map(ETag::new),
            checksum: any_checksum!(out).map(|(algorithm, value)| RemoteChecksum {
                algorithm,
                kind: checksum_type(out.checksum_type()),
                value,
            }),
            parts_count: out.parts_count().map(|n| n as u32),
            sse: out.server_side_encryption().map(|s| s.as_str().to_owned()),
            sse_c: out.sse_customer_algorithm().is_some(),
            version_id: out.version_id().map(str::to_owned),
            storage_class: out.storage_class().map(|c| c.as_str().to_owned()),
            content_type: out.content_type().map(str::to_owned),
            metadata_count: out.metadata().map_or(0, |m| m.len()),
            tag_count: out.tag_count().map(|n| n as u32),
        })
    }

    async fn get_range(
        &self,
        obj: &ObjectUrl,
        range: std::ops::Range<u64>,
        if_match: Option<&ETag>,
    ) -> Result<Bytes, S3Error> {
        if range.is_empty() {
            return Ok(Bytes::new());
        }
        // The SDK retries a request that fails; a body cut short after the response began is
        // read again here.
        let mut backoff = retry::Policy::RANGED_READ.start();
        loop {
            match self.get_range_once(obj, range.clone(), if_match).await {
                Ok(b) => return Ok(b),
                Err(e) if e.kind.is_retryable() => {
                    tracing::info!(attempt = backoff.attempt(), error = %e, "ranged GET failed");
                    if !backoff.wait().await {
                        return Err(e);
                    }
                }
                Err(e) => return Err(e),
            }
        }
    }

    async fn list_page(
        &self,
        bucket: &str,
        prefix: &str,
        token: Option<&str>,
        start_after: Option<&str>,
    ) -> Result<super::ListPage, S3Error> {
        let page = self
            .client
            .list_objects_v2()
            .bucket(bucket)
            .prefix(prefix)
            .set_continuation_token(token.map(str::to_owned))
            .set_start_after(start_after.map(str::to_owned))
            // Keys come back URL-encoded: a key with a control character (which XML 1.0 cannot
            // carry) no longer breaks the whole listing.
            .encoding_type(aws_sdk_s3::types::EncodingType::Url)
            .send()
            .await
            .map_err(|e| s3_error(e, &self.display))?;
        let url_encoded = page.encoding_type() == Some(&aws_sdk_s3::types::EncodingType::Url);
        Ok(super::ListPage {
            objects: page
                .contents()
                .iter()
                .map(|o| super::ListedObject {
                    key: {
                        let k = o.key().unwrap_or_default();
                        if url_encoded {
                            url_decode(k)
                        } else {
                            k.to_owned()
                        }
                    },
                    size: o.size().unwrap_or_default().max(0) as u64,
                    etag: o.e_tag().map(crate::vocab::ETag::new),
                })
                .collect(),
            next: (page.is_truncated() == Some(true))
                .then(|| page.next_continuation_token().map(str::to_owned))
                .flatten(),
        })
    }

    async fn get_stream(
        &self,
        obj: &ObjectUrl,
        range: std::ops::Range<u64>,
        part: Option<u32>,
        if_match: Option<&ETag>,
        version_id: Option<&str>,
    ) -> Result<super::RangeBody, S3Error> {
        if range.is_empty() {
            return Ok(super::RangeBody {
                checksum: None,
                etag: None,
                body: Box::pin(futures::stream::empty()),
            });
        }
        // The SDK retries a request that fails before its reply; a body cut short later is the
        // caller's to fetch again (it hashes as it goes, so it starts the range over).
        self.get_stream_once(obj, range, part, if_match, version_id)
            .await
    }
}

impl Tagging for SdkS3 {
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
            .map_err(|e| s3_error(e, &self.display))?;
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
            .map_err(|e| s3_error(e, &self.display))?;
        Ok(())
    }
}

/// A key of a listing asked for with `encoding-type=url`: `%XX` escapes, and `+` for a space (as
/// AWS writes it; a literal `+` comes as `%2B`). Bytes that do not form UTF-8 are kept escaped.
fn url_decode(k: &str) -> String {
    let b = k.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < b.len() => {
                match u8::from_str_radix(std::str::from_utf8(&b[i + 1..i + 3]).unwrap_or("zz"), 16)
                {
                    Ok(v) => {
                        out.push(v);
                        i += 3;
                        continue;
                    }
                    Err(_) => out.push(b'%'),
                }
            }
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8(out).unwrap_or_else(|_| k.to_owned())
}

#[cfg(test)]
mod url_decode_tests {
    #[test]
    fn listed_keys_are_decoded() {
        assert_eq!(super::url_decode("a%01b"), "a\u{1}b");
        assert_eq!(super::url_decode("sp+ace%20x%2B"), "sp ace x+");
        assert_eq!(super::url_decode("%C3%BC%1B"), "ü\u{1b}");
        assert_eq!(super::url_decode("50%"), "50%");
        assert_eq!(super::url_decode("a%zz"), "a%zz");
    }
}
