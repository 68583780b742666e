//! The saved state of an unfinished remote MD5, as a value: which object (bucket, key, ETag,
//! version, size), how far (offset), and the MD5 hasher's internal state after those bytes.
//!
//! [`SavedState`] is plain data (about 300 bytes of JSON): `tally md5 --state FILE` keeps it in a
//! file ([`load`] / [`save`], written atomically), and a relay (a Lambda / Step Functions loop)
//! can pass it along in its JSON payload instead. The hasher state uses md-5's `hazmat`
//! serialization, whose format belongs to one exact version of the crate: a state names the
//! encoding that wrote it ([`HASHER`]) and is refused by any other.
//!
//! A state is untrusted input (a file anyone may have edited, or a payload that travelled): it
//! carries `check`, a SHA-256 over every other field, and the byte count inside the hasher state
//! must equal `offset`. A state that fails either is refused with one line (remove the file to
//! start over): an edited offset or one flipped bit of the hasher state never gives a wrong MD5.

use std::path::Path;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use md5::Md5;
use md5::digest::common::hazmat::{SerializableState, SerializedState};
use serde::{Deserialize, Serialize};

use crate::error::{Changed, Error};
use crate::s3::HeadInfo;
use crate::vocab::ObjectUrl;

/// Names the hasher-state encoding: the exact md-5 version whose `SerializableState` wrote it.
pub(crate) const HASHER: &str = "md-5 0.11.0 SerializableState";
/// The layout of [`SavedState`] (2: with `check`).
const FORMAT: u32 = 2;

/// Where an unfinished MD5 stands (see the module docs).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct SavedState {
    /// The layout of this record (1).
    pub format: u32,
    /// The hasher-state encoding ([`HASHER`]).
    pub hasher: String,
    /// Bucket.
    pub bucket: String,
    /// Key.
    pub key: String,
    /// The object's ETag when hashing began.
    pub etag: String,
    /// Its version id, on versioned buckets.
    pub version_id: Option<String>,
    /// Its size.
    pub size: u64,
    /// Bytes hashed.
    pub offset: u64,
    /// The MD5 hasher's internal state after `offset` bytes, base64 (empty at offset 0).
    pub state: String,
    /// SHA-256 (hex) over every other field ([`SavedState::seal`]); a state whose fields do not
    /// give it is refused.
    #[serde(default)]
    pub check: String,
}

/// Why a saved state cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum BadState {
    /// Written by another hasher encoding.
    #[error("saved by another hasher ({0}), this tally reads {HASHER}")]
    OtherHasher(String),
    /// Another layout of the record.
    #[error("format {0}, this tally reads format {FORMAT}")]
    OtherFormat(u32),
    /// The hasher state is not base64.
    #[error("hasher state is not base64")]
    NotBase64,
    /// The hasher state has the wrong length or content.
    #[error("hasher state is invalid")]
    Invalid,
    /// The offset is past the object's end.
    #[error("offset {offset} is past the object's {size} bytes")]
    PastEnd {
        /// The offset saved.
        offset: u64,
        /// The size saved.
        size: u64,
    },
    /// Saved for another object.
    #[error("it belongs to s3://{0}")]
    OtherObject(String),
    /// The record's checksum does not match its fields (edited or damaged).
    #[error("its checksum does not match its content (edited or damaged)")]
    Damaged,
    /// The hasher state has seen another number of bytes than the offset says.
    #[error(
        "its hasher has seen {seen} bytes, not the {offset} its offset says (edited or damaged)"
    )]
    WrongCount {
        /// Bytes counted inside the hasher state.
        seen: u64,
        /// The offset saved.
        offset: u64,
    },
}

/// The bytes an md-5 0.11 hasher state has seen: the state is 16 bytes of MD5 words, the count of
/// 64-byte blocks compressed (u64, little-endian), the count of bytes buffered (one byte), then
/// the buffer.
fn bytes_seen(raw: &[u8]) -> Option<u64> {
    let blocks = u64::from_le_bytes(raw.get(16..24)?.try_into().ok()?);
    let buffered = u64::from(*raw.get(24)?);
    blocks.checked_mul(64)?.checked_add(buffered)
}

impl SavedState {
    /// A state at offset 0 for the object `obj` as `head` describes it.
    pub(crate) fn new(obj: &ObjectUrl, head: &HeadInfo) -> SavedState {
        SavedState {
            format: FORMAT,
            hasher: HASHER.into(),
            bucket: obj.bucket.clone(),
            key: obj.key.clone(),
            etag: head
                .etag
                .as_ref()
                .map(ToString::to_string)
                .unwrap_or_default(),
            version_id: head.version_id.clone(),
            size: head.size,
            offset: 0,
            state: String::new(),
            check: String::new(),
        }
        .sealed()
    }

