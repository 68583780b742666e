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
