//! Test-only seams that let the integration tests stop tally at exact points (before a part is
//! hashed, before it is sent, between the last part and CompleteMultipartUpload, per chunk hashed
//! by `tally md5`, before each read-back read) and act there: kill -9, change the file, replace
//! the object, start a second process. Read from the environment only in debug builds; release
//! builds compile [`pause`] to nothing, so users never see them (a unit test below checks the
//! gate).
//!
//! Two modes, both keyed by the stage name in capitals (`PART`, `COMPLETE`, `CHUNK`, `READBACK`):
//!
//! - Event mode (what the tests use): `TALLY_TEST_SEAM_DIR=DIR` and `TALLY_TEST_SEAM_<STAGE>=N[,M…]`
//!   (ascending occurrence numbers, counted from 1 per stage). The N-th occurrence of the stage
//!   creates `DIR/<stage>-N.reached` (written, then renamed into place) and then waits for
//!   `DIR/<stage>-N.go`; every later occurrence also waits for the go of the greatest listed
//!   number not above its own, so nothing passes a held seam (concurrent parts included) until
//!   the test lets it. The wait polls every 10 ms and is bounded (`TALLY_TEST_SEAM_TIMEOUT_S`,
//!   default 600 s): past it tally prints what it waited for and exits with code 101, so a broken
//!   test cannot hang anything.
//! - Sleep mode: `TALLY_TEST_PAUSE_<STAGE>_MS` sleeps that long at every occurrence (for manual
//!   experiments; no test relies on a sleep).

/// Holds tally at `stage` as the environment says (see the module docs) in debug builds; nothing
/// in release builds.
pub(crate) async fn pause(stage: &str) {
    #[cfg(debug_assertions)]
    imp::pause(stage).await;
    #[cfg(not(debug_assertions))]
    let _ = stage;
}

#[cfg(debug_assertions)]
mod imp {
    use std::collections::HashMap;
    use std::path::{Path, PathBuf};
    use std::sync::Mutex;
    use std::time::{Duration, Instant};

    pub(super) async fn pause(stage: &str) {
        let upper = stage.to_ascii_uppercase();
        if let Some(ms) = std::env::var(format!("TALLY_TEST_PAUSE_{upper}_MS"))
            .ok()
            .and_then(|v| v.parse::<u64>().ok())
        {
            tokio::time::sleep(Duration::from_millis(ms)).await;
        }
        let (Ok(dir), Ok(list)) = (
            std::env::var("TALLY_TEST_SEAM_DIR"),
            std::env::var(format!("TALLY_TEST_SEAM_{upper}")),
        ) else {
            return;
        };
        let marks = parse_marks(&list).unwrap_or_else(|| {
            fail(&format!(
                "TALLY_TEST_SEAM_{upper}={list}: not a list of numbers"
            ))
        });
        let bound = Duration::from_secs(
            std::env::var("TALLY_TEST_SEAM_TIMEOUT_S")
                .ok()
                .and_then(|v| v.parse().ok())
                .unwrap_or(600),
        );
        let n = next_occurrence(stage);
        if let Err(msg) = hold(stage, &PathBuf::from(dir), &marks, n, bound).await {
            fail(&msg);
        }
    }

    pub(super) fn parse_marks(list: &str) -> Option<Vec<u64>> {
        list.split(',').map(|n| n.trim().parse().ok()).collect()
    }

    /// Occurrence `n` of `stage`: announces itself if it is one of `marks`, then waits (at most
    /// `bound`) for the go of the greatest mark not above `n`; returns at once before the first.
    pub(super) async fn hold(
        stage: &str,
        dir: &Path,
        marks: &[u64],
        n: u64,
        bound: Duration,
    ) -> Result<(), String> {
        let Some(&mark) = marks.iter().rev().find(|m| **m <= n) else {
            return Ok(());
        };
        if mark == n {
            announce(&dir.join(format!("{stage}-{n}.reached")), n)?;
        }
        let go = dir.join(format!("{stage}-{mark}.go"));
        let until = Instant::now() + bound;
        // A stat every 10 ms on an async thread: debug builds under test only.
        while !go.exists() {
            if Instant::now() >= until {
                return Err(format!(
                    "seam {stage} (occurrence {n}) waited {} s for {}; the test never released it",
                    bound.as_secs(),
                    go.display()
                ));
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        Ok(())
    }

    /// This occurrence's number (from 1) of `stage` in this process.
    fn next_occurrence(stage: &str) -> u64 {
        static SEEN: Mutex<Option<HashMap<String, u64>>> = Mutex::new(None);
        let mut seen = SEEN
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let n = seen
            .get_or_insert_with(HashMap::new)
            .entry(stage.to_owned())
            .or_insert(0);
        *n += 1;
        *n
    }

    /// Creates `path` atomically (write a temporary file, rename), so a test never reads it half
    /// written.
    fn announce(path: &Path, n: u64) -> Result<(), String> {
        let tmp = path.with_extension("tmp");
        std::fs::write(&tmp, n.to_string())
            .and_then(|()| std::fs::rename(&tmp, path))
            .map_err(|e| format!("cannot create {}: {e}", path.display()))
    }

    fn fail(msg: &str) -> ! {
        eprintln!("tally test seam: {msg}");
        std::process::exit(101);
    }
}

#[cfg(all(test, debug_assertions))]
mod tests {
    use super::imp::{hold, parse_marks};
    use std::time::Duration;

    #[test]
    fn marks_parse_or_are_refused() {
        assert_eq!(parse_marks("1"), Some(vec![1]));
        assert_eq!(parse_marks("2, 5"), Some(vec![2, 5]));
        assert_eq!(parse_marks("x"), None);
    }

    /// Before the first mark nothing waits; the marked occurrence announces itself and waits for
    /// its go; later ones wait for the same go; a missing go ends in an error, not a hang.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_marked_occurrence_announces_itself_and_waits_for_its_go() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().to_owned();
        let long = Duration::from_secs(60);
        hold("s", &d, &[2], 1, long).await.unwrap();
        assert!(!d.join("s-1.reached").exists());
        let held = tokio::spawn({
            let d = d.clone();
            async move { hold("s", &d, &[2], 2, long).await }
        });
        let until = std::time::Instant::now() + long;
        while !d.join("s-2.reached").exists() {
            assert!(std::time::Instant::now() < until, "never announced");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!held.is_finished(), "it waits for its go");
        let later = tokio::spawn({
            let d = d.clone();
            async move { hold("s", &d, &[2], 3, long).await }
        });
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!later.is_finished(), "a later occurrence waits too");
        assert!(
            !d.join("s-3.reached").exists(),
            "only the marked one announces"
        );
        std::fs::write(d.join("s-2.go"), "").unwrap();
        held.await.unwrap().unwrap();
        later.await.unwrap().unwrap();
        let err = hold("t", &d, &[1], 1, Duration::from_millis(30))
            .await
            .unwrap_err();
        assert!(
            err.contains("t-1.go") && err.contains("never released"),
            "{err}"
        );
    }
}
