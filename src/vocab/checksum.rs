//! The checksum vocabulary S3 speaks: algorithms, how parts combine, raw digests.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use crc_fast::CrcAlgorithm;
use serde::{Deserialize, Serialize};

/// An additional checksum algorithm S3 can verify on receipt.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum ChecksumAlgorithm {
    /// SHA-256 (composite for multipart): also the SigV4 payload hash, so nothing is hashed twice.
    Sha256,
    /// SHA-1 (composite for multipart).
    Sha1,
    /// CRC-32/ISO-HDLC (composite for multipart).
    Crc32,
    /// CRC-32C/Castagnoli (composite for multipart).
    Crc32c,
    /// CRC-64/NVME (always full-object).
    Crc64nvme,
    /// SHA-512 (composite for multipart; S3 since 2026-04).
    Sha512,
    /// MD5 as an additional checksum, `x-amz-checksum-md5` (composite for multipart; S3 since
    /// 2026-04). Not the same header as Content-MD5, though the part digest is the same.
    Md5,
    /// XXH64, canonical big-endian (composite for multipart; S3 since 2026-04).
    Xxhash64,
    /// XXH3 64-bit, canonical big-endian (composite for multipart; S3 since 2026-04).
    Xxhash3,
    /// XXH3 128-bit, canonical big-endian (composite for multipart; S3 since 2026-04).
    Xxhash128,
}

/// How S3 combines part checksums into the object's checksum.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ChecksumType {
    /// A checksum of the part checksums, suffixed `-N`.
    Composite,
    /// The checksum of the whole object, as if sent in one piece.
    FullObject,
}

impl std::str::FromStr for ChecksumAlgorithm {
    type Err = String;

    /// Parses a name in any case: `sha256`, `SHA256`, `crc64nvme`, ...
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        ChecksumAlgorithm::ALL
            .into_iter()
            .find(|a| a.s3_name().eq_ignore_ascii_case(s))
            .ok_or_else(|| {
                format!(
                    "unknown checksum algorithm '{s}': choose sha256, sha1, crc32, crc32c, crc64nvme, sha512, md5, xxhash64, xxhash3 or xxhash128"
                )
            })
    }
}

impl ChecksumAlgorithm {
    /// Every algorithm, in the order `--help` lists them.
    pub const ALL: [ChecksumAlgorithm; 10] = [
        Self::Sha256,
        Self::Sha1,
        Self::Crc32,
        Self::Crc32c,
        Self::Crc64nvme,
        Self::Sha512,
        Self::Md5,
        Self::Xxhash64,
        Self::Xxhash3,
        Self::Xxhash128,
    ];

    /// The name S3 uses (`SHA256`, `CRC64NVME`, ...).
    pub fn s3_name(self) -> &'static str {
        match self {
            Self::Sha256 => "SHA256",
            Self::Sha1 => "SHA1",
            Self::Crc32 => "CRC32",
            Self::Crc32c => "CRC32C",
            Self::Crc64nvme => "CRC64NVME",
            Self::Sha512 => "SHA512",
            Self::Md5 => "MD5",
            Self::Xxhash64 => "XXHASH64",
            Self::Xxhash3 => "XXHASH3",
            Self::Xxhash128 => "XXHASH128",
        }
    }

    /// The name `--checksum` takes (`sha256`, `xxhash64`, ...).
    pub fn cli_name(self) -> &'static str {
        match self {
            Self::Sha256 => "sha256",
            Self::Sha1 => "sha1",
            Self::Crc32 => "crc32",
            Self::Crc32c => "crc32c",
            Self::Crc64nvme => "crc64nvme",
            Self::Sha512 => "sha512",
            Self::Md5 => "md5",
            Self::Xxhash64 => "xxhash64",
            Self::Xxhash3 => "xxhash3",
            Self::Xxhash128 => "xxhash128",
        }
    }

    /// Whether this is one of the algorithms S3 added in April 2026 (SHA512, MD5, XXHASH64/3/128):
    /// S3-compatible servers may ignore them on a PutObject and refuse them on
    /// CreateMultipartUpload (Garage 2.5 and LocalStack 2026.3 do), so their echo is never assumed.
    pub fn is_recent(self) -> bool {
        matches!(
            self,
            Self::Sha512 | Self::Md5 | Self::Xxhash64 | Self::Xxhash3 | Self::Xxhash128
        )
    }

    /// The checksum type tally uses for a multipart upload with this algorithm: S3's default,
    /// which for CRC64NVME is the only one allowed.
    pub fn multipart_type(self) -> ChecksumType {
        match self {
            Self::Crc64nvme => ChecksumType::FullObject,
            _ => ChecksumType::Composite,
        }
    }

    pub(crate) fn crc(self) -> Option<CrcAlgorithm> {
        match self {
            Self::Crc32 => Some(CrcAlgorithm::Crc32IsoHdlc),
            Self::Crc32c => Some(CrcAlgorithm::Crc32Iscsi),
            Self::Crc64nvme => Some(CrcAlgorithm::Crc64Nvme),
            _ => None,
        }
    }

    /// Length of the raw digest in bytes.
    pub fn digest_len(self) -> usize {
        match self {
            Self::Sha256 => 32,
            Self::Sha1 => 20,
            Self::Crc32 | Self::Crc32c => 4,
            Self::Crc64nvme => 8,
            Self::Sha512 => 64,
            Self::Md5 => 16,
            Self::Xxhash64 | Self::Xxhash3 => 8,
            Self::Xxhash128 => 16,
        }
    }
}

impl std::fmt::Display for ChecksumType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            ChecksumType::Composite => "COMPOSITE",
            ChecksumType::FullObject => "FULL_OBJECT",
        })
    }
}

impl std::fmt::Display for ChecksumAlgorithm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.s3_name())
    }
}

/// A raw digest (big-endian for CRCs, as S3 encodes them).
#[derive(Clone, PartialEq, Eq)]
pub struct Digest(Vec<u8>);

impl Digest {
    /// A digest from its raw bytes.
    pub fn from_bytes(bytes: Vec<u8>) -> Digest {
        Digest(bytes)
    }

    /// The raw bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    /// Base64, the form S3 headers and replies use.
    pub fn base64(&self) -> String {
        B64.encode(&self.0)
    }

    /// Lower-case hex.
    pub fn hex(&self) -> String {
        hex(&self.0)
    }

    pub(crate) fn crc_value(&self) -> u64 {
        self.0.iter().fold(0, |acc, b| (acc << 8) | u64::from(*b))
    }
}

impl std::fmt::Debug for Digest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.base64())
    }
}

/// Lower-case hex of `bytes`.
pub fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    bytes
        .iter()
        .fold(String::with_capacity(bytes.len() * 2), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        })
}

/// What one pass over a part's bytes yields.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartHash {
    /// The additional checksum of the part.
    pub checksum: Digest,
    /// MD5 of the part, when computed: its Content-MD5 and, without SSE-KMS/SSE-C, its ETag.
    pub md5: Option<[u8; 16]>,
    /// Length of the part in bytes (needed to combine CRCs).
    pub len: u64,
}

impl PartHash {
    /// The part's MD5 as base64, for Content-MD5.
    pub fn content_md5(&self) -> Option<String> {
        self.md5.map(|m| B64.encode(m))
    }

    /// The part's MD5 as hex: the ETag S3 gives it when it stores the bytes as sent.
    pub fn md5_hex(&self) -> Option<String> {
        self.md5.map(|m| hex(&m))
    }
}
