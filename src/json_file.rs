//! JSON as users hand it to us (config, perms): read with errors that say where and what.

use std::path::Path;

use serde_json::Value;

use crate::error::{Error, Result};

/// Reads and parses a JSON file; a syntax error names the file, line and column.
pub fn read(path: &Path) -> Result<Value> {
    let bytes = std::fs::read(path).map_err(|e| Error::io("reading", path, e))?;
    serde_json::from_slice(&bytes).map_err(|e| {
        Error::new(format!(
            "{}:{}:{}: invalid JSON: {}",
            path.display(),
            e.line(),
            e.column(),
            without_position(&e.to_string())
        ))
    })
}

/// serde_json appends " at line L column C"; messages here put the position first.
pub fn without_position(message: &str) -> &str {
    message.split(" at line ").next().unwrap_or(message)
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
