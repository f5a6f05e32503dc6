//! The stages in order, as the command line runs them: closure → plan → base → layers → config
//! → output. Each stage is its own module; this one only hands data from one to the next.

use std::collections::{HashMap, HashSet};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::thread::Scope;

use rayon::prelude::*;

use crate::base::prebuilt::{self, BlobCheck, PrebuiltBlob, PrebuiltLayer};
use crate::base::{BaseBlob, BaseImage, BaseLayers, BaseOptions, SpooledTar};
use crate::closure::{ClosureGraph, LoadOptions};
use crate::codec::Codec;
use crate::config::{self, HistoryStyle, ImageConfig, Platform, RuntimeOptions};
use crate::diff;
use crate::digest::Digest;
use crate::error::{Error, Result, ResultExt, Setting, shown};
use crate::export;
pub use crate::export::Exported;
use crate::image_spec::{BlobCompression, LayerFile, PlatformSpec};
use crate::layer::{self, Customisation, LayerOptions, LayerTree, TarCompat};
use crate::output::{
    self, Attachment, BlobSource, CacheKey, Compression, Destination, Format, ImageSource,
    IndexWritten, LayerSet, LayerSource, OutputOptions, PlatformImage, Shape, Sink, StoredImage,
    Subject, Written,
};
use crate::plan::{self, BaseKind, BaseLayerJson, Budget, Layering, Plan, PreviousPlan};
use crate::progress::Progress;
use crate::provenance::{self, ProvenanceOptions};
use crate::sbom::{self, ImageFacts, PackageMetas, SbomFormat, SbomOptions};
use crate::tarball::{StartedTar, TarStream};

/// Where the closure comes from and how it is split.
#[derive(Clone, Debug)]
pub struct PlanOptions {
    pub closures: Vec<PathBuf>,
    pub closure_key: Option<String>,
    /// The most bytes one closure file may hold (0: the default).
    pub max_closure_size: u64,
    pub max_layers: usize,
    /// False: the closure is read (to check contents) but no store layer is written, as
    /// dockerTools' `includeStorePaths = false`.
    pub include_store_paths: bool,
    pub layering: Layering,
    /// The plan of the last release, for `Layering::Reuse`.
    pub previous_plan: Option<PathBuf>,
    /// nixpkgs' layeringPipeline, instead of `layering`.
    pub layering_pipeline: Option<PathBuf>,
    /// Closure paths left out of the image (their references stay).
    pub exclude: Vec<String>,
}

/// Everything `layered-gen` needs to write an image.
#[derive(Clone, Debug)]
pub struct BuildOptions {
    /// Show a progress bar on stderr (the caller checks that it is a terminal).
    pub progress: bool,
    /// Print the plan JSON on stderr before writing (dockerTools' `debug`).
    pub print_plan: bool,
    pub plan: PlanOptions,
    pub layer: LayerOptions,
    pub customisation: Customisation,
    /// The platform asked for; None: the base image's, or this machine's.
    pub platform: Option<Platform>,
    pub config: RuntimeOptions,
    pub output: OutputOptions,
    pub base: Option<BaseOptions>,
    pub base_layers: BaseLayers,
    /// Layer directories (`layered-gen layer`) that go after the base's, as they are.
    pub prebuilt: Vec<PathBuf>,
    /// How much of their blobs is checked as they are copied.
    pub prebuilt_check: BlobCheck,
    /// The documents about the image written beside it.
    pub documents: Documents,
}

/// Documents about the image, from the closure: written beside the image once it is made
/// (see [`output::Attachment`]), or into it.
#[derive(Clone, Debug, Default)]
pub struct Documents {
    /// SBOMs, one per format.
    pub sbom: Vec<SbomFormat>,
    /// Where in the image the closure's CycloneDX SBOM goes, if it does.
    pub sbom_in_image: Option<String>,
    /// An in-toto SLSA provenance statement.
    pub provenance: bool,
    /// What the packages' `meta` says, for the SBOMs.
    pub meta: PackageMetas,
}

impl Documents {
    fn beside(&self) -> bool {
        !self.sbom.is_empty() || self.provenance
    }
}

/// What `layered-gen layer` makes: one layer directory (see [`crate::base::prebuilt`]).
#[derive(Clone, Debug)]
pub struct LayerDirOptions {
    pub closures: Vec<PathBuf>,
    pub load: LoadOptions,
    /// Layers this one goes on: their store paths are left out of it.
    pub below: Vec<PathBuf>,
    /// Exactly these store paths, in this order (a planned layer); empty: the whole closure
    /// but the paths of `below`, in nixpkgs' order (by name, then hash).
    pub paths: Vec<String>,
    /// Store paths whose trees are linked at `/` in the layer, as an image's contents are.
    pub contents: Vec<String>,
    pub compressions: Vec<BlobCompression>,
    pub layer: LayerOptions,
    pub output: PathBuf,
}

