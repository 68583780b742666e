//! The command line as clap sees it; [`Cli::into_command`] turns it into validated settings.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use crate::config::{Connection, DEFAULT_CONCURRENCY, ResumeOptions, UploadConfig};
use crate::error::Error;
use crate::hash::ChecksumAlgorithm;
use crate::plan::parse_size;

const EXIT_CODES: &str = "Exit codes:\n  0  success\n  1  integrity mismatch: a checksum or ETag S3 reports differs from the local one, or S3 rejected bytes that did not match their checksum\n  2  any other error (bad input, missing file or bucket, credentials, network, interrupted)";

const VERIFY_EXIT_CODES: &str = "Exit codes:\n  0  the object is the local file\n  1  they differ (every differing part is named)\n  2  could not verify (missing object or bucket, access denied, not a file, network), with the reason";

/// `tally verify FILE s3://BUCKET/KEY`.
#[derive(Debug, Args)]
pub struct VerifyArgs {
    /// The local file.
    pub file: PathBuf,
    /// The object, s3://BUCKET/KEY.
    pub target: String,
    /// Compare the bytes themselves (parallel ranged GETs, nothing stored), whatever else is available.
    #[arg(long)]
    pub download: bool,
    /// Also compare the ETag when a strong checksum already decides (costs an MD5 of the file).
    #[arg(long)]
    pub etag: bool,
    /// Retry with backoff while the object is missing or differs, for up to this long (e.g. 30s, 5m).
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub wait: Option<std::time::Duration>,
    #[command(flatten)]
    #[allow(missing_docs)]
    pub connection: ConnectionArgs,
    #[command(flatten)]
    #[allow(missing_docs)]
    pub output: OutputArgs,
}

const MD5_EXIT_CODES: &str = "Exit codes:\n  0  done (and tagged, with --tag)\n  2  error (the MD5 is still printed if it was computed but tagging failed)\n  3  not finished (--time-limit or Ctrl-C/SIGTERM): the state is saved; run the same command again with the same --state";

/// `tally md5 s3://BUCKET/KEY`.
#[derive(Debug, Args)]
pub struct Md5Args {
    /// The object, s3://BUCKET/KEY.
    pub target: String,
    /// Save the hasher's state and offset here (regularly, on Ctrl-C/SIGTERM and on --time-limit);
    /// a later run with the same file continues from there.
    #[arg(long, value_name = "FILE")]
    pub state: Option<PathBuf>,
    /// Stop cleanly before this much time (e.g. 14m for a 15-minute function), state saved, exit 3.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub time_limit: Option<std::time::Duration>,
    /// Store the MD5 as an object tag (default name: md5), merged with the existing tags.
    #[arg(long, value_name = "NAME", num_args = 0..=1, default_missing_value = "md5")]
    pub tag: Option<String>,
    #[command(flatten)]
    #[allow(missing_docs)]
    pub connection: ConnectionArgs,
    #[command(flatten)]
    #[allow(missing_docs)]
    pub output: OutputArgs,
}

const DOWNLOAD_EXIT_CODES: &str = "Exit codes:\n  0  downloaded and checked (or already there, proven identical)\n  1  bytes that never matched S3's checksum or ETag, even fetched again (the part is named); nothing renamed\n  2  any other error (missing object, destination folder, disk full, object replaced during the download, network)";

/// `tally download s3://BUCKET/KEY DEST`.
#[derive(Debug, Args)]
pub struct DownloadArgs {
    /// The object, s3://BUCKET/KEY.
    pub source: String,
    /// The file to write; an existing directory, or a path ending in /, gets the key's last segment.
    pub dest: PathBuf,
    /// Replace an existing file even when it is not proven identical to the object.
    #[arg(long)]
    pub force: bool,
    /// Parts in flight at most.
    #[arg(long, default_value_t = DEFAULT_CONCURRENCY)]
    pub concurrency: usize,
    #[command(flatten)]
    #[allow(missing_docs)]
    pub connection: ConnectionArgs,
    #[command(flatten)]
    #[allow(missing_docs)]
    pub output: OutputArgs,
}

/// `tally hash FILE`.
#[derive(Debug, Args)]
pub struct HashArgs {
    /// The local file.
    pub file: PathBuf,
    /// Part size, as for upload.
    #[arg(long, default_value = "100MiB", value_parser = parse_size)]
    pub part_size: u64,
    /// Checksum algorithm, as for upload.
    #[arg(long, default_value = "sha256", value_parser = checksum_parser())]
    pub checksum: ChecksumAlgorithm,
    #[command(flatten)]
    #[allow(missing_docs)]
    pub output: OutputArgs,
}

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
    /// Upload a file with per-part checksums that S3 verifies on receipt; resumes an interrupted upload.
    #[command(after_help = EXIT_CODES)]
    Upload(UploadArgs),
    /// Download an object, each part checked against S3's checksums before it counts; resumable.
    #[command(after_help = DOWNLOAD_EXIT_CODES)]
    Download(DownloadArgs),
    /// Compare a local file with an object, part by part, whoever uploaded it.
    #[command(after_help = VERIFY_EXIT_CODES)]
    Verify(VerifyArgs),
    /// Print, without any network, the checksums and ETag an upload with these settings would produce.
    Hash(HashArgs),
    /// The full MD5 of an object in S3 (multipart ETags are not MD5s); resumable; can tag the object.
    #[command(after_help = MD5_EXIT_CODES)]
    Md5(Md5Args),
    /// List multipart uploads in progress (and the local manifest of each, if any).
    Uploads(UploadsArgs),
    /// Abort multipart uploads in progress, so their parts are no longer stored and billed.
    Abort(AbortArgs),
    /// Print a completion script for a shell: `tally completions bash > /etc/bash_completion.d/tally`.
    Completions(CompletionsArgs),
    /// Print tally's manual page (roff, generated from these definitions): `tally man > tally.1`.
    Man,
}

