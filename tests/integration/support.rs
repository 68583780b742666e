//! Shared helpers: one real Garage per test run, the tally binary, the AWS CLI, test files, and
//! the bounds and seams that keep every test deterministic: every child process runs under a time
//! bound ([`run_bounded`], [`Running`]), every wait for another process waits for an event
//! ([`Seams`], [`wait_for`]) with a bound that fails with a clear message.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use sha2::{Digest as _, Sha256};

/// A running S3 server and the credentials of its test key.
pub struct Server {
    pub endpoint: String,
    pub bucket: String,
    env: HashMap<String, String>,
    scratch: PathBuf,
}

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The Garage shared by every test of this run. Started by `scripts/garage` and stopped by the
/// script's watchdog when this test process exits (`TALLY_TEST_GARAGE_ENV` reuses a running one).
pub fn garage() -> &'static Server {
    static GARAGE: OnceLock<Server> = OnceLock::new();
    GARAGE.get_or_init(|| start("garage", "TALLY_TEST_GARAGE_ENV"))
}

/// LocalStack's S3, for what Garage lacks (GetObjectAttributes with parts, tagging,
/// EntityTooSmall); shared and stopped like [`garage`] (`TALLY_TEST_LOCALSTACK_ENV` reuses one).
pub fn localstack() -> &'static Server {
    static LOCALSTACK: OnceLock<Server> = OnceLock::new();
    LOCALSTACK.get_or_init(|| start("localstack", "TALLY_TEST_LOCALSTACK_ENV"))
}

/// moto's S3 server (scripts/moto-s3), for the compatibility tests; shared and stopped like
/// [`garage`] (`TALLY_TEST_MOTO_ENV` reuses one).
pub fn moto() -> &'static Server {
    static MOTO: OnceLock<Server> = OnceLock::new();
    MOTO.get_or_init(|| start("moto-s3", "TALLY_TEST_MOTO_ENV"))
}

/// s3s-fs (scripts/s3s-fs), for the compatibility tests; shared and stopped like [`garage`]
/// (`TALLY_TEST_S3S_FS_ENV` reuses one).
pub fn s3s_fs() -> &'static Server {
    static S3S_FS: OnceLock<Server> = OnceLock::new();
    S3S_FS.get_or_init(|| start("s3s-fs", "TALLY_TEST_S3S_FS_ENV"))
}

/// Both servers, for tests of behaviour where they differ.
pub fn servers() -> [(&'static str, &'static Server); 2] {
    [("garage", garage()), ("localstack", localstack())]
}

fn start(script: &str, reuse_var: &str) -> Server {
    let env_file = match std::env::var(reuse_var) {
        Ok(f) => PathBuf::from(f),
        Err(_) => {
            let dir =
                std::env::temp_dir().join(format!("tally-test-{script}-{}", std::process::id()));
            let out = run_bounded(
                Command::new(repo().join("scripts").join(script))
                    .arg("start")
                    .arg(&dir)
                    .args(["--owner-pid", &std::process::id().to_string()]),
                Duration::from_secs(400),
                &format!("scripts/{script} start"),
            );
            assert!(
                out.status.success(),
                "scripts/{script} start failed (run scripts/tools to install it): {}",
                stderr(&out)
            );
            dir.join("env")
        }
    };
    Server::from_env_file(&env_file, script)
}

