//! The command line in two steps (ripgrep's): [`build`] checks every flag and resolves the
//! command into a validated [`Job`], before anything connects or is read; [`run`] then runs it,
//! with one connection to S3 ([`connect`]) and one watch for Ctrl-C / SIGTERM
//! ([`watch_signals`]) for the commands that use them, and hands it to `app/<command>.rs`.

use tokio::runtime::Runtime;
use tokio_util::sync::CancellationToken;

use super::output::Output;
use super::{download, hash, help, md5, shard, upload, uploads, verify};
use crate::cli::{Command, ConnectionArgs};
use crate::error::{EXIT_ERROR, Error};
use crate::s3::{Connection, SdkS3};
use crate::vocab::ObjectUrl;

/// A command whose flags are checked and resolved: all it needs to run.
pub(crate) enum Job {
    /// `tally completions`, `tally man`: text from clap's definitions.
    Help(help::Job),
    /// `tally hash`: offline, never connects.
    Hash(hash::Job),
    /// Every other command: what it does, and the connection to S3 it makes once.
    S3 {
        /// The endpoint, region, profile and limits (`--endpoint-url`, `--region`, ...).
        connection: Connection,
        /// The command.
        work: S3Job,
    },
}

/// The commands that talk to S3.
pub(crate) enum S3Job {
    Upload(Box<upload::Job>),
    Download(download::Job),
    Verify(verify::Job),
    Md5(md5::Job),
    /// `tally uploads s3://BUCKET[/PREFIX]`.
    Uploads(ObjectUrl),
    Abort(uploads::Abort),
    Shard(shard::Job),
}

impl S3Job {
    /// Whether the first Ctrl-C / SIGTERM stops it cleanly (the second exits at once); the others
    /// end at the first, as any process does.
    fn stops_on_signal(&self) -> bool {
        match self {
            S3Job::Upload(j) => !matches!(**j, upload::Job::PlanFile(_)),
            S3Job::Download(j) => !matches!(j, download::Job::PlanFile { .. }),
            S3Job::Verify(_) | S3Job::Md5(_) => true,
            S3Job::Uploads(_) | S3Job::Abort(_) => false,
            S3Job::Shard(j) => matches!(j, shard::Job::Run { .. }),
        }
    }

    /// Whether its report is a tree's (a summary, the last record of `--json`), so that an error
    /// before it started ends the same way.
    fn tree(&self) -> bool {
        match self {
            S3Job::Upload(j) => !matches!(**j, upload::Job::File { .. }),
            S3Job::Download(j) => !matches!(j, download::Job::File { .. }),
            S3Job::Verify(j) => matches!(j, verify::Job::Tree(_)),
            _ => false,
        }
    }
}

/// A command line that cannot run: its one error line, ended as the command's report would end
/// (`tree`: with a tree's summary).
pub(crate) struct Refused {
    pub(crate) error: Box<Error>,
    pub(crate) tree: bool,
}

impl Refused {
    /// Refused where the report is a tree's.
    pub(crate) fn tree(error: impl Into<Error>) -> Refused {
        Refused {
            error: Box::new(error.into()),
            tree: true,
        }
    }

    /// Prints it; returns the exit code.
    pub(crate) fn render(self, out: &Output) -> i32 {
        out.refuse(*self.error, self.tree)
    }
}

impl From<Error> for Refused {
    fn from(error: Error) -> Refused {
        Refused {
            error: Box::new(error),
            tree: false,
        }
    }
}

impl From<crate::vocab::Invalid> for Refused {
    fn from(e: crate::vocab::Invalid) -> Refused {
        Refused::from(Error::from(e))
    }
}

/// What a command that talks to S3 is handed to run: the one connection, the one stop signal,
/// the printer and the runtime.
pub(crate) struct Run<'a> {
    pub(crate) s3: &'a SdkS3,
    pub(crate) cancel: &'a CancellationToken,
    pub(crate) out: &'a Output,
    pub(crate) runtime: &'a Runtime,
    /// Where manifests and other state live, read from the environment once, here.
    pub(crate) state: &'a crate::state::StateDir,
}