/// `tally completions SHELL`.
#[derive(Debug, Args)]
pub struct CompletionsArgs {
    /// The shell: bash, zsh, fish, elvish or powershell.
    pub shell: clap_complete::Shell,
}

/// `tally uploads s3://BUCKET[/PREFIX]`.
#[derive(Debug, Args)]
pub struct UploadsArgs {
    /// s3://BUCKET or s3://BUCKET/PREFIX
    pub target: String,
    #[command(flatten)]
    #[allow(missing_docs)]
    pub connection: ConnectionArgs,
    #[command(flatten)]
    #[allow(missing_docs)]
    pub output: OutputArgs,
}

/// `tally abort s3://BUCKET/KEY --upload-id ID` or `tally abort s3://BUCKET[/PREFIX] --all-older-than D`.
#[derive(Debug, Args)]
#[command(group(clap::ArgGroup::new("which").required(true).args(["upload_id", "all_older_than"])))]
pub struct AbortArgs {
    /// s3://BUCKET/KEY with --upload-id; s3://BUCKET[/PREFIX] with --all-older-than
    pub target: String,
    /// The upload to abort.
    #[arg(long)]
    pub upload_id: Option<String>,
    /// Abort every upload under the prefix started longer ago than this (e.g. 36h, 7d).
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub all_older_than: Option<std::time::Duration>,
    #[command(flatten)]
    #[allow(missing_docs)]
    pub connection: ConnectionArgs,
    #[command(flatten)]
    #[allow(missing_docs)]
    pub output: OutputArgs,
}

/// Parses `90s`, `15m`, `36h`, `7d`.
pub fn parse_duration(text: &str) -> Result<std::time::Duration, String> {
    let t = text.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (n, unit) = t.split_at(split);
    let n: u64 = n
        .parse()
        .map_err(|_| format!("'{text}' is not a duration: write e.g. 90s, 15m, 36h or 7d"))?;
    let secs = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => {
            return Err(format!(
                "'{text}' is not a duration: write e.g. 90s, 15m, 36h or 7d"
            ));
        }
    };
    Ok(std::time::Duration::from_secs(n.saturating_mul(secs)))
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
    /// How long S3 may take to answer one request before it is retried, beyond the time its body
    /// needs at 64 KiB/s (a stalled connection is abandoned, the request sent again).
    #[arg(long, value_name = "DURATION", default_value = "60s", value_parser = parse_duration)]
    pub timeout: std::time::Duration,
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
    #[arg(long, default_value = "sha256", value_parser = checksum_parser())]
    pub checksum: ChecksumAlgorithm,
    /// Manifest (resume journal) path; default: a file in the state directory
    /// ($TALLY_STATE_DIR, $XDG_STATE_HOME/tally or ~/.local/state/tally) keyed by file and destination.
    #[arg(long, value_name = "PATH")]
    pub manifest: Option<PathBuf>,
    /// Discard the manifest of an interrupted upload (aborting that upload) and start again.
    #[arg(long)]
    pub restart: bool,
    /// On resume, trust the manifest's checksums for parts S3 holds instead of re-reading them from
    /// the file (faster; a file changed in place without changing size or time goes unnoticed).
    #[arg(long)]
    pub trust_manifest: bool,
    /// Keep the manifest after success, as an audit record of every part's checksum.
    #[arg(long)]
    pub keep_manifest: bool,
    /// Also compute each part's MD5 and send it as Content-MD5, so the multipart ETag is predicted
    /// and checked (MD5 costs ~2.6x SHA-256 here; S3 already verifies each part's checksum).
    #[arg(long)]
    pub content_md5: bool,
    /// Skip the check after completion that reads the object's checksums back from S3.
    #[arg(long)]
    pub no_verify: bool,
    /// Compute the whole file's MD5 during the upload's single read and store it as an object tag
    /// (default name: md5).
    #[arg(long, value_name = "NAME", num_args = 0..=1, default_missing_value = "md5")]
    pub md5_tag: Option<String>,
    /// After completing, read the object back and compare its MD5 with the file's, retrying with
    /// backoff for up to DURATION (default 30s) while it differs; exit 1 if it never matches.
    #[arg(long, value_name = "DURATION", num_args = 0..=1, default_missing_value = "30s", value_parser = parse_duration)]
    pub read_back: Option<std::time::Duration>,
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
            timeout: self.timeout,
        }
    }
}

impl UploadArgs {
    /// Validates the arguments into an upload configuration.
    pub fn to_config(&self) -> Result<UploadConfig, Error> {
        let mut cfg = UploadConfig::new(
            self.file.clone(),
            &self.target,
            self.part_size,
            self.concurrency,
            self.checksum,
        )?;
        cfg.resume = ResumeOptions {
            manifest: self.manifest.clone(),
            restart: self.restart,
            trust_manifest: self.trust_manifest,
            keep_manifest: self.keep_manifest,
            state_dir: None,
        };
        cfg.verify = !self.no_verify;
        cfg.content_md5 = self.content_md5;
        cfg.md5_tag = self.md5_tag.clone();
        cfg.read_back = self.read_back;
        Ok(cfg)
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

/// `--checksum`: the algorithms listed in `--help`, parsed without clap knowing the type.
fn checksum_parser() -> impl clap::builder::TypedValueParser<Value = ChecksumAlgorithm> {
    use clap::builder::TypedValueParser as _;
    clap::builder::PossibleValuesParser::new(["sha256", "sha1", "crc32", "crc32c", "crc64nvme"])
        .map(|s| {
            s.parse::<ChecksumAlgorithm>()
                .expect("every listed name parses")
        })
}
