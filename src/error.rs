//! The library's error type, and the one place that maps errors to exit codes.

use std::path::PathBuf;

use crate::s3::{S3Error, S3ErrorKind};

/// Exit code: success.
pub const EXIT_OK: i32 = 0;
/// Exit code: an integrity mismatch (a checksum or ETag that does not match).
pub const EXIT_MISMATCH: i32 = 1;
/// Exit code: any other error (bad input, network, permissions, interrupted).
pub const EXIT_ERROR: i32 = 2;
/// Exit code of `tally md5`: not finished (time limit or signal); the state is saved: run the same
/// command again with the same `--state`.
pub const EXIT_UNFINISHED: i32 = 3;

/// Everything that can stop a tally command. Each variant's message is one line that says what
/// happened and what to do.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Invalid arguments or settings; nothing was sent.
    #[error("{0}")]
    Usage(String),
    /// The local file cannot be used.
    #[error("{}: {why}", path.display())]
    Source {
        /// The path given.
        path: PathBuf,
        /// Why, and what to do.
        why: String,
    },
    /// The local file changed after tally started reading it.
    #[error(
        "{}: the file changed while it was being uploaded; nothing was completed: upload it again once it is no longer being written",
        path.display()
    )]
    SourceChanged {
        /// The path.
        path: PathBuf,
    },
    /// The file is larger than S3's largest object.
    #[error(
        "the file is {len} bytes, larger than S3's largest object (10,000 parts of 5 GiB = 48.8 TiB); nothing was sent: split it first"
    )]
    TooLarge {
        /// File length.
        len: u64,
    },
    /// The manifest (resume journal) cannot be read or written.
    #[error("manifest {}: {why}: check the state directory (TALLY_STATE_DIR) and free space, or pass --manifest PATH", path.display())]
    Manifest {
        /// The manifest or lock path.
        path: PathBuf,
        /// The I/O error.
        why: String,
    },
    /// Resolving the AWS configuration failed (region, profile, endpoint).
    #[error("{0}")]
    Config(String),
    /// An S3 request failed (after retries, where retrying could help).
    #[error("{op}{} failed{}: {source}", part.map(|p| format!(" of part {p}")).unwrap_or_default(), upload_id.as_ref().map(|u| format!(" (upload id {u})")).unwrap_or_default())]
    S3 {
        /// The S3 operation.
        op: &'static str,
        /// The part, for part operations.
        part: Option<u32>,
        /// The multipart upload, once one exists.
        upload_id: Option<String>,
        /// What S3 (or the network) said.
        source: S3Error,
    },
    /// What S3 reports differs from what tally computed locally.
    #[error("integrity mismatch: {what}: expected {expected}, S3 reports {actual}{}{}", upload_id.as_ref().map(|u| format!(" (upload id {u})")).unwrap_or_default(), then.as_ref().map(|t| format!("; {t}")).unwrap_or_default())]
    Mismatch {
        /// Which value differs (e.g. "part 3 checksum", "object ETag").
        what: String,
        /// The value tally computed.
        expected: String,
        /// The value S3 returned.
        actual: String,
        /// The multipart upload, if any.
        upload_id: Option<String>,
        /// What it means for the object at the key, and what to run, when known.
        then: Option<String>,
    },
    /// An interrupted upload's manifest cannot be resumed by this command; nothing was completed.
    #[error("manifest {}: {why}", manifest.display())]
    ResumeRefused {
        /// The manifest.
        manifest: PathBuf,
        /// Why, and what to do.
        why: String,
    },
    /// An upload manifest whose header cannot be read (damaged, or another tally version).
    #[error(
        "manifest {} has no readable header (another tally version, or damaged): run with --restart to start the upload again, or `tally abort` the upload it was for (`tally uploads` lists uploads to abort)",
        path.display()
    )]
    ManifestUnreadable {
        /// The manifest.
        path: PathBuf,
    },
    /// Another tally process drives this upload (it holds the lock).
    #[error(
        "another tally is already uploading this file to this destination (lock {}): wait for it to finish, or stop it first",
        lock.display()
    )]
    Busy {
        /// The lock file.
        lock: PathBuf,
    },
    /// Stopped by Ctrl-C / SIGTERM.
    #[error("interrupted")]
    Interrupted,
    /// `--no-overwrite`: an object exists at the key, and is not proven to be the file.
    #[error(
        "{url} {why}: not replaced (--no-overwrite); choose another key, or upload without --no-overwrite to replace it"
    )]
    NotReplaced {
        /// The object, `s3://bucket/key`.
        url: String,
        /// What is there.
        why: String,
    },
    /// Stopped by Ctrl-C / SIGTERM, saying what is kept and how to go on.
    #[error("{0}")]
    Stopped(String),
    /// A multipart upload failed after it was created; says what became of the upload.
    #[error("{source}; {}", outcome.describe(bucket, key, upload_id))]
    UploadFailed {
        /// What stopped the upload.
        source: Box<Error>,
        /// Bucket of the upload.
        bucket: String,
        /// Key of the upload.
        key: String,
        /// The upload id.
        upload_id: String,
        /// Kept for resuming, or aborted.
        outcome: Box<Outcome>,
    },
    /// One PutObject was answered, so the object is written, but a request of the read-back that
    /// proves it failed (throttled, refused): nothing to resume, the same command proves it.
    #[error(
        "{source}; {url} was written (S3 answered the PutObject), but not read back to prove it: run the same command again to prove it (it sends nothing if the object is the file)"
    )]
    WrittenUnproven {
        /// What stopped the read-back.
        source: Box<Error>,
        /// The object, `s3://bucket/key`.
        url: String,
    },
    /// The object in S3 is not the one a saved state or an earlier read of this run came from.
    #[error("{url} {}", when.describe(then.as_deref(), now.as_deref()))]
    ObjectChanged {
        /// The object, `s3://bucket/key`.
        url: String,
        /// The ETag it had (when the state was saved, or when the read began).
        then: Option<String>,
        /// The ETag it has now, when known.
        now: Option<String>,
        /// Since when.
        when: Changed,
    },
    /// A saved state (`tally md5 --state`) cannot be read, written or used.
    #[error("state file {}: {why}: check the path, or remove the file to start over", path.display())]
    StateFile {
        /// The state file.
        path: PathBuf,
        /// Why.
        why: String,
    },
    /// The server does not implement a request tally needs for what was asked.
    #[error("this server does not support {what} ({source}): {consequence}")]
    Unsupported {
        /// The feature (e.g. "object tagging").
        what: &'static str,
        /// What was therefore not done.
        consequence: &'static str,
        /// What the server answered.
        source: S3Error,
    },
    /// The server refused the checksum algorithm asked for (CreateMultipartUpload answered 400,
    /// as Garage and LocalStack do for the algorithms S3 added in 2026); nothing was uploaded.
    #[error(
        "the server does not accept {algorithm} checksums ({source}): use --checksum sha256 or crc64nvme; nothing was uploaded"
    )]
    ChecksumRefused {
        /// The algorithm refused.
        algorithm: crate::vocab::ChecksumAlgorithm,
        /// What the server answered.
        source: S3Error,
    },
    /// Adding a tag would pass S3's limit of tags per object.
    #[error(
        "{url} already has {count} tags, S3's limit: the tag '{name}' was not added (remove a tag first)"
    )]
    TooManyTags {
        /// The object, `s3://bucket/key`.
        url: String,
        /// Tags it has.
        count: usize,
        /// The tag that was not added.
        name: String,
    },
    /// A download's destination cannot be used (missing or read-only folder, a directory in the
    /// way, an existing file that differs, a full disk).
    #[error("{}: {why}", path.display())]
    Destination {
        /// The destination (or the folder that is wrong).
        path: PathBuf,
        /// Why, and what to do.
        why: String,
    },
    /// Downloaded bytes that never matched what S3 holds for them, after fetching them again.
    #[error(
        "{url}: {what} arrived different from {against} on each of {attempts} fetches (computed {computed}, S3 says {expected}); nothing was renamed to the destination: {}",
        if *same_each_time {
            "the same bytes arrived every time, so a passing network fault is ruled out: the server's value does not describe the bytes it sends (a server that stores wrong checksums, an object damaged at rest, or a proxy that alters them the same way each time); `tally verify --download FILE URL` compares the bytes with a copy you trust"
        } else {
            "check the network path (proxy, middlebox) and run the same command again"
        }
    )]
    Corrupt {
        /// The object, `s3://bucket/key`.
        url: String,
        /// Which bytes (e.g. "part 3 (bytes 10485760..15728640)", "the object").
        what: String,
        /// What they were checked against (e.g. "S3's SHA256 part checksum").
        against: String,
        /// The value the received bytes hash to.
        computed: String,
        /// The value S3 reports.
        expected: String,
        /// Fetches made.
        attempts: u32,
        /// Whether every fetch hashed to the same value (not a network fault).
        same_each_time: bool,
    },
    /// A command's own error (a `tally shard` command that refused or stopped, an ASC MHL history
    /// that cannot be used): its one-line message and its exit code are its own. Find the type
    /// with [`Error::domain`].
    #[error("{0}")]
    Domain(Box<dyn DomainError>),
    /// A broken invariant inside tally (a worker thread gone): a bug, please report it.
    #[error("internal error: {0}: please report this as a bug")]
    Internal(&'static str),
}

