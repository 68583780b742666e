//! The command line as clap sees it. `app/job.rs` resolves each [`Command`] once into a
//! validated job (through [`UploadArgs::to_config`], [`TreeArgs::walk_options`],
//! [`ConnectionArgs::to_connection`], ...) before it runs.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use crate::config::{DEFAULT_CONCURRENCY, ResumeOptions, UploadConfig};
use crate::error::Error;
use crate::hash::FileHashFormat;
use crate::s3::Connection;
use crate::vocab::ChecksumAlgorithm;
use crate::vocab::{ObjectSettings, StorageClass};

/// The formats `--file-hash` takes, as one comma-separated value (an alias: clap would read a
/// `Vec` as repeated values).
pub type FileHashList = Vec<FileHashFormat>;
use crate::vocab::{parse_duration, parse_size};

macro_rules! exit_codes {
    () => {
        "Exit codes:\n  0  success (for a directory: every file is in S3 and proven)\n  1  integrity mismatch: a checksum or ETag S3 reports differs from the local one, or S3 rejected bytes that did not match their checksum\n  2  any other error (bad input, missing file or bucket, credentials, network, interrupted; for a directory: any file that could not be uploaded or proven, named in the report)"
    };
}

const EXIT_CODES: &str = exit_codes!();

const VERIFY_EXIT_CODES: &str = "Exit codes:\n  0  the object is the local file (for a directory: every file is its object)\n  1  they differ (every differing part is named; for a directory: some file differs)\n  2  could not verify (missing object or bucket, access denied, not a file, network), with the reason";

/// `tally verify FILE s3://BUCKET/KEY` or `tally verify DIR s3://BUCKET/PREFIX/`.
#[derive(Debug, Args)]
pub struct VerifyArgs {
    /// The local file, or a directory: every regular file under it.
    pub file: PathBuf,
    /// The object, s3://BUCKET/KEY; for a directory, s3://BUCKET/PREFIX/ (each file is compared
    /// with PREFIX + its path under the directory).
    pub target: String,
    #[command(flatten)]
    #[allow(missing_docs)]
    pub tree: TreeArgs,
    /// Compare the bytes themselves (parallel ranged GETs, nothing stored), whatever else is available.
    #[arg(long)]
    pub download: bool,
    /// Also compare the ETag when a strong checksum already decides (costs an MD5 of the file).
    #[arg(long)]
    pub etag: bool,
    /// Retry with backoff while the object is missing or differs, for up to this long (e.g. 30s, 5m).
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub wait: Option<std::time::Duration>,
    /// Also write a self-contained HTML report to hand over (what, where, sizes, checksums,
    /// what proved each file, failures first; docs/report.md).
    #[arg(long, value_name = "FILE.html")]
    pub report: Option<PathBuf>,
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
    /// The object, s3://BUCKET/KEY; or every object under a prefix, s3://BUCKET/PREFIX/.
    pub source: String,
    /// The file to write; an existing directory, or a path ending in /, gets the key's last segment.
    /// For a prefix: the folder the objects go into (it must exist).
    pub dest: PathBuf,
    /// Replace an existing file even when it is not proven identical to the object.
    #[arg(long)]
    pub force: bool,
    /// For a prefix: list what the run would download, compare first or refuse, and why;
    /// nothing is written (no folder made), no object read.
    #[arg(long)]
    pub dryrun: bool,
    /// Requests in flight at most [default: 64]. Left out, a prefix download's small objects
    /// (at most 8 MiB, one GET each) go up to twice as many at once (128): each is a round trip
    /// with little on the wire (docs/many-files.md).
    #[arg(long)]
    pub concurrency: Option<usize>,
    /// Do not fetch a part again on other connections (in ranges, for parts of 8 MiB or more) when
    /// it arrives far slower than the others (on by default: the part is hashed and recorded from
    /// the new fetch only; see docs/link.md).
    #[arg(long = "no-hedge", action = clap::ArgAction::SetFalse)]
    pub hedge: bool,
    /// Accepted for scripts written when fetching stragglers again was opt-in; it is the default.
    #[arg(long = "hedge", hide = true, conflicts_with = "hedge")]
    pub hedge_default: bool,
    #[command(flatten)]
    #[allow(missing_docs)]
    pub tree: TreeArgs,
    /// Prefix downloads: after every object is here, add an ASC MHL generation (process
    /// "transfer", location = DIR) to DIR/ascmhl/ recording each file's hashes (a tree that came
    /// with an ascmhl/ history is checked against it with or without this flag).
    #[arg(long)]
    pub mhl: bool,
    /// Also write a self-contained HTML report to hand over (what, where, sizes, checksums,
    /// what proved each file, failures first; docs/report.md).
    #[arg(long, value_name = "FILE.html")]
    pub report: Option<PathBuf>,
    #[command(flatten)]
    #[allow(missing_docs)]
    pub connection: ConnectionArgs,
    #[command(flatten)]
    #[allow(missing_docs)]
    pub output: OutputArgs,
}

