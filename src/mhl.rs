//! ASC MHL (the American Society of Cinematographers' Media Hash List, v2.0): the `ascmhl/`
//! history an offload tool writes next to the media, read and checked ([`history`]), and a new
//! generation recording a transfer to S3 written ([`generation`]). The format only: the runs that
//! check a folder against its history and write a generation for it are `batch::custody`.
//!
//! - [`hashes`]: whole-file hashes in MHL's formats (xxh64, xxh3, xxh128, md5, sha1, c4);
//! - [`history`]: the chain and the generations, each generation checked against the chain's C4,
//!   every value recorded per file (only generations the chain seals count);
//! - [`generation`]: the generation and chain writers (quick-xml);
//! - [`ignore`]: the history's ignore patterns;
//! - [`nested`]: histories below the root (a card inside a day folder);
//! - [`unchained`]: generation files the chain does not list, as the reference tool reads them.

pub(crate) mod generation;
pub(crate) mod hashes;
pub(crate) mod history;
pub(crate) mod ignore;
pub(crate) mod nested;
pub(crate) mod unchained;
mod xml;

use std::path::PathBuf;

pub(crate) use hashes::{FileHashes, HashFormat};

/// What can be wrong with an `ascmhl/` history, or with writing one.
#[derive(Debug, thiserror::Error)]
pub(crate) enum MhlError {
    /// A generation's hash is not the one the chain recorded: the history was changed.
    #[error(
        "ASC MHL generation {} was modified after the chain recorded it ({format} in ascmhl_chain.xml {recorded}, file now {actual}): the history cannot be trusted; restore the original file (nothing was uploaded)",
        path.display()
    )]
    ModifiedGeneration {
        /// The generation file.
        path: PathBuf,
        /// The format of the chain's hash.
        format: HashFormat,
        /// What the chain recorded.
        recorded: String,
        /// What the file hashes to now.
        actual: String,
    },
    /// The chain lists a generation that is not there.
    #[error(
        "ASC MHL generation {} is listed in {} but missing: restore it (nothing was uploaded)",
        path.display(), chain.display()
    )]
    MissingGeneration {
        /// The generation file expected.
        path: PathBuf,
        /// The chain file.
        chain: PathBuf,
    },
    /// An `ascmhl/` folder without a chain.
    #[error(
        "{} has no ascmhl_chain.xml: the ASC MHL history is incomplete; restore the chain file, or remove the empty ascmhl/ folder if there never was a history (nothing was uploaded)",
        dir.display()
    )]
    NoChain {
        /// The `ascmhl/` folder.
        dir: PathBuf,
    },
    /// A history file that cannot be read.
    #[error("{}: {why}: check the file's permissions (nothing was uploaded)", path.display())]
    Unreadable {
        /// The file.
        path: PathBuf,
        /// The system's reason.
        why: String,
    },
    /// A history file that is not ASC MHL as tally reads it.
    #[error("{}: not a readable ASC MHL file ({why}): check it with `ascmhl-debug xsd-schema-check` (nothing was uploaded)", path.display())]
    Malformed {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        why: String,
    },
    /// The new generation or chain cannot be written.
    #[error("cannot write the ASC MHL history at {}: {why}: check free space and permissions there (the state directory is TALLY_STATE_DIR)", path.display())]
    Write {
        /// The file or folder.
        path: PathBuf,
        /// The system's reason.
        why: String,
    },
    /// A file does not hash to what its history recorded (found in the upload's own read, before
    /// the object was completed or sent).
    #[error(
        "does not match its ASC MHL history: {}: not uploaded",
        describe(differ)
    )]
    Mismatch {
        /// Each format that differs: (format, recorded, actual, generation file).
        differ: Vec<Difference>,
        /// Every whole-file hash the read gave, for the new generation's `failed` entry.
        hashes: FileHashes,
    },
}

/// One format in which a file differs from its history: (format, recorded value, value now, the
/// generation file that recorded it).
pub(crate) type Difference = (HashFormat, String, String, String);

/// The line's words for `differ`.
pub(crate) fn describe(differ: &[Difference]) -> String {
    differ
        .iter()
        .map(|(f, recorded, actual, g)| {
            format!("{f} in the ASC MHL history ({g}) {recorded}, file now {actual}")
        })
        .collect::<Vec<_>>()
        .join("; ")
}

/// What a tree file's upload computes for the ASC MHL side, and what it must match: the check
/// runs on the whole-file digests of the upload's own read (`upload::DigestCheck`), before
/// CompleteMultipartUpload or before the single PutObject is sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Expected {
    /// The formats to compute: the history's for the file, or the new generation's.
    pub formats: Vec<HashFormat>,
    /// Every value the history holds (not marked failed; the original and every later one),
    /// with its generation file's name; empty for a file the history does not list.
    pub recorded: Vec<(HashFormat, String, String)>,
    /// Values only generation files the chain does not list hold (and `ascmhl verify` does
    /// not compare with): compared for a warning, never binding.
    pub unsealed: Vec<(HashFormat, String, String)>,
    /// The file's path relative to the tree's root (for the warnings).
    pub rel: String,
}

impl Expected {
    /// The formats in which `actual` differs from the history (a format not computed counts as
    /// differing: nothing unproven passes).
    pub(crate) fn differences(&self, actual: &FileHashes) -> Vec<Difference> {
        differing(&self.recorded, actual)
    }

    /// The values of [`Expected::unsealed`] `actual` differs from (not binding).
    pub(crate) fn unsealed_differences(&self, actual: &FileHashes) -> Vec<Difference> {
        differing(&self.unsealed, actual)
    }

    /// `Ok` when `actual` matches every recorded value, else [`MhlError::Mismatch`].
    pub(crate) fn check(&self, actual: &FileHashes) -> Result<(), MhlError> {
        let differ = self.differences(actual);
        if differ.is_empty() {
            return Ok(());
        }
        Err(MhlError::Mismatch {
            differ,
            hashes: actual.clone(),
        })
    }
}

/// The values of `values` that `actual` differs from.
fn differing(values: &[(HashFormat, String, String)], actual: &FileHashes) -> Vec<Difference> {
    values
        .iter()
        .filter_map(|(f, recorded, g)| {
            let now = actual.get(*f).unwrap_or_default();
            (now != recorded).then(|| (*f, recorded.clone(), now.to_owned(), g.clone()))
        })
        .collect()
}

impl MhlError {
    /// Whether this is tamper evidence (an integrity failure, exit 1) rather than an error.
    pub(crate) fn is_integrity(&self) -> bool {
        matches!(
            self,
            MhlError::ModifiedGeneration { .. }
                | MhlError::MissingGeneration { .. }
                | MhlError::NoChain { .. }
                | MhlError::Mismatch { .. }
        )
    }
}

impl crate::error::DomainError for MhlError {
    fn exit_code(&self) -> i32 {
        if self.is_integrity() {
            crate::error::EXIT_MISMATCH
        } else {
            crate::error::EXIT_ERROR
        }
    }

    fn as_any(&self) -> &dyn std::any::Any {
        self
    }
}