/// An error type of a module above this one (ASC MHL, shard), carried by [`Error::Domain`] so
/// that this module imports none of them.
pub trait DomainError: std::error::Error + Send + Sync + 'static {
    /// The process exit code this error ends a command with.
    fn exit_code(&self) -> i32;
    /// The error as `Any`, for [`Error::domain`].
    fn as_any(&self) -> &dyn std::any::Any;
}

impl<T: DomainError> From<T> for Error {
    fn from(e: T) -> Error {
        Error::Domain(Box::new(e))
    }
}

impl From<crate::vocab::Invalid> for Error {
    fn from(e: crate::vocab::Invalid) -> Error {
        Error::Usage(e.0)
    }
}

impl From<crate::s3::ConnectError> for Error {
    fn from(e: crate::s3::ConnectError) -> Error {
        Error::Config(e.0)
    }
}

/// Since when an object changed (see [`Error::ObjectChanged`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Changed {
    /// Since a saved state was written: the state no longer applies.
    SinceStateSaved {
        /// The state file.
        state: PathBuf,
    },
    /// While this run was reading it (a GET with `If-Match` was refused).
    WhileRead,
}

impl Changed {
    fn describe(&self, then: Option<&str>, now: Option<&str>) -> String {
        let etags = match (then, now) {
            (Some(t), Some(n)) => format!(" (ETag {t} then, {n} now)"),
            (Some(t), None) => format!(" (its ETag is no longer {t})"),
            _ => String::new(),
        };
        match self {
            Changed::SinceStateSaved { state } => format!(
                "changed since the state was saved{etags}: remove {} to hash the new object from the start",
                state.display()
            ),
            Changed::WhileRead => format!(
                "was replaced while it was being read{etags}: run the command again to read the new object"
            ),
        }
    }
}

