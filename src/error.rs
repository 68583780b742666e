//! The library's error type, and the one place that maps errors to exit codes.

use std::fmt;
use std::path::PathBuf;

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
    #[error("integrity mismatch: {what}: expected {expected}, S3 reports {actual}{}", upload_id.as_ref().map(|u| format!(" (upload id {u})")).unwrap_or_default())]
    Mismatch {
        /// Which value differs (e.g. "part 3 checksum", "object ETag").
        what: String,
        /// The value tally computed.
        expected: String,
        /// The value S3 returned.
        actual: String,
        /// The multipart upload, if any.
        upload_id: Option<String>,
    },
    /// An interrupted upload's manifest cannot be resumed by this command; nothing was completed.
    #[error("manifest {}: {why}", manifest.display())]
    ResumeRefused {
        /// The manifest.
        manifest: PathBuf,
        /// Why, and what to do.
        why: String,
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
        algorithm: crate::hash::ChecksumAlgorithm,
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
        "{url}: {what} arrived different from {against} on each of {attempts} fetches (computed {computed}, S3 says {expected}); nothing was renamed to the destination: check the network path (proxy, middlebox) and run the same command again"
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
    },
    /// A `tally shard` command refused or stopped.
    #[error(transparent)]
    Shard(#[from] crate::shard::ShardError),
    /// A broken invariant inside tally (a worker thread gone): a bug, please report it.
    #[error("internal error: {0}: please report this as a bug")]
    Internal(&'static str),
    /// An ASC MHL history that cannot be used, or a generation that cannot be written.
    #[error(transparent)]
    Mhl(#[from] crate::mhl::MhlError),
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
            Error::UploadFailed { source, .. } => source.exit_code(),
            Error::Shard(e) => e.exit_code(),
            Error::Mhl(e) if e.is_integrity() => EXIT_MISMATCH,
            _ => EXIT_ERROR,
        }
    }

    /// Whether this is an integrity failure.
    pub fn is_integrity(&self) -> bool {
        self.exit_code() == EXIT_MISMATCH
    }
}

/// What kind of failure an S3 request met: decides whether retrying can help and what to tell the user.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum S3ErrorKind {
    /// Bucket, key or upload does not exist.
    NotFound,
    /// The credentials are valid but not allowed to do this.
    AccessDenied,
    /// The credentials were refused, missing or expired.
    Credentials,
    /// S3 rejected a body whose bytes do not match the checksum or Content-MD5 sent with it.
    Integrity,
    /// S3 asked to slow down (503 SlowDown, 429).
    Throttled,
    /// A server error, a timeout or a broken connection.
    Transient,
    /// The server does not implement this request.
    Unsupported,
    /// A condition sent with the request (`If-Match`) no longer holds: the object was replaced.
    PreconditionFailed,
    /// The bucket lives in another region than the one the request was signed for.
    WrongRegion,
    /// The endpoint cannot be reached or never answered (refused, unknown host, TLS failure,
    /// silent): retrying will not help until the endpoint or the network is fixed.
    Unreachable,
    /// Any other refusal.
    Other,
}

/// Why no answer came from the endpoint: decides the one line tally prints.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NetworkCause {
    /// Nothing listens on that port (connection refused).
    Refused,
    /// The host name does not resolve.
    Dns,
    /// The TLS handshake failed (certificate, or TLS to a plain-http port).
    Tls,
    /// Connecting took longer than the connect timeout.
    ConnectTimeout,
    /// The endpoint has not answered a single request within its time (see `S3Error::network`).
    NeverAnswered,
    /// No reply within its time after the request body was sent.
    NoReply,
    /// The connection was closed or reset before the reply.
    Reset,
    /// The attempt as a whole took longer than its timeout.
    TimedOut,
    /// Any other transport failure.
    Other,
}

impl NetworkCause {
    /// What happened, naming the endpoint; `waited` is how long tally waited, where that matters.
    fn describe(self, endpoint: &str, waited: std::time::Duration) -> String {
        match self {
            NetworkCause::Refused => format!("{endpoint} refused the connection"),
            NetworkCause::Dns => format!("the host name of {endpoint} does not resolve"),
            NetworkCause::Tls => format!("the TLS handshake with {endpoint} failed"),
            NetworkCause::ConnectTimeout => format!("connecting to {endpoint} timed out"),
            NetworkCause::NeverAnswered => format!(
                "{endpoint} has not answered any request in {} s",
                waited.as_secs()
            ),
            NetworkCause::NoReply => format!(
                "{endpoint} sent no reply within {} s after the request was sent",
                waited.as_secs()
            ),
            NetworkCause::Reset => {
                format!("the connection to {endpoint} was closed before the reply")
            }
            NetworkCause::TimedOut => format!("the request to {endpoint} timed out"),
            NetworkCause::Other => format!("the request to {endpoint} failed"),
        }
    }

