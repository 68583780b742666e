//! Part planning: a file length and a requested part size become part ranges within S3's limits.
//!
//! Pure arithmetic, property-tested. The requested size is honoured until the object would need more
//! than [`MAX_PARTS`] parts; then the part size grows, in whole MiB, just enough to fit.
//!
//! Without a requested size ([`AUTO`], the default), the part size follows the file, so that a
//! file keeps many connections busy on a link where each connection is slow (a real S3 link: tens
//! of MB/s per connection): a file up to [`AUTO_MAX`] goes in one PutObject; a larger one in parts
//! of a [`AUTO_PARTS`]th of it (256) in whole MiB, at least [`AUTO_MIN`] and at most [`AUTO_MAX`].
//! 256 parts are four rounds of the default 64 connections: a part that straggles and is sent (or
//! fetched) again costs a quarter of what it would if every part lasted the whole transfer, and
//! the other connections take the remaining parts meanwhile (docs/link.md, "Stragglers"). The
//! layout depends on the file's size only, so `tally hash` predicts it and two uploads of one file
//! give one ETag whatever `--concurrency` says.

use crate::error::Error;
use crate::vocab::{MAX_OBJECT_SIZE, MAX_PART_SIZE, MAX_PARTS, MAX_SINGLE_PUT, MIB, MIN_PART_SIZE};

/// The requested part size that means "follow the file" (see the module docs).
pub(crate) const AUTO: u64 = 0;
/// The parts a file is cut into when the part size follows it.
pub(crate) const AUTO_PARTS: u64 = 256;
/// The smallest part size chosen for a file (the AWS CLI's and SDKs' part size).
pub(crate) const AUTO_MIN: u64 = 8 * MIB;
/// The largest part size chosen for a file, and the largest file sent in one PutObject.
pub(crate) const AUTO_MAX: u64 = 100 * MIB;

/// The part size to cut `len` bytes with: `requested`, or the file's own when it is [`AUTO`].
pub(crate) fn part_size_for(len: u64, requested: u64) -> u64 {
    if requested != AUTO {
        return requested;
    }
    if len <= AUTO_MAX {
        return AUTO_MAX;
    }
    (len.div_ceil(AUTO_PARTS).div_ceil(MIB) * MIB).clamp(AUTO_MIN, AUTO_MAX)
}

/// The largest part `requested` can give (what a byte budget must hold).
pub(crate) fn largest_part(requested: u64) -> u64 {
    if requested == AUTO {
        AUTO_MAX
    } else {
        requested
    }
}

/// One part of a multipart upload: its 1-based number and byte range in the source.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Part {
    /// S3 part number, 1..=10,000.
    pub number: u32,
    /// Offset of the first byte in the source.
    pub offset: u64,
    /// Length in bytes.
    pub len: u64,
}

impl Part {
    /// The byte range `offset..offset + len`.
    pub fn range(&self) -> std::ops::Range<u64> {
        self.offset..self.offset + self.len
    }
}

/// How an object of a given length is sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Plan {
    /// One PutObject carrying the whole body (files up to one part size).
    Single {
        /// Object length in bytes.
        len: u64,
    },
    /// A multipart upload of `count` parts of `part_size` bytes (the last may be shorter).
    Multipart {
        /// Object length in bytes.
        len: u64,
        /// Size of every part but the last.
        part_size: u64,
        /// Number of parts.
        count: u32,
    },
}

impl Plan {
    /// Plans an object of `len` bytes with parts of `requested` bytes ([`AUTO`]: the file's own,
    /// see [`part_size_for`]).
    ///
    /// `requested` must be [`AUTO`] or within [`MIN_PART_SIZE`]..=[`MAX_PART_SIZE`] (checked when
    /// the configuration is built). Objects larger than [`MAX_OBJECT_SIZE`] are refused.
    pub(crate) fn new(len: u64, requested: u64) -> Result<Plan, Error> {
        let requested = part_size_for(len, requested);
        debug_assert!((MIN_PART_SIZE..=MAX_PART_SIZE).contains(&requested));
        if len > MAX_OBJECT_SIZE {
            return Err(Error::TooLarge { len });
        }
        if len <= requested && len <= MAX_SINGLE_PUT {
            return Ok(Plan::Single { len });
        }
        // Smallest whole-MiB part size that keeps the count within 10,000.
        let needed = len.div_ceil(MAX_PARTS).div_ceil(MIB) * MIB;
        let part_size = requested.max(needed);
        debug_assert!(
            part_size <= MAX_PART_SIZE,
            "len <= MAX_OBJECT_SIZE bounds the part size"
        );
        let count = len.div_ceil(part_size);
        Ok(Plan::Multipart {
            len,
            part_size,
            count: u32::try_from(count).expect("at most 10,000 parts"),
        })
    }

    /// Object length in bytes.
    pub(crate) fn len(&self) -> u64 {
        match *self {
            Plan::Single { len } | Plan::Multipart { len, .. } => len,
        }
    }

    /// Size of every part but the last (the whole length for a single PUT).
    pub(crate) fn part_size(&self) -> u64 {
        match *self {
            Plan::Single { len } => len,
            Plan::Multipart { part_size, .. } => part_size,
        }
    }

    /// Number of parts (1 for a single PUT).
    pub(crate) fn count(&self) -> u32 {
        match *self {
            Plan::Single { .. } => 1,
            Plan::Multipart { count, .. } => count,
        }
    }

