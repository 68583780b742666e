//! Trees: the streaming walk of a directory in S3 key order ([`walk`]), `--include`/`--exclude`
//! ([`filter`]), and numbered frames grouped into sequences for summaries ([`sequence`]).

pub mod filter;
pub mod sequence;
pub mod walk;

pub use filter::{Filters, Rule};
pub use sequence::{Grouper, Item, Sequence};
pub use walk::{FileEntry, Found, MAX_KEY_BYTES, Skip, SkipReason, Walk, WalkOptions, walk};
