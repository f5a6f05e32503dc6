//! JSON as users hand it to us (closures, `--config`, `--perms`, plans, `.attrs.json`): parsed
//! with errors that say where (file, line, column and JSON path) and what, in one wording.

use std::path::Path;

use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::error::{Error, ErrorKind, Result, shown};

/// The most a user's JSON file (a config, perms, a previous plan) may hold.
pub const MAX_JSON_INPUT: u64 = 16 << 20;
/// The most a closure file (or an `.attrs.json` holding one) may hold unless raised: a
/// closure of 100,000 paths takes about 60 MB as JSON.
pub const DEFAULT_MAX_CLOSURE: u64 = 512 << 20;

/// Reads a file whole, up to `limit` bytes: a larger or endless one (`/dev/zero`) is an error
/// before memory runs out. Pipes and process substitutions work.
pub fn read_limited(path: &Path, limit: u64) -> Result<Vec<u8>> {
    use std::io::Read;
    let file = std::fs::File::open(path).map_err(|e| Error::io("reading", path, e))?;
    let mut bytes = Vec::new();
    file.take(limit + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| Error::io("reading", path, e))?;
    if bytes.len() as u64 > limit {
        return Err(Error::input(
            shown(&path.to_string_lossy()),
            format!("it holds more than {limit} bytes, the limit for this input"),
        ));
    }
    Ok(bytes)
}

/// Reads a user's JSON file whole, up to [`MAX_JSON_INPUT`].
pub fn read_bytes(path: &Path) -> Result<Vec<u8>> {
    read_limited(path, MAX_JSON_INPUT)
}

/// Parses JSON text into a tree; a syntax error names the file, line and column.
pub fn parse_value(file: &str, bytes: &[u8]) -> Result<Value> {
    serde_json::from_slice(bytes).map_err(|e| syntax_error(file, &e))
}

/// Reads a JSON file straight into `T`; an error names the file, the line and column, and the
/// JSON path of the value at fault (`$[0].mode`), with serde's wording put in ours.
pub fn read_typed<T: DeserializeOwned>(path: &Path) -> Result<T> {
    read_typed_limited(path, MAX_JSON_INPUT)
}

/// [`read_typed`] for a file that may hold up to `limit` bytes.
pub fn read_typed_limited<T: DeserializeOwned>(path: &Path, limit: u64) -> Result<T> {
    parse_typed(&path.display().to_string(), &read_limited(path, limit)?)
}

/// [`read_typed`] on bytes already read.
pub fn parse_typed<T: DeserializeOwned>(file: &str, bytes: &[u8]) -> Result<T> {
    let mut deserializer = serde_json::Deserializer::from_slice(bytes);
    let value = serde_path_to_error::deserialize(&mut deserializer).map_err(|e| {
        let path = json_path(&e.path().to_string());
        let inner = e.into_inner();
        if inner.is_syntax() || inner.is_eof() || inner.is_io() {
            return syntax_error(file, &inner);
        }
        let message = describe(without_position(&inner.to_string()));
        // An unknown key's path ends in the key itself, which the message names already.
        let path = match path.rsplit_once('.') {
            Some((parent, _)) if message.starts_with("unknown key") => parent.to_string(),
            _ => path,
        };
        // serde_json counts columns from 1, but says 0 for an error before the first byte.
        let at = format!("{}:{}:{}", shown(file), inner.line(), inner.column().max(1));
        let at = if path == "$" {
            at
        } else {
            format!("{at}: {path}")
        };
        Error::input(at, message)
    })?;
    deserializer.end().map_err(|e| syntax_error(file, &e))?;
    Ok(value)
}

fn syntax_error(file: &str, e: &serde_json::Error) -> Error {
    Error::new(ErrorKind::Json {
        file: file.to_string(),
        line: e.line(),
        column: e.column(),
        message: without_position(&e.to_string()).to_string(),
    })
}

