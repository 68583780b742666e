//! The local file, memory-mapped once: zero-copy part bodies and a fingerprint to detect change.
//! A small file ([`HELD_MAX`] or less) is read whole when it is opened instead, and its bytes held.
//!
//! Resident memory follows the parts in use, not the file: a part body ([`Source::part`]) gives
//! its pages of the mapping back (`MADV_DONTNEED`) when its last user drops it (the hash, the
//! send and its retries, the whole-file MD5), and [`Source::will_need`] starts reading the next
//! parts into the page cache before they are hashed. The pages stay in the kernel's page cache:
//! nothing is read twice unless the kernel itself evicted them meanwhile.
//!
//! This module holds tally's `unsafe` code but one call (glibc's `mallopt`, `exec`): the mapping,
//! releasing its pages, and the prefetch hints of [`for_each_prefetched`].

use std::fs::File;
use std::ops::Range;
use std::os::unix::fs::{FileTypeExt as _, MetadataExt as _};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::SystemTime;

use bytes::Bytes;

use crate::error::Error;
use crate::plan::Part;

/// What identifies one version of a file on disk, cheaply: size, modification time, inode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fingerprint {
    /// Length in bytes.
    pub len: u64,
    /// Modification time.
    pub mtime: SystemTime,
    /// Change time in nanoseconds since the epoch (moves on any write or metadata change).
    pub ctime_ns: i128,
    /// Device and inode.
    pub dev_ino: (u64, u64),
}

impl Fingerprint {
    fn of(meta: &std::fs::Metadata) -> Self {
        Fingerprint {
            len: meta.len(),
            mtime: meta.modified().unwrap_or(SystemTime::UNIX_EPOCH),
            ctime_ns: i128::from(meta.ctime()) * 1_000_000_000 + i128::from(meta.ctime_nsec()),
            dev_ino: (meta.dev(), meta.ino()),
        }
    }
}

/// Files up to this size are read whole (one `pread`) when they are opened, and their bytes held
/// for as long as the [`Source`]; larger ones are mapped. For a small file the mapping costs more
/// than the bytes: a map, three `madvise` calls and an unmap, two of which make every CPU running
/// the process flush its TLB (perf, a re-run over 40,000 files of 4 KiB: about 7% of the run in
/// those flushes; docs/many-files.md). A file read whole is also one consistent version of it:
/// nothing read later can differ from what was hashed. At a tree's 128 files in progress, 32 MiB
/// at most, the same bound that single PutObjects sent from memory already had.
pub(crate) const HELD_MAX: u64 = 256 * 1024;

/// A regular file mapped read-only into memory, or read whole if it is small ([`HELD_MAX`]).
///
/// Part bodies are [`Bytes`] views of the mapping (or of the bytes held): handing one to the HTTP
/// client copies nothing, the mapping lives until the last view is dropped, and the last view of a
/// part releases that part's pages.
#[derive(Debug)]
pub struct Source {
    path: PathBuf,
    data: Data,
    fingerprint: Fingerprint,
    /// The file opened, for [`Source::read_into`] and [`Source::file`].
    file: Arc<File>,
}

/// The bytes of a [`Source`].
#[derive(Debug)]
enum Data {
    /// An empty file (nothing to map).
    Empty,
    /// A small file, read whole when opened.
    Held(Bytes),
    /// The file mapped.
    Mapped(Arc<memmap2::Mmap>),
}

/// A range of the mapping whose pages are released when it is dropped: the owner behind every
/// [`Bytes`] that [`Source::range`] hands out (clones and slices of it share it).
struct Pages {
    map: Arc<memmap2::Mmap>,
    range: Range<usize>,
}

impl AsRef<[u8]> for Pages {
    fn as_ref(&self) -> &[u8] {
        &self.map[self.range.clone()]
    }
}

impl Drop for Pages {
    fn drop(&mut self) {
        release(&self.map, self.range.clone());
    }
}

