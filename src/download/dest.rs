//! Where a download goes: the destination path from `DEST` and the key, the folder checks, the
//! names of the partial file, its journal and the lock beside it (nothing is ever written outside
//! DEST's folder), and the lock itself.
//!
//! The temporaries are `DEST\tally-partial`, `DEST\tally-journal` and `DEST\tally-lock`: a
//! backslash is in no name a downloaded key maps to (a key whose file name would hold one is
//! refused), so no object of a prefix can land on another's temporary, and whatever sits at such
//! a name was not put there by a download of tally's: it is removed (never followed) and the file
//! created anew, exclusively.

use std::fs::File;
use std::path::{Path, PathBuf};

use crate::error::Error;
use crate::fsx::{beside, parent_dir};

/// Suffix (after [`crate::fsx::MARK`]) of the file the bytes are written into until proven.
pub(crate) const PARTIAL: &str = "partial";
/// Suffix of the partial file's journal.
pub(crate) const JOURNAL: &str = "journal";
/// Suffix of the lock file held for the whole download.
pub(crate) const LOCK: &str = "lock";

/// `DEST\tally-partial`.
pub(crate) fn partial_path(dest: &Path) -> PathBuf {
    beside(dest, PARTIAL)
}

/// `DEST\tally-journal`.
pub(crate) fn journal_path(dest: &Path) -> PathBuf {
    beside(dest, JOURNAL)
}

/// `DEST\tally-lock`.
pub(crate) fn lock_path(dest: &Path) -> PathBuf {
    beside(dest, LOCK)
}

/// The last segment of `key`, if it can name a file.
fn file_name_of(key: &str) -> Option<&str> {
    let name = key.rsplit('/').next()?;
    (!name.is_empty()
        && name != "."
        && name != ".."
        && !name.contains('\0')
        && !name.contains('\\'))
    .then_some(name)
}

/// An exclusive lock on one destination file, held for a whole download: a second download to
/// the same file (another tally, or another key of the same prefix on a case-insensitive file
/// system) is refused with one line. The lock file is removed when the download ends; the OS
/// releases the lock however the process dies.
#[derive(Debug)]
pub(crate) struct DestLock {
    path: PathBuf,
    file: File,
}

/// What [`DestLock::acquire_or_read_only`] found.
#[derive(Debug)]
pub(crate) enum Lock {
    /// The lock, held.
    Held(DestLock),
    /// The folder cannot be written (permissions, a read-only file system): no download, tally's
    /// or another's, can write the file, so a run that only proves an existing file needs no lock.
    /// The error says why, for a run that would have to write.
    ReadOnly(Error),
}

impl DestLock {
    /// [`DestLock::acquire`], except that a folder nobody can write into is reported as
    /// [`Lock::ReadOnly`] rather than as an error. Blocking.
    pub(crate) fn acquire_or_read_only(dest: &Path) -> Result<Lock, Error> {
        use std::io::ErrorKind as K;
        match Self::acquire_io(dest) {
            Ok(Ok(lock)) => Ok(Lock::Held(lock)),
            Ok(Err(e)) => Err(e),
            Err(e) if matches!(e.kind(), K::PermissionDenied | K::ReadOnlyFilesystem) => {
                Ok(Lock::ReadOnly(io_error(&lock_path(dest), &e)))
            }
            Err(e) => Err(io_error(&lock_path(dest), &e)),
        }
    }

    /// Takes the lock of `dest`, or says another download holds it. Blocking.
    pub(crate) fn acquire(dest: &Path) -> Result<DestLock, Error> {
        Self::acquire_io(dest).map_err(|e| io_error(&lock_path(dest), &e))?
    }

