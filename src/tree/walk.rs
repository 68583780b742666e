//! The streaming tree walk: every regular file under a directory, in S3 key order, with every entry
//! that cannot become an object reported instead of stopping the walk.
//!
//! **Bounded memory.** The walk runs on one thread of its own and hands what it finds to the
//! consumer through a channel of [`CHANNEL_ENTRIES`] entries; when the consumer is slower, the walk
//! waits. Besides that channel the walk holds, for each directory on the current path, the names
//! it has not visited yet: memory is bounded by the tree's depth times its widest single
//! directory's names, never by the number of entries in the tree. The consumer gets the first file
//! as soon as it is found, long before a large walk ends. Dropping the [`Walk`] stops the walk.
//!
//! **Order = S3 key order.** Within a directory the entries are sorted by their names' bytes with a
//! `/` appended to the names of directories (and of symbolic links that are followed to
//! directories), so the depth-first walk yields [`FileEntry::rel`] in exactly the byte order in
//! which S3 lists keys under one prefix: `a-c` before `a/b` because `-` (0x2d) < `/` (0x2f), and
//! `a/b` before `a0` because `/` < `0`. A caller can merge-join the walk with a listing.

use std::ffi::OsString;
use std::fs::{self, Metadata};
use std::io;
use std::os::unix::ffi::OsStrExt as _;
use std::os::unix::fs::{FileTypeExt as _, MetadataExt as _};
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::sync::mpsc;

use super::filter::Filters;
use crate::error::Error;

/// Entries the walk may find ahead of its consumer.
pub(crate) const CHANNEL_ENTRIES: usize = 1024;

/// S3's limit on a key's length, in bytes of UTF-8.
pub(crate) const MAX_KEY_BYTES: usize = 1024;

/// How to walk.
#[derive(Debug, Clone)]
pub struct WalkOptions {
    /// `--include` / `--exclude`.
    pub filters: Filters,
    /// Follow symbolic links to files and directories (the default); off: each link is reported as
    /// [`SkipReason::SymlinkNotFollowed`].
    pub follow_symlinks: bool,
    /// Bytes of the S3 prefix each relative path is appended to, for S3's 1,024-byte key limit
    /// (0 when nothing is uploaded).
    pub key_prefix_len: usize,
}

impl Default for WalkOptions {
    fn default() -> WalkOptions {
        WalkOptions {
            filters: Filters::default(),
            follow_symlinks: true,
            key_prefix_len: 0,
        }
    }
}

/// A regular file found by the walk (possibly through a symbolic link).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileEntry {
    /// The path to open (under the root; a followed link's own path, not its target's).
    pub path: PathBuf,
    /// The path relative to the root, `/`-separated, valid UTF-8: the key below the prefix.
    pub rel: String,
    /// Its length when the walk saw it.
    pub size: u64,
    /// Its modification time, nanoseconds since the Unix epoch.
    pub mtime_ns: i64,
    /// Device of the file (of a link's target).
    pub dev: u64,
    /// Inode of the file (of a link's target).
    pub ino: u64,
}

/// What the walk yields.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Found {
    /// A regular file to take.
    File(FileEntry),
    /// An entry that was not taken, and why.
    Skipped(Skip),
}

/// An entry the walk did not take.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Skip {
    /// The entry's path (under the root).
    pub path: PathBuf,
    /// Why it was skipped.
    pub reason: SkipReason,
}

impl std::fmt::Display for Skip {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.path.display(), self.reason)
    }
}

/// Why an entry was skipped. [`SkipReason::is_failure`] tells a failure (the run must not report
/// success) from a warning.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SkipReason {
    /// A socket, FIFO, block or character device: not a file with bytes to upload.
    Special(&'static str),
    /// A symbolic link, with `--no-follow-symlinks`.
    SymlinkNotFollowed,
    /// A symbolic link back to a directory on its own path (or a chain of links that never ends).
    SymlinkLoop,
    /// A symbolic link whose target does not exist.
    BrokenSymlink,
    /// The file or directory cannot be read (the system's reason).
    Unreadable(String),
    /// It was listed, then gone (or replaced by another kind of entry) when the walk reached it.
    Vanished,
    /// Its name is not valid UTF-8, so it has no S3 key.
    NotUtf8,
    /// Prefix + relative path would make a key longer than S3 allows.
    KeyTooLong {
        /// The key's length in bytes.
        bytes: usize,
    },
}

