//! `DEST.tally-partial`, written at offsets by many parts at once, around the page cache where
//! the file system allows it.
//!
//! Written through the page cache, every byte is copied once more by the kernel (into the cache)
//! and written to the disk later, by the kernel's flusher or by the fsync that must come before
//! the rename: on a 2-core machine that copy was the largest single cost of a download (more than
//! hashing it), and the flush came on top, at the end. So on Linux the file is also opened with
//! `O_DIRECT`, and each [`Block`] (a 4 KiB-aligned buffer that mirrors the file's 4 KiB blocks)
//! goes straight from tally's buffer to the disk. Only the bytes of a block that is not whole
//! (a part that starts or ends inside a 4 KiB block: the object's last block, or parts of odd
//! sizes) go through the cache, and those blocks are never written directly: buffered writes of
//! a few bytes use single-page folios, so a direct write never lands under a cached page.
//!
//! A file system that refuses `O_DIRECT` (at open, or on a write) is written through the cache:
//! the same bytes, the old cost. `TALLY_NO_DIRECT_IO=1` asks for the cache (to compare, or for a
//! file system whose direct writes are slow).

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt as _;
use std::path::Path;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

/// The alignment of direct writes: file offset, length and buffer address (4 KiB covers every
/// logical block size in use, 512 B included).
pub(crate) const ALIGN: usize = 4096;

/// The partial file: one descriptor through the page cache, and one around it where possible.
#[derive(Debug)]
pub(crate) struct PartialFile {
    cached: File,
    direct: Option<File>,
    /// Cleared for good at the first direct write the file system refuses.
    direct_ok: AtomicBool,
    /// Blocks the parts gave back, for the next parts: at most two per part in flight.
    spare: Mutex<Vec<Block>>,
}

impl PartialFile {
    /// `file` (open for writing at `path`), plus a direct descriptor of the same file where the
    /// platform and the file system take one. Blocking.
    pub(crate) fn new(file: File, path: &Path) -> PartialFile {
        // Opened by name again: kept only if the name still holds this very file (not followed).
        let direct = open_direct(path).filter(|d| {
            use std::os::unix::fs::MetadataExt as _;
            matches!((d.metadata(), file.metadata()),
                (Ok(a), Ok(b)) if a.dev() == b.dev() && a.ino() == b.ino())
        });
        PartialFile {
            cached: file,
            direct_ok: AtomicBool::new(direct.is_some()),
            direct,
            spare: Mutex::new(Vec::new()),
        }
    }

    /// An empty block for bytes from file offset `at`: one given back by a part, else a new one.
    pub(crate) fn block(&self, at: u64) -> Block {
        let spare = self.spare.lock().unwrap_or_else(|p| p.into_inner()).pop();
        match spare {
            Some(mut b) => {
                b.reset(at);
                b
            }
            None => Block::new(at),
        }
    }

    /// Gives a block back for the next part.
    pub(crate) fn give(&self, block: Option<Block>) {
        if let Some(b) = block {
            self.spare.lock().unwrap_or_else(|p| p.into_inner()).push(b);
        }
    }

    /// [`hash_range`] of this file's bytes `range`, read through a spare block (a part fetched in
    /// ranges has just given its ranges' blocks back), else a new one; either way the block joins
    /// the spares after, for the next part. Blocking.
    pub(crate) fn hash_range(
        &self,
        range: std::ops::Range<u64>,
        hashes: (Option<crate::vocab::ChecksumAlgorithm>, bool),
    ) -> io::Result<crate::hash::RangeHash> {
        let mut block = self.block(range.start);
        let out = hash_range(&self.cached, range, hashes, block.scratch());
        self.give(Some(block));
        out
    }

    /// The descriptor through the cache (for `fsync`: it covers the file, however written).
    pub(crate) fn file(&self) -> &File {
        &self.cached
    }

    /// Whether whole blocks still go around the page cache.
    pub(crate) fn is_direct(&self) -> bool {
        self.direct_ok.load(Ordering::Relaxed)
    }

    /// Writes the filled bytes of `block` at their offsets. Blocking.
    pub(crate) fn write(&self, block: &Block) -> io::Result<()> {
        let (lead, end) = (block.lead, block.lead + block.filled);
        let buf = block.window();
        let base = block.base;
        // Whole blocks in the middle; the bytes before and after them share a block with
        // another part's bytes, or end the file.
        let body = lead.next_multiple_of(ALIGN).min(end)..end / ALIGN * ALIGN;
        if body.start < body.end
            && let Some(direct) = self.direct.as_ref().filter(|_| self.is_direct())
        {
            match direct.write_all_at(&buf[body.clone()], base + body.start as u64) {
                Ok(()) => {
                    self.cached
                        .write_all_at(&buf[lead..body.start], base + lead as u64)?;
                    return self
                        .cached
                        .write_all_at(&buf[body.end..end], base + body.end as u64);
                }
                // EINVAL: this file system (or this file's alignment) takes no direct writes.
                Err(e) if e.kind() == io::ErrorKind::InvalidInput => {
                    tracing::info!(error = %e, "direct writes refused: writing through the page cache");
                    self.direct_ok.store(false, Ordering::Relaxed);
                }
                Err(e) => return Err(e),
            }
        }
        self.cached
            .write_all_at(&buf[lead..end], base + lead as u64)
    }
}

