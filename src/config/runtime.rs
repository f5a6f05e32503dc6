//! The runtime part of the image config (`Cmd`, `Env`, ...), in the shape of dockerTools'
//! `config` attribute: checked key by key, and merged with a base image's config.
//!
//! Merge rules: user keys override base keys; `Labels`, `ExposedPorts` and `Volumes` are unions
//! (the user wins a clash); `Env` entries are merged by name — the last value wins and the entry
//! keeps the position of the name's first occurrence — so Docker (last wins) and Kubernetes
//! (first wins) see the same environment.

use serde_json::{Map, Value};

use crate::error::{Error, Result};
use crate::json_file::kind;

/// The keys the OCI image spec and Docker define for `config`, with what each must be.
const KEYS: &[(&str, Shape)] = &[
    ("Cmd", Shape::Strings),
    ("Entrypoint", Shape::Strings),
    ("Env", Shape::Strings),
    ("ExposedPorts", Shape::SetOfObjects),
    ("Labels", Shape::StringMap),
    ("User", Shape::String),
    ("Volumes", Shape::SetOfObjects),
    ("WorkingDir", Shape::String),
    ("StopSignal", Shape::String),
    ("Healthcheck", Shape::Object),
    ("ArgsEscaped", Shape::Bool),
    ("OnBuild", Shape::Strings),
    ("Shell", Shape::Strings),
];

#[derive(Clone, Copy)]
enum Shape {
    Strings,
    String,
    Bool,
    Object,
    StringMap,
    SetOfObjects,
}

impl Shape {
    fn describe(self) -> &'static str {
        match self {
            Shape::Strings => "a list of strings, e.g. [\"/bin/sh\", \"-c\", \"echo hi\"]",
            Shape::String => "a string",
            Shape::Bool => "true or false",
            Shape::Object => "an object",
            Shape::StringMap => "an object of strings, e.g. {\"org.example.key\": \"value\"}",
            Shape::SetOfObjects => "an object whose values are {}, e.g. {\"8080/tcp\": {}}",
        }
    }

    fn accepts(self, value: &Value) -> bool {
        match (self, value) {
            (Shape::Strings, Value::Array(items)) => items.iter().all(Value::is_string),
            (Shape::String, Value::String(_)) | (Shape::Bool, Value::Bool(_)) => true,
            (Shape::Object, Value::Object(_)) => true,
            (Shape::StringMap, Value::Object(map)) => map.values().all(Value::is_string),
            (Shape::SetOfObjects, Value::Object(map)) => map.values().all(Value::is_object),
            _ => false,
        }
    }
}

/// Checks a user config (the content of `--config FILE`, named `source` in messages).
pub fn check(source: &str, value: &Value) -> Result<Map<String, Value>> {
    let Value::Object(map) = value else {
        return Err(Error::new(format!(
            "{source}: the config must be a JSON object like {{\"Cmd\": [\"/bin/sh\"]}}, found {}",
            kind(value)
        )));
    };
    for (key, value) in map {
        let Some((_, shape)) = KEYS.iter().find(|(name, _)| name == key) else {
            return Err(Error::new(format!(
                "{source}: unknown config key {key:?}; the keys are: {}",
                KEYS.iter().map(|(k, _)| *k).collect::<Vec<_>>().join(", ")
            )));
        };
        if !shape.accepts(value) {
            return Err(Error::new(format!(
                "{source}: {key} must be {}, found {}",
                shape.describe(),
                kind(value)
            )));
        }
        if key == "Env" {
            for entry in value.as_array().into_iter().flatten() {
                check_env_entry(source, entry.as_str().unwrap_or_default())?;
            }
        }
    }
    Ok(map.clone())
}

/// An `Env` entry must be `NAME=value` with a non-empty name.
pub fn check_env_entry(source: &str, entry: &str) -> Result<()> {
    match entry.split_once('=') {
        Some((name, _)) if !name.is_empty() => Ok(()),
        _ => Err(Error::new(format!(
            "{source}: the Env entry {entry:?} is not NAME=value"
        ))),
    }
}

/// Merges `Env` lists: one entry per name, at the name's first position, with its last value.
/// Names are case-sensitive, as on Linux.
pub fn merge_env<'a>(lists: impl IntoIterator<Item = &'a str>) -> Vec<String> {
    let mut merged: Vec<(String, String)> = Vec::new();
    for entry in lists {
        let (name, value) = entry.split_once('=').unwrap_or((entry, ""));
        match merged.iter_mut().find(|(n, _)| n == name) {
            Some(existing) => existing.1 = value.to_string(),
            None => merged.push((name.to_string(), value.to_string())),
        }
    }
    merged
        .into_iter()
        .map(|(name, value)| format!("{name}={value}"))
        .collect()
}