impl SkipReason {
    /// A failure: the file should have been taken and was not (the run ends with exit code 2).
    /// Specials, links not followed and link loops are warnings only.
    pub fn is_failure(&self) -> bool {
        match self {
            SkipReason::Unreadable(_)
            | SkipReason::Vanished
            | SkipReason::NotUtf8
            | SkipReason::KeyTooLong { .. }
            | SkipReason::BrokenSymlink => true,
            SkipReason::Special(_) | SkipReason::SymlinkNotFollowed | SkipReason::SymlinkLoop => {
                false
            }
        }
    }

    /// A short name for reports (`--json`).
    pub fn code(&self) -> &'static str {
        match self {
            SkipReason::Special(_) => "special",
            SkipReason::SymlinkNotFollowed => "symlink_not_followed",
            SkipReason::SymlinkLoop => "symlink_loop",
            SkipReason::BrokenSymlink => "broken_symlink",
            SkipReason::Unreadable(_) => "unreadable",
            SkipReason::Vanished => "vanished",
            SkipReason::NotUtf8 => "not_utf8",
            SkipReason::KeyTooLong { .. } => "key_too_long",
        }
    }
}

impl std::fmt::Display for SkipReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SkipReason::Special(kind) => write!(
                f,
                "a {kind}, not a regular file: skipped (only regular files are taken)"
            ),
            SkipReason::SymlinkNotFollowed => {
                write!(f, "a symbolic link, not followed (--no-follow-symlinks)")
            }
            SkipReason::SymlinkLoop => write!(
                f,
                "a symbolic link that loops back to a directory above it: not followed (that directory is walked once)"
            ),
            SkipReason::BrokenSymlink => write!(
                f,
                "a symbolic link to nothing (its target does not exist): fix or remove the link"
            ),
            SkipReason::Unreadable(why) => {
                write!(f, "cannot be read ({why}): check its permissions")
            }
            SkipReason::Vanished => write!(
                f,
                "disappeared or was replaced while the tree was walked: run again once nothing writes there"
            ),
            SkipReason::NotUtf8 => write!(
                f,
                "the name is not valid UTF-8, so it cannot be an S3 key: rename it"
            ),
            SkipReason::KeyTooLong { bytes } => write!(
                f,
                "its key would be {bytes} bytes, over S3's limit of {MAX_KEY_BYTES}: shorten the path or the prefix"
            ),
        }
    }
}

/// The walk in progress: a [`futures::Stream`] of [`Found`] in key order (see the module docs).
#[derive(Debug)]
pub struct Walk {
    rx: mpsc::Receiver<Found>,
}

impl Walk {
    /// The next entry, waiting for the walk; for blocking code only (panics on an async thread).
    pub fn blocking_next(&mut self) -> Option<Found> {
        self.rx.blocking_recv()
    }
}

impl futures::Stream for Walk {
    type Item = Found;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Found>> {
        self.rx.poll_recv(cx)
    }
}

/// Starts walking the directory `root` on a thread of its own (see the module docs).
///
/// Checks the root first, on the calling thread (one `stat`, one `opendir`; from async code run
/// it under [`crate::exec::blocking`]): a root that does not exist, is not a directory or cannot
/// be read is an [`Error::Source`]. Everything below the root is reported in the stream instead.
pub(crate) fn walk(root: &Path, opts: WalkOptions) -> Result<Walk, Error> {
    walk_with(root, opts, Hooks::default())
}

/// A test seam called with a directory's path.
#[cfg(test)]
pub(crate) type DirHook = Box<dyn FnMut(&Path) + Send>;

/// Test seams; empty outside unit tests.
#[derive(Default)]
pub(crate) struct Hooks {
    /// Called with each directory's path once its names are listed, before any is visited.
    #[cfg(test)]
    pub(crate) after_list: Option<DirHook>,
    /// Paths that act as if permission to read them were denied (root reads through mode bits).
    #[cfg(test)]
    pub(crate) deny: Vec<PathBuf>,
}

pub(crate) fn walk_with(root: &Path, opts: WalkOptions, hooks: Hooks) -> Result<Walk, Error> {
    let source = |why: String| Error::Source {
        path: root.to_path_buf(),
        why,
    };
    let meta = fs::metadata(root).map_err(|e| match e.kind() {
        io::ErrorKind::NotFound => source("no such directory: check the path".into()),
        _ => source(format!(
            "cannot be read ({}): check its permissions",
            plain(&e)
        )),
    })?;
    if !meta.is_dir() {
        return Err(source("not a directory".into()));
    }
    let list = fs::read_dir(root).map_err(|e| {
        source(format!(
            "the directory cannot be read ({}): check its permissions",
            plain(&e)
        ))
    })?;
    let (tx, rx) = mpsc::channel(CHANNEL_ENTRIES);
    let mut walker = Walker {
        opts,
        tx,
        stack: Vec::new(),
        hooks,
    };
    let root = root.to_path_buf();
    std::thread::Builder::new()
        .name("tally-walk".into())
        .spawn(move || walker.run(root, list, &meta))
        .map_err(|_| Error::Internal("the walk's thread could not be started"))?;
    Ok(Walk { rx })
}

