//! The command line as clap sees it; [`Cli::into_command`] turns it into validated settings.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use crate::config::{Connection, DEFAULT_CONCURRENCY, UploadConfig};
use crate::error::Error;
use crate::hash::ChecksumAlgorithm;
use crate::plan::parse_size;

const EXIT_CODES: &str = "Exit codes:\n  0  success\n  1  integrity mismatch: a checksum or ETag S3 reports differs from the local one, or S3 rejected bytes that did not match their checksum\n  2  any other error (bad input, missing file or bucket, credentials, network, interrupted)";

/// tally: move large files into S3 and prove every byte arrived.
#[derive(Debug, Parser)]
#[command(name = "tally", version, about, after_help = EXIT_CODES)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// tally's subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Upload a file with per-part checksums that S3 verifies on receipt.
    #[command(after_help = EXIT_CODES)]
    Upload(UploadArgs),
}

/// Flags shared by every command that talks to S3.
#[derive(Debug, Args)]
pub struct ConnectionArgs {
    /// S3 endpoint URL (default: AWS, or AWS_ENDPOINT_URL / AWS_ENDPOINT_URL_S3).
    #[arg(long, value_name = "URL")]
    pub endpoint_url: Option<String>,
    /// AWS region (default: AWS_REGION or the profile's).
    #[arg(long)]
    pub region: Option<String>,
    /// Named profile from ~/.aws/config (default: AWS_PROFILE or "default").
    #[arg(long)]
    pub profile: Option<String>,
    /// Use path-style addressing (automatic for localhost and IP endpoints).
    #[arg(long)]
    pub path_style: bool,
}

/// Output flags.
#[derive(Debug, Args)]
pub struct OutputArgs {
    /// Print one JSON report on standard output instead of text.
    #[arg(long)]
    pub json: bool,
    /// Print nothing but errors.
    #[arg(long, short)]
    pub quiet: bool,
    /// Log what tally does on standard error (-v info, -vv debug); RUST_LOG also works.
    #[arg(long, short, action = clap::ArgAction::Count)]
    pub verbose: u8,
}

/// `tally upload FILE s3://BUCKET/KEY`.
#[derive(Debug, Args)]
pub struct UploadArgs {
    /// The local file.
    pub file: PathBuf,
    /// Destination, s3://BUCKET/KEY (a key ending in / gets the file name appended).
    pub target: String,
    /// Part size, e.g. 100MiB, 1GiB (5MiB..5GiB); grows by itself so no object needs more than 10,000 parts.
    #[arg(long, default_value = "100MiB", value_parser = parse_size)]
    pub part_size: u64,
    /// Parts in flight at most.
    #[arg(long, default_value_t = DEFAULT_CONCURRENCY)]
    pub concurrency: usize,
    /// Per-part checksum that S3 verifies on receipt.
    #[arg(long, value_enum, default_value = "sha256")]
    pub checksum: ChecksumAlgorithm,
    #[command(flatten)]
    #[allow(missing_docs)]
    pub connection: ConnectionArgs,
    #[command(flatten)]
    #[allow(missing_docs)]
    pub output: OutputArgs,
}

impl ConnectionArgs {
    /// The connection settings.
    pub fn to_connection(&self) -> Connection {
        Connection {
            endpoint_url: self.endpoint_url.clone(),
            region: self.region.clone(),
            profile: self.profile.clone(),
            path_style: self.path_style,
        }
    }
}

impl UploadArgs {
    /// Validates the arguments into an upload configuration.
    pub fn to_config(&self) -> Result<UploadConfig, Error> {
        UploadConfig::new(
            self.file.clone(),
            &self.target,
            self.part_size,
            self.concurrency,
            self.checksum,
        )
    }
}

/// Prints a clap error as one line (help and version print as usual) and returns the exit code.
pub fn usage_error(e: clap::Error) -> i32 {
    use clap::error::ErrorKind;
    if matches!(
        e.kind(),
        ErrorKind::DisplayHelp
            | ErrorKind::DisplayVersion
            | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand
    ) {
        e.exit();
    }
    let text = e.to_string();
    let msg: Vec<&str> = text
        .lines()
        .map(str::trim)
        .take_while(|l| !l.starts_with("Usage:") && !l.starts_with("For more information"))
        .filter(|l| !l.is_empty())
        .collect();
    let msg = msg.join(" ");
    let msg = msg.strip_prefix("error: ").unwrap_or(&msg);
    eprintln!("tally: error: {msg} (see tally --help)");
    crate::error::EXIT_ERROR
}
