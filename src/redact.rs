//! Keeps credentials out of everything tally prints: logs (`-v`, `RUST_LOG`), errors and reports.
//!
//! The SDK already redacts secret keys, session tokens and the Authorization header; its debug and
//! trace events still name the access key id. tally passes every line it prints through
//! [`redact`], which removes anything shaped like an AWS access key id (also a rotated one it never
//! saw) or a Garage key id, and the exact credential values found in the environment.

use std::io::Write;

/// The four-letter prefixes of AWS access key ids (IAM users, STS sessions, roles, ...).
const AWS_KEY_PREFIXES: [&str; 10] = [
    "AKIA", "ASIA", "AROA", "AIDA", "AGPA", "ANPA", "ANVA", "AIPA", "ABIA", "ACCA",
];

/// Replaces credentials in `text` with `[redacted]`.
pub(crate) fn redact(text: &str) -> String {
    let mut out = text.to_owned();
    for var in [
        "AWS_SECRET_ACCESS_KEY",
        "AWS_SESSION_TOKEN",
        "AWS_ACCESS_KEY_ID",
    ] {
        if let Ok(v) = std::env::var(var)
            && v.len() >= 8
        {
            out = out.replace(&v, "[redacted]");
        }
    }
    redact_shapes(&out)
}

fn redact_shapes(text: &str) -> String {
    let b = text.as_bytes();
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    let boundary = |j: usize| j == 0 || !b[j - 1].is_ascii_alphanumeric();
    while i < b.len() {
        let upper_run = |from: usize, n: usize| {
            b.len() >= from + n
                && b[from..from + n]
                    .iter()
                    .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit())
        };
        let hex_run = |from: usize, n: usize| {
            b.len() >= from + n && b[from..from + n].iter().all(u8::is_ascii_hexdigit)
        };
        let aws = boundary(i)
            && AWS_KEY_PREFIXES
                .iter()
                .any(|p| b[i..].starts_with(p.as_bytes()))
            && upper_run(i + 4, 16);
        let garage = boundary(i) && b[i..].starts_with(b"GK") && hex_run(i + 2, 24);
        if aws || garage {
            out.push_str("[redacted]");
            i += if aws { 20 } else { 26 };
            continue;
        }
        let ch = text[i..].chars().next().expect("in bounds");
        out.push(ch);
        i += ch.len_utf8();
    }
    out
}

/// A log writer that redacts each write before it reaches standard error.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct RedactingStderr;

impl Write for RedactingStderr {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let text = String::from_utf8_lossy(buf);
        std::io::stderr().write_all(redact(&text).as_bytes())?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        std::io::stderr().flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_shapes_are_redacted() {
        let cases = [
            ("id AKIAIOSFODNN7EXAMPLE here", "id [redacted] here"),
            (
                "Credential=ASIAY34FZKBOKMUTVV7A/2026",
                "Credential=[redacted]/2026",
            ),
            (
                "access_key_id: \"GKef124caeddc99e7410c1ab67\"",
                "access_key_id: \"[redacted]\"",
            ),
            (
                "XAKIAIOSFODNN7EXAMPLE stays (not a boundary)",
                "XAKIAIOSFODNN7EXAMPLE stays (not a boundary)",
            ),
            ("AKIA too short", "AKIA too short"),
            ("unicode é AKIAIOSFODNN7EXAMPLE", "unicode é [redacted]"),
        ];
        for (input, want) in cases {
            assert_eq!(redact_shapes(input), want, "{input}");
        }
    }
}
