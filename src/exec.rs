//! Where work runs: CPU work (hashing) on the rayon pool, blocking file work on tokio's blocking
//! threads, never on the async threads that drive the network. Three exceptions, all on blocking
//! threads: a download hashes each MiB it receives on the blocking thread that writes it
//! (`download::fetch`), which saves two handoffs per MiB; a small object of a prefix download is
//! hashed, checked and written in one blocking step (`batch::download`); a small file to upload
//! (`source::HELD_MAX`) is read whole and hashed in the one blocking step that opens it
//! (`upload::Run::open`).

/// Runs CPU work `f` on the rayon pool; the async task only waits.
pub(crate) async fn on_pool<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = tokio::sync::oneshot::channel();
    rayon::spawn(move || {
        let _ = tx.send(f());
    });
    rx.await.expect("a pool task never drops its reply")
}

/// Tokio's blocking threads at most (tokio's default is 512). The pool grows to as many threads
/// as blocking steps ran at once, and each keeps the stack pages it touched: uncapped, a tree of
/// 10,000 small files grew it to 130-330 threads, more the longer the run, and the peak RSS with
/// it. 32 still lets that many `fdatasync`s run at once (the file system's journal commits them
/// together); a step waits for a thread otherwise. No blocking step waits for another.
pub(crate) const BLOCKING_THREADS: usize = 32;

/// Runs blocking file work `f` (open, stat, fsync, rename) on tokio's blocking threads.
pub(crate) async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    tokio::task::spawn_blocking(f)
        .await
        .expect("blocking file work does not panic")
}

/// How far hashing may run ahead of the sends, in parts: enough to keep every hashing thread busy.
pub(crate) fn hash_ahead() -> usize {
    rayon::current_num_threads().max(1) * 2
}

/// glibc's malloc arenas at most, unless the environment sets them (`MALLOC_ARENA_MAX`, or
/// `GLIBC_TUNABLES` with `glibc.malloc.arena_max`). glibc gives a thread that finds the arenas
/// busy one of its own, up to 8 per core, and an arena keeps the memory its threads freed: a small
/// file's bytes, read on one of 32 blocking threads and freed on the async thread, spread over up
/// to 16 arenas on 2 cores. A re-run over 40,000 files of 4 KiB peaked at 26.7-27.4 MiB without
/// the cap and 24.3-24.7 with it (23.0-23.3 at 2,000 files with it, 23.4-23.6 without), at the
/// same speed; from 2,000 to 200,000 files its growth went from +27% to +7% (docs/many-files.md).
pub(crate) const MALLOC_ARENAS: i32 = 2;

/// Caps glibc's malloc arenas at [`MALLOC_ARENAS`] (see there).
///
/// # Safety
///
/// Call it first in `main`, before the process has any other thread: glibc's `mallopt` must
/// not run beside an allocation on another thread, and glibc fixes its arena limit when it first
/// needs it (a late call may be ignored).
pub unsafe fn limit_malloc_arenas() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        let tuned = std::env::var("GLIBC_TUNABLES").is_ok_and(|t| t.contains("arena_max"));
        if std::env::var_os("MALLOC_ARENA_MAX").is_none() && !tuned {
            // SAFETY: mallopt sets one of glibc's malloc tunables and touches no Rust memory;
            // the caller runs this before any other thread exists (see the function's Safety).
            unsafe {
                libc::mallopt(libc::M_ARENA_MAX, MALLOC_ARENAS);
            }
        }
    }
}
