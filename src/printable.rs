//! Text from outside (keys, file names, servers' messages) made safe for one line of a terminal:
//! every control character (a newline, a carriage return, ESC, `\x01`...) is written escaped
//! (`\n`, `\u{1b}`), so a key can neither split a report line nor send escape sequences to the
//! terminal.

use std::borrow::Cow;

/// `s` with its control characters escaped (borrowed when it has none).
pub(crate) fn one_line(s: &str) -> Cow<'_, str> {
    if !s.chars().any(char::is_control) {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        if c.is_control() {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    Cow::Owned(out)
}

/// `s3://BUCKET/KEY` for one line of a report.
pub(crate) fn url(bucket: &str, key: &str) -> String {
    one_line(&format!("s3://{bucket}/{key}")).into_owned()
}

/// A local path for one line of a report.
pub(crate) fn path(p: &std::path::Path) -> String {
    one_line(&p.display().to_string()).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_characters_are_escaped_and_the_rest_kept() {
        assert_eq!(one_line("plain ünï/k.mov"), "plain ünï/k.mov");
        assert_eq!(one_line("a\nb"), "a\\nb");
        assert_eq!(one_line("\u{1b}[31mred"), "\\u{1b}[31mred");
        assert_eq!(one_line("k\u{1}"), "k\\u{1}");
        assert_eq!(one_line("tab\there\r"), "tab\\there\\r");
        assert_eq!(one_line("\u{9b}csi"), "\\u{9b}csi");
    }
}
