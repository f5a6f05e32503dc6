//! The JSON closure formats:
//! - a list of `{"path", "references", "narSize", "narHash", ...}` objects, as written by
//!   `exportReferencesGraph` with `__structuredAttrs` and by `nix path-info --json --recursive`
//!   before Nix 2.19;
//! - the whole `.attrs.json` of a structured-attrs derivation, whose key (chosen with
//!   `--closure-key`, or the only list of such objects) holds that list;
//! - an object keyed by store path, as newer `nix path-info --json --recursive` writes.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::sync::Arc;

use serde::Deserialize;
use serde::de::IgnoredAny;
use serde_json::Value;
use serde_json::value::RawValue;

use super::{Location, Origin, PathRecord};
use crate::error::{Error, Result, Setting, quoted, shown};
use crate::json_file::{kind, parse_value};

/// Reads a JSON closure file. The list to read is chosen once, by one rule (see `choose_list`);
/// the common, well-formed list is then deserialised straight into records (large closures
/// plan in a fraction of the time a JSON tree takes), and only when that fails is the list
/// read as a tree, to say exactly what is wrong and where.
pub(super) fn parse(file: &str, text: &str, key: Option<&str>) -> Result<Vec<PathRecord>> {
    let reader = Reader { file };
    let (list, at) = match choose_list(file, text, key)? {
        Chosen::List { raw, at } => (raw, at),
        Chosen::KeyedByPath => return reader.keyed_by_path(&parse_value(file, text.as_bytes())?),
    };
    match parse_list_fast(file, list, &at) {
        Some(records) => Ok(records),
        None => reader.list(&parse_value(file, list.as_bytes())?, &at),
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
    #[serde(default, borrow)]
    deriver: Option<Cow<'a, str>>,
    #[serde(default)]
    valid: Option<bool>,
}

/// What a closure list's items must at least have.
#[derive(Deserialize)]
struct HasPath {
    #[allow(dead_code)]
    path: IgnoredAny,
}

/// The rule for "a closure list": a non-empty list of objects that each have a `path`.
fn is_closure_list(raw: &RawValue) -> bool {
    serde_json::from_str::<Vec<HasPath>>(raw.get()).is_ok_and(|items| !items.is_empty())
}

/// Where the records are in a JSON closure file.
enum Chosen<'a> {
    /// A list of path objects, and its JSON path (`$` or `$.key`).
    List { raw: &'a str, at: String },
    /// `nix path-info`'s object keyed by store path.
    KeyedByPath,
}

/// Chooses the list to read: the file itself when it is a list; in an object, the key asked
/// for, or else the only key holding a closure list (`.attrs.json`); an object whose keys are
/// all store paths is path-info's newer form.
fn choose_list<'a>(file: &str, text: &'a str, key: Option<&str>) -> Result<Chosen<'a>> {
    if text.trim_start().starts_with('[') {
        if let Some(key) = key {
            return Err(Error::input(
                shown(file),
                format!(
                    "the closure key {} selects a key of an object, but this file is a JSON list",
                    quoted(key)
                ),
            )
            .about(Setting::ClosureKey));
        }
        return Ok(Chosen::List {
            raw: text,
            at: "$".to_string(),
        });
    }
    let object: BTreeMap<String, &RawValue> = match serde_json::from_str(text) {
        Ok(object) => object,
        Err(_) => {
            // Not an object of values: let the tree parser say what it is.
            let value = parse_value(file, text.as_bytes())?;
            return Err(Error::input(
                shown(file),
                format!("expected a JSON list or object, found {}", kind(&value)),
            ));
        }
    };
    if key.is_none() && !object.is_empty() && object.keys().all(|k| k.starts_with('/')) {
        return Ok(Chosen::KeyedByPath);
    }
    let name = match key {
        Some(key) => key.to_string(),
        None => only_closure_key(file, &object)?,
    };
    let at = format!("$.{name}");
    match object.get(&name) {
        Some(raw) if raw.get().trim_start().starts_with('[') => {
            Ok(Chosen::List { raw: raw.get(), at })
        }
        Some(raw) => {
            let value = parse_value(file, raw.get().as_bytes())?;
            Err(Error::input(
                format!("{}: {}", shown(file), shown(&at)),
                format!(
                    "expected a list of {{\"path\", \"references\"}} objects, found {}",
                    kind(&value)
                ),
            ))
        }
        None => Err(Error::input(
            shown(file),
            format!(
                "there is no key {}; the keys are: {}",
                quoted(&name),
                key_list(object.keys())
            ),
        )
        .about(Setting::ClosureKey)),
    }
}

