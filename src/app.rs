//! Runs a parsed command: logging, the async runtime, signals, output and the exit code.

use std::io::IsTerminal as _;

use tokio_util::sync::CancellationToken;

use crate::cli::{Cli, Command, DownloadArgs, OutputArgs, UploadArgs};
use crate::config::ObjectUrl;
use crate::download::{self, DownloadOptions, DownloadReport};
use crate::error::{EXIT_ERROR, EXIT_MISMATCH, EXIT_OK, EXIT_UNFINISHED, Error};
use crate::hashfile::{self, HashReport};
use crate::progress::{Bar, Notes, Progress, Silent};
use crate::remote::md5::{self as remote_md5, Md5Options, Md5Report, Md5Source};
use crate::remote::tags::TagOutcome;
use crate::s3::SdkS3;
use crate::upload::{self, Check, Method, UploadReport};
use crate::uploads::{self, Aborted, UploadInfo};
use crate::verify::{self, Verdict, VerifyOptions, VerifyReport};

/// Runs `cli` to completion and returns the process exit code.
pub fn run(cli: Cli) -> i32 {
    let output = match &cli.command {
        Command::Completions(a) => return completions(a.shell),
        Command::Man => return man_page(),
        Command::Upload(a) => &a.output,
        Command::Verify(a) => &a.output,
        Command::Download(a) => &a.output,
        Command::Hash(a) => &a.output,
        Command::Md5(a) => &a.output,
        Command::Uploads(a) => &a.output,
        Command::Abort(a) => &a.output,
    };
    init_logging(output);
    let out = Output::from(output);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime can be built");
    match &cli.command {
        Command::Upload(args) => {
            let result = runtime.block_on(upload(args, &out));
            let code = match &result {
                Ok(r) if r.md5_tag_error.is_some() => EXIT_ERROR,
                _ => EXIT_OK,
            };
            if let Ok(UploadReport {
                md5_tag_error: Some(e),
                ..
            }) = &result
            {
                eprintln!("tally: error: the upload succeeded, but {e}");
            }
            out.finish(result.map(|r| (print_upload(&r), r))).max(code)
        }
        Command::Verify(args) => {
            let result = runtime.block_on(async {
                let target = ObjectUrl::parse(&args.target)?;
                let s3 = SdkS3::connect(&args.connection.to_connection()).await?;
                let opts = VerifyOptions {
                    download: args.download,
                    etag: args.etag,
                    wait: args.wait,
                };
                verify::verify(&s3, &args.file, &target, &opts).await
            });
            let code = match &result {
                Ok(r) => match r.verdict {
                    Verdict::Identical => EXIT_OK,
                    Verdict::Differs => EXIT_MISMATCH,
                },
                // Whatever went wrong, nothing was verified.
                Err(_) => EXIT_ERROR,
            };
            out.finish(result.map(|r| (print_verify(&args.file, &r), r)))
                .max(code)
        }
        Command::Download(args) => {
            let result = runtime.block_on(download(args, &out));
            out.finish(result.map(|r| (print_download(&r), r)))
        }
        Command::Hash(args) => {
            let (file, ps, alg) = (args.file.clone(), args.part_size, args.checksum);
            let result = match parse_hash_args(ps) {
                Ok(()) => hashfile::hash_file(&file, ps, alg),
                Err(e) => Err(e),
            };
            out.finish(result.map(|r| (print_hash(&r), r)))
        }
        Command::Md5(args) => {
            let result = runtime.block_on(async {
                let target = ObjectUrl::parse(&args.target)?;
                let s3 = SdkS3::connect(&args.connection.to_connection()).await?;
                let cancel = CancellationToken::new();
                watch_signals(cancel.clone());
                let opts = Md5Options {
                    state: args.state.clone(),
                    time_limit: args.time_limit,
                    tag: args.tag.clone(),
                    force_read: false,
                };
                remote_md5::remote_md5(&s3, &target, &opts, &cancel).await
            });
            let code = match &result {
                Ok(r) if !r.finished => EXIT_UNFINISHED,
                Ok(r) if r.tag_error.is_some() => EXIT_ERROR,
                _ => EXIT_OK,
            };
            if let Ok(Md5Report {
                tag_error: Some(e), ..
            }) = &result
            {
                eprintln!("tally: error: {e}");
            }
            out.finish(result.map(|r| (print_md5(&r), r))).max(code)
        }
        Command::Uploads(args) => {
            let result = runtime.block_on(async {
                let target = ObjectUrl::parse(&args.target)?;
                let s3 = SdkS3::connect(&args.connection.to_connection()).await?;
                uploads::list(&s3, &target).await
            });
            out.finish(result.map(|r| (print_uploads(&r), r)))
        }
        Command::Abort(args) => {
            let result = runtime.block_on(async {
                let target = ObjectUrl::parse(&args.target)?;
                let s3 = SdkS3::connect(&args.connection.to_connection()).await?;
                uploads::abort(&s3, &target, args.upload_id.as_deref(), args.all_older_than).await
            });
            out.finish(result.map(|r| (print_aborted(&r), r)))
        }
        // Answered above, before logging and the runtime.
        Command::Completions(_) | Command::Man => EXIT_OK,
    }
}

