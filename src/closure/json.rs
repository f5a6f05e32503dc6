//! The JSON closure formats:
//! - a list of `{"path", "references", "narSize", "narHash", ...}` objects, as written by
//!   `exportReferencesGraph` with `__structuredAttrs` and by `nix path-info --json --recursive`
//!   before Nix 2.19;
//! - the whole `.attrs.json` of a structured-attrs derivation, whose key (chosen with
//!   `--closure-key`, or the only list of such objects) holds that list;
//! - an object keyed by store path, as newer `nix path-info --json --recursive` writes.

use std::borrow::Cow;
use std::collections::HashMap;

use serde::Deserialize;
use serde_json::Value;
use serde_json::value::RawValue;

use super::{Location, Origin, PathRecord};
use crate::error::{Error, Result};
use crate::json_file::{kind, without_position};

pub(super) fn parse(file: &str, text: &str, key: Option<&str>) -> Result<Vec<PathRecord>> {
    match parse_fast(file, text, key) {
        Some(records) => Ok(records),
        None => parse_checked(file, text, key),
    }
}

/// One path as the list forms write it; other fields are ignored.
#[derive(Deserialize)]
struct TypedRecord<'a> {
    #[serde(borrow)]
    path: Cow<'a, str>,
    #[serde(borrow)]
    references: Vec<Cow<'a, str>>,
    #[serde(rename = "narSize", default)]
    nar_size: Option<u64>,
    #[serde(rename = "narHash", default, borrow)]
    nar_hash: Option<Cow<'a, str>>,
    #[serde(default)]
    valid: Option<bool>,
}

/// The common, well-formed case, deserialised straight into records (large closures plan in a
/// fraction of the time a JSON tree takes). Anything unexpected returns None, and the checked
/// parser runs instead to say exactly what is wrong and where.
fn parse_fast(file: &str, text: &str, key: Option<&str>) -> Option<Vec<PathRecord>> {
    let (list, at): (&str, String) = if text.trim_start().starts_with('[') {
        if key.is_some() {
            return None;
        }
        (text, "$".to_string())
    } else {
        let object: HashMap<&str, &RawValue> = serde_json::from_str(text).ok()?;
        if object.keys().all(|k| k.starts_with('/')) {
            return None; // path-info's object form: rare and small, the checked parser reads it
        }
        let (name, raw) = match key {
            Some(key) => (key, object.get(key)?.get()),
            None => {
                let mut lists = object
                    .iter()
                    .map(|(k, v)| (*k, v.get()))
                    .filter(|(_, raw)| raw.trim_start().starts_with('['))
                    .filter(|(_, raw)| {
                        serde_json::from_str::<Vec<TypedRecord>>(raw).is_ok_and(|r| !r.is_empty())
                    });
                let only = lists.next()?;
                if lists.next().is_some() {
                    return None;
                }
                only
            }
        };
        (raw, format!("$.{name}"))
    };
    let typed: Vec<TypedRecord> = serde_json::from_str(list).ok()?;
    typed
        .into_iter()
        .enumerate()
        .map(|(i, r)| {
            if r.valid == Some(false) {
                return None;
            }
            let references = r.references.into_iter().map(Cow::into_owned).collect();
            Some(PathRecord {
                references: full_references(&r.path, references),
                path: r.path.into_owned(),
                nar_size: r.nar_size,
                nar_hash: r.nar_hash.map(Cow::into_owned),
                origin: Origin {
                    file: file.to_string(),
                    at: Location::JsonPath(format!("{at}[{i}]")),
                },
            })
        })
        .collect()
}

/// Newer Nix may print references as bare base names; make them full paths.
fn full_references(path: &str, references: Vec<String>) -> Vec<String> {
    let store_dir = path.rsplit_once('/').map(|(d, _)| d).unwrap_or("");
    references
        .into_iter()
        .map(|r| {
            if r.starts_with('/') || store_dir.is_empty() {
                r
            } else {
                format!("{store_dir}/{r}")
            }
        })
        .collect()
}

/// Reads the file as a JSON tree, checking every step, so errors name the JSON path.
fn parse_checked(file: &str, text: &str, key: Option<&str>) -> Result<Vec<PathRecord>> {
    let value: Value = serde_json::from_str(text).map_err(|e| {
        Error::new(format!(
            "{file}:{}:{}: invalid JSON: {}",
            e.line(),
            e.column(),
            without_position(&e.to_string())
        ))
    })?;
    let reader = Reader { file };
    match &value {
        Value::Array(items) => {
            if let Some(key) = key {
                return Err(Error::new(format!(
                    "{file}: --closure-key {key} selects a key of an object, but this file is a \
                     JSON list"
                )));
            }
            reader.list(items, "$")
        }
        Value::Object(map) if is_keyed_by_store_path(map) && key.is_none() => {
            reader.keyed_by_path(map)
        }
        Value::Object(map) => {
            let key = match key {
                Some(key) => key.to_string(),
                None => only_closure_list(file, map)?,
            };
            match map.get(&key) {
                Some(Value::Array(items)) => reader.list(items, &format!("$.{key}")),
                Some(other) => Err(Error::new(format!(
                    "{file}: $.{key}: expected a list of {{\"path\", \"references\"}} objects, \
                     found {}",
                    kind(other)
                ))),
                None => Err(Error::new(format!(
                    "{file}: there is no key {key:?}; the keys are: {}",
                    map.keys().cloned().collect::<Vec<_>>().join(", ")
                ))),
            }
        }
        other => Err(Error::new(format!(
            "{file}: expected a JSON list or object, found {}",
            kind(other)
        ))),
    }
}

