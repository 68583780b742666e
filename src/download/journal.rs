//! The journal of a download: which parts of `DEST.tally-partial` hold bytes that were written,
//! synced and checked, with their hashes, so that the same command resumes after a crash.
//!
//! Same line format as the upload manifest (`CRC32C<TAB>JSON`, see [`crate::manifest`]): a header
//! that pins the object (bucket, key, endpoint, ETag, version, size, part layout, what is hashed),
//! written atomically; then one line per part, appended and `fdatasync`ed only after the part's
//! bytes were written to the partial file and synced. A torn last line fails its CRC and is
//! skipped: that part is fetched again.

use std::fs::File;
use std::io::{BufRead as _, BufReader, Write as _};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use serde::{Deserialize, Serialize};

use crate::hash::RangeHash;
use crate::manifest::{decode_line, encode_line};
use crate::vocab::{ChecksumAlgorithm, Digest};

use super::dest::io_error;
use crate::error::Error;

/// Version of the journal format; a journal of another version is not resumed.
pub(crate) const FORMAT: u32 = 1;

/// What the partial file is a copy of: a resume requires every field to be the same now.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Header {
    /// [`FORMAT`].
    pub format: u32,
    /// The endpoint ("aws" for AWS's own).
    pub endpoint: String,
    /// Bucket.
    pub bucket: String,
    /// Key.
    pub key: String,
    /// The object's ETag.
    pub etag: Option<String>,
    /// Its version id, where the bucket is versioned.
    pub version_id: Option<String>,
    /// Size in bytes.
    pub size: u64,
    /// Part sizes, in order.
    pub layout: Vec<u64>,
    /// The checksum each part is hashed with.
    pub checksum: Option<ChecksumAlgorithm>,
    /// Whether each part's MD5 is computed.
    pub md5: bool,
}

/// One part written, synced and checked.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct PartLine {
    /// Part number (from 1).
    pub number: u32,
    /// First byte.
    pub offset: u64,
    /// Length.
    pub len: u64,
    /// Its checksum, base64.
    pub checksum: Option<String>,
    /// Its MD5, hex.
    pub md5: Option<String>,
    /// Whether it was checked on its own (against a part checksum), not only as part of the
    /// whole object.
    pub checked_alone: bool,
}

impl PartLine {
    /// The line for part `number` over `range`, hashed to `h`.
    pub(crate) fn new(number: u32, offset: u64, h: &RangeHash, checked_alone: bool) -> PartLine {
        PartLine {
            number,
            offset,
            len: h.len,
            checksum: h.checksum.as_ref().map(Digest::base64),
            md5: h.md5.map(|m| crate::vocab::hex(&m)),
            checked_alone,
        }
    }

    /// The hashes recorded, as if the part had just been hashed; `None` if a value is damaged.
    pub(crate) fn hash(&self) -> Option<RangeHash> {
        let checksum = match &self.checksum {
            Some(b) => Some(Digest::from_bytes(B64.decode(b).ok()?)),
            None => None,
        };
        let md5 = match &self.md5 {
            Some(h) => Some(unhex16(h)?),
            None => None,
        };
        Some(RangeHash {
            checksum,
            md5,
            len: self.len,
        })
    }
}

