//! Checksums: per-part digests computed in one pass, and what S3 derives from them.
//!
//! Each part is hashed once, in cache-sized chunks that feed the chosen checksum and MD5 while the
//! bytes are still in cache. From the per-part results this module derives what S3 will report:
//! the composite checksum (`base64(H(d1 || ... || dN))-N`), the full-object CRC (combined from the
//! per-part CRCs without touching the data again) and the multipart ETag.
//! Hashing is CPU work: callers run [`hash_part`] on the rayon pool, never on an async thread.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use crc_fast::CrcAlgorithm;
use md5::{Digest as _, Md5};
use serde::{Deserialize, Serialize};

/// Bytes hashed per step: small enough that a chunk read for the checksum is still in L2 for MD5.
const CHUNK: usize = 256 * 1024;

/// An additional checksum algorithm S3 can verify on receipt.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum ChecksumAlgorithm {
    /// SHA-256 (composite for multipart): also the SigV4 payload hash, so nothing is hashed twice.
    Sha256,
    /// SHA-1 (composite for multipart).
    Sha1,
    /// CRC-32/ISO-HDLC (composite for multipart).
    Crc32,
    /// CRC-32C/Castagnoli (composite for multipart).
    Crc32c,
    /// CRC-64/NVME (always full-object).
    Crc64nvme,
}

/// How S3 combines part checksums into the object's checksum.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ChecksumType {
    /// A checksum of the part checksums, suffixed `-N`.
    Composite,
    /// The checksum of the whole object, as if sent in one piece.
    FullObject,
}

impl std::str::FromStr for ChecksumAlgorithm {
    type Err = String;

    /// Parses a name in any case: `sha256`, `SHA256`, `crc64nvme`, ...
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        ChecksumAlgorithm::ALL
            .into_iter()
            .find(|a| a.s3_name().eq_ignore_ascii_case(s))
            .ok_or_else(|| {
                format!("unknown checksum algorithm '{s}': choose sha256, sha1, crc32, crc32c or crc64nvme")
            })
    }
}

impl ChecksumAlgorithm {
    /// Every algorithm, in the order `--help` lists them.
    pub const ALL: [ChecksumAlgorithm; 5] = [
        Self::Sha256,
        Self::Sha1,
        Self::Crc32,
        Self::Crc32c,
        Self::Crc64nvme,
    ];

    /// The name S3 uses (`SHA256`, `CRC64NVME`, ...).
    pub fn s3_name(self) -> &'static str {
        match self {
            Self::Sha256 => "SHA256",
            Self::Sha1 => "SHA1",
            Self::Crc32 => "CRC32",
            Self::Crc32c => "CRC32C",
            Self::Crc64nvme => "CRC64NVME",
        }
    }

    /// The checksum type tally uses for a multipart upload with this algorithm: S3's default,
    /// which for CRC64NVME is the only one allowed.
    pub fn multipart_type(self) -> ChecksumType {
        match self {
            Self::Crc64nvme => ChecksumType::FullObject,
            _ => ChecksumType::Composite,
        }
    }

    fn crc(self) -> Option<CrcAlgorithm> {
        match self {
            Self::Crc32 => Some(CrcAlgorithm::Crc32IsoHdlc),
            Self::Crc32c => Some(CrcAlgorithm::Crc32Iscsi),
            Self::Crc64nvme => Some(CrcAlgorithm::Crc64Nvme),
            Self::Sha256 | Self::Sha1 => None,
        }
    }

    /// Length of the raw digest in bytes.
    pub fn digest_len(self) -> usize {
        match self {
            Self::Sha256 => 32,
            Self::Sha1 => 20,
            Self::Crc32 | Self::Crc32c => 4,
            Self::Crc64nvme => 8,
        }
    }
}

impl std::fmt::Display for ChecksumType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            ChecksumType::Composite => "COMPOSITE",
            ChecksumType::FullObject => "FULL_OBJECT",
        })
    }
}

