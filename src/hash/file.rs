//! Whole-file digests in the formats media tools record (ASC MHL's names: `xxh64`, `xxh128`,
//! `xxh3`, `md5`, `sha1`, `c4`, plus `sha256`), computed in the same read as an upload's part
//! checksums: one [`FileHasher`] per file, fed the file's bytes in order (by the sequential worker
//! during an upload, in one call for `tally hash`).
//!
//! Encodings are ASC MHL's: lowercase hex of the canonical (big-endian) digest; `c4` is the C4 id
//! (SHA-512 in base58, padded to 88 characters, prefixed `c4`).

use std::collections::BTreeMap;

use md5::{Digest as _, Md5};
use serde::{Deserialize, Serialize};

use super::{CHUNK, hex};
use crate::error::Error;

/// A whole-file hash format. Ordered as ASC MHL lists them in a `<hash>` element (c4, md5, sha1,
/// xxh128, xxh3, xxh64), then sha256, which MHL has no element for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FileHashFormat {
    /// The C4 id: SHA-512 in base58 (`c4` + 88 characters).
    C4,
    /// MD5.
    Md5,
    /// SHA-1.
    Sha1,
    /// XXH3 128-bit (ASC MHL's default format).
    Xxh128,
    /// XXH3 64-bit.
    Xxh3,
    /// XXH64, the media industry's usual file hash.
    Xxh64,
    /// SHA-256 (not an ASC MHL format).
    Sha256,
}

impl FileHashFormat {
    /// Every format, in ASC MHL's order.
    pub const ALL: [FileHashFormat; 7] = [
        Self::C4,
        Self::Md5,
        Self::Sha1,
        Self::Xxh128,
        Self::Xxh3,
        Self::Xxh64,
        Self::Sha256,
    ];

    /// The name, as ASC MHL spells its element and `--file-hash` takes it.
    pub fn name(self) -> &'static str {
        match self {
            Self::C4 => "c4",
            Self::Md5 => "md5",
            Self::Sha1 => "sha1",
            Self::Xxh128 => "xxh128",
            Self::Xxh3 => "xxh3",
            Self::Xxh64 => "xxh64",
            Self::Sha256 => "sha256",
        }
    }

    /// Whether ASC MHL has an element for this format (all but sha256).
    pub fn in_mhl(self) -> bool {
        self != Self::Sha256
    }

    /// Parses a comma-separated list (`xxh64,md5`), in any case; duplicates collapse; the result
    /// is in [`FileHashFormat::ALL`]'s order.
    pub fn parse_list(s: &str) -> Result<Vec<FileHashFormat>, String> {
        let mut out: Vec<FileHashFormat> = s
            .split(',')
            .map(str::trim)
            .filter(|p| !p.is_empty())
            .map(str::parse)
            .collect::<Result<_, _>>()?;
        if out.is_empty() {
            return Err(format!(
                "no file hash format given: choose from {}",
                Self::choices()
            ));
        }
        out.sort();
        out.dedup();
        Ok(out)
    }

    fn choices() -> String {
        Self::ALL.map(Self::name).join(", ")
    }
}

impl std::fmt::Display for FileHashFormat {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for FileHashFormat {
    type Err = String;

    /// Parses a name in any case: `xxh64`, `XXH128`, `c4`, ...
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|f| f.name().eq_ignore_ascii_case(s.trim()))
            .ok_or_else(|| {
                format!(
                    "unknown file hash format '{s}': choose from {}",
                    Self::choices()
                )
            })
    }
}

/// A file's whole-file hashes: format -> value (lowercase hex; the C4 id for `c4`). Serialized
/// as a JSON object (`{"md5": "...", "xxh64": "..."}`) in ASC MHL's order.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct FileHashes(BTreeMap<FileHashFormat, String>);

impl FileHashes {
    /// The value in `format`, if computed.
    pub fn get(&self, format: FileHashFormat) -> Option<&str> {
        self.0.get(&format).map(String::as_str)
    }

    /// Every value, in ASC MHL's order.
    pub fn iter(&self) -> impl Iterator<Item = (FileHashFormat, &str)> {
        self.0.iter().map(|(f, v)| (*f, v.as_str()))
    }

    /// Sets the value in `format` (e.g. from a hash list read elsewhere).
    pub fn insert(&mut self, format: FileHashFormat, value: String) {
        self.0.insert(format, value);
    }