/// Drops `range`'s pages from this process's resident memory (`MADV_DONTNEED`): a hint whose
/// failure changes nothing but the memory figure, so it is only logged.
fn release(map: &memmap2::Mmap, range: Range<usize>) {
    let range = range.start.min(map.len())..range.end.min(map.len());
    if range.is_empty() {
        return;
    }
    // SAFETY: `map` is a read-only shared mapping of a file (`Mmap::map`: PROT_READ, MAP_SHARED),
    // never written through. MADV_DONTNEED on such a mapping only unmaps the pages from this
    // process: the next read of an address in the range faults the page back in from the page
    // cache (or the file), with the same bytes, exactly as after the kernel reclaimed a clean
    // file page under memory pressure, which it may do at any moment anyway. So references into
    // the range that are still alive (another view of the same part, the mapping as a whole)
    // keep seeing the file's bytes; nothing is zeroed or freed under them. (The zeroing that
    // makes `UncheckedAdvice::DontNeed` unsafe in general happens only to private or anonymous
    // mappings.) What another process's write or truncation can do to the file is described at
    // the mapping in `Source::open`, and holds here unchanged.
    let done = unsafe {
        map.unchecked_advise_range(
            memmap2::UncheckedAdvice::DontNeed,
            range.start,
            range.end - range.start,
        )
    };
    if let Err(e) = done {
        tracing::debug!(error = %e, "releasing pages of the mapping failed");
    }
}

/// Test-only: how many times each file was opened (mapped), i.e. read through a [`Source`]: the
/// tests that claim one read per file count here.
#[cfg(test)]
pub(crate) mod opens {
    use std::collections::HashMap;
    use std::path::{Path, PathBuf};
    use std::sync::Mutex;

    static OPENS: Mutex<Option<HashMap<PathBuf, usize>>> = Mutex::new(None);

    pub(super) fn count(canonical: &Path) {
        let mut m = OPENS.lock().expect("lock");
        *m.get_or_insert_with(HashMap::new)
            .entry(canonical.to_owned())
            .or_default() += 1;
    }

    /// How many times `path` was opened in this test process.
    pub(crate) fn of(path: &Path) -> usize {
        let path = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_owned());
        let m = OPENS.lock().expect("lock");
        m.as_ref().and_then(|m| m.get(&path)).copied().unwrap_or(0)
    }
}

impl Source {
    /// Opens and maps `path` (or reads it whole, if it is [`HELD_MAX`] or less). Refuses anything
    /// but a readable regular file; a file written while it is read whole is refused ("changed
    /// while it was read").
    pub fn open(path: &Path) -> Result<Source, Error> {
        let bad = |why: String| Error::Source {
            path: path.to_owned(),
            why,
        };
        let meta = std::fs::metadata(path).map_err(|e| bad(io_why(&e)))?;
        let ft = meta.file_type();
        if ft.is_dir() {
            return Err(bad("is a directory: give the path of a file".into()));
        }
        if ft.is_fifo() || ft.is_socket() || ft.is_char_device() || ft.is_block_device() {
            return Err(bad(
                "is not a regular file (a pipe, socket or device): copy it to a file first".into(),
            ));
        }
        let file = File::open(path).map_err(|e| bad(io_why(&e)))?;
        // The absolute path identifies the file in a manifest, whatever directory tally runs from.
        let path = &std::fs::canonicalize(path).map_err(|e| bad(io_why(&e)))?;
        let meta = file.metadata().map_err(|e| bad(io_why(&e)))?;
        #[cfg(test)]
        opens::count(path);
        let fingerprint = Fingerprint::of(&meta);
        let data = if meta.len() == 0 {
            Data::Empty
        } else if meta.len() <= HELD_MAX {
            Data::Held(read_whole(&file, path, &fingerprint)?)
        } else {
            // SAFETY: the mapping is read-only (shared with the page cache, never written through),
            // and `Bytes` keeps it alive for as long as any part body refers to it. What the OS
            // cannot promise is that nobody else changes the file meanwhile, and Rust's rule that
            // the bytes behind a `&[u8]` do not change is then broken by another process. What
            // really happens:
            // - another process writes the file: a read sees old or new bytes. A part whose bytes
            //   change between hashing and sending no longer matches the checksum sent with it and
            //   S3 rejects it (BadDigest); `Source::check_unchanged` (size, times, inode) runs before
            //   each part is hashed, before it is sent and before completing, and refuses to
            //   complete an upload whose file changed.
            // - the file is truncated: its pages past the new end are gone. The size check before
            //   each hash and each send makes this a narrow window, but it remains. If the kernel
            //   copies such a page into the socket (the HTTP client's write of a part body), the
            //   write fails with EFAULT ("Bad address"); tally then finds the file changed and
            //   reports that, exit 2, the upload kept. If tally's own code reads such a page
            //   (hashing, the whole-file MD5), the kernel raises SIGBUS and the process dies at
            //   once, as under kill -9: the journal is intact, the upload kept, and the next run
            //   refuses to resume the changed file (it names --restart).
            // No case completes an object from bytes other than the file's at one moment.
            // Releasing pages of the mapping (`release`) changes none of this: see there.
            let map = unsafe { memmap2::Mmap::map(&file) }.map_err(|e| bad(io_why(&e)))?;
            // Sequential read-ahead helps the hashing pass; the advice is only a hint.
            let _ = map.advise(memmap2::Advice::Sequential);
            Data::Mapped(Arc::new(map))
        };
        Ok(Source {
            path: path.to_owned(),
            data,
            fingerprint,
            file: Arc::new(file),
        })
    }

