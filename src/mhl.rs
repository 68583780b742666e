//! ASC MHL (the American Society of Cinematographers' Media Hash List, v2.0): the `ascmhl/`
//! history an offload tool writes next to the media, read and checked ([`history`]), and a new
//! generation recording a transfer to S3 written ([`generation`]), for the tree upload
//! ([`session`]).
//!
//! - [`hashes`]: whole-file hashes in MHL's formats (xxh64, xxh3, xxh128, md5, sha1, c4);
//! - [`history`]: the chain and the generations, each generation checked against the chain's C4,
//!   the newest value per file and format;
//! - [`generation`]: the generation and chain writers (quick-xml);
//! - [`ignore`]: the history's ignore patterns;
//! - [`session`]: the check before each file is sent, and the generation after the run;
//! - [`check`]: a downloaded or verified folder checked against its own history.

pub mod check;
pub mod generation;
pub mod hashes;
pub mod history;
pub mod ignore;
pub mod session;
mod xml;

use std::path::PathBuf;

pub use hashes::{FileHashes, HashFormat, c4_id, file_hashes};
pub use history::History;

/// What can be wrong with an `ascmhl/` history, or with writing one.
#[derive(Debug, thiserror::Error)]
pub enum MhlError {
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
    /// Generation files without a chain.
    #[error(
        "{} has ASC MHL generations but no ascmhl_chain.xml: restore the chain file (nothing was uploaded)",
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
}

impl MhlError {
    /// Whether this is tamper evidence (an integrity failure, exit 1) rather than an error.
    pub fn is_integrity(&self) -> bool {
        matches!(
            self,
            MhlError::ModifiedGeneration { .. } | MhlError::MissingGeneration { .. }
        )
    }
}