fn print_uploads(list: &[UploadInfo]) -> String {
    if list.is_empty() {
        return "no multipart uploads in progress\n".into();
    }
    let mut s = String::new();
    for u in list {
        s += &format!(
            "{}  {}  started {}  {} parts ({})  manifest: {}\n",
            u.key,
            u.upload_id,
            u.initiated.as_deref().unwrap_or("?"),
            u.parts,
            human_bytes(u.bytes),
            u.manifest.as_deref().unwrap_or("none")
        );
    }
    s
}

fn print_aborted(list: &[Aborted]) -> String {
    if list.is_empty() {
        return "nothing to abort\n".into();
    }
    list.iter()
        .map(|a| {
            format!(
                "aborted {} {}{}\n",
                a.key,
                a.upload_id,
                a.manifest_removed
                    .as_deref()
                    .map(|m| format!(" (removed manifest {m})"))
                    .unwrap_or_default()
            )
        })
        .collect()
}

struct Output {
    json: bool,
    quiet: bool,
}

impl Output {
    fn from(args: &OutputArgs) -> Output {
        Output {
            json: args.json,
            quiet: args.quiet,
        }
    }

    fn progress(&self) -> Box<dyn Progress> {
        if self.quiet {
            Box::new(Silent)
        } else if self.json || !std::io::stderr().is_terminal() {
            Box::new(Notes)
        } else {
            Box::new(Bar::new())
        }
    }

    fn finish<T: serde::Serialize>(&self, result: Result<(String, T), Error>) -> i32 {
        match result {
            Ok((text, report)) => {
                if self.json {
                    let json = serde_json::to_string_pretty(&report).expect("reports serialize");
                    println!("{}", crate::redact::redact(&json));
                } else if !self.quiet {
                    print!("{}", crate::redact::redact(&text));
                }
                EXIT_OK
            }
            Err(e) => {
                let code = e.exit_code();
                let msg = crate::redact::redact(&e.to_string());
                if self.json {
                    let v = serde_json::json!({ "error": msg, "exit_code": code });
                    println!("{v}");
                }
                eprintln!("tally: error: {msg}");
                code
            }
        }
    }
}

fn init_logging(out: &OutputArgs) {
    let default = match out.verbose {
        0 => "error,tally=warn",
        1 => "error,tally=info",
        _ => "warn,tally=debug",
    };
    let from_env = tracing_subscriber::EnvFilter::try_from_default_env().ok();
    let plain = from_env.is_none() && out.verbose == 0;
    let filter = from_env.unwrap_or_else(|| tracing_subscriber::EnvFilter::new(default));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(|| crate::redact::RedactingStderr);
    // Without -v or RUST_LOG only warnings show: print them as plain lines.
    let _ = if plain {
        builder
            .without_time()
            .with_target(false)
            .with_ansi(false)
            .try_init()
    } else {
        builder.try_init()
    };
}

/// Writes the completion script for `shell` to standard output.
fn completions(shell: clap_complete::Shell) -> i32 {
    use clap::CommandFactory as _;
    clap_complete::generate(shell, &mut Cli::command(), "tally", &mut std::io::stdout());
    EXIT_OK
}

/// Writes the manual page (roff) to standard output.
fn man_page() -> i32 {
    use clap::CommandFactory as _;
    match clap_mangen::Man::new(Cli::command()).render(&mut std::io::stdout()) {
        Ok(()) => EXIT_OK,
        Err(e) => {
            eprintln!("tally: error: writing the manual page: {e}");
            EXIT_ERROR
        }
    }
}

/// The first Ctrl-C / SIGTERM cancels `token` (the upload stops and is kept for resuming); a second one
/// exits at once.
fn watch_signals(token: CancellationToken) {
    tokio::spawn(async move {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("SIGTERM handler");
        for round in 0..2 {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
            if round == 0 {
                eprintln!("tally: stopping; press Ctrl-C again to exit at once");
                token.cancel();
            } else {
                std::process::exit(EXIT_ERROR);
            }
        }
    });
}

async fn upload(args: &UploadArgs, out: &Output) -> Result<UploadReport, Error> {
    let cfg = args.to_config()?;
    let s3 = SdkS3::connect(&args.connection.to_connection()).await?;
    let cancel = CancellationToken::new();
    watch_signals(cancel.clone());
    let progress = out.progress();
    upload::upload(&s3, &cfg, progress.as_ref(), &cancel).await
}

