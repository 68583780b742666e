//! The multipart ETag of an object whose server does not give its part layout (s3s-fs ignores
//! `?partNumber`): the ETag names the part count `N` but not the part size, and the ETag is
//! `MD5(MD5(part 1) .. MD5(part N))-N`, so it can be recomputed only with the right boundaries.
//!
//! Uploaders cut objects into parts of one size (the last part shorter), and every uploader we
//! know of uses a whole number of MiB (the AWS CLI and SDKs 8 MiB, doubled for large files; s5cmd
//! 50 MiB; rclone 5 MiB; tally 100 MiB). For an object of `S` bytes in `N` parts only the sizes
//! `P` with `ceil(S / P) == N` fit. When few whole-MiB sizes fit, all are tried in one read of
//! the downloaded file:
//! - one reproduces the ETag: the bytes are proven (an MD5 collision aside), and the report says
//!   which part size did it;
//! - none does, and every whole-MiB size that fits was tried: the bytes differ from the object,
//!   or the uploader used a part size that is not whole MiB. tally treats it as a mismatch
//!   (fetched again once, then refused), and says both causes;
//! - too many sizes fit (few, large parts) to try them all: nothing is claimed either way.
//!
//! This reads the file a second time, in this fallback only (a server that hides the layout).

use std::fs::File;
use std::os::unix::fs::FileExt;

use md5::{Digest as _, Md5};

use crate::vocab::MIB;

/// Part sizes tried at most: each costs one MD5 of the whole file.
pub(crate) const MAX_CANDIDATES: usize = 4;

/// The whole-MiB part sizes that cut `size` bytes into exactly `parts` parts, smallest first,
/// at most [`MAX_CANDIDATES`], and whether that is all of them.
pub(crate) fn candidates(size: u64, parts: u32) -> (Vec<u64>, bool) {
    let n = u64::from(parts);
    if n < 2 || size < n {
        return (Vec::new(), true);
    }
    // ceil(size / p) == n  <=>  (n - 1) * p < size <= n * p
    let lowest = size.div_ceil(n).div_ceil(MIB).max(1);
    let mut out = Vec::new();
    let mut p = lowest;
    while p * MIB * (n - 1) < size {
        if out.len() == MAX_CANDIDATES {
            return (out, false);
        }
        out.push(p * MIB);
        p += 1;
    }
    (out, true)
}

/// One candidate's running state.
struct Cut {
    part_size: u64,
    current: Md5,
    in_part: u64,
    md5s: Vec<[u8; 16]>,
}

impl Cut {
    fn new(part_size: u64) -> Cut {
        Cut {
            part_size,
            current: Md5::new(),
            in_part: 0,
            md5s: Vec::new(),
        }
    }

    /// Feeds the next bytes of the file, closing parts at this candidate's boundaries.
    fn feed(&mut self, mut bytes: &[u8]) {
        while !bytes.is_empty() {
            let room = (self.part_size - self.in_part) as usize;
            let take = room.min(bytes.len());
            self.current.update(&bytes[..take]);
            self.in_part += take as u64;
            bytes = &bytes[take..];
            if self.in_part == self.part_size {
                self.close();
            }
        }
    }

    fn close(&mut self) {
        let done = std::mem::replace(&mut self.current, Md5::new());
        self.md5s.push(done.finalize().into());
        self.in_part = 0;
    }

    /// The ETag this cut gives.
    fn etag(mut self) -> String {
        if self.in_part > 0 {
            self.close();
        }
        crate::hash::etag_of_md5s(&self.md5s)
    }
}