    /// All the bytes of the file. Pages read through this slice stay resident until the mapping
    /// is dropped or [`Source::release`] is called: for reading the file in parts, prefer
    /// [`Source::range`] / [`Source::part`], which release their pages by themselves.
    pub fn bytes(&self) -> &[u8] {
        match &self.data {
            Data::Empty => &[],
            Data::Held(b) => b,
            Data::Mapped(m) => &m[..],
        }
    }

    /// The bytes of a small file, read whole when it was opened ([`HELD_MAX`]); `None` for a
    /// mapped or empty file.
    pub(crate) fn held(&self) -> Option<&Bytes> {
        match &self.data {
            Data::Held(b) => Some(b),
            Data::Empty | Data::Mapped(_) => None,
        }
    }

    /// The file's absolute path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Length in bytes at open time.
    pub fn len(&self) -> u64 {
        self.bytes().len() as u64
    }

    /// Whether the file is empty.
    pub fn is_empty(&self) -> bool {
        self.bytes().is_empty()
    }

    /// The fingerprint taken when the file was opened.
    pub fn fingerprint(&self) -> Fingerprint {
        self.fingerprint
    }

    /// Fills `buf` with the file's bytes from `offset`, read with `pread`, not through the
    /// mapping: a file truncated meanwhile gives a short read, reported as
    /// [`Error::SourceChanged`], where a read of the mapping past the new end would kill the
    /// process with SIGBUS. For hashing a file sent in one PutObject, piece by piece into one
    /// buffer; its send reads the file again the same way (`s3::PutBody::File`). Blocking.
    pub fn read_into(&self, offset: u64, buf: &mut [u8]) -> Result<(), Error> {
        use std::os::unix::fs::FileExt as _;
        self.file
            .read_exact_at(buf, offset)
            .map_err(|e| match e.kind() {
                std::io::ErrorKind::UnexpectedEof => Error::SourceChanged {
                    path: self.path.clone(),
                },
                _ => Error::Source {
                    path: self.path.clone(),
                    why: io_why(&e),
                },
            })
    }

    /// The file as it was opened (the one mapped): for reading it with `pread` elsewhere (the
    /// body of a single PutObject, read as it is sent).
    pub fn file(&self) -> Arc<File> {
        self.file.clone()
    }

    /// The bytes of `part`, without copying (see [`Source::range`]).
    pub fn part(&self, part: &Part) -> Bytes {
        self.range(part.range())
    }

