//! The local file, memory-mapped once: zero-copy part bodies and a fingerprint to detect change.
//!
//! This module holds tally's only `unsafe` block.

use std::fs::File;
use std::os::unix::fs::{FileTypeExt as _, MetadataExt as _};
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use bytes::Bytes;

use crate::error::Error;
use crate::plan::Part;

/// What identifies one version of a file on disk, cheaply: size, modification time, inode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fingerprint {
    /// Length in bytes.
    pub len: u64,
    /// Modification time.
    pub mtime: SystemTime,
    /// Change time in nanoseconds since the epoch (moves on any write or metadata change).
    pub ctime_ns: i128,
    /// Device and inode.
    pub dev_ino: (u64, u64),
}

impl Fingerprint {
    fn of(meta: &std::fs::Metadata) -> Self {
        Fingerprint {
            len: meta.len(),
            mtime: meta.modified().unwrap_or(SystemTime::UNIX_EPOCH),
            ctime_ns: i128::from(meta.ctime()) * 1_000_000_000 + i128::from(meta.ctime_nsec()),
            dev_ino: (meta.dev(), meta.ino()),
        }
    }
}

/// A regular file mapped read-only into memory.
///
/// Part bodies are [`Bytes`] slices of the mapping: handing one to the HTTP client copies nothing,
/// and the mapping lives until the last slice is dropped.
#[derive(Debug)]
pub struct Source {
    path: PathBuf,
    bytes: Bytes,
    fingerprint: Fingerprint,
}

impl Source {
    /// Opens and maps `path`. Refuses anything but a readable regular file.
    pub fn open(path: &Path) -> Result<Source, Error> {
        let bad = |why: String| Error::Source {
            path: path.to_owned(),
            why,
        };
        let meta = std::fs::metadata(path).map_err(|e| bad(io_why(&e)))?;
        let ft = meta.file_type();
        if ft.is_dir() {
            return Err(bad("is a directory: give the path of a file".into()));
        }
        if ft.is_fifo() || ft.is_socket() || ft.is_char_device() || ft.is_block_device() {
            return Err(bad(
                "is not a regular file (a pipe, socket or device): copy it to a file first".into(),
            ));
        }
        let file = File::open(path).map_err(|e| bad(io_why(&e)))?;
        // The absolute path identifies the file in a manifest, whatever directory tally runs from.
        let path = &std::fs::canonicalize(path).map_err(|e| bad(io_why(&e)))?;
        let meta = file.metadata().map_err(|e| bad(io_why(&e)))?;
        let fingerprint = Fingerprint::of(&meta);
        let bytes = if meta.len() == 0 {
            Bytes::new()
        } else {
            // SAFETY: the mapping is read-only (shared with the page cache, never written through),
            // and `Bytes` keeps it alive for as long as any part body refers to it. What the OS
            // cannot promise is that nobody else changes the file meanwhile, and Rust's rule that
            // the bytes behind a `&[u8]` do not change is then broken by another process. What
            // really happens:
            // - another process writes the file: a read sees old or new bytes. A part whose bytes
            //   change between hashing and sending no longer matches the checksum sent with it and
            //   S3 rejects it (BadDigest); `Source::check_unchanged` (size, times, inode) runs before
            //   each part is hashed, before it is sent and before completing, and refuses to
            //   complete an upload whose file changed.
            // - the file is truncated: its pages past the new end are gone. The size check before
            //   each hash and each send makes this a narrow window, but it remains. If the kernel
            //   copies such a page into the socket (the HTTP client's write of a part body), the
            //   write fails with EFAULT ("Bad address"); tally then finds the file changed and
            //   reports that, exit 2, the upload kept. If tally's own code reads such a page
            //   (hashing, the whole-file MD5), the kernel raises SIGBUS and the process dies at
            //   once, as under kill -9: the journal is intact, the upload kept, and the next run
            //   refuses to resume the changed file (it names --restart).
            // No case completes an object from bytes other than the file's at one moment.
            let map = unsafe { memmap2::Mmap::map(&file) }.map_err(|e| bad(io_why(&e)))?;
            // Sequential read-ahead helps the hashing pass; the advice is only a hint.
            let _ = map.advise(memmap2::Advice::Sequential);
            Bytes::from_owner(map)
        };
        Ok(Source {
            path: path.to_owned(),
            bytes,
            fingerprint,
        })
    }

    /// All the bytes of the file.
    pub fn bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// The file's absolute path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Length in bytes at open time.
    pub fn len(&self) -> u64 {
        self.bytes.len() as u64
    }

    /// Whether the file is empty.
    pub fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }

    /// The fingerprint taken when the file was opened.
    pub fn fingerprint(&self) -> Fingerprint {
        self.fingerprint
    }

    /// The bytes of `part`, without copying.
    pub fn part(&self, part: &Part) -> Bytes {
        let r = part.range();
        self.bytes.slice(r.start as usize..r.end as usize)
    }

    /// Fails if the file on disk is no longer the one that was mapped (size, times or inode moved).
    pub fn check_unchanged(&self) -> Result<(), Error> {
        let now = std::fs::metadata(&self.path).map(|m| Fingerprint::of(&m));
        match now {
            Ok(f) if f == self.fingerprint => Ok(()),
            _ => Err(Error::SourceChanged {
                path: self.path.clone(),
            }),
        }
    }
}

fn io_why(e: &std::io::Error) -> String {
    match e.kind() {
        std::io::ErrorKind::NotFound => "no such file: check the path".into(),
        std::io::ErrorKind::PermissionDenied => {
            "permission denied: run as a user who can read it, or fix its permissions".into()
        }
        _ => e.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write as _;

    #[test]
    fn parts_are_slices_of_the_file() {
        let mut f = tempfile::NamedTempFile::new().unwrap();
        let data: Vec<u8> = (0..10_000u32).map(|i| i as u8).collect();
        f.write_all(&data).unwrap();
        let s = Source::open(f.path()).unwrap();
        assert_eq!(s.len(), 10_000);
        let p = s.part(&Part {
            number: 2,
            offset: 4096,
            len: 4096,
        });
        assert_eq!(&p[..], &data[4096..8192]);
        s.check_unchanged().unwrap();
        f.write_all(b"more").unwrap();
        f.flush().unwrap();
        assert!(matches!(
            s.check_unchanged(),
            Err(Error::SourceChanged { .. })
        ));
    }

    #[test]
    fn empty_files_map_to_nothing() {
        let f = tempfile::NamedTempFile::new().unwrap();
        let s = Source::open(f.path()).unwrap();
        assert!(s.is_empty());
        assert!(
            s.part(&Part {
                number: 1,
                offset: 0,
                len: 0
            })
            .is_empty()
        );
    }

    #[test]
    fn directories_and_missing_files_are_refused() {
        let d = tempfile::tempdir().unwrap();
        let e = Source::open(d.path()).unwrap_err().to_string();
        assert!(e.contains("is a directory"), "{e}");
        let e = Source::open(&d.path().join("nope"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("no such file"), "{e}");
    }
}