    /// What to do about it.
    fn remedy(self) -> &'static str {
        match self {
            NetworkCause::Refused => {
                "check --endpoint-url (or AWS_ENDPOINT_URL): is the server running and listening on that port?"
            }
            NetworkCause::Dns => {
                "check the host name in --endpoint-url (or AWS_ENDPOINT_URL, --region) and your DNS"
            }
            NetworkCause::Tls => {
                "check the server's certificate, or use http:// if the server does not speak TLS"
            }
            NetworkCause::ConnectTimeout => {
                "check the host and port in the endpoint and any firewall in between"
            }
            NetworkCause::NeverAnswered => {
                "check --endpoint-url: is it an S3 server, and is it overloaded?"
            }
            NetworkCause::NoReply | NetworkCause::TimedOut => {
                "the server or network is stalled: run the same command again later (it resumes), or raise --timeout"
            }
            NetworkCause::Reset | NetworkCause::Other => {
                "the request kept failing after retries: check the network and endpoint, then run the same command again"
            }
        }
    }
}

impl S3ErrorKind {
    /// Whether sending the same request again could succeed.
    pub fn is_retryable(self) -> bool {
        matches!(self, S3ErrorKind::Throttled | S3ErrorKind::Transient)
    }
}

/// A failed S3 request, reduced to what tally acts on. Never holds credentials or signatures.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct S3Error {
    /// The classification.
    pub kind: S3ErrorKind,
    /// S3's error code, when the server sent one (e.g. `NoSuchBucket`).
    pub code: Option<String>,
    /// HTTP status, when a response arrived.
    pub status: Option<u16>,
    /// The server's message, or the transport failure.
    pub message: String,
    /// The bucket's region, when S3 named it (x-amz-bucket-region, or the error message).
    pub region: Option<Box<str>>,
    /// Why no answer came, for failures without a response.
    pub network: Option<NetworkCause>,
}

impl S3Error {
    /// Classifies an S3 error code and HTTP status.
    pub fn from_response(code: Option<&str>, status: Option<u16>, message: String) -> Self {
        let kind = match (code, status) {
            (Some("NoSuchBucket" | "NoSuchKey" | "NoSuchUpload" | "NotFound"), _) => {
                S3ErrorKind::NotFound
            }
            (Some("AccessDenied" | "AllAccessDisabled" | "AccountProblem"), _) => {
                S3ErrorKind::AccessDenied
            }
            (
                Some(
                    "InvalidAccessKeyId"
                    | "SignatureDoesNotMatch"
                    | "ExpiredToken"
                    | "InvalidToken"
                    | "TokenRefreshRequired"
                    | "InvalidSecurity",
                ),
                _,
            ) => S3ErrorKind::Credentials,
            (
                Some(
                    "BadDigest" | "InvalidDigest" | "XAmzContentSHA256Mismatch" | "InvalidChecksum",
                ),
                _,
            ) => S3ErrorKind::Integrity,
            (
                Some("SlowDown" | "Throttling" | "ThrottlingException" | "RequestLimitExceeded"),
                _,
            )
            | (_, Some(429 | 503)) => S3ErrorKind::Throttled,
            (Some("NotImplemented"), _) | (_, Some(501)) => S3ErrorKind::Unsupported,
            (Some("PreconditionFailed"), _) | (_, Some(412)) => S3ErrorKind::PreconditionFailed,
            (Some("InternalError" | "RequestTimeout"), _) | (_, Some(500..=599)) => {
                S3ErrorKind::Transient
            }
            (_, Some(404)) => S3ErrorKind::NotFound,
            (_, Some(403)) => S3ErrorKind::AccessDenied,
            _ => S3ErrorKind::Other,
        };
        // Some servers (Garage) answer a bad signature with AccessDenied rather than
        // SignatureDoesNotMatch: the credentials are wrong, not the policy.
        let lower = message.to_ascii_lowercase();
        let kind = if kind == S3ErrorKind::AccessDenied
            && (lower.contains("signature") || lower.contains("access key"))
        {
            S3ErrorKind::Credentials
        } else {
            kind
        };
        let region = region_in_message(&message).map(String::into_boxed_str);
        let kind = match code {
            Some(
                "PermanentRedirect" | "IncorrectEndpoint" | "IllegalLocationConstraintException",
            ) => S3ErrorKind::WrongRegion,
            Some("AuthorizationHeaderMalformed")
                if region.is_some() || lower.contains("region") =>
            {
                S3ErrorKind::WrongRegion
            }
            _ => kind,
        };
        S3Error {
            kind,
            code: code.map(str::to_owned),
            status,
            message,
            region,
            network: None,
        }
    }