async fn download(args: &DownloadArgs, out: &Output) -> Result<DownloadReport, Error> {
    let target = ObjectUrl::parse(&args.source)?;
    let s3 = SdkS3::connect(&args.connection.to_connection()).await?;
    let opts = DownloadOptions {
        force: args.force,
        concurrency: args.concurrency,
    };
    let progress = out.progress();
    download::download(&s3, &target, &args.dest, &opts, progress.as_ref()).await
}

fn print_download(r: &DownloadReport) -> String {
    let url = format!("s3://{}/{}", r.bucket, r.key);
    let mut s = if r.already_present {
        format!(
            "{} is already there and proven identical to {url}: nothing fetched\n",
            r.dest.display()
        )
    } else {
        format!(
            "downloaded {url} to {} ({}, {} parts) in {:.2} s ({:.1} MiB/s)\n",
            r.dest.display(),
            human_bytes(r.size),
            r.parts,
            r.seconds,
            r.mib_per_s
        )
    };
    if r.verified {
        for p in &r.checked {
            s += &format!("  checked   {}\n", p.text);
        }
    } else {
        s += &format!(
            "  NOT verified: {}; the bytes were written as received, unchecked\n",
            r.not_verified
                .as_deref()
                .unwrap_or("nothing could be compared")
        );
    }
    if r.parts_resumed > 0 {
        s += &format!(
            "  resumed   {} parts were already verified from an interrupted run\n",
            r.parts_resumed
        );
    }
    if let Some(why) = &r.restarted_because {
        s += &format!("  restarted {why}\n");
    }
    if !r.parts_refetched.is_empty() {
        s += &format!(
            "  refetched part(s) {:?}: their bytes arrived different from S3's checksum and were fetched again\n",
            r.parts_refetched
        );
    }
    if r.refetched_whole {
        s += "  refetched every part once: the whole-object check failed the first time\n";
    }
    s
}

fn print_upload(r: &UploadReport) -> String {
    let check = |c: Check| match c {
        Check::Matched => "matches S3",
        Check::NotReported => "not reported by the server, not compared",
        Check::NotComparableKms => "not compared: under SSE-KMS the ETag is not an MD5",
        Check::NotComparableSseC => "not compared: under SSE-C the ETag is not an MD5",
        Check::NotPredicted => "not predicted (no MD5)",
        Check::Mismatch => "DIFFERS from S3",
    };
    let mut s = format!(
        "uploaded {} to s3://{}/{} in {:.2} s ({:.1} MiB/s)\n",
        human_bytes(r.size),
        r.bucket,
        r.key,
        r.seconds,
        r.mib_per_s
    );
    if r.method == Method::Multipart {
        s += &format!(
            "  parts     {} x {}, {} per part, {} echoed back equal by S3\n",
            r.parts,
            human_bytes(r.part_size),
            r.checksum.algorithm,
            r.checks.part_checksums_matched
        );
        if let Some(u) = &r.upload_id {
            s += &format!("  upload id {u}\n");
        }
        if r.resumed {
            s += &format!(
                "  resumed   {} parts were already in S3, {} sent now\n",
                r.parts_skipped, r.parts_sent
            );
        }
        if let Some(m) = &r.manifest {
            s += &format!("  manifest  {} (kept)\n", m.display());
        }
    } else {
        s += &format!(
            "  single PUT with Content-MD5 and {} (verified by S3 on receipt)\n",
            r.checksum.algorithm
        );
    }
    s += &format!(
        "  checksum  {} {} ({}): {}\n",
        r.checksum.algorithm,
        r.checksum.value,
        r.checksum.kind,
        check(r.checks.object_checksum)
    );
    match &r.etag {
        Some(e) => s += &format!("  etag      {e}: {}\n", check(r.checks.etag)),
        None => s += "  etag      not predicted: no MD5 computed (--content-md5 computes it)\n",
    }
    match &r.verified {
        Some(v) => {
            let said = |m: Option<bool>| match m {
                Some(true) => "matches",
                Some(false) => "DIFFERS",
                None => "not comparable",
            };
            s += &format!(
                "  verified  read back with {}: checksum {}, ETag {}, {} parts compared one by one\n",
                v.method,
                said(v.checksum_matches),
                check(v.etag),
                v.parts_compared
            );
        }
        None => s += "  verified  not read back (--no-verify)\n",
    }
    if let Some(n) = r.read_back_reads {
        s += &format!("  read back the object's MD5 equals the file's (after {n} read(s))\n");
    }
    if let (Some(md5), Some((name, outcome))) = (&r.md5, &r.md5_tag) {
        s += &format!("  md5 tag   {name}={md5}: {outcome:?}\n");
    }
    s
}

