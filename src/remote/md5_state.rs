//! The saved state of an unfinished remote MD5, as a value: which object (bucket, key, ETag,
//! version, size), how far (offset), and the MD5 hasher's internal state after those bytes.
//!
//! [`SavedState`] is plain data (about 300 bytes of JSON): `tally md5 --state FILE` keeps it in a
//! file ([`load`] / [`save`], written atomically), and a relay (a Lambda / Step Functions loop)
//! can pass it along in its JSON payload instead. The hasher state uses md-5's `hazmat`
//! serialization, whose format belongs to one exact version of the crate: a state names the
//! encoding that wrote it ([`HASHER`]) and is refused by any other.

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
pub const HASHER: &str = "md-5 0.11.0 SerializableState";
/// The layout of [`SavedState`].
const FORMAT: u32 = 1;

/// Where an unfinished MD5 stands (see the module docs).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SavedState {
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
}

/// Why a saved state cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BadState {
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
}

impl SavedState {
    /// A state at offset 0 for the object `obj` as `head` describes it.
    pub fn new(obj: &ObjectUrl, head: &HeadInfo) -> SavedState {
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
        }
    }

    /// Records `hasher` as the state after `offset` bytes.
    pub fn capture(&mut self, offset: u64, hasher: &Md5) {
        self.offset = offset;
        self.state = B64.encode(hasher.serialize());
    }

    /// The hasher after `offset` bytes (a fresh one at offset 0).
    pub fn restore(&self) -> Result<Md5, BadState> {
        if self.format != FORMAT {
            return Err(BadState::OtherFormat(self.format));
        }
        if self.hasher != HASHER {
            return Err(BadState::OtherHasher(self.hasher.clone()));
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
        let st = SerializedState::<Md5>::try_from(&raw[..]).map_err(|_| BadState::Invalid)?;
        Md5::deserialize(&st).map_err(|_| BadState::Invalid)
    }

    /// Whether this state was saved for `obj`'s bucket and key.
    fn same_key(&self, obj: &ObjectUrl) -> bool {
        self.bucket == obj.bucket && self.key == obj.key
    }

    /// The hasher to continue with, if this state is for `obj` as `now` describes it (same ETag,
    /// version and size). `origin` names where the state came from, for the errors.
    pub fn resume_for(&self, obj: &ObjectUrl, now: &HeadInfo, origin: &Path) -> Result<Md5, Error> {
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
pub fn load(path: &Path) -> Result<Option<SavedState>, Error> {
    let bad = |why: String| Error::StateFile {
        path: path.to_owned(),
        why,
    };
    match std::fs::read(path) {
        Ok(b) => serde_json::from_slice(&b)
            .map(Some)
            .map_err(|e| bad(format!("unreadable ({e})"))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(bad(e.to_string())),
    }
}

/// Writes the state atomically (temporary file, fsync, rename, fsync the directory): a crash
/// leaves the old state or the new one.
pub fn save(path: &Path, s: &SavedState) -> Result<(), Error> {
    let bytes = serde_json::to_vec_pretty(s).expect("a state serializes");
    crate::fsx::write_atomic(path, &bytes, 0o600).map_err(|e| Error::StateFile {
        path: path.to_owned(),
        why: e.to_string(),
    })
}

/// Removes the state file (once the MD5 is finished); a missing file is fine.
pub fn remove(path: &Path) {
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
        };
        s.capture(offset, hasher);
        s
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
