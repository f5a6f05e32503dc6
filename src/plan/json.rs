//! The plan as JSON: one shape, written by `layered-gen plan` and read back as a previous plan.
//!
//! Popularities can exceed every machine integer, so they are written as their exact decimal
//! digits. Read back, a plan is used for its layers' paths only; popularities read are kept as
//! text and may have lost digits.

use std::path::Path;

use num_bigint::BigUint;
use serde::de::{MapAccess, Visitor};
use serde::ser::SerializeMap;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::value::RawValue;

use super::Plan;
use crate::closure::ClosureGraph;
use crate::error::{Error, Result, Setting, shown};
use crate::json_file;

/// The whole plan.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PlanJson {
    pub max_layers: usize,
    pub store_layer_budget: usize,
    pub store_dir: String,
    pub layers: Vec<PlanLayerJson>,
    /// Each store path's popularity, in plan order.
    pub popularities: Popularities,
}

/// One layer: a base image's, kept as it is, or one of store paths.
#[derive(Debug, Serialize, Deserialize)]
#[serde(untagged)]
pub enum PlanLayerJson {
    Store {
        index: usize,
        kind: StoreKind,
        /// The strategy that made the layer (`--layering`); absent in plans of older versions.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        layering: Option<String>,
        reason: String,
        paths: Vec<String>,
        #[serde(rename = "narSize")]
        nar_size: Option<u64>,
        /// The highest popularity among the layer's paths.
        popularity: Exact,
    },
    Base(BaseLayerJson),
}

#[derive(Clone, Copy, Debug, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StoreKind {
    Store,
}

#[derive(Clone, Copy, Debug, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BaseKind {
    Base,
}

/// A base image's layer as the plan lists it.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BaseLayerJson {
    pub index: usize,
    pub kind: BaseKind,
    pub file: String,
    pub digest: Option<String>,
    pub diff_id: Option<String>,
    pub size: u64,
}

/// An integer of any size, written as its exact digits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Exact(pub String);

impl Serialize for Exact {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        RawValue::from_string(self.0.clone())
            .map_err(serde::ser::Error::custom)?
            .serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for Exact {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        match serde_json::Value::deserialize(deserializer)? {
            serde_json::Value::Number(n) => Ok(Exact(n.to_string())),
            _ => Err(serde::de::Error::custom("expected a number")),
        }
    }
}

/// A JSON object whose keys keep the order given (plan order), values exact numbers.
#[derive(Debug, Default)]
pub struct Popularities(pub Vec<(String, Exact)>);

impl Serialize for Popularities {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(Some(self.0.len()))?;
        for (key, value) in &self.0 {
            map.serialize_entry(key, value)?;
        }
        map.end()
    }
}

impl<'de> Deserialize<'de> for Popularities {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Entries;
        impl<'de> Visitor<'de> for Entries {
            type Value = Popularities;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("an object of store paths and popularities")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Popularities, A::Error> {
                let mut entries = Vec::new();
                while let Some(entry) = map.next_entry()? {
                    entries.push(entry);
                }
                Ok(Popularities(entries))
            }
        }
        deserializer.deserialize_map(Entries)
    }
}

fn number(n: &BigUint) -> Exact {
    Exact(n.to_string())
}

impl PlanJson {
    /// The JSON of `plan` over `graph`, after the base image's layers.
    pub fn new(plan: &Plan, graph: &ClosureGraph, base_layers: &[BaseLayerJson]) -> Result<Self> {
        // Layers given with --layer come between the base's and the plan's.
        let first = base_layers.len() + plan.budget.prebuilt_layers;
        let mut layers: Vec<PlanLayerJson> = base_layers
            .iter()
            .cloned()
            .map(PlanLayerJson::Base)
            .collect();
        let mut popularities = Vec::with_capacity(graph.len());
        for (store_index, paths) in plan.layers.iter().enumerate() {
            for &p in paths {
                popularities.push((graph.path(p).to_string(), number(&plan.popularity[p])));
            }
            layers.push(PlanLayerJson::Store {
                index: first + store_index,
                kind: StoreKind::Store,
                layering: Some(plan.layering.name().to_string()),
                reason: plan.reasons.get(store_index).cloned().unwrap_or_default(),
                paths: paths.iter().map(|&p| graph.path(p).to_string()).collect(),
                nar_size: plan.nar_size(graph, store_index),
                popularity: number(&plan.popularity[paths[0]]),
            });
        }
        Ok(PlanJson {
            max_layers: plan.budget.max_layers,
            // What is left beside the base's, the given and the customisation layer (a plan that
            // exists fitted, so this is what store_layers gave it).
            store_layer_budget: plan.budget.max_layers.saturating_sub(plan.budget.taken()),
            store_dir: graph.store_dir().to_string(),
            layers,
            popularities: Popularities(popularities),
        })
    }

    pub fn to_string_pretty(&self) -> Result<String> {
        serde_json::to_string_pretty(self).map_err(|e| Error::value(e.to_string()))
    }
}

