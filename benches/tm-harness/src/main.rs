//! `tm-harness FILE BUCKET KEY [sha256]`: one upload with the AWS Rust transfer manager at its
//! defaults (8 MiB parts, the SDK's default CRC64NVME full-object checksum, unsigned bodies), or
//! with SHA-256 composite checksums, against the endpoint in AWS_ENDPOINT_URL with path-style
//! addressing. Used by tally's scripts/bench.
//!
//! One change for Garage: the transfer manager sends `x-amz-checksum-type` on
//! CompleteMultipartUpload without a full-object value, which Garage rejects (AWS accepts it), so
//! the header is dropped there.

use aws_sdk_s3::config::interceptors::BeforeTransmitInterceptorContextMut;
use aws_sdk_s3::config::{ConfigBag, Intercept, RuntimeComponents};
use aws_sdk_s3_transfer_manager::io::InputStream;
use aws_sdk_s3_transfer_manager::operation::upload::ChecksumStrategy;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

#[derive(Debug)]
struct DropChecksumTypeOnComplete;

impl Intercept for DropChecksumTypeOnComplete {
    fn name(&self) -> &'static str {
        "DropChecksumTypeOnComplete"
    }

    fn modify_before_signing(
        &self,
        ctx: &mut BeforeTransmitInterceptorContextMut<'_>,
        _rc: &RuntimeComponents,
        _cfg: &mut ConfigBag,
    ) -> Result<(), aws_sdk_s3::error::BoxError> {
        let req = ctx.request_mut();
        if req.method() == "POST" && req.uri().contains("uploadId=") {
            req.headers_mut().remove("x-amz-checksum-type");
        }
        Ok(())
    }
}

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    let args: Vec<String> = std::env::args().collect();
    let (path, bucket, key, sha256) = match &args[..] {
        [_, p, b, k] => (p, b, k, false),
        [_, p, b, k, c] if c == "sha256" => (p, b, k, true),
        _ => return Err("usage: tm-harness FILE BUCKET KEY [sha256]".into()),
    };
    let shared = aws_config::load_defaults(aws_config::BehaviorVersion::latest()).await;
    let conf = aws_sdk_s3::config::Builder::from(&shared)
        .force_path_style(true)
        .interceptor(DropChecksumTypeOnComplete)
        .build();
    let client = aws_sdk_s3::Client::from_conf(conf);
    let tm = aws_sdk_s3_transfer_manager::Client::new(
        aws_sdk_s3_transfer_manager::Config::builder().client(client).build(),
    );
    let mut upload = tm
        .upload()
        .bucket(bucket)
        .key(key)
        .body(InputStream::from_path(path)?);
    if sha256 {
        upload = upload.checksum_strategy(
            ChecksumStrategy::with_calculated_sha256_composite_if_multipart(),
        );
    }
    let handle = upload.initiate()?;
    handle.join().await?;
    Ok(())
}
