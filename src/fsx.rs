//! The one way tally puts a file in place so that a crash leaves the old file or the new one,
//! never a torn one: write a temporary file beside the target, fsync it, rename it over the
//! target, fsync the directory (without that last step the rename itself may be lost).
//!
//! Used for the upload manifest's header, `tally md5 --state`, a download's journal, MHL chain
//! files, and a download's finished file.
//!
//! Every file tally creates for its own use is created exclusively ([`create_new`]:
//! `O_CREAT|O_EXCL|O_NOFOLLOW`): whatever already sits at that name (a file, or a symbolic link
//! someone placed there to redirect the write) makes the open fail instead of being written
//! through. Files tally reopens (a partial download, a journal) are opened with `O_NOFOLLOW` and
//! must be regular files ([`open_regular`]). The names of temporaries carry [`MARK`], a backslash,
//! which no S3 key maps to in a download (a key with a backslash is refused: see
//! `docs/local-safety.md`).

use std::fs::{File, OpenOptions};
use std::io::Write as _;
use std::os::unix::fs::{MetadataExt as _, OpenOptionsExt as _};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// What every temporary name tally makes beside a file contains: `NAME\tally-...`. A downloaded
/// key never maps to a name with a backslash, so no object can land on a temporary.
pub(crate) const MARK: &str = "\\tally-";

/// `NAME\tally-SUFFIX` beside `path`.
pub(crate) fn beside(path: &Path, suffix: &str) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_owned();
    name.push(MARK);
    name.push(suffix);
    path.with_file_name(name)
}

fn nofollow() -> i32 {
    (rustix::fs::OFlags::NOFOLLOW | rustix::fs::OFlags::CLOEXEC).bits() as i32
}

/// Creates `path` for reading and writing (mode `mode`), failing if anything is there already,
/// a symbolic link included (never followed). Blocking.
pub(crate) fn create_new(path: &Path, mode: u32) -> std::io::Result<File> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .mode(mode)
        .custom_flags(nofollow())
        .open(path)
}

/// Opens the existing regular file `path` (for writing too when `write`, appending when
/// `append`) without following a symbolic link: a link, a device, a pipe or a folder there is an
/// error ([`std::io::ErrorKind::InvalidInput`]). Blocking.
pub(crate) fn open_regular(path: &Path, write: bool, append: bool) -> std::io::Result<File> {
    let f = OpenOptions::new()
        .read(true)
        .write(write && !append)
        .append(append)
        .custom_flags(nofollow() | rustix::fs::OFlags::NONBLOCK.bits() as i32)
        .open(path)
        .map_err(|e| {
            if e.raw_os_error() == Some(rustix::io::Errno::LOOP.raw_os_error()) {
                not_regular(path)
            } else {
                e
            }
        })?;
    if !f.metadata()?.is_file() {
        return Err(not_regular(path));
    }
    Ok(f)
}

fn not_regular(path: &Path) -> std::io::Error {
    std::io::Error::new(
        std::io::ErrorKind::InvalidInput,
        format!(
            "{} is not a regular file (a symbolic link, a device, a pipe or a folder)",
            path.display()
        ),
    )
}

/// Whether `path` (not followed) is the very file `file` is open on.
pub(crate) fn is_same_file(path: &Path, file: &File) -> bool {
    match (std::fs::symlink_metadata(path), file.metadata()) {
        (Ok(a), Ok(b)) => a.dev() == b.dev() && a.ino() == b.ino(),
        _ => false,
    }
}

/// The directory holding `path` ("." for a bare file name).
pub(crate) fn parent_dir(path: &Path) -> &Path {
    match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    }
}

/// Makes the entries of directory `dir` (a rename, a new or removed file) durable.
pub(crate) fn sync_dir(dir: &Path) -> std::io::Result<()> {
    File::open(dir)?.sync_all()
}

