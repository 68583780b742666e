//! Validated settings: what the command line becomes once checked. clap never touches these types.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

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

/// An S3 storage class (`--storage-class`), by its S3 name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum StorageClass {
    /// STANDARD (S3's default).
    Standard,
    /// REDUCED_REDUNDANCY.
    ReducedRedundancy,
    /// STANDARD_IA.
    StandardIa,
    /// ONEZONE_IA.
    OnezoneIa,
    /// INTELLIGENT_TIERING.
    IntelligentTiering,
    /// GLACIER (Glacier Flexible Retrieval).
    Glacier,
    /// DEEP_ARCHIVE.
    DeepArchive,
    /// GLACIER_IR (Glacier Instant Retrieval).
    GlacierIr,
    /// EXPRESS_ONEZONE (directory buckets only).
    ExpressOnezone,
}

impl StorageClass {
    /// Every class, in the order `--help` lists them.
    pub const ALL: [StorageClass; 9] = [
        StorageClass::Standard,
        StorageClass::ReducedRedundancy,
        StorageClass::StandardIa,
        StorageClass::OnezoneIa,
        StorageClass::IntelligentTiering,
        StorageClass::Glacier,
        StorageClass::DeepArchive,
        StorageClass::GlacierIr,
        StorageClass::ExpressOnezone,
    ];

    /// The name S3 uses (`x-amz-storage-class`).
    pub fn as_str(self) -> &'static str {
        match self {
            StorageClass::Standard => "STANDARD",
            StorageClass::ReducedRedundancy => "REDUCED_REDUNDANCY",
            StorageClass::StandardIa => "STANDARD_IA",
            StorageClass::OnezoneIa => "ONEZONE_IA",
            StorageClass::IntelligentTiering => "INTELLIGENT_TIERING",
            StorageClass::Glacier => "GLACIER",
            StorageClass::DeepArchive => "DEEP_ARCHIVE",
            StorageClass::GlacierIr => "GLACIER_IR",
            StorageClass::ExpressOnezone => "EXPRESS_ONEZONE",
        }
    }
}

impl std::fmt::Display for StorageClass {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for StorageClass {
    type Err = Error;

    /// The S3 name, in any case.
    fn from_str(s: &str) -> Result<StorageClass, Error> {
        StorageClass::ALL
            .into_iter()
            .find(|c| c.as_str().eq_ignore_ascii_case(s))
            .ok_or_else(|| {
                let names: Vec<&str> = StorageClass::ALL.iter().map(|c| c.as_str()).collect();
                Error::Usage(format!(
                    "'{s}' is not a storage class: choose one of {}",
                    names.join(", ")
                ))
            })
    }
}

/// Server-side encryption tally asks for (`--sse`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Sse {
    /// SSE-S3 (`AES256`): the ETag stays an MD5.
    Aes256,
    /// SSE-KMS (`aws:kms`), with the bucket's or account's default key unless `key_id` names one.
    /// The ETag is then not an MD5: it is never compared.
    Kms {
        /// `--sse-kms-key-id` (not a secret, but kept out of messages and logs).
        key_id: Option<String>,
    },
}

impl Sse {
    /// The value of `x-amz-server-side-encryption`.
    pub fn as_str(&self) -> &'static str {
        match self {
            Sse::Aes256 => "AES256",
            Sse::Kms { .. } => "aws:kms",
        }
    }
}

/// S3's limit on user-defined metadata: the bytes of every key and value together.
pub const MAX_METADATA_BYTES: usize = 2048;
/// S3's limit on tags per object.
pub const MAX_TAGS: usize = crate::remote::tags::MAX_TAGS;
/// S3's limit on a tag key, in characters.
pub const MAX_TAG_KEY: usize = 128;
/// S3's limit on a tag value, in characters.
pub const MAX_TAG_VALUE: usize = 256;

/// Media types tally settles on where `mime_guess` has none (see the README): registered or
/// widely used names for film formats; the camera raw formats keep `application/octet-stream`.
const MEDIA_TYPES: &[(&str, &str)] = &[("dpx", "image/dpx"), ("exr", "image/x-exr")];

