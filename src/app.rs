//! Runs a parsed command: logging, the async runtime, signals, output and the exit code.

use std::io::IsTerminal as _;

use tokio_util::sync::CancellationToken;

use crate::cli::{
    Cli, Command, DownloadArgs, HashArgs, OutputArgs, ShardCommand, TreeArgs, UploadArgs,
    VerifyArgs,
};
use crate::config::ObjectUrl;
use crate::download::{self, DownloadOptions, DownloadReport};
use crate::error::{EXIT_ERROR, EXIT_MISMATCH, EXIT_OK, EXIT_UNFINISHED, Error};
use crate::hashfile::{self, HashReport, TreeLine};
use crate::progress::{Bar, Notes, Progress, Silent};
use crate::remote::md5::{self as remote_md5, Md5Options, Md5Report, Md5Source};
use crate::remote::tags::TagOutcome;
use crate::s3::SdkS3;
use crate::tree::report::{Action, FileLine, TreeReport};
use crate::tree::{self, Grouper, Item, Sequence};
use crate::upload::tree::TreeConfig;
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
        Command::Shard(c) => c.output(),
    };
    init_logging(output);
    let out = Output::from(output);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime can be built");
    match &cli.command {
        Command::Upload(args) if args.file.is_dir() => runtime.block_on(upload_tree(args, &out)),
        Command::Upload(args) => {
            if args.mhl {
                return out.finish::<()>(Err(Error::Usage(format!(
                    "--mhl writes an ASC MHL generation for a directory; {} is not one: upload its folder",
                    args.file.display()
                ))));
            }
            if args.tree.any() {
                return out.finish::<()>(Err(Error::Usage(format!(
                    "--include, --exclude and --no-follow-symlinks need a directory; {} is not one",
                    args.file.display()
                ))));
            }
            let result = match runtime.block_on(upload(args, &out)) {
                Ok(upload::one::One::Skipped(s)) => return out.finish(Ok((s.text(), s))),
                Ok(upload::one::One::Uploaded(r)) => Ok(*r),
                Err(e) => Err(e),
            };
            let code = match &result {
                Ok(r) if r.md5_tag_error.is_some() || r.file_hash_tag_error.is_some() => EXIT_ERROR,
                _ => EXIT_OK,
            };
            if let Ok(r) = &result {
                for e in [&r.md5_tag_error, &r.file_hash_tag_error]
                    .into_iter()
                    .flatten()
                {
                    eprintln!("tally: error: the upload succeeded, but {e}");
                }
            }
            out.finish(result.map(|r| (print_upload(&r), r))).max(code)
        }
        Command::Verify(args) if args.file.is_dir() => runtime.block_on(verify_tree(args, &out)),
        Command::Verify(args) => {
            if args.tree.any() {
                return out.finish::<()>(Err(Error::Usage(format!(
                    "--include, --exclude and --no-follow-symlinks need a directory; {} is not one",
                    args.file.display()
                ))));
            }
            let result = runtime.block_on(async {
                let target = ObjectUrl::parse(&args.target)?;
                let s3 = SdkS3::connect(&args.connection.to_connection()).await?;
                let opts = VerifyOptions {
                    download: args.download,
                    etag: args.etag,
                    wait: args.wait,
                };
                let cancel = CancellationToken::new();
                watch_signals(cancel.clone());
                tokio::select! {
                    r = verify::verify(&s3, &args.file, &target, &opts) => r,
                    () = cancel.cancelled() => Err(Error::Stopped(
                        "interrupted: verify changes nothing, so nothing is kept: run the same command again".into(),
                    )),
                }
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
        Command::Hash(args) if args.path.is_dir() => hash_dir(args, &out, &runtime),
        Command::Download(args) => {
            let is_prefix = ObjectUrl::parse(&args.source)
                .is_ok_and(|u| u.key.is_empty() || u.key.ends_with('/'));
            if is_prefix {
                return runtime.block_on(download_tree(args, &out));
            }
            if args.tree.any() {
                return out.finish::<()>(Err(Error::Usage(
                    "--include and --exclude choose the objects under a prefix: give a prefix ending in /".into(),
                )));
            }
            if args.mhl {
                return out.finish::<()>(Err(Error::Usage(
                    "--mhl writes an ASC MHL generation for a downloaded folder: give a prefix ending in /"
                        .into(),
                )));
            }
            let result = runtime.block_on(download(args, &out));
            out.finish(result.map(|r| (print_download(&r), r)))
        }
        Command::Hash(args) => {
            let (file, ps, alg) = (args.path.clone(), args.part_size, args.checksum);
            let result = match parse_hash_args(ps) {
                Ok(()) if args.tree != TreeArgs::default() => Err(Error::Usage(format!(
                    "--include, --exclude and --no-follow-symlinks apply to directories, and {} is not one",
                    file.display()
                ))),
                Ok(()) => hashfile::hash_file_shown(
                    &file,
                    ps,
                    alg,
                    args.file_hash.as_deref().unwrap_or_default(),
                    out.progress().as_ref(),
                ),
                Err(e) => Err(e),
            };
            out.finish(result.map(|r| (print_hash(&r), r)))
        }
        Command::Md5(args) => {
            let (target, conn) = (args.target.clone(), args.connection.to_connection());
            let opts = Md5Options {
                state: args.state.clone(),
                time_limit: args.time_limit,
                tag: args.tag.clone(),
                force_read: false,
            };
            let result = on_workers(&runtime, async move {
                let target = ObjectUrl::parse(&target)?;
                let s3 = SdkS3::connect(&conn).await?;
                let cancel = CancellationToken::new();
                watch_signals(cancel.clone());
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
        Command::Shard(c) => runtime.block_on(shard(c, &out)),
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
                    let json = serde_json::to_string_pretty(&crate::s3::identity::stamp(&report))
                        .expect("reports serialize");
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

/// `tally shard plan|run|finish`.
async fn shard(command: &ShardCommand, out: &Output) -> i32 {
    use crate::shard::{self, PlanAt};
    match command {
        ShardCommand::Plan(a) => {
            let result = async {
                let mut cfg = crate::config::UploadConfig::new(
                    a.file.clone(),
                    &a.target,
                    a.part_size,
                    1,
                    a.checksum,
                )?;
                cfg.verify = false;
                let at = PlanAt::parse(&a.plan)?;
                let s3 = SdkS3::connect(&a.connection.to_connection()).await?;
                shard::plan::plan(&s3, &cfg, a.shards, a.replace, &at).await
            }
            .await;
            out.finish(result.map(|r| (r.text(), r)))
        }
        ShardCommand::Run(a) => {
            let result = async {
                let at = PlanAt::parse(&a.plan)?;
                let s3 = SdkS3::connect(&a.connection.to_connection()).await?;
                let plan = shard::plan::read(&s3, &at).await?;
                let assigned = shard::assigned(a.index, plan.shards, |k| std::env::var(k).ok())?;
                let worker = shard::run::Worker {
                    at,
                    plan,
                    assigned,
                    file: a.file.clone(),
                    concurrency: a.concurrency,
                };
                let cancel = CancellationToken::new();
                watch_signals(cancel.clone());
                let progress = out.progress();
                shard::run(&s3, &worker, progress.as_ref(), &cancel).await
            }
            .await;
            out.finish(result.map(|r| (r.text(), r)))
        }
        ShardCommand::Finish(a) => {
            let result = async {
                let at = PlanAt::parse(&a.plan)?;
                let s3 = SdkS3::connect(&a.connection.to_connection()).await?;
                let plan = shard::plan::read(&s3, &at).await?;
                let progress = out.progress();
                shard::finish(&s3, &at, &plan, !a.no_verify, progress.as_ref()).await
            }
            .await;
            out.finish(result.map(|r| (r.text(), r)))
        }
    }
}

async fn upload(args: &UploadArgs, out: &Output) -> Result<upload::one::One, Error> {
    let cfg = args.to_config()?;
    let s3 = SdkS3::connect(&args.connection.to_connection()).await?;
    let cancel = CancellationToken::new();
    watch_signals(cancel.clone());
    let progress = out.progress();
    upload::one::upload_one(&s3, &cfg, args.force, progress.as_ref(), &cancel).await
}

/// `tally upload DIR s3://BUCKET/PREFIX/`: one line per file as it finishes (`--json`), failures
/// and warnings on standard error as they happen, the grouped summary at the end.
async fn upload_tree(args: &UploadArgs, out: &Output) -> i32 {
    let cfg = match tree_config(args) {
        Ok(c) => c,
        Err(e) => return out.finish::<()>(Err(e)),
    };
    let s3 = match SdkS3::connect(&args.connection.to_connection()).await {
        Ok(s) => s,
        Err(e) => return out.finish::<()>(Err(e)),
    };
    let cancel = CancellationToken::new();
    watch_signals(cancel.clone());
    let progress = out.progress();
    let on_line = out.tree_lines();
    let result = upload::tree::upload_tree(&s3, &cfg, progress.as_ref(), &cancel, &on_line).await;
    out.finish_tree(
        result,
        "every file is in S3 and proven",
        "nothing to upload: no files under the directory",
    )
}

/// `tally verify DIR s3://BUCKET/PREFIX/`.
async fn verify_tree(args: &VerifyArgs, out: &Output) -> i32 {
    let run = async {
        let mut prefix = ObjectUrl::parse(&args.target)?;
        if !prefix.key.is_empty() && !prefix.key.ends_with('/') {
            prefix.key.push('/');
        }
        let walk = crate::tree::WalkOptions {
            key_prefix_len: prefix.key.len(),
            ..args.tree.walk_options()?
        };
        let s3 = SdkS3::connect(&args.connection.to_connection()).await?;
        let cancel = CancellationToken::new();
        watch_signals(cancel.clone());
        let opts = VerifyOptions {
            download: args.download,
            etag: args.etag,
            wait: args.wait,
        };
        let progress = out.progress();
        let on_line = out.tree_lines();
        let cfg = verify::tree::TreeVerify {
            root: args.file.clone(),
            prefix,
            walk,
            opts,
        };
        let mut report =
            verify::tree::verify_tree(&s3, &cfg, progress.as_ref(), &cancel, &on_line).await?;
        if report.complete {
            // A folder carrying an ASC MHL history is also checked against it.
            crate::mhl::check::check_folder(&args.file, None, &mut report, &on_line).await?;
        }
        Ok(report)
    };
    let result = run.await;
    out.finish_tree(
        result,
        "every file is its object",
        "nothing to verify: no files under the directory",
    )
}

impl Output {
    /// What a tree command does with each entry's line as it finishes: a JSON line with `--json`;
    /// failures, differences and warnings on standard error as they happen.
    fn tree_lines(&self) -> impl Fn(&FileLine) + Send + Sync + use<> {
        let (json, quiet) = (self.json, self.quiet);
        move |line: &FileLine| {
            if json {
                let text = serde_json::to_string(line).expect("lines serialize");
                println!("{}", crate::redact::redact(&text));
            }
            let reason = line.reason.as_deref().unwrap_or("");
            match line.action {
                Action::Failed => eprintln!("tally: FAILED {}: {reason}", line.path),
                Action::Differs => eprintln!("tally: DIFFERS {}: {reason}", line.path),
                Action::Ignored if !quiet => eprintln!("tally: warning: {}: {reason}", line.path),
                _ if !quiet && line.mhl.as_deref() == Some("new") => {
                    eprintln!("tally: new (not in the ASC MHL history): {}", line.path);
                }
                _ => {}
            }
        }
    }

    /// Prints a tree command's summary (a last JSON line with `--json`) and returns its exit code.
    fn finish_tree(&self, result: Result<TreeReport, Error>, all_good: &str, nothing: &str) -> i32 {
        match result {
            Ok(report) => {
                if self.json {
                    let v = serde_json::json!({ "summary": crate::s3::identity::stamp(&report) });
                    println!("{}", crate::redact::redact(&v.to_string()));
                } else if !self.quiet {
                    print!(
                        "{}",
                        crate::redact::redact(&print_tree(&report, all_good, nothing))
                    );
                }
                report.exit_code
            }
            Err(e) => self.finish::<()>(Err(e)),
        }
    }
}

/// The tree upload's settings from the command line.
fn tree_config(args: &UploadArgs) -> Result<TreeConfig, Error> {
    if args.manifest.is_some() {
        return Err(Error::Usage(
            "--manifest names one file's manifest; a directory's manifests go to the state directory (TALLY_STATE_DIR): leave --manifest out"
                .into(),
        ));
    }
    if args.force {
        return Err(Error::Usage(
            "--force sends one file again; a directory's files proven identical are always skipped: upload the file itself with --force".into(),
        ));
    }
    let mut prefix = ObjectUrl::parse(&args.target)?;
    if !prefix.key.is_empty() && !prefix.key.ends_with('/') {
        prefix.key.push('/');
    }
    let mut base = args.to_config()?;
    base.target = prefix.clone();
    Ok(TreeConfig {
        root: args.file.clone(),
        walk: crate::tree::WalkOptions {
            key_prefix_len: prefix.key.len(),
            ..args.tree.walk_options()?
        },
        prefix,
        base,
        mhl: args.mhl,
    })
}

fn print_tree(r: &TreeReport, all_good: &str, nothing: &str) -> String {
    let mut s = String::new();
    for g in &r.groups {
        s += &format!("  {g}\n");
    }
    if r.groups_omitted > 0 {
        s += &format!(
            "  ... and {} more lines (--json lists every file)\n",
            r.groups_omitted
        );
    }
    let verdict = if r.exit_code == EXIT_OK {
        all_good.to_owned()
    } else if !r.complete {
        "STOPPED before the end: run the same command again to finish".to_owned()
    } else {
        format!("NOT {all_good}: see the FAILED / DIFFERS lines above")
    };
    let mut counts = Vec::new();
    let mut count = |n: u64, what: String| {
        if n > 0 {
            counts.push(format!("{n} {what}"));
        }
    };
    count(
        r.uploaded,
        format!("uploaded ({})", human_bytes(r.uploaded_bytes)),
    );
    count(
        r.downloaded,
        format!("downloaded ({})", human_bytes(r.downloaded_bytes)),
    );
    count(
        r.skipped,
        format!(
            "skipped as proven identical ({})",
            human_bytes(r.skipped_bytes)
        ),
    );
    count(r.identical, "identical".into());
    count(r.differs, "DIFFER".into());
    count(r.failed, "FAILED".into());
    count(r.ignored, "ignored".into());
    count(r.not_started, "not started".into());
    if counts.is_empty() {
        counts.push(nothing.to_owned());
    }
    if let Some(m) = &r.mhl {
        s += &mhl_summary(m);
    }
    s += &format!(
        "s3://{}/{}: {} files, {}: {}, in {:.2} s ({:.1} MiB/s)\n  {verdict}\n",
        r.bucket,
        r.prefix,
        r.files,
        human_bytes(r.bytes),
        counts.join(", "),
        r.seconds,
        r.mib_per_s
    );
    s
}

/// The ASC MHL lines of a tree upload's summary.
fn mhl_summary(m: &crate::mhl::session::Summary) -> String {
    let mut s = String::new();
    if m.history {
        s += &format!(
            "ASC MHL history: {} verified, {} new, {} MISMATCHED, {} MISSING\n",
            m.verified, m.new, m.mismatched, m.missing
        );
    }
    if let Some(g) = &m.generation {
        s += &format!(
            "ASC MHL generation {g} written to {}",
            m.written_to.as_deref().unwrap_or("?")
        );
        if let Some(why) = &m.source_read_only {
            s += &format!(" (the source cannot be written: {why})");
        }
        s += &format!("; uploaded: {}\n", m.uploaded.join(", "));
    }
    s
}

async fn download(args: &DownloadArgs, out: &Output) -> Result<DownloadReport, Error> {
    let target = ObjectUrl::parse(&args.source)?;
    let s3 = SdkS3::connect(&args.connection.to_connection()).await?;
    let opts = DownloadOptions {
        force: args.force,
        concurrency: args.concurrency,
        filters: Default::default(),
    };
    let progress = out.progress();
    let cancel = CancellationToken::new();
    watch_signals(cancel.clone());
    tokio::select! {
        r = download::download(&s3, &target, &args.dest, &opts, progress.as_ref()) => r,
        () = cancel.cancelled() => Err(download::interrupted(&target, &args.dest)),
    }
}

/// `tally download s3://BUCKET/PREFIX/ DIR/`.
async fn download_tree(args: &DownloadArgs, out: &Output) -> i32 {
    let run = async {
        let prefix = ObjectUrl::parse(&args.source)?;
        let s3 = SdkS3::connect(&args.connection.to_connection()).await?;
        let cancel = CancellationToken::new();
        watch_signals(cancel.clone());
        let opts = DownloadOptions {
            force: args.force,
            concurrency: args.concurrency,
            filters: args.tree.download_filters()?,
        };
        let progress = out.progress();
        let on_line = out.tree_lines();
        let mut report = download::tree::download_tree(
            &s3,
            &prefix,
            &args.dest,
            &opts,
            progress.as_ref(),
            &cancel,
            &on_line,
        )
        .await?;
        if report.complete {
            // A tree carrying an ASC MHL history is checked against it once it is all here.
            let state = if args.mhl {
                Some(crate::manifest::state_dir()?)
            } else {
                None
            };
            let generation = state.as_deref().map(|d| (&prefix, d));
            crate::mhl::check::check_folder(&args.dest, generation, &mut report, &on_line).await?;
        }
        Ok(report)
    };
    let result = run.await;
    out.finish_tree(
        result,
        "every object is downloaded, each checked as its line says (--json)",
        "nothing to download: no objects under the prefix",
    )
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
        Check::NotReported => "not verified by the server (its reply did not carry it)",
        Check::NotComparableKms => "not compared: under SSE-KMS the ETag is not an MD5",
        Check::NotComparableSseC => "not compared: under SSE-C the ETag is not an MD5",
        Check::NotPredicted => "not computed (no MD5 asked for; --content-md5 adds it)",
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
            "  parts     {} x {}, {} per part, {} echoed back equal by S3{}\n",
            r.parts,
            human_bytes(r.part_size),
            r.checksum.algorithm,
            r.checks.part_checksums_matched,
            match r.parts - r.checks.part_checksums_matched.min(r.parts) {
                0 => String::new(),
                n => format!(" ({n} not verified by the server: not echoed)"),
            }
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
    } else if r.checks.object_checksum == Check::Matched {
        s += &format!(
            "  single PUT with Content-MD5 and {} (S3 echoed the checksum: verified on receipt)\n",
            r.checksum.algorithm
        );
    } else {
        s += &format!(
            "  single PUT with Content-MD5 and {}: the {} checksum was not verified by the server (its reply did not carry it)\n",
            r.checksum.algorithm, r.checksum.algorithm
        );
    }
    s += &format!(
        "  checksum  {} {} ({}): {}\n",
        r.checksum.algorithm,
        r.checksum.value,
        r.checksum.kind,
        check(r.checks.object_checksum)
    );
    s += &print_object_settings(&r.object);
    match &r.etag {
        Some(e) => s += &format!("  etag      {e}: {}\n", check(r.checks.etag)),
        None => {
            s += "  etag      not computed (no MD5 asked for; --content-md5 adds it): the checksums are the proof\n"
        }
    }
    match &r.verified {
        Some(v) => {
            let said = |m: Option<bool>| match m {
                Some(true) => "matches",
                Some(false) => "DIFFERS",
                None => "not compared (the server reports none to compare)",
            };
            let parts = if v.parts_compared == 0 {
                "no per-part checksums listed by the server".to_owned()
            } else {
                format!("{} parts compared one by one", v.parts_compared)
            };
            s += &format!(
                "  read back with {}: checksum {}, ETag {}, {parts}\n",
                v.method,
                said(v.checksum_matches),
                check(v.etag),
            );
            if let Some(note) = &v.checksum_note {
                s += &format!("            {note}\n");
            }
        }
        None => s += "  read back not done (--no-verify)\n",
    }
    if let Some(n) = r.read_back_reads {
        s += &format!("  read back the object's MD5 equals the file's (after {n} read(s))\n");
    }
    if let (Some(md5), Some((name, outcome))) = (&r.md5, &r.md5_tag) {
        s += &format!("  md5 tag   {name}={md5}: {outcome:?}\n");
    }
    s += &print_file_hashes(&r.file_hashes);
    for (name, outcome) in &r.file_hash_tags {
        s += &format!("  tag       {name}: {outcome:?}\n");
    }
    s
}

/// The whole-file hashes, one line each (`  xxh64     45ab6734b21e6968`).
fn print_file_hashes(h: &crate::hash::FileHashes) -> String {
    h.iter()
        .map(|(f, v)| format!("  {:<9} {v} (whole file)\n", f.name()))
        .collect()
}

/// The object settings sent, each with what S3 reported back (HEAD after the upload, or the
/// write's reply for the encryption), never claimed when S3 said nothing.
fn print_object_settings(o: &crate::upload::report::ObjectReport) -> String {
    let said = |requested: Option<String>, reported: Option<String>, unset: &str| match (
        requested, reported,
    ) {
        (Some(r), Some(x)) if r == x => format!("{r} (S3 reports it)"),
        (Some(r), Some(x)) => format!("{r} requested, but S3 reports {x}"),
        (Some(r), None) => format!("{r} requested, not reported back by the server"),
        (None, Some(x)) => format!("{x} (S3 reports it; none requested)"),
        (None, None) => unset.to_owned(),
    };
    let class = said(
        o.storage_class_requested.map(|c| c.to_string()),
        o.storage_class_reported.clone(),
        "the bucket's default",
    );
    let ctype = said(
        o.content_type_requested.clone(),
        o.content_type_reported.clone(),
        "none",
    );
    let count = |requested: usize, reported: Option<usize>| match reported {
        Some(n) if n == requested => format!("{n} (S3 reports {n})"),
        Some(n) => format!("{requested} requested, but S3 reports {n}"),
        None => format!("{requested} requested, not reported back by the server"),
    };
    let mut s = format!("  storage   {class}\n  type      {ctype}\n");
    if o.metadata_requested > 0 || o.metadata_reported.is_some_and(|n| n > 0) {
        s += &format!(
            "  metadata  {}\n",
            count(o.metadata_requested, o.metadata_reported)
        );
    }
    if o.tags_requested > 0 {
        s += &format!(
            "  tags      {}\n",
            count(o.tags_requested, o.tags_reported.map(|n| n as usize))
        );
    }
    if o.sse_requested.is_some() || o.sse_reported.is_some() {
        let sse = said(o.sse_requested.clone(), o.sse_reported.clone(), "none");
        s += &format!("  sse       {sse}\n");
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
    s += &print_file_hashes(&r.file_hashes);
    s
}

/// Sequences listed in a summary at most (each is one line; the rest are counted).
const MAX_SEQUENCE_LINES: usize = 1000;

/// The sequences of a summary: numbered frames grouped as they stream past.
struct Sequences {
    grouper: Grouper<&'static str>,
    kept: Vec<Sequence<&'static str>>,
    more: u64,
}

impl Sequences {
    fn push(&mut self, rel: &str, size: u64, label: &'static str) {
        let closed = self.grouper.push(rel, size, label);
        self.add(closed);
    }

    fn add(&mut self, items: Vec<Item<&'static str>>) {
        for item in items {
            if let Item::Sequence(s) = item {
                if self.kept.len() < MAX_SEQUENCE_LINES {
                    self.kept.push(s);
                } else {
                    self.more += 1;
                }
            }
        }
    }
}

/// Runs `f` as a task on the runtime's worker threads, not on this one: the tasks of its
/// connections wake it at every piece of a body, and a task woken from its own worker thread
/// runs there next, where waking this thread costs a thread switch each time.
fn on_workers<T: Send + 'static>(
    runtime: &tokio::runtime::Runtime,
    f: impl std::future::Future<Output = T> + Send + 'static,
) -> T {
    runtime
        .block_on(runtime.spawn(f))
        .unwrap_or_else(|e| std::panic::resume_unwind(e.into_panic()))
}

/// `tally hash DIR`: a line per file in S3 key order as soon as it and those before it are hashed
/// (text on stdout; skipped entries on stderr), then a summary with the sequences; exit 2 if any
/// entry could not be hashed.
fn hash_dir(args: &HashArgs, out: &Output, runtime: &tokio::runtime::Runtime) -> i32 {
    let walk = parse_hash_args(args.part_size)
        .and_then(|()| args.tree.walk_options())
        .and_then(|opts| tree::walk(&args.path, opts));
    let walk = match walk {
        Ok(w) => w,
        Err(e) => return out.finish::<()>(Err(e)),
    };
    let mut seq = Sequences {
        grouper: Grouper::new(),
        kept: Vec::new(),
        more: 0,
    };
    let summary = runtime.block_on(hashfile::hash_tree(
        &args.path,
        walk,
        args.part_size,
        args.checksum,
        args.file_hash.as_deref().unwrap_or_default(),
        |line| {
            print_tree_line(out, line);
            if out.json {
                return;
            }
            match line {
                TreeLine::Hashed { path, report } => {
                    seq.push(path, report.size, "hashed");
                }
                TreeLine::Failed { path, .. } => seq.push(path, 0, "failed"),
                TreeLine::Skipped { .. } | TreeLine::Summary(_) => {}
            }
        },
    ));
    let rest = seq.grouper.finish();
    seq.add(rest);
    let dir = args.path.display();
    if out.json {
        print_tree_line(out, &TreeLine::Summary(summary.clone()));
    } else if !out.quiet {
        let mut s = if summary.files == 0 && summary.skipped == 0 {
            format!("nothing to hash: {dir} holds no files\n")
        } else {
            format!(
                "hashed {} files, {} in {:.2} s",
                tree::sequence::thousands(summary.files),
                tree::sequence::size_text(summary.bytes),
                summary.seconds
            )
        };
        if summary.skipped > 0 || summary.failed > 0 {
            s += &format!(
                "; {} skipped, {} failed (named above)",
                summary.skipped, summary.failed
            );
        }
        if !s.ends_with('\n') {
            s.push('\n');
        }
        if !seq.kept.is_empty() {
            s += "sequences:\n";
            for q in seq.kept {
                s += &format!("  {}\n", Item::Sequence(q));
            }
            if seq.more > 0 {
                s += &format!("  and {} more sequences\n", seq.more);
            }
        }
        print!("{}", crate::redact::redact(&s));
    }
    if summary.failed > 0 {
        let n = summary.failed;
        let entries = if n == 1 { "entry" } else { "entries" };
        eprintln!("tally: error: {n} {entries} of {dir} could not be hashed (each is named above)");
        EXIT_ERROR
    } else {
        EXIT_OK
    }
}

fn print_tree_line(out: &Output, line: &TreeLine) {
    use crate::redact::redact;
    if out.json {
        let json = serde_json::to_string(line).expect("reports serialize");
        say(&redact(&json));
    }
    match line {
        TreeLine::Hashed { path, report } if !out.json && !out.quiet => {
            let c = &report.checksum;
            say(&redact(&format!(
                "{path}  {}  {} {} ({})  etag {}{}",
                tree::sequence::size_text(report.size),
                c.algorithm,
                c.value,
                c.kind,
                report.etag,
                report
                    .file_hashes
                    .iter()
                    .map(|(f, v)| format!("  {f} {v}"))
                    .collect::<String>()
            )));
        }
        TreeLine::Skipped {
            path,
            reason,
            failure,
            ..
        } => {
            if *failure {
                eprintln!("tally: error: {}", redact(&format!("{path}: {reason}")));
            } else if !out.json && !out.quiet {
                eprintln!("tally: warning: {}", redact(&format!("{path}: {reason}")));
            }
        }
        TreeLine::Failed { reason, .. } => eprintln!("tally: error: {}", redact(reason)),
        _ => {}
    }
}

/// Prints one line of a streamed report; when standard output is gone (`| head`), stops quietly.
fn say(line: &str) {
    use std::io::Write as _;
    if writeln!(std::io::stdout().lock(), "{line}").is_err() {
        std::process::exit(EXIT_ERROR);
    }
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
    s += &if r.parts_compared == 0 && r.differing_parts.is_empty() {
        format!(
            "  parts     {} in the object (the server lists no per-part checksums to compare one by one)\n",
            r.parts
        )
    } else {
        format!(
            "  parts     {} in the object, {} compared one by one, {} differ\n",
            r.parts,
            r.parts_compared,
            r.differing_parts.len()
        )
    };
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
        let kept = r.state_file.as_deref().map_or(
            "no --state was given, so nothing is kept: run again with --state FILE to be able to continue".into(),
            |p| format!("state saved in {}: run the same command again to continue", p.display()),
        );
        return format!(
            "not finished: {} of {} bytes hashed ({:.1} MiB/s); {kept}\n",
            r.offset, r.size, r.mib_per_s,
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