    /// The bytes of `range` (clamped to the file), without copying. When the last clone or slice
    /// of the returned [`Bytes`] is dropped, the range's pages are released ([`Source::release`]):
    /// take each range once and share that value among its users, so that the pages go only when
    /// every use of them is done.
    pub fn range(&self, range: Range<u64>) -> Bytes {
        let range = self.clamp(range);
        let map = match &self.data {
            _ if range.is_empty() => return Bytes::new(),
            Data::Empty => return Bytes::new(),
            Data::Held(b) => return b.slice(range),
            Data::Mapped(map) => map,
        };
        Bytes::from_owner(Pages {
            map: map.clone(),
            range,
        })
    }

    /// Drops the pages of `range` (clamped to the file) from this process's resident memory now.
    /// They stay in the kernel's page cache: reading them again costs a page fault, not a read of
    /// the disk (unless the kernel evicted them meanwhile). Safe with views of the range still in
    /// use: they read the same bytes again. Pages are whole: a page (or a huge page, where the
    /// kernel maps the file with them) that `range` only partly covers is released whole, and
    /// faulted back in if its other bytes are read.
    ///
    /// Why `MADV_DONTNEED` and not `MADV_PAGEOUT` or `MADV_COLD`: PAGEOUT also evicts the pages
    /// from the page cache (a `tally verify` of the file right after the upload would read the disk
    /// again), and COLD only ages them, leaving the resident figure as it was. Nothing for a file
    /// read whole: its bytes go with the [`Source`].
    pub fn release(&self, range: Range<u64>) {
        if let Data::Mapped(map) = &self.data {
            release(map, self.clamp(range));
        }
    }

    /// Asks the kernel to start reading the pages of `range` (clamped to the file) into the page
    /// cache now (`MADV_WILLNEED`), so that hashing them later does not wait for the disk. A hint:
    /// it maps nothing (the resident figure does not move) and may start I/O, so call it from a
    /// blocking thread. An error means only that the hint was not taken. Nothing for a file read
    /// whole.
    pub fn will_need(&self, range: Range<u64>) -> std::io::Result<()> {
        let Data::Mapped(map) = &self.data else {
            return Ok(());
        };
        let range = self.clamp(range);
        if range.is_empty() {
            return Ok(());
        }
        map.advise_range(
            memmap2::Advice::WillNeed,
            range.start,
            range.end - range.start,
        )
    }

    /// Maps the pages of `range` (clamped to the file) into this process now, in one call
    /// (`MADV_POPULATE_READ`), instead of one page fault per 64 KiB when they are first read: for
    /// a part about to be hashed. Waits for the disk if they are not cached (call it where the
    /// reading would have waited: on the pool, just before hashing). An error (a file cut short,
    /// a kernel before 5.14) means only that the pages will be faulted in as they are read.
    pub fn populate(&self, range: Range<u64>) -> std::io::Result<()> {
        let Data::Mapped(map) = &self.data else {
            return Ok(());
        };
        let range = self.clamp(range);
        if range.is_empty() {
            return Ok(());
        }
        map.advise_range(
            memmap2::Advice::PopulateRead,
            range.start,
            range.end - range.start,
        )
    }

    fn clamp(&self, range: Range<u64>) -> Range<usize> {
        let len = self.len();
        let end = range.end.min(len);
        range.start.min(end) as usize..end as usize
    }

    /// Fails if the file on disk is no longer the one that was mapped (size, times or inode moved).
    pub fn check_unchanged(&self) -> Result<(), Error> {
        let now = std::fs::metadata(&self.path).map(|m| Fingerprint::of(&m));
        match now {
            Ok(f) if f == self.fingerprint => Ok(()),
            _ => Err(Error::SourceChanged {
                path: self.path.clone(),
            }),
        }
    }
}

