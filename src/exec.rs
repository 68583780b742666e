//! Where work runs: CPU work (hashing) on the rayon pool, blocking file work on tokio's blocking
//! threads, never on the async threads that drive the network. Two exceptions, both on blocking
//! threads: a download hashes each MiB it receives on the blocking thread that writes it
//! (`download::fetch`), which saves two handoffs per MiB; a small object of a prefix download is
//! hashed, checked and written in one blocking step (`batch::download`).

/// Runs CPU work `f` on the rayon pool; the async task only waits.
pub(crate) async fn on_pool<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = tokio::sync::oneshot::channel();
    rayon::spawn(move || {
        let _ = tx.send(f());
    });
    rx.await.expect("a pool task never drops its reply")
}

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