/// serde_path_to_error writes `[0].mode` and `.` for the root; messages use `$[0].mode`.
fn json_path(path: &str) -> String {
    match path {
        "." | "" => "$".to_string(),
        p if p.starts_with('[') => format!("${p}"),
        p => format!("$.{p}"),
    }
}

/// serde_json appends " at line L column C"; messages here put the position first.
pub fn without_position(message: &str) -> &str {
    message.split(" at line ").next().unwrap_or(message)
}

/// serde's standard phrases in the words our messages use: "unknown key \"x\"; the keys are:
/// a, b" and "expected …, found a string". Custom messages pass through unchanged.
fn describe(message: &str) -> String {
    if let Some(rest) = message.strip_prefix("unknown field `") {
        if let Some((field, expected)) = rest.split_once("`, expected ") {
            let keys: Vec<&str> = expected
                .trim_start_matches("one of ")
                .split(", ")
                .flat_map(|k| k.split(" or "))
                .map(|k| k.trim_matches('`'))
                .collect();
            return format!(
                "unknown key {}; the keys are: {}",
                quote(field),
                keys.join(", ")
            );
        }
    }
    if let Some(rest) = message.strip_prefix("invalid type: ") {
        if let Some((found, expected)) = rest.split_once(", expected ") {
            return format!(
                "expected {}, found {}",
                expected_kind(expected),
                found_kind(found)
            );
        }
    }
    if let Some(rest) = message.strip_prefix("invalid value: ") {
        if let Some((found, expected)) = rest.split_once(", expected ") {
            let found = found.split('`').nth(1).unwrap_or(found);
            return format!("expected {}, found {found}", expected_kind(expected));
        }
    }
    if let Some(field) = message
        .strip_prefix("missing field `")
        .and_then(|r| r.strip_suffix('`'))
    {
        return format!("missing {}", quote(field));
    }
    if let Some(field) = message
        .strip_prefix("duplicate field `")
        .and_then(|r| r.strip_suffix('`'))
    {
        return format!("the key {} is given twice", quote(field));
    }
    message.to_string()
}

/// serde's names of Rust integer types, in words.
fn expected_kind(expected: &str) -> &str {
    match expected {
        "u32" => "an integer from 0 to 4294967295",
        "u8" | "u16" | "u64" | "usize" => "a non-negative integer",
        "i8" | "i16" | "i32" | "i64" | "isize" => "an integer",
        other => other,
    }
}

fn quote(key: &str) -> String {
    format!("\"{key}\"")
}

/// serde's `Unexpected` ("string \"x\"", "integer `5`", "sequence", ...) as our kinds.
fn found_kind(unexpected: &str) -> &'static str {
    let word = unexpected.split([' ', '`']).next().unwrap_or("");
    match word {
        "string" | "character" => "a string",
        "integer" | "floating" => "a number",
        "boolean" => "a boolean",
        "sequence" => "a list",
        "map" => "an object",
        "null" | "unit" => "null",
        _ => "another kind of value",
    }
}

/// What a JSON value is, for "expected ..., found ..." messages.
pub fn kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Rule {
        path: String,
        #[serde(default)]
        uid: Option<u32>,
    }

    fn error(text: &str) -> String {
        parse_typed::<Vec<Rule>>("p.json", text.as_bytes())
            .unwrap_err()
            .message()
    }

    #[test]
    fn typed_errors_name_line_path_and_kind() {
        assert_eq!(
            error("[{\"path\": \"/x\", \"usr\": 1}]"),
            "p.json:1:21: $[0]: unknown key \"usr\"; the keys are: path, uid"
        );
        assert_eq!(
            error("[\n {\"path\": 5}]"),
            "p.json:2:11: $[0].path: expected a string, found a number"
        );
        assert_eq!(
            error("[{\"uid\": 1}]"),
            "p.json:1:11: $[0]: missing \"path\""
        );
        assert_eq!(
            error("[{]"),
            "p.json:1:3: invalid JSON: key must be a string"
        );
        assert_eq!(
            error("{}"),
            "p.json:1:1: expected a sequence, found an object"
        );
    }
}