/// Builds one layer directory: its store paths chosen, walked, and written once per
/// compression.
pub fn build_layer_dir(options: &LayerDirOptions) -> Result<LayerFile> {
    let graph = ClosureGraph::load(&options.closures, &options.load)?;
    let below = prebuilt::load_all(&options.below)?;
    let held: HashMap<&str, &PrebuiltLayer> = below
        .iter()
        .flat_map(|l| l.layer.paths.iter().map(move |p| (p.as_str(), l)))
        .collect();
    let paths: Vec<&str> = if options.paths.is_empty() {
        let mut paths: Vec<&str> = graph
            .paths()
            .iter()
            .map(String::as_str)
            .filter(|p| !held.contains_key(p))
            .collect();
        paths.sort_by(|a, b| plan::path_key(a).cmp(&plan::path_key(b)));
        paths
    } else {
        let mut seen = HashSet::new();
        for path in &options.paths {
            if graph.index_of(path).is_none() {
                return Err(Error::value(format!(
                    "the store path {} is not in the closure",
                    shown(path)
                ))
                .about(Setting::Path));
            }
            if let Some(layer) = held.get(path.as_str()) {
                return Err(Error::value(format!(
                    "the store path {} is in the layer {} already",
                    shown(path),
                    layer.describe()
                ))
                .about(Setting::Path));
            }
            if !seen.insert(path.as_str()) {
                return Err(
                    Error::value(format!("the store path {} is given twice", shown(path)))
                        .about(Setting::Path),
                );
            }
        }
        options.paths.iter().map(String::as_str).collect()
    };
    if paths.is_empty() {
        return Err(Error::value(
            "the layer would hold no store path: every path of the closure is in the layers it              goes on",
        )
        .about(Setting::Layer));
    }
    for path in &options.contents {
        if graph.index_of(path).is_none() {
            return Err(Error::value(format!(
                "the contents {} is not in the closure",
                shown(path)
            ))
            .about(Setting::Contents));
        }
    }
    layer::check_sources(paths.iter().copied(), &options.layer)?;
    let mut tree = LayerTree::for_store_paths(graph.store_dir(), &paths, &options.layer)?;
    if !options.contents.is_empty() {
        let links = Customisation {
            contents: options.contents.clone(),
            ..Customisation::default()
        };
        tree = tree.with_links(links.layer(&options.layer)?)?;
    }
    output::write_layer_dir(&options.output, &tree, &paths, &options.compressions)
}

/// Reads the closure and plans its layers around the base's, the prebuilt ones (whose paths
/// are left out of the plan) and the customisation layer.
pub fn plan(
    options: &PlanOptions,
    base_layers: usize,
    prebuilt: &[PrebuiltLayer],
    customisation_layer: bool,
) -> Result<(ClosureGraph, Plan)> {
    let graph = ClosureGraph::load(
        &options.closures,
        &LoadOptions {
            closure_key: options.closure_key.clone(),
            max_size: options.max_closure_size,
            exclude: options.exclude.clone(),
        },
    )?;
    let graph = without_prebuilt(graph, prebuilt)?;
    let budget = Budget {
        max_layers: options.max_layers,
        base_layers,
        prebuilt_layers: prebuilt.len(),
        customisation_layer,
    };
    if graph.is_empty() && !prebuilt.is_empty() {
        budget.check_without_store_layers()?;
        return Ok((graph, Plan::empty(budget, options.layering)));
    }
    let previous = options
        .previous_plan
        .as_deref()
        .map(PreviousPlan::read)
        .transpose()?;
    if previous.is_some() && options.layering != Layering::Reuse {
        return Err(
            Error::value("a previous plan is only used by the reuse layering")
                .about(Setting::PreviousPlan),
        );
    }
    let mut plan = match &options.layering_pipeline {
        Some(file) => plan::plan_by_pipeline(&graph, budget, &plan::Pipeline::read(file)?)?,
        None => plan::plan(&graph, budget, options.layering, previous.as_ref())?,
    };
    if !options.include_store_paths {
        plan.layers.clear();
    }
    Ok((graph, plan))
}

