//! The stages in order, as the command line runs them: closure → plan → layers → config →
//! output. Each stage is its own module; this one only hands data from one to the next.

use std::path::PathBuf;

use rayon::prelude::*;

use crate::closure::{ClosureGraph, LoadOptions};
use crate::config::{self, ImageConfig};
use crate::error::Result;
use crate::layer::{self, LayerOptions, LayerTree};
use crate::output::{self, ImageSource, OutputOptions, Written};
use crate::plan::{self, Budget, Plan};
use crate::tarball::TarStream;

/// Where the closure comes from and how it is split.
#[derive(Clone, Debug)]
pub struct PlanOptions {
    pub closures: Vec<PathBuf>,
    pub closure_key: Option<String>,
    pub max_layers: usize,
}

/// Everything `layered-gen` needs to write an image.
#[derive(Clone, Debug)]
pub struct BuildOptions {
    pub plan: PlanOptions,
    pub layer: LayerOptions,
    pub config: ImageConfig,
    pub output: OutputOptions,
}

/// Reads the closure and plans its layers.
pub fn plan(options: &PlanOptions) -> Result<(ClosureGraph, Plan)> {
    let graph = ClosureGraph::load(
        &options.closures,
        &LoadOptions {
            closure_key: options.closure_key.clone(),
        },
    )?;
    let plan = plan::plan_by_popularity(&graph, Budget::new(options.max_layers))?;
    Ok((graph, plan))
}

/// `layered-gen plan`: the plan as JSON.
pub fn plan_json(options: &PlanOptions) -> Result<String> {
    let (graph, plan) = plan(options)?;
    plan.to_json(&graph)
}

struct StoreImage<'a> {
    graph: &'a ClosureGraph,
    plan: &'a Plan,
    options: &'a BuildOptions,
    /// Every layer scanned before the first byte is written, so that a bad file fails the
    /// build before any output (stdout cannot be taken back) and every length is known.
    layers: Vec<LayerTree>,
}

fn layer_paths<'g>(graph: &'g ClosureGraph, plan: &Plan, index: usize) -> Vec<&'g str> {
    plan.layers[index].iter().map(|&p| graph.path(p)).collect()
}

impl ImageSource for StoreImage<'_> {
    fn layer_count(&self) -> usize {
        self.plan.layers.len()
    }

    fn layer(&self, index: usize) -> Result<&dyn TarStream> {
        Ok(&self.layers[index])
    }

    fn config(&self, diff_ids: &[String]) -> Result<Vec<u8>> {
        let history: Vec<String> = (0..self.layer_count())
            .map(|i| config::store_layer_comment(&layer_paths(self.graph, self.plan, i)))
            .collect();
        Ok(self.options.config.to_json(diff_ids, &history))
    }
}

/// Builds the image: the whole job of `layered-gen --closure ... -o ...`.
pub fn build(options: &BuildOptions) -> Result<Written> {
    options.output.check()?;
    let (graph, plan) = plan(&options.plan)?;
    layer::check_sources(graph.paths().iter().map(String::as_str), &options.layer)?;
    let layers = (0..plan.layers.len())
        .into_par_iter()
        .map(|i| {
            LayerTree::for_store_paths(
                graph.store_dir(),
                &layer_paths(&graph, &plan, i),
                &options.layer,
            )
        })
        .collect::<Result<Vec<_>>>()?;
    let image = StoreImage {
        graph: &graph,
        plan: &plan,
        options,
        layers,
    };
    output::write_image(&image, &options.output)
}