    /// The parts in order; a single PUT is one part covering the whole object.
    pub(crate) fn parts(&self) -> impl ExactSizeIterator<Item = Part> + use<> {
        let (len, size, count) = (self.len(), self.part_size().max(1), self.count());
        (0..count).map(move |index| {
            let offset = u64::from(index) * size;
            Part {
                number: index + 1,
                offset,
                len: size.min(len - offset),
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vocab::{GIB, parse_size};
    use proptest::prelude::*;

    const TIB: u64 = 1024 * GIB;

    #[test]
    fn small_files_go_in_one_put() {
        assert_eq!(Plan::new(0, 100 * MIB).unwrap(), Plan::Single { len: 0 });
        assert_eq!(Plan::new(1, 100 * MIB).unwrap(), Plan::Single { len: 1 });
        assert_eq!(
            Plan::new(100 * MIB, 100 * MIB).unwrap(),
            Plan::Single { len: 100 * MIB }
        );
        let p = Plan::new(100 * MIB + 1, 100 * MIB).unwrap();
        assert_eq!(p.count(), 2);
        assert_eq!(p.parts().last().unwrap().len, 1);
    }

    #[test]
    fn a_five_gib_file_with_five_gib_parts_is_not_one_put() {
        let p = Plan::new(5 * GIB, 5 * GIB).unwrap();
        assert_eq!(
            p,
            Plan::Multipart {
                len: 5 * GIB,
                part_size: 5 * GIB,
                count: 1
            }
        );
    }

    #[test]
    fn the_automatic_part_size_follows_the_file() {
        // Up to 100 MiB: one PutObject.
        assert_eq!(
            Plan::new(100 * MIB, AUTO).unwrap(),
            Plan::Single { len: 100 * MIB }
        );
        // 256 MiB: a 256th is 1 MiB, so the 8 MiB floor: 32 parts.
        let p = Plan::new(256 * MIB, AUTO).unwrap();
        assert_eq!((p.part_size(), p.count()), (8 * MIB, 32));
        // 2 GiB: 256 parts of 8 MiB; 4 GiB: 256 parts of 16 MiB.
        let p = Plan::new(2 * GIB, AUTO).unwrap();
        assert_eq!((p.part_size(), p.count()), (8 * MIB, 256));
        let p = Plan::new(4 * GIB, AUTO).unwrap();
        assert_eq!((p.part_size(), p.count()), (16 * MIB, 256));
        // 16 GiB: 256 parts of 64 MiB; 25 GiB and more: 100 MiB parts, as many as it takes.
        let p = Plan::new(16 * GIB, AUTO).unwrap();
        assert_eq!((p.part_size(), p.count()), (64 * MIB, 256));
        let p = Plan::new(32 * GIB, AUTO).unwrap();
        assert_eq!((p.part_size(), p.count()), (100 * MIB, 328));
        // A tebibyte: grown to stay within 10,000 parts, as with any requested size.
        assert_eq!(Plan::new(TIB, AUTO).unwrap().part_size(), 105 * MIB);
        assert_eq!(largest_part(AUTO), AUTO_MAX);
        assert_eq!(largest_part(5 * MIB), 5 * MIB);
    }

    #[test]
    fn default_part_size_grows_for_a_tebibyte() {
        let p = Plan::new(TIB, 100 * MIB).unwrap();
        assert_eq!(p.part_size(), 105 * MIB);
        assert!(p.count() <= 10_000);
    }

    #[test]
    fn largest_object_uses_five_gib_parts() {
        let p = Plan::new(MAX_OBJECT_SIZE, 100 * MIB).unwrap();
        assert_eq!(p.part_size(), MAX_PART_SIZE);
        assert_eq!(p.count(), 10_000);
        assert!(matches!(
            Plan::new(MAX_OBJECT_SIZE + 1, 100 * MIB),
            Err(Error::TooLarge { .. })
        ));
    }

    #[test]
    fn sizes_parse_with_units() {
        for (text, want) in [
            ("100MiB", 100 * MIB),
            ("5 GiB", 5 * GIB),
            ("64m", 64 * MIB),
            ("1048576", MIB),
            ("8MB", 8_000_000),
        ] {
            assert_eq!(parse_size(text), Ok(want), "{text}");
        }
        for bad in ["", "MiB", "12 parsecs", "-5MiB", "99999999999999TiB"] {
            assert!(parse_size(bad).is_err(), "{bad}");
        }
    }

    proptest! {
        #[test]
        fn parts_cover_the_file_within_limits(
            len in prop_oneof![0..=64 * GIB, 0..=MAX_OBJECT_SIZE, Just(MAX_OBJECT_SIZE), Just(TIB)],
            requested_mib in 5u64..=5 * 1024,
        ) {
            let plan = Plan::new(len, requested_mib * MIB).unwrap();
            let parts: Vec<Part> = plan.parts().collect();
            prop_assert_eq!(parts.len() as u64, u64::from(plan.count()));
            prop_assert!(parts.len() as u64 <= MAX_PARTS);
            let single = matches!(plan, Plan::Single { .. });
            prop_assert!(single || plan.part_size() >= requested_mib * MIB);
            if let Plan::Multipart { part_size, .. } = plan {
                prop_assert_eq!(part_size % MIB, 0);
            }
            let mut next = 0;
            for (i, part) in parts.iter().enumerate() {
                prop_assert_eq!(part.number as usize, i + 1);
                prop_assert_eq!(part.offset, next);
                prop_assert!(part.len <= MAX_PART_SIZE);
                if i + 1 < parts.len() {
                    prop_assert!(part.len >= MIN_PART_SIZE);
                    prop_assert_eq!(part.len, plan.part_size());
                }
                next += part.len;
            }
            prop_assert_eq!(next, len);
            if single {
                prop_assert!(len <= requested_mib * MIB && len <= MAX_SINGLE_PUT);
            } else {
                // The grown size is the smallest whole-MiB size that fits.
                let smaller = plan.part_size() - MIB;
                prop_assert!(plan.part_size() == requested_mib * MIB || len.div_ceil(smaller) > MAX_PARTS);
            }
        }
    }
}