/// What became of a multipart upload that failed.
#[derive(Debug)]
pub enum Outcome {
    /// Kept, with its manifest, for the same command to resume.
    Kept {
        /// The manifest.
        manifest: PathBuf,
    },
    /// Completed, but its object not read back to prove it (a request of the read-back failed):
    /// the manifest is kept, so that the same command finds the upload completed and proves it.
    Completed {
        /// The manifest.
        manifest: PathBuf,
    },
    /// Aborted: nothing is stored or billed.
    Aborted,
    /// Aborting failed too.
    AbortFailed(S3Error),
}

impl Outcome {
    /// What became of upload `upload_id` of `s3://bucket/key`, and what to do, in one sentence.
    pub fn describe(&self, bucket: &str, key: &str, upload_id: &str) -> String {
        match self {
            Outcome::Kept { manifest } => format!(
                "upload {upload_id} is kept for resuming (manifest {}): run the same command again to finish it, or `tally abort s3://{bucket}/{key} --upload-id {upload_id}` to discard it",
                manifest.display()
            ),
            Outcome::Completed { manifest } => format!(
                "upload {upload_id} was completed, but s3://{bucket}/{key} was not read back to prove it (manifest {} kept): run the same command again to prove it",
                manifest.display()
            ),
            Outcome::Aborted => {
                format!("multipart upload {upload_id} was aborted, nothing was stored")
            }
            Outcome::AbortFailed(e) => format!(
                "aborting multipart upload {upload_id} also failed ({e}): run `tally abort s3://{bucket}/{key} --upload-id {upload_id}` so its parts are not billed"
            ),
        }
    }
}