    /// The lock of `dest` as a file made now, empty and this run's alone (created exclusively,
    /// never through a link, with `mode` less the umask), or `None` when something is at the
    /// lock's name already (take [`DestLock::acquire`] then). A small object of a prefix download
    /// writes its bytes into this file and renames it to `dest`: one new file per object, none
    /// removed. Whoever holds or waits for a lock checks that the lock's name still names its file
    /// ([`crate::fsx::is_same_file`]), so a lock renamed away is a lock released. Blocking.
    pub(crate) fn create_fresh(dest: &Path, mode: u32) -> std::io::Result<Option<DestLock>> {
        let path = lock_path(dest);
        let file = match crate::fsx::create_new(&path, mode) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => return Ok(None),
            Err(e) => return Err(e),
        };
        match file.try_lock() {
            Ok(()) => {}
            // Another run opened it between the create and the lock: it is theirs.
            Err(std::fs::TryLockError::WouldBlock) => return Ok(None),
            Err(std::fs::TryLockError::Error(e)) => return Err(e),
        }
        Ok(Some(DestLock { path, file }))
    }

    /// The lock file, open for reading and writing.
    pub(crate) fn file(&self) -> &File {
        &self.file
    }

    /// The lock's name, `DEST\tally-lock`.
    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// The lock, or the refusal (held by another run), or the I/O error that kept tally from
    /// making the lock file.
    fn acquire_io(dest: &Path) -> std::io::Result<Result<DestLock, Error>> {
        let path = lock_path(dest);
        // A lock file removed by the run that held it, between our open and our lock, is not a
        // lock any more: take the one at the name now (a few rounds at most).
        for _ in 0..8 {
            let file = match crate::fsx::open_regular(&path, true, false) {
                Ok(f) => f,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    match crate::fsx::create_new(&path, 0o600) {
                        Ok(f) => f,
                        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
                        Err(e) => return Err(e),
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::InvalidInput => {
                    // Not a file tally made (a link, a device): removed, never followed.
                    let _ = std::fs::remove_file(&path);
                    continue;
                }
                Err(e) => return Err(e),
            };
            match file.try_lock() {
                Ok(()) => {}
                Err(std::fs::TryLockError::WouldBlock) => {
                    return Ok(Err(Error::Destination {
                        path: dest.to_owned(),
                        why: format!(
                            "another tally is downloading to this file (lock {}): wait for it to finish, or stop it first",
                            path.display()
                        ),
                    }));
                }
                Err(std::fs::TryLockError::Error(e)) => return Err(e),
            }
            if crate::fsx::is_same_file(&path, &file) {
                return Ok(Ok(DestLock { path, file }));
            }
        }
        Ok(Err(Error::Destination {
            path: dest.to_owned(),
            why: format!(
                "the lock {} keeps changing (other downloads to this file start and end): run the command again",
                path.display()
            ),
        }))
    }
}

