//! Digests, hex and MD5 ETags computed with the hash crates directly (never tally's `hash`).

use std::fmt::Write as _;

use md5::Digest as _;

use crate::vocab::{ChecksumAlgorithm, ETag};

/// The raw digest of `data` with `alg`, computed with the hash crates directly.
pub(super) fn digest(alg: ChecksumAlgorithm, data: &[u8]) -> Vec<u8> {
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

pub(super) fn hex(bytes: &[u8]) -> String {
    bytes.iter().fold(String::new(), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

pub(super) fn md5(data: &[u8]) -> [u8; 16] {
    <[u8; 16]>::from(md5::Md5::digest(data))
}

pub(super) fn md5_etag(data: &[u8]) -> ETag {
    ETag::new(&hex(&md5(data)))
}