fn is_keyed_by_store_path(map: &serde_json::Map<String, Value>) -> bool {
    !map.is_empty() && map.keys().all(|k| k.starts_with('/'))
}

fn looks_like_closure_list(value: &Value) -> bool {
    matches!(value, Value::Array(items)
        if items.iter().all(|i| i.get("path").is_some()) && !items.is_empty())
}

/// The key of the one list of path objects in an `.attrs.json`.
fn only_closure_list(file: &str, map: &serde_json::Map<String, Value>) -> Result<String> {
    let candidates: Vec<&String> = map
        .iter()
        .filter(|(_, v)| looks_like_closure_list(v))
        .map(|(k, _)| k)
        .collect();
    match candidates.as_slice() {
        [one] => Ok((*one).clone()),
        [] => Err(Error::new(format!(
            "{file}: no key holds a list of {{\"path\", \"references\"}} objects; is this the \
             .attrs.json of a derivation with exportReferencesGraph? (keys: {})",
            map.keys().cloned().collect::<Vec<_>>().join(", ")
        ))),
        many => Err(Error::new(format!(
            "{file}: several keys hold closure graphs ({}); choose one with --closure-key",
            many.iter()
                .map(|k| k.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ))),
    }
}

struct Reader<'a> {
    file: &'a str,
}