/// The graph without the paths prebuilt layers hold. Each must be in the closure: a layer's
/// paths reference paths the image must also hold, which only the closure vouches for.
fn without_prebuilt(graph: ClosureGraph, prebuilt: &[PrebuiltLayer]) -> Result<ClosureGraph> {
    if prebuilt.is_empty() {
        return Ok(graph);
    }
    let mut held = vec![false; graph.len()];
    for layer in prebuilt {
        for path in &layer.layer.paths {
            match graph.index_of(path) {
                Some(x) => held[x] = true,
                None => {
                    return Err(Error::value(format!(
                        "the layer {} holds {}, which is not in the closure: give the closure \
                         of the image with the layer's paths in it",
                        layer.describe(),
                        shown(path)
                    ))
                    .about(Setting::Layer));
                }
            }
        }
    }
    let keep: Vec<usize> = (0..graph.len()).filter(|&x| !held[x]).collect();
    let edges: Vec<(usize, usize)> = (0..graph.len())
        .flat_map(|a| graph.references(a).iter().map(move |&b| (a, b)))
        .collect();
    graph.part(&keep, edges.into_iter())
}

/// `layered-gen plan`: the plan as JSON, base layers first.
pub fn plan_json(
    options: &PlanOptions,
    base: Option<&BaseOptions>,
    platform: Option<&Platform>,
    prebuilt: &[PathBuf],
    customisation_layer: bool,
) -> Result<String> {
    let prebuilt = prebuilt::load_all(prebuilt)?;
    let base = base
        // `plan` writes no image: a whole-compressed base is spooled under $TMPDIR.
        .map(|b| BaseImage::load(b, platform, &std::env::temp_dir()))
        .transpose()?;
    let base_layers = base_layers_json(base.as_ref());
    let (graph, plan) = plan(options, base_layers.len(), &prebuilt, customisation_layer)?;
    plan.to_json(&graph, &base_layers)
}

/// The base image's layers as the plan JSON lists them.
fn base_layers_json(base: Option<&BaseImage>) -> Vec<BaseLayerJson> {
    base.iter()
        .flat_map(|b| b.layers.iter())
        .enumerate()
        .map(|(index, l)| BaseLayerJson {
            index,
            kind: BaseKind::Base,
            file: l.name.clone(),
            digest: l.digest.clone(),
            diff_id: l.diff_id.clone(),
            size: l.size,
        })
        .collect()
}

/// `layered-gen merge`: images to put into one docker-archive.
#[derive(Clone, Debug)]
pub struct MergeOptions {
    pub images: Vec<PathBuf>,
    pub sink: Sink,
    pub archive_compression: Compression,
    pub mtime: u64,
}

/// What `merge` wrote.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Merged {
    pub images: usize,
    pub layers: usize,
}

/// Several images in one docker-archive, layers they share stored once.
pub fn merge(options: &MergeOptions) -> Result<Merged> {
    let scratch = options.sink.scratch_dir();
    let mut images = Vec::new();
    for path in &options.images {
        let base = BaseOptions {
            path: path.clone(),
            tag: None,
        };
        images.extend(BaseImage::load_all(&base, None, &scratch)?);
    }
    let blobs: Vec<Vec<BaseBlob>> = images
        .iter()
        .map(|image| (0..image.layers.len()).map(|i| image.blob(i)).collect())
        .collect();
    let stored: Vec<StoredImage> = images
        .iter()
        .zip(&blobs)
        .map(|(image, blobs)| StoredImage {
            config: &image.config_bytes,
            // OCI layouts also name images by their tag alone; docker load takes name:tag.
            repo_tags: image
                .names
                .iter()
                .filter(|n| n.rsplit('/').next().is_some_and(|last| last.contains(':')))
                .cloned()
                .collect(),
            layers: image
                .layers
                .iter()
                .zip(blobs)
                .map(|(layer, blob)| {
                    // Equal diff_ids are equal content; a legacy layer, which has none, is
                    // its own.
                    let key = layer
                        .diff_id
                        .clone()
                        .unwrap_or_else(|| format!("{}#{}", image.describe(), layer.name));
                    (key, blob as &dyn BlobSource)
                })
                .collect(),
        })
        .collect();
    let layers = output::write_merged(
        &stored,
        &options.sink,
        options.archive_compression,
        options.mtime,
    )?;
    Ok(Merged {
        images: images.len(),
        layers,
    })
}

/// `layered-gen index`: images of several platforms to combine into one.
#[derive(Clone, Debug)]
pub struct IndexOptions {
    pub images: Vec<PathBuf>,
    /// Where the multi-platform image goes, named and tagged.
    pub output: OutputOptions,
}

