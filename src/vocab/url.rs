//! Where an object is: `s3://BUCKET/KEY`, and whether a URL names a prefix.

use serde::Serialize;

use super::Invalid;

/// An object's location: `s3://BUCKET/KEY`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ObjectUrl {
    /// Bucket name.
    pub bucket: String,
    /// Object key (may end in `/` before the file name is appended).
    pub key: String,
}

impl ObjectUrl {
    /// Parses `s3://BUCKET/KEY`. An empty key or one ending in `/` is allowed here; see
    /// [`ObjectUrl::for_file`].
    pub fn parse(text: &str) -> Result<ObjectUrl, Invalid> {
        let bad = |why: &str| {
            Invalid(format!(
                "'{text}' is not an S3 URL: {why}; write it as s3://BUCKET/KEY"
            ))
        };
        let rest = text
            .strip_prefix("s3://")
            .ok_or_else(|| bad("it must start with s3://"))?;
        let (bucket, key) = rest.split_once('/').unwrap_or((rest, ""));
        if bucket.is_empty() {
            return Err(bad("the bucket name is missing"));
        }
        let valid = bucket.len() >= 3
            && bucket.len() <= 63
            && bucket
                .bytes()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'.' || c == b'-')
            && bucket.as_bytes()[0].is_ascii_alphanumeric()
            && bucket.as_bytes()[bucket.len() - 1].is_ascii_alphanumeric();
        if !valid {
            return Err(bad(&format!(
                "'{bucket}' is not a valid bucket name (3-63 lower-case letters, digits, dots, hyphens)"
            )));
        }
        if key.len() > 1024 {
            return Err(bad("the key is longer than S3's 1,024-byte limit"));
        }
        Ok(ObjectUrl {
            bucket: bucket.to_owned(),
            key: key.to_owned(),
        })
    }

    /// The destination for uploading `file`: as given, or with the file name appended when the key
    /// is empty or ends in `/` (as `aws s3 cp` does).
    pub fn for_file(&self, file: &std::path::Path) -> Result<ObjectUrl, Invalid> {
        if !is_prefix(&self.key) {
            return Ok(self.clone());
        }
        // `.`, `..` and `./` have no name of their own: the folder they resolve to gives it.
        let resolved = file
            .file_name()
            .is_none()
            .then(|| std::fs::canonicalize(file).ok())
            .flatten();
        let named = resolved.as_deref().unwrap_or(file);
        let name = named.file_name().and_then(|n| n.to_str()).ok_or_else(|| {
            Invalid(format!(
                "cannot name the object after '{}': give the full key, s3://{}/KEY",
                file.display(),
                self.bucket
            ))
        })?;
        let key = format!("{}{name}", self.key);
        if key.len() > 1024 {
            return Err(Invalid(
                "the key is longer than S3's 1,024-byte limit: choose a shorter one".into(),
            ));
        }
        Ok(ObjectUrl {
            bucket: self.bucket.clone(),
            key,
        })
    }
}

impl std::fmt::Display for ObjectUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "s3://{}/{}", self.bucket, self.key)
    }
}

/// Whether `key` names a prefix (a "folder") rather than one object: empty, or ending in `/`.
pub fn is_prefix(key: &str) -> bool {
    key.is_empty() || key.ends_with('/')
}
