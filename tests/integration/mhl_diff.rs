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
//!   where tally is stricter on purpose (docs/mhl.md: a listed file the reference's patterns
//!   hide, a forged later value, a name reused after a rename then missing) or must refuse by
//!   the first rule (a file that differs from the sealed history, passed by ascmhl only
//!   through a generation the chain does not list); the soak prints the count per reason;
//! - every generation tally writes (one per history: the root's and each nested card's) passes
//!   the ASC XSD, and `ascmhl-debug verify` accepts the tree with them whenever tally exited 0;
//! - the other direction, for nested cases, every tenth case and the named ones: `tally
//!   download --mhl` of what was uploaded exits 0 where ascmhl accepts the uploaded tree, its
//!   generations pass the same checks, and `ascmhl-debug verify` of the copy is no worse;
//! - where ascmhl accepts the tree with tally's generations, `ascmhl create` on top of them
//!   (the next offload) exits 0.
//!
//! Seeded: the seed is printed; `TALLY_MHL_SEED=S` replays a run, `TALLY_MHL_CASE=i` one case of
//! it, `TALLY_MHL_CASES=n` sets the count (scripts/soak-mhl runs thousands).

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::support::*;

/// Cases in the suite's run (the soak runs more).
const SUITE_CASES: u64 = 100;

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

