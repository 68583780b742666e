//! `tally hash FILE|DIR`: without any network, what an upload with these settings would produce.

use rayon::prelude::*;
use serde::Serialize;

use crate::error::Error;
use crate::hash::{self, FileHashFormat, FileHasher, FileHashes, ObjectChecksum};
use crate::plan::Plan;
use crate::source::Source;
use crate::tree::{Found, Walk};
use crate::vocab::{ChecksumAlgorithm, ChecksumType, PartHash};

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
    /// The whole file's hashes (`--file-hash`): format -> value, as ASC MHL writes them.
    #[serde(skip_serializing_if = "FileHashes::is_empty")]
    pub file_hashes: FileHashes,
}

/// Hashes `path` as an upload with `part_size` and `alg` would, plus the whole file's MD5 and its
/// hashes in `formats` (`--file-hash`). Blocking and CPU-bound: parts on the rayon pool, the
/// whole-file digests beside them in one sequential pass.
pub fn hash_file(
    path: &std::path::Path,
    part_size: u64,
    alg: ChecksumAlgorithm,
    formats: &[FileHashFormat],
) -> Result<HashReport, Error> {
    hash_file_shown(path, part_size, alg, formats, &crate::progress::Silent)
}

/// Bytes the whole-file hashes take at a time, between progress updates.
const SHOWN_STEP: usize = 16 << 20;

/// [`hash_file`], with the bytes read shown on `progress` as the whole-file hashes advance (the
/// slowest of the hashes: the per-part ones run beside it on the other cores).
pub fn hash_file_shown(
    path: &std::path::Path,
    part_size: u64,
    alg: ChecksumAlgorithm,
    formats: &[FileHashFormat],
    progress: &dyn crate::progress::Progress,
) -> Result<HashReport, Error> {
    let src = Source::open(path)?;
    let plan = Plan::new(src.len(), part_size)?;
    let parts: Vec<_> = plan.parts().collect();
    progress.start_reading(src.len(), "hashing");
    let meter = progress.meter();
    let (hashes, whole) = rayon::join(
        || {
            parts
                .par_iter()
                .map(|p| hash::hash_part(alg, true, &src.part(p)))
                .collect::<Vec<PartHash>>()
        },
        || {
            let mut h = FileHasher::new(formats).with_md5();
            for chunk in src.bytes().chunks(SHOWN_STEP) {
                h.update(chunk);
                if let Some(m) = &meter {
                    m.add(chunk.len() as u64);
                }
            }
            h.finish()
        },
    );
    progress.finish();
    let md5 = whole.md5.expect("asked for");
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
        md5: crate::vocab::hex(&md5),
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
        file_hashes: whole.hashes,
    })
}

/// One line of `tally hash DIR --json` (its `action` field says which).
#[derive(Debug, Serialize)]
#[serde(tag = "action", rename_all = "snake_case")]
pub enum TreeLine {
    /// A file, hashed as `tally hash FILE` would.
    Hashed {
        /// Relative to the directory, `/`-separated: the key below an upload's prefix.
        path: String,
        /// Its hashes.
        #[serde(flatten)]
        report: HashReport,
    },
    /// An entry the walk did not take.
    Skipped {
        /// Relative to the directory.
        path: String,
        /// A short name for the reason (`broken_symlink`, `fifo`, ...).
        code: &'static str,
        /// The reason, and what to do.
        reason: String,
        /// Whether it makes the run fail (exit 2) or is a warning.
        failure: bool,
    },
    /// A file the walk found that could not be hashed.
    Failed {
        /// Relative to the directory.
        path: String,
        /// Why, and what to do.
        reason: String,
    },
    /// The last line.
    Summary(TreeSummary),
}

/// The totals of `tally hash DIR`.
#[derive(Debug, Clone, Default, Serialize)]
pub struct TreeSummary {
    /// Files hashed.
    pub files: u64,
    /// Their bytes.
    pub bytes: u64,
    /// Entries skipped (warnings and failures).
    pub skipped: u64,
    /// Skipped entries that are failures, plus files that could not be hashed.
    pub failed: u64,
    /// Wall time.
    pub seconds: f64,
}

impl TreeSummary {
    fn count(&mut self, line: &TreeLine) {
        match line {
            TreeLine::Hashed { report, .. } => {
                self.files += 1;
                self.bytes += report.size;
            }
            TreeLine::Skipped { failure, .. } => {
                self.skipped += 1;
                self.failed += u64::from(*failure);
            }
            TreeLine::Failed { .. } => self.failed += 1,
            TreeLine::Summary(_) => {}
        }
    }
}

/// `tally hash DIR`: hashes every file `walk` yields as [`hash_file`] would, a few at a time
/// ([`crate::exec::hash_ahead`] files in flight, each on the blocking pool, its parts on the
/// rayon pool), and hands each line to `emit` in the walk's order (S3 key order) as soon as it and
/// every line before it are done. Memory: the walk's bound plus the lines in flight.
pub async fn hash_tree(
    root: &std::path::Path,
    walk: Walk,
    part_size: u64,
    alg: ChecksumAlgorithm,
    formats: &[FileHashFormat],
    mut emit: impl FnMut(&TreeLine),
) -> TreeSummary {
    use futures::StreamExt as _;
    let started = std::time::Instant::now();
    let root = root.to_path_buf();
    let mut lines = walk
        .map(|found| {
            let root = root.clone();
            let formats = formats.to_vec();
            async move {
                match found {
                    Found::File(entry) => {
                        let path = entry.path;
                        match crate::exec::blocking(move || {
                            hash_file(&path, part_size, alg, &formats)
                        })
                        .await
                        {
                            Ok(report) => TreeLine::Hashed {
                                path: entry.rel,
                                report,
                            },
                            Err(e) => TreeLine::Failed {
                                path: entry.rel,
                                reason: e.to_string(),
                            },
                        }
                    }
                    Found::Skipped(skip) => TreeLine::Skipped {
                        path: skip
                            .path
                            .strip_prefix(&root)
                            .unwrap_or(&skip.path)
                            .to_string_lossy()
                            .into_owned(),
                        code: skip.reason.code(),
                        reason: skip.reason.to_string(),
                        failure: skip.reason.is_failure(),
                    },
                }
            }
        })
        .buffered(crate::exec::hash_ahead());
    let mut summary = TreeSummary::default();
    while let Some(line) = lines.next().await {
        summary.count(&line);
        emit(&line);
    }
    summary.seconds = started.elapsed().as_secs_f64();
    summary
}
