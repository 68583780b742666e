//! The serverless MD5 relay (issue 15), end to end on this machine: the state machine in
//! deploy/relay/statemachine.asl.json executed by moto's Step Functions interpreter
//! (tests/relay/sfn.py), its Lambda steps sent to cargo-lambda's emulator (`cargo lambda watch
//! --only-lambda-apis`), served by two processes of the real `tally-md5-relay` binary built for
//! this test (TALLY_RELAY_STEP=hash and =tag), reading and tagging objects on LocalStack's S3
//! (Garage has no tagging). The execution's input is the saved "Object Created" event
//! (deploy/relay/event.json) with the object's bucket, key, ETag and size filled in.
//!
//! What this cannot show (deploy/relay/README.md): IAM, EventBridge, the real Lambda deadline (the
//! emulator sends 1970, so the functions run on TALLY_RELAY_BUDGET), the payload limit (asserted
//! by size here). The tools come from `scripts/tools` (cargo-lambda, tally-relay-python,
//! asl-validator, cfn-lint on PATH). The relay is the cargo feature `relay` (off by default): this
//! module is compiled, and the binary built, by `cargo test --features relay` (scripts/test does).

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use crate::proxy::{Op, Plan, Proxy};
use crate::support::*;

const HASH_FUNCTION: &str = "tally-md5-relay-hash";
const TAG_FUNCTION: &str = "tally-md5-relay-tag";
/// The hash step's test seam (src/relay.rs), at the start of each hash invocation.
const SEAM: &str = "relay_hash";
/// How long one execution may take (a debug build hashing a few hundred MiB on a busy machine).
const EXECUTION_BOUND: Duration = Duration::from_secs(600);

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn md5sum(path: &Path) -> String {
    let out = run_bounded(
        Command::new("md5sum").arg(path),
        Duration::from_secs(120),
        "md5sum",
    );
    assert!(out.status.success(), "md5sum failed: {}", stderr(&out));
    String::from_utf8(out.stdout)
        .unwrap()
        .split_whitespace()
        .next()
        .unwrap()
        .to_owned()
}

/// A process of the test's (the emulator, a function) with its output in a file, killed when
/// dropped.
struct Proc {
    child: Child,
    what: String,
    log: PathBuf,
}