/// `tally hash FILE|DIR`.
#[derive(Debug, Args)]
pub struct HashArgs {
    /// The local file, or a directory: every regular file under it, in S3 key order.
    pub path: PathBuf,
    /// Part size, as for upload (auto: as upload chooses it for the file).
    #[arg(long, default_value = "auto", value_parser = parse_part_size)]
    pub part_size: u64,
    /// Checksum algorithm, as for upload.
    #[arg(long, default_value = "sha256", value_parser = checksum_parser())]
    pub checksum: ChecksumAlgorithm,
    /// Whole-file hashes, as for upload: xxh64, xxh128, xxh3, md5, sha1, sha256, c4.
    #[arg(long, value_name = "FORMATS", value_parser = file_hash_parser)]
    pub file_hash: Option<FileHashList>,
    #[command(flatten)]
    #[allow(missing_docs)]
    pub tree: TreeArgs,
    #[command(flatten)]
    #[allow(missing_docs)]
    pub output: OutputArgs,
}

/// How `--include` / `--exclude` choose the entries of a directory, for `--help`.
pub const TREE_RULES: &str =
    "Directories: every regular file under DIR is taken, hidden files included, in S3 key order.
  --include/--exclude GLOB, repeatable, rsync-like: the rules are tried in command-line order and
  the first that matches decides; an entry no rule matches is taken.
  A GLOB without '/' matches the name at any depth (*.tmp, .DS_Store); with a '/' it is anchored at
  DIR and matches the whole relative path (reel1/*.dpx). '*' and '?' do not cross '/', '**' does
  (**/cache, reel1/**). A trailing '/' matches directories only (cache/). An excluded directory is
  not read at all, so to keep only .dpx files at every depth write
  --include '*/' --include '*.dpx' --exclude '*'.
  Symbolic links are followed (loops are detected and skipped); --no-follow-symlinks skips them.
  Sockets, FIFOs and devices are skipped with a warning. An unreadable or vanished entry, a name
  that is not UTF-8, a key over 1,024 bytes or a link to nothing is named and skipped, the rest goes
  on, and the command exits 2 at the end.";

const HASH_HELP: &str = "Examples:
  tally hash clip.mov                        the checksums and ETag an upload would produce
  tally hash scans/ --json                   one JSON line per file, then a summary line
  tally hash scans/ --exclude '*.tmp' --exclude '.DS_Store'

Files of a directory are hashed several at a time and printed in S3 key order; numbered frames
(shot_010.000001.dpx ...) are grouped into sequences in the summary.

";

const HASH_EXIT_CODES: &str = "Exit codes:\n  0  every file was hashed (warnings, e.g. a FIFO skipped, allowed)\n  2  bad input, or an entry of a directory could not be hashed (each is named)";

fn hash_help() -> String {
    format!("{HASH_HELP}{TREE_RULES}\n\n{HASH_EXIT_CODES}")
}

/// Which entries of a directory a command takes: `--include`, `--exclude` (in command-line order:
/// the first rule that matches decides, see [`TREE_RULES`]) and `--no-follow-symlinks`.
///
/// Flatten it into a command's arguments with `#[command(flatten)]`. Its parser is written by hand
/// because the order of the rules across the two flags matters and derived fields lose it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TreeArgs {
    /// The rules, in command-line order.
    pub rules: Vec<crate::tree::Rule>,
    /// Skip symbolic links instead of following them.
    pub no_follow_symlinks: bool,
}

