//! The pure part of verify: local hashes (cut with S3's part layout) against what S3 reports.

use std::ops::Range;

use serde::Serialize;

use crate::compare::{self, Check, Compared};
use crate::hash::{self, RangeHash};
use crate::remote::facts::RemoteFacts;
use crate::vocab::{ChecksumAlgorithm, ChecksumType, Digest};

use super::VerifyOptions;

/// A part whose bytes differ.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PartDiff {
    /// Part number.
    pub number: u32,
    /// Its byte range in the object.
    pub range: Range<u64>,
    /// The local value (a checksum, or the first differing byte's offset when downloaded).
    pub local: String,
    /// The remote value.
    pub remote: String,
}

/// Everything [`compare`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Comparison {
    /// The object checksum (composite or full-object), when S3 has one and it can be derived
    /// from the local hashes.
    pub checksum: Option<Compared>,
    /// The ETag, when it was compared.
    pub etag: Option<Compared>,
    /// The ETag's outcome: why it was not compared, when it was not (`Mismatch` without values:
    /// the sizes differ).
    pub etag_check: Check,
    /// Every part whose checksum differs.
    pub differing_parts: Vec<PartDiff>,
    /// Parts whose checksums were compared one by one.
    pub parts_compared: u32,
}

impl Comparison {
    /// Whether anything compared differs.
    pub fn differs(&self) -> bool {
        self.checksum.as_ref().is_some_and(|c| !c.matches)
            || self.etag.as_ref().is_some_and(|c| !c.matches)
            || !self.differing_parts.is_empty()
    }

    /// Why the ETag was not compared, in the report's words; `None` when it was.
    pub fn etag_note(&self) -> Option<String> {
        if self.etag.is_some() {
            return None;
        }
        Some(
            match self.etag_check {
                Check::NotReported => "S3 returned no ETag",
                Check::NotComparableKms => "not an MD5 under SSE-KMS, not compared",
                Check::NotComparableSseC => "not an MD5 under SSE-C, not compared",
                Check::NotPredicted => {
                    "not compared: the checksum decides (--etag compares it too)"
                }
                Check::Mismatch | Check::Matched => "sizes differ",
            }
            .to_owned(),
        )
    }
}

/// Which local hashes the comparison needs: the checksum algorithm S3 has, and whether an MD5.
pub(crate) fn local_needs(
    remote: &RemoteFacts,
    opts: &VerifyOptions,
) -> (Option<ChecksumAlgorithm>, bool) {
    let alg = remote.checksum.as_ref().map(|c| c.algorithm);
    // A 32-bit CRC is a weak witness on its own: add the MD5 where the ETag can be compared.
    let weak = matches!(
        alg,
        None | Some(ChecksumAlgorithm::Crc32 | ChecksumAlgorithm::Crc32c)
    );
    (
        alg,
        remote.etag_kind.is_md5() && remote.etag.is_some() && (weak || opts.etag),
    )
}

/// Compares local hashes (cut with `remote.layout`) with what S3 reports. Pure.
pub(crate) fn compare(local_size: u64, local: &[RangeHash], remote: &RemoteFacts) -> Comparison {
    let ranges = remote.ranges();
    let mut differing_parts = Vec::new();
    let mut parts_compared = 0;
    if remote.part_checksums.len() == local.len() {
        for (i, (l, r)) in local.iter().zip(&remote.part_checksums).enumerate() {
            let (Some(l), Some(r)) = (&l.checksum, r) else {
                continue;
            };
            parts_compared += 1;
            let l = l.base64();
            if compare::checksum(&l, Some(r)) != Check::Matched {
                differing_parts.push(PartDiff {
                    number: i as u32 + 1,
                    range: ranges[i].clone(),
                    local: l,
                    remote: r.clone(),
                });
            }
        }
    }
    let same_size = local_size == remote.size;
    let checksum = remote.checksum.as_ref().and_then(|rc| {
        let digests: Vec<&Digest> = local.iter().filter_map(|h| h.checksum.as_ref()).collect();
        if digests.len() != local.len() || !same_size {
            return None;
        }
        let full = rc.kind == Some(ChecksumType::FullObject)
            || (rc.kind.is_none() && rc.algorithm == ChecksumAlgorithm::Crc64nvme);
        let value = if !remote.multipart {
            // One PutObject: the checksum of the whole body.
            digests.first()?.base64()
        } else if full && hash::is_crc(rc.algorithm) {
            let pairs: Vec<(&Digest, u64)> = digests
                .iter()
                .copied()
                .zip(remote.layout.iter().copied())
                .collect();
            hash::combine_crcs(rc.algorithm, &pairs).base64()
        } else if full {
            return None;
        } else {
            hash::composite(rc.algorithm, &digests)
        };
        Some(Compared::checksum(&value, rc.value.clone()))
    });
    let local_etag = local
        .iter()
        .map(|h| h.md5)
        .collect::<Option<Vec<[u8; 16]>>>()
        .and_then(|m| match m.as_slice() {
            [one] if !remote.multipart => Some(crate::vocab::hex(one)),
            [] => None,
            _ if !remote.multipart => None,
            all => Some(hash::etag_of_md5s(all)),
        });
    let (etag, etag_check) = if same_size {
        let check = compare::etag(
            local_etag.as_deref(),
            remote.etag.as_ref().map(crate::vocab::ETag::as_str),
            remote.etag_kind,
        );
        let values = match (check, local_etag, &remote.etag) {
            (Check::Matched | Check::Mismatch, Some(l), Some(r)) => {
                Some(Compared::new(l, r.to_string()))
            }
            _ => None,
        };
        (values, check)
    } else {
        (None, Check::Mismatch)
    };
    Comparison {
        checksum,
        etag,
        etag_check,
        differing_parts,
        parts_compared,
    }
}

