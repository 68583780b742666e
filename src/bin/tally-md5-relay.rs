//! `tally-md5-relay`: the Lambda function of the serverless remote MD5 (`deploy/relay/`). One
//! binary, deployed twice: `TALLY_RELAY_STEP=hash` and `TALLY_RELAY_STEP=tag` (see
//! [`tally::relay`]). The S3 endpoint is AWS's unless `AWS_ENDPOINT_URL_S3` or
//! `AWS_ENDPOINT_URL` names another (path-style for localhost and IP addresses, as in tally).

use lambda_runtime::{LambdaEvent, service_fn};
use tally::relay::{self, RelayConfig, RelayDoc};
use tally::s3::Connection;
use tally::s3::SdkS3;

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_ansi(false)
        .with_writer(std::io::stderr)
        .init();
    let cfg = match RelayConfig::from_env(|k| std::env::var(k).ok()) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("tally-md5-relay: {e}");
            std::process::exit(2);
        }
    };
    let conn = Connection {
        endpoint_url: std::env::var("AWS_ENDPOINT_URL_S3")
            .or_else(|_| std::env::var("AWS_ENDPOINT_URL"))
            .ok()
            .filter(|e| !e.is_empty()),
        ..Connection::default()
    };
    let s3 = match SdkS3::connect(&conn).await {
        Ok(s) => s,
        Err(e) => {
            eprintln!("tally-md5-relay: {e}");
            std::process::exit(2);
        }
    };
    let (s3, cfg) = (&s3, &cfg);
    lambda_runtime::run(service_fn(move |ev: LambdaEvent<RelayDoc>| async move {
        relay::handle(s3, cfg, ev).await
    }))
    .await
}
