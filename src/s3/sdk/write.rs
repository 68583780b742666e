//! Writes: PutObject and the multipart operations.

use aws_config::retry::RetryConfig;
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{self as s3t, CompletedMultipartUpload};
use bytes::Bytes;

use super::convert::sdk_alg;
use super::{SdkS3, attempt_timeout, timeout_override};
use crate::s3::errors::s3_error;
use crate::s3::interceptors::PrecomputedPayloadHash;
use crate::s3::{CompletedPart, ETag, HeldPart, InProgress, MultipartWrite, S3Error, WriteReply};
use crate::vocab::{ChecksumAlgorithm, ChecksumType, PartHash};
use crate::vocab::{ObjectSettings, ObjectUrl, Sse};

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
        body: crate::s3::PutBody,
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
            .body(ByteStream::new(crate::s3::throttle::upload_body(
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
            .body(ByteStream::new(crate::s3::throttle::upload_body(
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
        self.list_parts_paged(obj, upload_id, alg).await
    }

    async fn list_uploads(&self, bucket: &str, prefix: &str) -> Result<Vec<InProgress>, S3Error> {
        self.list_uploads_paged(bucket, prefix).await
    }

    fn endpoint_label(&self) -> String {
        self.endpoint.clone().unwrap_or_else(|| "aws".into())
    }
}
