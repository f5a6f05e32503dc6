//! The stages in order, as the command line runs them: closure → plan → base → layers → config
//! → output. Each stage is its own module; this one only hands data from one to the next.

use std::io::Write;
use std::path::PathBuf;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use rayon::prelude::*;
use serde_json::{Map, Value, json};

use crate::base::{BaseBlob, BaseImage, BaseOptions, SpooledTar};
use crate::closure::{ClosureGraph, LoadOptions};
use crate::config::{self, ImageConfig, Platform};
use crate::error::{Error, Result};
use crate::layer::{self, Customisation, LayerOptions, LayerTree};
use crate::output::{self, Compression, Format, ImageSource, Layer, OutputOptions, Written};
use crate::plan::{self, Budget, Layering, Plan, PreviousPlan};
use crate::tarball::TarStream;

/// Where the closure comes from and how it is split.
#[derive(Clone, Debug)]
pub struct PlanOptions {
    pub closures: Vec<PathBuf>,
    pub closure_key: Option<String>,
    pub max_layers: usize,
    /// False: the closure is read (to check contents) but no store layer is written, as
    /// dockerTools' `includeStorePaths = false`.
    pub include_store_paths: bool,
    pub layering: Layering,
    /// The plan of the last release, for `Layering::Reuse`.
    pub previous_plan: Option<PathBuf>,
}

/// What goes into the image config besides the layers.
#[derive(Clone, Debug, Default)]
pub struct ConfigOptions {
    /// None: the base image's platform, or this machine's.
    pub platform: Option<Platform>,
    pub created: String,
    /// `--config FILE`, checked.
    pub user: Map<String, Value>,
    pub env: Vec<String>,
    pub labels: Vec<(String, String)>,
}

/// Everything `layered-gen` needs to write an image.
#[derive(Clone, Debug)]
pub struct BuildOptions {
    /// Show a progress bar on stderr (the caller checks that it is a terminal).
    pub progress: bool,
    pub plan: PlanOptions,
    pub layer: LayerOptions,
    pub customisation: Customisation,
    pub config: ConfigOptions,
    pub output: OutputOptions,
    pub base: Option<BaseOptions>,
    /// Rewrite compressed base layers as plain tar (`--base-layers decompress`).
    pub decompress_base_layers: bool,
}

/// Reads the closure and plans its layers around the base's and the customisation layer.
pub fn plan(
    options: &PlanOptions,
    base_layers: usize,
    customisation_layer: bool,
) -> Result<(ClosureGraph, Plan)> {
    let graph = ClosureGraph::load(
        &options.closures,
        &LoadOptions {
            closure_key: options.closure_key.clone(),
        },
    )?;
    let budget = Budget {
        max_layers: options.max_layers,
        base_layers,
        customisation_layer,
    };
    let previous = options
        .previous_plan
        .as_deref()
        .map(PreviousPlan::read)
        .transpose()?;
    if previous.is_some() && options.layering != Layering::Reuse {
        return Err(Error::new("--previous-plan needs --layering reuse"));
    }
    let mut plan = plan::plan(&graph, budget, options.layering, previous.as_ref())?;
    if !options.include_store_paths {
        plan.layers.clear();
    }
    Ok((graph, plan))
}

/// `layered-gen plan`: the plan as JSON, base layers first.
pub fn plan_json(
    options: &PlanOptions,
    base: Option<&BaseOptions>,
    platform: Option<&Platform>,
    customisation_layer: bool,
) -> Result<String> {
    let base = base.map(|b| BaseImage::load(b, platform)).transpose()?;
    let base_layers = base.as_ref().map_or(0, |b| b.layers.len());
    let (graph, plan) = plan(options, base_layers, customisation_layer)?;
    let base_json: Vec<Value> = base
        .iter()
        .flat_map(|b| b.layers.iter())
        .enumerate()
        .map(|(index, l)| {
            json!({
                "index": index,
                "kind": "base",
                "file": l.name,
                "digest": l.digest,
                "diffId": l.diff_id,
                "size": l.size,
            })
        })
        .collect();
    plan.to_json(&graph, base_json)
}

fn layer_paths<'g>(graph: &'g ClosureGraph, plan: &Plan, index: usize) -> Vec<&'g str> {
    plan.layers[index].iter().map(|&p| graph.path(p)).collect()
}

/// The image's layers as the pipeline holds them.
enum ImageLayer<'a> {
    Base(BaseBlob<'a>),
    DecompressedBase(SpooledTar),
    Built(Counted),
}

struct Image<'a> {
    layers: Vec<ImageLayer<'a>>,
    config: ImageConfig,
    /// One history comment per layer we add.
    comments: Vec<String>,
}