impl TreeArgs {
    /// The walk's options (no key prefix: set `key_prefix_len` for uploads).
    pub fn walk_options(&self) -> Result<crate::tree::WalkOptions, Error> {
        Ok(crate::tree::WalkOptions {
            filters: crate::tree::Filters::new(self.rules.clone())?,
            follow_symlinks: !self.no_follow_symlinks,
            key_prefix_len: 0,
        })
    }

    /// The rules for a prefix download (`--no-follow-symlinks` has no meaning there).
    pub fn download_filters(&self) -> Result<crate::tree::Filters, Error> {
        if self.no_follow_symlinks {
            return Err(Error::Usage(
                "--no-follow-symlinks applies to local folders; a download lists objects: leave it out".into(),
            ));
        }
        crate::tree::Filters::new(self.rules.clone())
    }

    /// Whether any tree flag was given (they need a directory).
    pub fn any(&self) -> bool {
        !self.rules.is_empty() || self.no_follow_symlinks
    }
}

impl clap::FromArgMatches for TreeArgs {
    fn from_arg_matches(m: &clap::ArgMatches) -> Result<Self, clap::Error> {
        use crate::tree::Rule;
        let mut rules: Vec<(usize, Rule)> = Vec::new();
        for (id, make) in [
            ("include", Rule::Include as fn(String) -> Rule),
            ("exclude", Rule::Exclude),
        ] {
            if let (Some(values), Some(at)) = (m.get_many::<String>(id), m.indices_of(id)) {
                rules.extend(at.zip(values.map(|v| make(v.clone()))));
            }
        }
        rules.sort_by_key(|(at, _)| *at);
        Ok(TreeArgs {
            rules: rules.into_iter().map(|(_, r)| r).collect(),
            no_follow_symlinks: m.get_flag("no_follow_symlinks"),
        })
    }

    fn update_from_arg_matches(&mut self, m: &clap::ArgMatches) -> Result<(), clap::Error> {
        *self = TreeArgs::from_arg_matches(m)?;
        Ok(())
    }
}

impl Args for TreeArgs {
    fn augment_args(cmd: clap::Command) -> clap::Command {
        use clap::{Arg, ArgAction};
        cmd.arg(
            Arg::new("include")
                .long("include")
                .value_name("GLOB")
                .action(ArgAction::Append)
                .help("For directories: take entries matching GLOB (repeatable; rules apply in command-line order, the first match decides)"),
        )
        .arg(
            Arg::new("exclude")
                .long("exclude")
                .value_name("GLOB")
                .action(ArgAction::Append)
                .help("For directories: leave out entries matching GLOB; an excluded directory is not read (repeatable)"),
        )
        .arg(
            Arg::new("no_follow_symlinks")
                .long("no-follow-symlinks")
                .action(ArgAction::SetTrue)
                .help("For directories: skip symbolic links (default: follow them, loops detected)"),
        )
    }

