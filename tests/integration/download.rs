//! `tally download` against Garage and LocalStack: byte-exact files for objects uploaded by tally
//! and by the AWS CLI, the report saying what each was checked against; bytes flipped on the way
//! (through the proxy) fetched again or named; kill -9 and resume; an object replaced mid-way;
//! bad destinations.

use std::path::{Path, PathBuf};

use crate::proxy::{Fault, Force, Op, Plan, Proxy};
use crate::support::*;

fn download_args<'a>(url: &'a str, dest: &'a Path, extra: &[&'a str]) -> Vec<&'a str> {
    let mut v = vec!["download", url, dest.to_str().unwrap(), "--json"];
    v.extend_from_slice(extra);
    v
}

/// The kinds of proof in a `--json` report.
fn kinds(r: &serde_json::Value) -> Vec<String> {
    r["checked"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["kind"].as_str().unwrap().to_owned())
        .collect()
}

/// Files in `dir`, sorted.
fn listing(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

/// Downloads `key` into a fresh folder; asserts the file is `src` byte for byte and nothing else
/// is left beside it; returns the report.
fn fetch_exact(s: &Server, key: &str, src: &Path) -> serde_json::Value {
    let dir = s.temp_dir();
    let dest = dir.path().join("got");
    let url = s.url(key);
    let r = json_report(&s.tally(download_args(&url, &dest, &[])));
    assert_eq!(
        file_sha256(&dest),
        file_sha256(src),
        "{key}: the download is the file"
    );
    assert_eq!(listing(dir.path()), vec!["got"], "{key}: nothing else left");
    r
}

#[test]
fn objects_from_tally_and_the_aws_cli_download_byte_exact_saying_what_was_checked() {
    for (name, s) in servers() {
        let dir = s.temp_dir();
        let big = random_file(dir.path(), "big.bin", 2 * 8 * MIB + 12345, 301);
        let small = random_file(dir.path(), "small.bin", 100_000, 302);
        let empty = random_file(dir.path(), "empty.bin", 0, 303);
        let base = unique(&format!("dl/{name}"));

        // tally, SHA-256 per part.
        let key = format!("{base}/tally");
        s.put(&big, &key, "5MiB");
        let r = fetch_exact(s, &key, &big);
        let want: &[&str] = if name == "localstack" {
            &["part_checksums", "composite_checksum"]
        } else {
            // Garage has no GetObjectAttributes and sends no part checksum with a GET.
            &["composite_checksum"]
        };
        assert_eq!(kinds(&r), want, "{name} tally");
        assert_eq!(r["parts"], 4, "{name}");
        assert_eq!(r["verified"], true);
        let text = r["checked"][0]["text"].as_str().unwrap();
        if name == "localstack" {
            assert_eq!(text, "each of 4 parts against S3's SHA256 part checksums");
        }

        // The AWS CLI, default settings (8 MiB parts).
        let key = format!("{base}/cli");
        s.aws(["s3", "cp", "--quiet", big.to_str().unwrap(), &s.url(&key)]);
        let r = fetch_exact(s, &key, &big);
        assert_eq!(r["parts"], 3, "{name}: the CLI's 8 MiB parts are the ranges");
        // This CLI (1.45) sends CRC32 part checksums by default; CRC32 is weak alone, so the
        // multipart ETag from the parts' MD5s is compared too.
        let want: &[&str] = if name == "localstack" {
            &["part_checksums", "composite_checksum", "multipart_etag"]
        } else {
            &["composite_checksum", "multipart_etag"]
        };
        assert_eq!(kinds(&r), want, "{name} cli");
        assert_eq!(r["checked"][0]["algorithm"], "CRC32");

        // The AWS CLI without any checksum (as older CLIs upload): only the ETag can prove it.
        let key = format!("{base}/cli-none");
        let out = s.aws_output_env(
            &[("AWS_REQUEST_CHECKSUM_CALCULATION", "when_required")],
            ["s3", "cp", "--quiet", big.to_str().unwrap(), &s.url(&key)],
        );
        assert!(out.status.success(), "{}", stderr(&out));
        let r = fetch_exact(s, &key, &big);
        if name == "localstack" {
            // As AWS does, LocalStack gives such an object a CRC64NVME full-object checksum.
            assert_eq!(kinds(&r), ["full_object_crc"], "{name} cli, no checksum");
            assert_eq!(r["checked"][0]["algorithm"], "CRC64NVME");
        } else {
            assert_eq!(kinds(&r), ["multipart_etag"], "{name} cli, no checksum");
            assert_eq!(
                r["checked"][0]["text"],
                "the multipart ETag, from the 3 parts' MD5s"
            );
        }

        // The AWS CLI with SHA-256.
        let key = format!("{base}/cli-sha256");
        s.aws([
            "s3",
            "cp",
            "--quiet",
            "--checksum-algorithm",
            "SHA256",
            big.to_str().unwrap(),
            &s.url(&key),
        ]);
        let r = fetch_exact(s, &key, &big);
        let want: &[&str] = if name == "localstack" {
            &["part_checksums", "composite_checksum"]
        } else {
            &["composite_checksum"]
        };
        assert_eq!(kinds(&r), want, "{name} cli sha256");
        assert_eq!(r["checked"][0]["algorithm"], "SHA256");

        // A single PUT, and an empty object.
        let key = format!("{base}/single");
        s.put(&small, &key, "5MiB");
        let r = fetch_exact(s, &key, &small);
        assert_eq!(kinds(&r), ["object_checksum"], "{name} single");
        let key = format!("{base}/empty");
        s.put(&empty, &key, "5MiB");
        let r = fetch_exact(s, &key, &empty);
        assert_eq!(kinds(&r), ["object_checksum"], "{name} empty");
        assert_eq!(r["size"], 0);
    }
}
