//! [`SdkS3`]: the S3 traits over aws-sdk-s3 (client set-up, retries and timeouts, the operations).
//!
//! By concern: the client's set-up here; [`convert`] (tally's types to request fields and replies
//! back), [`read`] (HEAD, GetObjectAttributes, ranged GETs), [`write`] (PutObject and the
//! multipart operations), [`listing`] (the paged listings) and [`tagging`].
use std::time::Duration;

use aws_config::BehaviorVersion;
use aws_config::retry::RetryConfig;
use aws_sdk_s3::config::{Region, RequestChecksumCalculation, ResponseChecksumValidation};

use super::endpoint::{is_local_or_ip, plain_http_warning};
use super::watch::{NEVER_ANSWERED, Watch, WatchedClient, default_client};
use crate::s3::ConnectError;
use crate::s3::Connection;

/// [`super::S3Api`] over aws-sdk-s3.
#[derive(Debug, Clone)]
pub struct SdkS3 {
    client: aws_sdk_s3::Client,
    /// The listings' client: the same configuration over its own connection pool (see
    /// [`lists_client`]).
    lists: aws_sdk_s3::Client,
    endpoint: Option<String>,
    /// The endpoint as errors name it.
    display: String,
    timeout: Duration,
    /// The process's bandwidth limit, if any (`--max-bandwidth`).
    bandwidth: Option<std::sync::Arc<super::throttle::Bandwidth>>,
}

/// The slowest body transfer tally waits for before it calls a request stalled: 64 KiB/s.
const MIN_BODY_RATE: u64 = 64 * 1024;

/// Per-request timeout for a request carrying `body_len` bytes: the base plus the time the body
/// needs at [`MIN_BODY_RATE`].
fn attempt_timeout(base: Duration, body_len: u64) -> Duration {
    base + Duration::from_secs(body_len / MIN_BODY_RATE)
}

/// A config override giving one request its own attempt timeout.
fn timeout_override(d: Duration) -> aws_sdk_s3::config::Builder {
    aws_sdk_s3::config::Builder::default().timeout_config(
        aws_sdk_s3::config::timeout::TimeoutConfig::builder()
            .operation_attempt_timeout(d)
            .build(),
    )
}

impl SdkS3 {
    /// Builds a client from the standard AWS chain (env, profile, SSO, instance metadata) and the
    /// overrides in `conn`.
    ///
    /// The SDK's own request checksums are turned off: tally sends precomputed ones.
    /// The identity is chosen by [`super::identity`]: a profile named by `--profile` or
    /// `AWS_PROFILE` supplies the credentials alone (environment keys are not used), and must exist.
    pub async fn connect(conn: &Connection) -> Result<SdkS3, ConnectError> {
        let chosen = super::identity::resolve(conn.profile.as_deref()).await?;
        let mut loader = aws_config::defaults(BehaviorVersion::latest());
        if let Some(p) = &chosen.profile {
            loader = loader.profile_name(p);
        }
        if let Some(r) = &conn.region {
            loader = loader.region(Region::new(r.clone()));
        }
        let mut shared = loader.load().await;
        if let Some(p) = &chosen.profile {
            let creds = super::identity::profile_provider(p, shared.region().cloned());
            shared = shared.into_builder().credentials_provider(creds).build();
        } else if chosen.chain_only {
            // Neither keys nor a profile: ask the rest of the chain once, so that finding nothing
            // is one line before anything is read or sent (not one error per file).
            super::identity::check_chain(&shared).await?;
        }
        SdkS3::from_shared_config(&shared, conn)
    }

