//! The runtime part of the image config (`Cmd`, `Env`, ...), in the shape of dockerTools'
//! `config` attribute: checked key by key, and merged with a base image's config.
//!
//! Merge rules: user keys override base keys; `Labels`, `ExposedPorts` and `Volumes` are unions
//! (the user wins a clash); `Env` entries are merged by name — the last value wins and the entry
//! keeps the position of the name's first occurrence — so Docker (last wins) and Kubernetes
//! (first wins) see the same environment. A config that sets `Entrypoint` without `Cmd` drops
//! the base's `Cmd`, as Docker's builder does for an `ENTRYPOINT` without a `CMD` after `FROM`:
//! the base's arguments were meant for the base's program, not for the new one.

use std::path::Path;

use serde::de::Error as _;
use serde::{Deserialize, Deserializer};
use serde_json::{Map, Value};

use crate::error::{Error, Result, quoted};
use crate::json_file::{self, kind};

/// What each key must be.
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

    /// Reads a value of this shape; anything else is an error saying what was expected.
    fn read<'de, D: Deserializer<'de>>(self, d: D) -> Result<Option<Value>, D::Error> {
        let value = Value::deserialize(d)?;
        if self.accepts(&value) {
            Ok(Some(value))
        } else {
            Err(D::Error::custom(format!(
                "expected {}, found {}",
                self.describe(),
                kind(&value)
            )))
        }
    }
}

fn string_list<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Value>, D::Error> {
    Shape::Strings.read(d)
}
fn string<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Value>, D::Error> {
    Shape::String.read(d)
}
fn boolean<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Value>, D::Error> {
    Shape::Bool.read(d)
}
fn string_map<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Value>, D::Error> {
    Shape::StringMap.read(d)
}
fn set_of_objects<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Value>, D::Error> {
    Shape::SetOfObjects.read(d)
}
fn exposed_ports<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Value>, D::Error> {
    let value = Shape::SetOfObjects.read(d)?;
    for port in value
        .iter()
        .flat_map(|v| v.as_object())
        .flat_map(|m| m.keys())
    {
        check_port(port).map_err(D::Error::custom)?;
    }
    Ok(value)
}

/// An exposed port: `PORT` or `FIRST-LAST`, ports 1 to 65535, and `/tcp`, `/udp` or `/sctp`.
pub fn check_port(port: &str) -> Result<(), String> {
    let (numbers, protocol) = port.split_once('/').unwrap_or((port, "tcp"));
    let number = |n: &str| n.parse::<u16>().ok().filter(|&n| n > 0);
    let ok = matches!(protocol, "tcp" | "udp" | "sctp")
        && match numbers.split_once('-') {
            Some((first, last)) => {
                matches!((number(first), number(last)), (Some(a), Some(b)) if a <= b)
            }
            None => number(numbers).is_some(),
        };
    if ok {
        Ok(())
    } else {
        Err(format!(
            "{} is not a port like \"8080/tcp\" (1 to 65535, or a range like 8000-8010; tcp, \
             udp or sctp)",
            quoted(port)
        ))
    }
}

/// The health check, as Docker reads it: durations in nanoseconds, never negative.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(dead_code, non_snake_case)]
struct Healthcheck {
    #[serde(default)]
    Test: Option<Vec<String>>,
    #[serde(default)]
    Interval: Option<u64>,
    #[serde(default)]
    Timeout: Option<u64>,
    #[serde(default)]
    StartPeriod: Option<u64>,
    #[serde(default)]
    StartInterval: Option<u64>,
    #[serde(default)]
    Retries: Option<u64>,
}
fn env<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Value>, D::Error> {
    let value = Shape::Strings.read(d)?;
    for entry in value.iter().flat_map(|v| v.as_array()).flatten() {
        check_env_entry(entry.as_str().unwrap_or_default()).map_err(D::Error::custom)?;
    }
    Ok(value)
}

/// The keys the OCI image spec and Docker define for `config`, with what each must be; an
/// unknown or repeated key is an error.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(dead_code, non_snake_case)]
struct UserConfig {
    #[serde(default, deserialize_with = "string_list")]
    Cmd: Option<Value>,
    #[serde(default, deserialize_with = "string_list")]
    Entrypoint: Option<Value>,
    #[serde(default, deserialize_with = "env")]
    Env: Option<Value>,
    #[serde(default, deserialize_with = "exposed_ports")]
    ExposedPorts: Option<Value>,
    #[serde(default, deserialize_with = "string_map")]
    Labels: Option<Value>,
    #[serde(default, deserialize_with = "string")]
    User: Option<Value>,
    #[serde(default, deserialize_with = "set_of_objects")]
    Volumes: Option<Value>,
    #[serde(default, deserialize_with = "string")]
    WorkingDir: Option<Value>,
    #[serde(default, deserialize_with = "string")]
    StopSignal: Option<Value>,
    #[serde(default)]
    Healthcheck: Option<Healthcheck>,
    #[serde(default, deserialize_with = "boolean")]
    ArgsEscaped: Option<Value>,
    #[serde(default, deserialize_with = "string_list")]
    OnBuild: Option<Value>,
    #[serde(default, deserialize_with = "string_list")]
    Shell: Option<Value>,
}