/// One multi-platform image from images of several platforms, each platform taken from its
/// config. Two images of one platform, or an image whose config names no platform, are refused.
pub fn index(options: &IndexOptions) -> Result<IndexWritten> {
    let scratch = options.output.scratch_dir();
    let mut images = Vec::with_capacity(options.images.len());
    for path in &options.images {
        let base = BaseOptions {
            path: path.clone(),
            tag: None,
        };
        let image = BaseImage::load(&base, None, &scratch)?;
        let platform = image.platform();
        if image.config.architecture.is_empty() || image.config.os.is_empty() {
            return Err(Error::input(
                shown(&path.to_string_lossy()),
                "its config names no platform (architecture and os), which a multi-platform \
                 image needs for every image",
            )
            .about(Setting::FromImage));
        }
        if let Some((other, _)) = images
            .iter()
            .find(|(_, i): &&(PathBuf, BaseImage)| i.platform() == platform)
        {
            return Err(Error::value(format!(
                "{} and {} are both {}; a multi-platform image holds one image per platform",
                shown(&other.to_string_lossy()),
                shown(&path.to_string_lossy()),
                platform.describe()
            ))
            .about(Setting::FromImage));
        }
        images.push((path.clone(), image));
    }
    let blobs: Vec<Vec<BaseBlob>> = images
        .iter()
        .map(|(_, image)| (0..image.layers.len()).map(|i| image.blob(i)).collect())
        .collect();
    let platform_images: Vec<PlatformImage> = images
        .iter()
        .zip(&blobs)
        .map(|((_, image), blobs)| {
            let platform = image.platform();
            PlatformImage {
                config: &image.config_bytes,
                platform: PlatformSpec {
                    architecture: platform.architecture,
                    os: platform.os,
                    variant: platform.variant,
                },
                layers: blobs.iter().map(|b| b as &dyn BlobSource).collect(),
            }
        })
        .collect();
    output::write_index(&platform_images, &options.output)
}

/// `layered-gen diff`: why two images differ.
pub fn diff(a: &BaseOptions, b: &BaseOptions, platform: Option<&Platform>) -> Result<diff::Report> {
    // diff writes no image: a whole-compressed archive is spooled under $TMPDIR.
    let scratch = std::env::temp_dir();
    let load = |options: &BaseOptions| {
        BaseImage::load(options, platform, &scratch)
            .map_err(|e| e.context(format!("image {}", shown(&options.path.to_string_lossy()))))
    };
    diff::diff(&load(a)?, &load(b)?)
}

/// `layered-gen export`: an image to flatten into a root filesystem.
#[derive(Clone, Debug)]
pub struct ExportOptions {
    pub image: BaseOptions,
    pub platform: Option<Platform>,
    pub sink: Sink,
    pub archive_compression: Compression,
}

/// The image's layers applied in order, as one root filesystem tarball.
pub fn export(options: &ExportOptions) -> Result<Exported> {
    let scratch = options.sink.scratch_dir();
    let image = BaseImage::load(&options.image, options.platform.as_ref(), &scratch)?;
    output::sink::write_stream(&options.sink, options.archive_compression, |out| {
        export::export(&image, &scratch, out)
    })
}

/// Builds the image: the whole job of `layered-gen --closure ... -o ...`.
pub fn build(options: &BuildOptions) -> Result<Written> {
    check_documents(options)?;
    let custom = &options.customisation;
    custom.check()?;
    let base = load_base(options)?;
    let base_count = base.as_ref().map_or(0, |b| b.layers.len());
    let prebuilt = load_prebuilt(options)?;
    let (graph, plan) = plan(
        &options.plan,
        base_count,
        &prebuilt,
        has_customisation_layer(options),
    )?;
    if options.print_plan {
        let json = plan.to_json(&graph, &base_layers_json(base.as_ref()))?;
        writeln!(std::io::stderr(), "{json}")
            .map_err(|e| Error::io("writing", Path::new("standard error"), e))?;
    }
    for path in &custom.contents {
        let prebuilt_holds = |path: &String| prebuilt.iter().any(|l| l.layer.paths.contains(path));
        if graph.index_of(path).is_none() && !prebuilt_holds(path) {
            return Err(Error::value(format!(
                "the contents {} is not in the closure; the closure must include the contents \
                 (export their references graph)",
                shown(path)
            ))
            .about(Setting::Contents));
        }
    }
    custom.check_removals(graph.store_dir(), graph.paths())?;
    if options.plan.include_store_paths {
        layer::check_sources(graph.paths().iter().map(String::as_str), &options.layer)?;
    }
    // The SBOM that goes into the image is a file of the customisation layer.
    let scratch = options.output.scratch_dir();
    let in_image = sbom_in_image(&graph, options, &scratch)?;
    let with_sbom;
    let options = match &in_image {
        Some(dir) => {
            with_sbom = BuildOptions {
                customisation: Customisation {
                    extra_dirs: [
                        options.customisation.extra_dirs.clone(),
                        vec![dir.path().to_path_buf()],
                    ]
                    .concat(),
                    ..options.customisation.clone()
                },
                ..options.clone()
            };
            &with_sbom
        }
        None => options,
    };
    let built = build_layers(&graph, &plan, options)?;
    let progress = Progress::new(
        options.progress,
        built.iter().map(|l| l.tree.tar_len()).sum(),
    );
    let layer_of = layer_of_paths(&graph, &plan, &prebuilt);
    let image = Image {
        layers: image_layers(base.as_ref(), &prebuilt, built, &progress, options)?,
        config: image_config(base.as_ref(), options)?,
        about: options.documents.beside().then_some(About {
            graph: &graph,
            layer_of,
            options,
        }),
    };
    let written = output::write_image(&image, &options.output);
    progress.finish();
    written
}

