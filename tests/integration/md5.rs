//! `tally md5`, tags, `--md5-tag` and `--read-back`: MD5s equal md5sum's, runs stopped by a time
//! limit or SIGKILL continue from their state, a changed object is refused, tags merge.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use crate::support::*;

/// `tally md5` reads in ranges of this size (remote_md5.rs `CHUNK`).
const CHUNK: u64 = 8 * MIB;

fn md5sum(path: &Path) -> String {
    let out = run_bounded(
        Command::new("md5sum").arg(path),
        Duration::from_secs(60),
        "md5sum",
    );
    String::from_utf8(out.stdout)
        .unwrap()
        .split_whitespace()
        .next()
        .unwrap()
        .to_owned()
}

fn md5_json(s: &Server, args: &[&str]) -> (Option<i32>, serde_json::Value, String) {
    let mut all = vec!["md5"];
    all.extend(args);
    all.push("--json");
    let out = s.tally(&all);
    let v = serde_json::from_slice(&out.stdout).unwrap_or(serde_json::Value::Null);
    (out.status.code(), v, stderr(&out))
}

#[test]
fn md5_of_multipart_objects_from_tally_and_the_cli_is_md5sum() {
    let s = garage();
    let dir = s.temp_dir();
    let path = random_file(dir.path(), "f", 19 * MIB + 5, 41);
    let p = path.to_str().unwrap();
    s.put(&path, "m/tally", "5MiB");
    s.aws(["s3", "cp", "--quiet", p, &s.url("m/cli")]);
    let want = md5sum(&path);
    for key in ["m/tally", "m/cli"] {
        let (code, r, err) = md5_json(s, &[&s.url(key)]);
        assert_eq!(code, Some(0), "{err}");
        assert_eq!(r["md5"], want, "{key}");
        assert_eq!(r["source"], "stream", "a multipart ETag is not an MD5");
    }
    // A single-part object's ETag is its MD5: nothing is read.
    let small = random_file(dir.path(), "small", 1000, 42);
    s.aws([
        "s3",
        "cp",
        "--quiet",
        small.to_str().unwrap(),
        &s.url("m/small"),
    ]);
    let (_, r, _) = md5_json(s, &[&s.url("m/small")]);
    assert_eq!(
        (r["md5"].as_str(), r["source"].as_str()),
        (Some(md5sum(&small).as_str()), Some("etag"))
    );
    // Garage has no tagging: a clear message, and the MD5 is still printed.
    let (code, r, err) = md5_json(s, &[&s.url("m/tally"), "--tag"]);
    assert_eq!(code, Some(2));
    assert_eq!(r["md5"], want);
    assert!(err.contains("does not support object tagging"), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
}

/// Runs `tally md5 URL --state ST --time-limit 2s --json` so that the limit stops it after its
/// first chunk, whatever the machine's speed: tally holds with the first chunk in hand until the
/// limit has certainly passed (2 s after the hold began, later than tally's own start), then goes
/// on, counts that chunk and meets its deadline.
fn stopped_by_the_time_limit(s: &Server, dir: &Path, url: &str, st: &str) -> std::process::Output {
    let seams = Seams::new(&dir.join(format!("seams-limit-{}", unique("x"))));
    let mut cmd = s.command();
    cmd.args(["md5", url, "--state", st, "--time-limit", "2s", "--json"]);
    seams.hold(&mut cmd, "chunk", &[1]);
    let mut child = Running::spawn(&mut cmd, "tally md5 --time-limit 2s");
    let held = seams.reached(&mut child, "chunk", 1);
    std::thread::sleep((held + Duration::from_secs(2)).saturating_duration_since(Instant::now()));
    seams.go("chunk", 1);
    child.finish(TALLY_BOUND)
}

#[test]
fn a_time_limited_run_continues_from_its_state() {
    let s = garage();
    let dir = s.temp_dir();
    let path = random_file(dir.path(), "f", 64 * MIB, 43);
    let key = unique("m/limited");
    s.put(&path, &key, "8MiB");
    let state = dir.path().join("md5.state");
    let st = state.to_str().unwrap();
    let url = s.url(&key);
    let out = stopped_by_the_time_limit(s, dir.path(), &url, st);
    assert_eq!(out.status.code(), Some(3), "not finished: {}", stderr(&out));
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(r["complete"], false);
    let stopped_at = r["offset"].as_u64().unwrap();
    assert_eq!(
        stopped_at, CHUNK,
        "stopped after the one chunk let through: {r}"
    );
    assert!(state.exists());
    let (code, r, err) = md5_json(s, &[&url, "--state", st]);
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(r["resumed_from"].as_u64(), Some(stopped_at));
    assert_eq!(r["md5"], md5sum(&path));
    assert!(!state.exists(), "the state is removed once finished");
}

#[test]
fn a_killed_run_continues_from_its_last_checkpoint_and_a_changed_object_is_refused() {
    let s = garage();
    let dir = s.temp_dir();
    let path = random_file(dir.path(), "f", 64 * MIB, 44);
    let key = unique("m/killed");
    s.put(&path, &key, "8MiB");
    let state = dir.path().join("md5.state");
    let st = state.to_str().unwrap();
    let url = s.url(&key);
    // Hold the first chunk past the 2 s checkpoint interval, so that counting it saves the state;
    // hold the second, and kill -9 there.
    let seams = Seams::new(&dir.path().join("seams-kill"));
    let mut cmd = s.command();
    cmd.args(["md5", &url, "--state", st]);
    seams.hold(&mut cmd, "chunk", &[1, 2]);
    let mut child = Running::spawn(&mut cmd, "tally md5 (to be killed)");
    let held = seams.reached(&mut child, "chunk", 1);
    assert!(!state.exists(), "no checkpoint before the first chunk");
    std::thread::sleep(
        (held + Duration::from_millis(2100)).saturating_duration_since(Instant::now()),
    );
    seams.go("chunk", 1);
    seams.reached(&mut child, "chunk", 2);
    assert!(state.exists(), "the first chunk was checkpointed");
    child.kill9();
    let (code, r, err) = md5_json(s, &[&url, "--state", st]);
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(r["resumed_from"].as_u64(), Some(CHUNK), "{r}");
    assert_eq!(r["md5"], md5sum(&path));

    // Stop a run part-way again, then overwrite the object: the continuation refuses.
    let out = stopped_by_the_time_limit(s, dir.path(), &url, st);
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    let other = random_file(dir.path(), "other", 64 * MIB, 45);
    s.aws(["s3", "cp", "--quiet", other.to_str().unwrap(), &url]);
    let (code, r, err) = md5_json(s, &[&url, "--state", st]);
    assert_eq!(code, Some(2), "{r} {err}");
    assert!(err.contains("changed since the state was saved"), "{err}");
}

#[test]
fn tags_merge_once_and_the_ten_tag_limit_is_enforced() {
    let s = localstack();
    let dir = s.temp_dir();
    let path = random_file(dir.path(), "f", 12 * MIB, 46);
    let p = path.to_str().unwrap();
    s.put(&path, "m/tagged", "5MiB");
    let tagging = r#"{"TagSet":[{"Key":"project","Value":"dune"},{"Key":"reel","Value":"7"}]}"#;
    s.aws([
        "s3api",
        "put-object-tagging",
        "--bucket",
        &s.bucket,
        "--key",
        "m/tagged",
        "--tagging",
        tagging,
    ]);
    let want = md5sum(&path);
    let (code, r, err) = md5_json(s, &[&s.url("m/tagged"), "--tag"]);
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(r["tag"], serde_json::json!(["md5", "added"]));
    let tags = |key: &str| s.tags(key);
    let expect = vec![
        ("md5".to_owned(), want.clone()),
        ("project".to_owned(), "dune".to_owned()),
        ("reel".to_owned(), "7".to_owned()),
    ];
    assert_eq!(tags("m/tagged"), expect, "existing tags survive");
    let (code, r, _) = md5_json(s, &[&s.url("m/tagged"), "--tag"]);
    assert_eq!(code, Some(0));
    assert_eq!(r["tag"], serde_json::json!(["md5", "already_present"]));
    assert_eq!(tags("m/tagged"), expect, "a second run changes nothing");

    // Ten tags already: refused clearly (LocalStack would accept an eleventh; S3 would not).
    s.aws(["s3", "cp", "--quiet", p, &s.url("m/full")]);
    let ten: Vec<String> = (0..10)
        .map(|i| format!(r#"{{"Key":"k{i}","Value":"v"}}"#))
        .collect();
    let tagging = format!(r#"{{"TagSet":[{}]}}"#, ten.join(","));
    s.aws([
        "s3api",
        "put-object-tagging",
        "--bucket",
        &s.bucket,
        "--key",
        "m/full",
        "--tagging",
        &tagging,
    ]);
    let (code, r, err) = md5_json(s, &[&s.url("m/full"), "--tag"]);
    assert_eq!(code, Some(2));
    assert!(err.contains("already has 10 tags"), "{err}");
    assert_eq!(r["md5"], want, "the MD5 is still reported");
    assert_eq!(tags("m/full").len(), 10);

    // upload --md5-tag tags the object during the upload's single read.
    let r = json_report(&s.tally([
        "upload",
        p,
        &s.url("m/at-upload"),
        "--part-size",
        "5MiB",
        "--md5-tag",
        "--json",
    ]));
    assert_eq!(r["md5"], want);
    assert_eq!(tags("m/at-upload"), vec![("md5".to_owned(), want.clone())]);
}

#[test]
fn read_back_fails_when_the_store_returns_other_bytes() {
    for (name, s) in servers() {
        let dir = s.temp_dir();
        let path = random_file(dir.path(), "f", 100_000, 47);
        let other = random_file(dir.path(), "other", 100_000, 48);
        let url = s.url(&unique("m/readback"));
        // Read-back passes when the store returns what was written.
        let r = json_report(&s.tally([
            "upload",
            path.to_str().unwrap(),
            &url,
            "--read-back",
            "--json",
        ]));
        assert_eq!(r["read_back_reads"].as_u64(), Some(1), "{name}");
        // A second writer replaces the object once tally's upload and its checks are done, before
        // its first read-back read; every read then returns the other bytes.
        let seams = Seams::new(&dir.path().join("seams"));
        let mut cmd = s.command();
        // --force: the object is the file already, and would be skipped as proven identical.
        cmd.args([
            "upload",
            path.to_str().unwrap(),
            &url,
            "--read-back=4s",
            "--force",
        ]);
        seams.hold(&mut cmd, "readback", &[1]);
        let mut child = Running::spawn(&mut cmd, "tally upload --read-back");
        seams.reached(&mut child, "readback", 1);
        s.aws(["s3", "cp", "--quiet", other.to_str().unwrap(), &url]);
        seams.go("readback", 1);
        let out = child.finish(TALLY_BOUND);
        assert_eq!(out.status.code(), Some(1), "{name}: {}", stderr(&out));
        assert!(
            stderr(&out).contains("read back"),
            "{name}: {}",
            stderr(&out)
        );
    }
}

/// Issue 15: a `--time-limit` shorter than one piece's hashing (here 1 s against a 1.1 s pause per
/// piece) still hashes a piece per run (it used to hash nothing and exit 3 forever), and the runs
/// add up to md5sum's MD5.
#[test]
fn every_run_under_a_short_time_limit_makes_progress() {
    let s = garage();
    let dir = s.temp_dir();
    let path = random_file(dir.path(), "f", 40 * MIB + 3, 49);
    s.put(&path, "m/short-limit", "8MiB");
    let state = dir.path().join("md5.state");
    let st = state.to_str().unwrap();
    let url = s.url("m/short-limit");
    let pieces = (40 * MIB + 3).div_ceil(8 * MIB);
    let mut offset = 0;
    let mut runs = 0;
    loop {
        runs += 1;
        assert!(runs <= pieces, "more runs than the object has 8 MiB pieces");
        let mut cmd = s.command();
        let out = cmd
            .env("TALLY_TEST_PAUSE_CHUNK_MS", "1100")
            .args(["md5", &url, "--state", st, "--time-limit", "1s", "--json"])
            .output()
            .unwrap();
        let r: serde_json::Value =
            serde_json::from_slice(&out.stdout).unwrap_or(serde_json::Value::Null);
        match out.status.code() {
            Some(3) => {
                let now = r["offset"].as_u64().unwrap_or(0);
                assert!(
                    now > offset,
                    "run {runs} made no progress: {r} {}",
                    stderr(&out)
                );
                offset = now;
            }
            Some(0) => {
                assert_eq!(r["md5"], md5sum(&path));
                break;
            }
            c => panic!("run {runs} exited {c:?}: {}", stderr(&out)),
        }
    }
    assert!(runs > 1, "the limit stopped no run");
    assert!(!state.exists(), "the state is removed once finished");
}
