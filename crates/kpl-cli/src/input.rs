//! Records from input: text lines, JSON lines with fields for key, hash key and data, or
//! length-prefixed binary; read as a stream (never a whole file at once), each with where it
//! came from, so a bad one can be named by file and line.

use std::fmt;
use std::io::{BufRead, BufReader, Read};
use std::path::PathBuf;
use std::sync::Arc;

use bytes::Bytes;
use rand::{Rng, SeedableRng};

use kpl::time::Clock;

use crate::cli::InputFormat;

/// Where an input record came from: the file (or stdin) and its line (its record number in
/// binary input).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Location {
    pub(crate) source: Arc<str>,
    pub(crate) line: u64,
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.source, self.line)
    }
}

/// A record's parts, as read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Parsed {
    pub(crate) partition_key: String,
    pub(crate) explicit_hash_key: Option<String>,
    pub(crate) data: Bytes,
}

/// What is wrong with an input record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct BadInput {
    pub(crate) location: Location,
    /// The input could not be read here (not one bad record: the rest of the input is
    /// unknown), so reading stops even with `--skip-bad`.
    pub(crate) unreadable: bool,
    /// The field it concerns, if one.
    pub(crate) field: Option<String>,
    pub(crate) problem: String,
}

impl fmt::Display for BadInput {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.field {
            Some(field) => write!(f, "{}: field {field}: {}", self.location, self.problem),
            None => write!(f, "{}: {}", self.location, self.problem),
        }
    }
}

/// One record of input: where it came from, its bytes as read (what `--failed-out` writes
/// back), and its parts or what is wrong with it.
#[derive(Debug)]
pub(crate) struct InputRecord {
    pub(crate) location: Location,
    pub(crate) raw: Bytes,
    pub(crate) parsed: Result<Parsed, BadInput>,
}

/// What makes records of the input.
#[derive(Clone, Debug)]
pub(crate) struct RecordShape {
    pub(crate) format: InputFormat,
    pub(crate) key: Option<String>,
    pub(crate) key_field: Option<String>,
    pub(crate) hash_key_field: Option<String>,
    pub(crate) data_field: Option<String>,
}

impl RecordShape {
    /// The flags that need JSON input name it.
    pub(crate) fn check(&self) -> Result<(), String> {
        let json_only = [
            ("--key-field", &self.key_field),
            ("--hash-key-field", &self.hash_key_field),
            ("--data-field", &self.data_field),
        ];
        for (flag, value) in json_only {
            if value.is_some() && self.format != InputFormat::Json {
                return Err(format!("{flag} needs --input-format json"));
            }
        }
        Ok(())
    }
}

/// Reads `files` (stdin for none or `-`) one record at a time, in order, calling `each` with
/// every record until it returns `false`. A file that cannot be opened or read on (an I/O
/// error, a cut or oversized binary frame, a line above the largest record) is reported as
/// unreadable at its line 0 (or where the read failed) and ends the reading.
pub(crate) fn read_all(
    files: &[PathBuf],
    shape: &RecordShape,
    mut each: impl FnMut(InputRecord) -> bool,
) {
    // Random keys spread records over the shards; they need no secrecy, only to differ
    // between runs.
    let seed = kpl::TokioClock
        .system_time()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |since| since.as_nanos() as u64);
    let mut keys = rand::rngs::SmallRng::seed_from_u64(seed ^ u64::from(std::process::id()));
    let sources: Vec<Option<&PathBuf>> = if files.is_empty() {
        vec![None]
    } else {
        files
            .iter()
            .map(|file| (file.as_os_str() != "-").then_some(file))
            .collect()
    };
    for file in sources {
        let source: Arc<str> = match file {
            Some(path) => path.display().to_string().into(),
            None => "stdin".into(),
        };
        let reader: Box<dyn Read> = match file {
            Some(path) => match std::fs::File::open(path) {
                Ok(file) => Box::new(file),
                Err(error) => {
                    each(unreadable(&source, 0, &error));
                    return;
                }
            },
            None => Box::new(std::io::stdin().lock()),
        };
        let mut reader = BufReader::with_capacity(256 * 1024, reader);
        let mut line = 0u64;
        loop {
            line += 1;
            let raw = match shape.format {
                InputFormat::Text | InputFormat::Json => next_line(&mut reader),
                InputFormat::Binary => next_frame(&mut reader),
            };
            let raw = match raw {
                Ok(Some(raw)) => raw,
                Ok(None) => break,
                Err(error) => {
                    each(unreadable(&source, line, &error));
                    return;
                }
            };
            let location = Location {
                source: Arc::clone(&source),
                line,
            };
            let parsed = parse(&raw, &location, shape, &mut keys);
            if !each(InputRecord {
                location,
                raw,
                parsed,
            }) {
                return;
            }
        }
    }
}

