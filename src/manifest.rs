//! The durable journal of a multipart upload: what makes resume possible.
//!
//! One file per (source, destination), in a state directory (never beside the source, which may be
//! read-only media). The first line is the header; every completed part appends one line. Each line
//! is `CRC32C<TAB>JSON`, written with one `write` and made durable with `fdatasync` before the part
//! counts as done, so recording a part costs O(1) whatever the number of parts. A crash while
//! writing loses at most the line being written: a torn or corrupted line fails its CRC and is
//! skipped, and the part it described is re-checked against S3 on resume.
//!
//! The header is written to a temporary file, synced and renamed into place, so a manifest either
//! has a complete header or does not exist. Files are 0600 and hold no credentials.

use std::fs::{File, OpenOptions};
use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

use crate::error::Error;

/// Version of the manifest format; a manifest of another version is refused.
pub(crate) const FORMAT: u32 = 1;

/// The first line: what the upload is, so a resume can refuse a mismatch.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Header {
    /// [`FORMAT`].
    pub format: u32,
    /// The source file, absolute.
    pub source: PathBuf,
    /// Its size in bytes.
    pub size: u64,
    /// Its modification time, nanoseconds since the epoch.
    pub mtime_ns: i64,
    /// SHA-256 of the size and three 1 MiB samples (start, middle, end): cheap, and catches most
    /// in-place rewrites that keep size and time.
    pub fingerprint: String,
    /// Destination bucket.
    pub bucket: String,
    /// Destination key.
    pub key: String,
    /// The endpoint, or "aws" for AWS's own.
    pub endpoint: String,
    /// The multipart upload.
    pub upload_id: String,
    /// Part size in bytes (after growing to fit 10,000 parts).
    pub part_size: u64,
    /// Checksum algorithm (stored by its S3 name).
    pub checksum: crate::vocab::ChecksumAlgorithm,
    /// The object settings the upload was created with, as given (a content type guessed from
    /// the file name is not stored: the same file gives the same guess). Absent in manifests
    /// written before tally had settings: those uploads had none.
    #[serde(default, skip_serializing_if = "is_default")]
    pub object: crate::vocab::ObjectSettings,
}

fn is_default(s: &crate::vocab::ObjectSettings) -> bool {
    *s == crate::vocab::ObjectSettings::default()
}

/// One part S3 acknowledged.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct PartRecord {
    /// Part number.
    pub number: u32,
    /// First byte in the source.
    pub offset: u64,
    /// Length.
    pub len: u64,
    /// Its checksum, base64.
    pub checksum: String,
    /// Its MD5, hex.
    pub md5: String,
    /// The ETag S3 returned.
    pub etag: crate::vocab::ETag,
    /// Whether the part went out more than once (hedged, or its body resent by the SDK): a server
    /// may hold a dropped copy of it that a later CompleteMultipartUpload refuses
    /// (`upload/reconcile.rs`), even in a later run. Absent in older manifests: false.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub sent_twice: bool,
}

/// The object that was completed (kept with `--keep-manifest` as an audit record).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct CompletedRecord {
    /// The object checksum S3 reported.
    pub checksum: String,
    /// The ETag S3 reported.
    pub etag: Option<crate::vocab::ETag>,
    /// The whole file's hashes computed during the upload (`--file-hash`).
    #[serde(default, skip_serializing_if = "crate::hash::FileHashes::is_empty")]
    pub file_hashes: crate::hash::FileHashes,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum Line {
    Header(Header),
    Part(PartRecord),
    Completed(CompletedRecord),
}

/// A manifest as read back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Loaded {
    /// The header.
    pub header: Header,
    /// Every intact part record, last one wins per part number.
    pub parts: Vec<PartRecord>,
    /// Lines skipped as torn or corrupted.
    pub damaged_lines: usize,
    /// Present if the upload was completed.
    pub completed: Option<CompletedRecord>,
}

fn encode(line: &Line) -> Vec<u8> {
    encode_line(line)
}

fn decode(raw: &[u8]) -> Option<Line> {
    decode_line(raw)
}

/// One journal line, `CRC32C<TAB>JSON\n` (the format of this manifest and of a download's
/// journal).
pub(crate) fn encode_line<T: Serialize>(line: &T) -> Vec<u8> {
    let json = serde_json::to_string(line).expect("journal lines serialize");
    let crc = crc_fast::checksum(crc_fast::CrcAlgorithm::Crc32Iscsi, json.as_bytes());
    format!("{crc:08x}\t{json}\n").into_bytes()
}

