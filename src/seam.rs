//! Test-only pauses that let the kill tests stop tally at exact points (before a part is sent,
//! between the last part and CompleteMultipartUpload). Read from the environment only in debug
//! builds (`TALLY_TEST_PAUSE_PART_MS`, `..._COMPLETE_MS`, `..._CHUNK_MS` per chunk hashed by
//! `tally md5`, `..._READBACK_MS` before each read-back); release builds compile them
//! to nothing, so users never see them.

/// Sleeps for `TALLY_TEST_PAUSE_<STAGE>_MS` milliseconds in debug builds; nothing in release builds.
pub(crate) async fn pause(stage: &str) {
    #[cfg(debug_assertions)]
    {
        let var = format!("TALLY_TEST_PAUSE_{}_MS", stage.to_ascii_uppercase());
        if let Some(ms) = std::env::var(var).ok().and_then(|v| v.parse::<u64>().ok()) {
            tokio::time::sleep(std::time::Duration::from_millis(ms)).await;
        }
    }
    #[cfg(not(debug_assertions))]
    let _ = stage;
}