/// A temporary file name beside `path` (same file system) that no other write uses:
/// `NAME\tally-tmp.PID.N`.
pub(crate) fn temp_path(path: &Path) -> PathBuf {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    beside(path, &format!("tmp.{}.{n}", std::process::id()))
}

/// Replaces `path` with a file holding `bytes` (mode `mode`): write a temporary file created
/// exclusively ([`create_new`]), fsync it, rename it into place, fsync the directory. Blocking.
pub(crate) fn write_atomic(path: &Path, bytes: &[u8], mode: u32) -> std::io::Result<()> {
    let tmp = temp_path(path);
    let mut f = create_new(&tmp, mode)?;
    let written = f.write_all(bytes).and_then(|()| f.sync_all());
    // Renamed only if the name still holds the file written (nobody swapped it meanwhile).
    let written = written.and_then(|()| {
        if is_same_file(&tmp, &f) {
            Ok(())
        } else {
            Err(std::io::Error::other(format!(
                "{} was replaced while it was written",
                tmp.display()
            )))
        }
    });
    if let Err(e) = written {
        let _ = std::fs::remove_file(&tmp);
        return Err(e);
    }
    rename_into_place(&tmp, path).inspect_err(|_| {
        let _ = std::fs::remove_file(&tmp);
    })
}

/// Renames the finished (already fsynced) file `from` to `to`, replacing any file there, and
/// fsyncs `to`'s directory so the rename survives a crash. Blocking.
pub(crate) fn rename_into_place(from: &Path, to: &Path) -> std::io::Result<()> {
    std::fs::rename(from, to)?;
    sync_dir(parent_dir(to))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn write_atomic_replaces_the_file_and_leaves_no_temporary() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("state.json");
        write_atomic(&p, b"one", 0o600).unwrap();
        write_atomic(&p, b"two", 0o600).unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"two");
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("state.json")]);
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(&p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
    }

    #[test]
    fn a_failed_write_leaves_the_old_file() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f");
        write_atomic(&p, b"old", 0o600).unwrap();
        // The folder cannot be written: the write fails before any rename.
        let ro = dir.path().join("ro");
        std::fs::create_dir(&ro).unwrap();
        write_atomic(&ro.join("f"), b"old", 0o600).unwrap();
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(&ro, std::fs::Permissions::from_mode(0o500)).unwrap();
        let r = write_atomic(&ro.join("f"), b"new", 0o600);
        std::fs::set_permissions(&ro, std::fs::Permissions::from_mode(0o700)).unwrap();
        if r.is_ok() {
            eprintln!("running as root: a read-only folder does not stop the write");
        } else {
            assert_eq!(std::fs::read(ro.join("f")).unwrap(), b"old");
        }
    }

    #[test]
    fn temporaries_are_created_exclusively_and_never_through_a_link() {
        let dir = tempfile::tempdir().unwrap();
        let outside = dir.path().join("outside");
        std::fs::write(&outside, b"keep").unwrap();
        let p = dir.path().join("f");
        std::os::unix::fs::symlink(&outside, &p).unwrap();
        // A link at the path to create: refused, not followed.
        assert_eq!(
            create_new(&p, 0o600).unwrap_err().kind(),
            std::io::ErrorKind::AlreadyExists
        );
        let e = open_regular(&p, true, false).unwrap_err();
        assert_eq!(e.kind(), std::io::ErrorKind::InvalidInput, "{e}");
        assert!(open_regular(Path::new("/dev/null"), true, false).is_err());
        // write_atomic over the link replaces the link, and the file it named is untouched.
        write_atomic(&p, b"new", 0o600).unwrap();
        assert_eq!(std::fs::read(&outside).unwrap(), b"keep");
        assert!(std::fs::symlink_metadata(&p).unwrap().is_file());
        assert_eq!(std::fs::read(&p).unwrap(), b"new");
        let a = temp_path(&p);
        assert_ne!(a, temp_path(&p), "each temporary has a name of its own");
        assert!(a.to_string_lossy().contains(MARK));
    }
}
