//! The words every other module speaks, at the bottom of the crate: where an object is
//! ([`ObjectUrl`]), S3's checksum algorithms and digests, the ETag, what S3 stores with an object
//! ([`ObjectSettings`]), S3's limits, and sizes and durations as people write them.
//!
//! This module imports nothing of the crate: anything may use it, it uses nothing above it. Its
//! checks fail with [`Invalid`], a sentence that says what to write instead, which the crate's
//! error turns into a usage error.

mod checksum;
mod etag;
mod limits;
mod object;
mod units;
mod url;

pub use checksum::{ChecksumAlgorithm, ChecksumType, Digest, PartHash, hex};
pub use etag::{ETag, EtagKind};
pub use limits::*;
pub use object::{
    MAX_METADATA_BYTES, MAX_TAG_KEY, MAX_TAG_VALUE, MAX_TAGS, ObjectSettings, Sse, StorageClass,
    guess_content_type,
};
pub use units::{parse_duration, parse_size};
pub use url::{ObjectUrl, is_prefix};

/// A value that breaks a rule, with a sentence that says what to write instead.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invalid(pub String);

impl std::fmt::Display for Invalid {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Invalid {}
