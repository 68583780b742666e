//! Resume against Garage: kill -9 at chosen points, then the same command finishes without
//! re-sending what S3 holds; changed files, damaged manifests, vanished uploads and a second
//! process are handled as the README says.

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::support::*;

const PARTS: u64 = 12;
fn file_of_parts(dir: &Path, seed: u64) -> PathBuf {
    random_file(dir, "big.bin", PARTS * 5 * MIB - 12345, seed)
}

fn upload_args<'a>(path: &'a Path, url: &'a str, manifest: &'a Path) -> Vec<&'a str> {
    vec![
        "upload",
        path.to_str().unwrap(),
        url,
        "--part-size",
        "5MiB",
        "--concurrency",
        "3",
        "--manifest",
        manifest.to_str().unwrap(),
    ]
}

/// Starts tally holding at the listed occurrences of `stage` (a debug-build seam).
fn spawn_held(s: &Server, args: &[&str], seams: &Seams, stage: &str, at: &[u64]) -> Running {
    let mut cmd = s.command();
    cmd.args(args);
    seams.hold(&mut cmd, stage, at);
    Running::spawn(&mut cmd, "tally upload (held at a seam)")
}

/// Intact part records in the manifest (lines after the header).
fn records(manifest: &Path) -> u64 {
    std::fs::read(manifest)
        .map(|b| b.iter().filter(|c| **c == b'\n').count().saturating_sub(1) as u64)
        .unwrap_or(0)
}

/// Runs `args` until exactly `n` parts are recorded and nothing else is in flight, then kill -9:
/// tally holds before sending part `n + 1` (or, with `n == PARTS`, before Complete), the parts
/// that passed the seam before it are waited for until the manifest records them, and only then
/// is it killed. Returns the records left in the manifest.
fn kill_at(s: &Server, args: &[&str], manifest: &Path, seams: &Seams, n: u64) -> u64 {
    let (stage, at) = if n == PARTS {
        ("complete", 1)
    } else {
        ("part", n + 1)
    };
    let mut child = spawn_held(s, args, seams, stage, &[at]);
    seams.reached(&mut child, stage, at);
    assert!(
        manifest.exists(),
        "the manifest exists before the first part is sent"
    );
    child.wait_for(&format!("{n} part records"), || records(manifest) >= n);
    child.kill9();
    records(manifest)
}

fn held_parts(s: &Server, key: &str) -> u64 {
    let list = s.aws([
        "s3api",
        "list-multipart-uploads",
        "--bucket",
        &s.bucket,
        "--prefix",
        key,
    ]);
    let v: serde_json::Value = serde_json::from_str(&list).unwrap();
    let ups: Vec<&serde_json::Value> = v["Uploads"]
        .as_array()
        .map(|a| a.iter().filter(|u| u["Key"] == key).collect())
        .unwrap_or_default();
    assert_eq!(ups.len(), 1, "one upload of {key} is in progress: {v}");
    let id = ups[0]["UploadId"].as_str().unwrap().to_owned();
    let parts = s.aws([
        "s3api",
        "list-parts",
        "--bucket",
        &s.bucket,
        "--key",
        key,
        &format!("--upload-id={id}"),
    ]);
    if parts.trim().is_empty() {
        return 0;
    }
    let v: serde_json::Value = serde_json::from_str(&parts).unwrap();
    v["Parts"].as_array().map_or(0, |a| a.len() as u64)
}