/// A line written by [`encode_line`] (without its newline); `None` if torn or damaged.
pub(crate) fn decode_line<T: serde::de::DeserializeOwned>(raw: &[u8]) -> Option<T> {
    let text = std::str::from_utf8(raw).ok()?;
    let (crc, json) = text.split_once('\t')?;
    let want = u64::from_str_radix(crc, 16).ok()?;
    (crc_fast::checksum(crc_fast::CrcAlgorithm::Crc32Iscsi, json.as_bytes()) == want)
        .then(|| serde_json::from_str(json).ok())
        .flatten()
}

/// Reads the manifest at `path`; `Ok(None)` if there is none.
pub(crate) fn load(path: &Path) -> Result<Option<Loaded>, Error> {
    let file = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(manifest_error(path, &e)),
    };
    let mut reader = BufReader::new(file);
    let mut lines = Vec::new();
    loop {
        let mut buf = Vec::new();
        let n = reader
            .read_until(b'\n', &mut buf)
            .map_err(|e| manifest_error(path, &e))?;
        if n == 0 {
            break;
        }
        // A line without its newline was torn by a crash: not a record.
        lines.push(buf.strip_suffix(b"\n").map(<[u8]>::to_vec));
    }
    let mut it = lines.into_iter();
    let header = match it.next().flatten().as_deref().and_then(decode) {
        Some(Line::Header(h)) if h.format == FORMAT => h,
        _ => {
            return Err(Error::ManifestUnreadable {
                path: path.to_owned(),
            });
        }
    };
    let mut parts: Vec<PartRecord> = Vec::new();
    let mut damaged_lines = 0;
    let mut completed = None;
    for raw in it {
        match raw.as_deref().and_then(decode) {
            Some(Line::Part(p)) => parts.push(p),
            Some(Line::Completed(c)) => completed = Some(c),
            Some(Line::Header(_)) | None => damaged_lines += 1,
        }
    }
    // Last record per part number wins (a part sent twice is recorded twice).
    parts.reverse();
    let mut seen = std::collections::HashSet::new();
    parts.retain(|p| seen.insert(p.number));
    parts.sort_by_key(|p| p.number);
    Ok(Some(Loaded {
        header,
        parts,
        damaged_lines,
        completed,
    }))
}

/// An open manifest that part records are appended to.
#[derive(Debug)]
pub(crate) struct Journal {
    path: PathBuf,
    file: Mutex<File>,
}

impl Journal {
    /// Creates a manifest holding only `header`, atomically replacing any previous one.
    pub(crate) fn create(path: &Path, header: &Header) -> Result<Journal, Error> {
        crate::fsx::write_atomic(path, &encode(&Line::Header(header.clone())), 0o600)
            .map_err(|e| manifest_error(path, &e))?;
        Journal::open(path)
    }

    /// Opens an existing manifest for appending.
    pub(crate) fn open(path: &Path) -> Result<Journal, Error> {
        let file =
            crate::fsx::open_regular(path, true, true).map_err(|e| manifest_error(path, &e))?;
        // A crash may have left a torn last line: start the next record on a line of its own.
        let len = file.metadata().map_err(|e| manifest_error(path, &e))?.len();
        let journal = Journal {
            path: path.to_owned(),
            file: Mutex::new(file),
        };
        if len > 0 && !ends_with_newline(path)? {
            journal.write_raw(b"\n")?;
        }
        Ok(journal)
    }

    /// Appends `part` and waits until it is durable. Blocking: call it off the async threads.
    pub(crate) fn record_part(&self, part: &PartRecord) -> Result<(), Error> {
        self.write_raw(&encode(&Line::Part(part.clone())))
    }

    /// Appends the completed object's checksum and ETag.
    pub(crate) fn record_completed(&self, c: &CompletedRecord) -> Result<(), Error> {
        self.write_raw(&encode(&Line::Completed(c.clone())))
    }

    fn write_raw(&self, bytes: &[u8]) -> Result<(), Error> {
        let mut f = self.file.lock().unwrap_or_else(|p| p.into_inner());
        f.write_all(bytes)
            .and_then(|()| f.sync_data())
            .map_err(|e| manifest_error(&self.path, &e))
    }
}

fn ends_with_newline(path: &Path) -> Result<bool, Error> {
    use std::io::{Read as _, Seek as _, SeekFrom};
    let mut f = File::open(path).map_err(|e| manifest_error(path, &e))?;
    let mut last = [0u8; 1];
    f.seek(SeekFrom::End(-1))
        .and_then(|_| f.read_exact(&mut last))
        .map_err(|e| manifest_error(path, &e))?;
    Ok(last[0] == b'\n')
}