/// Step one: `command`'s flags checked and resolved into its job, or the one line that refuses
/// it. Touches no network; reads no more than whether a path is a directory.
pub(crate) fn build(command: &Command) -> Result<Job, Refused> {
    let s3 = |conn: &ConnectionArgs, work| Job::S3 {
        connection: conn.to_connection(),
        work,
    };
    Ok(match command {
        Command::Completions(a) => Job::Help(help::Job::Completions(a.shell)),
        Command::Man => Job::Help(help::Job::Man),
        Command::Hash(a) => Job::Hash(hash::job(a)?),
        Command::Upload(a) => s3(&a.connection, S3Job::Upload(Box::new(upload::job(a)?))),
        Command::Download(a) => s3(&a.connection, S3Job::Download(download::job(a)?)),
        Command::Verify(a) => s3(&a.connection, S3Job::Verify(verify::job(a)?)),
        Command::Md5(a) => s3(&a.connection, S3Job::Md5(md5::job(a)?)),
        Command::Uploads(a) => s3(&a.connection, S3Job::Uploads(ObjectUrl::parse(&a.target)?)),
        Command::Abort(a) => s3(&a.connection, S3Job::Abort(uploads::job(a)?)),
        Command::Shard(c) => s3(shard::connection(c), S3Job::Shard(shard::job(c)?)),
    })
}

/// Step two: runs `job` and returns the exit code.
pub(crate) fn run(job: Job, out: &Output) -> i32 {
    let (connection, work) = match job {
        Job::Help(h) => return help::run(h),
        Job::Hash(h) => return hash::run(h, out, &runtime()),
        Job::S3 { connection, work } => (connection, work),
    };
    let runtime = runtime();
    let s3 = match runtime.block_on(connect(&connection)) {
        Ok(s3) => s3,
        Err(e) => return out.refuse(e, work.tree()),
    };
    let cancel = CancellationToken::new();
    if work.stops_on_signal() {
        let _in = runtime.enter();
        watch_signals(cancel.clone());
    }
    let state = crate::state::StateDir::from_env();
    let run = Run {
        s3: &s3,
        cancel: &cancel,
        out,
        runtime: &runtime,
        state: &state,
    };
    match work {
        S3Job::Upload(j) => upload::run(*j, &run),
        S3Job::Download(j) => download::run(j, &run),
        S3Job::Verify(j) => verify::run(j, &run),
        S3Job::Md5(j) => md5::run(j, &run),
        S3Job::Uploads(target) => uploads::list(&target, &run),
        S3Job::Abort(j) => uploads::abort(&j, &run),
        S3Job::Shard(j) => shard::run(j, &run),
    }
}

fn runtime() -> Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .max_blocking_threads(crate::exec::BLOCKING_THREADS)
        .enable_all()
        .build()
        .expect("a tokio runtime can be built")
}

/// The one connection of a run: credentials and region resolved, the client built. What fails
/// is one line saying what to do (no credentials found, an unknown profile, a bad endpoint).
async fn connect(connection: &Connection) -> Result<SdkS3, Error> {
    Ok(SdkS3::connect(connection).await?)
}