impl Server {
    fn from_env_file(path: &Path, name: &str) -> Server {
        let text = std::fs::read_to_string(path).expect("server env file");
        let env: HashMap<String, String> = text
            .lines()
            .filter_map(|l| l.strip_prefix("export "))
            .filter_map(|l| l.split_once('='))
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect();
        // Beside the server's own files, so its watchdog removes them with it.
        let scratch = path
            .parent()
            .unwrap()
            .join(format!("test-files-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&scratch).unwrap();
        // Empty AWS config files: nothing from the user's ~/.aws leaks into the tests.
        std::fs::write(scratch.join("aws-config"), "").unwrap();
        std::fs::write(scratch.join("aws-credentials"), "").unwrap();
        Server {
            endpoint: env["AWS_ENDPOINT_URL"].clone(),
            bucket: env["TALLY_BUCKET"].clone(),
            env,
            scratch,
        }
    }

    /// The environment a client needs to reach this server, and nothing from the user's ~/.aws.
    pub fn apply_env(&self, cmd: &mut Command) {
        for k in [
            "AWS_PROFILE",
            "AWS_SESSION_TOKEN",
            "AWS_ENDPOINT_URL_S3",
            "AWS_REQUEST_CHECKSUM_CALCULATION",
            "RUST_LOG",
        ] {
            cmd.env_remove(k);
        }
        cmd.env("AWS_CONFIG_FILE", self.scratch.join("aws-config"));
        cmd.env(
            "AWS_SHARED_CREDENTIALS_FILE",
            self.scratch.join("aws-credentials"),
        );
        cmd.env("AWS_EC2_METADATA_DISABLED", "true");
        cmd.env("TALLY_STATE_DIR", self.scratch.join("state"));
        for (k, v) in &self.env {
            cmd.env(k, v);
        }
    }

    pub fn secret(&self) -> &str {
        &self.env["AWS_SECRET_ACCESS_KEY"]
    }

    pub fn access_key(&self) -> &str {
        &self.env["AWS_ACCESS_KEY_ID"]
    }

    /// A variable of the server's env file (`scripts/garage start` writes a second account as
    /// `TALLY_OTHER_*`).
    pub fn var(&self, name: &str) -> Option<&str> {
        self.env.get(name).map(String::as_str)
    }

    /// A fresh directory for one test's files.
    pub fn temp_dir(&self) -> tempfile::TempDir {
        tempfile::tempdir_in(&self.scratch).unwrap()
    }

    /// `s3://BUCKET/KEY`.
    pub fn url(&self, key: &str) -> String {
        format!("s3://{}/{key}", self.bucket)
    }

    /// A `tally` command set up for this server, to add arguments and environment to.
    pub fn command(&self) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_tally"));
        self.apply_env(&mut cmd);
        cmd
    }

    /// Runs `tally ARGS` against this server.
    pub fn tally<I, S>(&self, args: I) -> Output
    where
        I: IntoIterator<Item = S>,
        S: AsRef<std::ffi::OsStr>,
    {
        self.tally_within(TALLY_BOUND, args)
    }

    /// Runs `tally ARGS` against this server; a run longer than `bound` is killed and fails the
    /// test.
    pub fn tally_within<I, S>(&self, bound: Duration, args: I) -> Output
    where
        I: IntoIterator<Item = S>,
        S: AsRef<std::ffi::OsStr>,
    {
        let mut cmd = self.command();
        cmd.args(args);
        let what = describe(&cmd);
        run_bounded(&mut cmd, bound, &what)
    }

    /// Uploads `path` to `key` with tally (`--part-size part_size --quiet`); panics with tally's
    /// error unless it succeeds.
    pub fn put(&self, path: &Path, key: &str, part_size: &str) {
        let out = self.tally([
            "upload",
            path.to_str().unwrap(),
            &self.url(key),
            "--part-size",
            part_size,
            "--quiet",
        ]);
        assert!(
            out.status.success(),
            "tally upload failed: {}",
            stderr(&out)
        );
    }

    /// Runs `aws ARGS` (the AWS CLI) against this server; panics unless it succeeds.
    pub fn aws<I, S>(&self, args: I) -> String
    where
        I: IntoIterator<Item = S>,
        S: AsRef<std::ffi::OsStr>,
    {
        let out = self.aws_output(args);
        assert!(
            out.status.success(),
            "aws failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    /// Runs `aws ARGS`, whatever its outcome.
    pub fn aws_output<I, S>(&self, args: I) -> Output
    where
        I: IntoIterator<Item = S>,
        S: AsRef<std::ffi::OsStr>,
    {
        self.aws_output_env(&[], args)
    }

    /// Runs `aws ARGS` with extra environment variables, whatever its outcome.
    pub fn aws_output_env<I, S>(&self, env: &[(&str, &str)], args: I) -> Output
    where
        I: IntoIterator<Item = S>,
        S: AsRef<std::ffi::OsStr>,
    {
        let mut cmd = Command::new("aws");
        self.apply_env(&mut cmd);
        cmd.envs(env.iter().copied());
        cmd.args(args);
        let what = describe(&cmd);
        run_bounded(&mut cmd, AWS_BOUND, &what)
    }

    /// `aws s3api head-object --checksum-mode ENABLED`, parsed; None if the object does not exist.
    pub fn head(&self, key: &str) -> Option<serde_json::Value> {
        let out = self.aws_output([
            "s3api",
            "head-object",
            "--bucket",
            &self.bucket,
            "--key",
            key,
            "--checksum-mode",
            "ENABLED",
        ]);
        out.status
            .success()
            .then(|| serde_json::from_slice(&out.stdout).expect("head-object JSON"))
    }

    /// Multipart uploads in progress for `key`, by the AWS CLI.
    /// The object's tags as the AWS CLI reads them, sorted.
    pub fn tags(&self, key: &str) -> Vec<(String, String)> {
        let out = self.aws([
            "s3api",
            "get-object-tagging",
            "--bucket",
            &self.bucket,
            "--key",
            key,
        ]);
        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
        let mut t: Vec<(String, String)> = v["TagSet"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| {
                (
                    t["Key"].as_str().unwrap().to_owned(),
                    t["Value"].as_str().unwrap().to_owned(),
                )
            })
            .collect();
        t.sort();
        t
    }

    pub fn uploads_in_progress(&self, key: &str) -> usize {
        let out = self.aws([
            "s3api",
            "list-multipart-uploads",
            "--bucket",
            &self.bucket,
            "--prefix",
            key,
        ]);
        if out.trim().is_empty() {
            return 0;
        }
        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
        v["Uploads"]
            .as_array()
            .map_or(0, |a| a.iter().filter(|u| u["Key"] == key).count())
    }

    /// Aborts every multipart upload in progress for exactly `key` (a test's leftovers).
    pub fn abort_uploads(&self, key: &str) {
        let list = self.aws([
            "s3api",
            "list-multipart-uploads",
            "--bucket",
            &self.bucket,
            "--prefix",
            key,
        ]);
        if list.trim().is_empty() {
            return;
        }
        let v: serde_json::Value = serde_json::from_str(&list).unwrap();
        for u in v["Uploads"].as_array().into_iter().flatten() {
            if u["Key"] == key {
                self.aws([
                    "s3api",
                    "abort-multipart-upload",
                    "--bucket",
                    &self.bucket,
                    "--key",
                    key,
                    // One argument: an id that starts with '-' (moto's can) is no option.
                    &format!("--upload-id={}", u["UploadId"].as_str().unwrap()),
                ]);
            }
        }
    }

    /// Downloads `key` with the AWS CLI and returns the SHA-256 of the bytes.
    pub fn download_sha256(&self, key: &str) -> String {
        let dir = self.temp_dir();
        let dest = dir.path().join("download");
        self.aws([
            "s3",
            "cp",
            "--quiet",
            &self.url(key),
            dest.to_str().unwrap(),
        ]);
        file_sha256(&dest)
    }
}

/// Writes `len` pseudo-random bytes (xorshift from `seed`) to `dir/name`.
pub fn random_file(dir: &Path, name: &str, len: u64, seed: u64) -> PathBuf {
    use std::io::Write as _;
    let path = dir.join(name);
    let mut f = std::io::BufWriter::new(std::fs::File::create(&path).unwrap());
    let mut x = seed.wrapping_add(1).wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut left = len;
    let mut buf = [0u8; 8];
    while left > 0 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        buf.copy_from_slice(&x.to_le_bytes());
        let n = left.min(8) as usize;
        f.write_all(&buf[..n]).unwrap();
        left -= n as u64;
    }
    f.flush().unwrap();
    path
}

pub fn file_sha256(path: &Path) -> String {
    let data = std::fs::read(path).unwrap();
    hex(&Sha256::digest(&data))
}

pub fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// Parses tally's `--json` report; panics with tally's stderr if the run failed.
pub fn json_report(out: &Output) -> serde_json::Value {
    assert!(
        out.status.success(),
        "tally failed ({:?}): {}",
        out.status.code(),
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("tally --json prints JSON")
}

pub fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

pub const MIB: u64 = 1024 * 1024;

/// How long one tally run may take before it counts as hung (debug build, busy machine).
pub const TALLY_BOUND: Duration = Duration::from_secs(300);
/// How long one AWS CLI call may take.
pub const AWS_BOUND: Duration = Duration::from_secs(120);
/// How long a test waits for an event another process causes (a seam reached, a record written).
pub const EVENT_BOUND: Duration = Duration::from_secs(120);

/// `key-RUN`, unique to this test process: for tests that assert a key is absent, so that a
/// reused server (`TALLY_TEST_GARAGE_ENV`) cannot hold it from an earlier run.
pub fn unique(key: &str) -> String {
    static RUN: OnceLock<String> = OnceLock::new();
    let run = RUN.get_or_init(|| {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos();
        format!("{}-{:x}", std::process::id(), nanos % (1 << 40))
    });
    format!("{key}-{run}")
}

/// The program and arguments of `cmd`, for messages.
fn describe(cmd: &Command) -> String {
    let mut s = cmd.get_program().to_string_lossy().into_owned();
    if let Some(name) = Path::new(&s).file_name() {
        s = name.to_string_lossy().into_owned();
    }
    for a in cmd.get_args() {
        s.push(' ');
        s.push_str(&a.to_string_lossy());
    }
    s
}

/// Polls `cond` every 50 ms until it holds (for state no child process of the test owns: a
/// scheduler's log, a server's listing); fails saying `what` never happened after `bound`.
pub fn poll_until(bound: Duration, what: &str, mut cond: impl FnMut() -> bool) {
    let until = Instant::now() + bound;
    while !cond() {
        assert!(
            Instant::now() < until,
            "waited {} s for {what}: it never happened",
            bound.as_secs()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Runs `cmd` to its end, capturing its output; if it runs longer than `bound` it is killed and
/// the test fails saying `what` hung.
pub fn run_bounded(cmd: &mut Command, bound: Duration, what: &str) -> Output {
    Running::spawn(cmd, what).finish(bound)
}

/// A child process with its stdout and stderr drained by threads (so it never blocks on a full
/// pipe; what it wrote so far can be read while it runs), killed when dropped: a failing test
/// leaves nothing running.
pub struct Running {
    child: Option<Child>,
    what: String,
    out: Drained,
    err: Drained,
}

/// One output of a child: what it wrote so far, and the thread that reads it until it closes.
struct Drained {
    bytes: std::sync::Arc<std::sync::Mutex<Vec<u8>>>,
    reader: Option<std::thread::JoinHandle<()>>,
}

impl Drained {
    fn from(r: Option<impl std::io::Read + Send + 'static>) -> Drained {
        let bytes = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let reader = r.map(|mut r| {
            let bytes = bytes.clone();
            std::thread::spawn(move || {
                let mut buf = [0u8; 8192];
                while let Ok(n) = r.read(&mut buf) {
                    if n == 0 {
                        break;
                    }
                    bytes.lock().unwrap().extend_from_slice(&buf[..n]);
                }
            })
        });
        Drained { bytes, reader }
    }

    /// What was written so far.
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.bytes.lock().unwrap()).into_owned()
    }

    /// Whether the output was closed (and so read to its end).
    fn ended(&self) -> bool {
        self.reader.as_ref().is_none_or(|h| h.is_finished())
    }

    /// Everything written, once it ended.
    fn take(&mut self) -> Vec<u8> {
        if let Some(h) = self.reader.take() {
            h.join().unwrap();
        }
        std::mem::take(&mut self.bytes.lock().unwrap())
    }
}

impl Running {
    /// Starts `cmd` with stdin closed and stdout and stderr captured.
    pub fn spawn(cmd: &mut Command, what: &str) -> Running {
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {what}: {e}"));
        let out = Drained::from(child.stdout.take());
        let err = Drained::from(child.stderr.take());
        Running {
            child: Some(child),
            what: what.to_owned(),
            out,
            err,
        }
    }

    /// Its process id.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().unwrap().id()
    }

    /// The exit status if it has ended.
    pub fn exited(&mut self) -> Option<ExitStatus> {
        self.child.as_mut().unwrap().try_wait().unwrap()
    }

    /// Sends it SIGINT (Ctrl-C), as `kill -INT` does.
    pub fn interrupt(&self) {
        self.signal("INT");
    }

    /// Sends it the signal `name` (`INT`, `TERM`), as `kill -NAME` does.
    pub fn signal(&self, name: &str) {
        let (pid, flag) = (self.pid().to_string(), format!("-{name}"));
        let out = run_bounded(
            Command::new("kill").args([&flag, &pid]),
            Duration::from_secs(30),
            "kill",
        );
        assert!(out.status.success(), "kill {flag} {pid}: {}", stderr(&out));
    }

    /// Panics with its output if it has ended (`while` says what the test was waiting for).
    pub fn assert_running(&mut self, while_: &str) {
        if self.exited().is_some() {
            let what = self.what.clone();
            let out = self.collect(Duration::from_secs(5));
            panic!(
                "{what} ended ({:?}) while the test waited for {while_}: {}",
                out.status.code(),
                stderr(&out)
            );
        }
    }

    /// Polls `cond` every 10 ms until it holds, while this process runs; fails with its output if
    /// it ends first, or saying `what` never happened after [`EVENT_BOUND`].
    pub fn wait_for(&mut self, what: &str, mut cond: impl FnMut() -> bool) {
        let until = Instant::now() + EVENT_BOUND;
        while !cond() {
            self.assert_running(what);
            assert!(
                Instant::now() < until,
                "waited {} s for {what}: it never happened",
                EVENT_BOUND.as_secs()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Waits (as [`Running::wait_for`]) until its stderr holds `text`.
    pub fn wait_for_stderr(&mut self, text: &str) {
        let bytes = self.err.bytes.clone();
        self.wait_for(&format!("{text:?} on its stderr"), || {
            String::from_utf8_lossy(&bytes.lock().unwrap()).contains(text)
        });
    }

    /// kill -9, then reap it.
    pub fn kill9(mut self) {
        let mut child = self.child.take().unwrap();
        let _ = child.kill();
        let _ = child.wait();
    }

    /// Waits at most `bound` for it to end and returns its output; kills it and fails the test
    /// if it does not end in time.
    pub fn finish(mut self, bound: Duration) -> Output {
        self.collect(bound)
    }

    fn collect(&mut self, bound: Duration) -> Output {
        let until = Instant::now() + bound;
        let status = loop {
            if let Some(st) = self.exited() {
                break st;
            }
            if Instant::now() >= until {
                let mut child = self.child.take().unwrap();
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "{} hung: still running after {} s, killed; its stderr: {}",
                    self.what,
                    bound.as_secs(),
                    self.err.text()
                );
            }
            std::thread::sleep(Duration::from_millis(10));
        };
        self.child = None;
        // Its output ends when it ends, unless a process it started still holds the pipes.
        let drained = Instant::now() + Duration::from_secs(30);
        for d in [&self.out, &self.err] {
            while !d.ended() {
                assert!(
                    Instant::now() < drained,
                    "{} ended but something it started still holds its output",
                    self.what
                );
                std::thread::sleep(Duration::from_millis(10));
            }
        }
        Output {
            status,
            stdout: self.out.take(),
            stderr: self.err.take(),
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// The event seams of a tally child (`src/seam.rs`): set them on a command, wait until tally
/// holds at one, act, then let it go.
pub struct Seams {
    dir: PathBuf,
}

impl Seams {
    /// Seams signalled through the fresh directory `dir`.
    pub fn new(dir: &Path) -> Seams {
        std::fs::create_dir_all(dir).unwrap();
        Seams {
            dir: dir.to_owned(),
        }
    }

    /// Makes `cmd` hold at the listed occurrences (from 1) of `stage`, and at every occurrence
    /// after the first listed one until its go.
    pub fn hold(&self, cmd: &mut Command, stage: &str, occurrences: &[u64]) {
        let list: Vec<String> = occurrences.iter().map(u64::to_string).collect();
        cmd.env("TALLY_TEST_SEAM_DIR", &self.dir).env(
            format!("TALLY_TEST_SEAM_{}", stage.to_ascii_uppercase()),
            list.join(","),
        );
    }

    /// Waits (bounded) until `child` holds at occurrence `n` of `stage`; fails with the child's
    /// output if it ends first. Returns when the test saw it.
    pub fn reached(&self, child: &mut Running, stage: &str, n: u64) -> Instant {
        let file = self.dir.join(format!("{stage}-{n}.reached"));
        child.wait_for(&format!("tally to reach seam {stage} #{n}"), || {
            file.exists()
        });
        Instant::now()
    }

    /// Lets tally go on from occurrence `n` of `stage` (and the later ones it held).
    pub fn go(&self, stage: &str, n: u64) {
        std::fs::write(self.dir.join(format!("{stage}-{n}.go")), "").unwrap();
    }
}