/// Holds an exclusive lock beside a manifest for as long as it lives: two tally processes never
/// drive the same upload. The OS releases it when the process dies, however it dies.
#[derive(Debug)]
pub(crate) struct Lock {
    _file: File,
}

impl Lock {
    /// Takes the lock for the manifest at `manifest`, or says who holds it.
    pub(crate) fn acquire(manifest: &Path) -> Result<Lock, Error> {
        let path = manifest.with_extension("lock");
        let file = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .custom_flags(rustix::fs::OFlags::NOFOLLOW.bits() as i32)
            .open(&path)
            .map_err(|e| manifest_error(&path, &e))?;
        match file.try_lock() {
            Ok(()) => Ok(Lock { _file: file }),
            Err(std::fs::TryLockError::WouldBlock) => Err(Error::Busy { lock: path }),
            Err(std::fs::TryLockError::Error(e)) => Err(manifest_error(&path, &e)),
        }
    }
}

/// The default manifest path for uploading `source` (absolute) to `endpoint`/`bucket`/`key`.
pub(crate) fn default_path(
    dir: &Path,
    source: &Path,
    endpoint: &str,
    bucket: &str,
    key: &str,
) -> PathBuf {
    let mut h = Sha256::new();
    for part in [
        source.as_os_str().as_encoded_bytes(),
        endpoint.as_bytes(),
        bucket.as_bytes(),
        key.as_bytes(),
    ] {
        h.update((part.len() as u64).to_le_bytes());
        h.update(part);
    }
    let name = crate::vocab::hex(&h.finalize()[..16]);
    dir.join(format!("{name}.manifest"))
}

/// The link in the state directory that lets `tally uploads` and `tally abort` find a manifest kept
/// elsewhere (`--manifest PATH`).
pub(crate) fn link_path(dir: &Path, manifest: &Path) -> PathBuf {
    let digest = Sha256::digest(manifest.as_os_str().as_encoded_bytes());
    dir.join(format!(
        "link-{}.manifest",
        crate::vocab::hex(&digest[..16])
    ))
}

/// Records in the state directory `dir` where a manifest outside it lives (a symlink).
pub(crate) fn register(dir: &Path, manifest: &Path) -> Result<(), Error> {
    let target = std::path::absolute(manifest).map_err(|e| manifest_error(manifest, &e))?;
    if target.parent() == Some(dir) {
        return Ok(());
    }
    let link = link_path(dir, &target);
    let _ = std::fs::remove_file(&link);
    std::os::unix::fs::symlink(&target, &link).map_err(|e| manifest_error(&link, &e))
}

/// Removes a manifest and its link in the state directory, if any.
pub(crate) fn remove(dir: Option<&Path>, manifest: &Path) {
    let _ = std::fs::remove_file(manifest);
    let _ = std::fs::remove_file(manifest.with_extension("lock"));
    if let (Some(dir), Ok(abs)) = (dir, std::path::absolute(manifest)) {
        let _ = std::fs::remove_file(link_path(dir, &abs));
    }
}

/// Every manifest in `dir` (or linked from it) with a readable header, for `tally uploads`:
/// the manifest's real path and its header.
pub(crate) fn all_in(dir: &Path) -> Vec<(PathBuf, Header)> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    entries
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "manifest"))
        .filter_map(|p| {
            let real = std::fs::canonicalize(&p).ok()?;
            load(&real).ok().flatten().map(|l| (real, l.header))
        })
        .collect()
}

/// Manifests in `dir` (or linked from it) whose header cannot be read but whose first line still
/// holds `"upload_id":ID` (a header damaged elsewhere): what `tally abort --upload-id ID` removes
/// besides the manifests it can read.
pub(crate) fn unreadable_naming(dir: &Path, id: &str) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let needle = format!("\"upload_id\":{}", serde_json::Value::from(id));
    entries
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "manifest"))
        .filter_map(|p| std::fs::canonicalize(&p).ok())
        .filter(|real| matches!(load(real), Err(Error::ManifestUnreadable { .. })))
        .filter(|real| {
            let Ok(f) = crate::fsx::open_regular(real, false, false) else {
                return false;
            };
            let mut first = Vec::new();
            let _ = BufReader::new(f)
                .take(1 << 20)
                .read_until(b'\n', &mut first);
            String::from_utf8_lossy(&first).contains(&needle)
        })
        .collect()
}

