//! `tm-harness FILE BUCKET KEY`: one upload with the AWS Rust transfer manager at its defaults
//! (8 MiB parts, the SDK's default CRC64NVME full-object checksum, unsigned bodies), against the
//! endpoint in AWS_ENDPOINT_URL with path-style addressing. Used by tally's scripts/bench.
//!
//! One change for Garage: the transfer manager sends `x-amz-checksum-type` on
//! CompleteMultipartUpload without a full-object value, which Garage rejects (AWS accepts it), so
//! the header is dropped there.

use aws_sdk_s3::config::interceptors::BeforeTransmitInterceptorContextMut;
use aws_sdk_s3::config::{ConfigBag, Intercept, RuntimeComponents};
use aws_sdk_s3_transfer_manager::io::InputStream;

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
    let [_, path, bucket, key] = &args[..] else {
        return Err("usage: tm-harness FILE BUCKET KEY".into());
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
    let handle = tm
        .upload()
        .bucket(bucket)
        .key(key)
        .body(InputStream::from_path(path)?)
        .initiate()?;
    handle.join().await?;
    Ok(())
}
