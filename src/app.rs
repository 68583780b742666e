//! Runs a parsed command: logging, the async runtime, signals, output and the exit code.

use std::io::IsTerminal as _;

use tokio_util::sync::CancellationToken;

use crate::cli::{Cli, Command, OutputArgs, UploadArgs};
use crate::error::{EXIT_ERROR, EXIT_OK, Error};
use crate::pipeline::{self, Check, UploadReport};
use crate::progress::{Bar, Progress, Silent};
use crate::s3::SdkS3;

/// Runs `cli` to completion and returns the process exit code.
pub fn run(cli: Cli) -> i32 {
    match cli.command {
        Command::Upload(args) => {
            init_logging(&args.output);
            let out = Output::from(&args.output);
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
                .expect("a tokio runtime can be built");
            let result = runtime.block_on(upload(&args, &out));
            out.finish(result.map(|r| (print_upload(&r), r)))
        }
    }
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
        if self.json || self.quiet || !std::io::stderr().is_terminal() {
            Box::new(Silent)
        } else {
            Box::new(Bar::new())
        }
    }

    fn finish<T: serde::Serialize>(&self, result: Result<(String, T), Error>) -> i32 {
        match result {
            Ok((text, report)) => {
                if self.json {
                    println!(
                        "{}",
                        serde_json::to_string_pretty(&report).expect("reports serialize")
                    );
                } else if !self.quiet {
                    print!("{text}");
                }
                EXIT_OK
            }
            Err(e) => {
                let code = e.exit_code();
                if self.json {
                    let v = serde_json::json!({ "error": e.to_string(), "exit_code": code });
                    println!("{v}");
                }
                eprintln!("tally: error: {e}");
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
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}

/// The first Ctrl-C / SIGTERM cancels `token` (the upload is stopped and aborted); a second one
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
    pipeline::upload(&s3, &cfg, progress.as_ref(), &cancel).await
}

fn print_upload(r: &UploadReport) -> String {
    let check = |c: Check| match c {
        Check::Matched => "matches S3",
        Check::NotReported => "not reported by the server, not compared",
        Check::NotComparableKms => "not compared: under SSE-KMS the ETag is not an MD5",
    };
    let mut s = format!(
        "uploaded {} to s3://{}/{} in {:.2} s ({:.1} MiB/s)\n",
        human_bytes(r.size),
        r.bucket,
        r.key,
        r.seconds,
        r.mib_per_s
    );
    if r.method == "multipart" {
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
    s += &format!("  etag      {}: {}\n", r.etag, check(r.checks.etag));
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
