//! Every command's `--json` against the published JSON Schema (docs/schema/tally.schema.json),
//! checked by the `jsonschema` package from PyPI (tests/json/check.py, installed by scripts/tools),
//! not by code of this project: single files, trees, a file that differs, errors, a tree that
//! stops on a cause that dooms every file.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use crate::support::*;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The Python of the jsonschema venv (`tally-schema-python`, from scripts/tools).
fn schema_python() -> PathBuf {
    std::env::var_os("PATH")
        .and_then(|p| {
            std::env::split_paths(&p)
                .map(|d| d.join("tally-schema-python"))
                .find(|f| f.is_file())
        })
        .expect("tally-schema-python is not on PATH: run scripts/tools and put its bin directory first on PATH")
}

/// Runs the schema check on `files`; its output and whether every record is valid.
fn check(files: &[PathBuf]) -> (bool, String) {
    let mut cmd = Command::new(schema_python());
    cmd.arg(repo().join("tests/json/check.py"))
        .arg(repo().join("docs/schema/tally.schema.json"))
        .args(files);
    let out = run_bounded(&mut cmd, Duration::from_secs(120), "tests/json/check.py");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

/// The records a run printed, after checking its exit code.
fn records(out: &Output, code: i32, what: &str) -> Vec<serde_json::Value> {
    assert_eq!(out.status.code(), Some(code), "{what}: {}", stderr(out));
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| {
            serde_json::from_str(l).unwrap_or_else(|e| panic!("{what}: not a JSON line ({e}): {l}"))
        })
        .collect()
}

/// Collects each run's standard output in a file of JSON lines, for the checker.
struct Runs {
    dir: PathBuf,
    files: Vec<PathBuf>,
}

impl Runs {
    fn keep(&mut self, name: &str, out: &Output, code: i32) -> Vec<serde_json::Value> {
        let recs = records(out, code, name);
        assert!(!recs.is_empty(), "{name}: no record");
        let path = self.dir.join(format!("{name}.jsonl"));
        std::fs::write(&path, &out.stdout).unwrap();
        self.files.push(path);
        recs
    }
}

fn kinds(recs: &[serde_json::Value]) -> Vec<&str> {
    recs.iter()
        .map(|r| r["kind"].as_str().unwrap_or("?"))
        .collect()
}

fn card(root: &Path) {
    std::fs::create_dir_all(root.join("sub")).unwrap();
    random_file(root, "A001.mov", 7 * MIB, 1);
    random_file(&root.join("sub"), "clip <b>&\"x\".txt", 1000, 2);
    random_file(root, "empty", 0, 3);
}