impl Error {
    /// Wraps a failed S3 request of operation `op` (with the part and upload, when there is one):
    /// for `map_err`.
    pub fn s3(
        op: &'static str,
        part: Option<u32>,
        upload_id: Option<&str>,
    ) -> impl FnOnce(S3Error) -> Error + use<> {
        let upload_id = upload_id.map(str::to_owned);
        move |source| Error::S3 {
            op,
            part,
            upload_id,
            source,
        }
    }

    /// The process exit code for this error: [`EXIT_MISMATCH`] for integrity failures (including a
    /// part S3 rejected because its bytes did not match their checksum), [`EXIT_ERROR`] otherwise.
    pub fn exit_code(&self) -> i32 {
        match self {
            Error::Mismatch { .. } | Error::Corrupt { .. } => EXIT_MISMATCH,
            Error::S3 { source, .. } if source.kind == S3ErrorKind::Integrity => EXIT_MISMATCH,
            Error::UploadFailed { source, .. } | Error::WrittenUnproven { source, .. } => {
                source.exit_code()
            }
            Error::Domain(e) => e.exit_code(),
            _ => EXIT_ERROR,
        }
    }

    /// The command's own error of type `T` this carries, if it carries one.
    pub fn domain<T: DomainError>(&self) -> Option<&T> {
        match self {
            Error::Domain(e) => e.as_any().downcast_ref(),
            _ => None,
        }
    }

    /// The failed S3 request's error, where this is one, or wraps one (an upload stopped by it).
    pub(crate) fn s3_cause(&self) -> Option<&S3Error> {
        match self {
            Error::S3 { source, .. } => Some(source),
            Error::UploadFailed { source, .. } | Error::WrittenUnproven { source, .. } => {
                source.s3_cause()
            }
            _ => None,
        }
    }

