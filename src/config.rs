//! Validated settings: what the command line becomes once checked. clap never touches these types.

use std::path::PathBuf;

use serde::Serialize;

use crate::error::Error;
use crate::hash::ChecksumAlgorithm;
use crate::plan::{MAX_PART_SIZE, MIB, MIN_PART_SIZE};

/// Default part size: 100 MiB.
pub const DEFAULT_PART_SIZE: u64 = 100 * MIB;
/// Default number of parts in flight.
pub const DEFAULT_CONCURRENCY: usize = 64;
/// Most parts in flight tally allows.
pub const MAX_CONCURRENCY: usize = 1024;

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
    pub fn parse(text: &str) -> Result<ObjectUrl, Error> {
        let bad = |why: &str| {
            Error::Usage(format!(
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
    pub fn for_file(&self, file: &std::path::Path) -> Result<ObjectUrl, Error> {
        if !(self.key.is_empty() || self.key.ends_with('/')) {
            return Ok(self.clone());
        }
        let name = file.file_name().and_then(|n| n.to_str()).ok_or_else(|| {
            Error::Usage(format!(
                "cannot name the object after '{}': give the full key, s3://{}/KEY",
                file.display(),
                self.bucket
            ))
        })?;
        let key = format!("{}{name}", self.key);
        if key.len() > 1024 {
            return Err(Error::Usage(
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

/// Where and as whom to connect. Credentials are never held here: they come from the AWS chain.
#[derive(Debug, Clone)]
pub struct Connection {
    /// A custom endpoint (`--endpoint-url`); `AWS_ENDPOINT_URL` is read by the AWS chain otherwise.
    pub endpoint_url: Option<String>,
    /// Region override.
    pub region: Option<String>,
    /// Profile override.
    pub profile: Option<String>,
    /// Force path-style addressing (automatic for localhost and IP endpoints).
    pub path_style: bool,
    /// How long S3 may take to answer a request, beyond the time to send its body (`--timeout`).
    pub timeout: std::time::Duration,
}

impl Default for Connection {
    fn default() -> Self {
        Connection {
            endpoint_url: None,
            region: None,
            profile: None,
            path_style: false,
            timeout: DEFAULT_TIMEOUT,
        }
    }
}

/// Default for [`Connection::timeout`].
pub const DEFAULT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(60);

/// A checked upload request.
#[derive(Debug, Clone)]
pub struct UploadConfig {
    /// The local file.
    pub source: PathBuf,
    /// The destination (a key ending in `/` gets the file name appended).
    pub target: ObjectUrl,
    /// Requested part size, within S3's limits; grows for very large files.
    pub part_size: u64,
    /// Parts in flight at most.
    pub concurrency: usize,
    /// The additional checksum.
    pub checksum: ChecksumAlgorithm,
    /// How an interrupted upload is resumed.
    pub resume: ResumeOptions,
    /// Read the stored object's checksums back after completing (default on; `--no-verify`).
    pub verify: bool,
    /// Send Content-MD5 with every part, so the ETag can be predicted (`--content-md5`).
    pub content_md5: bool,
    /// Tag the object with the whole file's MD5 under this name (`--md5-tag`).
    pub md5_tag: Option<String>,
    /// Read the object back and compare its MD5, retrying for this long (`--read-back`).
    pub read_back: Option<std::time::Duration>,
}

/// How `tally upload` treats an earlier, interrupted upload of the same file to the same key.
#[derive(Debug, Clone, Default)]
pub struct ResumeOptions {
    /// Manifest path (`--manifest`); default: a file in the state directory keyed by source and
    /// destination.
    pub manifest: Option<PathBuf>,
    /// Discard an existing manifest and abort its upload (`--restart`).
    pub restart: bool,
    /// Skip re-hashing the parts S3 already holds (`--trust-manifest`).
    pub trust_manifest: bool,
    /// Keep the manifest after success as an audit record (`--keep-manifest`).
    pub keep_manifest: bool,
    /// The state directory; default [`crate::manifest::state_dir`] (from the environment).
    pub state_dir: Option<PathBuf>,
}

impl ResumeOptions {
    /// The state directory, created if missing.
    pub fn state_dir(&self) -> Result<PathBuf, Error> {
        match &self.state_dir {
            Some(d) => {
                std::fs::create_dir_all(d).map_err(|e| Error::Manifest {
                    path: d.clone(),
                    why: e.to_string(),
                })?;
                Ok(d.clone())
            }
            None => crate::manifest::state_dir(),
        }
    }
}

impl UploadConfig {
    /// Checks the settings; nothing touches the network or the file yet.
    pub fn new(
        source: PathBuf,
        target: &str,
        part_size: u64,
        concurrency: usize,
        checksum: ChecksumAlgorithm,
    ) -> Result<UploadConfig, Error> {
        let target = ObjectUrl::parse(target)?.for_file(&source)?;
        if !(MIN_PART_SIZE..=MAX_PART_SIZE).contains(&part_size) {
            return Err(Error::Usage(format!(
                "--part-size {part_size} bytes is outside S3's limits: choose 5MiB to 5GiB"
            )));
        }
        if !(1..=MAX_CONCURRENCY).contains(&concurrency) {
            return Err(Error::Usage(format!(
                "--concurrency {concurrency} is out of range: choose 1 to {MAX_CONCURRENCY}"
            )));
        }
        Ok(UploadConfig {
            source,
            target,
            part_size,
            concurrency,
            checksum,
            resume: ResumeOptions::default(),
            verify: true,
            content_md5: false,
            md5_tag: None,
            read_back: None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        let u = ObjectUrl::parse("s3://my-bucket/a/b.mov").unwrap();
        assert_eq!(
            (u.bucket.as_str(), u.key.as_str()),
            ("my-bucket", "a/b.mov")
        );
        assert_eq!(u.to_string(), "s3://my-bucket/a/b.mov");
        for bad in [
            "my-bucket/key",
            "s3://",
            "s3:///key",
            "s3://Bad_Bucket/k",
            "s3://ab/k",
            "https://b/k",
        ] {
            let e = ObjectUrl::parse(bad).unwrap_err().to_string();
            assert!(e.contains("s3://BUCKET/KEY"), "{bad}: {e}");
        }
        let dir = ObjectUrl::parse("s3://bkt/renders/").unwrap();
        assert_eq!(
            dir.for_file("/x/shot.exr".as_ref()).unwrap().key,
            "renders/shot.exr"
        );
        let bare = ObjectUrl::parse("s3://bkt").unwrap();
        assert_eq!(bare.for_file("shot.exr".as_ref()).unwrap().key, "shot.exr");
    }

    #[test]
    fn ranges_are_checked() {
        let mk =
            |ps, c| UploadConfig::new("f".into(), "s3://bkt/k", ps, c, ChecksumAlgorithm::Sha256);
        assert!(mk(DEFAULT_PART_SIZE, DEFAULT_CONCURRENCY).is_ok());
        assert!(
            mk(5 * MIB - 1, 4)
                .unwrap_err()
                .to_string()
                .contains("5MiB to 5GiB")
        );
        assert!(mk(MAX_PART_SIZE + 1, 4).is_err());
        assert!(
            mk(DEFAULT_PART_SIZE, 0)
                .unwrap_err()
                .to_string()
                .contains("--concurrency")
        );
        assert!(mk(DEFAULT_PART_SIZE, MAX_CONCURRENCY + 1).is_err());
    }
}