impl Drop for DestLock {
    fn drop(&mut self) {
        // Removed while still held, so that no other run holds a lock on a removed file.
        if crate::fsx::is_same_file(&self.path, &self.file) {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// Refuses a `target` that exists and is not a regular file (a folder, a symbolic link, a device,
/// a pipe): a download only ever creates or replaces a regular file. Blocking.
pub(crate) fn check_target(target: &Path) -> Result<(), Error> {
    match std::fs::symlink_metadata(target) {
        Ok(m) if m.is_dir() => Err(Error::Destination {
            path: target.to_owned(),
            why: "is a directory: give a file path, or DIR/ to download into that directory"
                .into(),
        }),
        Ok(m) if !m.is_file() => Err(Error::Destination {
            path: target.to_owned(),
            why: "is not a regular file (a symbolic link, a device, a pipe or a socket): tally only creates or replaces regular files; choose another destination".into(),
        }),
        _ => Ok(()),
    }
}

/// The file to write for `key` given `dest` as typed: `dest` itself, or, when `dest` ends in `/`
/// or is an existing directory, the key's last segment inside it. Refuses a target that is a
/// directory and a folder that does not exist. Blocking (stats the file system).
pub(crate) fn resolve(dest: &Path, key: &str) -> Result<PathBuf, Error> {
    let slash = dest.as_os_str().as_encoded_bytes().ends_with(b"/");
    let target = if slash || dest.is_dir() {
        let name = file_name_of(key).ok_or_else(|| {
            Error::Usage(format!(
                "the key '{key}' has no last segment that can name a file: give the destination as a file path"
            ))
        })?;
        dest.join(name)
    } else {
        dest.to_owned()
    };
    check_target(&target)?;
    let dir = parent_dir(&target);
    // A folder that does not exist yet is made once the object is found ([`make_parent`]).
    if dir.exists() && !dir.is_dir() {
        return Err(Error::Destination {
            path: dir.to_owned(),
            why: if dir.exists() {
                "is not a directory: the destination's folder must be one".into()
            } else {
                "the destination folder does not exist: create it first".into()
            },
        });
    }
    Ok(target)
}

/// Makes the folder `target` goes into, if it does not exist yet (as `aws s3 cp` does).
/// Blocking.
pub(crate) fn make_parent(target: &Path) -> Result<(), Error> {
    let dir = parent_dir(target);
    if dir.is_dir() {
        return Ok(());
    }
    std::fs::create_dir_all(dir).map_err(|e| Error::Destination {
        path: dir.to_owned(),
        why: format!("the destination folder cannot be created: {e}"),
    })
}

/// The error for an I/O failure on `path` while downloading, in one line that says what to do.
pub(crate) fn io_error(path: &Path, e: &std::io::Error) -> Error {
    use std::io::ErrorKind as K;
    let why = match e.kind() {
        K::StorageFull => {
            "the disk is full: free space (or choose another folder) and run the same command again; the parts already verified are kept".to_owned()
        }
        K::PermissionDenied => "permission denied: choose a folder you can write to".to_owned(),
        K::ReadOnlyFilesystem => {
            "the file system is read-only: choose a folder you can write to".to_owned()
        }
        K::QuotaExceeded => {
            "the disk quota is exceeded: free space and run the same command again".to_owned()
        }
        _ => format!("{e}"),
    };
    Error::Destination {
        path: path.to_owned(),
        why,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_download_to_the_same_file_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("out");
        let held = DestLock::acquire(&dest).unwrap();
        let e = DestLock::acquire(&dest).unwrap_err().to_string();
        assert!(
            e.contains("another tally is downloading to this file"),
            "{e}"
        );
        drop(held);
        assert!(
            !lock_path(&dest).exists(),
            "the lock file goes with the lock"
        );
        // A link placed at the lock's name is removed, not followed.
        let outside = dir.path().join("outside");
        std::fs::write(&outside, b"keep").unwrap();
        std::os::unix::fs::symlink(&outside, lock_path(&dest)).unwrap();
        let held = DestLock::acquire(&dest).unwrap();
        assert!(
            std::fs::symlink_metadata(lock_path(&dest))
                .unwrap()
                .is_file()
        );
        assert_eq!(std::fs::read(&outside).unwrap(), b"keep");
        drop(held);
    }

    #[test]
    fn the_key_names_the_file_in_a_directory() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        assert_eq!(resolve(d, "a/b/clip.mov").unwrap(), d.join("clip.mov"));
        let slash = PathBuf::from(format!("{}/", d.display()));
        assert_eq!(resolve(&slash, "clip.mov").unwrap(), d.join("clip.mov"));
        assert_eq!(
            resolve(&d.join("x.mov"), "clip.mov").unwrap(),
            d.join("x.mov")
        );
        assert!(matches!(resolve(d, "a/.."), Err(Error::Usage(_))));
        // A directory where the file would go.
        std::fs::create_dir(d.join("clip.mov")).unwrap();
        assert!(matches!(
            resolve(d, "clip.mov"),
            Err(Error::Destination { .. })
        ));
        // A folder that does not exist, with or without the trailing slash: made when the
        // object is found, not before.
        let missing = d.join("nope").join("x");
        assert_eq!(resolve(&missing, "k").unwrap(), missing);
        let slashed = resolve(Path::new(&format!("{}/nope/", d.display())), "k").unwrap();
        assert_eq!(slashed, d.join("nope").join("k"));
        assert!(!d.join("nope").exists());
        make_parent(&slashed).unwrap();
        assert!(d.join("nope").is_dir());
        assert_eq!(
            partial_path(&d.join("x.mov")),
            d.join("x.mov\\tally-partial")
        );
        assert_eq!(
            journal_path(&d.join("x.mov")),
            d.join("x.mov\\tally-journal")
        );
        // A key whose last segment holds a backslash cannot name a file in a folder.
        assert!(matches!(
            resolve(d, "a\\tally-partial"),
            Err(Error::Usage(_))
        ));
        // A device, a link: refused, never replaced.
        let e = resolve(Path::new("/dev/null"), "k")
            .unwrap_err()
            .to_string();
        assert!(e.contains("not a regular file"), "{e}");
        std::os::unix::fs::symlink("/dev/null", d.join("link")).unwrap();
        assert!(resolve(&d.join("link"), "k").is_err());
    }
}