/// What S3 stores with the object besides its bytes: set at PutObject or CreateMultipartUpload
/// (`--storage-class`, `--content-type`, `--metadata`, `--tag`, `--sse`). The same settings go to
/// every file of a command; the content type, when not given, is guessed per file
/// ([`ObjectSettings::for_file`]). Recorded in a multipart upload's manifest: a resume with other
/// settings is refused.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ObjectSettings {
    /// `--storage-class`; none: the bucket's default (STANDARD).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage_class: Option<StorageClass>,
    /// `--content-type`; none: guessed from the file name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content_type: Option<String>,
    /// `--metadata` (user-defined, `x-amz-meta-*`), keys lower-case, sorted.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub metadata: Vec<(String, String)>,
    /// `--tag`, in the order given.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tags: Vec<(String, String)>,
    /// `--sse`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sse: Option<Sse>,
    /// `--no-overwrite`: write only where no object exists (`If-None-Match: *` on PutObject and
    /// CompleteMultipartUpload). How the write is made, not what S3 stores: never recorded.
    #[serde(skip)]
    pub if_absent: bool,
}

/// Splits `k=v` (at the first `=`).
fn key_value<'a>(flag: &str, text: &'a str) -> Result<(&'a str, &'a str), Error> {
    text.split_once('=').ok_or_else(|| {
        Error::Usage(format!(
            "{flag} '{text}' has no '=': write it as {flag} KEY=VALUE"
        ))
    })
}