/// Reads all `before.len` bytes of a small `file` (one `pread`), and fails if it was cut short or
/// written meanwhile (its fingerprint after the read is not the one before). Said for every
/// command that opens a file (upload, verify, hash), so not in an upload's words.
fn read_whole(file: &File, path: &Path, before: &Fingerprint) -> Result<Bytes, Error> {
    use std::os::unix::fs::FileExt as _;
    const MOVED: &str = concat!(
        "changed while it was read (its size, times or inode moved): ",
        "run again once nothing writes it"
    );
    let changed = || Error::Source {
        path: path.to_owned(),
        why: MOVED.into(),
    };
    let failed = |e: std::io::Error| Error::Source {
        path: path.to_owned(),
        why: io_why(&e),
    };
    let mut buf = vec![0u8; usize::try_from(before.len).expect("a held file fits in memory")];
    file.read_exact_at(&mut buf, 0)
        .map_err(|e| match e.kind() {
            std::io::ErrorKind::UnexpectedEof => changed(),
            _ => failed(e),
        })?;
    if Fingerprint::of(&file.metadata().map_err(failed)?) != *before {
        return Err(changed());
    }
    Ok(Bytes::from(buf))
}

fn io_why(e: &std::io::Error) -> String {
    match e.kind() {
        std::io::ErrorKind::NotFound => "no such file: check the path".into(),
        std::io::ErrorKind::PermissionDenied => {
            "permission denied: run as a user who can read it, or fix its permissions".into()
        }
        _ => e.to_string(),
    }
}

/// Walks `data` in steps of `step` bytes, calling `f` on each, after asking the CPU to start
/// loading the step after next (a software prefetch: a hint, no read). Hashing is bound by memory,
/// not arithmetic, for bytes that come from RAM (the page cache): on this 2-core VM, SHA-256 in
/// 64 KiB steps over a 256 MiB buffer took 0.94 CPU-s per GiB without and 0.65 with this (a build
/// running on the other core; 0.52 over bytes already in cache): the hardware's own prefetcher
/// does not run far enough ahead of SHA-NI.
pub(crate) fn for_each_prefetched(data: &[u8], step: usize, mut f: impl FnMut(&[u8])) {
    let mut pos = 0;
    while pos < data.len() {
        let end = (pos + step).min(data.len());
        let ahead = (end + step).min(data.len());
        prefetch(&data[ahead..(ahead + step).min(data.len())]);
        f(&data[pos..end]);
        pos = end;
    }
}