impl ImageSource for Image<'_> {
    fn layer_count(&self) -> usize {
        self.layers.len()
    }

    fn layer(&self, index: usize) -> Result<Layer<'_>> {
        Ok(match &self.layers[index] {
            ImageLayer::Base(blob) => Layer::Blob(blob),
            ImageLayer::DecompressedBase(tar) => Layer::Tar(tar),
            ImageLayer::Built(tar) => Layer::Tar(tar),
        })
    }

    fn config(&self, diff_ids: &[String]) -> Result<Vec<u8>> {
        Ok(self.config.to_json(diff_ids, &self.comments))
    }
}

/// The platform of the image: as asked, else the base's, else this machine's.
fn platform(asked: Option<&Platform>, base: Option<&BaseImage>) -> Result<Platform> {
    let Some(base) = base else {
        return Ok(asked.cloned().unwrap_or_else(Platform::host));
    };
    let (architecture, variant, os) = base.platform();
    let theirs = Platform {
        architecture,
        variant,
        os,
    };
    match asked {
        Some(asked) if asked.architecture != theirs.architecture || asked.os != theirs.os => {
            Err(Error::new(format!(
                "--architecture asks for {}, but the base image {} is {}",
                asked.describe(),
                base.describe(),
                theirs.describe()
            )))
        }
        _ => Ok(theirs),
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
    let base = options
        .base
        .as_ref()
        .map(|b| BaseImage::load(b, options.config.platform.as_ref()))
        .transpose()?;
    if let Some(base) = &base {
        check_base_compression(base, options)?;
    }
    let base_count = base.as_ref().map_or(0, |b| b.layers.len());
    let (graph, plan) = plan(&options.plan, base_count, !custom.is_empty())?;
    for path in &custom.contents {
        if graph.index_of(path).is_none() {
            return Err(Error::new(format!(
                "--contents {path} is not in the closure; the closure must include the \
                 contents (export their references graph)"
            )));
        }
    }
    if options.plan.include_store_paths {
        layer::check_sources(graph.paths().iter().map(String::as_str), &options.layer)?;
    }
    let mut built = (0..plan.layers.len())
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
        built.push(custom.layer(&options.layer)?);
        comments.push(config::customisation_comment(custom));
    }

    let mut layers = Vec::new();
    if let Some(base) = &base {
        for index in 0..base.layers.len() {
            layers.push(if options.decompress_base_layers {
                ImageLayer::DecompressedBase(base.decompressed(index, &std::env::temp_dir())?)
            } else {
                ImageLayer::Base(base.blob(index))
            });
        }
    }
    let progress = options.progress.then(|| progress_bar(&built));
    layers.extend(built.into_iter().map(|tree| {
        ImageLayer::Built(Counted {
            tree,
            progress: progress.clone(),
        })
    }));

    let base_runtime = base
        .as_ref()
        .map(BaseImage::runtime_config)
        .unwrap_or_default();
    let image = Image {
        layers,
        comments,
        config: ImageConfig {
            platform: platform(options.config.platform.as_ref(), base.as_ref())?,
            created: options.config.created.clone(),
            base_history: base.as_ref().map(BaseImage::history).unwrap_or_default(),
            runtime: config::runtime_config(
                &base_runtime,
                &options.config.user,
                &options.config.env,
                &options.config.labels,
            )?,
        },
    };
    let written = output::write_image(&image, &options.output);
    if let Some(bar) = progress {
        bar.finish_and_clear();
    }
    written
}

/// docker load may not read zstd layers: a zstd base into a docker-archive needs decompressing.
fn check_base_compression(base: &BaseImage, options: &BuildOptions) -> Result<()> {
    let zstd = base
        .layers
        .iter()
        .position(|l| matches!(l.compression, Compression::Zstd { .. }));
    if let (Some(index), Format::DockerArchive, false) =
        (zstd, options.output.format, options.decompress_base_layers)
    {
        return Err(Error::new(format!(
            "the base image {} has zstd-compressed layers (layer {index}: {}), which docker \
             load may not read from a docker-archive; choose --format oci, or pass \
             --base-layers decompress to rewrite them as plain tar",
            base.describe(),
            base.layers[index].name
        )));
    }
    Ok(())
}

/// Bytes done, throughput and time left, over the built layers' uncompressed length.
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
            Some(bar) => {
                let mut counting = CountingWriter {
                    out,
                    bar,
                    uncounted: 0,
                };
                let result = self.tree.write_to(&mut counting);
                bar.inc(counting.uncounted);
                result
            }
            None => self.tree.write_to(out),
        }
    }
}

/// Counts bytes for the progress bar, telling it every few MiB (not on each small write).
struct CountingWriter<'a> {
    out: &'a mut dyn Write,
    bar: &'a ProgressBar,
    uncounted: u64,
}

impl Write for CountingWriter<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.out.write(buf)?;
        self.uncounted += n as u64;
        if self.uncounted >= 4 << 20 {
            self.bar.inc(self.uncounted);
            self.uncounted = 0;
        }
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.out.flush()
    }
}