impl std::fmt::Display for ChecksumAlgorithm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.s3_name())
    }
}

/// A raw digest (big-endian for CRCs, as S3 encodes them).
#[derive(Clone, PartialEq, Eq)]
pub struct Digest(Vec<u8>);

impl Digest {
    /// A digest from its raw bytes.
    pub fn from_bytes(bytes: Vec<u8>) -> Digest {
        Digest(bytes)
    }

    /// The raw bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    /// Base64, the form S3 headers and replies use.
    pub fn base64(&self) -> String {
        B64.encode(&self.0)
    }

    /// Lower-case hex.
    pub fn hex(&self) -> String {
        hex(&self.0)
    }

    fn crc_value(&self) -> u64 {
        self.0.iter().fold(0, |acc, b| (acc << 8) | u64::from(*b))
    }
}

impl std::fmt::Debug for Digest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.base64())
    }
}

/// Lower-case hex of `bytes`.
pub fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    bytes
        .iter()
        .fold(String::with_capacity(bytes.len() * 2), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        })
}

/// What one pass over a part's bytes yields.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartHash {
    /// The additional checksum of the part.
    pub checksum: Digest,
    /// MD5 of the part, when computed: its Content-MD5 and, without SSE-KMS/SSE-C, its ETag.
    pub md5: Option<[u8; 16]>,
    /// Length of the part in bytes (needed to combine CRCs).
    pub len: u64,
}

impl PartHash {
    /// The part's MD5 as base64, for Content-MD5.
    pub fn content_md5(&self) -> Option<String> {
        self.md5.map(|m| B64.encode(m))
    }

    /// The part's MD5 as hex: the ETag S3 gives it when it stores the bytes as sent.
    pub fn md5_hex(&self) -> Option<String> {
        self.md5.map(|m| hex(&m))
    }
}

enum Hasher {
    Sha256(sha2::Sha256),
    Sha1(sha1::Sha1),
    Crc(crc_fast::Digest, usize),
}

impl Hasher {
    fn new(alg: ChecksumAlgorithm) -> Self {
        match (alg, alg.crc()) {
            (_, Some(crc)) => Hasher::Crc(crc_fast::Digest::new(crc), alg.digest_len()),
            (ChecksumAlgorithm::Sha1, None) => Hasher::Sha1(sha1::Sha1::new()),
            (_, None) => Hasher::Sha256(sha2::Sha256::new()),
        }
    }

    fn update(&mut self, data: &[u8]) {
        match self {
            Hasher::Sha256(h) => h.update(data),
            Hasher::Sha1(h) => h.update(data),
            Hasher::Crc(h, _) => h.update(data),
        }
    }

    fn finish(self) -> Digest {
        match self {
            Hasher::Sha256(h) => Digest(h.finalize().to_vec()),
            Hasher::Sha1(h) => Digest(h.finalize().to_vec()),
            Hasher::Crc(h, width) => Digest(h.finalize().to_be_bytes()[8 - width..].to_vec()),
        }
    }
}

/// Hashes one part in a single pass: its checksum with `alg`, and its MD5 if `md5`.
///
/// CPU-bound (SHA-256 ~0.55 s per GiB on one core here; MD5 adds ~1.4 s): call it from the rayon
/// pool.
pub fn hash_part(alg: ChecksumAlgorithm, md5: bool, data: &[u8]) -> PartHash {
    let h = hash_range(Some(alg), md5, data);
    PartHash {
        checksum: h.checksum.expect("asked for"),
        md5: h.md5,
        len: h.len,
    }
}

/// Like [`hash_part`] with the MD5, but the checksum and the MD5 on two threads of the rayon pool:
/// for a single large body (one PutObject), where there are no other parts to run beside it.
pub fn hash_part_joined(alg: ChecksumAlgorithm, data: &[u8]) -> PartHash {
    let (checksum, md5) = rayon::join(|| checksum(alg, data), || md5(data));
    PartHash {
        checksum,
        md5: Some(md5),
        len: data.len() as u64,
    }
}