/// Reads the prebuilt layers, checks that they hold different paths, and picks the blob each
/// gives the destination (see [`prebuilt_blob`]).
fn load_prebuilt(options: &BuildOptions) -> Result<Vec<PrebuiltLayer>> {
    let layers = prebuilt::load_all(&options.prebuilt)?;
    for layer in &layers {
        prebuilt_blob(layer, options)?;
    }
    Ok(layers)
}

/// The blob of a prebuilt layer the image takes: the one compressed as the destination's layers
/// are; into a docker-archive of plain layers, its gzip one (docker load and skopeo read
/// compressed members, so nothing is decompressed or compressed again).
fn prebuilt_blob<'a>(layer: &'a PrebuiltLayer, options: &BuildOptions) -> Result<PrebuiltBlob<'a>> {
    let destination = &options.output.destination;
    let wanted = destination.layer_compression().codec();
    let docker_archive = destination.format() == Format::DockerArchive;
    layer
        .blob(wanted, options.prebuilt_check)
        .or_else(|| match (docker_archive, wanted) {
            (true, Codec::None) => layer.blob(Codec::Gzip, options.prebuilt_check),
            _ => None,
        })
        .ok_or_else(|| {
            Error::value(format!(
                "the layer {} has {} blobs, and this image's layers are {}: build the layer \
                 with that compression too (layered-gen layer --compression, buildLayer's \
                 compressor)",
                layer.describe(),
                layer.compressions(),
                wanted.name()
            ))
            .about(Setting::Layer)
        })
}

/// Reads the base image, if any, and checks that the output can carry its layers.
fn load_base(options: &BuildOptions) -> Result<Option<BaseImage>> {
    let Some(base_options) = &options.base else {
        return Ok(None);
    };
    let base = BaseImage::load(
        base_options,
        options.platform.as_ref(),
        &options.output.scratch_dir(),
    )?;
    // docker load may not read zstd layers: a zstd base into a docker-archive needs decompressing.
    let zstd = base.layers.iter().position(|l| l.codec == Codec::Zstd);
    if let (Some(index), Format::DockerArchive, BaseLayers::Keep) = (
        zstd,
        options.output.destination.format(),
        options.base_layers,
    ) {
        return Err(Error::value(format!(
            "the base image {} has zstd-compressed layers (layer {index}: {}), which docker \
             load may not read from a docker-archive; write the OCI format, or have the base \
             layers decompressed to plain tar",
            shown(&base.describe()),
            shown(&base.layers[index].name)
        ))
        .about(Setting::BaseLayers));
    }
    Ok(Some(base))
}

/// Whether the image ends in a customisation layer: when there is something to put in it, and
/// always in nixpkgs' format, as dockerTools always writes one.
fn has_customisation_layer(options: &BuildOptions) -> bool {
    !options.customisation.is_empty() || options.layer.tar_compat == TarCompat::Nixpkgs
}

/// A layer we build: its tarball, and a label for errors ("layer 3 (/nix/store/…-glibc)").
struct BuiltLayer {
    tree: LayerTree,
    label: String,
    comment: String,
    /// The layer cache's key for it (store layers only).
    key: Option<CacheKey>,
}

