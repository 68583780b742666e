//! What S3 holds, read without the local file: an object's facts (size, ETag, checksums, part
//! layout), its bytes through one ordered ranged reader, its full MD5 (resumable, as a value or a
//! file), and the MD5 stored as a tag.
//!
//! - [`facts`]: what S3 says about an object, and how it was learned (verify, read-back, download);
//! - [`ranged`]: the one ordered ranged-GET reader, a window bounded in bytes, every GET pinned
//!   to the ETag (verify `--download`, `tally md5`, download);
//! - [`md5`]: `tally md5` (the ETag shortcut, or the object read and hashed) and `--read-back`;
//! - [`md5_state`]: the saved hasher state as a value ([`md5_state::SavedState`]) and its file;
//! - [`tags`]: the MD5 stored as a tag, merged with the object's tags;
//! - [`listing`]: the objects under a prefix as a stream, one page held at a time.

pub(crate) mod facts;
pub(crate) mod listing;
pub(crate) mod md5;
pub(crate) mod md5_state;
pub(crate) mod ranged;
pub(crate) mod tags;
