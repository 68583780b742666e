//! A small streaming reader over quick-xml for the two ASC MHL file kinds: it hands each element's
//! start (with its attributes) and end (with its text, entities resolved) to a callback, together
//! with the path of local names from the root. Memory: one element's text and the open elements.

use std::fs::File;
use std::io::BufReader;
use std::path::Path;

use quick_xml::events::{BytesStart, Event};

use super::MhlError;

/// What the callback sees.
pub(crate) enum Ev<'a> {
    /// An element started, with its attributes (local names, unescaped values).
    Start(&'a [(String, String)]),
    /// An element ended, with the text directly inside it (byte for byte: not trimmed).
    End(&'a str),
}

/// Reads the XML file at `path`, calling `f(path of local names, event)` for every element.
/// `f` returns `Err(why)` to stop with a [`MhlError::Malformed`] naming the file.
pub(crate) fn walk(
    path: &Path,
    mut f: impl FnMut(&[String], Ev<'_>) -> Result<(), String>,
) -> Result<(), MhlError> {
    let malformed = |why: String| MhlError::Malformed {
        path: path.to_owned(),
        why,
    };
    let file = File::open(path).map_err(|e| MhlError::Unreadable {
        path: path.to_owned(),
        why: e.to_string(),
    })?;
    let mut r = quick_xml::Reader::from_reader(BufReader::new(file));
    let mut buf = Vec::new();
    let mut stack: Vec<String> = Vec::new();
    let mut text = String::new();
    loop {
        let ev = r
            .read_event_into(&mut buf)
            .map_err(|e| malformed(e.to_string()))?;
        match ev {
            Event::Start(e) => {
                let attrs = attributes(&e).map_err(malformed)?;
                stack.push(local(e.local_name().as_ref()));
                text.clear();
                f(&stack, Ev::Start(&attrs)).map_err(malformed)?;
            }
            Event::Empty(e) => {
                let attrs = attributes(&e).map_err(malformed)?;
                stack.push(local(e.local_name().as_ref()));
                f(&stack, Ev::Start(&attrs)).map_err(malformed)?;
                f(&stack, Ev::End("")).map_err(malformed)?;
                stack.pop();
                text.clear();
            }
            Event::End(_) => {
                f(&stack, Ev::End(&text)).map_err(malformed)?;
                stack.pop();
                text.clear();
            }
            Event::Text(t) => text.push_str(&t.decode().map_err(|e| malformed(e.to_string()))?),
            Event::CData(t) => text.push_str(&t.decode().map_err(|e| malformed(e.to_string()))?),
            Event::GeneralRef(g) => {
                if let Some(c) = g.resolve_char_ref().map_err(|e| malformed(e.to_string()))? {
                    text.push(c);
                } else {
                    let name = g.decode().map_err(|e| malformed(e.to_string()))?;
                    let c = match name.as_ref() {
                        "amp" => '&',
                        "lt" => '<',
                        "gt" => '>',
                        "quot" => '"',
                        "apos" => '\'',
                        other => return Err(malformed(format!("unknown entity &{other};"))),
                    };
                    text.push(c);
                }
            }
            Event::Eof => break,
            _ => {}
        }
        buf.clear();
    }
    if !stack.is_empty() {
        return Err(malformed(format!("<{}> is never closed", stack.join("/"))));
    }
    Ok(())
}

fn local(name: &[u8]) -> String {
    String::from_utf8_lossy(name).into_owned()
}

fn attributes(e: &BytesStart<'_>) -> Result<Vec<(String, String)>, String> {
    e.attributes()
        .map(|a| {
            let a = a.map_err(|e| e.to_string())?;
            let v = a.unescape_value().map_err(|e| e.to_string())?;
            Ok((local(a.key.local_name().as_ref()), v.into_owned()))
        })
        .collect()
}

/// The value of attribute `name` in `attrs`.
pub(crate) fn attr<'a>(attrs: &'a [(String, String)], name: &str) -> Option<&'a str> {
    attrs
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

/// Whether `stack` ends with `tail`.
pub(crate) fn ends_with(stack: &[String], tail: &[&str]) -> bool {
    stack.len() >= tail.len()
        && stack[stack.len() - tail.len()..]
            .iter()
            .zip(tail)
            .all(|(a, b)| a == b)
}
