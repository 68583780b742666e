//! What S3 stores with an object besides its bytes: storage class, content type, metadata, tags,
//! encryption, checked against S3's rules.

use std::path::Path;

use serde::{Deserialize, Serialize};

use super::Invalid;

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
    type Err = Invalid;

    /// The S3 name, in any case.
    fn from_str(s: &str) -> Result<StorageClass, Invalid> {
        StorageClass::ALL
            .into_iter()
            .find(|c| c.as_str().eq_ignore_ascii_case(s))
            .ok_or_else(|| {
                let names: Vec<&str> = StorageClass::ALL.iter().map(|c| c.as_str()).collect();
                Invalid(format!(
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
pub const MAX_TAGS: usize = 10;
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
fn key_value<'a>(flag: &str, text: &'a str) -> Result<(&'a str, &'a str), Invalid> {
    text.split_once('=').ok_or_else(|| {
        Invalid(format!(
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
    ) -> Result<ObjectSettings, Invalid> {
        let content_type = content_type_checked(content_type)?;
        let meta = metadata_checked(metadata)?;
        let tag_set = tags_checked(tags, md5_tag)?;
        let sse = sse_checked(sse, kms_key_id)?;
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

/// `--content-type`: a media type, printable ASCII.
fn content_type_checked(content_type: Option<String>) -> Result<Option<String>, Invalid> {
    let checked = match content_type {
        Some(t) if t.is_empty() || !t.bytes().all(|b| (0x20..0x7f).contains(&b)) => {
            return Err(Invalid(format!(
                "--content-type '{t}' is not a media type: write e.g. video/quicktime"
            )));
        }
        t => t,
    };
    Ok(checked)
}

/// `--metadata KEY=VALUE`s: header-safe keys (lower-cased, each once) and values, within S3's
/// size limit; sorted.
fn metadata_checked(metadata: &[String]) -> Result<Vec<(String, String)>, Invalid> {
    let mut meta: Vec<(String, String)> = Vec::new();
    for m in metadata {
        let (k, v) = key_value("--metadata", m)?;
        let token = |b: u8| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b);
        if k.is_empty() || !k.bytes().all(token) {
            return Err(Invalid(format!(
                "--metadata key '{k}' is not allowed: use ASCII letters, digits and - _ . (no spaces)"
            )));
        }
        if !v.bytes().all(|b| (0x20..0x7f).contains(&b)) {
            return Err(Invalid(format!(
                "--metadata {k}: the value must be printable ASCII (S3 sends metadata as HTTP headers)"
            )));
        }
        let k = k.to_ascii_lowercase();
        if meta.iter().any(|(seen, _)| *seen == k) {
            return Err(Invalid(format!(
                "--metadata {k} is given twice (S3 keys ignore case): give each key once"
            )));
        }
        meta.push((k, v.to_owned()));
    }
    meta.sort();
    let bytes: usize = meta.iter().map(|(k, v)| k.len() + v.len()).sum();
    if bytes > MAX_METADATA_BYTES {
        return Err(Invalid(format!(
            "--metadata totals {bytes} bytes of keys and values; S3 allows {MAX_METADATA_BYTES}: shorten or drop some"
        )));
    }
    Ok(meta)
}

/// `--tag KEY=VALUE`s: within S3's limits, none reserved or given twice (an `--md5-tag` counts).
fn tags_checked(tags: &[String], md5_tag: Option<&str>) -> Result<Vec<(String, String)>, Invalid> {
    let mut tag_set: Vec<(String, String)> = Vec::new();
    for t in tags {
        let (k, v) = key_value("--tag", t)?;
        let (kn, vn) = (k.chars().count(), v.chars().count());
        if kn == 0 || kn > MAX_TAG_KEY || vn > MAX_TAG_VALUE {
            return Err(Invalid(format!(
                "--tag '{k}': S3 allows keys of 1 to {MAX_TAG_KEY} characters and values of up to {MAX_TAG_VALUE}"
            )));
        }
        if k.starts_with("aws:") {
            return Err(Invalid(format!(
                "--tag '{k}': keys starting with aws: are reserved by AWS: choose another name"
            )));
        }
        if tag_set.iter().any(|(seen, _)| seen == k) || md5_tag == Some(k) {
            return Err(Invalid(format!(
                "tag '{k}' is given twice (--tag, --md5-tag): give each tag once"
            )));
        }
        tag_set.push((k.to_owned(), v.to_owned()));
    }
    let total = tag_set.len() + usize::from(md5_tag.is_some());
    if total > MAX_TAGS {
        return Err(Invalid(format!(
            "{total} tags (--tag{}); S3 allows {MAX_TAGS} per object: drop some",
            if md5_tag.is_some() {
                " and --md5-tag"
            } else {
                ""
            }
        )));
    }
    Ok(tag_set)
}

/// `--sse` and `--sse-kms-key-id`.
fn sse_checked(sse: Option<&str>, kms_key_id: Option<String>) -> Result<Option<Sse>, Invalid> {
    let sse = match (sse, kms_key_id) {
        (None, None) => None,
        (Some(s), key_id) if s.eq_ignore_ascii_case("aws:kms") => Some(Sse::Kms { key_id }),
        (Some(s), None) if s.eq_ignore_ascii_case("AES256") => Some(Sse::Aes256),
        (_, Some(_)) => {
            return Err(Invalid(
                "--sse-kms-key-id goes with --sse aws:kms only: add --sse aws:kms, or drop the key id"
                    .into(),
            ));
        }
        (Some(s), None) => {
            return Err(Invalid(format!(
                "--sse '{s}' is not supported: choose aws:kms or AES256"
            )));
        }
    };
    Ok(sse)
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