/// The store layers of the plan, then the customisation layer.
fn build_layers(
    graph: &ClosureGraph,
    plan: &Plan,
    options: &BuildOptions,
) -> Result<Vec<BuiltLayer>> {
    let first_index = plan.budget.base_layers + plan.budget.prebuilt_layers;
    // Plain output leaves the workers idle: they read the layers' files too.
    let layer_options = LayerOptions {
        parallel_reads: options.output.destination.layer_compression() == Compression::None
            && options.output.destination.archive_compression() == Compression::None,
        ..options.layer.clone()
    };
    let mut built = (0..plan.layers.len())
        .into_par_iter()
        .map(|i| {
            let paths: Vec<&str> = plan.layers[i].iter().map(|&p| graph.path(p)).collect();
            let label = format!("layer {} ({})", first_index + i, shown(paths[0]));
            let tree = LayerTree::for_store_paths(graph.store_dir(), &paths, &layer_options)
                .map_err(|e| e.context(&label))?;
            let hashed: Vec<(&str, Option<&str>)> = plan.layers[i]
                .iter()
                .map(|&p| (graph.path(p), graph.nar_hash(p)))
                .collect();
            let key = CacheKey::new(
                layer::store_layer_key(graph.store_dir(), &hashed, &options.layer),
                Shape {
                    tar_len: tree.tar_len(),
                    headers: tree.headers_digest().map(str::to_string),
                },
            );
            let comment = match options.layer.tar_compat {
                TarCompat::None => config::store_layer_comment(&paths),
                TarCompat::Nixpkgs => config::nixpkgs_layer_comment(&paths),
            };
            Ok(BuiltLayer {
                tree,
                label,
                comment,
                key: Some(key),
            })
        })
        .collect::<Result<Vec<_>>>()?;
    let custom = &options.customisation;
    if has_customisation_layer(options) {
        let comment = match options.layer.tar_compat {
            TarCompat::None => config::customisation_comment(custom),
            TarCompat::Nixpkgs => {
                let sources: Vec<String> = (custom.contents.iter().cloned())
                    .chain(custom.extra_dirs.iter().map(|d| d.display().to_string()))
                    .collect();
                config::nixpkgs_layer_comment(
                    &sources.iter().map(String::as_str).collect::<Vec<_>>(),
                )
            }
        };
        built.push(BuiltLayer {
            tree: custom.layer(&options.layer)?,
            label: format!(
                "layer {} (the customisation layer)",
                first_index + plan.layers.len()
            ),
            comment,
            key: None,
        });
    }
    Ok(built)
}

/// Strings as the comment functions take them.
fn strs(paths: &[String]) -> Vec<&str> {
    paths.iter().map(String::as_str).collect()
}

/// The image's layers as the output stage takes them: the base's, the prebuilt ones, then
/// ours.
fn image_layers<'a>(
    base: Option<&'a BaseImage>,
    prebuilt: &'a [PrebuiltLayer],
    built: Vec<BuiltLayer>,
    progress: &Progress,
    options: &BuildOptions,
) -> Result<Vec<ImageLayer<'a>>> {
    let mut layers = Vec::new();
    if let Some(base) = base {
        for index in 0..base.layers.len() {
            layers.push(match options.base_layers {
                BaseLayers::Decompress => ImageLayer::DecompressedBase(
                    base.decompressed(index, &options.output.scratch_dir())?,
                ),
                BaseLayers::Keep => ImageLayer::Base(base.blob(index)),
            });
        }
    }
    for layer in prebuilt {
        let comment = match options.layer.tar_compat {
            TarCompat::None => config::store_layer_comment(&strs(&layer.layer.paths)),
            TarCompat::Nixpkgs => config::nixpkgs_layer_comment(&strs(&layer.layer.paths)),
        };
        layers.push(ImageLayer::Prebuilt(
            prebuilt_blob(layer, options)?,
            comment,
        ));
    }
    layers.extend(built.into_iter().map(|layer| {
        ImageLayer::Built(Box::new(Labelled {
            layer,
            progress: progress.clone(),
        }))
    }));
    Ok(layers)
}

/// The config of the image: platform, history and the runtime config merged over the base's.
fn image_config(base: Option<&BaseImage>, options: &BuildOptions) -> Result<ImageConfig> {
    let base_platform = base.map(|b| (b.platform(), b.describe()));
    let base_runtime = base.map(BaseImage::runtime_config).unwrap_or_default();
    Ok(ImageConfig {
        platform: Platform::reconcile(options.platform.as_ref(), base_platform)?,
        created: options.config.created.clone(),
        base_history: base.map(BaseImage::history).unwrap_or_default(),
        history_style: match options.layer.tar_compat {
            TarCompat::None => HistoryStyle::Ours,
            TarCompat::Nixpkgs => HistoryStyle::Nixpkgs,
        },
        runtime: config::runtime_config(&base_runtime, &options.config)?,
    })
}

