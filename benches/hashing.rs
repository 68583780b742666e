//! Hashing throughput per algorithm, on one core and on all cores.
//!
//! `cargo bench --bench hashing`. "part" is what an upload does per byte (the checksum and MD5 in
//! one pass); "checksum only" isolates the algorithm; "all cores" hashes 8 MiB parts on the rayon
//! pool as the upload pipeline does. Compare with `openssl speed -evp sha256` and `sha256sum`.
//! "from memory" is what an upload pays per byte of a file in the page cache: SHA-256 over bytes
//! that are not in any cache, then a copy of the same bytes (the kernel's copy into the socket,
//! here a copy into a 1 MiB buffer), either after the whole 100 MiB part (as an upload with the
//! checksum in a header must) or a MiB at a time right after each is hashed (as a send with the
//! checksum in an aws-chunked trailer could). Each slice hashed alone loses the prefetch of its
//! first two 64 KiB steps: in 256 KiB slices that cost more than the copy saved. The last two rows
//! do the same with the kernel's copy: into a loopback TCP socket.

#![allow(missing_docs)] // criterion_group! generates undocumented items

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use rayon::prelude::*;
use tally::hash::{RangeHasher, checksum, hash_part};
use tally::vocab::ChecksumAlgorithm;

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

fn from_memory(c: &mut Criterion) {
    // 1 GiB: ten 100 MiB parts, far more than the caches hold.
    let buf = data(1 << 30);
    let mut ring = vec![0u8; 1 << 20];
    let mut g = c.benchmark_group("from memory");
    g.throughput(Throughput::Bytes(buf.len() as u64));
    g.sample_size(10);
    g.sampling_mode(criterion::SamplingMode::Flat);
    let sha = Some(ChecksumAlgorithm::Sha256);
    g.bench_function("SHA-256 only", |b| {
        b.iter(|| {
            for part in buf.chunks(100 << 20) {
                let mut h = RangeHasher::new(sha, false);
                h.update(part);
                std::hint::black_box(h.finish());
            }
        })
    });
    g.bench_function("SHA-256 of a part, then its copy", |b| {
        b.iter(|| {
            for part in buf.chunks(100 << 20) {
                let mut h = RangeHasher::new(sha, false);
                h.update(part);
                std::hint::black_box(h.finish());
                for chunk in part.chunks(ring.len()) {
                    ring[..chunk.len()].copy_from_slice(chunk);
                }
                std::hint::black_box(&ring);
            }
        })
    });
    g.bench_function("SHA-256 and copy, 1 MiB at a time", |b| {
        b.iter(|| {
            for part in buf.chunks(100 << 20) {
                let mut h = RangeHasher::new(sha, false);
                for chunk in part.chunks(ring.len()) {
                    h.update(chunk);
                    ring[..chunk.len()].copy_from_slice(chunk);
                }
                std::hint::black_box(h.finish());
                std::hint::black_box(&ring);
            }
        })
    });
    // The same, with the copy the kernel's: each byte written to a loopback TCP socket whose
    // other end a thread reads and drops (wall time, as every row: that thread runs beside it).
    let (mut tx, sink) = loopback();
    use std::io::Write as _;
    g.bench_function("SHA-256 of a part, then it into a socket", |b| {
        b.iter(|| {
            for part in buf.chunks(100 << 20) {
                let mut h = RangeHasher::new(sha, false);
                h.update(part);
                std::hint::black_box(h.finish());
                tx.write_all(part).unwrap();
            }
        })
    });
    g.bench_function("SHA-256 and into a socket, 1 MiB at a time", |b| {
        b.iter(|| {
            for part in buf.chunks(100 << 20) {
                let mut h = RangeHasher::new(sha, false);
                for chunk in part.chunks(1 << 20) {
                    h.update(chunk);
                    tx.write_all(chunk).unwrap();
                }
                std::hint::black_box(h.finish());
            }
        })
    });
    drop(tx);
    sink.join().unwrap();
    g.finish();
}

/// A connected loopback socket, and the thread that reads and drops what is written to it until
/// the socket is closed.
fn loopback() -> (std::net::TcpStream, std::thread::JoinHandle<()>) {
    use std::io::Read as _;
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let tx = std::net::TcpStream::connect(l.local_addr().unwrap()).unwrap();
    let (mut rx, _) = l.accept().unwrap();
    let sink = std::thread::spawn(move || {
        let mut b = vec![0u8; 1 << 20];
        while rx.read(&mut b).map(|n| n > 0).unwrap_or(false) {}
    });
    (tx, sink)
}

criterion_group!(benches, one_core, all_cores, from_memory);
criterion_main!(benches);