/// The first Ctrl-C / SIGTERM cancels `token` (the run stops, and what it did is kept for the
/// same command to resume); a second one exits at once. Both are watched from here on (inside
/// the runtime), before the run starts: none arrives unwatched.
fn watch_signals(token: CancellationToken) {
    use tokio::signal::unix::{SignalKind, signal};
    let mut int = signal(SignalKind::interrupt()).expect("SIGINT handler");
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
    tokio::spawn(async move {
        for round in 0..2 {
            tokio::select! {
                _ = int.recv() => {}
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

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser as _;

    /// `tally` + `line`, parsed by clap and built into a job.
    fn built(line: &[&str]) -> Result<Job, Refused> {
        let argv = std::iter::once("tally").chain(line.iter().copied());
        let cli = crate::cli::Cli::try_parse_from(argv).expect("clap accepts the line");
        build(&cli.command)
    }

    /// The line a refused command prints after `tally: error: `, and whether it ends as a tree's
    /// report.
    fn refused(line: &[&str]) -> (String, bool) {
        match built(line) {
            Ok(_) => panic!("{line:?} was accepted"),
            Err(r) => (r.error.to_string(), r.tree),
        }
    }

    /// The connection and the work of a command that talks to S3.
    fn s3_job(line: &[&str]) -> (Connection, S3Job) {
        match built(line) {
            Ok(Job::S3 { connection, work }) => (connection, work),
            Ok(_) => panic!("{line:?} needs no S3"),
            Err(r) => panic!("{line:?} refused: {}", r.error),
        }
    }

    fn folder() -> (tempfile::TempDir, String) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().display().to_string();
        (dir, path)
    }

    #[test]
    fn one_file_flags_that_need_a_folder_are_refused_before_connecting() {
        let (msg, tree) = refused(&["upload", "clip.mov", "s3://bkt/k", "--mhl"]);
        assert_eq!(
            msg,
            "--mhl writes an ASC MHL generation for a directory; clip.mov is not one: upload its folder"
        );
        assert!(!tree, "one file's error ends as one file's report");
        let (msg, _) = refused(&["upload", "clip.mov", "s3://bkt/", "--exclude", "*.tmp"]);
        assert_eq!(
            msg,
            "--include, --exclude and --no-follow-symlinks need a directory; clip.mov is not one"
        );
        let (msg, _) = refused(&["verify", "clip.mov", "s3://bkt/k", "--include", "*.mov"]);
        assert_eq!(
            msg,
            "--include, --exclude and --no-follow-symlinks need a directory; clip.mov is not one"
        );
        let (msg, tree) = refused(&["download", "s3://bkt/k", "out", "--exclude", "x"]);
        assert!(msg.starts_with("--include and --exclude choose the objects under a prefix"));
        assert!(!tree);
        let (msg, _) = refused(&["download", "s3://bkt/k", "out", "--mhl"]);
        assert!(msg.starts_with("--mhl writes an ASC MHL generation for a downloaded folder"));
    }

    #[test]
    fn a_folder_refuses_one_file_flags_and_ends_as_a_tree() {
        let (_dir, path) = folder();
        for (flags, said) in [
            (&["--force"][..], "--force sends one file again"),
            (
                &["--manifest", "m.manifest"][..],
                "--manifest names one file's manifest",
            ),
            (
                &["--dryrun", "--mhl"][..],
                "--dryrun writes nothing, so no ASC MHL",
            ),
        ] {
            let mut line = vec!["upload", &path, "s3://bkt/day1/"];
            line.extend(flags);
            let (msg, tree) = refused(&line);
            assert!(msg.starts_with(said), "{flags:?}: {msg}");
            assert!(tree, "{flags:?}: a folder's error ends with its summary");
        }
    }

    #[test]
    fn sizes_and_ranges_are_checked_before_connecting() {
        let size = "--part-size 1048576 bytes is outside S3's limits: choose 5MiB to 5GiB, or auto";
        assert_eq!(
            refused(&["upload", "f", "s3://bkt/k", "--part-size", "1MiB"]).0,
            size
        );
        assert_eq!(refused(&["hash", "f", "--part-size", "1MiB"]).0, size);
        let plan = ["shard", "plan", "f", "s3://bkt/k", "--shards", "2"];
        let mut line = plan.to_vec();
        line.extend(["--plan", "p.json", "--part-size", "1MiB"]);
        assert_eq!(refused(&line).0, size);
        assert_eq!(
            refused(&["upload", "f", "s3://bkt/k", "--concurrency", "0"]).0,
            "--concurrency 0 is out of range: choose 1 to 1024"
        );
        let mut line = plan.to_vec();
        line.extend(["--plan", "s3://bkt/plans/"]);
        assert!(
            refused(&line)
                .0
                .starts_with("--plan s3://bkt/plans/ names a prefix")
        );
        let (msg, tree) = refused(&["md5", "http://bkt/k"]);
        assert!(msg.contains("it must start with s3://"), "{msg}");
        assert!(!tree);
    }

    #[test]
    fn a_bad_url_in_a_dry_run_ends_as_a_tree_and_one_file_as_one_file() {
        assert!(refused(&["download", "bkt/k", "out", "--dryrun"]).1);
        assert!(!refused(&["download", "bkt/k", "out"]).1);
        assert!(refused(&["upload", "f", "bkt/k", "--dryrun"]).1);
        assert!(!refused(&["upload", "f", "bkt/k"]).1);
    }

    #[test]
    fn a_folder_upload_resolves_its_prefix_and_its_connection() {
        let (_dir, path) = folder();
        let line = [
            "upload",
            &path,
            "s3://bkt/day1",
            "--endpoint-url",
            "http://127.0.0.1:3900",
            "--region",
            "garage",
        ];
        let (conn, work) = s3_job(&line);
        assert_eq!(conn.endpoint_url.as_deref(), Some("http://127.0.0.1:3900"));
        assert_eq!(conn.region.as_deref(), Some("garage"));
        assert!(work.stops_on_signal() && work.tree());
        let S3Job::Upload(job) = work else {
            panic!("an upload");
        };
        let upload::Job::Tree(cfg) = *job else {
            panic!("a folder upload");
        };
        assert_eq!(cfg.prefix.key, "day1/", "a prefix gets its /");
        assert_eq!(cfg.walk.key_prefix_len, "day1/".len());
        assert_eq!(cfg.base.target.key, "day1/");
    }

    #[test]
    fn one_file_upload_keeps_force_and_stops_on_a_signal() {
        let (_, work) = s3_job(&["upload", "clip.mov", "s3://bkt/raw/", "--force"]);
        assert!(work.stops_on_signal() && !work.tree());
        let S3Job::Upload(job) = work else {
            panic!("an upload");
        };
        let upload::Job::File { cfg, force } = *job else {
            panic!("one file");
        };
        assert!(force);
        assert_eq!(cfg.target.key, "raw/clip.mov");
    }

    #[test]
    fn which_commands_watch_for_signals() {
        let (_dir, path) = folder();
        let cases: [(&[&str], bool); 9] = [
            (&["upload", "f", "s3://bkt/k", "--dryrun"], false),
            (&["upload", &path, "s3://bkt/p/", "--dryrun"], true),
            (&["download", "s3://bkt/k", "out", "--dryrun"], false),
            (&["download", "s3://bkt/p/", "out", "--dryrun"], true),
            (&["download", "s3://bkt/k", "out"], true),
            (&["verify", "f", "s3://bkt/k"], true),
            (&["md5", "s3://bkt/k"], true),
            (&["uploads", "s3://bkt"], false),
            (&["abort", "s3://bkt/k", "--upload-id", "u1"], false),
        ];
        for (line, stops) in cases {
            assert_eq!(s3_job(line).1.stops_on_signal(), stops, "{line:?}");
        }
        assert!(s3_job(&["shard", "run", "p.json"]).1.stops_on_signal());
        assert!(!s3_job(&["shard", "finish", "p.json"]).1.stops_on_signal());
    }

    #[test]
    fn a_prefix_download_takes_its_filters_and_flags() {
        let line = ["download", "s3://bkt/p/", "out", "--hedge", "--mhl"];
        let (_, work) = s3_job(&line);
        assert!(work.tree());
        let S3Job::Download(download::Job::Tree {
            prefix, opts, mhl, ..
        }) = work
        else {
            panic!("a prefix download");
        };
        assert_eq!(prefix.key, "p/");
        assert!(opts.hedge && mhl && !opts.force);
    }

    #[test]
    fn a_folder_verify_is_a_tree_under_the_prefix() {
        let (_dir, path) = folder();
        let (_, work) = s3_job(&["verify", &path, "s3://bkt/p", "--etag"]);
        let S3Job::Verify(verify::Job::Tree(cfg)) = work else {
            panic!("a folder verify");
        };
        assert_eq!(cfg.prefix.key, "p/");
        assert!(cfg.opts.etag && !cfg.opts.download);
    }

    #[test]
    fn hash_and_help_need_no_connection() {
        assert!(matches!(built(&["hash", "f"]), Ok(Job::Hash(_))));
        let (_dir, path) = folder();
        assert!(matches!(
            built(&["hash", &path, "--exclude", "*.tmp"]),
            Ok(Job::Hash(_))
        ));
        let (msg, _) = refused(&["hash", "f", "--exclude", "*.tmp"]);
        assert!(
            msg.starts_with("--include, --exclude and --no-follow-symlinks apply to directories")
        );
        assert!(matches!(built(&["man"]), Ok(Job::Help(help::Job::Man))));
        assert!(matches!(
            built(&["completions", "bash"]),
            Ok(Job::Help(help::Job::Completions(_)))
        ));
    }
}
