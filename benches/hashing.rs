//! Hashing throughput per algorithm, on one core and on all cores.
//!
//! `cargo bench --bench hashing`. "part" is what an upload does per byte (the checksum and MD5 in
//! one pass); "checksum only" isolates the algorithm; "all cores" hashes 8 MiB parts on the rayon
//! pool as the upload pipeline does. Compare with `openssl speed -evp sha256` and `sha256sum`.

#![allow(missing_docs)] // criterion_group! generates undocumented items

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use rayon::prelude::*;
use tally::hash::{ChecksumAlgorithm, checksum, hash_part};

const ALGS: [ChecksumAlgorithm; 5] = [
    ChecksumAlgorithm::Sha256,
    ChecksumAlgorithm::Sha1,
    ChecksumAlgorithm::Crc32,
    ChecksumAlgorithm::Crc32c,
    ChecksumAlgorithm::Crc64nvme,
];

fn data(len: usize) -> Vec<u8> {
    let mut x = 0x9E37_79B9_7F4A_7C15u64;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

fn one_core(c: &mut Criterion) {
    let buf = data(16 << 20);
    let mut g = c.benchmark_group("one core");
    g.throughput(Throughput::Bytes(buf.len() as u64));
    g.sample_size(10);
    for alg in ALGS {
        g.bench_function(format!("part {alg}+MD5"), |b| {
            b.iter(|| hash_part(alg, true, &buf))
        });
        g.bench_function(format!("checksum only {alg}"), |b| {
            b.iter(|| checksum(alg, &buf))
        });
    }
    g.finish();
}

fn all_cores(c: &mut Criterion) {
    let buf = data(64 << 20);
    let mut g = c.benchmark_group(format!("all cores ({})", rayon::current_num_threads()));
    g.throughput(Throughput::Bytes(buf.len() as u64));
    g.sample_size(10);
    for alg in ALGS {
        g.bench_function(format!("part {alg}+MD5"), |b| {
            b.iter(|| {
                buf.par_chunks(8 << 20)
                    .map(|p| hash_part(alg, true, p))
                    .collect::<Vec<_>>()
            })
        });
    }
    g.finish();
}

criterion_group!(benches, one_core, all_cores);
criterion_main!(benches);
