//! No clobber: a single file proven identical is skipped (`--force` sends it), and `--no-overwrite`
//! never replaces an object that is not the file: refused after HEAD, and the write itself is
//! conditional (`If-None-Match: *`), which each server honours or not (docs/dit.md).

use crate::support::*;

fn one_line_error(out: &std::process::Output, needle: &str) {
    let err = stderr(out);
    assert_eq!(out.status.code(), Some(2), "exit code; stderr: {err}");
    assert_eq!(err.lines().count(), 1, "one line expected: {err}");
    assert!(err.contains(needle), "expected {needle:?} in: {err}");
}

#[test]
fn a_single_file_proven_identical_is_skipped_and_force_sends_it() {
    let s = garage();
    let dir = s.temp_dir();
    for (name, len) in [("small", 3000), ("big", 11 * MIB)] {
        let f = random_file(dir.path(), name, len, 41);
        let key = unique(&format!("clobber/same-{name}"));
        let url = s.url(&key);
        let args = |extra: &[&str]| {
            let mut a = vec!["upload", f.to_str().unwrap(), &url, "--part-size", "5MiB"];
            a.extend_from_slice(extra);
            a.push("--json");
            a.into_iter().map(str::to_owned).collect::<Vec<_>>()
        };
        let first = json_report(&s.tally(args(&[])));
        assert_eq!(first["size"].as_u64(), Some(len), "{first}");
        let again = json_report(&s.tally(args(&[])));
        assert_eq!(again["skipped"], true, "{name}: {again}");
        assert!(
            again["proof"].as_str().is_some_and(|p| !p.is_empty()),
            "{again}"
        );
        let forced = json_report(&s.tally(args(&["--force"])));
        assert_eq!(forced["skipped"], false, "{forced}");
        assert_eq!(
            forced["parts_sent"].as_u64().map(|n| n > 0),
            Some(true),
            "{forced}"
        );
        assert_eq!(s.download_sha256(&key), file_sha256(&f));
        // The text says what proved it.
        let out = s.tally(["upload", f.to_str().unwrap(), &url, "--part-size", "5MiB"]);
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{}", stderr(&out));
        assert!(
            text.contains("proven identical") && text.contains("nothing sent"),
            "{text}"
        );
    }
}

#[test]
fn no_overwrite_leaves_another_object_alone_on_every_server() {
    for (name, s) in servers() {
        let dir = s.temp_dir();
        for (size, len) in [("small", 3000), ("big", 11 * MIB)] {
            let theirs = random_file(dir.path(), &format!("theirs-{size}"), len, 42);
            let ours = random_file(dir.path(), &format!("ours-{size}"), len + 1, 43);
            let key = unique(&format!("clobber/{size}"));
            let url = s.url(&key);
            s.put(&theirs, &key, "5MiB");
            for same_size in [false, true] {
                let f = if same_size {
                    // Same size, other bytes: only the hash tells them apart.
                    random_file(dir.path(), &format!("ours-same-{size}"), len, 44)
                } else {
                    ours.clone()
                };
                let out = s.tally([
                    "upload",
                    f.to_str().unwrap(),
                    &url,
                    "--part-size",
                    "5MiB",
                    "--no-overwrite",
                ]);
                one_line_error(&out, "not replaced (--no-overwrite)");
                assert_eq!(
                    s.download_sha256(&key),
                    file_sha256(&theirs),
                    "{name} {size}: the object was replaced"
                );
            }
            // The same file: nothing to replace, skipped (exit 0).
            let r = json_report(&s.tally([
                "upload",
                theirs.to_str().unwrap(),
                &url,
                "--part-size",
                "5MiB",
                "--no-overwrite",
                "--json",
            ]));
            assert_eq!(r["skipped"], true, "{name} {size}: {r}");
            // A free key: uploaded.
            let new_key = unique(&format!("clobber/new-{size}"));
            let r = json_report(&s.tally([
                "upload",
                ours.to_str().unwrap(),
                &s.url(&new_key),
                "--part-size",
                "5MiB",
                "--no-overwrite",
                "--json",
            ]));
            assert_eq!(r["size"].as_u64(), Some(len + 1), "{name} {size}: {r}");
            assert_eq!(s.download_sha256(&new_key), file_sha256(&ours));
        }
    }
}

/// An object written after the key was found free: where the server honours `If-None-Match: *`
/// the write is refused; where it ignores it (Garage 2.5.0), the object is replaced, as
/// docs/dit.md says. Each server's behaviour is asserted, so a change shows up here.
#[test]
fn no_overwrite_race_is_closed_where_the_server_honours_if_none_match() {
    for (name, s) in servers() {
        let dir = s.temp_dir();
        for (size, len) in [("small", 3000), ("big", 11 * MIB)] {
            let ours = random_file(dir.path(), &format!("ours-{size}"), len, 45);
            let theirs = random_file(dir.path(), &format!("theirs-{size}"), 2000, 46);
            let key = unique(&format!("clobber/race-{size}"));
            let seams = Seams::new(&dir.path().join(format!("seams-{size}")));
            let mut cmd = s.command();
            cmd.args(["upload", ours.to_str().unwrap(), &s.url(&key)])
                .args(["--part-size", "5MiB", "--no-overwrite"]);
            seams.hold(&mut cmd, "absent", &[1]);
            let mut child = Running::spawn(&mut cmd, "tally upload --no-overwrite (held)");
            seams.reached(&mut child, "absent", 1);
            s.aws([
                "s3",
                "cp",
                "--quiet",
                theirs.to_str().unwrap(),
                &s.url(&key),
            ]);
            seams.go("absent", 1);
            let out = child.finish(TALLY_BOUND);
            let err = stderr(&out);
            let honoured = name != "garage";
            if honoured {
                assert_eq!(out.status.code(), Some(2), "{name} {size}: {err}");
                assert!(err.contains("not replaced (--no-overwrite)"), "{err}");
                assert_eq!(
                    s.download_sha256(&key),
                    file_sha256(&theirs),
                    "{name} {size}: the other writer's object is still there"
                );
                s.abort_uploads(&key);
            } else {
                assert!(out.status.success(), "{name} {size}: {err}");
                assert_eq!(
                    s.download_sha256(&key),
                    file_sha256(&ours),
                    "{name} {size}: Garage ignores If-None-Match (if this fails, it no longer does: update docs/dit.md)"
                );
            }
        }
    }
}