impl Reader<'_> {
    fn error(&self, at: &str, message: String) -> Error {
        Error::new(format!("{}: {at}: {message}", self.file))
    }

    fn origin(&self, at: &str) -> Origin {
        Origin {
            file: self.file.to_string(),
            at: Location::JsonPath(at.to_string()),
        }
    }

    fn list(&self, items: &[Value], at: &str) -> Result<Vec<PathRecord>> {
        items
            .iter()
            .enumerate()
            .map(|(i, item)| {
                let at = format!("{at}[{i}]");
                let Value::Object(fields) = item else {
                    return Err(self.error(
                        &at,
                        format!(
                            "expected an object with \"path\" and \"references\", found {}",
                            kind(item)
                        ),
                    ));
                };
                let path = match fields.get("path") {
                    Some(Value::String(path)) => path.clone(),
                    Some(other) => {
                        return Err(self.error(
                            &format!("{at}.path"),
                            format!("expected a store path string, found {}", kind(other)),
                        ));
                    }
                    None => return Err(self.error(&at, "missing \"path\"".to_string())),
                };
                self.record(path, fields, &at)
            })
            .collect()
    }

    fn keyed_by_path(&self, map: &serde_json::Map<String, Value>) -> Result<Vec<PathRecord>> {
        map.iter()
            .map(|(path, info)| {
                let at = format!("$[{path:?}]");
                match info {
                    Value::Object(fields) => self.record(path.clone(), fields, &at),
                    Value::Null => Err(self.error(
                        &at,
                        format!("{path} is not valid in the store (path-info gave null)"),
                    )),
                    other => {
                        Err(self.error(&at, format!("expected an object, found {}", kind(other))))
                    }
                }
            })
            .collect()
    }

    fn record(
        &self,
        path: String,
        fields: &serde_json::Map<String, Value>,
        at: &str,
    ) -> Result<PathRecord> {
        if fields.get("valid") == Some(&Value::Bool(false)) {
            return Err(self.error(at, format!("{path} is not valid in the store")));
        }
        let references = match fields.get("references") {
            Some(Value::Array(refs)) => refs
                .iter()
                .enumerate()
                .map(|(j, r)| match r {
                    Value::String(s) => Ok(s.clone()),
                    other => Err(self.error(
                        &format!("{at}.references[{j}]"),
                        format!("expected a store path string, found {}", kind(other)),
                    )),
                })
                .collect::<Result<Vec<_>>>()?,
            Some(other) => {
                return Err(self.error(
                    &format!("{at}.references"),
                    format!("expected a list of store paths, found {}", kind(other)),
                ));
            }
            None => {
                return Err(self.error(at, format!("missing \"references\" for {path}")));
            }
        };
        let nar_size = match fields.get("narSize") {
            None | Some(Value::Null) => None,
            Some(Value::Number(n)) if n.as_u64().is_some() => n.as_u64(),
            Some(other) => {
                return Err(self.error(
                    &format!("{at}.narSize"),
                    format!("expected a non-negative integer, found {}", kind(other)),
                ));
            }
        };
        let nar_hash = fields
            .get("narHash")
            .and_then(Value::as_str)
            .map(str::to_string);
        Ok(PathRecord {
            references: full_references(&path, references),
            path,
            nar_size,
            nar_hash,
            origin: self.origin(at),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::closure::tests::H;

    fn p(i: usize) -> String {
        format!("/nix/store/{}-p{i}", H[i])
    }

    #[test]
    fn fast_and_checked_parsers_agree() {
        let list = format!(
            r#"[{{"path":"{a}","references":["{b}"],"narSize":10,"narHash":"sha256:x"}},
                {{"path":"{b}","references":[],"narSize":null}}]"#,
            a = p(0),
            b = p(1)
        );
        let attrs = format!(r#"{{"name":"x","closure":{list},"outputs":{{"out":"/o"}}}}"#);
        for (text, key) in [(&list, None), (&attrs, None), (&attrs, Some("closure"))] {
            let fast = parse_fast("f", text, key).expect("the fast path takes this");
            assert_eq!(fast, parse_checked("f", text, key).unwrap());
        }
    }

    #[test]
    fn structured_attrs_list() {
        let text = format!(
            r#"[{{"path":"{a}","references":["{b}"],"narSize":10,"narHash":"sha256:x","closureSize":20}},
                {{"path":"{b}","references":[],"narSize":10}}]"#,
            a = p(0),
            b = p(1)
        );
        let records = parse("graph.json", &text, None).unwrap();
        assert_eq!(records.len(), 2);
        assert_eq!(records[0].references, vec![p(1)]);
        assert_eq!(records[0].nar_size, Some(10));
        assert_eq!(records[1].origin.to_string(), "graph.json: $[1]");
    }

    #[test]
    fn attrs_json_picks_the_only_list_or_the_key() {
        let text = format!(
            r#"{{"name":"x","exportReferencesGraph":{{"closure":["{a}"]}},
                "closure":[{{"path":"{a}","references":[]}}],"outputs":{{"out":"/nix/store/o"}}}}"#,
            a = p(0)
        );
        assert_eq!(parse("a", &text, None).unwrap()[0].path, p(0));
        assert_eq!(parse("a", &text, Some("closure")).unwrap()[0].path, p(0));
        assert_eq!(
            parse("a", &text, Some("nope")).unwrap_err().message(),
            "a: there is no key \"nope\"; the keys are: name, exportReferencesGraph, closure, outputs"
        );
        assert_eq!(
            parse("a", &text, Some("name")).unwrap_err().message(),
            "a: $.name: expected a list of {\"path\", \"references\"} objects, found a string"
        );
        let two = format!(
            r#"{{"one":[{{"path":"{a}","references":[]}}],"two":[{{"path":"{a}","references":[]}}]}}"#,
            a = p(0)
        );
        assert_eq!(
            parse("a", &two, None).unwrap_err().message(),
            "a: several keys hold closure graphs (one, two); choose one with --closure-key"
        );
    }

    #[test]
    fn path_info_object_form() {
        let text = format!(
            r#"{{"{a}":{{"narSize":5,"references":["{b}"]}},"{b}":{{"references":[]}}}}"#,
            a = p(0),
            b = p(1)
        );
        let records = parse("pi", &text, None).unwrap();
        assert_eq!(records[0].path, p(0));
        assert_eq!(records[0].references, vec![p(1)]);
        let invalid = format!(r#"{{"{a}":null}}"#, a = p(0));
        assert_eq!(
            parse("pi", &invalid, None).unwrap_err().message(),
            format!(
                "pi: $[\"{a}\"]: {a} is not valid in the store (path-info gave null)",
                a = p(0)
            )
        );
    }

    #[test]
    fn errors_name_the_json_path() {
        let cases = [
            (
                "[1]",
                "f: $[0]: expected an object with \"path\" and \"references\", found a number",
            ),
            (
                r#"[{"path":3}]"#,
                "f: $[0].path: expected a store path string, found a number",
            ),
            (r#"[{"references":[]}]"#, "f: $[0]: missing \"path\""),
            (
                r#"[{"path":"/x","references":[1]}]"#,
                "f: $[0].references[0]: expected a store path string, found a number",
            ),
            (
                r#"[{"path":"/x"}]"#,
                "f: $[0]: missing \"references\" for /x",
            ),
            (
                r#"[{"path":"/x","references":[],"narSize":-1}]"#,
                "f: $[0].narSize: expected a non-negative integer, found a number",
            ),
            ("[{]", "f:1:3: invalid JSON: key must be a string"),
            ("\"x\"", "f: expected a JSON list or object, found a string"),
        ];
        for (text, message) in cases {
            assert_eq!(
                parse("f", text, None).unwrap_err().message(),
                message,
                "{text}"
            );
        }
    }
}