/// Asks the CPU to bring `bytes` into its caches (nothing on other architectures).
#[inline]
fn prefetch(bytes: &[u8]) {
    #[cfg(target_arch = "x86_64")]
    for line in bytes.chunks(64) {
        // SAFETY: `_mm_prefetch` is only a hint: it reads nothing Rust can observe and never
        // faults, whatever the address; this one points into a live slice anyway. Its target
        // feature, SSE, is part of the x86_64 baseline every Rust x86_64 target enables.
        unsafe {
            std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(
                line.as_ptr().cast::<i8>(),
            );
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = bytes;
}

#[cfg(test)]
mod tests {
    /// Every byte is handed over once, in order, in steps of at most `step`, whatever the length.
    #[test]
    fn the_prefetched_walk_hands_over_every_byte_once_in_order() {
        let data: Vec<u8> = (0..300_001u32).map(|i| (i % 251) as u8).collect();
        for len in [
            0, 1, 63, 64, 65_535, 65_536, 65_537, 131_072, 200_000, 300_001,
        ] {
            for step in [1, 64, 4096, 65_536] {
                if step == 1 && len > 70_000 {
                    continue;
                }
                let mut seen = Vec::with_capacity(len);
                let mut steps = 0;
                super::for_each_prefetched(&data[..len], step, |s| {
                    assert!(
                        !s.is_empty() && s.len() <= step,
                        "{len}/{step}: {}",
                        s.len()
                    );
                    seen.extend_from_slice(s);
                    steps += 1;
                });
                assert_eq!(seen, &data[..len], "{len}/{step}");
                assert_eq!(steps, len.div_ceil(step), "{len}/{step}");
            }
        }
    }

    use super::*;
    use std::io::Write as _;

    #[test]
    fn parts_are_slices_of_the_file() {
        let mut f = tempfile::NamedTempFile::new().unwrap();
        let data: Vec<u8> = (0..10_000u32).map(|i| i as u8).collect();
        f.write_all(&data).unwrap();
        let s = Source::open(f.path()).unwrap();
        assert_eq!(s.len(), 10_000);
        let p = s.part(&Part {
            number: 2,
            offset: 4096,
            len: 4096,
        });
        assert_eq!(&p[..], &data[4096..8192]);
        s.check_unchanged().unwrap();
        f.write_all(b"more").unwrap();
        f.flush().unwrap();
        assert!(matches!(
            s.check_unchanged(),
            Err(Error::SourceChanged { .. })
        ));
    }

    #[test]
    fn a_small_file_is_read_whole_and_a_larger_one_mapped() {
        let held = super::HELD_MAX as usize;
        for (len, whole) in [(100, true), (held, true), (held + 1, false)] {
            let (f, data) = file_of(len);
            let s = Source::open(f.path()).unwrap();
            assert_eq!(s.held().is_some(), whole, "{len} bytes");
            assert!(s.bytes() == &data[..], "{len} bytes: the file's");
            let r = s.range(7..len as u64 + 10);
            assert!(r[..] == data[7..], "{len} bytes: a range, clamped");
            if let Some(b) = s.held() {
                // A range of a held file is a view of the bytes held, not a copy.
                assert_eq!(r.as_ptr(), b[7..].as_ptr(), "{len} bytes");
            }
        }
    }

    #[test]
    fn a_small_file_that_moved_while_it_was_read_whole_is_changed() {
        // The fingerprint taken before the read, against the file as it is after: a file cut
        // short (read past its end) or written (times moved) meanwhile is "file changed".
        let (f, _) = file_of(4096);
        let file = File::open(f.path()).unwrap();
        let before = Fingerprint::of(&file.metadata().unwrap());
        assert!(super::read_whole(&file, f.path(), &before).is_ok());
        let longer = Fingerprint {
            len: 8192,
            ..before
        };
        let older = Fingerprint {
            mtime: before.mtime - std::time::Duration::from_secs(1),
            ..before
        };
        for moved in [longer, older] {
            let e = super::read_whole(&file, f.path(), &moved).unwrap_err();
            assert!(e.to_string().contains("changed while it was read"), "{e}");
        }
    }

    /// KiB of the mapping starting at `at` resident in this process, from /proc/self/smaps (that
    /// one mapping's line: other tests' memory does not count).
    fn resident_kib(at: *const u8) -> u64 {
        let smaps = std::fs::read_to_string("/proc/self/smaps").unwrap();
        let head = format!("{:x}-", at as usize);
        let mut lines = smaps.lines().skip_while(|l| !l.starts_with(&head));
        assert!(lines.next().is_some(), "the mapping at {head} is in smaps");
        let rss = lines.find(|l| l.starts_with("Rss:")).expect("an Rss line");
        rss.split_whitespace().nth(1).unwrap().parse().unwrap()
    }

    /// `len` bytes that differ from page to page, written to a fresh file.
    fn file_of(len: usize) -> (tempfile::NamedTempFile, Vec<u8>) {
        let mut f = tempfile::NamedTempFile::new().unwrap();
        let data: Vec<u8> = (0..len)
            .map(|i| (i % 251) as u8 ^ (i >> 12) as u8)
            .collect();
        f.write_all(&data).unwrap();
        f.flush().unwrap();
        (f, data)
    }

    /// Reads one byte of every 4 KiB page of `bytes` (which maps each page).
    fn touch(bytes: &[u8]) -> u64 {
        bytes.iter().step_by(4096).map(|&b| u64::from(b)).sum()
    }

    const MIB: usize = 1024 * 1024;

    #[test]
    fn released_pages_leave_the_resident_set_and_read_back_the_same_bytes() {
        let (f, data) = file_of(8 * MIB);
        let s = Source::open(f.path()).unwrap();
        let at = s.bytes().as_ptr();
        std::hint::black_box(touch(s.bytes()));
        assert_eq!(resident_kib(at), 8 * 1024, "every page read is resident");
        s.release(0..4 * MIB as u64);
        assert_eq!(resident_kib(at), 4 * 1024, "the first half is released");
        assert!(
            s.bytes() == &data[..],
            "released pages read back the file's bytes"
        );
        assert_eq!(resident_kib(at), 8 * 1024, "and are resident again");
        s.release(0..u64::MAX);
        assert_eq!(resident_kib(at), 0, "a range past the end is clamped");
    }

    #[test]
    fn a_part_releases_its_pages_when_its_last_view_is_dropped() {
        // Offsets 2 MiB apart: where the kernel maps the file with huge pages, releasing part of
        // one releases all of it (reads fault it back in), so the part covers whole ones.
        let (f, data) = file_of(8 * MIB);
        let s = Source::open(f.path()).unwrap();
        let at = s.bytes().as_ptr();
        let part = s.part(&Part {
            number: 2,
            offset: 2 * MIB as u64,
            len: 4 * MIB as u64,
        });
        let (copy, head) = (part.clone(), part.slice(..10));
        // Every page (a fault may map more than the page it hit: the kernel maps whole folios).
        std::hint::black_box(touch(s.bytes()));
        assert_eq!(&part[..], &data[2 * MIB..6 * MIB]);
        assert_eq!(resident_kib(at), 8 * 1024);
        drop(part);
        drop(copy);
        assert_eq!(
            resident_kib(at),
            8 * 1024,
            "a view of the part is still alive"
        );
        assert_eq!(&head[..], &data[2 * MIB..2 * MIB + 10]);
        drop(head);
        assert_eq!(
            resident_kib(at),
            4 * 1024,
            "the last view released exactly the part's pages"
        );
    }

    #[test]
    fn populate_maps_the_range_at_once() {
        let (f, data) = file_of(8 * MIB);
        let s = Source::open(f.path()).unwrap();
        let at = s.bytes().as_ptr();
        assert_eq!(resident_kib(at), 0);
        s.populate(2 * MIB as u64..6 * MIB as u64).unwrap();
        assert_eq!(
            resident_kib(at),
            4 * 1024,
            "the range, no more, before any read"
        );
        assert!(s.bytes()[2 * MIB..6 * MIB] == data[2 * MIB..6 * MIB]);
        // (2 MiB steps: the kernel may map a file in huge pages, whole.)
        s.populate(6 * MIB as u64..u64::MAX).unwrap();
        assert_eq!(resident_kib(at), 6 * 1024, "clamped to the file");
    }

    #[test]
    fn will_need_maps_nothing_and_takes_any_range() {
        let (f, _) = file_of(4 * MIB);
        let s = Source::open(f.path()).unwrap();
        let at = s.bytes().as_ptr();
        s.will_need(MIB as u64..2 * MIB as u64).unwrap();
        s.will_need(3 * MIB as u64..u64::MAX).unwrap();
        s.will_need(u64::MAX - 1..u64::MAX).unwrap();
        assert_eq!(
            resident_kib(at),
            0,
            "read-ahead fills the page cache, not this process's memory"
        );
    }

    #[test]
    fn empty_files_map_to_nothing() {
        let f = tempfile::NamedTempFile::new().unwrap();
        let s = Source::open(f.path()).unwrap();
        assert!(s.is_empty());
        assert!(
            s.part(&Part {
                number: 1,
                offset: 0,
                len: 0
            })
            .is_empty()
        );
    }

    #[test]
    fn directories_and_missing_files_are_refused() {
        let d = tempfile::tempdir().unwrap();
        let e = Source::open(d.path()).unwrap_err().to_string();
        assert!(e.contains("is a directory"), "{e}");
        let e = Source::open(&d.path().join("nope"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("no such file"), "{e}");
    }
}