    /// Notes the bucket's region S3 sent in `x-amz-bucket-region`.
    pub fn with_bucket_region(mut self, region: Option<&str>) -> Self {
        if let Some(r) = region.filter(|r| !r.is_empty()) {
            self.region = Some(r.into());
            if matches!(self.status, Some(301 | 400)) || self.kind == S3ErrorKind::WrongRegion {
                self.kind = S3ErrorKind::WrongRegion;
            }
        }
        self
    }

    /// A failure with no response: timeout, refused or broken connection.
    pub fn transport(message: String) -> Self {
        S3Error {
            kind: S3ErrorKind::Transient,
            code: None,
            status: None,
            message,
            region: None,
            network: None,
        }
    }

    /// No answer from `endpoint` (never credentials: a scheme and host), because of `cause`,
    /// after waiting `waited`; `fatal` when retrying cannot help (the endpoint never answered).
    pub fn network(
        endpoint: &str,
        cause: NetworkCause,
        waited: std::time::Duration,
        fatal: bool,
    ) -> Self {
        S3Error {
            kind: if fatal {
                S3ErrorKind::Unreachable
            } else {
                S3ErrorKind::Transient
            },
            code: None,
            status: None,
            message: cause.describe(endpoint, waited),
            region: None,
            network: Some(cause),
        }
    }

    fn hint(&self) -> &'static str {
        match (self.kind, self.code.as_deref()) {
            (S3ErrorKind::NotFound, Some("NoSuchBucket")) => {
                "the bucket does not exist: check its name, the endpoint and the region"
            }
            (S3ErrorKind::NotFound, Some("NoSuchUpload")) => {
                "the multipart upload no longer exists (aborted or expired): run the command again"
            }
            (S3ErrorKind::NotFound, _) => "check the bucket, key, endpoint and region",
            (S3ErrorKind::AccessDenied, _) => {
                "the credentials are not allowed to do this: check the IAM policy or bucket policy"
            }
            (S3ErrorKind::Credentials, _) => {
                "the credentials were refused: check AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, --profile or your SSO session"
            }
            (S3ErrorKind::Integrity, _) => {
                "S3 received bytes that do not match their checksum (corrupted in transit, or the file changed): nothing wrong was stored; run the command again"
            }
            (S3ErrorKind::Throttled, _) => {
                "S3 kept asking to slow down after retries: run again later or lower --concurrency"
            }
            (S3ErrorKind::Transient, _) => {
                "the request kept failing after retries: check the network and endpoint, then run the command again"
            }
            (S3ErrorKind::Unsupported, _) => "this server does not implement the request",
            (S3ErrorKind::Unreachable, _) => {
                "check --endpoint-url (or AWS_ENDPOINT_URL) and the network"
            }
            (S3ErrorKind::PreconditionFailed, _) => {
                "the object changed since tally began reading it: run the command again"
            }
            (S3ErrorKind::WrongRegion, _) => {
                "the bucket is in another region: pass --region with the bucket's region"
            }
            (S3ErrorKind::Other, None) if self.status == Some(400) => {
                "a bad request with no explanation (HEAD replies have no body): check --region and the endpoint"
            }
            (S3ErrorKind::Other, _) => "",
        }
    }
}

impl fmt::Display for S3Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let one_line = |s: &str| s.split_whitespace().collect::<Vec<_>>().join(" ");
        if let Some(cause) = self.network {
            return write!(f, "{} - {}", one_line(&self.message), cause.remedy());
        }
        match (&self.code, self.status) {
            (Some(c), Some(s)) => write!(f, "{c} (HTTP {s})")?,
            (Some(c), None) => write!(f, "{c}")?,
            (None, Some(s)) => write!(f, "HTTP {s}")?,
            (None, None) => f.write_str("no response")?,
        }
        if !self.message.is_empty() {
            write!(f, ": {}", one_line(&self.message))?;
        }
        match (self.kind, &self.region) {
            (S3ErrorKind::WrongRegion, Some(r)) => {
                write!(f, " - the bucket is in region {r}: pass --region {r}")
            }
            _ => match self.hint() {
                "" => Ok(()),
                h => write!(f, " - {h}"),
            },
        }
    }
}

impl std::error::Error for S3Error {}

/// The expected region in AWS's "expecting 'us-east-1'" or a "DATE/REGION/s3/aws4_request" scope.
fn region_in_message(message: &str) -> Option<String> {
    if let Some(rest) = message.split("expecting '").nth(1) {
        return rest.split('\'').next().map(str::to_owned);
    }
    let expected = message.rsplit("expected").next()?;
    let scope = expected.split('\'').nth(1)?;
    let mut parts = scope.split('/');
    let (_date, region, service) = (parts.next()?, parts.next()?, parts.next()?);
    (service == "s3").then(|| region.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

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