    /// Whether no value is held.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// How many values are held.
    pub fn len(&self) -> usize {
        self.0.len()
    }
}

/// What a [`FileHasher`] yields.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WholeFile {
    /// The formats asked for.
    pub hashes: FileHashes,
    /// The MD5, when asked for with [`FileHasher::with_md5`] or as a format.
    pub md5: Option<[u8; 16]>,
    /// Bytes fed.
    pub len: u64,
}

/// Whole-file digests in one pass: each chunk of [`CHUNK`] bytes feeds every hasher asked for
/// while it is in cache. XXH3 64 and XXH3 128 share one state (the same stripes; only the
/// finalisation differs). CPU-bound: feed it off the async threads.
#[derive(Clone, Default)]
pub struct FileHasher {
    formats: Vec<FileHashFormat>,
    md5: Option<Md5>,
    sha1: Option<sha1::Sha1>,
    sha256: Option<sha2::Sha256>,
    sha512: Option<Box<sha2::Sha512>>,
    xxh64: Option<xxhash_rust::xxh64::Xxh64>,
    xxh3: Option<Box<xxhash_rust::xxh3::Xxh3Default>>,
    len: u64,
}

impl std::fmt::Debug for FileHasher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FileHasher")
            .field("formats", &self.formats)
            .field("md5", &self.md5.is_some())
            .field("len", &self.len)
            .finish()
    }
}

impl FileHasher {
    /// A hasher for `formats`.
    pub fn new(formats: &[FileHashFormat]) -> FileHasher {
        use FileHashFormat as F;
        let has = |f: F| formats.contains(&f);
        let mut formats = formats.to_vec();
        formats.sort();
        formats.dedup();
        FileHasher {
            md5: has(F::Md5).then(Md5::new),
            sha1: has(F::Sha1).then(sha1::Sha1::new),
            sha256: has(F::Sha256).then(sha2::Sha256::new),
            sha512: has(F::C4).then(|| Box::new(sha2::Sha512::new())),
            xxh64: has(F::Xxh64).then(|| xxhash_rust::xxh64::Xxh64::new(0)),
            xxh3: (has(F::Xxh3) || has(F::Xxh128))
                .then(|| Box::new(xxhash_rust::xxh3::Xxh3Default::new())),
            formats,
            len: 0,
        }
    }

    /// Also computes the MD5 (for `--md5-tag`, `--read-back`, a single PUT's Content-MD5), whether
    /// or not `md5` is one of the formats: it is computed once either way.
    pub fn with_md5(mut self) -> FileHasher {
        self.md5.get_or_insert_with(Md5::new);
        self
    }

    /// Whether nothing at all is computed.
    pub fn is_idle(&self) -> bool {
        self.formats.is_empty() && self.md5.is_none()
    }

    /// Feeds the next bytes, in order.
    pub fn update(&mut self, data: &[u8]) {
        for chunk in data.chunks(CHUNK) {
            if let Some(h) = &mut self.md5 {
                h.update(chunk);
            }
            if let Some(h) = &mut self.sha1 {
                h.update(chunk);
            }
            if let Some(h) = &mut self.sha256 {
                h.update(chunk);
            }
            if let Some(h) = &mut self.sha512 {
                h.update(chunk);
            }
            if let Some(h) = &mut self.xxh64 {
                h.update(chunk);
            }
            if let Some(h) = &mut self.xxh3 {
                h.update(chunk);
            }
        }
        self.len += data.len() as u64;
    }

    /// The digests of every byte fed.
    pub fn finish(self) -> WholeFile {
        use FileHashFormat as F;
        let FileHasher {
            formats,
            md5,
            mut sha1,
            mut sha256,
            mut sha512,
            xxh64,
            xxh3,
            len,
        } = self;
        let md5: Option<[u8; 16]> = md5.map(|h| h.finalize().into());
        let mut hashes = FileHashes::default();
        for f in formats {
            let value = match f {
                F::Md5 => md5.map(|m| hex(&m)),
                F::Sha1 => sha1.take().map(|h| hex(&h.finalize())),
                F::Sha256 => sha256.take().map(|h| hex(&h.finalize())),
                F::C4 => sha512.take().map(|h| c4_id(&h.finalize())),
                F::Xxh64 => xxh64.as_ref().map(|h| hex(&h.digest().to_be_bytes())),
                F::Xxh3 => xxh3.as_ref().map(|h| hex(&h.digest().to_be_bytes())),
                F::Xxh128 => xxh3.as_ref().map(|h| hex(&h.digest128().to_be_bytes())),
            };
            if let Some(v) = value {
                hashes.insert(f, v);
            }
        }
        WholeFile { hashes, md5, len }
    }
}

