//! The one sequential hasher: a hasher on a thread of its own, fed bytes in order through a
//! bounded queue, so async threads only move bytes. Used for an object read back from S3
//! ([`SequentialMd5`]: `tally md5`). An upload's whole-file hashes do not use it: they are fed in
//! the part checksum's own chunk loop (`upload/send.rs`, [`super::hash_part_and_file`]).
//!
//! Bytes are handed over in batches of about [`BATCH`] bytes, not in the transport's pieces: the
//! hasher thread then sleeps and wakes (and wakes the producer) once per batch. Handed over piece
//! by piece, a 4 GiB `tally md5` made 73,000 voluntary context switches on 2 cores.
//! The queue holds at most `depth` batches, so the producer can run only that far ahead of the
//! hasher: memory stays bounded whatever the object's size.
//! [`Sequential::snapshot`] returns the hasher's state after every byte fed so far (the queue is
//! in order), for saving and resuming later ([`Sequential::resume`]).

use md5::{Digest as _, Md5};

use super::CHUNK;

/// A hasher the sequential worker can drive.
pub trait Feed: Send + 'static {
    /// What the hasher yields at the end.
    type Output;
    /// Feeds the next bytes (at most [`CHUNK`] at a time).
    fn feed(&mut self, chunk: &[u8]);
    /// The digest(s) of every byte fed.
    fn output(self) -> Self::Output;
}

impl Feed for Md5 {
    type Output = [u8; 16];
    fn feed(&mut self, chunk: &[u8]) {
        self.update(chunk);
    }
    fn output(self) -> [u8; 16] {
        self.finalize().into()
    }
}

/// A hasher on its own thread, fed in order (see the module docs).
#[derive(Debug)]
pub struct Sequential<H: Feed> {
    tx: tokio::sync::mpsc::Sender<Msg<H>>,
    worker: std::thread::JoinHandle<H>,
    /// Bytes fed and not yet handed over (under [`BATCH`]).
    batch: Vec<bytes::Bytes>,
    batched: usize,
}

/// Bytes handed to the hasher thread at a time.
const BATCH: usize = 1024 * 1024;

/// The MD5 worker of `tally md5` and the read-back.
pub type SequentialMd5 = Sequential<Md5>;

#[derive(Debug)]
enum Msg<H> {
    Data(Vec<bytes::Bytes>),
    Snapshot(tokio::sync::oneshot::Sender<H>),
}

impl Sequential<Md5> {
    /// Starts an MD5 hasher thread with a queue of `depth` messages.
    pub fn start(depth: usize) -> SequentialMd5 {
        Sequential::resume(Md5::new(), depth)
    }
}

impl<H: Feed + Clone> Sequential<H> {
    /// Starts the hasher thread from `hasher`, a state that may already hold some bytes.
    pub fn resume(hasher: H, depth: usize) -> Sequential<H> {
        let (tx, mut rx) = tokio::sync::mpsc::channel::<Msg<H>>(depth.max(1));
        let worker = std::thread::spawn(move || {
            let mut h = hasher;
            while let Some(msg) = rx.blocking_recv() {
                match msg {
                    Msg::Data(batch) => {
                        for chunk in batch.iter().flat_map(|b| b.chunks(CHUNK)) {
                            h.feed(chunk);
                        }
                    }
                    Msg::Snapshot(reply) => {
                        let _ = reply.send(h.clone());
                    }
                }
            }
            h
        });
        Sequential {
            tx,
            worker,
            batch: Vec::new(),
            batched: 0,
        }
    }

    /// Queues the next bytes (in order); waits while the queue is full. Not cancel-safe: a batch
    /// being handed over when the future is dropped is lost, so await it to the end (never in a
    /// `select!` branch), as with [`Sequential::snapshot`].
    pub async fn feed(&mut self, bytes: bytes::Bytes) {
        self.batched += bytes.len();
        self.batch.push(bytes);
        if self.batched >= BATCH {
            self.hand_over().await;
        }
    }

    /// Sends the bytes batched so far to the worker.
    async fn hand_over(&mut self) {
        if self.batch.is_empty() {
            return;
        }
        self.batched = 0;
        let batch = std::mem::take(&mut self.batch);
        // The worker only stops when the sender is dropped (or if it panicked, which `finish`
        // reports), so a failed send loses nothing that could still be hashed.
        let _ = self.tx.send(Msg::Data(batch)).await;
    }

    /// The hasher's state after every byte fed so far; `None` if the worker is gone (a bug).
    pub async fn snapshot(&mut self) -> Option<H> {
        self.hand_over().await;
        let (reply, state) = tokio::sync::oneshot::channel();
        self.tx.send(Msg::Snapshot(reply)).await.ok()?;
        state.await.ok()
    }

    /// Waits for the hasher to finish and returns its output (call from a blocking context).
    pub fn finish(self) -> H::Output {
        if !self.batch.is_empty() {
            let _ = self.tx.blocking_send(Msg::Data(self.batch));
        }
        drop(self.tx);
        self.worker
            .join()
            .expect("the hasher thread does not panic")
            .output()
    }
}
