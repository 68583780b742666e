//! Where and as whom to connect.

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
    /// Bytes per second at most, every connection of the process together (`--max-bandwidth`).
    pub max_bandwidth: Option<u64>,
}

impl Default for Connection {
    fn default() -> Self {
        Connection {
            endpoint_url: None,
            region: None,
            profile: None,
            path_style: false,
            timeout: DEFAULT_TIMEOUT,
            max_bandwidth: None,
        }
    }
}

/// Default for [`Connection::timeout`].
pub const DEFAULT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(60);

/// Why a client could not be built from the configuration (no region, a malformed endpoint URL):
/// one line that says what to set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectError(pub String);

impl std::fmt::Display for ConnectError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ConnectError {}