#[test]
fn every_commands_json_validates_against_the_published_schema() {
    let s = garage();
    let dir = s.temp_dir();
    let d = dir.path();
    let root = d.join("card");
    card(&root);
    let one = random_file(d, "one.bin", 6 * MIB, 4);
    let mut runs = Runs {
        dir: d.to_path_buf(),
        files: Vec::new(),
    };
    let base = unique("json/");
    let key = format!("{base}one.bin");
    let p = |p: &Path| p.to_str().unwrap().to_owned();
    let t = |args: &[&str]| s.tally(args);

    // Single files.
    let up = &t(&[
        "upload",
        &p(&one),
        &s.url(&key),
        "--json",
        "--part-size",
        "5MiB",
        "--file-hash",
        "xxh64,md5",
    ]);
    let r = runs.keep("upload", up, 0);
    assert_eq!(kinds(&r), ["upload"]);
    assert_eq!(r[0]["size"], 6 * MIB);
    assert_eq!(r[0]["path"], p(&one));
    assert!(r[0]["file_hashes"]["xxh64"].is_string(), "{}", r[0]);
    let again = runs.keep(
        "upload-skipped",
        &t(&["upload", &p(&one), &s.url(&key), "--json"]),
        0,
    );
    assert_eq!(again[0]["skipped"], true);
    let dl = runs.keep(
        "download",
        &t(&["download", &s.url(&key), &p(&d.join("back.bin")), "--json"]),
        0,
    );
    assert_eq!(dl[0]["checksum"], r[0]["checksum"], "one checksum shape");
    let v = runs.keep(
        "verify",
        &t(&["verify", &p(&one), &s.url(&key), "--json"]),
        0,
    );
    assert_eq!(v[0]["size"], 6 * MIB);
    let other = random_file(d, "other.bin", 6 * MIB, 5);
    let differs = runs.keep(
        "verify-differs",
        &t(&["verify", &p(&other), &s.url(&key), "--json"]),
        1,
    );
    assert_eq!(differs[0]["verdict"], "differs");
    runs.keep(
        "upload-dryrun",
        &t(&["upload", &p(&one), &s.url(&key), "--dryrun", "--json"]),
        0,
    );
    runs.keep(
        "download-dryrun",
        &t(&[
            "download",
            &s.url(&key),
            &p(&d.join("not-yet.bin")),
            "--dryrun",
            "--json",
        ]),
        0,
    );
    runs.keep(
        "hash",
        &t(&["hash", &p(&one), "--json", "--file-hash", "xxh64"]),
        0,
    );
    runs.keep("md5", &t(&["md5", &s.url(&key), "--json"]), 0);
    runs.keep("uploads", &t(&["uploads", &s.url(&base), "--json"]), 0);
    runs.keep(
        "abort",
        &t(&[
            "abort",
            &s.url(&format!("{base}none")),
            "--all-older-than",
            "0s",
            "--json",
        ]),
        0,
    );
    let err = runs.keep(
        "error",
        &t(&["upload", &p(&d.join("missing")), &s.url(&key), "--json"]),
        2,
    );
    assert_eq!(kinds(&err), ["error"]);

    // One object by shards.
    let plan = p(&d.join("plan.json"));
    let skey = s.url(&format!("{base}sharded.bin"));
    let big = random_file(d, "sharded.bin", 11 * MIB, 7);
    runs.keep(
        "shard-plan",
        &t(&[
            "shard",
            "plan",
            &p(&big),
            &skey,
            "--shards",
            "1",
            "--plan",
            &plan,
            "--part-size",
            "5MiB",
            "--json",
        ]),
        0,
    );
    runs.keep(
        "shard-run",
        &t(&["shard", "run", &plan, "--index", "0", "--json"]),
        0,
    );
    let fin = runs.keep("shard-finish", &t(&["shard", "finish", &plan, "--json"]), 0);
    assert_eq!(fin[0]["size"], 11 * MIB);

    // Trees.
    let prefix = s.url(&format!("{base}card/"));
    let tree = runs.keep(
        "upload-tree",
        &t(&[
            "upload",
            &p(&root),
            &prefix,
            "--json",
            "--file-hash",
            "xxh64",
        ]),
        0,
    );
    assert_eq!(kinds(&tree), ["file", "file", "file", "summary"]);
    assert!(
        tree.iter()
            .take(3)
            .all(|l| l["file_hashes"]["xxh64"].is_string()),
        "{tree:?}"
    );
    runs.keep(
        "download-tree",
        &t(&["download", &prefix, &p(&d.join("back")), "--json"]),
        0,
    );
    std::fs::write(root.join("empty"), b"now different").unwrap();
    let vt = runs.keep(
        "verify-tree-differs",
        &t(&["verify", &p(&root), &prefix, "--json"]),
        1,
    );
    assert_eq!(vt.last().unwrap()["differs"], 1);
    let plan = runs.keep(
        "upload-tree-dryrun",
        &t(&["upload", &p(&root), &prefix, "--dryrun", "--json"]),
        0,
    );
    assert_eq!(plan.last().unwrap()["would_send"], 1, "{plan:?}");
    runs.keep(
        "download-tree-dryrun",
        &t(&[
            "download",
            &prefix,
            &p(&d.join("back")),
            "--dryrun",
            "--json",
        ]),
        0,
    );
    runs.keep(
        "hash-tree",
        &t(&["hash", &p(&root), "--json", "--file-hash", "xxh64"]),
        0,
    );
    let missing = format!("s3://{}/t/", unique("no-such-bucket"));
    let stopped = runs.keep(
        "upload-tree-stopped",
        &t(&["upload", &p(&root), &missing, "--json"]),
        2,
    );
    let last = stopped.last().unwrap();
    assert_eq!(
        last["kind"], "summary",
        "a summary even when the tree stops: {stopped:?}"
    );
    assert_eq!(last["complete"], false);
    assert!(last["error"].is_string(), "{last}");

    let (ok, text) = check(&runs.files);
    assert!(
        ok,
        "the records do not validate against docs/schema/tally.schema.json:\n{text}"
    );
}

/// The check can fail: a real record with its size as a string, or without its schema, is
/// refused.
#[test]
fn the_schema_check_refuses_a_record_that_breaks_the_vocabulary() {
    let s = garage();
    let dir = s.temp_dir();
    let file = random_file(dir.path(), "f.bin", 1000, 6);
    let out = s.tally(["hash", file.to_str().unwrap(), "--json"]);
    let rec = records(&out, 0, "hash").remove(0);
    let mut bad_size = rec.clone();
    bad_size["size"] = "1000".into();
    let mut no_schema = rec.clone();
    no_schema.as_object_mut().unwrap().remove("schema");
    for (name, bad) in [("size-as-string", bad_size), ("no-schema", no_schema)] {
        let path = dir.path().join(format!("{name}.jsonl"));
        std::fs::write(&path, format!("{bad}\n")).unwrap();
        let (ok, text) = check(&[path]);
        assert!(!ok, "{name} passed the check: {text}");
    }
    let good = dir.path().join("good.jsonl");
    std::fs::write(&good, format!("{rec}\n")).unwrap();
    let (ok, text) = check(&[good]);
    assert!(ok, "{text}");
}