impl Proc {
    fn spawn(cmd: &mut Command, what: &str, log: PathBuf) -> Proc {
        let file = std::fs::File::create(&log).unwrap();
        let child = cmd
            .stdin(Stdio::null())
            .stdout(file.try_clone().unwrap())
            .stderr(file)
            .spawn()
            .unwrap_or_else(|e| {
                panic!("cannot start {what}: {e} (scripts/tools --relay installs the relay's tools; run the test with PATH=$HOME/.cache/tally-tools/bin:$PATH)")
            });
        Proc {
            child,
            what: what.to_owned(),
            log,
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Panics with its log if it has ended.
    fn assert_running(&mut self, while_: &str) {
        if let Some(st) = self.child.try_wait().unwrap() {
            panic!(
                "{} ended ({st}) while the test waited for {while_}: {}",
                self.what,
                self.log()
            );
        }
    }

    /// Waits (bounded) until `cond` holds while this process runs.
    fn wait_for(&mut self, what: &str, mut cond: impl FnMut() -> bool) {
        let until = Instant::now() + EVENT_BOUND;
        while !cond() {
            self.assert_running(what);
            assert!(
                Instant::now() < until,
                "waited {} s for {what}: it never happened; {} said: {}",
                EVENT_BOUND.as_secs(),
                self.what,
                self.log()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A free port below the kernel's ephemeral range, so that no outgoing connection takes it
/// between this check and the emulator binding it.
fn free_port() -> u16 {
    let lo: u32 = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| s.split_whitespace().next().and_then(|p| p.parse().ok()))
        .unwrap_or(32768);
    let span = lo.saturating_sub(10_001).max(1);
    let mut x = u64::from(std::process::id())
        ^ std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos() as u64;
    for _ in 0..200 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let port = 10_000 + (x % u64::from(span)) as u16;
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free port for the Lambda emulator below {lo}");
}

/// The Lambda emulator and the two function processes of the real binary, for one server.
struct Relay {
    port: u16,
    dir: tempfile::TempDir,
    _emulator: Proc,
    hash: Proc,
    tag: Proc,
}

impl Relay {
    /// Starts the emulator and the two functions. Both functions reach S3 through `s3` (a proxy
    /// in front of the server, or the server); `hash_env` is added to the hash function's
    /// environment (its budget, seams).
    fn start(s: &Server, s3: &str, hash_env: &[(&str, &str)]) -> Relay {
        let dir = s.temp_dir();
        let port = free_port();
        let mut emulator = Proc::spawn(
            Command::new("cargo")
                .args([
                    "lambda",
                    "watch",
                    "--only-lambda-apis",
                    "--ignore-changes",
                    "--invoke-address",
                    "127.0.0.1",
                    "--invoke-port",
                    &port.to_string(),
                    "--manifest-path",
                ])
                .arg(repo().join("tests/relay/emulator/Cargo.toml"))
                .current_dir(dir.path()),
            "cargo lambda watch (the Lambda emulator)",
            dir.path().join("emulator.log"),
        );
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        emulator.wait_for("the Lambda emulator to listen", || {
            TcpStream::connect_timeout(&addr, Duration::from_secs(1)).is_ok()
        });
        let function = |name: &str, step: &str, extra: &[(&str, &str)]| {
            let mut cmd = Command::new(env!("CARGO_BIN_EXE_tally-md5-relay"));
            s.apply_env(&mut cmd);
            cmd.env("AWS_ENDPOINT_URL", s3)
                .env("AWS_ENDPOINT_URL_S3", s3)
                .env(
                    "AWS_LAMBDA_RUNTIME_API",
                    format!("http://127.0.0.1:{port}/.rt/{name}"),
                )
                .env("AWS_LAMBDA_FUNCTION_NAME", name)
                .env("AWS_LAMBDA_FUNCTION_VERSION", "1")
                .env("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "1769")
                .env("TALLY_RELAY_STEP", step)
                .envs(extra.iter().copied());
            Proc::spawn(
                &mut cmd,
                &format!("tally-md5-relay ({name})"),
                dir.path().join(format!("{name}.log")),
            )
        };
        let hash = function(HASH_FUNCTION, "hash", hash_env);
        let tag = function(TAG_FUNCTION, "tag", &[]);
        Relay {
            port,
            dir,
            _emulator: emulator,
            hash,
            tag,
        }
    }

    /// The driver for `event`, started (tests/relay/sfn.py under moto's python).
    fn execute(&self, event: &serde_json::Value) -> Running {
        let path = self.dir.path().join("event.json");
        std::fs::write(&path, serde_json::to_vec_pretty(event).unwrap()).unwrap();
        let mut cmd = Command::new("tally-relay-python");
        cmd.arg(repo().join("tests/relay/sfn.py"))
            .arg("--asl")
            .arg(repo().join("deploy/relay/statemachine.asl.json"))
            .arg("--event")
            .arg(&path)
            .args(["--hash-function", HASH_FUNCTION])
            .args(["--tag-function", TAG_FUNCTION])
            .args(["--timeout", &EXECUTION_BOUND.as_secs().to_string()])
            .env_remove("AWS_ENDPOINT_URL")
            .env_remove("AWS_ENDPOINT_URL_S3")
            .env(
                "AWS_ENDPOINT_URL_LAMBDA",
                format!("http://127.0.0.1:{}", self.port),
            );
        Running::spawn(&mut cmd, "tests/relay/sfn.py (moto's Step Functions)")
    }

    /// The driver's one JSON line, after it ended; panics with its and the functions' output
    /// if it failed, or at once if a function process ends while it runs.
    fn result(&mut self, mut driver: Running) -> serde_json::Value {
        let until = Instant::now() + EXECUTION_BOUND + Duration::from_secs(60);
        while driver.exited().is_none() && Instant::now() < until {
            self.hash.assert_running("the execution to end");
            self.tag.assert_running("the execution to end");
            std::thread::sleep(Duration::from_millis(50));
        }
        let out: Output = driver.finish(Duration::from_secs(10));
        let line = String::from_utf8_lossy(&out.stdout)
            .lines()
            .last()
            .unwrap_or_default()
            .to_owned();
        assert!(
            out.status.success() && !line.is_empty(),
            "the driver failed ({:?}): {}\nhash function: {}",
            out.status.code(),
            stderr(&out),
            self.hash.log()
        );
        serde_json::from_str(&line).expect("the driver prints one JSON line")
    }
}

/// The saved "Object Created" event with this object filled in, as EventBridge sends it (ETag
/// without quotes; no version-id for an unversioned bucket).
fn event_for(s: &Server, key: &str) -> serde_json::Value {
    let head = s.head(key).expect("the object exists");
    let text = std::fs::read_to_string(repo().join("deploy/relay/event.json")).unwrap();
    let mut ev: serde_json::Value = serde_json::from_str(&text).unwrap();
    ev["resources"] = serde_json::json!([format!("arn:aws:s3:::{}", s.bucket)]);
    let d = &mut ev["detail"];
    d["bucket"]["name"] = s.bucket.clone().into();
    d["object"]["key"] = key.into();
    d["object"]["etag"] = head["ETag"].as_str().unwrap().trim_matches('"').into();
    d["object"]["size"] = head["ContentLength"].clone();
    let obj = d["object"].as_object_mut().unwrap();
    match head["VersionId"].as_str().filter(|v| *v != "null") {
        Some(v) => {
            obj.insert("version-id".into(), v.into());
        }
        None => {
            obj.remove("version-id");
        }
    }
    ev
}

fn hash_invocations(r: &serde_json::Value) -> u64 {
    r["states"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| *s == "Initial" || *s == "Intermediate")
        .count() as u64
}

#[test]
fn a_multipart_object_is_hashed_over_several_invocations_and_its_tags_are_kept() {
    let s = localstack();
    let dir = s.temp_dir();
    // One MD5 runs on one core, at most about 700 MiB/s on any machine we know; a step stops
    // between 8 MiB pieces once its budget is spent, so it covers at most about
    // 700 MiB/s x 0.25 s + a piece = 183 MiB: 256 MiB needs at least two steps however fast the
    // machine (here, a debug build hashes about 170 MiB/s: six or seven steps).
    const SIZE: u64 = 256 * MIB + 5;
    const BUDGET: &str = "250ms";
    let key = unique("relay/multipart.mov");
    let path = random_file(dir.path(), "src", SIZE, 151);
    let want = md5sum(&path);
    // The AWS CLI's multipart upload (8 MiB parts): the ETag is not the MD5.
    s.aws(["s3", "cp", "--quiet", path.to_str().unwrap(), &s.url(&key)]);
    s.aws([
        "s3api",
        "put-object-tagging",
        "--bucket",
        &s.bucket,
        "--key",
        &key,
        "--tagging",
        "TagSet=[{Key=project,Value=reel1}]",
    ]);
    let ev = event_for(s, &key);
    assert!(
        ev["detail"]["object"]["etag"]
            .as_str()
            .unwrap()
            .contains('-'),
        "the AWS CLI made a multipart object: {ev}"
    );

    let mut relay = Relay::start(s, &s.endpoint, &[("TALLY_RELAY_BUDGET", BUDGET)]);
    let r = relay.result(relay.execute(&ev));

    assert_eq!(r["status"], "SUCCEEDED", "{r}");
    let doc = &r["output"];
    assert_eq!(doc["md5"], want.as_str(), "{r}");
    assert_eq!(doc["source"], "stream", "{r}");
    assert_eq!(doc["done"], true, "{r}");
    assert_eq!(doc["offset"], SIZE, "{r}");
    let hashes = hash_invocations(&r);
    assert!(
        hashes >= 2,
        "a {BUDGET} budget should need several hash invocations for 256 MiB, saw {hashes}: {r}\nthe hash function said: {}",
        relay.hash.log()
    );
    assert_eq!(
        doc["invocations"], hashes,
        "the document counts the hash steps: {r}"
    );
    // Every hash step and the tag step was a Lambda invocation (more only if a step was retried).
    assert!(r["lambda_invocations"].as_u64().unwrap() > hashes, "{r}");
    // The document is small: far under Step Functions' 262,144-byte payload limit.
    let doc_bytes = serde_json::to_vec(doc).unwrap().len();
    assert!(doc_bytes < 1024, "the document is {doc_bytes} bytes: {doc}");
    assert!(
        r["max_state_bytes"].as_u64().unwrap() < 262_144,
        "a state's input or output exceeds the payload limit: {r}"
    );
    // The MD5 was merged into the tags, the one the object had kept.
    assert_eq!(
        s.tags(&key),
        vec![
            ("md5".to_owned(), want.clone()),
            ("project".to_owned(), "reel1".to_owned())
        ]
    );
}

#[test]
fn a_single_put_object_takes_the_etag_shortcut_with_no_get() {
    let s = localstack();
    let dir = s.temp_dir();
    let key = unique("relay/single.wav");
    let path = random_file(dir.path(), "src", 3 * MIB + 17, 152);
    let want = md5sum(&path);
    // Under the AWS CLI's 8 MiB multipart threshold: one PutObject, its ETag is the MD5.
    s.aws(["s3", "cp", "--quiet", path.to_str().unwrap(), &s.url(&key)]);
    let ev = event_for(s, &key);
    assert_eq!(ev["detail"]["object"]["etag"], want.as_str());

    let proxy = Proxy::start(&s.endpoint, Plan::default());
    let mut relay = Relay::start(s, &proxy.url, &[("TALLY_RELAY_BUDGET", "1s")]);
    let r = relay.result(relay.execute(&ev));

    assert_eq!(r["status"], "SUCCEEDED", "{r}");
    let events = proxy.stats.events();
    let count = |op: Op| events.iter().filter(|e| e.op == op).count();
    assert!(
        count(Op::Head) >= 1,
        "the functions' requests did not go through the proxy: {:?}",
        events.iter().map(|e| &e.target).collect::<Vec<_>>()
    );
    assert_eq!(
        count(Op::Get),
        0,
        "the ETag is the MD5, yet the object was read: {:?}",
        events.iter().map(|e| &e.target).collect::<Vec<_>>()
    );
    assert_eq!(r["output"]["md5"], want.as_str(), "{r}");
    assert_eq!(r["output"]["source"], "etag", "{r}");
    assert_eq!(hash_invocations(&r), 1, "one hash step: {r}");
    assert!(r["lambda_invocations"].as_u64().unwrap() >= 2, "{r}");
    assert_eq!(s.tags(&key), vec![("md5".to_owned(), want)]);
}

#[test]
fn an_object_overwritten_between_two_hash_steps_fails_the_execution_untagged() {
    let s = localstack();
    let dir = s.temp_dir();
    let key = unique("relay/replaced.mov");
    let path = random_file(dir.path(), "src", 40 * MIB, 153);
    let other = random_file(dir.path(), "other", 40 * MIB, 154);
    s.aws(["s3", "cp", "--quiet", path.to_str().unwrap(), &s.url(&key)]);
    let ev = event_for(s, &key);

    // A tiny budget: every hash step reads one 8 MiB piece, so the object needs five; the second
    // step is held at its seam until the object has been replaced.
    let seams = Seams::new(&dir.path().join("seams"));
    let seam_dir = dir.path().join("seams");
    // The variable as src/seam.rs reads it: the stage's name in capitals, hyphen kept.
    let hold = format!("TALLY_TEST_SEAM_{}", SEAM.to_ascii_uppercase());
    let mut relay = Relay::start(
        s,
        &s.endpoint,
        &[
            ("TALLY_RELAY_BUDGET", "10ms"),
            ("TALLY_TEST_SEAM_DIR", seam_dir.to_str().unwrap()),
            (&hold, "2"),
        ],
    );
    let mut driver = relay.execute(&ev);
    let reached = seam_dir.join(format!("{SEAM}-2.reached"));
    let until = Instant::now() + EVENT_BOUND;
    while !reached.exists() {
        if driver.exited().is_some() {
            let r = relay.result(driver);
            panic!("the execution ended before its second hash step: {r}");
        }
        relay
            .hash
            .assert_running("the second hash step to reach its seam");
        assert!(
            Instant::now() < until,
            "waited {} s for the second hash step to reach its seam; the hash function said: {}",
            EVENT_BOUND.as_secs(),
            relay.hash.log()
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    s.aws(["s3", "cp", "--quiet", other.to_str().unwrap(), &s.url(&key)]);
    seams.go(SEAM, 2);
    let r = relay.result(driver);

    assert_eq!(r["status"], "FAILED", "{r}");
    assert_eq!(r["error"], "ObjectChanged", "{r}");
    let cause = r["cause"].as_str().unwrap_or_default();
    let message = serde_json::from_str::<serde_json::Value>(cause)
        .ok()
        .and_then(|c| c["errorMessage"].as_str().map(str::to_owned))
        .unwrap_or_default();
    assert!(
        !message.is_empty() && !message.contains('\n') && message.contains(&key),
        "the cause should be one clear line naming the object: {cause}"
    );
    let states: Vec<&str> = r["states"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_str().unwrap())
        .collect();
    assert!(!states.contains(&"Tag"), "{r}");
    assert_eq!(states.last(), Some(&"Failed"), "{r}");
    assert!(
        s.tags(&key).iter().all(|(k, _)| k != "md5"),
        "no md5 tag may be written: {:?}",
        s.tags(&key)
    );
}

/// `asl-validator` or `cfn-lint` on `file`; the exit status and the output.
fn lint(tool: &str, file: &Path) -> (bool, String) {
    let mut cmd = Command::new(tool);
    match tool {
        "asl-validator" => cmd.arg("--json-path").arg(file),
        _ => cmd.arg(file),
    };
    let out = run_bounded(&mut cmd, Duration::from_secs(120), tool);
    (
        out.status.success(),
        format!("{}{}", String::from_utf8_lossy(&out.stdout), stderr(&out)),
    )
}

#[test]
fn the_state_machine_and_the_template_pass_their_validators_and_broken_copies_do_not() {
    let dir = tempfile::tempdir().unwrap();
    let asl = repo().join("deploy/relay/statemachine.asl.json");
    let template = repo().join("deploy/relay/template.yaml");
    let (ok, out) = lint("asl-validator", &asl);
    assert!(ok, "asl-validator rejects the state machine: {out}");
    let (ok, out) = lint("cfn-lint", &template);
    assert!(ok, "cfn-lint rejects the template: {out}");

    // A Choice that goes to a state that does not exist.
    let text = std::fs::read_to_string(&asl).unwrap();
    let broken = text.replace("\"Next\": \"Tag\"", "\"Next\": \"Tagg\"");
    assert_ne!(broken, text);
    let broken_asl = dir.path().join("statemachine.asl.json");
    std::fs::write(&broken_asl, broken).unwrap();
    let (ok, out) = lint("asl-validator", &broken_asl);
    assert!(!ok, "asl-validator passed a dangling transition: {out}");

    // A substitution that names a function the template does not have.
    let text = std::fs::read_to_string(&template).unwrap();
    let broken = text.replace("!GetAtt HashFunction.Arn", "!GetAtt HashFunctin.Arn");
    assert_ne!(broken, text);
    let broken_template = dir.path().join("template.yaml");
    std::fs::write(&broken_template, broken).unwrap();
    std::fs::copy(&asl, dir.path().join("statemachine.asl.json")).unwrap();
    let (ok, out) = lint("cfn-lint", &broken_template);
    assert!(!ok, "cfn-lint passed a dangling GetAtt: {out}");
}