/// The ETag each candidate part size gives for the first `size` bytes of `file`, in the order
/// of `candidates`. One sequential read; blocking.
pub(crate) fn etags(
    file: &File,
    size: u64,
    candidates: &[u64],
) -> std::io::Result<Vec<(u64, String)>> {
    let mut cuts: Vec<Cut> = candidates.iter().map(|p| Cut::new(*p)).collect();
    let mut buf = vec![0u8; MIB as usize];
    let mut at = 0u64;
    while at < size {
        let want = (size - at).min(MIB) as usize;
        let got = file.read_at(&mut buf[..want], at)?;
        if got == 0 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "the downloaded file is shorter than the object",
            ));
        }
        for c in &mut cuts {
            c.feed(&buf[..got]);
        }
        at += got as u64;
    }
    Ok(cuts.into_iter().map(|c| (c.part_size, c.etag())).collect())
}

/// What the search found for one object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Found {
    /// This part size reproduces the ETag.
    PartSize(u64),
    /// Every whole-MiB part size that fits was tried and none reproduces it: each one's ETag.
    NoneOfAll(Vec<(u64, String)>),
    /// Too many part sizes fit to try them all; those tried do not reproduce it.
    NotTried,
}

/// Searches the part size of an object of `size` bytes whose ETag is `etag` (unquoted, `...-N`)
/// in the downloaded `file`. Blocking.
pub(crate) fn search(file: &File, size: u64, etag: &str) -> std::io::Result<Found> {
    let Some(parts) = crate::vocab::ETag::new(etag).parts() else {
        return Ok(Found::NotTried);
    };
    let (sizes, all) = candidates(size, parts);
    if !all || sizes.is_empty() {
        return Ok(Found::NotTried);
    }
    let got = etags(file, size, &sizes)?;
    Ok(match got.iter().find(|(_, e)| e == etag) {
        Some((p, _)) => Found::PartSize(*p),
        None => Found::NoneOfAll(got),
    })
}

/// A part size in words: "5 MiB".
pub(crate) fn mib(p: u64) -> String {
    format!("{} MiB", p / MIB)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_sizes_that_give_the_part_count_are_candidates() {
        // 11 MiB in 3 parts: 4 MiB (4+4+3) and 5 MiB (5+5+1); 6 MiB gives 2 parts, 3 MiB 4.
        assert_eq!(candidates(11 * MIB, 3), (vec![4 * MIB, 5 * MIB], true));
        // 16 GiB in 164 parts of 100 MiB: the only whole-MiB size.
        assert_eq!(candidates(16 * 1024 * MIB, 164), (vec![100 * MIB], true));
        // 1 GiB in 2 parts: every size from 512 MiB to 1023 MiB fits, too many to try.
        let (c, all) = candidates(1024 * MIB, 2);
        assert_eq!(c.len(), MAX_CANDIDATES);
        assert!(!all);
        assert_eq!(candidates(5, 1), (vec![], true));
    }

    #[test]
    fn the_part_size_that_reproduces_the_etag_is_found_and_a_changed_byte_finds_none() {
        let data: Vec<u8> = (0..11 * MIB as usize)
            .map(|i| (i * 31 % 251) as u8)
            .collect();
        let md5s: Vec<[u8; 16]> = data
            .chunks(5 * MIB as usize)
            .map(|c| Md5::digest(c).into())
            .collect();
        let etag = crate::hash::etag_of_md5s(&md5s);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        std::fs::write(&path, &data).unwrap();
        let file = File::open(&path).unwrap();
        assert_eq!(
            search(&file, data.len() as u64, &etag).unwrap(),
            Found::PartSize(5 * MIB)
        );
        let mut bad = data.clone();
        bad[7 * MIB as usize] ^= 1;
        std::fs::write(&path, &bad).unwrap();
        let file = File::open(&path).unwrap();
        let Found::NoneOfAll(got) = search(&file, data.len() as u64, &etag).unwrap() else {
            panic!("every size fits and was tried");
        };
        assert_eq!(got.len(), 2);
        assert!(got.iter().all(|(_, e)| *e != etag && e.ends_with("-3")));
        // A 1 GiB object in 2 parts: too many sizes fit, nothing is claimed.
        assert_eq!(
            search(&file, 1024 * MIB, "0123456789abcdef0123456789abcdef-2").unwrap(),
            Found::NotTried
        );
    }
}