    /// The SHA-256 (hex) over every field but `check`, each length-prefixed.
    fn digest(&self) -> String {
        use sha2::Digest as _;
        let mut h = sha2::Sha256::new();
        let mut field = |b: &[u8]| {
            h.update((b.len() as u64).to_le_bytes());
            h.update(b);
        };
        field(&self.format.to_le_bytes());
        field(self.hasher.as_bytes());
        field(self.bucket.as_bytes());
        field(self.key.as_bytes());
        field(self.etag.as_bytes());
        match &self.version_id {
            Some(v) => field(&[&[1u8][..], v.as_bytes()].concat()),
            None => field(&[0u8]),
        }
        field(&self.size.to_le_bytes());
        field(&self.offset.to_le_bytes());
        field(self.state.as_bytes());
        crate::vocab::hex(&h.finalize())
    }

    /// This state with its `check` computed.
    fn sealed(mut self) -> SavedState {
        self.seal();
        self
    }

    /// Computes `check` for the fields as they are: for a state assembled from a document that
    /// carries no checksum of its own (the relay's); [`SavedState::restore`] still checks the
    /// hasher's byte count against `offset`.
    pub(crate) fn seal(&mut self) {
        self.check = self.digest();
    }

    /// Records `hasher` as the state after `offset` bytes.
    pub(crate) fn capture(&mut self, offset: u64, hasher: &Md5) {
        self.offset = offset;
        self.state = B64.encode(hasher.serialize());
        self.check = self.digest();
    }

    /// The hasher after `offset` bytes (a fresh one at offset 0).
    pub(crate) fn restore(&self) -> Result<Md5, BadState> {
        if self.format != FORMAT {
            return Err(BadState::OtherFormat(self.format));
        }
        if self.hasher != HASHER {
            return Err(BadState::OtherHasher(self.hasher.clone()));
        }
        if self.check != self.digest() {
            return Err(BadState::Damaged);
        }
        if self.offset > self.size {
            return Err(BadState::PastEnd {
                offset: self.offset,
                size: self.size,
            });
        }
        if self.offset == 0 && self.state.is_empty() {
            return Ok(<Md5 as md5::digest::Digest>::new());
        }
        let raw = B64.decode(&self.state).map_err(|_| BadState::NotBase64)?;
        let seen = bytes_seen(&raw).ok_or(BadState::Invalid)?;
        if seen != self.offset {
            return Err(BadState::WrongCount {
                seen,
                offset: self.offset,
            });
        }
        let st = SerializedState::<Md5>::try_from(&raw[..]).map_err(|_| BadState::Invalid)?;
        Md5::deserialize(&st).map_err(|_| BadState::Invalid)
    }

    /// Whether this state was saved for `obj`'s bucket and key.
    fn same_key(&self, obj: &ObjectUrl) -> bool {
        self.bucket == obj.bucket && self.key == obj.key
    }

    /// The hasher to continue with, if this state is for `obj` as `now` describes it (same ETag,
    /// version and size). `origin` names where the state came from, for the errors.
    pub(crate) fn resume_for(
        &self,
        obj: &ObjectUrl,
        now: &HeadInfo,
        origin: &Path,
    ) -> Result<Md5, Error> {
        let bad = |why: BadState| Error::StateFile {
            path: origin.to_owned(),
            why: why.to_string(),
        };
        if !self.same_key(obj) {
            return Err(bad(BadState::OtherObject(format!(
                "{}/{}",
                self.bucket, self.key
            ))));
        }
        let etag = now
            .etag
            .as_ref()
            .map(ToString::to_string)
            .unwrap_or_default();
        if self.etag != etag || self.version_id != now.version_id || self.size != now.size {
            return Err(Error::ObjectChanged {
                url: format!("s3://{}/{}", obj.bucket, obj.key),
                then: Some(self.etag.clone()),
                now: Some(etag),
                when: Changed::SinceStateSaved {
                    state: origin.to_owned(),
                },
            });
        }
        self.restore().map_err(bad)
    }
}