/// The C4 id of a SHA-512 digest: `c4` followed by the digest as a base58 number (alphabet
/// without 0, O, I, l), left-padded with `1` (base58's zero) to 88 characters.
pub fn c4_id(sha512: &[u8]) -> String {
    const ALPHABET: &[u8; 58] = b"123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz";
    // Base-58 digits, least significant first: multiply by 256 and add each byte in turn.
    let mut digits: Vec<u8> = Vec::with_capacity(90);
    for &byte in sha512 {
        let mut carry = u32::from(byte);
        for d in &mut digits {
            carry += u32::from(*d) << 8;
            *d = (carry % 58) as u8;
            carry /= 58;
        }
        while carry > 0 {
            digits.push((carry % 58) as u8);
            carry /= 58;
        }
    }
    let mut id = String::with_capacity(90);
    id.push_str("c4");
    id.extend(std::iter::repeat_n(
        '1',
        88usize.saturating_sub(digits.len()),
    ));
    id.extend(digits.iter().rev().map(|d| ALPHABET[*d as usize] as char));
    id
}

/// The whole-file hashes of the file at `path` in `formats`, reading it once (memory-mapped, or
/// read whole if it is small).
/// Blocking and CPU-bound: call it from a blocking thread or the rayon pool.
pub fn file_hashes(
    path: &std::path::Path,
    formats: &[FileHashFormat],
) -> Result<FileHashes, Error> {
    let src = crate::source::Source::open(path)?;
    let mut h = FileHasher::new(formats);
    h.update(src.bytes());
    Ok(h.finish().hashes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use FileHashFormat as F;

    /// The input the expected values below were computed from, outside tally: python3's hashlib
    /// and the `xxhash` package (4.1.0), and `ascmhl-debug hash -h FORMAT` (ascmhl 1.2), which
    /// agreed on every value: `bytes((i * 31 + 7) % 251 for i in range(1_000_003))`.
    fn multi_block() -> Vec<u8> {
        (0..1_000_003u64)
            .map(|i| ((i * 31 + 7) % 251) as u8)
            .collect()
    }

    fn all(data: &[u8], pieces: &[usize]) -> FileHashes {
        let mut h = FileHasher::new(&F::ALL);
        let mut rest = data;
        for &n in pieces {
            let (a, b) = rest.split_at(n.min(rest.len()));
            h.update(a);
            rest = b;
        }
        h.update(rest);
        let out = h.finish();
        assert_eq!(out.len, data.len() as u64);
        out.hashes
    }

    #[test]
    fn whole_file_hashes_equal_the_reference_values() {
        type Case = (&'static str, Vec<u8>, [(F, &'static str); 7]);
        let cases: [Case; 3] = [
            (
                "hello world",
                b"hello world".to_vec(),
                [
                    (F::Xxh64, "45ab6734b21e6968"),
                    (F::Xxh3, "d447b1ea40e6988b"),
                    (F::Xxh128, "df8d09e93f874900a99b8775cc15b6c7"),
                    (F::Md5, "5eb63bbbe01eeed093cb22bb8f5acdc3"),
                    (F::Sha1, "2aae6c35c94fcfb415dbe95f408b9ce91ee846ed"),
                    (
                        F::Sha256,
                        "b94d27b9934d3e08a52e52d7da7dabfac484efe37a5380ee9088f7ace2efcde9",
                    ),
                    (
                        F::C4,
                        "c41yP4cqy7jmaRDzC2bmcGNZkuQb3VdftMk6YH7ynQ2Qw4zktKsyA9fk52xghNQNAdkpF9iFmFkKh2bNVG4kDWhsok",
                    ),
                ],
            ),
            (
                "empty",
                Vec::new(),
                [
                    (F::Xxh64, "ef46db3751d8e999"),
                    (F::Xxh3, "2d06800538d394c2"),
                    (F::Xxh128, "99aa06d3014798d86001c324468d497f"),
                    (F::Md5, "d41d8cd98f00b204e9800998ecf8427e"),
                    (F::Sha1, "da39a3ee5e6b4b0d3255bfef95601890afd80709"),
                    (
                        F::Sha256,
                        "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
                    ),
                    (
                        F::C4,
                        "c459dsjfscH38cYeXXYogktxf4Cd9ibshE3BHUo6a58hBXmRQdZrAkZzsWcbWtDg5oQstpDuni4Hirj75GEmTc1sFT",
                    ),
                ],
            ),
            (
                "multi-block",
                multi_block(),
                [
                    (F::Xxh64, "65566c8f44a1a236"),
                    (F::Xxh3, "7b3986442546fd2e"),
                    (F::Xxh128, "aaa535a1dc7aea887b3986442546fd2e"),
                    (F::Md5, "97adcc1277feb41c4935542ef272b6d9"),
                    (F::Sha1, "d9f4c8e629a21effd219b3418086f97ba866c320"),
                    (
                        F::Sha256,
                        "a79aaccf39831e39ad9382f03c515510dcde695830c65a91620160cbe434b410",
                    ),
                    (
                        F::C4,
                        "c43yE9bnDQWwdzJ7Y25eGFQeEm6H6pJAF1sLyRcXmcMoRPYLhGEiFjqi59cz7DkNEQ1qZrSort9qhGD7ezP94Xqwwf",
                    ),
                ],
            ),
        ];
        for (name, data, want) in &cases {
            // Fed at once, and in uneven pieces that cross the chunk and XXH3 block boundaries.
            for pieces in [&[][..], &[1, 7, 300_000, CHUNK + 5]] {
                let got = all(data, pieces);
                assert_eq!(got.len(), 7, "{name}");
                for (f, v) in want {
                    assert_eq!(got.get(*f), Some(*v), "{name} {f} fed in {pieces:?}");
                }
            }
        }
    }

    #[test]
    fn only_the_formats_asked_for_are_reported_and_md5_is_shared() {
        let mut h = FileHasher::new(&[F::Xxh64, F::Xxh64]).with_md5();
        h.update(b"hello world");
        let out = h.finish();
        assert_eq!(
            out.hashes.iter().collect::<Vec<_>>(),
            [(F::Xxh64, "45ab6734b21e6968")]
        );
        assert_eq!(
            out.md5.map(|m| hex(&m)).as_deref(),
            Some("5eb63bbbe01eeed093cb22bb8f5acdc3")
        );
        assert!(FileHasher::new(&[]).is_idle());
        assert!(!FileHasher::new(&[]).with_md5().is_idle());
        // The JSON form is an object in MHL's order, keyed by the formats' names.
        let mut two = FileHasher::new(&[F::Xxh64, F::Md5]);
        two.update(b"hello world");
        assert_eq!(
            serde_json::to_string(&two.finish().hashes).unwrap(),
            r#"{"md5":"5eb63bbbe01eeed093cb22bb8f5acdc3","xxh64":"45ab6734b21e6968"}"#
        );
    }

    #[test]
    fn format_lists_parse_in_any_case_and_refuse_unknown_names() {
        assert_eq!(
            FileHashFormat::parse_list("XXH64, md5,xxh64,c4").unwrap(),
            [F::C4, F::Md5, F::Xxh64]
        );
        let e = FileHashFormat::parse_list("xxh64,crc32").unwrap_err();
        assert!(e.contains("'crc32'") && e.contains("xxh128"), "{e}");
        assert!(FileHashFormat::parse_list(" , ").is_err());
    }

    #[test]
    fn a_c4_id_is_always_90_characters() {
        // The smallest and largest digests: all zeros pads to 88 '1's, all ones needs no padding.
        assert_eq!(c4_id(&[0u8; 64]), format!("c4{}", "1".repeat(88)));
        assert_eq!(c4_id(&[0xffu8; 64]).len(), 90);
        let mut small = [0u8; 64];
        small[63] = 57;
        assert_eq!(c4_id(&small), format!("c4{}z", "1".repeat(87)));
    }

    #[test]
    fn file_hashes_reads_a_file() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f");
        std::fs::write(&p, b"hello world").unwrap();
        let got = file_hashes(&p, &[F::Xxh128, F::C4]).unwrap();
        assert_eq!(got.get(F::Xxh128), Some("df8d09e93f874900a99b8775cc15b6c7"));
        assert!(got.get(F::C4).unwrap().starts_with("c41yP4cqy7"));
        assert_eq!(got.get(F::Md5), None);
        assert!(file_hashes(&dir.path().join("missing"), &[F::Md5]).is_err());
    }
}