#[test]
fn kill_9_at_chosen_points_then_the_same_command_finishes() {
    let s = garage();
    let dir = s.temp_dir();
    let path = file_of_parts(dir.path(), 21);
    let want = file_sha256(&path);
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64;
    let mid = 1 + seed % (PARTS - 2);
    println!("kill points: 0 records, {mid} records (seed {seed}), all records before Complete");
    for (i, at) in [0, mid, PARTS].into_iter().enumerate() {
        let key = unique(&format!("resume/kill-{i}"));
        let url = s.url(&key);
        let manifest = dir.path().join(format!("kill-{i}.manifest"));
        let args = upload_args(&path, &url, &manifest);
        let seams = Seams::new(&dir.path().join(format!("seams-{i}")));
        let recorded = kill_at(s, &args, &manifest, &seams, at);
        assert_eq!(
            recorded, at,
            "kill point {i}: killed with exactly {at} records"
        );
        assert!(
            s.head(&key).is_none(),
            "kill point {i}: killed before completion"
        );
        // Nothing was in flight at the kill: S3 holds exactly the recorded parts.
        let held = held_parts(s, &key);
        assert_eq!(
            held, recorded,
            "kill point {i}: S3 holds the recorded parts"
        );
        let mut all = args.clone();
        all.push("--json");
        let r = json_report(&s.tally(&all));
        assert_eq!(r["resumed"], true, "kill point {i}");
        assert_eq!(
            r["parts_skipped"].as_u64(),
            Some(held),
            "nothing S3 holds is sent again"
        );
        assert_eq!(r["parts_sent"].as_u64(), Some(PARTS - held));
        assert_eq!(s.download_sha256(&key), want, "kill point {i}: bytes");
        assert_eq!(
            s.head(&key).unwrap()["ChecksumSHA256"],
            r["checksum"]["value"]
        );
        assert!(!manifest.exists(), "the manifest is removed after success");
        assert_eq!(s.uploads_in_progress(&key), 0);
    }
}

fn interrupted(s: &Server, dir: &Path, key: &str, seed: u64) -> (PathBuf, PathBuf) {
    let path = file_of_parts(dir, seed);
    let manifest = dir.join("m.manifest");
    let url = s.url(key);
    let args = upload_args(&path, &url, &manifest);
    let seams = Seams::new(&dir.join("seams"));
    assert_eq!(kill_at(s, &args, &manifest, &seams, 4), 4);
    (path, manifest)
}

#[test]
fn a_file_changed_after_the_kill_is_refused_and_nothing_completed() {
    let s = garage();
    let dir = s.temp_dir();
    let key = &unique("resume/changed");
    let (path, manifest) = interrupted(s, dir.path(), key, 22);
    // Same size, one byte different, and the modification time moves (set explicitly: the
    // clock's granularity could otherwise leave it equal).
    let before = std::fs::metadata(&path).unwrap().modified().unwrap();
    let mut data = std::fs::read(&path).unwrap();
    data[7 * 5 * MIB as usize] ^= 0xff;
    std::fs::write(&path, &data).unwrap();
    std::fs::File::options()
        .write(true)
        .open(&path)
        .unwrap()
        .set_modified(before + Duration::from_secs(2))
        .unwrap();
    let url = s.url(key);
    let out = s.tally(upload_args(&path, &url, &manifest));
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("changed since upload"),
        "{}",
        stderr(&out)
    );
    assert!(stderr(&out).contains("--restart"));
    assert!(s.head(key).is_none(), "nothing completed");
    // --restart aborts the old upload and sends the new content.
    let mut args = upload_args(&path, &url, &manifest);
    args.extend(["--restart", "--json"]);
    let r = json_report(&s.tally(&args));
    assert_eq!(r["resumed"], false);
    assert_eq!(r["parts_sent"].as_u64(), Some(PARTS));
    assert_eq!(s.download_sha256(key), file_sha256(&path));
    assert_eq!(s.uploads_in_progress(key), 0, "the old upload was aborted");
}

#[test]
fn a_damaged_manifest_resumes_from_its_good_records() {
    let s = garage();
    let dir = s.temp_dir();
    let key = &unique("resume/damaged");
    let (path, manifest) = interrupted(s, dir.path(), key, 23);
    let mut bytes = std::fs::read(&manifest).unwrap();
    let nl: Vec<usize> = bytes
        .iter()
        .enumerate()
        .filter(|(_, b)| **b == b'\n')
        .map(|(i, _)| i)
        .collect();
    assert!(nl.len() >= 4, "header and records");
    bytes[nl[1] + 30] ^= 0x20; // corrupt record 2
    bytes.truncate(nl[nl.len() - 2] + 40); // tear the last record in the middle
    std::fs::write(&manifest, &bytes).unwrap();
    let held = held_parts(s, key);
    let url = s.url(key);
    let mut args = upload_args(&path, &url, &manifest);
    args.push("--json");
    let out = s.tally(&args);
    assert!(
        stderr(&out).contains("damaged manifest lines skipped"),
        "{}",
        stderr(&out)
    );
    let r = json_report(&out);
    assert_eq!(
        r["parts_skipped"].as_u64(),
        Some(held),
        "damaged records are re-checked against S3 and adopted"
    );
    assert_eq!(s.download_sha256(key), file_sha256(&path));
}