/// The keys both Docker and OCI define, with their shapes, for checking a base image's config
/// (which may hold other keys too, kept as they are).
const KNOWN: &[(&str, Shape)] = &[
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

/// Checks the known keys of a base image's runtime config (`$.config` of its config blob):
/// a value of the wrong kind would be copied into the image, and merged, as it is. `null`
/// (Docker writes it for unset lists) is accepted.
pub fn check_base(config: &serde_json::Map<String, Value>) -> Result<(), String> {
    for (key, shape) in KNOWN {
        match config.get(*key) {
            None | Some(Value::Null) => {}
            Some(value) if shape.accepts(value) => {}
            Some(value) => {
                return Err(format!(
                    "$.config.{key}: expected {}, found {}",
                    shape.describe(),
                    kind(value)
                ));
            }
        }
    }
    for entry in strings(config.get("Env")) {
        check_env_entry(entry).map_err(|e| format!("$.config.Env: {e}"))?;
    }
    Ok(())
}

/// Reads a user config file (`--config`), checked key by key. The object is returned as the
/// file has it, in its key order.
pub fn read(path: &Path) -> Result<Map<String, Value>> {
    parse(&path.display().to_string(), &json_file::read_bytes(path)?)
}

/// [`read`] on bytes; `file` names them in messages.
pub fn parse(file: &str, bytes: &[u8]) -> Result<Map<String, Value>> {
    match json_file::parse_value(file, bytes)? {
        Value::Object(map) => {
            json_file::parse_typed::<UserConfig>(file, bytes)?;
            Ok(map)
        }
        other => Err(Error::input(
            crate::error::shown(file),
            format!(
                "the config must be a JSON object like {{\"Cmd\": [\"/bin/sh\"]}}, found {}",
                kind(&other)
            ),
        )),
    }
}

/// An `Env` entry must be `NAME=value` with a non-empty name, and hold no NUL (which no
/// process environment can).
pub fn check_env_entry(entry: &str) -> Result<(), String> {
    if entry.contains('\0') {
        return Err(format!(
            "the Env entry {} holds a NUL character",
            quoted(entry)
        ));
    }
    match entry.split_once('=') {
        Some((name, _)) if !name.is_empty() => Ok(()),
        _ => Err(format!("the Env entry {} is not NAME=value", quoted(entry))),
    }
}

/// Merges `Env` lists: one entry per name, at the name's first position, with its last value.
/// Names are case-sensitive, as on Linux.
pub fn merge_env<'a>(lists: impl IntoIterator<Item = &'a str>) -> Vec<String> {
    let mut merged: Vec<(&str, &str)> = Vec::new();
    // Each name's position in `merged`: a list of any length merges in linear time.
    let mut positions: std::collections::HashMap<&str, usize> = Default::default();
    for entry in lists {
        let (name, value) = entry.split_once('=').unwrap_or((entry, ""));
        match positions.get(name) {
            Some(&at) => merged[at].1 = value,
            None => {
                positions.insert(name, merged.len());
                merged.push((name, value));
            }
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
    if overlay.contains_key("Entrypoint") && !overlay.contains_key("Cmd") {
        merged.remove("Cmd");
    }
    // A config's own duplicates are merged too, base or not.
    if let Some(env) = merged.get("Env") {
        let env = merge_env(strings(Some(env)));
        merged.insert("Env".to_string(), Value::from(env));
    }
    merged
}

/// `KEY=VALUE`, as environment variables and labels are given.
pub fn split_assignment(text: &str) -> Result<(String, String)> {
    match text.split_once('=') {
        Some((key, value)) if !key.is_empty() => Ok((key.to_string(), value.to_string())),
        _ => Err(Error::value(format!("{} is not KEY=VALUE", quoted(text)))),
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
    fn an_entrypoint_without_a_cmd_drops_the_base_cmd() {
        let base = json!({"Entrypoint": ["/bin/base"], "Cmd": ["--base-flag"]});
        let merged = |user: Value| {
            Value::Object(merge(base.as_object().unwrap(), user.as_object().unwrap()))
        };
        assert_eq!(
            merged(json!({"Entrypoint": ["/bin/child"]})),
            json!({"Entrypoint": ["/bin/child"]})
        );
        assert_eq!(
            merged(json!({"Entrypoint": ["/bin/child"], "Cmd": ["--child-flag"]})),
            json!({"Entrypoint": ["/bin/child"], "Cmd": ["--child-flag"]})
        );
        // A Cmd alone keeps the base's Entrypoint, as a Dockerfile's CMD does.
        assert_eq!(
            merged(json!({"Cmd": ["--child-flag"]})),
            json!({"Entrypoint": ["/bin/base"], "Cmd": ["--child-flag"]})
        );
        assert_eq!(
            merged(json!({"User": "u"})),
            json!({"Entrypoint": ["/bin/base"], "Cmd": ["--base-flag"], "User": "u"})
        );
    }

    #[test]
    fn config_errors_name_the_line_and_key() {
        let cases = [
            (
                "[]",
                "c.json: the config must be a JSON object like {\"Cmd\": [\"/bin/sh\"]}, found a list",
            ),
            (
                r#"{"Entrypont": []}"#,
                "c.json:1:12: unknown key \"Entrypont\"; the keys are: Cmd, Entrypoint, Env, \
                 ExposedPorts, Labels, User, Volumes, WorkingDir, StopSignal, Healthcheck, \
                 ArgsEscaped, OnBuild, Shell",
            ),
            (
                "{\n  \"Cmd\": \"/bin/sh\"}",
                "c.json:2:19: $.Cmd: expected a list of strings, e.g. [\"/bin/sh\", \"-c\", \"echo hi\"], found a string",
            ),
            (
                r#"{"User": 1000}"#,
                "c.json:1:14: $.User: expected a string, found a number",
            ),
            (
                r#"{"ExposedPorts": {"80/tcp": true}}"#,
                "c.json:1:34: $.ExposedPorts: expected an object whose values are {}, e.g. {\"8080/tcp\": {}}, found an object",
            ),
            (
                r#"{"Env": ["A=1", "NOVALUE"]}"#,
                "c.json:1:27: $.Env: the Env entry \"NOVALUE\" is not NAME=value",
            ),
            (
                r#"{"Env": ["=x"]}"#,
                "c.json:1:15: $.Env: the Env entry \"=x\" is not NAME=value",
            ),
            (
                r#"{"Healthcheck": {"Test": ["CMD", "true"], "Intervall": 5}}"#,
                "c.json:1:53: $.Healthcheck: unknown key \"Intervall\"; the keys are: Test, \
                 Interval, Timeout, StartPeriod, StartInterval, Retries",
            ),
            (
                r#"{"Healthcheck": {"Interval": -5}}"#,
                "c.json:1:31: $.Healthcheck.Interval: expected a non-negative integer, found -5",
            ),
            (
                r#"{"ExposedPorts": {"99999/tcp": {}}}"#,
                "c.json:1:35: $.ExposedPorts: \"99999/tcp\" is not a port like \"8080/tcp\" (1 \
                 to 65535, or a range like 8000-8010; tcp, udp or sctp)",
            ),
            (
                r#"{"Env": ["A=x\u0000y"]}"#,
                "c.json:1:23: $.Env: the Env entry \"A=x\\u{0}y\" holds a NUL character",
            ),
            (
                r#"{"Cmd": ["a"], "Cmd": ["b"]}"#,
                "c.json:1:20: the key \"Cmd\" is given twice",
            ),
        ];
        for (text, message) in cases {
            assert_eq!(
                parse("c.json", text.as_bytes()).unwrap_err().message(),
                message,
                "{text}"
            );
        }
        let ok = parse(
            "c.json",
            br#"{"WorkingDir": "/", "Cmd": ["a"], "ArgsEscaped": true}"#,
        );
        let keys: Vec<String> = ok.unwrap().keys().cloned().collect();
        assert_eq!(
            keys,
            ["WorkingDir", "Cmd", "ArgsEscaped"],
            "the file's key order"
        );
    }

    #[test]
    fn ports_and_base_configs() {
        for ok in [
            "80",
            "8080/tcp",
            "53/udp",
            "8000-8010/tcp",
            "1/sctp",
            "65535",
        ] {
            assert!(check_port(ok).is_ok(), "{ok}");
        }
        for bad in ["0", "99999/tcp", "abc", "80/http", "90-80", "80/"] {
            assert!(check_port(bad).is_err(), "{bad}");
        }
        let base = |v: Value| v.as_object().unwrap().clone();
        assert_eq!(
            check_base(&base(json!({"Cmd": 5}))).unwrap_err(),
            "$.config.Cmd: expected a list of strings, e.g. [\"/bin/sh\", \"-c\", \"echo hi\"], \
             found a number"
        );
        assert_eq!(
            check_base(&base(json!({"User": ["x"]}))).unwrap_err(),
            "$.config.User: expected a string, found a list"
        );
        assert!(check_base(&base(json!({"Cmd": null, "Hostname": "h", "Env": ["A=1"]}))).is_ok());
    }

    #[test]
    fn assignments() {
        assert_eq!(
            split_assignment("A==b").unwrap(),
            ("A".to_string(), "=b".to_string())
        );
        assert_eq!(
            split_assignment("nolabel").unwrap_err().message(),
            "\"nolabel\" is not KEY=VALUE"
        );
    }
}