/// `1.5 GiB`, `100 MiB`, `1000 B`.
fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut unit = 0;
    while v >= 1024.0 && unit + 1 < UNITS.len() {
        v /= 1024.0;
        unit += 1;
    }
    if unit == 0 || v.fract() == 0.0 {
        format!("{v:.0} {}", UNITS[unit])
    } else {
        format!("{v:.2} {}", UNITS[unit])
    }
}

fn parse_hash_args(part_size: u64) -> Result<(), Error> {
    if (crate::plan::MIN_PART_SIZE..=crate::plan::MAX_PART_SIZE).contains(&part_size) {
        Ok(())
    } else {
        Err(Error::Usage(format!(
            "--part-size {part_size} bytes is outside S3's limits: choose 5MiB to 5GiB"
        )))
    }
}

fn print_hash(r: &HashReport) -> String {
    let mut s = format!(
        "{}  {}\n  md5       {}\n  parts     {} x {} ({})\n",
        r.file,
        human_bytes(r.size),
        r.md5,
        r.parts.len(),
        human_bytes(r.part_size),
        r.method
    );
    for p in &r.parts {
        s += &format!(
            "  part {:>5}  {}..{}  {}  md5 {}\n",
            p.number,
            p.offset,
            p.offset + p.len,
            p.checksum,
            p.md5
        );
    }
    s += &format!(
        "  checksum  {} {} ({})\n  etag      {}\n",
        r.checksum.algorithm, r.checksum.value, r.checksum.kind, r.etag
    );
    s
}

fn print_verify(file: &std::path::Path, r: &VerifyReport) -> String {
    let mark = |m: bool| if m { "matches" } else { "DIFFERS" };
    let head = match &r.verdict {
        Verdict::Identical => format!("s3://{}/{} is {}", r.bucket, r.key, file.display()),
        Verdict::Differs => format!(
            "s3://{}/{} DIFFERS from {}",
            r.bucket,
            r.key,
            file.display()
        ),
    };
    let mut s = format!("{head}\n  method    {}: {}\n", r.method, r.why);
    s += &format!(
        "  size      local {} / S3 {}: {}\n",
        r.size.local,
        r.size.remote,
        mark(r.size.matches)
    );
    if let Some(c) = &r.checksum {
        let alg = r.checksum_algorithm.as_deref().unwrap_or("");
        if c.matches {
            s += &format!("  checksum  {alg} {}: matches\n", c.remote);
        } else {
            s += &format!(
                "  checksum  {alg}: local {} / S3 {}: DIFFERS\n",
                c.local, c.remote
            );
        }
    }
    match (&r.etag, &r.etag_note) {
        (Some(e), _) if e.matches => s += &format!("  etag      {}: matches\n", e.remote),
        (Some(e), _) => s += &format!("  etag      local {} / S3 {}: DIFFERS\n", e.local, e.remote),
        (None, Some(n)) => s += &format!("  etag      {n}\n"),
        (None, None) => {}
    }
    s += &format!(
        "  parts     {} in the object, {} compared one by one, {} differ\n",
        r.parts,
        r.parts_compared,
        r.differing_parts.len()
    );
    for d in &r.differing_parts {
        s += &format!(
            "    part {} (bytes {}..{}): local {} / S3 {}\n",
            d.number, d.range.start, d.range.end, d.local, d.remote
        );
    }
    s += &format!(
        "  took      {:.2} s ({:.2} GiB/s)\n",
        r.seconds, r.gib_per_s
    );
    s
}

fn print_md5(r: &Md5Report) -> String {
    let url = format!("s3://{}/{}", r.bucket, r.key);
    let Some(md5) = &r.md5 else {
        return format!(
            "not finished: {} of {} bytes hashed ({:.1} MiB/s); state saved in {}: run the same command again to continue\n",
            r.offset,
            r.size,
            r.mib_per_s,
            r.state_file
                .as_deref()
                .map_or("(none)".into(), |p| p.display().to_string())
        );
    };
    let mut s = format!("{md5}  {url}\n");
    if r.source == Md5Source::Etag {
        s += "  from the ETag: a single-part object whose ETag is its MD5 (nothing read)\n";
    } else {
        s += &format!(
            "  read {} bytes{} in {:.2} s ({:.1} MiB/s)\n",
            r.offset - r.resumed_from,
            if r.resumed_from > 0 {
                format!(" (continued from byte {})", r.resumed_from)
            } else {
                String::new()
            },
            r.seconds,
            r.mib_per_s
        );
    }
    if let Some((name, outcome)) = &r.tag {
        s += &match outcome {
            TagOutcome::Added => format!("  tag {name}={md5} added (other tags kept)\n"),
            TagOutcome::AlreadyPresent => {
                format!("  tag {name}={md5} already present: nothing written\n")
            }
            TagOutcome::Replaced { old } => {
                format!("  tag {name} replaced: was {old}, now {md5}\n")
            }
        };
    }
    s
}
