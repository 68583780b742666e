//! The differential test against the ASC's reference tool `ascmhl` 1.2: random small trees and
//! histories made by `ascmhl create` itself, random mutations, the reference's verdict
//! (`ascmhl-debug verify`, run in-process by tests/mhl-differential/cases.py), then
//! `tally upload --mhl` of the same tree to Garage, and the two compared:
//!
//! - where `ascmhl` says a file differs from its history, tally exits non-zero, does not upload
//!   the file, and records no value of it other than `failed` in the generation it writes;
//! - where `ascmhl` refuses the history (a modified, missing or unchained generation, no chain),
//!   tally exits non-zero;
//! - where `ascmhl` accepts the tree, tally accepts it (exit 0), except in the documented cases
//!   where tally is stricter on purpose (docs/mhl.md: nested histories, a listed file the
//!   reference's patterns hide, a forged later value, a generation the chain does not list);
//! - every generation tally writes passes the ASC XSD, and `ascmhl-debug verify` accepts the
//!   tree with it whenever tally exited 0.
//!
//! Seeded: the seed is printed; `TALLY_MHL_SEED=S` replays a run, `TALLY_MHL_CASE=i` one case of
//! it, `TALLY_MHL_CASES=n` sets the count (scripts/soak-mhl runs thousands).

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::support::*;

/// Cases in the suite's run (the soak runs more).
const SUITE_CASES: u64 = 150;

/// The Python of the venv `ascmhl` runs in (scripts/tools links its entry points into bin/).
fn ascmhl_python() -> PathBuf {
    if let Some(p) = std::env::var_os("TALLY_MHL_PYTHON") {
        return PathBuf::from(p);
    }
    let entry = std::env::var_os("PATH")
        .and_then(|p| {
            std::env::split_paths(&p)
                .map(|d| d.join("ascmhl"))
                .find(|f| f.is_file())
        })
        .expect("ascmhl is not on PATH: run scripts/tools and put its bin directory first on PATH");
    let real = std::fs::canonicalize(&entry).unwrap();
    let py = real.parent().unwrap().join("python");
    assert!(
        py.is_file(),
        "no python beside {} (the ascmhl venv)",
        real.display()
    );
    py
}

fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/mhl-differential/cases.py")
}

fn env_u64(name: &str) -> Option<u64> {
    std::env::var(name).ok().map(|v| {
        v.parse()
            .unwrap_or_else(|_| panic!("{name}={v} is not a number"))
    })
}

/// Builds the cases, runs tally on each, judges; returns the judge's report.
fn run_cases(s: &Server, seed: u64, first: u64, count: u64) -> serde_json::Value {
    let py = ascmhl_python();
    let dir = s.temp_dir();
    let out = dir.path().join("cases");
    let made = run_bounded(
        Command::new(&py).arg(script()).args([
            "make",
            "--seed",
            &seed.to_string(),
            "--first",
            &first.to_string(),
            "--count",
            &count.to_string(),
            "--out",
            out.to_str().unwrap(),
        ]),
        std::time::Duration::from_secs(60 + count * 5),
        "cases.py make",
    );
    assert!(made.status.success(), "cases.py make: {}", stderr(&made));
    let run = unique("mhl-diff");
    let mut ran = Vec::new();
    for line in String::from_utf8_lossy(&made.stdout).lines() {
        let c: serde_json::Value = serde_json::from_str(line).unwrap();
        let i = c["case"].as_u64().unwrap();
        let root = PathBuf::from(c["root"].as_str().unwrap());
        let prefix = format!("{run}/case-{i}/");
        let o = s.tally([
            "upload",
            root.to_str().unwrap(),
            &s.url(&prefix),
            "--mhl",
            "--json",
        ]);
        let mut uploaded = Vec::new();
        for l in String::from_utf8_lossy(&o.stdout).lines() {
            let Ok(v) = serde_json::from_str::<serde_json::Value>(l) else {
                continue;
            };
            if matches!(v["action"].as_str(), Some("uploaded") | Some("skipped"))
                && let Some(rel) = v["rel"].as_str()
            {
                uploaded.push(rel.to_owned());
            }
        }
        ran.push((
            i,
            prefix,
            o.status.code().unwrap_or(-1),
            stderr(&o),
            uploaded,
        ));
    }
    // What is in S3 under each case's prefix, from one listing of the run.
    let keys = list_keys(s, &format!("{run}/"));
    for (i, prefix, code, err, uploaded) in ran {
        let in_s3: Vec<String> = keys
            .iter()
            .filter_map(|k| k.strip_prefix(&prefix))
            .map(str::to_owned)
            .collect();
        let t = serde_json::json!({
            "exit": code, "stderr": err, "uploaded": uploaded, "in_s3": in_s3,
        });
        std::fs::write(
            out.join(format!("case-{i}")).join("tally.json"),
            t.to_string(),
        )
        .unwrap();
    }
    let judged = run_bounded(
        Command::new(&py)
            .arg(script())
            .args(["judge", "--out", out.to_str().unwrap()]),
        std::time::Duration::from_secs(60 + count * 5),
        "cases.py judge",
    );
    assert!(
        judged.status.success(),
        "cases.py judge: {}",
        stderr(&judged)
    );
    serde_json::from_slice(&judged.stdout).expect("judge JSON")
}

/// Every key under `prefix` (ListObjectsV2 through the AWS CLI, which pages).
fn list_keys(s: &Server, prefix: &str) -> Vec<String> {
    let out = s.aws([
        "s3api",
        "list-objects-v2",
        "--bucket",
        &s.bucket,
        "--prefix",
        prefix,
        "--output",
        "json",
    ]);
    if out.trim().is_empty() {
        return Vec::new();
    }
    let v: serde_json::Value = serde_json::from_str(&out).expect("list-objects-v2 JSON");
    v["Contents"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|o| o["Key"].as_str().unwrap().to_owned())
                .collect()
        })
        .unwrap_or_default()
}

/// Runs seeded random cases (see the module docs) and fails on any disagreement, naming the case
/// and how to replay it.
pub fn differential(seed: u64, first: u64, count: u64) {
    let s = garage();
    eprintln!(
        "ASC MHL differential: seed {seed}, cases {first}..{}; replay: TALLY_MHL_SEED={seed} TALLY_MHL_CASE=<i> cargo test --test integration mhl_diff::",
        first + count
    );
    // In batches (the soak's thousands of cases would hold too many trees on disk at once).
    let batch = env_u64("TALLY_MHL_BATCH").unwrap_or(count).max(1);
    let mut at = first;
    while at < first + count {
        let n = batch.min(first + count - at);
        let report = run_cases(s, seed, at, n);
        eprintln!("cases {at}..{}: {}", at + n, report["stats"]);
        check(seed, &report);
        at += n;
    }
}

fn check(seed: u64, report: &serde_json::Value) {
    let problems = report["problems"].as_array().unwrap();
    assert!(
        problems.is_empty(),
        "{} disagreement(s) with ascmhl (seed {seed}; replay one with TALLY_MHL_SEED={seed} TALLY_MHL_CASE=<case>):\n{}",
        problems.len(),
        serde_json::to_string_pretty(problems).unwrap()
    );
}

#[test]
fn tally_agrees_with_the_reference_tool_on_random_trees() {
    let seed = env_u64("TALLY_MHL_SEED").unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs()
            % 1_000_000
    });
    match env_u64("TALLY_MHL_CASE") {
        Some(i) => differential(seed, i, 1),
        None => differential(seed, 0, env_u64("TALLY_MHL_CASES").unwrap_or(SUITE_CASES)),
    }
}