/// What [`hash_range`] computed: a checksum and/or an MD5.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RangeHash {
    /// The checksum, if asked for.
    pub checksum: Option<Digest>,
    /// The MD5, if asked for.
    pub md5: Option<[u8; 16]>,
    /// Length in bytes.
    pub len: u64,
}

/// Hashes `data` in one pass with the checksum `alg` (if any) and MD5 (if `md5`).
///
/// CPU-bound: call it from the rayon pool.
pub fn hash_range(alg: Option<ChecksumAlgorithm>, md5: bool, data: &[u8]) -> RangeHash {
    let mut h = RangeHasher::new(alg, md5);
    h.update(data);
    h.finish()
}

/// [`hash_range`] fed piece by piece, for bytes that arrive in pieces (a download's body): the
/// same one pass, the same result as hashing the concatenation at once.
pub struct RangeHasher {
    checksum: Option<Hasher>,
    md5: Option<Md5>,
    len: u64,
}

impl std::fmt::Debug for RangeHasher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RangeHasher")
            .field("len", &self.len)
            .finish()
    }
}

impl RangeHasher {
    /// A hasher for the checksum `alg` (if any) and MD5 (if `md5`).
    pub fn new(alg: Option<ChecksumAlgorithm>, md5: bool) -> RangeHasher {
        RangeHasher {
            checksum: alg.map(Hasher::new),
            md5: md5.then(Md5::new),
            len: 0,
        }
    }

    /// Feeds the next bytes (CPU-bound: call it off the async threads).
    pub fn update(&mut self, data: &[u8]) {
        for chunk in data.chunks(CHUNK) {
            if let Some(h) = &mut self.checksum {
                h.update(chunk);
            }
            if let Some(h) = &mut self.md5 {
                h.update(chunk);
            }
        }
        self.len += data.len() as u64;
    }

    /// The digests of every byte fed.
    pub fn finish(self) -> RangeHash {
        RangeHash {
            checksum: self.checksum.map(Hasher::finish),
            md5: self.md5.map(|h| h.finalize().into()),
            len: self.len,
        }
    }
}

/// The MD5 of a whole body.
pub fn md5(data: &[u8]) -> [u8; 16] {
    Md5::digest(data).into()
}

/// The one MD5 worker: a hasher on a thread of its own, fed bytes in order through a bounded queue,
/// so async threads only move bytes. Used for the whole file during an upload (`--md5-tag`,
/// `--read-back`) and for an object read back from S3 (`tally md5`).
///
/// The queue holds at most `depth` messages, so the producer can run only that far ahead of the
/// hasher: an upload's bytes are hashed while still in the page cache, never read from disk twice.
/// [`SequentialMd5::snapshot`] returns the hasher's state after every byte fed so far (the queue
/// is in order), for saving and resuming later ([`SequentialMd5::resume`]).
#[derive(Debug)]
pub struct SequentialMd5 {
    tx: tokio::sync::mpsc::Sender<Md5Msg>,
    worker: std::thread::JoinHandle<Md5>,
}

#[derive(Debug)]
enum Md5Msg {
    Data(bytes::Bytes),
    Snapshot(tokio::sync::oneshot::Sender<Md5>),
}

impl SequentialMd5 {
    /// Starts the hasher thread with a queue of `depth` messages.
    pub fn start(depth: usize) -> SequentialMd5 {
        SequentialMd5::resume(Md5::new(), depth)
    }

    /// Starts the hasher thread from `hasher`, a state that already holds some bytes.
    pub fn resume(hasher: Md5, depth: usize) -> SequentialMd5 {
        let (tx, mut rx) = tokio::sync::mpsc::channel::<Md5Msg>(depth.max(1));
        let worker = std::thread::spawn(move || {
            let mut h = hasher;
            while let Some(msg) = rx.blocking_recv() {
                match msg {
                    Md5Msg::Data(b) => {
                        for chunk in b.chunks(CHUNK) {
                            h.update(chunk);
                        }
                    }
                    Md5Msg::Snapshot(reply) => {
                        let _ = reply.send(h.clone());
                    }
                }
            }
            h
        });
        SequentialMd5 { tx, worker }
    }