/// Builds the cases (`cases.py make` with `make`), runs tally on each, judges; returns the
/// judge's report.
fn run_cases(s: &Server, make: &[String], count: u64) -> serde_json::Value {
    let py = ascmhl_python();
    let dir = s.temp_dir();
    let out = dir.path().join("cases");
    let made = run_bounded(
        Command::new(&py)
            .arg(script())
            .arg("make")
            .args(make)
            .args(["--out", out.to_str().unwrap()]),
        std::time::Duration::from_secs(60 + count * 5),
        "cases.py make",
    );
    assert!(made.status.success(), "cases.py make: {}", stderr(&made));
    // One prefix per call: the tests of this module run at once in one process.
    static CALLS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let call = CALLS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let run = unique(&format!("mhl-diff-{call}"));
    let mut ran = Vec::new();
    for line in String::from_utf8_lossy(&made.stdout).lines() {
        let c: serde_json::Value = serde_json::from_str(line).unwrap();
        let i = c["case"].as_u64().unwrap();
        let nested = c["nested"].as_bool().unwrap_or(false);
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
        let mut warnings = serde_json::Value::Array(Vec::new());
        for l in String::from_utf8_lossy(&o.stdout).lines() {
            let Ok(v) = serde_json::from_str::<serde_json::Value>(l) else {
                continue;
            };
            if v["kind"] == "summary" && v["mhl"]["warnings"].is_array() {
                warnings = v["mhl"]["warnings"].clone();
            }
            if matches!(v["action"].as_str(), Some("uploaded") | Some("skipped"))
                && let Some(rel) = v["rel"].as_str()
            {
                uploaded.push(rel.to_owned());
            }
        }
        let code = o.status.code().unwrap_or(-1);
        // The other direction: what was uploaded, downloaded with --mhl (every nested case, and
        // every tenth; the named ones always).
        let download = (code == 0 && (nested || i.is_multiple_of(10) || make[0] == "--named"))
            .then(|| download(s, &prefix, &root, &out.join(format!("case-{i}"))));
        ran.push((i, prefix, code, stderr(&o), uploaded, warnings, download));
    }
    // What is in S3 under each case's prefix, from one listing of the run.
    let keys = list_keys(s, &format!("{run}/"));
    for (i, prefix, code, err, uploaded, warnings, download) in ran {
        let in_s3: Vec<String> = keys
            .iter()
            .filter_map(|k| k.strip_prefix(&prefix))
            .map(str::to_owned)
            .collect();
        let t = serde_json::json!({
            "exit": code, "stderr": err, "uploaded": uploaded, "in_s3": in_s3,
            "warnings": warnings, "download": download,
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

/// `tally download --mhl` of the case's prefix into `case_dir/copy/<the root's name>`: its exit
/// code, standard error and folder, for the judge.
fn download(s: &Server, prefix: &str, root: &Path, case_dir: &Path) -> serde_json::Value {
    let copy = case_dir.join("copy").join(root.file_name().unwrap());
    let o = s.tally([
        "download",
        &s.url(prefix),
        &format!("{}/", copy.to_str().unwrap()),
        "--mhl",
        "--json",
    ]);
    serde_json::json!({
        "exit": o.status.code().unwrap_or(-1),
        "stderr": stderr(&o),
        "dir": copy.to_str().unwrap(),
    })
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
    // TALLY_MHL_KEEP_GOING=1 (the soak): every batch runs, and every disagreement is printed
    // before the test fails.
    let keep_going = std::env::var_os("TALLY_MHL_KEEP_GOING").is_some();
    let mut problems: Vec<serde_json::Value> = Vec::new();
    let mut totals = std::collections::BTreeMap::<String, u64>::new();
    let mut at = first;
    while at < first + count {
        let n = batch.min(first + count - at);
        let make = [
            "--seed".to_owned(),
            seed.to_string(),
            "--first".to_owned(),
            at.to_string(),
            "--count".to_owned(),
            n.to_string(),
        ];
        let report = run_cases(s, &make, n);
        eprintln!("cases {at}..{}: {}", at + n, report["stats"]);
        for (k, v) in report["stats"].as_object().unwrap() {
            *totals.entry(k.clone()).or_default() += v.as_u64().unwrap_or(0);
        }
        if keep_going {
            let found = report["problems"].as_array().unwrap();
            for p in found {
                eprintln!("DISAGREEMENT (seed {seed}): {p}");
            }
            problems.extend(found.iter().cloned());
        } else {
            check(seed, &report);
        }
        at += n;
    }
    eprintln!(
        "ASC MHL differential, seed {seed}, cases {first}..{}: {}",
        first + count,
        serde_json::json!(totals)
    );
    // Where ascmhl accepts and tally refuses on purpose (docs/mhl.md), per reason (a case may
    // count under two).
    let exempt: Vec<String> = totals
        .iter()
        .filter_map(|(k, v)| Some(format!("{}: {v}", k.strip_prefix("accepted_refused_")?)))
        .collect();
    eprintln!(
        "ascmhl accepts {}, tally refuses on purpose: {}",
        totals.get("ascmhl_accepts").copied().unwrap_or(0),
        if exempt.is_empty() {
            "none".to_owned()
        } else {
            exempt.join(", ")
        }
    );
    check(seed, &serde_json::json!({ "problems": problems }));
}

fn check(seed: impl std::fmt::Display, report: &serde_json::Value) {
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
        None => differential(
            seed,
            env_u64("TALLY_MHL_FIRST").unwrap_or(0),
            env_u64("TALLY_MHL_CASES").unwrap_or(SUITE_CASES),
        ),
    }
}

/// One named regression case (tests/mhl-differential/cases.py `named_case`): the tree, the
/// verdicts both tools must give, and every check of the random cases.
fn named(name: &str) {
    let report = run_cases(garage(), &["--named".to_owned(), name.to_owned()], 1);
    assert_eq!(report["stats"]["cases"], 1, "{report}");
    check(name, &report);
}

/// Issue 25 case 1: a changed file and a generation the chain does not list holding its new
/// hash: ascmhl says it differs; tally refuses it (it used the unlisted generation before).
#[test]
fn issue_25_an_unlisted_generation_never_vouches_for_a_changed_file() {
    named("unsealed-forgery-of-a-changed-file");
}

/// Issue 25 case 1, reversed: a forged value in an unlisted generation does not make tally
/// refuse an intact file ascmhl accepts; the summary warns of the value it ignored.
#[test]
fn issue_25_a_forged_unlisted_value_does_not_refuse_an_intact_file() {
    named("unsealed-forged-value-of-an-intact-file");
}

/// Found by the soak (seed 27, six cases): a rename recorded only by a generation the chain no
/// longer lists is followed as ascmhl follows it (the old name is not missing), with a warning.
#[test]
fn a_rename_only_an_unlisted_generation_records_is_followed() {
    named("rename-recorded-only-by-an-unlisted-generation");
}

/// ... and the renamed file, changed, is refused (compared with the old name's sealed value).
#[test]
fn a_changed_file_renamed_by_an_unlisted_generation_is_refused() {
    named("unlisted-rename-of-a-changed-file");
}

/// A listed file that is gone is excused by the patterns ascmhl verify applies (the newest
/// generation file's, here one the chain does not list), with a warning.
#[test]
fn a_missing_file_the_newest_generation_files_patterns_ignore_is_excused() {
    named("missing-file-excused-by-unlisted-patterns");
}

/// Found by the random cases: the only generation dropped from the chain is still what ascmhl
/// compares with; tally must not pass the changed file as new.
#[test]
fn a_changed_file_whose_only_generation_left_the_chain_is_refused() {
    named("chain-entry-dropped-and-file-changed");
}

/// Found by the random cases: renames recorded in a generation the chain no longer lists and a
/// forgery numbered before every generation; ascmhl follows the renames to the original.
#[test]
fn a_renamed_file_changed_behind_unlisted_generations_is_refused() {
    named("unlisted-renames-and-a-forgery-sorted-first");
}

/// Found by the soak (seed 8, case 315): a rename recorded only by a generation the chain no
/// longer lists, whose patterns hide the renamed file from ascmhl's verify: tally's generation
/// carries those patterns on (as `ascmhl create` does), so ascmhl still accepts the tree after it.
#[test]
fn a_generation_carries_the_newest_generation_files_ignore_patterns() {
    named("rename-recorded-only-by-an-unchained-generation");
}

/// Found by the soak (seed 25, case 304): a name renamed away, reused by a new file the next
/// generation lists, then gone: ascmhl's rename map hides it; tally reports it missing (the
/// newest record lists it), on purpose.
#[test]
fn a_name_reused_after_a_rename_and_then_missing_is_reported() {
    named("name-reused-after-a-rename-then-missing");
}

/// Found by the random cases: an emptied ascmhl/ folder is a broken history (ascmhl: 32).
#[test]
fn an_empty_history_folder_is_refused() {
    named("empty-history-folder");
}

/// Issue 25 case 3: `Proxy/*.mov` does not hide the listed `Proxy/sub/b.mov`.
#[test]
fn issue_25_a_star_in_an_ignore_pattern_does_not_cross_a_slash() {
    named("ignore-star-does-not-cross-a-slash");
}

/// Issue 25 case 3: `!A001.mov` after `*.mov` keeps A001.mov checked.
#[test]
fn issue_25_an_ignore_negation_is_honoured() {
    named("ignore-negation-is-honoured");
}

/// Issue 25 case 4: names with leading or trailing spaces match their history.
#[test]
fn issue_25_names_with_spaces_at_either_end_match() {
    named("names-with-leading-and-trailing-spaces");
}

/// Issue 25 case 5: a rename recorded by `ascmhl create -dr` is followed.
#[test]
fn issue_25_a_recorded_rename_is_followed() {
    named("rename-recorded-with-previous-path");
}

/// Issue 25 case 2: a day folder with nested card histories and a changed clip: the clip is
/// checked against its card's history and refused.
#[test]
fn issue_25_a_changed_clip_in_a_nested_card_is_refused() {
    named("nested-card-with-a-changed-clip");
}

/// Nested histories (a day folder with cards, one a level deeper): every clip checked against its
/// card's history, a generation in each history, the day's referencing the cards' (ascmhl
/// accepts the tree after; also downloaded with --mhl).
#[test]
fn nested_histories_each_get_a_generation_the_parent_references() {
    named("nested-cards-intact");
}

/// A clip renamed inside a card (recorded with -dr) is followed in the card's history.
#[test]
fn a_rename_inside_a_nested_card_is_followed() {
    named("nested-card-with-a-rename");
}

/// Cards with histories in a folder without one: the cards are checked, and the folder's
/// history is started referencing them.
#[test]
fn cards_in_a_folder_without_a_history_are_checked_and_referenced() {
    named("nested-cards-without-a-day-history");
}

/// ... and a changed clip there is refused (ascmhl verify of the folder has no history to say).
#[test]
fn a_changed_clip_in_a_card_of_a_folder_without_a_history_is_refused() {
    named("nested-cards-without-a-day-history-one-changed");
}

/// A card's generation edited after its chain sealed it refuses the whole tree (ascmhl: 31).
#[test]
fn a_modified_generation_in_a_nested_card_refuses_the_tree() {
    named("nested-card-with-a-modified-generation");
}

/// Issue 25 case 7: a `<sha256>` in the input history; tally's generation stays XSD-valid.
#[test]
fn issue_25_a_sha256_element_in_the_history_is_not_written_back() {
    named("sha256-element-in-the-history");
}