/// The hashes (checksum `alg`, MD5 if `md5`) of the file's bytes `range`, read in order with
/// `pread` through `buf` (any length above zero). Blocking. A file that ends before `range` does
/// is an error (`UnexpectedEof`).
pub(crate) fn hash_range(
    file: &File,
    range: std::ops::Range<u64>,
    (alg, md5): (Option<crate::vocab::ChecksumAlgorithm>, bool),
    buf: &mut [u8],
) -> io::Result<crate::hash::RangeHash> {
    let mut h = crate::hash::RangeHasher::new(alg, md5);
    let mut at = range.start;
    while at < range.end {
        let n = ((range.end - at) as usize).min(buf.len());
        file.read_exact_at(&mut buf[..n], at)?;
        h.update(&buf[..n]);
        at += n as u64;
    }
    Ok(h.finish())
}

/// Gives the new, empty partial file its `size`: its blocks allocated up front where the file
/// system can (a full disk is found now, not after minutes of download, and the parts written
/// at once at many offsets land in few extents), else a sparse file of that size. Blocking.
pub(crate) fn preallocate(file: &File, size: u64) -> io::Result<()> {
    #[cfg(target_os = "linux")]
    if size > 0 {
        match rustix::fs::fallocate(file, rustix::fs::FallocateFlags::empty(), 0, size) {
            Ok(()) => return Ok(()),
            Err(e) if e == rustix::io::Errno::NOSPC || e == rustix::io::Errno::DQUOT => {
                return Err(e.into());
            }
            // Not supported here: a sparse file will do.
            Err(_) => {}
        }
    }
    file.set_len(size)
}

#[cfg(target_os = "linux")]
fn open_direct(path: &Path) -> Option<File> {
    use std::os::unix::fs::OpenOptionsExt as _;
    if std::env::var_os("TALLY_NO_DIRECT_IO").is_some() {
        return None;
    }
    std::fs::OpenOptions::new()
        .write(true)
        .custom_flags(
            (rustix::fs::OFlags::DIRECT
                | rustix::fs::OFlags::NOFOLLOW
                | rustix::fs::OFlags::CLOEXEC)
                .bits() as i32,
        )
        .open(path)
        .map_err(|e| tracing::info!(error = %e, "no direct writes: writing through the page cache"))
        .ok()
}

#[cfg(not(target_os = "linux"))]
fn open_direct(_: &Path) -> Option<File> {
    None
}

/// A buffer of [`BLOCK`] bytes at a 4 KiB-aligned address, mirroring the file's blocks: byte `i`
/// of its window goes to file offset `base + i`, with `base` a multiple of [`ALIGN`], so that
/// whole blocks can be written directly from it.
#[derive(Debug)]
pub(crate) struct Block {
    mem: Vec<u8>,
    /// Where the aligned window starts in `mem`.
    start: usize,
    /// The file offset of the window's first byte (a multiple of [`ALIGN`]).
    base: u64,
    /// Bytes of the window before the first one this block holds.
    lead: usize,
    /// Bytes held, from `lead`.
    filled: usize,
}

/// Bytes in a [`Block`]'s window (a multiple of [`ALIGN`]).
pub(crate) const BLOCK: usize = 1024 * 1024;

impl Block {
    /// An empty block that will hold bytes from file offset `at`.
    pub(crate) fn new(at: u64) -> Block {
        let mem = vec![0u8; BLOCK + ALIGN];
        let start = mem.as_ptr().align_offset(ALIGN);
        let mut b = Block {
            mem,
            start,
            base: 0,
            lead: 0,
            filled: 0,
        };
        b.reset(at);
        b
    }

    /// Empties the block for bytes from file offset `at`.
    pub(crate) fn reset(&mut self, at: u64) {
        self.lead = (at % ALIGN as u64) as usize;
        self.base = at - self.lead as u64;
        self.filled = 0;
    }

    /// The whole window as a scratch buffer; what it held is not kept (the block is then reset
    /// before it holds a part's bytes again).
    fn scratch(&mut self) -> &mut [u8] {
        self.filled = 0;
        &mut self.mem[self.start..self.start + BLOCK]
    }

    fn window(&self) -> &[u8] {
        &self.mem[self.start..self.start + BLOCK]
    }

    /// Copies as much of `data` as fits; returns how many bytes.
    pub(crate) fn push(&mut self, data: &[u8]) -> usize {
        let from = self.start + self.lead + self.filled;
        let n = data.len().min(BLOCK - self.lead - self.filled);
        self.mem[from..from + n].copy_from_slice(&data[..n]);
        self.filled += n;
        n
    }