fn unhex16(s: &str) -> Option<[u8; 16]> {
    let mut out = [0u8; 16];
    if s.len() != 32 {
        return None;
    }
    for (i, b) in out.iter_mut().enumerate() {
        *b = u8::from_str_radix(s.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum Line {
    Header(Header),
    Part(PartLine),
}

/// Reads the journal at `path`: its header and every intact part line (last one wins per part);
/// `Ok(None)` if there is none or it has no readable header.
pub(crate) fn load(path: &Path) -> Result<Option<(Header, Vec<PartLine>)>, Error> {
    // Never read through a link; anything but a regular file is no journal (it is replaced).
    let file = match crate::fsx::open_regular(path, false, false) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) if e.kind() == std::io::ErrorKind::InvalidInput => return Ok(None),
        Err(e) => return Err(io_error(path, &e)),
    };
    let mut reader = BufReader::new(file);
    let mut header = None;
    let mut parts: Vec<PartLine> = Vec::new();
    loop {
        let mut buf = Vec::new();
        let n = reader
            .read_until(b'\n', &mut buf)
            .map_err(|e| io_error(path, &e))?;
        if n == 0 {
            break;
        }
        let Some(raw) = buf.strip_suffix(b"\n") else {
            break; // torn by a crash
        };
        match (decode_line::<Line>(raw), &header) {
            (Some(Line::Header(h)), None) => header = Some(h),
            (Some(Line::Part(p)), Some(_)) => parts.push(p),
            (_, None) => return Ok(None),
            _ => {}
        }
    }
    let Some(header) = header else {
        return Ok(None);
    };
    parts.reverse();
    let mut seen = std::collections::HashSet::new();
    parts.retain(|p| seen.insert(p.number));
    parts.sort_by_key(|p| p.number);
    Ok(Some((header, parts)))
}

/// An open journal that part lines are appended to.
#[derive(Debug)]
pub(crate) struct Journal {
    path: PathBuf,
    file: Mutex<File>,
}

impl Journal {
    /// Creates a journal holding only `header` (whatever was at `path` is removed first, a link
    /// never followed; the file is created exclusively). A crash before the header is durable
    /// leaves a journal without a readable header: the next run starts over. Blocking.
    pub(crate) fn create(path: &Path, header: &Header) -> Result<Journal, Error> {
        let _ = std::fs::remove_file(path);
        let mut file = crate::fsx::create_new(path, 0o600).map_err(|e| io_error(path, &e))?;
        file.write_all(&encode_line(&Line::Header(header.clone())))
            .and_then(|()| file.sync_all())
            .map_err(|e| io_error(path, &e))?;
        let _ = crate::fsx::sync_dir(crate::fsx::parent_dir(path));
        Ok(Journal {
            path: path.to_owned(),
            file: Mutex::new(file),
        })
    }

    /// Opens an existing journal for appending (a torn last line is ended first), never through
    /// a link. Blocking.
    pub(crate) fn open(path: &Path) -> Result<Journal, Error> {
        use std::os::unix::fs::FileExt as _;
        let mut file =
            crate::fsx::open_regular(path, true, true).map_err(|e| io_error(path, &e))?;
        let len = file.metadata().map_err(|e| io_error(path, &e))?.len();
        let mut last = [0u8; 1];
        if len > 0 {
            file.read_exact_at(&mut last, len - 1)
                .map_err(|e| io_error(path, &e))?;
            if last[0] != b'\n' {
                file.write_all(b"\n")
                    .and_then(|()| file.sync_data())
                    .map_err(|e| io_error(path, &e))?;
            }
        }
        Ok(Journal {
            path: path.to_owned(),
            file: Mutex::new(file),
        })
    }

    /// Appends `part` and waits until it is durable. Blocking.
    pub(crate) fn record(&self, part: &PartLine) -> Result<(), Error> {
        let mut f = self.file.lock().unwrap_or_else(|p| p.into_inner());
        f.write_all(&encode_line(&Line::Part(part.clone())))
            .and_then(|()| f.sync_data())
            .map_err(|e| io_error(&self.path, &e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hash;

    fn header() -> Header {
        Header {
            format: FORMAT,
            endpoint: "fake".into(),
            bucket: "b".into(),
            key: "k".into(),
            etag: Some("abc-2".into()),
            version_id: None,
            size: 30,
            layout: vec![20, 10],
            checksum: Some(ChecksumAlgorithm::Sha256),
            md5: true,
        }
    }

    #[test]
    fn parts_round_trip_and_a_torn_line_is_skipped() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("j");
        let j = Journal::create(&p, &header()).unwrap();
        let h1 = hash::hash_range(Some(ChecksumAlgorithm::Sha256), true, &[1u8; 20]);
        let h2 = hash::hash_range(Some(ChecksumAlgorithm::Sha256), true, &[2u8; 10]);
        j.record(&PartLine::new(1, 0, &h1, true)).unwrap();
        j.record(&PartLine::new(2, 20, &h2, false)).unwrap();
        drop(j);
        // A crash in the middle of a third line.
        let mut raw = std::fs::read(&p).unwrap();
        let whole = raw.len();
        raw.extend_from_slice(b"0000abcd\t{\"type\":\"part\",\"num");
        std::fs::write(&p, &raw).unwrap();
        let (h, parts) = load(&p).unwrap().unwrap();
        assert_eq!(h, header());
        assert_eq!(parts.len(), 2);
        assert_eq!(parts[0].hash().unwrap(), h1, "hashes restored exactly");
        assert_eq!(parts[1].hash().unwrap(), h2);
        assert!(parts[0].checked_alone && !parts[1].checked_alone);
        // Reopened: the torn line is ended, and a new record is read back.
        let j = Journal::open(&p).unwrap();
        j.record(&PartLine::new(2, 20, &h2, true)).unwrap();
        let (_, parts) = load(&p).unwrap().unwrap();
        assert_eq!(parts.len(), 2, "the last record of part 2 wins");
        assert!(parts[1].checked_alone);
        assert!(std::fs::read(&p).unwrap().len() > whole);
        // A damaged part line (one flipped character) fails its CRC and is not trusted.
        let text = String::from_utf8(std::fs::read(&p).unwrap()).unwrap();
        let damaged = text.replacen("\"number\":1", "\"number\":7", 1);
        std::fs::write(&p, damaged).unwrap();
        let (_, parts) = load(&p).unwrap().unwrap();
        assert_eq!(parts.iter().map(|p| p.number).collect::<Vec<_>>(), vec![2]);
        assert!(load(&dir.path().join("none")).unwrap().is_none());
    }
}