#[test]
fn a_manifest_for_another_key_is_refused() {
    let s = garage();
    let dir = s.temp_dir();
    let owner = unique("resume/owner");
    let not_owner = unique("resume/not-the-owner");
    let (path, manifest) = interrupted(s, dir.path(), &owner, 24);
    let other = s.url(&not_owner);
    let out = s.tally(upload_args(&path, &other, &manifest));
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("belongs to another upload"),
        "{}",
        stderr(&out)
    );
    assert!(s.head(&not_owner).is_none());
    s.abort_uploads(&owner);
}

#[test]
fn an_upload_aborted_between_runs_starts_again_and_says_so() {
    let s = garage();
    let dir = s.temp_dir();
    let key = &unique("resume/aborted");
    let (path, manifest) = interrupted(s, dir.path(), key, 25);
    let listed = s.tally(["uploads", &s.url(key), "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&listed.stdout).unwrap();
    let id = v["uploads"][0]["upload_id"].as_str().unwrap().to_owned();
    assert_eq!(
        v["uploads"][0]["manifest"].as_str(),
        Some(manifest.to_str().unwrap()),
        "uploads names the local manifest"
    );
    assert!(v["uploads"][0]["parts"].as_u64().unwrap() >= 4);
    // Aborted behind tally's back (a lifecycle rule, another tool):
    s.aws([
        "s3api",
        "abort-multipart-upload",
        "--bucket",
        &s.bucket,
        "--key",
        key,
        &format!("--upload-id={id}"),
    ]);
    let url = s.url(key);
    let mut args = upload_args(&path, &url, &manifest);
    args.push("--json");
    let out = s.tally(&args);
    assert!(
        stderr(&out).contains("no longer exists"),
        "{}",
        stderr(&out)
    );
    let r = json_report(&out);
    assert_eq!(r["resumed"], false);
    assert_ne!(r["upload_id"].as_str(), Some(id.as_str()));
    assert_eq!(s.download_sha256(key), file_sha256(&path));
}

#[test]
fn a_second_process_on_the_same_upload_is_refused() {
    let s = garage();
    let dir = s.temp_dir();
    let path = file_of_parts(dir.path(), 26);
    let manifest = dir.path().join("m.manifest");
    let key = &unique("resume/twice");
    let url = s.url(key);
    let args = upload_args(&path, &url, &manifest);
    // The first holds before its first part, with its lock and manifest in place, until the
    // second has been refused.
    let seams = Seams::new(&dir.path().join("seams"));
    let mut first = spawn_held(s, &args, &seams, "part", &[1]);
    seams.reached(&mut first, "part", 1);
    let out = s.tally(&args);
    seams.go("part", 1);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("another tally is already uploading"),
        "{}",
        stderr(&out)
    );
    let first = first.finish(TALLY_BOUND);
    assert!(
        first.status.success(),
        "the first one proceeds: {}",
        stderr(&first)
    );
    assert_eq!(s.download_sha256(key), file_sha256(&path));
}

#[test]
fn keep_manifest_leaves_an_audit_record_and_abort_cleans_up() {
    let s = garage();
    let dir = s.temp_dir();
    let path = random_file(dir.path(), "f", 11 * MIB, 27);
    let manifest = dir.path().join("audit.manifest");
    let url = s.url(&unique("resume/audit"));
    let mut args = upload_args(&path, &url, &manifest);
    args.extend(["--keep-manifest", "--json"]);
    let r = json_report(&s.tally(&args));
    let text = std::fs::read_to_string(&manifest).unwrap();
    assert_eq!(
        text.lines()
            .filter(|l| l.contains("\"type\":\"part\""))
            .count(),
        3
    );
    assert!(
        text.contains(r["checksum"]["value"].as_str().unwrap()),
        "the completed record"
    );
    assert!(
        !text.contains(s.secret()) && !text.contains(s.access_key()),
        "no credentials"
    );
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(&manifest).unwrap().permissions(),
    );
    assert_eq!(mode & 0o777, 0o600);

    // tally abort removes an interrupted upload and its manifest.
    let to_abort = unique("resume/to-abort");
    let sub = dir.path().join("to-abort");
    std::fs::create_dir(&sub).unwrap();
    let (_, m2) = interrupted(s, &sub, &to_abort, 28);
    let v: serde_json::Value =
        serde_json::from_slice(&s.tally(["uploads", &s.url(&to_abort), "--json"]).stdout).unwrap();
    let id = v["uploads"][0]["upload_id"].as_str().unwrap().to_owned();
    let out = s.tally(["abort", &s.url(&to_abort), "--upload-id", &id]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(s.uploads_in_progress(&to_abort), 0);
    assert!(!m2.exists(), "its manifest is removed");
}

/// The manifests (and locks, and links) in a state directory.
fn state_files(state: &Path) -> Vec<String> {
    std::fs::read_dir(state.join("manifests"))
        .map(|d| {
            d.filter_map(Result::ok)
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default()
}

/// The one manifest in a state directory.
fn the_manifest(state: &Path) -> PathBuf {
    let found: Vec<PathBuf> = state_files(state)
        .into_iter()
        .filter(|n| n.ends_with(".manifest"))
        .map(|n| state.join("manifests").join(n))
        .collect();
    assert_eq!(found.len(), 1, "one manifest in {}", state.display());
    found[0].clone()
}

#[test]
fn a_kept_upload_is_resumed_even_when_the_default_part_size_would_take_one_put() {
    // The case: 90 MiB uploaded with --part-size 5MiB, killed; the same upload without
    // --part-size (auto: one PutObject up to 100 MiB) must resume the kept upload, not bypass it.
    let s = garage();
    let dir = s.temp_dir();
    let state = dir.path().join("state");
    let path = random_file(dir.path(), "f90.bin", 90 * MIB, 31);
    let key = unique("resume/part-size-changed");
    let url = s.url(&key);
    let seams = Seams::new(&dir.path().join("seams"));
    let mut cmd = s.command();
    cmd.env("TALLY_STATE_DIR", &state).args([
        "upload",
        path.to_str().unwrap(),
        &url,
        "--part-size",
        "5MiB",
        "--concurrency",
        "2",
    ]);
    seams.hold(&mut cmd, "part", &[5]);
    let mut child = Running::spawn(&mut cmd, "tally upload --part-size 5MiB (held at part 5)");
    seams.reached(&mut child, "part", 5);
    let manifest = the_manifest(&state);
    child.wait_for("4 part records", || records(&manifest) >= 4);
    child.kill9();
    assert_eq!(s.uploads_in_progress(&key), 1, "the upload is kept");

    let mut again = s.command();
    again
        .env("TALLY_STATE_DIR", &state)
        .args(["upload", path.to_str().unwrap(), &url, "--json"]);
    let out = run_bounded(
        &mut again,
        Duration::from_secs(300),
        "tally upload (no --part-size)",
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let r = json_report(&out);
    assert_eq!(r["method"], "multipart", "resumed, not one PutObject");
    assert_eq!(r["resumed"], true);
    assert_eq!(
        r["part_size"].as_u64(),
        Some(5 * MIB),
        "the manifest's part size"
    );
    assert!(r["parts_skipped"].as_u64().unwrap() >= 4, "{r}");
    // No --part-size given (auto): the upload's own is taken without a word about flags.
    assert!(
        !stderr(&out).contains("not the ones given"),
        "no flags were given: {}",
        stderr(&out)
    );
    assert_eq!(s.uploads_in_progress(&key), 0, "no upload left billed");
    assert_eq!(s.download_sha256(&key), file_sha256(&path));
    assert_eq!(
        state_files(&state),
        Vec::<String>::new(),
        "no manifest or lock left"
    );
}

#[test]
fn a_kill_after_complete_is_finished_by_the_next_run_without_sending() {
    // Killed between CompleteMultipartUpload and removing the manifest: the next run sees the
    // object is this file (HEAD: size and the checksum the manifest predicts), reports it done,
    // removes the manifest and sends nothing (counted on a proxy).
    use crate::proxy::{Op, Plan, Proxy};
    let s = garage();
    let dir = s.temp_dir();
    let state = dir.path().join("state");
    let path = file_of_parts(dir.path(), 32);
    let key = unique("resume/after-complete");
    let url = s.url(&key);
    let seams = Seams::new(&dir.path().join("seams"));
    // Both runs through one proxy: the endpoint is part of what identifies an upload locally.
    let proxy = Proxy::start(&s.endpoint, Plan::default());
    let mut cmd = s.command();
    cmd.env("TALLY_STATE_DIR", &state).args([
        "upload",
        path.to_str().unwrap(),
        &url,
        "--part-size",
        "5MiB",
        "--endpoint-url",
        &proxy.url,
    ]);
    seams.hold(&mut cmd, "completed", &[1]);
    let mut child = Running::spawn(&mut cmd, "tally upload (held after Complete)");
    seams.reached(&mut child, "completed", 1);
    child.kill9();
    assert!(s.head(&key).is_some(), "the object was completed");
    let manifest = the_manifest(&state);
    assert!(manifest.exists(), "the kill left the manifest");

    let before = proxy.stats.events().len();
    let mut again = s.command();
    again.env("TALLY_STATE_DIR", &state).args([
        "upload",
        path.to_str().unwrap(),
        &url,
        "--part-size",
        "5MiB",
        "--json",
        "--endpoint-url",
        &proxy.url,
    ]);
    let out = run_bounded(
        &mut again,
        Duration::from_secs(300),
        "tally upload (after the kill)",
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let r = json_report(&out);
    assert_eq!(
        (r["parts_sent"].as_u64(), r["resumed"].as_bool()),
        (Some(0), Some(true))
    );
    assert!(
        stderr(&out).contains("had already completed"),
        "{}",
        stderr(&out)
    );
    let sent: Vec<Op> = proxy.stats.events()[before..]
        .iter()
        .map(|e| e.op)
        .filter(|op| matches!(op, Op::Part | Op::Create | Op::Complete))
        .collect();
    assert!(sent.is_empty(), "nothing sent: {sent:?}");
    assert_eq!(
        s.head(&key).unwrap()["ChecksumSHA256"],
        r["checksum"]["value"],
        "the report's checksum is the object's"
    );
    assert_eq!(s.download_sha256(&key), file_sha256(&path));
    assert_eq!(
        state_files(&state),
        Vec::<String>::new(),
        "manifest and lock removed"
    );
}

#[test]
fn abort_removes_the_manifest_its_lock_and_its_link() {
    let s = garage();
    let dir = s.temp_dir();
    let state = dir.path().join("state");
    let path = file_of_parts(dir.path(), 33);
    let key = unique("resume/abort-all");
    let url = s.url(&key);
    // A manifest outside the state directory: the state directory holds a link to it.
    let manifest = dir.path().join("elsewhere.manifest");
    let seams = Seams::new(&dir.path().join("seams"));
    let mut cmd = s.command();
    cmd.env("TALLY_STATE_DIR", &state)
        .args(upload_args(&path, &url, &manifest));
    seams.hold(&mut cmd, "part", &[3]);
    let mut child = Running::spawn(&mut cmd, "tally upload (held at part 3)");
    seams.reached(&mut child, "part", 3);
    child.kill9();
    let header = std::fs::read_to_string(&manifest).unwrap();
    let id = header
        .split("\"upload_id\":\"")
        .nth(1)
        .unwrap()
        .split('"')
        .next()
        .unwrap()
        .to_owned();
    assert!(manifest.with_extension("lock").exists());
    assert_eq!(
        state_files(&state).len(),
        1,
        "the link: {:?}",
        state_files(&state)
    );
    let mut abort = s.command();
    abort
        .env("TALLY_STATE_DIR", &state)
        .args(["abort", &url, "--upload-id", &id]);
    let out = run_bounded(&mut abort, Duration::from_secs(120), "tally abort");
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(s.uploads_in_progress(&key), 0);
    assert!(!manifest.exists(), "manifest removed");
    assert!(!manifest.with_extension("lock").exists(), "lock removed");
    assert_eq!(state_files(&state), Vec::<String>::new(), "link removed");
}