    fn augment_args_for_update(cmd: clap::Command) -> clap::Command {
        TreeArgs::augment_args(cmd)
    }
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
    #[command(after_help = upload_help())]
    Upload(Box<UploadArgs>),
    /// Download an object, each part checked against S3's checksums before it counts; resumable.
    #[command(after_help = DOWNLOAD_EXIT_CODES)]
    Download(DownloadArgs),
    /// Compare a local file with an object, part by part, whoever uploaded it.
    #[command(after_help = VERIFY_EXIT_CODES)]
    Verify(VerifyArgs),
    /// Print, without any network, the checksums and ETag an upload with these settings would
    /// produce, for a file or every file of a directory.
    #[command(after_help = hash_help())]
    Hash(HashArgs),
    /// The full MD5 of an object in S3 (multipart ETags are not MD5s); resumable; can tag the object.
    #[command(after_help = MD5_EXIT_CODES)]
    Md5(Md5Args),
    /// One file uploaded by many machines: plan a shared upload, run one slice per worker (AWS
    /// Batch, Kubernetes or Slurm array jobs), finish it.
    #[command(subcommand)]
    Shard(ShardCommand),
    /// List multipart uploads in progress (and the local manifest of each, if any).
    Uploads(UploadsArgs),
    /// Abort multipart uploads in progress, so their parts are no longer stored and billed.
    Abort(AbortArgs),
    /// Print a completion script for a shell: `tally completions bash > /etc/bash_completion.d/tally`.
    Completions(CompletionsArgs),
    /// Print tally's manual page (roff, generated from these definitions): `tally man > tally.1`.
    Man,
}

const SHARD_EXIT_CODES: &str = "Exit codes:\n  0  done\n  1  integrity mismatch (a part or the object differs from its checksum)\n  2  any other error: refused (another file, count or endpoint than the plan's; an existing object), parts missing at finish (the slices to run again are named; nothing completed), network, interrupted";

/// `tally shard plan|run|finish`.
#[derive(Debug, Subcommand)]
pub enum ShardCommand {
    /// Create the multipart upload (part size and checksum as `tally upload` chooses them) and
    /// write PLAN, a file on a shared file system or an s3:// object.
    #[command(after_help = SHARD_EXIT_CODES)]
    Plan(ShardPlanArgs),
    /// Send one slice of the plan's parts; the index is --index, or AWS_BATCH_JOB_ARRAY_INDEX,
    /// JOB_COMPLETION_INDEX or SLURM_ARRAY_TASK_ID. Run again, it sends only what S3 lacks.
    #[command(after_help = SHARD_EXIT_CODES)]
    Run(ShardRunArgs),
    /// Complete the upload once every slice is in S3 (with every part's checksum), and verify it.
    #[command(after_help = SHARD_EXIT_CODES)]
    Finish(ShardFinishArgs),
}

impl ShardCommand {
    /// The output flags of the subcommand.
    pub fn output(&self) -> &OutputArgs {
        match self {
            ShardCommand::Plan(a) => &a.output,
            ShardCommand::Run(a) => &a.output,
            ShardCommand::Finish(a) => &a.output,
        }
    }
}

/// `tally shard plan FILE s3://BUCKET/KEY --shards N --plan PLAN`.
#[derive(Debug, Args)]
pub struct ShardPlanArgs {
    /// The local file (every worker must see it, e.g. on a shared file system).
    pub file: PathBuf,
    /// Destination, s3://BUCKET/KEY (a key ending in / gets the file name appended).
    pub target: String,
    /// Number of workers: the parts are cut into this many contiguous slices.
    #[arg(long)]
    pub shards: u32,
    /// Where to write the plan: a path every worker can read, or s3://BUCKET/KEY.
    #[arg(long, value_name = "PLAN")]
    pub plan: String,
    /// Part size, as for upload.
    #[arg(long, default_value = "100MiB", value_parser = parse_size)]
    pub part_size: u64,
    /// Per-part checksum that S3 verifies on receipt, as for upload.
    #[arg(long, default_value = "sha256", value_parser = checksum_parser())]
    pub checksum: ChecksumAlgorithm,
    /// Allow finish to replace an object already at the key (default: refuse, and complete with
    /// If-None-Match: * so none is replaced even in a race).
    #[arg(long)]
    pub replace: bool,
    #[command(flatten)]
    #[allow(missing_docs)]
    pub connection: ConnectionArgs,
    #[command(flatten)]
    #[allow(missing_docs)]
    pub output: OutputArgs,
}