/// What a listed name is, as far as the listing (and, for links, one `stat`) tells.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    File,
    Dir,
    Symlink {
        to_dir: bool,
    },
    Special(&'static str),
    /// Listed, but its type could no longer be read.
    Gone,
}

#[derive(Debug)]
struct Entry {
    name: OsString,
    kind: Kind,
}

impl Entry {
    fn sorts_as_dir(&self) -> bool {
        matches!(self.kind, Kind::Dir | Kind::Symlink { to_dir: true })
    }

    /// The name as S3 orders it among its siblings' keys: a directory's with `/` appended.
    fn key_bytes(&self) -> impl Iterator<Item = u8> + '_ {
        let slash: &[u8] = if self.sorts_as_dir() { b"/" } else { b"" };
        self.name.as_bytes().iter().chain(slash).copied()
    }
}

struct Frame {
    dir: PathBuf,
    /// Relative path of the directory ("" for the root).
    rel: String,
    /// Its entries in key order, reversed: the next to visit is last.
    todo: Vec<Entry>,
    id: (u64, u64),
}

struct Walker {
    opts: WalkOptions,
    tx: mpsc::Sender<Found>,
    stack: Vec<Frame>,
    #[cfg_attr(not(test), allow(dead_code))]
    hooks: Hooks,
}

/// The consumer dropped the walk: stop.
struct Stopped;

impl Walker {
    fn run(&mut self, root: PathBuf, list: fs::ReadDir, meta: &Metadata) {
        let _ = self.enter(root, String::new(), list, meta);
        while let Some(frame) = self.stack.last_mut() {
            let Some(entry) = frame.todo.pop() else {
                self.stack.pop();
                continue;
            };
            let (dir, rel) = (frame.dir.join(&entry.name), frame.rel.clone());
            if self.visit(dir, &rel, entry).is_err() {
                return;
            }
        }
    }

    fn send(&self, found: Found) -> Result<(), Stopped> {
        self.tx.blocking_send(found).map_err(|_| Stopped)
    }

    fn skip(&self, path: PathBuf, reason: SkipReason) -> Result<(), Stopped> {
        self.send(Found::Skipped(Skip { path, reason }))
    }

    /// Lists a directory whose (`dev`, `ino`) is not on the current path and pushes its frame.
    fn enter(
        &mut self,
        dir: PathBuf,
        rel: String,
        list: fs::ReadDir,
        meta: &Metadata,
    ) -> Result<(), Stopped> {
        let mut todo = Vec::new();
        for item in list {
            let item = match item {
                Ok(i) => i,
                Err(e) => {
                    // The listing broke off: report it, keep what was listed.
                    self.skip(dir.clone(), SkipReason::Unreadable(plain(&e)))?;
                    break;
                }
            };
            let kind = match item.file_type() {
                Err(_) => Kind::Gone,
                Ok(t) if t.is_dir() => Kind::Dir,
                Ok(t) if t.is_file() => Kind::File,
                Ok(t) if t.is_symlink() => Kind::Symlink {
                    to_dir: self.opts.follow_symlinks
                        && fs::metadata(item.path()).is_ok_and(|m| m.is_dir()),
                },
                Ok(t) => Kind::Special(special_kind(&t)),
            };
            todo.push(Entry {
                name: item.file_name(),
                kind,
            });
        }
        todo.sort_unstable_by(|a, b| b.key_bytes().cmp(a.key_bytes()));
        #[cfg(test)]
        if let Some(hook) = self.hooks.after_list.as_mut() {
            hook(&dir);
        }
        self.stack.push(Frame {
            dir,
            rel,
            todo,
            id: (meta.dev(), meta.ino()),
        });
        Ok(())
    }

    fn denied(&self, _path: &Path) -> bool {
        #[cfg(test)]
        if self.hooks.deny.iter().any(|d| d == _path) {
            return true;
        }
        false
    }

