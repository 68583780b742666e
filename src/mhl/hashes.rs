//! Whole-file hashes in ASC MHL's formats and encodings (md5 and sha1 as lowercase hex; xxh64,
//! xxh3 and xxh128 as xxHash's canonical big-endian hex; c4 as the C4 id of the SHA-512 digest):
//! the one implementation in [`crate::hash::file`], which `--file-hash` uses too, under the names
//! this module's callers use.

pub(crate) use crate::hash::{FileHashFormat as HashFormat, FileHashes, file_hashes};

/// The hashes of `data` in `formats`.
#[cfg(test)]
pub(crate) fn data_hashes(data: &[u8], formats: &[HashFormat]) -> FileHashes {
    let mut h = crate::hash::FileHasher::new(formats);
    h.update(data);
    h.finish().hashes
}
