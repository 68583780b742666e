//! Validated settings: what the command line becomes once checked. clap never touches these types.

use std::path::PathBuf;

use crate::error::Error;
use crate::vocab::ChecksumAlgorithm;
use crate::vocab::{MAX_PART_SIZE, MIB, MIN_PART_SIZE};
use crate::vocab::{ObjectSettings, ObjectUrl};

/// Default part size: 100 MiB.
pub const DEFAULT_PART_SIZE: u64 = 100 * MIB;

/// Refuses a `--part-size` outside S3's limits ([`crate::plan::AUTO`], "auto", is fine).
pub fn check_part_size(part_size: u64) -> Result<(), Error> {
    if part_size == crate::plan::AUTO || (MIN_PART_SIZE..=MAX_PART_SIZE).contains(&part_size) {
        return Ok(());
    }
    Err(Error::Usage(format!(
        "--part-size {part_size} bytes is outside S3's limits: choose 5MiB to 5GiB, or auto"
    )))
}
/// Default number of parts in flight.
pub const DEFAULT_CONCURRENCY: usize = 64;
/// Most parts in flight tally allows.
pub const MAX_CONCURRENCY: usize = 1024;

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
    /// A tree's file: where the PutObject reply already proves the object (its checksum verified
    /// and echoed, its ETag the file's MD5), leave [`UploadConfig::verify`]'s read-back to a
    /// listing of many files (`batch::upload`) instead of a HEAD of this one.
    pub read_back_by_listing: bool,
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
    /// Send a part again on another connection when its connection moves far slower than the
    /// others (on by default; `--no-hedge` turns it off: see docs/link.md).
    pub hedge: bool,
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
    /// Where manifests live: resolved once where the command's settings are built
    /// ([`crate::state::StateDir::from_env`], or a folder named by the caller).
    pub state_dir: crate::state::StateDir,
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
        if total > crate::vocab::MAX_TAGS {
            return Err(Error::Usage(format!(
                "{total} tags (--tag, --md5-tag and --file-hash-tag); S3 allows {} per object: drop some",
                crate::vocab::MAX_TAGS
            )));
        }
        Ok(())
    }

    /// Checks the settings; nothing touches the network or the file yet. `part_size`
    /// [`crate::plan::AUTO`]: the file's own (see [`crate::plan`]).
    pub fn new(
        source: PathBuf,
        target: &str,
        part_size: u64,
        concurrency: usize,
        checksum: ChecksumAlgorithm,
    ) -> Result<UploadConfig, Error> {
        let target = ObjectUrl::parse(target)?.for_file(&source)?;
        check_part_size(part_size)?;
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
            read_back_by_listing: false,
            content_md5: false,
            md5_tag: None,
            read_back: None,
            file_hashes: Vec::new(),
            file_hash_tag: false,
            hedge: true,
            object: ObjectSettings::default(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vocab::{StorageClass, guess_content_type};
    use std::path::Path;

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
        // `.` and `..` (issue 25): named after the folder they resolve to.
        let cwd = std::env::current_dir().unwrap();
        let name = |p: &std::path::Path| p.file_name().unwrap().to_str().unwrap().to_owned();
        assert_eq!(
            dir.for_file(".".as_ref()).unwrap().key,
            format!("renders/{}", name(&cwd))
        );
        assert_eq!(
            dir.for_file("..".as_ref()).unwrap().key,
            format!("renders/{}", name(cwd.parent().unwrap()))
        );
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
