//! SDK errors reduced to tally's [`S3Error`]: one line each, never credentials or signatures.

use aws_sdk_s3::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};

use crate::error::{S3Error, S3ErrorKind};

/// Reduces an SDK error to an [`S3Error`]. Uses only the error code, message, status and the
/// transport's description: no request headers, so no signatures or keys.
pub(crate) fn s3_error<E>(e: SdkError<E, aws_sdk_s3::config::http::HttpResponse>) -> S3Error
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
        SdkError::TimeoutError(_) => S3Error::transport("timed out".into()),
        _ => {
            let text = DisplayErrorContext(&e).to_string();
            if text.contains("credentials") || text.contains("identity") {
                S3Error {
                    kind: S3ErrorKind::Credentials,
                    code: None,
                    status: None,
                    message: "no usable AWS credentials found".into(),
                    region: None,
                }
            } else {
                S3Error::transport(text)
            }
        }
    }
}
