//! The body of a PutObject: bytes in memory, or a range of a file read as the connection takes it.
//!
//! A file sent in one PutObject is hashed first (the checksum and Content-MD5 go in the request's
//! headers), then sent. Keeping the bytes read for hashing in memory until S3 answers would hold
//! the whole file for as long as its connection takes: on a 6 MB/s connection 17 s for 100 MiB,
//! and a tree of such files held a gigabyte. A [`PutBody::File`] instead reads the range again
//! with `pread`, one piece at a time as the HTTP client asks for it (from the page cache, where
//! the first read left it), so a PutObject in flight holds two pieces, not the file. A file cut
//! short meanwhile is a short read, an error of the body, never a SIGBUS; bytes changed in
//! between no longer match the checksum and Content-MD5 sent with them, and S3 refuses them.

use std::fs::File;
use std::os::unix::fs::FileExt as _;
use std::sync::Arc;

use bytes::Bytes;

/// What a PutObject sends.
#[derive(Debug, Clone)]
pub enum PutBody {
    /// Bytes already in memory.
    Memory(Bytes),
    /// A range of an open file, read as it is sent.
    File(FileRange),
}

impl PutBody {
    /// Length in bytes.
    pub fn len(&self) -> u64 {
        match self {
            PutBody::Memory(b) => b.len() as u64,
            PutBody::File(f) => f.len,
        }
    }

    /// Whether the body is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The whole body in memory (for a server that takes it whole: the in-memory fake). A file
    /// cut short is an error.
    pub async fn read_all(self) -> std::io::Result<Bytes> {
        match self {
            PutBody::Memory(b) => Ok(b),
            PutBody::File(f) => {
                let len = f.len;
                tokio::task::spawn_blocking(move || f.read(0, len))
                    .await
                    .map_err(std::io::Error::other)?
            }
        }
    }
}

impl From<Bytes> for PutBody {
    fn from(b: Bytes) -> Self {
        PutBody::Memory(b)
    }
}

/// `len` bytes of `file` from `start`.
#[derive(Debug, Clone)]
pub struct FileRange {
    file: Arc<File>,
    start: u64,
    len: u64,
}

impl FileRange {
    /// `len` bytes of `file` from `start`.
    pub fn new(file: Arc<File>, start: u64, len: u64) -> FileRange {
        FileRange { file, start, len }
    }

    /// Bytes `at..at + n` of the range, read with `pread` (`read_exact_at`). Blocking. A file
    /// that ends before them is an error (`UnexpectedEof`): it changed since it was hashed.
    pub(crate) fn read(&self, at: u64, n: u64) -> std::io::Result<Bytes> {
        let n = n.min(self.len.saturating_sub(at));
        let mut buf = vec![0u8; n as usize];
        self.file
            .read_exact_at(&mut buf, self.start + at)
            .map_err(|e| match e.kind() {
                std::io::ErrorKind::UnexpectedEof => std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    "the file is shorter than when it was hashed: it changed",
                ),
                _ => e,
            })?;
        Ok(Bytes::from(buf))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file_of(bytes: &[u8]) -> (tempfile::NamedTempFile, Arc<File>) {
        use std::io::Write as _;
        let mut f = tempfile::NamedTempFile::new().unwrap();
        f.write_all(bytes).unwrap();
        let opened = Arc::new(File::open(f.path()).unwrap());
        (f, opened)
    }

    #[tokio::test]
    async fn a_file_range_reads_its_bytes_and_a_file_cut_short_is_an_error() {
        let data: Vec<u8> = (0..10_000u32).map(|i| (i * 7) as u8).collect();
        let (tmp, file) = file_of(&data);
        let body = PutBody::File(FileRange::new(file, 100, 5_000));
        assert_eq!(body.len(), 5_000);
        assert_eq!(body.clone().read_all().await.unwrap(), &data[100..5_100]);
        std::fs::OpenOptions::new()
            .write(true)
            .open(tmp.path())
            .unwrap()
            .set_len(3_000)
            .unwrap();
        let err = body.read_all().await.unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::UnexpectedEof, "{err}");
    }
}
