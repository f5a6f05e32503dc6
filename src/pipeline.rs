//! The stages in order, as the command line runs them: closure → plan → layers → config →
//! output. Each stage is its own module; this one only hands data from one to the next.

use std::io::Write;
use std::path::PathBuf;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use rayon::prelude::*;

use crate::closure::{ClosureGraph, LoadOptions};
use crate::config::{self, ImageConfig};
use crate::error::Error;
use crate::error::Result;
use crate::layer::{self, Customisation, LayerOptions, LayerTree};
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
    /// Show a progress bar on stderr (the caller checks that it is a terminal).
    pub progress: bool,
    pub plan: PlanOptions,
    pub layer: LayerOptions,
    pub customisation: Customisation,
    pub config: ImageConfig,
    pub output: OutputOptions,
}

/// Reads the closure and plans its layers, leaving room for a customisation layer.
pub fn plan(options: &PlanOptions, customisation_layer: bool) -> Result<(ClosureGraph, Plan)> {
    let graph = ClosureGraph::load(
        &options.closures,
        &LoadOptions {
            closure_key: options.closure_key.clone(),
        },
    )?;
    let budget = Budget {
        customisation_layer,
        ..Budget::new(options.max_layers)
    };
    let plan = plan::plan_by_popularity(&graph, budget)?;
    Ok((graph, plan))
}

/// `layered-gen plan`: the plan as JSON.
pub fn plan_json(options: &PlanOptions, customisation_layer: bool) -> Result<String> {
    let (graph, plan) = plan(options, customisation_layer)?;
    plan.to_json(&graph)
}

struct StoreImage<'a> {
    options: &'a BuildOptions,
    /// Every layer scanned before the first byte is written, so that a bad file fails the
    /// build before any output (stdout cannot be taken back) and every length is known.
    layers: Vec<Counted>,
    /// One history comment per layer.
    comments: Vec<String>,
}

fn layer_paths<'g>(graph: &'g ClosureGraph, plan: &Plan, index: usize) -> Vec<&'g str> {
    plan.layers[index].iter().map(|&p| graph.path(p)).collect()
}

impl ImageSource for StoreImage<'_> {
    fn layer_count(&self) -> usize {
        self.layers.len()
    }

    fn layer(&self, index: usize) -> Result<&dyn TarStream> {
        Ok(&self.layers[index])
    }

    fn config(&self, diff_ids: &[String]) -> Result<Vec<u8>> {
        Ok(self.options.config.to_json(diff_ids, &self.comments))
    }
}

/// Builds the image: the whole job of `layered-gen --closure ... -o ...`.
pub fn build(options: &BuildOptions) -> Result<Written> {
    options.output.check()?;
    let custom = &options.customisation;
    if custom.is_empty() && !custom.perms.is_empty() {
        return Err(Error::new(
            "--perms applies to the customisation layer, which is empty: add --contents, \
             --extra-dir or --remove",
        ));
    }
    let (graph, plan) = plan(&options.plan, !custom.is_empty())?;
    for path in &custom.contents {
        if graph.index_of(path).is_none() {
            return Err(Error::new(format!(
                "--contents {path} is not in the closure; the closure must include the \
                 contents (export their references graph)"
            )));
        }
    }
    layer::check_sources(graph.paths().iter().map(String::as_str), &options.layer)?;
    let mut layers = (0..plan.layers.len())
        .into_par_iter()
        .map(|i| {
            LayerTree::for_store_paths(
                graph.store_dir(),
                &layer_paths(&graph, &plan, i),
                &options.layer,
            )
        })
        .collect::<Result<Vec<_>>>()?;
    let mut comments: Vec<String> = (0..plan.layers.len())
        .map(|i| config::store_layer_comment(&layer_paths(&graph, &plan, i)))
        .collect();
    if !custom.is_empty() {
        layers.push(custom.layer(&options.layer)?);
        comments.push(config::customisation_comment(custom));
    }
    let progress = options.progress.then(|| progress_bar(&layers));
    let layers = layers
        .into_iter()
        .map(|tree| Counted {
            tree,
            progress: progress.clone(),
        })
        .collect();
    let image = StoreImage {
        layers,
        comments,
        options,
    };
    let written = output::write_image(&image, &options.output);
    if let Some(bar) = progress {
        bar.finish_and_clear();
    }
    written
}

/// Bytes done, throughput and time left, over the layers' uncompressed length.
fn progress_bar(layers: &[LayerTree]) -> ProgressBar {
    let total = layers.iter().map(TarStream::tar_len).sum();
    let bar = ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::stderr());
    if let Ok(style) = ProgressStyle::with_template(
        "{bar:40} {bytes}/{total_bytes} {binary_bytes_per_sec} ETA {eta}",
    ) {
        bar.set_style(style);
    }
    bar
}

/// A layer that reports the bytes it writes to the progress bar.
struct Counted {
    tree: LayerTree,
    progress: Option<ProgressBar>,
}

impl TarStream for Counted {
    fn tar_len(&self) -> u64 {
        self.tree.tar_len()
    }

    fn write_to(&self, out: &mut dyn Write) -> Result<()> {
        match &self.progress {
            Some(bar) => self.tree.write_to(&mut CountingWriter { out, bar }),
            None => self.tree.write_to(out),
        }
    }
}

struct CountingWriter<'a> {
    out: &'a mut dyn Write,
    bar: &'a ProgressBar,
}

impl Write for CountingWriter<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.out.write(buf)?;
        self.bar.inc(n as u64);
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.out.flush()
    }
}
