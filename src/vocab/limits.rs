//! S3's limits, in one place.

/// One mebibyte.
pub const MIB: u64 = 1024 * 1024;
/// One gibibyte.
pub const GIB: u64 = 1024 * MIB;
/// Smallest part S3 accepts, except for the last part of an upload.
pub const MIN_PART_SIZE: u64 = 5 * MIB;
/// Largest part S3 accepts.
pub const MAX_PART_SIZE: u64 = 5 * GIB;
/// Most parts one multipart upload may have.
pub const MAX_PARTS: u64 = 10_000;
/// Largest object S3 stores: 10,000 parts of 5 GiB (48.8 TiB).
pub const MAX_OBJECT_SIZE: u64 = MAX_PARTS * MAX_PART_SIZE;
/// Largest body tally sends in one PutObject. AWS documents 5 GB; a body of exactly 5 GiB has been
/// seen rejected, so tally stays at the decimal figure and uses multipart above it.
pub const MAX_SINGLE_PUT: u64 = 5_000_000_000;