    /// The bytes held.
    pub(crate) fn data(&self) -> &[u8] {
        &self.window()[self.lead..self.lead + self.filled]
    }

    /// Whether no more bytes fit.
    pub(crate) fn is_full(&self) -> bool {
        self.lead + self.filled == BLOCK
    }

    /// The file offset just after the bytes held.
    pub(crate) fn end(&self) -> u64 {
        self.base + (self.lead + self.filled) as u64
    }
}

#[cfg(test)]
mod tests {
    use std::fs::OpenOptions;

    use super::*;

    fn data(len: usize, seed: u8) -> Vec<u8> {
        (0..len).map(|i| (i * 31 + seed as usize) as u8).collect()
    }

    /// Writes `bytes` at `at` through blocks, as a part's fetch does.
    fn put(f: &PartialFile, at: u64, bytes: &[u8]) {
        let mut b = Block::new(at);
        let mut rest = bytes;
        while !rest.is_empty() {
            let n = b.push(rest);
            rest = &rest[n..];
            if b.is_full() || rest.is_empty() {
                f.write(&b).unwrap();
                let next = b.end();
                b.reset(next);
            }
        }
    }

    #[test]
    fn blocks_are_aligned_and_mirror_the_file() {
        let mut b = Block::new(5000);
        assert_eq!(b.window().as_ptr() as usize % ALIGN, 0);
        assert_eq!((b.base, b.lead), (4096, 904));
        assert_eq!(b.push(&vec![1; BLOCK]), BLOCK - 904);
        assert!(b.is_full());
        assert_eq!(b.end(), 4096 + BLOCK as u64);
        b.reset(b.end());
        assert_eq!(b.lead, 0);
    }

    #[test]
    fn a_range_is_hashed_through_a_spare_block_which_goes_back_to_the_spares() {
        let body = data(3 * BLOCK + 777, 3);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("p");
        std::fs::write(&path, &body).unwrap();
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(&path)
            .unwrap();
        let f = PartialFile::new(file, &path);
        let spares = |f: &PartialFile| {
            let s = f.spare.lock().unwrap();
            s.iter()
                .map(|b| b.mem.as_ptr() as usize)
                .collect::<Vec<_>>()
        };
        let alg = Some(crate::vocab::ChecksumAlgorithm::Sha256);
        // No spare yet: one block is made, and kept for the next part.
        let range = 100..(2 * BLOCK + 5) as u64;
        let got = f.hash_range(range.clone(), (alg, true)).unwrap();
        let want = crate::hash::hash_range(alg, true, &body[100..2 * BLOCK + 5]);
        assert_eq!(got, want);
        assert!(got.md5.is_some() && got.checksum.is_some());
        let kept = spares(&f);
        assert_eq!(kept.len(), 1, "the block went back to the spares");
        // A spare there: that very block is used, and no other is made.
        let got = f.hash_range(0..body.len() as u64, (alg, false)).unwrap();
        let want = crate::hash::hash_range(alg, false, &body);
        assert_eq!(got, want);
        assert_eq!(
            spares(&f),
            kept,
            "the spare block was borrowed and given back"
        );
        // A range past the file's end is an error, and the block still goes back.
        let past = f
            .hash_range(0..body.len() as u64 + 1, (alg, false))
            .unwrap_err();
        assert_eq!(past.kind(), io::ErrorKind::UnexpectedEof);
        assert_eq!(spares(&f), kept);
    }

    #[test]
    fn parts_of_any_alignment_land_byte_exact_whichever_way_they_are_written() {
        // Parts whose edges fall inside blocks (odd sizes), written out of order, each with a
        // block-sized piece, next to parts that fill whole blocks; then the same through the
        // page cache only.
        let sizes = [
            ALIGN * 3,
            5_000,
            BLOCK + 123,
            17,
            ALIGN,
            BLOCK * 2 + ALIGN + 1,
            9_999,
        ];
        let body: Vec<u8> = data(sizes.iter().sum(), 7);
        for direct in [true, false] {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("p");
            let file = OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(true)
                .open(&path)
                .unwrap();
            file.set_len(body.len() as u64).unwrap();
            let mut f = PartialFile::new(file, &path);
            if !direct {
                f.direct = None;
                f.direct_ok.store(false, Ordering::Relaxed);
            }
            let mut at = 0;
            let mut parts: Vec<(usize, usize)> = sizes
                .iter()
                .map(|s| {
                    let p = (at, *s);
                    at += s;
                    p
                })
                .collect();
            parts.reverse();
            for (at, len) in parts {
                put(&f, at as u64, &body[at..at + len]);
            }
            f.file().sync_all().unwrap();
            assert_eq!(std::fs::read(&path).unwrap(), body, "direct: {direct}");
            if direct && f.direct.is_some() {
                assert!(f.is_direct(), "the direct writes were taken, not refused");
            } else if direct {
                eprintln!("no O_DIRECT here: only the page-cache path was exercised");
            }
        }
    }
}