/// The image's layers as the pipeline holds them.
enum ImageLayer<'a> {
    Base(BaseBlob<'a>),
    /// A prebuilt layer's blob, and its history comment.
    Prebuilt(PrebuiltBlob<'a>, String),
    DecompressedBase(SpooledTar),
    Built(Box<Labelled>),
}

struct Image<'a> {
    layers: Vec<ImageLayer<'a>>,
    config: ImageConfig,
    /// What the documents beside the image are made from, when asked for.
    about: Option<About<'a>>,
}

/// The closure and options an image's documents describe.
struct About<'a> {
    graph: &'a ClosureGraph,
    /// Store path → the image layer holding it.
    layer_of: HashMap<String, usize>,
    options: &'a BuildOptions,
}

impl LayerSet for Image<'_> {
    fn layer_count(&self) -> usize {
        self.layers.len()
    }

    fn layer(&self, index: usize) -> Result<LayerSource<'_>> {
        Ok(match &self.layers[index] {
            ImageLayer::Base(blob) => LayerSource::Blob(blob),
            ImageLayer::Prebuilt(blob, _) => LayerSource::Blob(blob),
            ImageLayer::DecompressedBase(tar) => LayerSource::Tar(tar),
            ImageLayer::Built(tar) => LayerSource::Tar(tar.as_ref()),
        })
    }

    fn skipped(&self, index: usize) {
        if let ImageLayer::Built(built) = &self.layers[index] {
            built.progress.skip(built.layer.tree.tar_len());
        }
    }

    fn layer_key(&self, index: usize) -> Option<CacheKey> {
        match &self.layers[index] {
            ImageLayer::Base(_) | ImageLayer::Prebuilt(..) => None,
            // A base layer is named by its content; decompressed, it is that content.
            ImageLayer::DecompressedBase(tar) => Some(CacheKey::new(
                format!("decompressed base layer {}", tar.diff_id),
                Shape {
                    tar_len: tar.tar_len(),
                    headers: None,
                },
            )),
            ImageLayer::Built(built) => built.layer.key.clone(),
        }
    }
}

impl ImageSource for Image<'_> {
    fn config(&self, diff_ids: &[Digest]) -> Result<Vec<u8>> {
        let comments: Vec<String> = self
            .layers
            .iter()
            .filter_map(|l| match l {
                ImageLayer::Prebuilt(_, comment) => Some(comment.clone()),
                ImageLayer::Built(built) => Some(built.layer.comment.clone()),
                _ => None,
            })
            .collect();
        Ok(self.config.to_json(diff_ids, &comments))
    }

    fn attachments(&self, subject: &Subject<'_>) -> Result<Vec<Attachment>> {
        match &self.about {
            Some(about) => about.documents(subject, &self.config.platform),
            None => Ok(Vec::new()),
        }
    }
}

impl About<'_> {
    /// The SBOMs and the provenance asked for, about `subject`.
    fn documents(&self, subject: &Subject<'_>, platform: &Platform) -> Result<Vec<Attachment>> {
        let documents = &self.options.documents;
        let created = &self.options.config.created;
        let attachment = |media_type: &str, file_name: &str, content: String| Attachment {
            media_type: media_type.to_string(),
            file_name: file_name.to_string(),
            created: created.clone(),
            content: content.into_bytes(),
        };
        let tag = subject.tags.first().cloned().unwrap_or_default();
        let facts = ImageFacts {
            name: subject.name.to_string(),
            tag,
            config_digest: subject.config_digest.to_string(),
            manifest_digest: subject.manifest.map(|m| m.digest.clone()),
            layer_of: self
                .layer_of
                .iter()
                .filter_map(|(path, &index)| {
                    let layer = subject.layers.get(index)?;
                    Some((path.clone(), (index, layer.diff_id.to_string())))
                })
                .collect(),
        };
        let mut made = Vec::new();
        for &format in &documents.sbom {
            let options = SbomOptions {
                created: created.clone(),
                image: Some(facts.clone()),
                meta: documents.meta.clone(),
            };
            let text = sbom::write(self.graph, format, &options)?;
            made.push(attachment(format.media_type(), format.file_name(), text));
        }
        if documents.provenance {
            let options = ProvenanceOptions {
                name: subject.name.to_string(),
                digest: subject
                    .manifest
                    .map_or_else(|| subject.config_digest.to_string(), |m| m.digest.clone()),
                parameters: build_parameters(self.options, platform),
                layers: subject
                    .layers
                    .iter()
                    .map(|l| l.digest.to_string())
                    .collect(),
            };
            let text = provenance::statement(self.graph, &options)?;
            made.push(attachment(
                provenance::MEDIA_TYPE,
                "provenance.intoto.json",
                text,
            ));
        }
        Ok(made)
    }
}