/// The store layers of an earlier plan, as `layered-gen plan` printed them.
#[derive(Clone, Debug, Default)]
pub struct PreviousPlan {
    pub layers: Vec<Vec<String>>,
}

impl PreviousPlan {
    /// Reads the `plan` JSON of an earlier release (its store layers).
    pub fn read(path: &Path) -> Result<Self> {
        let bytes = json_file::read_bytes(path).map_err(|e| e.about(Setting::PreviousPlan))?;
        Self::parse(&path.display().to_string(), &bytes)
    }

    /// Parses the bytes of a previous plan (`name` is used in messages).
    pub fn parse(name: &str, bytes: &[u8]) -> Result<Self> {
        let plan: PlanJson = json_file::parse_typed(name, bytes).map_err(|e| {
            e.context("a previous plan must be the JSON `layered-gen plan` printed")
                .about(Setting::PreviousPlan)
        })?;
        // A plan puts each path in one layer; keeping a layer that repeats one would put it
        // in the image twice.
        let mut seen = std::collections::HashSet::new();
        for (i, layer) in plan.layers.iter().enumerate() {
            let PlanLayerJson::Store { paths, .. } = layer else {
                continue;
            };
            if let Some(twice) = paths.iter().find(|p| !seen.insert(p.as_str())) {
                return Err(Error::input(
                    format!("{}: $.layers[{i}].paths", shown(name)),
                    format!(
                        "{} is listed twice; a plan puts each store path in one layer",
                        shown(twice)
                    ),
                )
                .about(Setting::PreviousPlan));
            }
        }
        Ok(Self::from_json(plan))
    }

    pub fn from_json(plan: PlanJson) -> Self {
        PreviousPlan {
            layers: plan
                .layers
                .into_iter()
                .filter_map(|layer| match layer {
                    PlanLayerJson::Store { paths, .. } => Some(paths),
                    PlanLayerJson::Base(_) => None,
                })
                .collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_printed_plan_reads_back_as_a_previous_plan() {
        let text = r#"{"maxLayers":3,"storeLayerBudget":2,"storeDir":"/nix/store","layers":[
            {"index":0,"kind":"base","file":"a/layer.tar","digest":null,"diffId":"sha256:1","size":5},
            {"index":1,"kind":"store","reason":"r","paths":["/nix/store/x-a"],"narSize":null,
             "popularity":123456789012345678901234567890123456789012}],
            "popularities":{"/nix/store/x-a":123456789012345678901234567890123456789012}}"#;
        let plan: PlanJson = serde_json::from_str(text).unwrap();
        let again: serde_json::Value =
            serde_json::from_str(&plan.to_string_pretty().unwrap()).unwrap();
        assert_eq!(again["layers"][0]["kind"], "base");
        assert_eq!(again["layers"][1]["narSize"], serde_json::Value::Null);
        let written = PlanLayerJson::Store {
            index: 0,
            kind: StoreKind::Store,
            layering: None,
            reason: String::new(),
            paths: Vec::new(),
            nar_size: None,
            popularity: number(&(BigUint::from(u128::MAX) * 1000u32)),
        };
        assert!(
            serde_json::to_string(&written)
                .unwrap()
                .contains("\"popularity\":340282366920938463463374607431768211455000"),
            "exact digits"
        );
        let previous = PreviousPlan::from_json(plan);
        assert_eq!(previous.layers, vec![vec!["/nix/store/x-a".to_string()]]);
    }

    /// A previous plan listing a path twice made a kept layer hold it twice (found by the
    /// previous_plan fuzz target): refused, naming the path and where.
    #[test]
    fn a_previous_plan_listing_a_path_twice_is_refused() {
        let layer = |index: usize, paths: &[&str]| {
            format!(
                r#"{{"index":{index},"kind":"store","reason":"r","paths":{},"narSize":1,"popularity":1}}"#,
                serde_json::to_string(paths).unwrap()
            )
        };
        let plan = |layers: &[String]| {
            format!(
                r#"{{"maxLayers":3,"storeLayerBudget":3,"storeDir":"/nix/store","layers":[{}],"popularities":{{}}}}"#,
                layers.join(",")
            )
        };
        let within = plan(&[layer(0, &["/nix/store/x-a", "/nix/store/x-a"])]);
        let error = PreviousPlan::parse("p.json", within.as_bytes()).unwrap_err();
        assert_eq!(
            error.to_string(),
            "p.json: $.layers[0].paths: /nix/store/x-a is listed twice; a plan puts each store \
             path in one layer"
        );
        let across = plan(&[layer(0, &["/nix/store/x-a"]), layer(1, &["/nix/store/x-a"])]);
        let error = PreviousPlan::parse("p.json", across.as_bytes()).unwrap_err();
        assert!(
            error.to_string().starts_with("p.json: $.layers[1].paths: "),
            "{error}"
        );
        let fine = plan(&[layer(0, &["/nix/store/x-a"]), layer(1, &["/nix/store/x-b"])]);
        assert_eq!(
            PreviousPlan::parse("p.json", fine.as_bytes())
                .unwrap()
                .layers
                .len(),
            2
        );
    }
}