/// `tally shard run PLAN [--index I]`.
#[derive(Debug, Args)]
pub struct ShardRunArgs {
    /// The plan: a path or s3://BUCKET/KEY.
    pub plan: String,
    /// The slice to send, 0-based (default: from the scheduler's variables).
    #[arg(long)]
    pub index: Option<u32>,
    /// The file, when this worker sees it at another path than the plan's.
    #[arg(long, value_name = "PATH")]
    pub file: Option<PathBuf>,
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

/// `tally shard finish PLAN`.
#[derive(Debug, Args)]
pub struct ShardFinishArgs {
    /// The plan: a path or s3://BUCKET/KEY.
    pub plan: String,
    /// Skip the check after completion that reads the object's checksums back from S3.
    #[arg(long)]
    pub no_verify: bool,
    #[command(flatten)]
    #[allow(missing_docs)]
    pub connection: ConnectionArgs,
    #[command(flatten)]
    #[allow(missing_docs)]
    pub output: OutputArgs,
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
    // Upload ids may start with '-' (moto's do, one in 64): taken as the value, not as a flag.
    #[arg(long, allow_hyphen_values = true)]
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
    /// Cap on the bytes sent and received per second, all connections together (400MB/s,
    /// 2Gbit/s); default: no cap.
    #[arg(long, value_name = "RATE", env = "TALLY_MAX_BANDWIDTH", value_parser = crate::s3::throttle::parse_rate)]
    pub max_bandwidth: Option<u64>,
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

const UPLOAD_EXAMPLES: &str = "Examples:
  tally upload A001C003.mov s3://media/raw/                 one file, to raw/A001C003.mov
  tally upload reel1/ s3://media/scans/reel1/               a tree: every file under reel1/
  tally upload reel1/ s3://media/scans/reel1/ --exclude '*.tmp' --exclude .DS_Store
  tally upload reel1/ s3://media/scans/reel1/ --include '*/' --include '*.dpx' --exclude '*'
  tally upload reel1/ s3://media/scans/reel1/ --json > reel1.jsonl   one JSON line per file

A tree run skips a file only when the object at its key is proven to hold the same bytes (its
checksum compared with the file's, hashed again); run it again after an interruption and it finishes.";

fn upload_help() -> String {
    format!("{UPLOAD_EXAMPLES}\n\n{TREE_RULES}\n\n{EXIT_CODES}")
}

/// `tally upload FILE|DIR s3://BUCKET/KEY|PREFIX/`.
#[derive(Debug, Args)]
pub struct UploadArgs {
    /// The local file, or a directory: every regular file under it.
    pub file: PathBuf,
    /// Destination, s3://BUCKET/KEY (a key ending in / gets the file name appended); for a
    /// directory, s3://BUCKET/PREFIX/ (each file goes to PREFIX + its path under the directory).
    pub target: String,
    /// Part size, e.g. 100MiB, 1GiB (5MiB..5GiB), or auto: files up to 100 MiB in one request, larger
    /// ones in 256 parts of 8 to 100 MiB; grows by itself so no object needs more than 10,000 parts.
    #[arg(long, default_value = "auto", value_parser = parse_part_size)]
    pub part_size: u64,
    /// Requests in flight at most [default: 64]. Left out, a directory's small files (at most
    /// 8 MiB, one PutObject each) also go beside those 64, up to 128 files in progress: each is a
    /// round trip with little on the wire (docs/many-files.md).
    #[arg(long)]
    pub concurrency: Option<usize>,
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
    /// the file; for a directory, skip files the last run proved when their size, time and inode
    /// and the object's ETag are unchanged, without reading them (faster; a file changed in place
    /// with its size and time restored goes unnoticed).
    #[arg(long)]
    pub trust_manifest: bool,
    /// Keep the manifest after success, as an audit record of every part's checksum.
    #[arg(long)]
    pub keep_manifest: bool,
    /// Never replace an object: a key that holds an object not proven to be the file is refused
    /// (exit 2; for a directory, that file's line), and the write itself is conditional
    /// (If-None-Match: *), so an object written meanwhile is not replaced where the server honours
    /// it (AWS S3, LocalStack; Garage 2.5.0 ignores it: see docs/dit.md).
    #[arg(long, conflicts_with = "force")]
    pub no_overwrite: bool,
    /// Send the file even when the object at the key is already proven to be it (a single file
    /// is skipped then, as a directory's files are).
    #[arg(long)]
    pub force: bool,
    /// For a directory: list what the run would upload, compare first, or leave, and why;
    /// nothing is sent and no file is read.
    #[arg(long)]
    pub dryrun: bool,
    /// Also compute each part's MD5 and send it as Content-MD5, so the multipart ETag is predicted
    /// and checked (MD5 costs ~2.6x SHA-256 here; S3 already verifies each part's checksum).
    #[arg(long)]
    pub content_md5: bool,
    #[command(flatten)]
    #[allow(missing_docs)]
    pub tree: TreeArgs,
    /// Directory uploads: write an ASC MHL generation (process "transfer", the s3:// location,
    /// each file's hashes and S3 facts) into DIR/ascmhl/ (or only the state directory when DIR is
    /// read-only), update ascmhl_chain.xml and upload both with the tree. A tree's ascmhl/ history
    /// is checked with or without this flag: a file that does not match it is not uploaded.
    #[arg(long)]
    pub mhl: bool,
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
    /// Whole-file hashes to compute during the upload's single read, comma-separated:
    /// xxh64, xxh128, xxh3, md5, sha1, sha256, c4 (ASC MHL's formats and encodings); reported per
    /// file (text and --json). An interrupted upload, resumed, reads the parts already sent once
    /// more for these hashes only.
    #[arg(long, value_name = "FORMATS", value_parser = file_hash_parser)]
    pub file_hash: Option<FileHashList>,
    /// Store each --file-hash value as an object tag named after its format (xxh64=...), merged
    /// with the object's tags, after the upload (they count against S3's 10 tags).
    #[arg(long, requires = "file_hash")]
    pub file_hash_tag: bool,
    /// Do not send a part again on another connection when its connection moves far slower than
    /// the others (hedging is on by default: the first answer wins, the part is recorded once).
    #[arg(long)]
    pub no_hedge: bool,
    /// Storage class of the object (default: the bucket's, STANDARD).
    #[arg(long, value_name = "CLASS", value_parser = storage_class_parser(), ignore_case = true)]
    pub storage_class: Option<StorageClass>,
    /// User metadata stored with the object (x-amz-meta-KEY), repeatable: --metadata camera=A
    /// --metadata reel=R001. Keys: ASCII letters, digits, - _ . ; values: printable ASCII; 2 KB in all.
    #[arg(long, value_name = "KEY=VALUE")]
    pub metadata: Vec<String>,
    /// Object tag set at upload, repeatable: --tag project=x --tag stage=raw (at most 10 tags,
    /// --md5-tag included; keys up to 128 characters, values up to 256).
    #[arg(long, value_name = "KEY=VALUE")]
    pub tag: Vec<String>,
    /// Content-Type of the object (default: guessed from the file's extension, else
    /// application/octet-stream).
    #[arg(long, value_name = "TYPE")]
    pub content_type: Option<String>,
    /// Server-side encryption: aws:kms (SSE-KMS; the ETag is then not an MD5 and is never
    /// compared) or AES256 (SSE-S3).
    #[arg(long, value_name = "MODE", value_parser = ["aws:kms", "AES256"], ignore_case = true)]
    pub sse: Option<String>,
    /// The KMS key for --sse aws:kms (default: the bucket's or account's S3 key).
    #[arg(long, value_name = "ID", requires = "sse")]
    pub sse_kms_key_id: Option<String>,
    /// Also write a self-contained HTML report to hand over (what, where, sizes, checksums,
    /// what proved each file, failures first; docs/report.md).
    #[arg(long, value_name = "FILE.html")]
    pub report: Option<PathBuf>,
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
            max_bandwidth: self.max_bandwidth,
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
            self.concurrency.unwrap_or(DEFAULT_CONCURRENCY),
            self.checksum,
        )?;
        cfg.resume = ResumeOptions {
            manifest: self.manifest.clone(),
            restart: self.restart,
            trust_manifest: self.trust_manifest,
            keep_manifest: self.keep_manifest,
            state_dir: crate::state::StateDir::from_env(),
        };
        cfg.verify = !self.no_verify;
        cfg.content_md5 = self.content_md5;
        cfg.md5_tag = self.md5_tag.clone();
        cfg.read_back = self.read_back;
        cfg.file_hashes = self.file_hash.clone().unwrap_or_default();
        cfg.file_hash_tag = self.file_hash_tag;
        cfg.hedge = !self.no_hedge;
        cfg.object = ObjectSettings::new(
            self.storage_class,
            self.content_type.clone(),
            &self.metadata,
            &self.tag,
            self.sse.as_deref(),
            self.sse_kms_key_id.clone(),
            self.md5_tag.as_deref(),
        )?;
        cfg.object.if_absent = self.no_overwrite;
        cfg.check_file_hash_tags()?;
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

/// `--file-hash`: a comma-separated list of formats.
fn file_hash_parser(s: &str) -> Result<FileHashList, String> {
    FileHashFormat::parse_list(s)
}

/// `--checksum`: the algorithms listed in `--help`, parsed without clap knowing the type.
fn checksum_parser() -> impl clap::builder::TypedValueParser<Value = ChecksumAlgorithm> {
    use clap::builder::TypedValueParser as _;
    clap::builder::PossibleValuesParser::new(
        ChecksumAlgorithm::ALL.map(ChecksumAlgorithm::cli_name),
    )
    .map(|s| {
        s.parse::<ChecksumAlgorithm>()
            .expect("every listed name parses")
    })
}

/// `--storage-class`: S3's names, in any case.
fn storage_class_parser() -> impl clap::builder::TypedValueParser<Value = StorageClass> {
    use clap::builder::TypedValueParser as _;
    clap::builder::PossibleValuesParser::new(StorageClass::ALL.map(StorageClass::as_str))
        .map(|s| s.parse::<StorageClass>().expect("every listed name parses"))
}

/// `--part-size`: a size, or `auto` ([`crate::plan::AUTO`]: the file's own).
fn parse_part_size(text: &str) -> Result<u64, String> {
    if text.trim().eq_ignore_ascii_case("auto") {
        Ok(crate::plan::AUTO)
    } else {
        parse_size(text)
    }
}

#[cfg(test)]
mod hedge_flag_tests {
    use super::*;

    fn download(args: &[&str]) -> Result<DownloadArgs, clap::Error> {
        let mut all = vec!["tally", "download", "s3://b/k", "dest"];
        all.extend_from_slice(args);
        match Cli::try_parse_from(all)?.command {
            Command::Download(d) => Ok(d),
            _ => panic!("not a download"),
        }
    }

    #[test]
    fn a_download_fetches_stragglers_again_unless_told_not_to() {
        assert!(download(&[]).unwrap().hedge, "on by default");
        assert!(!download(&["--no-hedge"]).unwrap().hedge);
        assert!(
            download(&["--hedge"]).unwrap().hedge,
            "the old opt-in still parses"
        );
        assert!(
            download(&["--hedge", "--no-hedge"]).is_err(),
            "both: refused"
        );
    }
}

#[cfg(test)]
mod abort_flag_tests {
    use super::*;

    #[test]
    fn an_upload_id_that_starts_with_a_hyphen_is_the_value() {
        let spaced: &[&str] = &["tally", "abort", "s3://b/k", "--upload-id", "-Xy_z9"];
        let joined: &[&str] = &["tally", "abort", "s3://b/k", "--upload-id=-Xy_z9"];
        for args in [spaced, joined] {
            match Cli::try_parse_from(args).unwrap().command {
                Command::Abort(a) => assert_eq!(a.upload_id.as_deref(), Some("-Xy_z9")),
                _ => panic!("not an abort"),
            }
        }
    }
}