    /// Builds a client from an already loaded AWS configuration (credentials, region) and the
    /// overrides in `conn`. `conn.region` and `conn.profile` are applied by [`SdkS3::connect`].
    pub fn from_shared_config(
        shared: &aws_config::SdkConfig,
        conn: &Connection,
    ) -> Result<SdkS3, ConnectError> {
        let endpoint = conn
            .endpoint_url
            .clone()
            .or_else(|| shared.endpoint_url().map(str::to_owned));
        let mut b = aws_sdk_s3::config::Builder::from(shared)
            .request_checksum_calculation(RequestChecksumCalculation::WhenRequired)
            .response_checksum_validation(ResponseChecksumValidation::WhenRequired)
            // Adaptive: standard retries (exponential backoff with jitter, a retry-token bucket
            // shared by every request of the client) plus a client-side rate limiter that slows
            // the whole transfer down when S3 throttles, instead of every task hammering.
            .retry_config(
                RetryConfig::adaptive()
                    .with_max_attempts(8)
                    .with_initial_backoff(Duration::from_millis(200))
                    .with_max_backoff(Duration::from_secs(20)),
            )
            .timeout_config(
                aws_sdk_s3::config::timeout::TimeoutConfig::builder()
                    .connect_timeout(conn.timeout.min(Duration::from_secs(10)))
                    .operation_attempt_timeout(conn.timeout)
                    .build(),
            );
        if shared.region().is_none() {
            if endpoint.is_some() {
                b = b.region(Region::from_static("us-east-1"));
            } else {
                return Err(ConnectError(
                    "no AWS region configured: pass --region, set AWS_REGION, or set region in your profile"
                        .into(),
                ));
            }
        }
        if let Some(e) = &endpoint {
            if !(e.starts_with("http://") || e.starts_with("https://")) {
                return Err(ConnectError(format!(
                    "endpoint URL '{e}' must start with http:// or https://"
                )));
            }
            b = b.endpoint_url(e);
        }
        if let Some(w) = endpoint.as_deref().and_then(plain_http_warning) {
            tracing::warn!("{w}");
        }
        let path_style = conn.path_style || endpoint.as_deref().is_some_and(is_local_or_ip);
        b = b.force_path_style(path_style);
        let watch = Watch::new(NEVER_ANSWERED, conn.timeout);
        b = b.http_client(WatchedClient {
            inner: shared.http_client().unwrap_or_else(default_client),
            watch: watch.clone(),
        });
        let conf = b.build();
        let lists = lists_client(&conf, shared.http_client().is_none(), watch);
        let display = endpoint.clone().unwrap_or_else(|| {
            let region = conf.region().map_or("us-east-1", |r| r.as_ref());
            format!("https://s3.{region}.amazonaws.com")
        });
        Ok(SdkS3 {
            client: aws_sdk_s3::Client::from_conf(conf),
            lists,
            endpoint,
            display,
            timeout: conn.timeout,
            bandwidth: conn.max_bandwidth.map(super::throttle::Bandwidth::shared),
        })
    }
}

/// The client the listings (ListObjectsV2, ListParts, ListMultipartUploads) are sent with: the
/// same configuration, and, over the default HTTPS client, its own connection pool.
///
/// hyper keeps each connection's read buffer at the largest size it grew to, and a listing page
/// (up to 1,000 keys, a few hundred KiB of XML) grows it to about 400 KiB. With one pool, the
/// pages of a long run land on ever more of its connections (the pool hands out whichever came
/// back last), so a run's memory grew with its number of files (docs/many-files.md, Memory).
/// Apart, the pages reuse the few connections of their own pool. The watch is shared: a reply
/// on either pool shows the endpoint answers.
fn lists_client(
    conf: &aws_sdk_s3::Config,
    default_http: bool,
    watch: std::sync::Arc<Watch>,
) -> aws_sdk_s3::Client {
    if !default_http {
        // A client given by the caller's configuration (tests): used for both.
        return aws_sdk_s3::Client::from_conf(conf.clone());
    }
    let own = WatchedClient {
        inner: default_client(),
        watch,
    };
    aws_sdk_s3::Client::from_conf(conf.to_builder().http_client(own).build())
}

#[macro_use]
mod convert;
mod listing;
mod read;
mod tagging;
mod write;