impl ObjectSettings {
    /// Checks the flags' values against S3's rules. `md5_tag` is `--md5-tag`'s name: that tag is
    /// added after the upload, so it counts against the 10-tag limit and must not be given twice.
    pub fn new(
        storage_class: Option<StorageClass>,
        content_type: Option<String>,
        metadata: &[String],
        tags: &[String],
        sse: Option<&str>,
        kms_key_id: Option<String>,
        md5_tag: Option<&str>,
    ) -> Result<ObjectSettings, Error> {
        let content_type = match content_type {
            Some(t) if t.is_empty() || !t.bytes().all(|b| (0x20..0x7f).contains(&b)) => {
                return Err(Error::Usage(format!(
                    "--content-type '{t}' is not a media type: write e.g. video/quicktime"
                )));
            }
            t => t,
        };
        let mut meta: Vec<(String, String)> = Vec::new();
        for m in metadata {
            let (k, v) = key_value("--metadata", m)?;
            let token = |b: u8| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b);
            if k.is_empty() || !k.bytes().all(token) {
                return Err(Error::Usage(format!(
                    "--metadata key '{k}' is not allowed: use ASCII letters, digits and - _ . (no spaces)"
                )));
            }
            if !v.bytes().all(|b| (0x20..0x7f).contains(&b)) {
                return Err(Error::Usage(format!(
                    "--metadata {k}: the value must be printable ASCII (S3 sends metadata as HTTP headers)"
                )));
            }
            let k = k.to_ascii_lowercase();
            if meta.iter().any(|(seen, _)| *seen == k) {
                return Err(Error::Usage(format!(
                    "--metadata {k} is given twice (S3 keys ignore case): give each key once"
                )));
            }
            meta.push((k, v.to_owned()));
        }
        meta.sort();
        let bytes: usize = meta.iter().map(|(k, v)| k.len() + v.len()).sum();
        if bytes > MAX_METADATA_BYTES {
            return Err(Error::Usage(format!(
                "--metadata totals {bytes} bytes of keys and values; S3 allows {MAX_METADATA_BYTES}: shorten or drop some"
            )));
        }
        let mut tag_set: Vec<(String, String)> = Vec::new();
        for t in tags {
            let (k, v) = key_value("--tag", t)?;
            let (kn, vn) = (k.chars().count(), v.chars().count());
            if kn == 0 || kn > MAX_TAG_KEY || vn > MAX_TAG_VALUE {
                return Err(Error::Usage(format!(
                    "--tag '{k}': S3 allows keys of 1 to {MAX_TAG_KEY} characters and values of up to {MAX_TAG_VALUE}"
                )));
            }
            if k.starts_with("aws:") {
                return Err(Error::Usage(format!(
                    "--tag '{k}': keys starting with aws: are reserved by AWS: choose another name"
                )));
            }
            if tag_set.iter().any(|(seen, _)| seen == k) || md5_tag == Some(k) {
                return Err(Error::Usage(format!(
                    "tag '{k}' is given twice (--tag, --md5-tag): give each tag once"
                )));
            }
            tag_set.push((k.to_owned(), v.to_owned()));
        }
        let total = tag_set.len() + usize::from(md5_tag.is_some());
        if total > MAX_TAGS {
            return Err(Error::Usage(format!(
                "{total} tags (--tag{}); S3 allows {MAX_TAGS} per object: drop some",
                if md5_tag.is_some() {
                    " and --md5-tag"
                } else {
                    ""
                }
            )));
        }
        let sse = match (sse, kms_key_id) {
            (None, None) => None,
            (Some(s), key_id) if s.eq_ignore_ascii_case("aws:kms") => Some(Sse::Kms { key_id }),
            (Some(s), None) if s.eq_ignore_ascii_case("AES256") => Some(Sse::Aes256),
            (_, Some(_)) => {
                return Err(Error::Usage(
                    "--sse-kms-key-id goes with --sse aws:kms only: add --sse aws:kms, or drop the key id"
                        .into(),
                ));
            }
            (Some(s), None) => {
                return Err(Error::Usage(format!(
                    "--sse '{s}' is not supported: choose aws:kms or AES256"
                )));
            }
        };
        Ok(ObjectSettings {
            storage_class,
            content_type,
            metadata: meta,
            tags: tag_set,
            sse,
            if_absent: false,
        })
    }

    /// These settings for one file: the content type given, or guessed from its extension
    /// (`mime_guess`, then tally's media types), else `application/octet-stream`.
    pub fn for_file(&self, file: &Path) -> ObjectSettings {
        let mut s = self.clone();
        if s.content_type.is_none() {
            s.content_type = Some(guess_content_type(file));
        }
        s
    }

    /// The tag set as `x-amz-tagging` carries it (URL-encoded, `k=v&k=v`); none without tags.
    pub fn tagging(&self) -> Option<String> {
        (!self.tags.is_empty()).then(|| {
            form_urlencoded::Serializer::new(String::new())
                .extend_pairs(self.tags.iter())
                .finish()
        })
    }

    /// How `other` (the settings of this command) differs from these (an interrupted upload's),
    /// in words; empty when they are the same. The KMS key id is never named.
    pub fn differences(&self, other: &ObjectSettings) -> Vec<String> {
        let or_default = |v: Option<String>| v.unwrap_or_else(|| "the default".into());
        let mut out = Vec::new();
        if self.storage_class != other.storage_class {
            out.push(format!(
                "storage class {}, now {}",
                or_default(self.storage_class.map(|c| c.to_string())),
                or_default(other.storage_class.map(|c| c.to_string()))
            ));
        }
        if self.content_type != other.content_type {
            out.push(format!(
                "content type {}, now {}",
                or_default(self.content_type.clone()),
                or_default(other.content_type.clone())
            ));
        }
        if self.metadata != other.metadata {
            out.push(format!(
                "{} metadata entries, now {} (or other values)",
                self.metadata.len(),
                other.metadata.len()
            ));
        }
        if self.tags != other.tags {
            out.push(format!(
                "{} tags, now {} (or other values)",
                self.tags.len(),
                other.tags.len()
            ));
        }
        if self.sse != other.sse {
            let name = |s: &Option<Sse>| match s {
                None => "none".to_owned(),
                Some(Sse::Aes256) => "AES256".to_owned(),
                Some(Sse::Kms { key_id: None }) => "aws:kms with the default key".to_owned(),
                Some(Sse::Kms { key_id: Some(_) }) => "aws:kms with a key id".to_owned(),
            };
            let (was, now) = (name(&self.sse), name(&other.sse));
            out.push(if was == now {
                "another SSE-KMS key id".to_owned()
            } else {
                format!("encryption {was}, now {now}")
            });
        }
        out
    }
}