/// Reads the state file at `path`; `None` if there is none.
pub(crate) fn load(path: &Path) -> Result<Option<SavedState>, Error> {
    let bad = |why: String| Error::StateFile {
        path: path.to_owned(),
        why,
    };
    // Never read through a link; a device or a pipe is not a state file either.
    let read = crate::fsx::open_regular(path, false, false).and_then(|mut f| {
        use std::io::Read as _;
        let mut b = Vec::new();
        // A state is a few hundred bytes: anything far larger is not one.
        (&mut f).take(1 << 20).read_to_end(&mut b).map(|_| b)
    });
    match read {
        Ok(b) => serde_json::from_slice(&b)
            .map(Some)
            .map_err(|e| bad(format!("unreadable ({e})"))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(bad(e.to_string())),
    }
}

/// Writes the state atomically (temporary file, fsync, rename, fsync the directory): a crash
/// leaves the old state or the new one.
pub(crate) fn save(path: &Path, s: &SavedState) -> Result<(), Error> {
    let bytes = serde_json::to_vec_pretty(s).expect("a state serializes");
    crate::fsx::write_atomic(path, &bytes, 0o600).map_err(|e| Error::StateFile {
        path: path.to_owned(),
        why: e.to_string(),
    })
}

/// Removes the state file (once the MD5 is finished); a missing file is fine.
pub(crate) fn remove(path: &Path) {
    let _ = std::fs::remove_file(path);
}

#[cfg(test)]
mod tests {
    use md5::digest::Digest as _;

    use super::*;

    fn state(offset: u64, hasher: &Md5, size: u64) -> SavedState {
        let mut s = SavedState {
            format: FORMAT,
            hasher: HASHER.into(),
            bucket: "bkt".into(),
            key: "k".into(),
            etag: "e".into(),
            version_id: None,
            size,
            offset: 0,
            state: String::new(),
            check: String::new(),
        };
        s.capture(offset, hasher);
        s
    }

    #[test]
    fn an_edited_or_damaged_state_is_refused() {
        let data = vec![7u8; 10_000];
        let mut h = Md5::new();
        h.update(&data[..5_000]);
        let good = state(5_000, &h, 10_000);
        assert!(good.restore().is_ok());
        // The offset moved (as if 8 MiB were added by hand): the checksum fails.
        let mut s = good.clone();
        s.offset += 1;
        assert_eq!(s.restore().unwrap_err(), BadState::Damaged);
        // The offset moved and the checksum recomputed: the hasher's own count disagrees.
        let mut s = good.clone();
        s.offset = 6_000;
        s.check = s.digest();
        assert!(matches!(
            s.restore(),
            Err(BadState::WrongCount {
                seen: 5_000,
                offset: 6_000
            })
        ));
        // One bit of the hasher state flipped, at every position: refused every time.
        let raw = B64.decode(&good.state).unwrap();
        for bit in 0..raw.len() * 8 {
            let mut r = raw.clone();
            r[bit / 8] ^= 1 << (bit % 8);
            let mut s = good.clone();
            s.state = B64.encode(&r);
            assert!(s.restore().is_err(), "bit {bit} flipped was accepted");
        }
        // Through JSON with `check` removed (a hand-written state): refused.
        let mut v = serde_json::to_value(&good).unwrap();
        v.as_object_mut().unwrap().remove("check");
        let s: SavedState = serde_json::from_value(v).unwrap();
        assert_eq!(s.restore().unwrap_err(), BadState::Damaged);
    }

    #[test]
    fn hasher_state_resumes_at_any_offset() {
        let data: Vec<u8> = (0..100_003u32).map(|i| (i % 251) as u8).collect();
        let want = Md5::digest(&data);
        for cut in [0, 1, 63, 64, 65, 4096, 99_999] {
            let mut h = Md5::new();
            h.update(&data[..cut]);
            let saved = state(cut as u64, &h, data.len() as u64);
            // Through JSON, as a file or a relay's payload carries it.
            let text = serde_json::to_string(&saved).unwrap();
            let back: SavedState = serde_json::from_str(&text).unwrap();
            let mut h2 = back.restore().unwrap();
            h2.update(&data[cut..]);
            assert_eq!(h2.finalize(), want, "cut at {cut}");
        }
    }

    #[test]
    fn a_state_from_another_hasher_or_object_is_refused() {
        let mut s = state(0, &Md5::new(), 1);
        s.hasher = "md-5 9.9".into();
        assert!(matches!(s.restore(), Err(BadState::OtherHasher(_))));
        let s = state(5, &Md5::new(), 1);
        assert!(matches!(s.restore(), Err(BadState::PastEnd { .. })));
        let s = state(0, &Md5::new(), 10);
        let head = HeadInfo {
            size: 10,
            etag: Some("e".into()),
            ..HeadInfo::default()
        };
        let other = ObjectUrl::parse("s3://bkt/other").unwrap();
        let e = s.resume_for(&other, &head, Path::new("st")).unwrap_err();
        assert!(e.to_string().contains("belongs to s3://bkt/k"), "{e}");
        let same = ObjectUrl::parse("s3://bkt/k").unwrap();
        assert!(s.resume_for(&same, &head, Path::new("st")).is_ok());
        let replaced = HeadInfo {
            etag: Some("f".into()),
            ..head
        };
        let e = s.resume_for(&same, &replaced, Path::new("st")).unwrap_err();
        assert!(
            matches!(
                &e,
                Error::ObjectChanged {
                    when: Changed::SinceStateSaved { .. },
                    ..
                }
            ),
            "{e}"
        );
        assert!(
            e.to_string().contains("changed since the state was saved"),
            "{e}"
        );
    }

    #[test]
    fn a_saved_file_loads_back_equal() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.json");
        assert_eq!(load(&path).unwrap(), None);
        let mut h = Md5::new();
        h.update(b"some bytes");
        let s = state(10, &h, 20);
        save(&path, &s).unwrap();
        assert_eq!(load(&path).unwrap(), Some(s));
        std::fs::write(&path, b"not json").unwrap();
        assert!(matches!(load(&path), Err(Error::StateFile { .. })));
    }
}
