//! Reads: HEAD, GetObjectAttributes, ranged GETs (whole and streamed).

use aws_sdk_s3::types as s3t;
use bytes::Bytes;

use super::convert::checksum_type;
use super::{SdkS3, attempt_timeout, timeout_override};
use crate::retry;
use crate::s3::errors::s3_error;
use crate::s3::interceptors::AttributesGuard;
use crate::s3::paging::paginate;
use crate::s3::{
    ETag, HeadInfo, ListPage, ObjectAttributes, ObjectRead, RangeBody, RemoteChecksum, RemotePart,
    S3Error, S3ErrorKind,
};
use crate::vocab::{ChecksumAlgorithm, ObjectUrl};

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
    /// One GetObject of `span`, `len` bytes expected (for its attempt timeout).
    async fn get_stream_once(
        &self,
        obj: &ObjectUrl,
        span: Span,
        len: u64,
        if_match: Option<&ETag>,
        version_id: Option<&str>,
    ) -> Result<RangeBody, S3Error> {
        let req = self.client.get_object().bucket(&obj.bucket).key(&obj.key);
        let req = match span {
            Span::Part(n) => req.part_number(n as i32),
            Span::Range(r) => req.range(format!("bytes={}-{}", r.start, r.end.max(1) - 1)),
            Span::Whole => req,
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
        Ok(RangeBody {
            checksum,
            etag,
            body: Box::pin(body),
        })
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
    ) -> Result<ListPage, S3Error> {
        self.list_objects_page(bucket, prefix, token, start_after)
            .await
    }

    async fn get_stream(
        &self,
        obj: &ObjectUrl,
        range: std::ops::Range<u64>,
        part: Option<u32>,
        if_match: Option<&ETag>,
        version_id: Option<&str>,
    ) -> Result<RangeBody, S3Error> {
        if range.is_empty() {
            return Ok(RangeBody {
                checksum: None,
                etag: None,
                body: Box::pin(futures::stream::empty()),
            });
        }
        let len = range.end - range.start;
        let span = match part {
            Some(n) => Span::Part(n),
            None => Span::Range(range),
        };
        // The SDK retries a request that fails before its reply; a body cut short later is the
        // caller's to fetch again (it hashes as it goes, so it starts the range over).
        self.get_stream_once(obj, span, len, if_match, version_id)
            .await
    }

    async fn get_whole(
        &self,
        obj: &ObjectUrl,
        size: u64,
        if_match: Option<&ETag>,
    ) -> Result<RangeBody, S3Error> {
        if size == 0 {
            return self.get_stream(obj, 0..0, None, if_match, None).await;
        }
        self.get_stream_once(obj, Span::Whole, size, if_match, None)
            .await
    }
}

/// What one GetObject asks for.
enum Span {
    /// `?partNumber=N`: S3 sends the part's checksum.
    Part(u32),
    /// A `Range` header: S3 sends no checksum.
    Range(std::ops::Range<u64>),
    /// The whole object, no `Range`: S3 sends the object's checksum.
    Whole,
}
