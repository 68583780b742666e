//! Whole-file hashes in ASC MHL's formats and encodings: md5 and sha1 as lowercase hex, xxh64,
//! xxh3 and xxh128 as xxHash's canonical (big-endian) hex, c4 as the C4 id of the SHA-512 digest.
//!
//! Temporary home: the checksum work of issue 14 publishes `hash::file_hashes(path, formats)`,
//! `hash::FileHashFormat` and `hash::FileHashes` (with `get` and `iter`, as here); once it is on
//! main this module becomes `pub use crate::hash::{FileHashFormat as HashFormat, FileHashes,
//! file_hashes};` (callers only use `get`, `iter` and the error's text). Until the tree upload
//! takes the upload's own whole-file hashes, its check reads a file a second time.

use std::collections::BTreeMap;
use std::fmt;
use std::io::Read as _;
use std::path::Path;
use std::str::FromStr;

use md5::Digest as _;

/// A hash format ASC MHL records, in the order the XSD requires inside a `<hash>` element.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum HashFormat {
    /// C4 id (SHA-512, base58, 90 characters starting `c4`).
    C4,
    /// MD5, hex.
    Md5,
    /// SHA-1, hex.
    Sha1,
    /// XXH3 128-bit, canonical hex.
    Xxh128,
    /// XXH3 64-bit, canonical hex.
    Xxh3,
    /// XXH64, canonical hex.
    Xxh64,
}

impl HashFormat {
    /// Every format, in the XSD's order.
    pub const ALL: [HashFormat; 6] = [
        HashFormat::C4,
        HashFormat::Md5,
        HashFormat::Sha1,
        HashFormat::Xxh128,
        HashFormat::Xxh3,
        HashFormat::Xxh64,
    ];

    /// The element name in an ASC MHL file.
    pub fn name(self) -> &'static str {
        match self {
            HashFormat::C4 => "c4",
            HashFormat::Md5 => "md5",
            HashFormat::Sha1 => "sha1",
            HashFormat::Xxh128 => "xxh128",
            HashFormat::Xxh3 => "xxh3",
            HashFormat::Xxh64 => "xxh64",
        }
    }
}

impl fmt::Display for HashFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for HashFormat {
    type Err = String;
    fn from_str(s: &str) -> Result<HashFormat, String> {
        HashFormat::ALL
            .into_iter()
            .find(|f| f.name() == s)
            .ok_or_else(|| {
                format!("'{s}' is not an ASC MHL hash format (c4, md5, sha1, xxh128, xxh3, xxh64)")
            })
    }
}

/// A file's hashes: format -> value as ASC MHL writes it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FileHashes(BTreeMap<HashFormat, String>);

impl FileHashes {
    /// Every value, in the XSD's format order.
    pub fn iter(&self) -> impl Iterator<Item = (HashFormat, &str)> {
        self.0.iter().map(|(f, v)| (*f, v.as_str()))
    }

    /// The value in `format`, when computed.
    pub fn get(&self, format: HashFormat) -> Option<&str> {
        self.0.get(&format).map(String::as_str)
    }
}

/// Bytes read at a time.
const CHUNK: usize = 1 << 20;

/// The hashes of the file at `path` in `formats`, reading it once, [`CHUNK`] bytes at a time.
/// Blocking.
pub fn file_hashes(path: &Path, formats: &[HashFormat]) -> std::io::Result<FileHashes> {
    let mut f = std::fs::File::open(path)?;
    let mut h = Hashers::new(formats);
    let mut buf = vec![0u8; CHUNK];
    loop {
        let n = match f.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        h.update(&buf[..n]);
    }
    Ok(h.finish())
}

/// The hashes of `data` in `formats`.
pub fn data_hashes(data: &[u8], formats: &[HashFormat]) -> FileHashes {
    let mut h = Hashers::new(formats);
    h.update(data);
    h.finish()
}

/// One running hasher per format asked (XXH3 64 and 128 share one state).
struct Hashers {
    md5: Option<md5::Md5>,
    sha1: Option<sha1::Sha1>,
    sha512: Option<sha2::Sha512>,
    xxh64: Option<xxhash_rust::xxh64::Xxh64>,
    xxh3: Option<Box<xxhash_rust::xxh3::Xxh3>>,
    formats: Vec<HashFormat>,
}

impl Hashers {
    fn new(formats: &[HashFormat]) -> Hashers {
        let has = |f: HashFormat| formats.contains(&f);
        Hashers {
            md5: has(HashFormat::Md5).then(md5::Md5::new),
            sha1: has(HashFormat::Sha1).then(sha1::Sha1::new),
            sha512: has(HashFormat::C4).then(sha2::Sha512::new),
            xxh64: has(HashFormat::Xxh64).then(|| xxhash_rust::xxh64::Xxh64::new(0)),
            xxh3: (has(HashFormat::Xxh3) || has(HashFormat::Xxh128))
                .then(|| Box::new(xxhash_rust::xxh3::Xxh3::new())),
            formats: formats.to_vec(),
        }
    }

