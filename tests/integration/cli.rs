//! The command line's own aids: shell completions and the manual page, generated from the clap
//! definitions (no server needed).

use std::time::Duration;

use crate::support::*;

const SUBCOMMANDS: [&str; 6] = ["upload", "verify", "hash", "md5", "uploads", "abort"];

fn tally(args: &[&str]) -> std::process::Output {
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_tally"));
    cmd.args(args);
    let out = run_bounded(
        &mut cmd,
        Duration::from_secs(60),
        &format!("tally {args:?}"),
    );
    assert!(out.status.success(), "tally {args:?}: {}", stderr(&out));
    out
}

#[test]
fn completion_scripts_cover_every_command_and_bash_parses_its_own() {
    let dir = tempfile::tempdir().unwrap();
    for shell in ["bash", "zsh", "fish"] {
        let out = tally(&["completions", shell]);
        let text = String::from_utf8(out.stdout).unwrap();
        for word in SUBCOMMANDS
            .iter()
            .chain(&["part-size", "checksum", "crc64nvme"])
        {
            assert!(text.contains(word), "{shell} completions lack {word}");
        }
        if shell == "bash" {
            let file = dir.path().join("tally.bash");
            std::fs::write(&file, &text).unwrap();
            let mut check = std::process::Command::new("bash");
            check.arg("-n").arg(&file);
            let out = run_bounded(&mut check, Duration::from_secs(60), "bash -n");
            assert!(
                out.status.success(),
                "bash rejects the script: {}",
                stderr(&out)
            );
        }
    }
    let bad = std::process::Command::new(env!("CARGO_BIN_EXE_tally"))
        .args(["completions", "tcsh"])
        .output()
        .unwrap();
    assert_eq!(
        bad.status.code(),
        Some(2),
        "an unknown shell is a usage error"
    );
}

#[test]
fn the_manual_page_is_roff_naming_every_command() {
    let out = tally(&["man"]);
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(
        text.contains(".TH tally 1"),
        "{}",
        &text[..text.len().min(300)]
    );
    for sub in SUBCOMMANDS {
        assert!(text.contains(sub), "the manual page lacks {sub}");
    }
}