fn unreadable(source: &Arc<str>, line: u64, error: &std::io::Error) -> InputRecord {
    let location = Location {
        source: Arc::clone(source),
        line,
    };
    InputRecord {
        parsed: Err(BadInput {
            location: location.clone(),
            unreadable: true,
            field: None,
            problem: format!("cannot read: {error}"),
        }),
        location,
        raw: Bytes::new(),
    }
}

/// The next line without its line ending, or `None` at the end. A line longer than the largest
/// record is an error, not a buffer to grow without end (a file without line breaks).
fn next_line(reader: &mut impl BufRead) -> std::io::Result<Option<Bytes>> {
    let mut line = Vec::new();
    let limit = u64::from(MAX_FRAME) + 2;
    if reader.by_ref().take(limit).read_until(b'\n', &mut line)? == 0 {
        return Ok(None);
    }
    if line.len() as u64 == limit && line.last() != Some(&b'\n') {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("a line longer than {MAX_FRAME} bytes: not line-delimited input?"),
        ));
    }
    if line.last() == Some(&b'\n') {
        line.pop();
        if line.last() == Some(&b'\r') {
            line.pop();
        }
    }
    Ok(Some(Bytes::from(line)))
}

/// The largest frame read: Kinesis takes no record above 10 MiB (and by default 1 MiB), so a
/// larger length is a framing error, not a record to allocate.
const MAX_FRAME: u32 = 10 * 1024 * 1024;

/// The next length-prefixed record, or `None` at a clean end.
fn next_frame(reader: &mut impl BufRead) -> std::io::Result<Option<Bytes>> {
    let mut length = [0u8; 4];
    let mut filled = 0;
    while filled < length.len() {
        let read = reader.read(&mut length[filled..])?;
        if read == 0 {
            return if filled == 0 {
                Ok(None)
            } else {
                Err(std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    "the input ends inside a record's 4-byte length",
                ))
            };
        }
        filled += read;
    }
    let length = u32::from_be_bytes(length);
    if length > MAX_FRAME {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!(
                "a record's length {length} is above {MAX_FRAME} bytes: not length-prefixed input?"
            ),
        ));
    }
    let mut data = vec![0; length as usize];
    reader.read_exact(&mut data).map_err(|error| {
        std::io::Error::new(
            error.kind(),
            format!("the input ends inside a record of {length} bytes"),
        )
    })?;
    Ok(Some(Bytes::from(data)))
}

fn parse(
    raw: &Bytes,
    location: &Location,
    shape: &RecordShape,
    keys: &mut impl Rng,
) -> Result<Parsed, BadInput> {
    let bad = |field: Option<&str>, problem: String| BadInput {
        location: location.clone(),
        unreadable: false,
        field: field.map(str::to_owned),
        problem,
    };
    let random_key = |keys: &mut dyn rand::RngCore| format!("{:016x}", keys.next_u64());
    if shape.format != InputFormat::Json {
        return Ok(Parsed {
            partition_key: shape.key.clone().unwrap_or_else(|| random_key(keys)),
            explicit_hash_key: None,
            data: raw.clone(),
        });
    }
    let value: serde_json::Value = serde_json::from_slice(raw)
        .map_err(|error| bad(None, format!("malformed JSON: {error}")))?;
    let text_of = |path: &str| -> Result<String, BadInput> {
        match field(&value, path) {
            None => Err(bad(Some(path), "missing".to_owned())),
            Some(serde_json::Value::String(text)) => Ok(text.clone()),
            Some(serde_json::Value::Number(number)) => Ok(number.to_string()),
            Some(serde_json::Value::Bool(flag)) => Ok(flag.to_string()),
            Some(other) => Err(bad(
                Some(path),
                format!("must be a string or a number, not {}", kind(other)),
            )),
        }
    };
    let partition_key = match (&shape.key_field, &shape.key) {
        (Some(path), _) => text_of(path)?,
        (None, Some(key)) => key.clone(),
        (None, None) => random_key(keys),
    };
    let explicit_hash_key = shape.hash_key_field.as_deref().map(text_of).transpose()?;
    let data = match &shape.data_field {
        None => raw.clone(),
        Some(path) => match field(&value, path) {
            None => return Err(bad(Some(path), "missing".to_owned())),
            Some(serde_json::Value::String(text)) => Bytes::from(text.clone().into_bytes()),
            Some(other) => Bytes::from(other.to_string().into_bytes()),
        },
    };
    Ok(Parsed {
        partition_key,
        explicit_hash_key,
        data,
    })
}

/// The value at a dotted path (`customer.id`); an array is indexed by number (`items.0`).
fn field<'a>(value: &'a serde_json::Value, path: &str) -> Option<&'a serde_json::Value> {
    path.split('.').try_fold(value, |value, step| match value {
        serde_json::Value::Object(map) => map.get(step),
        serde_json::Value::Array(items) => step.parse::<usize>().ok().and_then(|i| items.get(i)),
        _ => None,
    })
}

