//! Tally's types as aws-sdk-s3 request fields, and the SDK's replies as tally's types.

use aws_sdk_s3::types as s3t;

use crate::vocab::{ChecksumAlgorithm, ChecksumType};

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

pub(super) fn checksum_type(t: Option<&s3t::ChecksumType>) -> Option<ChecksumType> {
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

pub(super) fn sdk_alg(alg: ChecksumAlgorithm) -> s3t::ChecksumAlgorithm {
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