    fn update(&mut self, data: &[u8]) {
        if let Some(h) = &mut self.md5 {
            h.update(data);
        }
        if let Some(h) = &mut self.sha1 {
            h.update(data);
        }
        if let Some(h) = &mut self.sha512 {
            h.update(data);
        }
        if let Some(h) = &mut self.xxh64 {
            h.update(data);
        }
        if let Some(h) = &mut self.xxh3 {
            h.update(data);
        }
    }

    fn finish(self) -> FileHashes {
        let mut out = BTreeMap::new();
        for f in self.formats {
            let v = match f {
                HashFormat::Md5 => crate::hash::hex(&self.md5.clone().expect("md5").finalize()),
                HashFormat::Sha1 => crate::hash::hex(&self.sha1.clone().expect("sha1").finalize()),
                HashFormat::C4 => c4_id(&self.sha512.clone().expect("sha512").finalize()),
                HashFormat::Xxh64 => {
                    format!("{:016x}", self.xxh64.as_ref().expect("xxh64").digest())
                }
                HashFormat::Xxh3 => format!("{:016x}", self.xxh3.as_ref().expect("xxh3").digest()),
                HashFormat::Xxh128 => {
                    format!("{:032x}", self.xxh3.as_ref().expect("xxh3").digest128())
                }
            };
            out.insert(f, v);
        }
        FileHashes(out)
    }
}

/// The C4 id of a SHA-512 digest: `c4` followed by the digest as a base58 number (alphabet
/// `1-9A-HJ-NP-Za-km-z`), left-padded with `1` (zero) to 88 digits: 90 characters in all.
pub fn c4_id(sha512: &[u8]) -> String {
    // bs58 writes each leading zero byte as a `1` and then the number: padding with `1` to 88
    // digits gives the same string as padding the bare number (88 digits hold any 512-bit value).
    let digits = bs58::encode(sha512).into_string();
    let digits = digits.trim_start_matches('1');
    format!("c4{digits:1>88}")
}

#[cfg(test)]
mod tests {
    use super::*;

    // Values from `ascmhl-debug hash -h FORMAT` (ascmhl 1.2, the ASC's reference implementation)
    // on a file holding the bytes named; see tests/integration/mhl.rs for the live cross-check.
    #[test]
    fn hello_world_in_every_format_matches_the_reference_tool() {
        let h = data_hashes(b"hello world", &HashFormat::ALL);
        assert_eq!(h.get(HashFormat::Xxh64), Some("45ab6734b21e6968"));
        assert_eq!(h.get(HashFormat::Xxh3), Some("d447b1ea40e6988b"));
        assert_eq!(
            h.get(HashFormat::Xxh128),
            Some("df8d09e93f874900a99b8775cc15b6c7")
        );
        assert_eq!(
            h.get(HashFormat::Md5),
            Some("5eb63bbbe01eeed093cb22bb8f5acdc3")
        );
        assert_eq!(
            h.get(HashFormat::Sha1),
            Some("2aae6c35c94fcfb415dbe95f408b9ce91ee846ed")
        );
        assert_eq!(h.get(HashFormat::C4), Some(C4_HELLO_WORLD));
    }

    /// `ascmhl-debug hash -h c4` of a file holding `hello world`.
    const C4_HELLO_WORLD: &str = "c41yP4cqy7jmaRDzC2bmcGNZkuQb3VdftMk6YH7ynQ2Qw4zktKsyA9fk52xghNQNAdkpF9iFmFkKh2bNVG4kDWhsok";

    #[test]
    fn c4_pads_small_numbers_with_ones_to_ninety_characters() {
        // Independent of bs58: the number 0 is 88 zeros ("1"), 57 is "z", 58 is "21".
        let mut d = [0u8; 64];
        assert_eq!(c4_id(&d), format!("c4{}", "1".repeat(88)));
        d[63] = 57;
        assert_eq!(c4_id(&d), format!("c4{}z", "1".repeat(87)));
        d[63] = 58;
        assert_eq!(c4_id(&d), format!("c4{}21", "1".repeat(86)));
        // The largest digest still fits 88 digits.
        assert_eq!(c4_id(&[0xff; 64]).len(), 90);
    }

    #[test]
    fn a_file_read_in_chunks_hashes_as_the_whole() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f");
        let data: Vec<u8> = (0..(CHUNK * 2 + 12345))
            .map(|i| (i * 7 % 251) as u8)
            .collect();
        std::fs::write(&p, &data).unwrap();
        let whole = data_hashes(&data, &HashFormat::ALL);
        assert_eq!(file_hashes(&p, &HashFormat::ALL).unwrap(), whole);
        // Single-shot functions of the crates, not the streaming states used above.
        assert_eq!(
            whole.get(HashFormat::Xxh64).unwrap(),
            format!("{:016x}", xxhash_rust::xxh64::xxh64(&data, 0))
        );
        assert_eq!(
            whole.get(HashFormat::Xxh128).unwrap(),
            format!("{:032x}", xxhash_rust::xxh3::xxh3_128(&data))
        );
    }
}