#[cfg(test)]
mod tests {
    use base64::Engine as _;
    use base64::engine::general_purpose::STANDARD as B64;
    use md5::Md5;
    use sha2::{Digest as _, Sha256};

    use super::*;
    use crate::s3::RemoteChecksum;
    use crate::vocab::EtagKind;

    fn local(
        data: &[u8],
        sizes: &[u64],
        alg: Option<ChecksumAlgorithm>,
        md5: bool,
    ) -> Vec<RangeHash> {
        let mut at = 0usize;
        sizes
            .iter()
            .map(|s| {
                let h = hash::hash_range(alg, md5, &data[at..at + *s as usize]);
                at += *s as usize;
                h
            })
            .collect()
    }

    fn cut<'a>(data: &'a [u8], sizes: &[u64]) -> Vec<&'a [u8]> {
        let mut at = 0usize;
        sizes
            .iter()
            .map(|s| {
                let p = &data[at..at + *s as usize];
                at += *s as usize;
                p
            })
            .collect()
    }

    #[test]
    fn the_published_aws_reply_names_the_part_that_differs() {
        // The GetObjectAttributes reply AWS publishes (S3-FACTS.md): 4 parts with SHA-256.
        let remote_parts = [
            "Y17ezXQs3T0uBd1IfCd5+b0Z3S44Gfx5IuCN431af7I=",
            "IO5OIm9O4H4UKCMYKqZ3g3sK1GK713lABEmOU991MC8=",
            "yWHu1DARkVxDJ6fJyuD9DmdNIamLjAKE26jM8cRUVQM=",
            "XxUYpRqbSiFjDrXJTrDdzJBmTNYblVqWQ6xkB5LGLlM=",
        ];
        let sizes = [16777216u64, 16777216, 16777216, 5000192];
        // Local hashes equal to parts 1, 2 and 4, and a different part 3.
        let mut local: Vec<RangeHash> = remote_parts
            .iter()
            .zip(sizes)
            .map(|(c, len)| RangeHash {
                checksum: Some(Digest::from_bytes(B64.decode(c).unwrap())),
                md5: None,
                len,
            })
            .collect();
        local[2].checksum = Some(hash::checksum(ChecksumAlgorithm::Sha256, b"other"));
        let remote = RemoteFacts {
            size: sizes.iter().sum(),
            etag: Some("7931c2b8a6c796c7abb378bb546467cb-4".into()),
            checksum: None,
            layout: sizes.to_vec(),
            multipart: true,
            part_checksums: remote_parts.iter().map(|s| Some(s.to_string())).collect(),
            ..RemoteFacts::default()
        };
        let c = compare(remote.size, &local, &remote);
        assert_eq!(c.parts_compared, 4);
        assert_eq!(c.differing_parts.len(), 1);
        assert_eq!(c.differing_parts[0].number, 3);
        assert_eq!(c.differing_parts[0].range, 33554432..50331648);
        assert!(c.etag.is_none(), "no MD5 computed: the checksums decide");
        assert_eq!(c.etag_check, Check::NotPredicted);
        assert!(c.differs());
    }

    /// The expected composite, ETag and CRC are computed here from the sha2 and md-5 crates and
    /// the published CRC-64/NVME check value, not with the functions under test.
    #[test]
    fn composite_full_object_and_etag_from_a_layout() {
        let data: Vec<u8> = (0..25_000u32).map(|i| (i % 253) as u8).collect();
        let sizes = [10_000u64, 10_000, 5_000];
        let parts = cut(&data, &sizes);
        // SHA-256 composite: base64(SHA256(sha(p1) || sha(p2) || sha(p3)))-3.
        let mut joined = Vec::new();
        for p in &parts {
            joined.extend_from_slice(&Sha256::digest(p));
        }
        let sha_composite = format!("{}-3", B64.encode(Sha256::digest(&joined)));
        // ETag: hex(MD5(md5(p1) || md5(p2) || md5(p3)))-3.
        let mut md5s = Vec::new();
        for p in &parts {
            md5s.extend_from_slice(&Md5::digest(p));
        }
        let hex: String = Md5::digest(&md5s)
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        let etag = format!("{hex}-3");
        // CRC-32C composite: base64(crc32c(be(c1) || be(c2) || be(c3)))-3.
        let crcs: Vec<u8> = parts.iter().flat_map(|p| crc32c(p).to_be_bytes()).collect();
        let crc_composite = format!("{}-3", B64.encode(crc32c(&crcs).to_be_bytes()));
        let cases = [
            (
                ChecksumAlgorithm::Sha256,
                ChecksumType::Composite,
                sha_composite,
            ),
            (
                ChecksumAlgorithm::Crc32c,
                ChecksumType::Composite,
                crc_composite,
            ),
            (
                ChecksumAlgorithm::Crc64nvme,
                ChecksumType::FullObject,
                B64.encode(crc64nvme(&data).to_be_bytes()),
            ),
        ];
        for (alg, kind, want) in cases {
            let l = local(&data, &sizes, Some(alg), true);
            let mut remote = RemoteFacts {
                size: data.len() as u64,
                etag: Some(etag.as_str().into()),
                etag_kind: EtagKind::Md5,
                checksum: Some(RemoteChecksum {
                    algorithm: alg,
                    kind: Some(kind),
                    value: want.clone(),
                }),
                layout: sizes.to_vec(),
                multipart: true,
                ..RemoteFacts::default()
            };
            let c = compare(data.len() as u64, &l, &remote);
            assert!(c.checksum.as_ref().unwrap().matches, "{alg}: {c:?}");
            assert!(c.etag.as_ref().unwrap().matches, "{alg}: {c:?}");
            assert_eq!(c.etag_check, Check::Matched);
            assert!(c.differing_parts.is_empty() && !c.differs());
            // GetObjectAttributes' form of a composite, without "-N", matches too.
            if kind == ChecksumType::Composite {
                remote.checksum.as_mut().unwrap().value =
                    want.split('-').next().unwrap().to_owned();
                assert!(
                    compare(data.len() as u64, &l, &remote)
                        .checksum
                        .unwrap()
                        .matches
                );
            }
            // One changed byte changes both.
            let mut other = data.clone();
            other[12_345] ^= 1;
            let l2 = local(&other, &sizes, Some(alg), true);
            let c = compare(data.len() as u64, &l2, &remote);
            assert!(
                !c.checksum.unwrap().matches && !c.etag.unwrap().matches,
                "{alg}"
            );
            assert_eq!(c.etag_check, Check::Mismatch);
        }
    }

    /// A reflected CRC bit by bit (init and xorout all ones), `poly` given reflected: CRC-64/NVME
    /// with 0x9A6C9329AC4BC9B5 (0xAD93D23594C93659 reflected), CRC-32C with 0x82F63B78. Checked
    /// against the catalogue's check values for "123456789" below.
    fn crc_reflected(data: &[u8], poly: u64, width: u32) -> u64 {
        let ones = u64::MAX >> (64 - width);
        let mut crc = ones;
        for &b in data {
            crc ^= u64::from(b);
            for _ in 0..8 {
                crc = if crc & 1 == 1 {
                    (crc >> 1) ^ poly
                } else {
                    crc >> 1
                };
            }
        }
        crc ^ ones
    }

    fn crc64nvme(data: &[u8]) -> u64 {
        crc_reflected(data, 0x9A6C_9329_AC4B_C9B5, 64)
    }

    fn crc32c(data: &[u8]) -> u32 {
        crc_reflected(data, 0x82F6_3B78, 32) as u32
    }

    #[test]
    fn the_reference_crcs_have_the_published_check_values() {
        assert_eq!(crc64nvme(b"123456789"), 0xAE8B_1486_0A79_9888);
        assert_eq!(crc32c(b"123456789"), 0xE306_9283);
    }

    #[test]
    fn a_kms_etag_is_never_compared() {
        let data = b"single part object";
        let l = local(data, &[data.len() as u64], None, true);
        let remote = RemoteFacts {
            size: data.len() as u64,
            etag: Some(
                crate::vocab::hex(&<[u8; 16]>::from(Md5::digest(data)))
                    .as_str()
                    .into(),
            ),
            etag_kind: EtagKind::Kms,
            layout: vec![data.len() as u64],
            ..RemoteFacts::default()
        };
        let c = compare(data.len() as u64, &l, &remote);
        assert!(c.checksum.is_none());
        assert!(
            c.etag.is_none(),
            "not compared even though it equals the MD5"
        );
        assert!(c.etag_note().unwrap().contains("SSE-KMS"));
        assert_eq!(
            local_needs(&remote, &VerifyOptions::default()),
            (None, false)
        );
    }
}