    /// Whether this is an integrity failure.
    pub fn is_integrity(&self) -> bool {
        self.exit_code() == EXIT_MISMATCH
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::s3::NetworkCause;

    #[test]
    fn a_refused_storage_class_and_a_refused_body_say_only_what_is_known() {
        let e = S3Error::from_response(Some("InvalidStorageClass"), Some(400), String::new());
        assert!(e.to_string().contains("leave out --storage-class"), "{e}");
        let e = S3Error::from_response(Some("BadDigest"), Some(400), String::new());
        let text = e.to_string();
        assert!(
            !text.contains("nothing wrong was stored") && text.contains("is not known"),
            "{text}"
        );
    }

    #[test]
    fn classification_table() {
        let cases = [
            (
                Some("NoSuchBucket"),
                Some(404),
                S3ErrorKind::NotFound,
                false,
            ),
            (
                Some("AccessDenied"),
                Some(403),
                S3ErrorKind::AccessDenied,
                false,
            ),
            (
                Some("InvalidAccessKeyId"),
                Some(403),
                S3ErrorKind::Credentials,
                false,
            ),
            (
                Some("SignatureDoesNotMatch"),
                Some(403),
                S3ErrorKind::Credentials,
                false,
            ),
            (Some("BadDigest"), Some(400), S3ErrorKind::Integrity, false),
            (
                Some("InvalidDigest"),
                Some(400),
                S3ErrorKind::Integrity,
                false,
            ),
            (Some("SlowDown"), Some(503), S3ErrorKind::Throttled, true),
            (None, Some(503), S3ErrorKind::Throttled, true),
            (
                Some("InternalError"),
                Some(500),
                S3ErrorKind::Transient,
                true,
            ),
            (None, Some(502), S3ErrorKind::Transient, true),
            (
                Some("NotImplemented"),
                Some(501),
                S3ErrorKind::Unsupported,
                false,
            ),
            (Some("EntityTooSmall"), Some(400), S3ErrorKind::Other, false),
            (
                Some("PreconditionFailed"),
                Some(412),
                S3ErrorKind::PreconditionFailed,
                false,
            ),
            (None, Some(412), S3ErrorKind::PreconditionFailed, false),
            (
                Some("PermanentRedirect"),
                Some(301),
                S3ErrorKind::WrongRegion,
                false,
            ),
        ];
        for (code, status, kind, retry) in cases {
            let e = S3Error::from_response(code, status, String::new());
            assert_eq!(e.kind, kind, "{code:?} {status:?}");
            assert_eq!(e.kind.is_retryable(), retry, "{code:?}");
        }
        assert!(S3Error::transport("reset".into()).kind.is_retryable());
        let garage = "Authorization header malformed, unexpected scope: '20261124/eu-west-1/s3/aws4_request', expected: '20261124/us-east-1/s3/aws4_request'";
        let aws = "The authorization header is malformed; the region 'eu-west-1' is wrong; expecting 'us-west-2'";
        for (msg, region) in [(garage, "us-east-1"), (aws, "us-west-2")] {
            let e =
                S3Error::from_response(Some("AuthorizationHeaderMalformed"), Some(400), msg.into());
            assert_eq!(e.kind, S3ErrorKind::WrongRegion);
            assert!(
                e.to_string().ends_with(&format!("pass --region {region}")),
                "{e}"
            );
        }
        let head = S3Error::from_response(None, Some(301), String::new())
            .with_bucket_region(Some("ap-south-1"));
        assert!(
            head.to_string().contains("pass --region ap-south-1"),
            "{head}"
        );
    }

    #[test]
    fn network_failures_are_one_line_naming_the_endpoint_and_a_remedy() {
        use NetworkCause::*;
        let ep = "http://127.0.0.1:1";
        for (cause, fatal, says) in [
            (Refused, true, "refused the connection"),
            (Dns, true, "does not resolve"),
            (Tls, true, "TLS handshake"),
            (ConnectTimeout, false, "connecting to"),
            (NeverAnswered, true, "has not answered any request in 30 s"),
            (NoReply, false, "no reply within 30 s after"),
            (Reset, false, "was closed before the reply"),
            (TimedOut, false, "timed out"),
            (Other, false, "failed"),
        ] {
            let e = Error::S3 {
                op: "PutObject",
                part: None,
                upload_id: None,
                source: S3Error::network(ep, cause, std::time::Duration::from_secs(30), fatal),
            };
            let text = e.to_string();
            assert!(
                text.contains(ep) && text.contains(says),
                "{cause:?}: {text}"
            );
            assert!(
                text.contains(" - check") || text.contains(" - the "),
                "{text}"
            );
            assert!(!text.contains('\n') && !text.contains("Error {"), "{text}");
            assert_eq!(e.exit_code(), EXIT_ERROR);
            let kind = if fatal {
                S3ErrorKind::Unreachable
            } else {
                S3ErrorKind::Transient
            };
            assert_eq!(e_kind(&e), kind, "{cause:?}");
        }
    }

    fn e_kind(e: &Error) -> S3ErrorKind {
        match e {
            Error::S3 { source, .. } => source.kind,
            _ => unreachable!(),
        }
    }

    #[test]
    fn integrity_failures_exit_1_others_2() {
        let s3 = |code| Error::S3 {
            op: "UploadPart",
            part: Some(3),
            upload_id: Some("u".into()),
            source: S3Error::from_response(Some(code), Some(400), "msg\nsecond line".into()),
        };
        assert_eq!(s3("BadDigest").exit_code(), EXIT_MISMATCH);
        assert_eq!(s3("NoSuchBucket").exit_code(), EXIT_ERROR);
        let text = s3("BadDigest").to_string();
        assert!(
            text.starts_with(
                "UploadPart of part 3 failed (upload id u): BadDigest (HTTP 400): msg second line"
            ),
            "{text}"
        );
        assert!(!text.contains('\n'));
        assert_eq!(Error::Usage("x".into()).exit_code(), EXIT_ERROR);
    }
}
