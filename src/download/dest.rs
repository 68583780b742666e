//! Where a download goes: the destination path from `DEST` and the key, the folder checks, and the
//! names of the partial file and its journal beside it (nothing is ever written outside DEST's
//! folder).

use std::path::{Path, PathBuf};

use crate::error::Error;
use crate::fsx::parent_dir;

/// Suffix of the file the bytes are written into until they are proven.
pub const PARTIAL: &str = ".tally-partial";
/// Suffix of the partial file's journal.
pub const JOURNAL: &str = ".tally-partial.journal";

fn with_suffix(path: &Path, suffix: &str) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_owned();
    name.push(suffix);
    path.with_file_name(name)
}

/// `DEST.tally-partial`.
pub fn partial_path(dest: &Path) -> PathBuf {
    with_suffix(dest, PARTIAL)
}

/// `DEST.tally-partial.journal`.
pub fn journal_path(dest: &Path) -> PathBuf {
    with_suffix(dest, JOURNAL)
}

/// The last segment of `key`, if it can name a file.
fn file_name_of(key: &str) -> Option<&str> {
    let name = key.rsplit('/').next()?;
    (!name.is_empty() && name != "." && name != ".." && !name.contains('\0')).then_some(name)
}

/// The file to write for `key` given `dest` as typed: `dest` itself, or, when `dest` ends in `/`
/// or is an existing directory, the key's last segment inside it. Refuses a target that is a
/// directory and a folder that does not exist. Blocking (stats the file system).
pub fn resolve(dest: &Path, key: &str) -> Result<PathBuf, Error> {
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
    if target.is_dir() {
        return Err(Error::Destination {
            path: target,
            why: "is a directory: give a file path, or DIR/ to download into that directory".into(),
        });
    }
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
pub fn make_parent(target: &Path) -> Result<(), Error> {
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
pub fn io_error(path: &Path, e: &std::io::Error) -> Error {
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
            d.join("x.mov.tally-partial")
        );
        assert_eq!(
            journal_path(&d.join("x.mov")),
            d.join("x.mov.tally-partial.journal")
        );
    }
}