/// The options that decide an image's bytes, as its provenance states them.
fn build_parameters(options: &BuildOptions, platform: &Platform) -> serde_json::Value {
    let destination = &options.output.destination;
    let plan = &options.plan;
    serde_json::json!({
        "name": options.output.name,
        "tags": options.output.tags,
        "format": destination.format().name(),
        "layerCompression": destination.layer_compression().describe(),
        "maxLayers": plan.max_layers,
        "layering": match &plan.layering_pipeline {
            Some(_) => Layering::Pipeline.name(),
            None => plan.layering.name(),
        },
        "includeStorePaths": plan.include_store_paths,
        "exclude": plan.exclude,
        "created": options.config.created,
        "platform": platform.describe(),
        "tarCompat": options.layer.tar_compat.name(),
        "contents": options.customisation.contents,
        "layers": options.prebuilt.len(),
        "baseImage": options.base.is_some(),
    })
}

/// Store path → the position of the image layer holding it: the prebuilt layers after the
/// base's, then the planned ones.
fn layer_of_paths(
    graph: &ClosureGraph,
    plan: &Plan,
    prebuilt: &[PrebuiltLayer],
) -> HashMap<String, usize> {
    let mut layer_of = HashMap::new();
    for (i, layer) in prebuilt.iter().enumerate() {
        for path in &layer.layer.paths {
            layer_of.insert(path.clone(), plan.budget.base_layers + i);
        }
    }
    let first = plan.budget.base_layers + plan.budget.prebuilt_layers;
    for (i, layer) in plan.layers.iter().enumerate() {
        for &p in layer {
            layer_of.insert(graph.path(p).to_string(), first + i);
        }
    }
    layer_of
}

/// What stops the documents from being written, found before any layer is.
fn check_documents(options: &BuildOptions) -> Result<()> {
    let documents = &options.documents;
    if documents.beside() && matches!(options.output.destination, Destination::DockerDaemon { .. })
    {
        return Err(Error::value(
            "the Docker daemon keeps nothing beside an image: write the SBOM or provenance \
             with an image file, a layout or a push, or alone with layered-gen sbom",
        )
        .about(if documents.provenance {
            Setting::Provenance
        } else {
            Setting::Sbom
        }));
    }
    for format in &documents.sbom {
        format.check(&options.config.created)?;
    }
    if let Some(path) = &documents.sbom_in_image {
        layer::check_image_path(path).about(Setting::SbomInImage)?;
    }
    Ok(())
}

/// The closure's CycloneDX SBOM laid out at its image path in a scratch directory, for the
/// customisation layer to take in, when asked for.
fn sbom_in_image(
    graph: &ClosureGraph,
    options: &BuildOptions,
    scratch: &Path,
) -> Result<Option<tempfile::TempDir>> {
    let Some(path) = &options.documents.sbom_in_image else {
        return Ok(None);
    };
    let dir = tempfile::Builder::new()
        .prefix(".sbom-")
        .tempdir_in(scratch)
        .map_err(|e| Error::io("creating a directory in", scratch, e))?;
    let text = sbom::write(
        graph,
        SbomFormat::Cyclonedx,
        &SbomOptions {
            created: options.config.created.clone(),
            image: None,
            meta: options.documents.meta.clone(),
        },
    )?;
    layer::write_image_file(dir.path(), path, format!("{text}\n").as_bytes())
        .about(Setting::SbomInImage)?;
    Ok(Some(dir))
}

/// A built layer as it is written: counted on the progress bar, its errors labelled.
struct Labelled {
    layer: BuiltLayer,
    progress: Progress,
}

impl TarStream for Labelled {
    fn tar_len(&self) -> u64 {
        self.layer.tree.tar_len()
    }

    fn write_to(&self, out: &mut dyn Write) -> Result<()> {
        self.progress
            .counting(out, |out| self.layer.tree.write_to(out))
            .map_err(|e| e.context(&self.layer.label))
    }

    fn read_ahead<'scope>(&'scope self, scope: &'scope Scope<'scope, '_>) -> StartedTar<'scope> {
        let started = self.layer.tree.read_ahead(scope);
        Box::new(move |out| {
            self.progress
                .counting(out, started)
                .map_err(|e| e.context(&self.layer.label))
        })
    }
}
