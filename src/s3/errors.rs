//! SDK errors reduced to tally's [`S3Error`]: one line each, never credentials or signatures.

use std::time::Duration;

use aws_sdk_s3::error::{ProvideErrorMetadata, SdkError};

use super::watch::NetFailure;
use crate::s3::{NetworkCause, S3Error, S3ErrorKind};

/// Reduces an SDK error of a request to `endpoint` to an [`S3Error`]. Uses only the error code,
/// message, status and the transport's cause: no request headers, so no signatures or keys, and
/// no Debug dump of the HTTP client's types.
pub(crate) fn s3_error<E>(
    e: SdkError<E, aws_sdk_s3::config::http::HttpResponse>,
    endpoint: &str,
) -> S3Error
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    match &e {
        SdkError::ServiceError(se) => {
            let status = se.raw().status().as_u16();
            let err = se.err();
            S3Error::from_response(
                err.code(),
                Some(status),
                err.message().unwrap_or_default().to_owned(),
            )
            .with_bucket_region(se.raw().headers().get("x-amz-bucket-region"))
        }
        SdkError::ResponseError(r) => S3Error::from_response(
            None,
            Some(r.raw().status().as_u16()),
            "unreadable response".into(),
        )
        .with_bucket_region(r.raw().headers().get("x-amz-bucket-region")),
        SdkError::TimeoutError(_) => {
            S3Error::network(endpoint, NetworkCause::TimedOut, Duration::ZERO, false)
        }
        _ => {
            let chain = chain(&e);
            if let Some(f) = chain.iter().find_map(|s| s.downcast_ref::<NetFailure>()) {
                return S3Error::network(&f.endpoint, f.cause, f.waited, f.fatal);
            }
            let text: Vec<String> = chain.iter().map(|s| s.to_string()).collect();
            if text
                .iter()
                .any(|t| t.contains("credentials") || t.contains("identity"))
            {
                S3Error {
                    kind: S3ErrorKind::Credentials,
                    code: None,
                    status: None,
                    message: "no usable AWS credentials found".into(),
                    region: None,
                    network: None,
                }
            } else {
                S3Error::transport(format!(
                    "{endpoint}: {}",
                    text.last().map_or("unknown failure", String::as_str)
                ))
            }
        }
    }
}

/// An error and its sources, outermost first.
fn chain<'a>(
    e: &'a (dyn std::error::Error + 'static),
) -> Vec<&'a (dyn std::error::Error + 'static)> {
    std::iter::successors(Some(e), |s| s.source()).collect()
}
