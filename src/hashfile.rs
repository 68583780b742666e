//! `tally hash FILE`: without any network, what an upload with these settings would produce.

use rayon::prelude::*;
use serde::Serialize;

use crate::error::Error;
use crate::hash::{self, ChecksumAlgorithm, ChecksumType, ObjectChecksum, PartHash};
use crate::plan::Plan;
use crate::source::Source;

/// One part's hashes.
#[derive(Debug, Clone, Serialize)]
pub struct PartLine {
    /// Part number.
    pub number: u32,
    /// First byte.
    pub offset: u64,
    /// Length.
    pub len: u64,
    /// Checksum, base64.
    pub checksum: String,
    /// MD5, hex.
    pub md5: String,
}

/// What `tally hash` prints.
#[derive(Debug, Clone, Serialize)]
pub struct HashReport {
    /// The file.
    pub file: String,
    /// Its size.
    pub size: u64,
    /// MD5 of the whole file, hex.
    pub md5: String,
    /// `single_put` or `multipart`, as `tally upload` would choose.
    pub method: &'static str,
    /// Part size used.
    pub part_size: u64,
    /// Every part.
    pub parts: Vec<PartLine>,
    /// The object checksum S3 would report.
    pub checksum: ObjectChecksum,
    /// The ETag S3 would report (without SSE-KMS/SSE-C).
    pub etag: String,
}

/// Hashes `path` as an upload with `part_size` and `alg` would, plus the whole file's MD5.
/// Blocking and CPU-bound: parts on the rayon pool, the whole-file MD5 beside them.
pub fn hash_file(
    path: &std::path::Path,
    part_size: u64,
    alg: ChecksumAlgorithm,
) -> Result<HashReport, Error> {
    let src = Source::open(path)?;
    let plan = Plan::new(src.len(), part_size)?;
    let parts: Vec<_> = plan.parts().collect();
    let (hashes, md5) = rayon::join(
        || {
            parts
                .par_iter()
                .map(|p| hash::hash_part(alg, true, &src.part(p)))
                .collect::<Vec<PartHash>>()
        },
        || hash::md5(src.bytes()),
    );
    let (method, checksum, etag) = match plan {
        Plan::Single { .. } => (
            "single_put",
            ObjectChecksum {
                algorithm: alg,
                kind: ChecksumType::FullObject,
                value: hashes[0].checksum.base64(),
            },
            hashes[0].md5_hex().expect("computed"),
        ),
        Plan::Multipart { .. } => (
            "multipart",
            hash::multipart_checksum(alg, alg.multipart_type(), &hashes),
            hash::multipart_etag(&hashes).expect("computed"),
        ),
    };
    Ok(HashReport {
        file: src.path().display().to_string(),
        size: src.len(),
        md5: hash::hex(&md5),
        method,
        part_size: plan.part_size(),
        parts: parts
            .iter()
            .zip(&hashes)
            .map(|(p, h)| PartLine {
                number: p.number,
                offset: p.offset,
                len: p.len,
                checksum: h.checksum.base64(),
                md5: h.md5_hex().expect("computed"),
            })
            .collect(),
        checksum,
        etag,
    })
}