    fn visit(&mut self, path: PathBuf, parent_rel: &str, entry: Entry) -> Result<(), Stopped> {
        let Some(name) = entry.name.to_str() else {
            return self.skip(path, SkipReason::NotUtf8);
        };
        let rel = if parent_rel.is_empty() {
            name.to_owned()
        } else {
            format!("{parent_rel}/{name}")
        };
        let as_dir = entry.sorts_as_dir();
        if !self.opts.filters.allows(&rel, as_dir) {
            return Ok(());
        }
        let meta = match entry.kind {
            Kind::Gone => return self.skip(path, SkipReason::Vanished),
            Kind::Special(kind) => return self.skip(path, SkipReason::Special(kind)),
            Kind::Symlink { .. } if !self.opts.follow_symlinks => {
                return self.skip(path, SkipReason::SymlinkNotFollowed);
            }
            Kind::Symlink { .. } => match fs::metadata(&path) {
                Ok(m) => m,
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    return self.skip(path, SkipReason::BrokenSymlink);
                }
                // ELOOP: a chain of links that never reaches a target.
                Err(e) if e.raw_os_error() == Some(40) => {
                    return self.skip(path, SkipReason::SymlinkLoop);
                }
                Err(e) => return self.skip(path, SkipReason::Unreadable(plain(&e))),
            },
            Kind::File | Kind::Dir => match fs::symlink_metadata(&path) {
                Ok(m) => m,
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    return self.skip(path, SkipReason::Vanished);
                }
                Err(e) => return self.skip(path, SkipReason::Unreadable(plain(&e))),
            },
        };
        if meta.is_dir() != as_dir {
            // Replaced by another kind of entry since the listing: its place in the order is wrong.
            return self.skip(path, SkipReason::Vanished);
        }
        if meta.is_dir() {
            self.descend(path, rel, &meta)
        } else if meta.is_file() {
            self.file(path, rel, &meta)
        } else {
            self.skip(path, SkipReason::Special(special_kind(&meta.file_type())))
        }
    }

    fn descend(&mut self, path: PathBuf, rel: String, meta: &Metadata) -> Result<(), Stopped> {
        let id = (meta.dev(), meta.ino());
        if self.stack.iter().any(|f| f.id == id) {
            return self.skip(path, SkipReason::SymlinkLoop);
        }
        if self.denied(&path) {
            return self.skip(path, SkipReason::Unreadable("permission denied".into()));
        }
        match fs::read_dir(&path) {
            Ok(list) => self.enter(path, rel, list, meta),
            Err(e) if e.kind() == io::ErrorKind::NotFound => self.skip(path, SkipReason::Vanished),
            Err(e) => self.skip(path, SkipReason::Unreadable(plain(&e))),
        }
    }

    fn file(&mut self, path: PathBuf, rel: String, meta: &Metadata) -> Result<(), Stopped> {
        let bytes = self.opts.key_prefix_len + rel.len();
        if bytes > MAX_KEY_BYTES {
            return self.skip(path, SkipReason::KeyTooLong { bytes });
        }
        // Opening proves it readable now, so a permission problem is named by the walk, with the
        // rest of the tree, rather than half-way through a transfer.
        if self.denied(&path) {
            return self.skip(path, SkipReason::Unreadable("permission denied".into()));
        }
        if let Err(e) = fs::File::open(&path) {
            let reason = match e.kind() {
                io::ErrorKind::NotFound => SkipReason::Vanished,
                _ => SkipReason::Unreadable(plain(&e)),
            };
            return self.skip(path, reason);
        }
        let mtime_ns = meta
            .mtime()
            .saturating_mul(1_000_000_000)
            .saturating_add(meta.mtime_nsec());
        self.send(Found::File(FileEntry {
            path,
            rel,
            size: meta.len(),
            mtime_ns,
            dev: meta.dev(),
            ino: meta.ino(),
        }))
    }
}

fn special_kind(t: &fs::FileType) -> &'static str {
    if t.is_fifo() {
        "FIFO"
    } else if t.is_socket() {
        "socket"
    } else if t.is_block_device() {
        "block device"
    } else if t.is_char_device() {
        "character device"
    } else {
        "special file"
    }
}

/// An I/O error as a person reads it: "permission denied", without "(os error 13)".
fn plain(e: &io::Error) -> String {
    let s = e.to_string();
    let s = s.split(" (os error").next().unwrap_or(&s);
    let mut c = s.chars();
    match c.next() {
        Some(first) => first.to_lowercase().chain(c).collect(),
        None => String::new(),
    }
}

#[cfg(test)]
mod tests;