/// Keys for a message, escaped.
fn key_list<'k>(keys: impl Iterator<Item = &'k String>) -> String {
    shown(&keys.map(String::as_str).collect::<Vec<_>>().join(", "))
}

/// The one key of an object that holds a closure list.
fn only_closure_key(file: &str, object: &BTreeMap<String, &RawValue>) -> Result<String> {
    let lists: Vec<&String> = object
        .iter()
        .filter(|(_, raw)| is_closure_list(raw))
        .map(|(k, _)| k)
        .collect();
    match lists.as_slice() {
        [one] => Ok((*one).clone()),
        [] => Err(Error::input(
            shown(file),
            format!(
                "no key holds a list of {{\"path\", \"references\"}} objects; is this the \
                 .attrs.json of a derivation with exportReferencesGraph? (keys: {})",
                key_list(object.keys())
            ),
        )),
        many => Err(Error::input(
            shown(file),
            format!(
                "several keys hold closure graphs ({}); choose one by its key",
                key_list(many.iter().copied())
            ),
        )
        .about(Setting::ClosureKey)),
    }
}

/// The well-formed list deserialised straight into records; None when anything is unexpected.
fn parse_list_fast(file: &str, list: &str, at: &str) -> Option<Vec<PathRecord>> {
    let typed: Vec<TypedRecord> = serde_json::from_str(list).ok()?;
    let file: Arc<str> = file.into();
    let at: Arc<str> = at.into();
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
                deriver: r.deriver.map(Cow::into_owned).filter(|d| !d.is_empty()),
                origin: Origin {
                    file: file.clone(),
                    at: Location::JsonItem {
                        list: at.clone(),
                        index: i,
                    },
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

struct Reader<'a> {
    file: &'a str,
}

impl Reader<'_> {
    fn error(&self, at: &str, message: String) -> Error {
        Error::input(format!("{}: {}", shown(self.file), shown(at)), message)
    }

    fn origin(&self, at: &str) -> Origin {
        Origin {
            file: self.file.into(),
            at: Location::JsonPath(at.to_string()),
        }
    }

    fn list(&self, list: &Value, at: &str) -> Result<Vec<PathRecord>> {
        let Value::Array(items) = list else {
            return Err(self.error(at, format!("expected a list, found {}", kind(list))));
        };
        let list_at: Arc<str> = at.into();
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
                let origin = Origin {
                    file: self.file.into(),
                    at: Location::JsonItem {
                        list: list_at.clone(),
                        index: i,
                    },
                };
                self.record(path, fields, &at, origin)
            })
            .collect()
    }

    fn keyed_by_path(&self, object: &Value) -> Result<Vec<PathRecord>> {
        let Value::Object(map) = object else {
            return Err(self.error("$", format!("expected an object, found {}", kind(object))));
        };
        map.iter()
            .map(|(path, info)| {
                let at = format!("$[{path:?}]");
                match info {
                    Value::Object(fields) => {
                        self.record(path.clone(), fields, &at, self.origin(&at))
                    }
                    Value::Null => Err(self.error(
                        &at,
                        format!(
                            "{} is not valid in the store (path-info gave null)",
                            shown(path)
                        ),
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
        origin: Origin,
    ) -> Result<PathRecord> {
        if fields.get("valid") == Some(&Value::Bool(false)) {
            return Err(self.error(at, format!("{} is not valid in the store", shown(&path))));
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
                return Err(self.error(at, format!("missing \"references\" for {}", shown(&path))));
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
        let deriver = fields
            .get("deriver")
            .and_then(Value::as_str)
            .filter(|d| !d.is_empty())
            .map(str::to_string);
        Ok(PathRecord {
            references: full_references(&path, references),
            path,
            nar_size,
            nar_hash,
            deriver,
            origin,
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
            let Chosen::List { raw, at } = choose_list("f", text, key).unwrap() else {
                panic!("a list is chosen");
            };
            let fast = parse_list_fast("f", raw, &at).expect("the fast path takes this");
            let tree = serde_json::from_str(raw).unwrap();
            assert_eq!(fast, Reader { file: "f" }.list(&tree, &at).unwrap());
        }
        // The rule that picks the list is the same for both readers: a list whose items lack
        // "references" is still the chosen one, and the checked reader then says what is wrong.
        let partial = format!(r#"{{"closure":[{{"path":"{a}"}}],"other":[1]}}"#, a = p(0));
        assert_eq!(
            parse("f", &partial, None).unwrap_err().message(),
            format!("f: $.closure[0]: missing \"references\" for {}", p(0))
        );
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
            "a: there is no key \"nope\"; the keys are: closure, exportReferencesGraph, name, outputs"
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
            "a: several keys hold closure graphs (one, two); choose one by its key"
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