fn kind(value: &serde_json::Value) -> &'static str {
    match value {
        serde_json::Value::Null => "null",
        serde_json::Value::Bool(_) => "a boolean",
        serde_json::Value::Number(_) => "a number",
        serde_json::Value::String(_) => "a string",
        serde_json::Value::Array(_) => "an array",
        serde_json::Value::Object(_) => "an object",
    }
}

/// `data` framed as binary input takes it: a 4-byte big-endian length, then the bytes.
pub(crate) fn frame(data: &[u8]) -> Vec<u8> {
    let mut framed = Vec::with_capacity(4 + data.len());
    framed.extend_from_slice(&(data.len() as u32).to_be_bytes());
    framed.extend_from_slice(data);
    framed
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "tests")]

    use super::*;

    fn shape(format: InputFormat) -> RecordShape {
        RecordShape {
            format,
            key: None,
            key_field: None,
            hash_key_field: None,
            data_field: None,
        }
    }

    fn parse_one(raw: &str, shape: &RecordShape) -> Result<Parsed, BadInput> {
        let location = Location {
            source: "in.jsonl".into(),
            line: 7,
        };
        parse(
            &Bytes::from(raw.to_owned()),
            &location,
            shape,
            &mut rand::rngs::SmallRng::seed_from_u64(1),
        )
    }

    #[test]
    fn json_fields_are_found_by_dotted_paths() {
        let mut json = shape(InputFormat::Json);
        json.key_field = Some("customer.id".into());
        json.hash_key_field = Some("route.0".into());
        json.data_field = Some("payload".into());
        let parsed = parse_one(
            r#"{"customer": {"id": 42}, "route": ["170141183460469231731687303715884105728"], "payload": {"a": 1}}"#,
            &json,
        )
        .unwrap();
        assert_eq!(parsed.partition_key, "42");
        assert_eq!(
            parsed.explicit_hash_key.as_deref(),
            Some("170141183460469231731687303715884105728")
        );
        assert_eq!(parsed.data, Bytes::from_static(br#"{"a":1}"#));
        json.data_field = Some("customer.id".into());
        json.key = None;
        let text = parse_one(r#"{"customer": {"id": "x y"}}"#, &{
            let mut s = json.clone();
            s.hash_key_field = None;
            s.data_field = Some("customer.id".into());
            s
        })
        .unwrap();
        assert_eq!(
            text.data,
            Bytes::from_static(b"x y"),
            "a string as its text"
        );
    }

    #[test]
    fn bad_lines_name_the_place_and_the_field() {
        let mut json = shape(InputFormat::Json);
        json.key_field = Some("user".into());
        let error = parse_one(r#"{"name": "x"}"#, &json).unwrap_err();
        assert_eq!(error.to_string(), "in.jsonl:7: field user: missing");
        let error = parse_one(r#"{"user": [1]}"#, &json).unwrap_err();
        assert!(
            error
                .to_string()
                .ends_with("must be a string or a number, not an array")
        );
        let error = parse_one("{not json", &json).unwrap_err();
        assert!(
            error.to_string().starts_with("in.jsonl:7: malformed JSON"),
            "{error}"
        );
    }

    #[test]
    fn binary_frames_are_read_one_by_one_and_a_cut_frame_is_an_error() {
        let mut input = frame(b"one");
        input.extend(frame(b""));
        input.extend(frame(&[0xff; 3]));
        let mut reader = std::io::Cursor::new(input.clone());
        let mut frames = Vec::new();
        while let Some(frame) = next_frame(&mut reader).unwrap() {
            frames.push(frame);
        }
        assert_eq!(frames, [&b"one"[..], b"", &[0xff; 3]]);
        let mut cut = std::io::Cursor::new(input[..input.len() - 1].to_vec());
        let errors: Vec<_> = std::iter::from_fn(|| match next_frame(&mut cut) {
            Ok(Some(_)) => Some(None),
            Ok(None) => None,
            Err(error) => Some(Some(error.to_string())),
        })
        .flatten()
        .collect();
        assert_eq!(errors, ["the input ends inside a record of 3 bytes"]);
    }

    #[test]
    fn text_lines_lose_their_line_endings_only() {
        let mut reader = std::io::Cursor::new(b"a\r\nb c\n\nlast".to_vec());
        let lines: Vec<Bytes> = std::iter::from_fn(|| next_line(&mut reader).unwrap()).collect();
        assert_eq!(lines, [&b"a"[..], b"b c", b"", b"last"]);
    }

    #[test]
    fn flags_for_json_fields_need_json_input() {
        let mut text = shape(InputFormat::Text);
        text.key_field = Some("k".into());
        assert_eq!(
            text.check().unwrap_err(),
            "--key-field needs --input-format json"
        );
    }
}