    /// Queues the next bytes (in order); waits while the queue is full.
    pub async fn feed(&self, bytes: bytes::Bytes) {
        // The worker only stops when the sender is dropped (or if it panicked, which `finish`
        // reports), so a failed send loses nothing that could still be hashed.
        let _ = self.tx.send(Md5Msg::Data(bytes)).await;
    }

    /// The hasher's state after every byte fed so far; `None` if the worker is gone (a bug).
    pub async fn snapshot(&self) -> Option<Md5> {
        let (reply, state) = tokio::sync::oneshot::channel();
        self.tx.send(Md5Msg::Snapshot(reply)).await.ok()?;
        state.await.ok()
    }

    /// Waits for the hasher to finish and returns the MD5 (call from a blocking context).
    pub fn finish(self) -> [u8; 16] {
        drop(self.tx);
        self.worker
            .join()
            .expect("the MD5 thread does not panic")
            .finalize()
            .into()
    }
}

/// The checksum of a whole body with `alg` (no MD5).
pub fn checksum(alg: ChecksumAlgorithm, data: &[u8]) -> Digest {
    let mut h = Hasher::new(alg);
    h.update(data);
    h.finish()
}

/// An object checksum as S3 reports it: the base64 value, with `-N` for a composite.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ObjectChecksum {
    /// The algorithm.
    pub algorithm: ChecksumAlgorithm,
    /// Composite or full-object.
    #[serde(rename = "type")]
    pub kind: ChecksumType,
    /// The value as S3 prints it in headers (`...-N` for composite multipart checksums).
    pub value: String,
}

/// The object checksum S3 computes for a multipart upload whose parts hashed to `parts` (in
/// part-number order) with checksum type `kind`.
///
/// Panics if `kind` is [`ChecksumType::FullObject`] for a non-CRC algorithm (S3 refuses that
/// combination, and the configuration never builds it).
pub fn multipart_checksum(
    alg: ChecksumAlgorithm,
    kind: ChecksumType,
    parts: &[PartHash],
) -> ObjectChecksum {
    let value = match kind {
        ChecksumType::Composite => {
            let digests: Vec<&Digest> = parts.iter().map(|p| &p.checksum).collect();
            composite(alg, &digests)
        }
        ChecksumType::FullObject => full_object_crc(alg, parts).base64(),
    };
    ObjectChecksum {
        algorithm: alg,
        kind,
        value,
    }
}

/// Combines per-part CRCs into the CRC of the whole object, without reading the data again.
pub fn full_object_crc(alg: ChecksumAlgorithm, parts: &[PartHash]) -> Digest {
    let pairs: Vec<(&Digest, u64)> = parts.iter().map(|p| (&p.checksum, p.len)).collect();
    combine_crcs(alg, &pairs)
}

/// Combines `(crc, length)` pairs, in order, into the CRC of their concatenation.
pub fn combine_crcs(alg: ChecksumAlgorithm, parts: &[(&Digest, u64)]) -> Digest {
    let crc = alg.crc().expect("full-object checksums are CRCs");
    let mut iter = parts.iter();
    let Some((first, _)) = iter.next() else {
        return checksum(alg, &[]);
    };
    let combined = iter.fold(first.crc_value(), |acc, (d, len)| {
        crc_fast::checksum_combine(crc, acc, d.crc_value(), *len)
    });
    Digest(combined.to_be_bytes()[8 - alg.digest_len()..].to_vec())
}