fn strings(value: Option<&Value>) -> Vec<&str> {
    value
        .and_then(Value::as_array)
        .map(|items| items.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default()
}

/// `overlay` over `base` by the rules in the module doc.
pub fn merge(base: &Map<String, Value>, overlay: &Map<String, Value>) -> Map<String, Value> {
    let mut merged = base.clone();
    for (key, value) in overlay {
        let combined = match key.as_str() {
            "Env" => {
                let env = strings(base.get("Env"))
                    .into_iter()
                    .chain(strings(Some(value)))
                    .collect::<Vec<_>>();
                Value::from(merge_env(env))
            }
            "Labels" | "ExposedPorts" | "Volumes" => match (base.get(key), value) {
                (Some(Value::Object(old)), Value::Object(new)) => {
                    let mut union = old.clone();
                    for (k, v) in new {
                        union.insert(k.clone(), v.clone());
                    }
                    Value::Object(union)
                }
                _ => value.clone(),
            },
            _ => value.clone(),
        };
        merged.insert(key.clone(), combined);
    }
    // A config's own duplicates are merged too, base or not.
    if let Some(env) = merged.get("Env") {
        let env = merge_env(strings(Some(env)));
        merged.insert("Env".to_string(), Value::from(env));
    }
    merged
}

/// `KEY=VALUE` from the command line (`--env`, `--label`).
pub fn split_assignment(flag: &str, text: &str) -> Result<(String, String)> {
    match text.split_once('=') {
        Some((key, value)) if !key.is_empty() => Ok((key.to_string(), value.to_string())),
        _ => Err(Error::new(format!("{flag} {text:?} is not KEY=VALUE"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn env_merge_table() {
        let cases: &[(&[&str], &[&str])] = &[
            (&["A=1", "A=2"], &["A=2"]),
            (&["A=1", "B=", "A=2"], &["A=2", "B="]),
            (&["A==x"], &["A==x"]),
            (&["A=1", "A==x"], &["A==x"]),
            (&["a=1", "A=2"], &["a=1", "A=2"]),
            (&["B=1", "A=1", "B=2", "A=3", "C=4"], &["B=2", "A=3", "C=4"]),
            (
                &["PATH=/bin", "PATH=/usr/bin:/bin"],
                &["PATH=/usr/bin:/bin"],
            ),
            (&[], &[]),
        ];
        for (input, expected) in cases {
            assert_eq!(merge_env(input.iter().copied()), *expected, "{input:?}");
        }
    }

    #[test]
    fn base_and_user_configs_merge() {
        let base = json!({
            "Env": ["PATH=/bin", "LANG=C"],
            "Labels": {"a": "base", "b": "base"},
            "ExposedPorts": {"80/tcp": {}},
            "Cmd": ["/bin/base"],
            "WorkingDir": "/srv",
        });
        let user = json!({
            "Env": ["LANG=C.UTF-8", "X=1"],
            "Labels": {"b": "user"},
            "ExposedPorts": {"443/tcp": {}},
            "Cmd": ["/bin/user"],
        });
        let merged = merge(base.as_object().unwrap(), user.as_object().unwrap());
        assert_eq!(
            Value::Object(merged),
            json!({
                "Env": ["PATH=/bin", "LANG=C.UTF-8", "X=1"],
                "Labels": {"a": "base", "b": "user"},
                "ExposedPorts": {"80/tcp": {}, "443/tcp": {}},
                "Cmd": ["/bin/user"],
                "WorkingDir": "/srv",
            })
        );
    }

    #[test]
    fn config_errors_name_the_key() {
        let cases = [
            (
                json!([]),
                "c.json: the config must be a JSON object like {\"Cmd\": [\"/bin/sh\"]}, found a list",
            ),
            (
                json!({"Entrypont": []}),
                "c.json: unknown config key \"Entrypont\"; the keys are: Cmd, Entrypoint, Env, \
                 ExposedPorts, Labels, User, Volumes, WorkingDir, StopSignal, Healthcheck, \
                 ArgsEscaped, OnBuild, Shell",
            ),
            (
                json!({"Cmd": "/bin/sh"}),
                "c.json: Cmd must be a list of strings, e.g. [\"/bin/sh\", \"-c\", \"echo hi\"], found a string",
            ),
            (
                json!({"User": 1000}),
                "c.json: User must be a string, found a number",
            ),
            (
                json!({"ExposedPorts": {"80/tcp": true}}),
                "c.json: ExposedPorts must be an object whose values are {}, e.g. {\"8080/tcp\": {}}, found an object",
            ),
            (
                json!({"Env": ["A=1", "NOVALUE"]}),
                "c.json: the Env entry \"NOVALUE\" is not NAME=value",
            ),
            (
                json!({"Env": ["=x"]}),
                "c.json: the Env entry \"=x\" is not NAME=value",
            ),
        ];
        for (value, message) in cases {
            assert_eq!(check("c.json", &value).unwrap_err().message(), message);
        }
        assert!(check("c.json", &json!({"Cmd": ["a"], "ArgsEscaped": true})).is_ok());
    }

    #[test]
    fn assignments() {
        assert_eq!(
            split_assignment("--env", "A==b").unwrap(),
            ("A".to_string(), "=b".to_string())
        );
        assert_eq!(
            split_assignment("--label", "nolabel")
                .unwrap_err()
                .message(),
            "--label \"nolabel\" is not KEY=VALUE"
        );
    }
}