/// The media type of `file` from its extension: `mime_guess`'s first answer, tally's own table
/// for film formats it lacks, else `application/octet-stream`.
pub fn guess_content_type(file: &Path) -> String {
    let ext = file
        .extension()
        .and_then(|e| e.to_str())
        .map(str::to_ascii_lowercase);
    if let Some(t) = ext
        .as_deref()
        .and_then(|e| MEDIA_TYPES.iter().find(|(x, _)| *x == e))
    {
        return t.1.to_owned();
    }
    mime_guess::from_path(file)
        .first_raw()
        .unwrap_or("application/octet-stream")
        .to_owned()
}

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
    /// Whole-file hashes computed during the upload's single read (`--file-hash`).
    pub file_hashes: Vec<crate::hash::FileHashFormat>,
    /// Store each of [`UploadConfig::file_hashes`] as an object tag named after its format
    /// (`--file-hash-tag`).
    pub file_hash_tag: bool,
    /// A tree file's ASC MHL check: the formats to compute in the upload's read and the values
    /// its history recorded, compared before the object is completed (`mhl::Expected`).
    pub mhl_check: Option<crate::mhl::Expected>,
    /// What S3 stores with the object besides its bytes (storage class, content type, metadata,
    /// tags, encryption); the same for every file of a command.
    pub object: ObjectSettings,
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
    /// The tags `--file-hash-tag` adds after the upload: each format's name and nothing else
    /// (the MD5 under `--md5-tag`'s own name is that flag's).
    pub fn file_hash_tag_names(&self) -> Vec<&'static str> {
        if self.file_hash_tag {
            self.file_hashes.iter().map(|f| f.name()).collect()
        } else {
            Vec::new()
        }
    }

    /// Checks `--file-hash-tag`'s tags against `--tag` and `--md5-tag` (no name twice, unless
    /// `--md5-tag md5` and the `md5` file hash, which carry the same value) and S3's 10-tag limit.
    pub fn check_file_hash_tags(&self) -> Result<(), Error> {
        let names = self.file_hash_tag_names();
        if names.is_empty() {
            return Ok(());
        }
        for n in &names {
            if self.object.tags.iter().any(|(k, _)| k == n) {
                return Err(Error::Usage(format!(
                    "tag '{n}' is given twice (--tag, --file-hash-tag): give each tag once"
                )));
            }
            if *n != "md5" && self.md5_tag.as_deref() == Some(*n) {
                return Err(Error::Usage(format!(
                    "tag '{n}' is given twice (--md5-tag, --file-hash-tag): give each tag once"
                )));
            }
        }
        let md5_extra = self
            .md5_tag
            .as_deref()
            .is_some_and(|m| !(m == "md5" && names.contains(&"md5")));
        let total = self.object.tags.len() + usize::from(md5_extra) + names.len();
        if total > crate::remote::tags::MAX_TAGS {
            return Err(Error::Usage(format!(
                "{total} tags (--tag, --md5-tag and --file-hash-tag); S3 allows {} per object: drop some",
                crate::remote::tags::MAX_TAGS
            )));
        }
        Ok(())
    }

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
            file_hashes: Vec::new(),
            file_hash_tag: false,
            mhl_check: None,
            object: ObjectSettings::default(),
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

    #[test]
    fn tags_are_url_encoded_and_content_types_guessed() {
        let s = ObjectSettings::new(
            None,
            None,
            &[],
            &["shot=010 & 020".into(), "path=a/b=c".into()],
            None,
            None,
            None,
        )
        .unwrap();
        // application/x-www-form-urlencoded, written out by hand.
        assert_eq!(
            s.tagging().as_deref(),
            Some("shot=010+%26+020&path=a%2Fb%3Dc")
        );
        assert_eq!(ObjectSettings::default().tagging(), None);
        for (name, want) in [
            ("A001.MOV", "video/quicktime"),
            ("scan.000001.dpx", "image/dpx"),
            ("beauty.exr", "image/x-exr"),
            ("clip.mxf", "application/mxf"),
            ("A001.R3D", "application/octet-stream"),
            ("A001.ari", "application/octet-stream"),
            ("take.braw", "application/octet-stream"),
            ("noext", "application/octet-stream"),
        ] {
            assert_eq!(guess_content_type(Path::new(name)), want, "{name}");
        }
        let given = ObjectSettings {
            content_type: Some("video/x-braw".into()),
            ..ObjectSettings::default()
        };
        assert_eq!(
            given.for_file(Path::new("t.braw")).content_type.as_deref(),
            Some("video/x-braw")
        );
    }

    #[test]
    fn metadata_is_limited_to_2_kb_of_keys_and_values() {
        let mk = |v: usize| {
            ObjectSettings::new(
                None,
                None,
                &[format!("ab={}", "x".repeat(v))],
                &[],
                None,
                None,
                None,
            )
        };
        assert!(mk(2046).is_ok(), "2 + 2046 = 2048 bytes");
        let e = mk(2047).unwrap_err().to_string();
        assert!(e.contains("2049 bytes") && e.contains("2048"), "{e}");
        let storage: StorageClass = "glacier_ir".parse().unwrap();
        assert_eq!(storage, StorageClass::GlacierIr);
    }
}
