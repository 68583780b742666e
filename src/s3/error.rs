//! What went wrong with an S3 request: its kind (whether retrying can help), the network cause when
//! the endpoint never answered, and a one-line message that says what to do.

use std::fmt;

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
                "the server refused bytes that did not match their checksum (corrupted in transit, or the file changed); what it kept at the key, if anything, is not known: run the command again (`tally verify --download` then compares the bytes)"
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
            (S3ErrorKind::Other, Some("InvalidStorageClass")) => {
                "this server does not offer that storage class: leave out --storage-class (the bucket's default) or give one it offers"
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