/// The cheap fingerprint stored in the header: SHA-256 of the length and 1 MiB at the start,
/// middle and end.
pub(crate) fn fingerprint(data: &[u8]) -> String {
    const SAMPLE: usize = 1 << 20;
    let mut h = Sha256::new();
    h.update((data.len() as u64).to_le_bytes());
    let mid = data.len() / 2;
    for start in [
        0,
        mid.saturating_sub(SAMPLE / 2),
        data.len().saturating_sub(SAMPLE),
    ] {
        h.update(&data[start..(start + SAMPLE).min(data.len())]);
    }
    crate::vocab::hex(&h.finalize())
}

fn manifest_error(path: &Path, e: &std::io::Error) -> Error {
    Error::Manifest {
        path: path.to_owned(),
        why: e.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt as _;

    fn header() -> Header {
        Header {
            format: FORMAT,
            source: "/media/card/A001.mov".into(),
            size: 1 << 30,
            mtime_ns: 1_700_000_000_123_456_789,
            fingerprint: "ab".repeat(32),
            bucket: "bkt".into(),
            key: "A001.mov".into(),
            endpoint: "aws".into(),
            upload_id: "upload-1".into(),
            part_size: 100 << 20,
            checksum: crate::vocab::ChecksumAlgorithm::Sha256,
            object: crate::vocab::ObjectSettings::default(),
        }
    }

    fn part(n: u32) -> PartRecord {
        PartRecord {
            number: n,
            offset: u64::from(n - 1) * 10,
            len: 10,
            checksum: format!("c{n}"),
            md5: format!("m{n}"),
            etag: crate::vocab::ETag::new(&format!("e{n}")),
            sent_twice: n == 2,
        }
    }

    #[test]
    fn round_trip_and_private() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.manifest");
        let j = Journal::create(&path, &header()).unwrap();
        for n in [1, 3, 2] {
            j.record_part(&part(n)).unwrap();
        }
        let l = load(&path).unwrap().unwrap();
        assert_eq!(l.header, header());
        assert_eq!(l.parts, vec![part(1), part(2), part(3)]);
        assert_eq!(l.damaged_lines, 0);
        // Written only when true, so a manifest of an older tally (no such field) reads as false.
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(text.matches("\"sent_twice\":true").count(), 1, "{text}");
        assert!(!text.contains("\"sent_twice\":false"), "{text}");
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert!(load(&dir.path().join("none")).unwrap().is_none());
    }

    #[test]
    fn a_torn_or_corrupted_record_is_skipped_and_appending_continues() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.manifest");
        let j = Journal::create(&path, &header()).unwrap();
        for n in 1..=4 {
            j.record_part(&part(n)).unwrap();
        }
        drop(j);
        let mut bytes = std::fs::read(&path).unwrap();
        // Corrupt one byte of record 2, and tear record 4 in the middle.
        let lines: Vec<usize> = bytes
            .iter()
            .enumerate()
            .filter(|(_, b)| **b == b'\n')
            .map(|(i, _)| i)
            .collect();
        bytes[lines[1] + 20] ^= 0x01;
        bytes.truncate(lines[3] + 15);
        std::fs::write(&path, &bytes).unwrap();
        let l = load(&path).unwrap().unwrap();
        assert_eq!(l.parts, vec![part(1), part(3)]);
        assert_eq!(l.damaged_lines, 2);
        // The next record lands on its own line and is read back.
        Journal::open(&path).unwrap().record_part(&part(5)).unwrap();
        let l = load(&path).unwrap().unwrap();
        assert_eq!(l.parts, vec![part(1), part(3), part(5)]);
    }

    #[test]
    fn a_damaged_header_is_refused_with_advice() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.manifest");
        std::fs::write(&path, "garbage\n").unwrap();
        let e = load(&path).unwrap_err().to_string();
        assert!(e.contains("--restart"), "{e}");
    }

    #[test]
    fn the_lock_is_exclusive() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.manifest");
        let held = Lock::acquire(&path).unwrap();
        let e = Lock::acquire(&path).unwrap_err().to_string();
        assert!(e.contains("another tally"), "{e}");
        drop(held);
        Lock::acquire(&path).unwrap();
    }

    #[test]
    fn default_paths_differ_per_destination() {
        let d = Path::new("/state");
        let a = default_path(d, "/f".as_ref(), "aws", "b", "k");
        assert_ne!(a, default_path(d, "/f".as_ref(), "aws", "b", "k2"));
        assert_ne!(a, default_path(d, "/g".as_ref(), "aws", "b", "k"));
        assert_ne!(
            a,
            default_path(d, "/f".as_ref(), "http://127.0.0.1:1", "b", "k")
        );
        assert_eq!(a, default_path(d, "/f".as_ref(), "aws", "b", "k"));
    }
}