/// The composite checksum of parts with these digests: `base64(H(d1 || ... || dN))-N`.
pub fn composite(alg: ChecksumAlgorithm, digests: &[&Digest]) -> String {
    let mut h = Hasher::new(alg);
    for d in digests {
        h.update(d.as_bytes());
    }
    format!("{}-{}", h.finish().base64(), digests.len())
}

/// Whether an algorithm can be combined into a full-object checksum (the CRCs).
pub fn is_crc(alg: ChecksumAlgorithm) -> bool {
    alg.crc().is_some()
}

/// The ETag S3 gives a multipart object whose parts have these MD5s: `hex(MD5(md5_1..md5_N))-N`
/// (unquoted); None unless every part's MD5 was computed.
pub fn multipart_etag(parts: &[PartHash]) -> Option<String> {
    let md5s: Option<Vec<[u8; 16]>> = parts.iter().map(|p| p.md5).collect();
    md5s.map(|m| etag_of_md5s(&m))
}

/// The unquoted ETag of an object whose parts have these MD5s: the MD5 itself for one part sent
/// with PutObject is not this; this is the multipart form `hex(MD5(md5_1..md5_N))-N`.
pub fn etag_of_md5s(md5s: &[[u8; 16]]) -> String {
    let mut h = Md5::new();
    for m in md5s {
        h.update(m);
    }
    format!("{}-{}", hex(&h.finalize()), md5s.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parts(data: &[u8], size: usize, alg: ChecksumAlgorithm) -> Vec<PartHash> {
        data.chunks(size).map(|c| hash_part(alg, true, c)).collect()
    }

    #[test]
    fn known_vectors() {
        // "123456789" check values from the CRC catalogue; SHA/MD5 from the standard test vectors.
        let d = b"123456789";
        let cases = [
            (ChecksumAlgorithm::Crc32, "cbf43926"),
            (ChecksumAlgorithm::Crc32c, "e3069283"),
            (ChecksumAlgorithm::Crc64nvme, "ae8b14860a799888"),
        ];
        for (alg, want) in cases {
            assert_eq!(checksum(alg, d).hex(), want, "{alg}");
        }
        assert_eq!(
            hash_part(ChecksumAlgorithm::Sha256, true, b"abc")
                .checksum
                .hex(),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_eq!(
            hash_part(ChecksumAlgorithm::Sha1, true, b"abc")
                .checksum
                .hex(),
            "a9993e364706816aba3e25717850c26c9cd0d89d"
        );
        assert_eq!(
            hex(&hash_part(ChecksumAlgorithm::Sha1, true, b"abc")
                .md5
                .unwrap()),
            "900150983cd24fb0d6963f7d28e17f72"
        );
        // Empty SHA-256 in base64, as S3 prints it for an empty object.
        assert_eq!(
            checksum(ChecksumAlgorithm::Sha256, b"").base64(),
            "47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU="
        );
    }

    #[test]
    fn chunked_hash_equals_one_shot_hash() {
        let data: Vec<u8> = (0..3 * CHUNK + 17).map(|i| (i * 31 % 251) as u8).collect();
        for alg in [
            ChecksumAlgorithm::Sha256,
            ChecksumAlgorithm::Sha1,
            ChecksumAlgorithm::Crc32,
            ChecksumAlgorithm::Crc32c,
            ChecksumAlgorithm::Crc64nvme,
        ] {
            let p = hash_part(alg, true, &data);
            assert_eq!(p.checksum, checksum(alg, &data), "{alg}");
            assert_eq!(hash_part_joined(alg, &data), p, "{alg}");
            assert_eq!(p.len, data.len() as u64);
        }
    }

    #[test]
    fn combined_crc_equals_crc_of_whole() {
        let data: Vec<u8> = (0..1_000_003u32)
            .map(|i| (i.wrapping_mul(2654435761) >> 24) as u8)
            .collect();
        for alg in [
            ChecksumAlgorithm::Crc32,
            ChecksumAlgorithm::Crc32c,
            ChecksumAlgorithm::Crc64nvme,
        ] {
            for size in [1000, 65_536, 333_333, 1_000_003] {
                let got = full_object_crc(alg, &parts(&data, size, alg));
                assert_eq!(got, checksum(alg, &data), "{alg} parts of {size}");
            }
        }
    }

    #[test]
    fn composite_is_sha256_of_the_raw_part_digests_in_order() {
        // The part checksums of AWS's published 4-part reply (S3-FACTS.md; AWS does not publish
        // that object's composite). The expected value is computed with the sha2 crate directly,
        // not with this module's hasher, from the base64-decoded digests in part order.
        let part_b64 = [
            "Y17ezXQs3T0uBd1IfCd5+b0Z3S44Gfx5IuCN431af7I=",
            "IO5OIm9O4H4UKCMYKqZ3g3sK1GK713lABEmOU991MC8=",
            "yWHu1DARkVxDJ6fJyuD9DmdNIamLjAKE26jM8cRUVQM=",
            "XxUYpRqbSiFjDrXJTrDdzJBmTNYblVqWQ6xkB5LGLlM=",
        ];
        let hashes: Vec<PartHash> = part_b64
            .iter()
            .map(|b| PartHash {
                checksum: Digest(B64.decode(b).unwrap()),
                md5: None,
                len: 0,
            })
            .collect();
        let mut independent = sha2::Sha256::new();
        for b in part_b64 {
            independent.update(B64.decode(b).unwrap());
        }
        let want = format!("{}-4", B64.encode(independent.finalize()));
        let got = multipart_checksum(ChecksumAlgorithm::Sha256, ChecksumType::Composite, &hashes);
        assert_eq!(got.value, want);
        assert_ne!(got.value, format!("{}-4", part_b64[0]));
        // Order matters: the same digests reversed give another composite.
        let mut reversed = hashes.clone();
        reversed.reverse();
        let other = multipart_checksum(
            ChecksumAlgorithm::Sha256,
            ChecksumType::Composite,
            &reversed,
        );
        assert_ne!(other.value, want);
    }

    #[test]
    fn multipart_etag_is_md5_of_part_md5s() {
        let data = vec![7u8; 10_000];
        let ps = parts(&data, 4096, ChecksumAlgorithm::Crc32c);
        let mut concat = Vec::new();
        for p in &ps {
            concat.extend_from_slice(&p.md5.unwrap());
        }
        let want = format!("{}-3", hex(&Md5::digest(&concat)));
        assert_eq!(multipart_etag(&ps), Some(want.clone()));
        // Distinct parts give a distinct ETag.
        let mut other = data.clone();
        other[5000] ^= 1;
        assert_ne!(
            multipart_etag(&parts(&other, 4096, ChecksumAlgorithm::Crc32c)),
            Some(want)
        );
    }

    #[tokio::test]
    async fn the_md5_worker_snapshots_and_resumes_to_the_md5_of_everything_fed() {
        // RFC 1321's test vector for "abc...z", split across feeds and a snapshot.
        let text = b"abcdefghijklmnopqrstuvwxyz";
        let w = SequentialMd5::start(2);
        w.feed(bytes::Bytes::from_static(&text[..10])).await;
        w.feed(bytes::Bytes::from_static(&text[10..20])).await;
        let state = w.snapshot().await.expect("the worker runs");
        w.feed(bytes::Bytes::from_static(&text[20..])).await;
        let whole = tokio::task::spawn_blocking(move || w.finish())
            .await
            .unwrap();
        assert_eq!(hex(&whole), "c3fcd3d76192e4007dfb496cca67e13b");
        let resumed = SequentialMd5::resume(state, 1);
        resumed.feed(bytes::Bytes::from_static(&text[20..])).await;
        let again = tokio::task::spawn_blocking(move || resumed.finish())
            .await
            .unwrap();
        assert_eq!(
            again, whole,
            "a snapshot holds exactly the bytes fed before it"
        );
    }
}
