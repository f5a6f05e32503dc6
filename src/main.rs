//! The `layered-gen` command: parses flags and calls the library.

// Input and I/O failures are errors that say what to fix, never panics: no unwrap or
// expect outside tests (an invariant that cannot fail says why where it is allowed).
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used))]

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};

use layered_gen::attrs;
use layered_gen::base::{BaseLayers, BaseOptions};
use layered_gen::closure::{ClosureGraph, LoadOptions};
use layered_gen::codec::Codec;
use layered_gen::config::{self, BaseConfig, Platform, RuntimeOptions, runtime};
use layered_gen::error::{Error, Result, ResultExt, Setting};
use layered_gen::layer::{Customisation, LayerOptions, link_contents, read_perms, record_modes};
use layered_gen::output::cache::LayerCache;
use layered_gen::output::registry::PushOptions;
use layered_gen::output::registry::client::ConnectOptions;
use layered_gen::output::registry::credentials::{Credentials, Sources};
use layered_gen::output::transport::{self, Destination, Implied, Place, Repository};
use layered_gen::output::{self, Compression, Format, IndexOutput, OutputOptions, Target};
use layered_gen::pipeline::{
    self, BuildOptions, ExportOptions, IndexOptions, MergeOptions, PlanOptions,
};
use layered_gen::plan::Layering;

/// Turn a Nix store closure into a layered, reproducible container image.
///
/// Example, from a derivation with `exportReferencesGraph = [ "closure" drv ]`:
///
///     layered-gen --closure closure --max-layers 100 --name my/app -o image.tar
#[derive(Parser, Debug)]
#[command(
    version,
    args_conflicts_with_subcommands = true,
    subcommand_negates_reqs = true
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    build: BuildArgs,
    #[command(flatten)]
    global: GlobalArgs,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Print the layer plan as JSON, without reading the store.
    ///
    /// Example: layered-gen plan --closure closure --max-layers 100
    Plan(PlanCommand),
    /// Put several images into one docker-archive, as dockerTools' mergeImages: layers they
    /// share are stored once, every image keeps its tags, `docker load` loads them all.
    ///
    /// Example: layered-gen merge app.tar db.tar -o all.tar
    Merge(MergeCommand),
    /// Flatten an image into one root filesystem tarball: its layers applied in order,
    /// whiteouts and opaque directories honoured, as dockerTools' exportImage gives, for
    /// `docker import`, WSL or a VM disk.
    ///
    /// Example: layered-gen export image.tar -o rootfs.tar
    Export(ExportCommand),
    /// Combine images of several platforms (each with its own architecture) into one
    /// multi-platform image: an OCI image index, written as an OCI layout directory, or an
    /// oci-archive for a `.tar` name. Each image's platform comes from its config.
    ///
    /// Example: layered-gen index app-amd64.tar app-arm64.tar --name my/app --tag 1.0 -o app-oci
    Index(IndexCommand),
    /// Say why two images differ: manifest and config (by JSON path), which layers differ, and
    /// inside them which entries were added, removed or changed, and how. Exit status 0 when
    /// the images are identical, 1 when they differ, 2 on error.
    ///
    /// Example: layered-gen diff result /nix/store/...-image.tar.check
    Diff(DiffCommand),
    /// Write streamLayeredImage's executable from a structured-attrs derivation (used by
    /// nix/default.nix as the builder).
    ///
    /// Example: layered-gen stream-script --attrs .attrs.json
    StreamScript {
        /// The .attrs.json Nix gives the builder. Example: --attrs .attrs.json
        #[arg(long, value_name = "FILE")]
        attrs: PathBuf,
    },
    /// Write the tree --contents put at the image root into a directory, as dockerTools'
    /// symlinkJoin: directories, and symlinks into the store. nix/default.nix runs
    /// extraCommands in it, then gives it as --extra-dir.
    ///
    /// Example: layered-gen link-contents --contents /nix/store/...-busybox root
    LinkContents {
        /// A store path whose tree is linked in (repeat for several). Example: --contents /nix/store/...-busybox
        #[arg(long = "contents", value_name = "PATH")]
        contents: Vec<String>,
        /// Read `/nix/store/x` from `<DIR>/nix/store/x` (a chroot store). Example: --store-root /tmp/root
        #[arg(long, value_name = "DIR")]
        store_root: Option<PathBuf>,
        /// The directory to write: created with its parents, or empty. Example: root
        #[arg(value_name = "DIR")]
        dir: PathBuf,
    },
    /// Print --perms rules (JSON) that give every directory and file of a tree the mode it has:
    /// a tree that goes through the Nix store keeps only 0444 and 0555, so nix/default.nix
    /// records the modes extraCommands made before the tree is stored.
    ///
    /// Example: layered-gen record-modes root > perms.json
    RecordModes {
        /// The tree. Example: root
        #[arg(value_name = "DIR")]
        dir: PathBuf,
        /// Also record every entry's numeric owner and group, as the tree's reader sees them
        /// (under fakeroot: the owners fakeRootCommands gave). Example: --owners
        #[arg(long)]
        owners: bool,
    },
    /// Print a closure as `nix-store --load-db` reads it (closureInfo's registration), for a
    /// Nix database in the image (nix/default.nix's includeNixDB).
    ///
    /// Example: layered-gen registration --closure .attrs.json --closure-key closure
    Registration(ClosureArgs),
}

/// Where a command writes its output, and how.
#[derive(Args, Debug)]
struct StreamOutputArgs {
    /// Where to write the output; `-` streams it to stdout (e.g. into `docker load`). The
    /// build also takes skopeo's transports: docker://HOST[:PORT]/NAME[:TAG] (push to a
    /// registry), docker-daemon:NAME[:TAG] (load into Docker), oci:DIR[:TAG],
    /// oci-archive:FILE[:TAG], docker-archive:FILE[:NAME[:TAG]]. Example: -o image.tar
    #[arg(short = 'o', long = "output", value_name = "PATH")]
    output: Option<PathBuf>,

    /// Write to the output path `out` of a structured-attrs derivation (its .attrs.json), for
    /// layered-gen as a Nix builder. Example: --output-from-attrs .attrs.json
    #[arg(long, value_name = "FILE", conflicts_with = "output")]
    output_from_attrs: Option<PathBuf>,

    /// Compress the whole archive (a docker-archive, an oci-archive, merged images, a root
    /// filesystem), like dockerTools' compressor; deterministic and parallel.
    /// Example: --archive-compression gzip
    #[arg(long, value_enum, default_value_t = Codec::None)]
    archive_compression: Codec,

    /// Print nothing but errors (no progress bar, no summary). Without it, a progress bar is
    /// shown when stderr is a terminal. Example: --quiet
    #[arg(short, long)]
    quiet: bool,
}

impl StreamOutputArgs {
    fn target(&self) -> Result<Target> {
        target_of(self.output.as_deref(), self.output_from_attrs.as_deref())
    }
}

#[derive(Args, Debug)]
struct MergeCommand {
    /// The images: docker-archives (ours, `docker save` of one or several images, compressed
    /// or not), or an OCI layout or archive. Example: app.tar db.tar.gz
    #[arg(value_name = "IMAGE", required = true)]
    images: Vec<PathBuf>,

    #[command(flatten)]
    output: StreamOutputArgs,

    #[command(flatten)]
    archive: ArchiveMtimeArgs,
}

/// The time of an archive's own entries, for commands that write one of existing images.
#[derive(Args, Debug)]
struct ArchiveMtimeArgs {
    /// mtime of the archive's own entries: seconds since 1970, an RFC 3339 time or `now`
    /// (default: $SOURCE_DATE_EPOCH, else 1). Example: --mtime 1700000000
    #[arg(
        long,
        value_name = "TIME",
        env = "SOURCE_DATE_EPOCH",
        default_value_t = 1,
        value_parser = parse_mtime
    )]
    mtime: u64,
}

#[derive(Args, Debug)]
struct IndexCommand {
    /// The images, one per platform: docker-archives (ours, `docker save`) or OCI layouts or
    /// archives. Example: app-amd64.tar app-arm64.tar
    #[arg(value_name = "IMAGE", required = true)]
    images: Vec<PathBuf>,

    /// The name the layout gives the multi-platform image (default "image", or the name the
    /// -o reference gives). Example: --name registry.example/my/app
    #[arg(long)]
    name: Option<String>,

    /// Its tag; repeat for several (default: from the index digest). Example: --tag 1.0
    #[arg(long = "tag", value_name = "TAG")]
    tags: Vec<String>,

    /// Tag it with its output path's store hash, as buildLayeredImage does without a tag (the
    /// main tag; --tag adds more). Example: --tag-from-output
    #[arg(long)]
    tag_from_output: bool,

    /// Where to write it (-o): a directory (an OCI layout), a `.tar` name (an oci-archive),
    /// `-` (an oci-archive on stdout), or docker://HOST[:PORT]/NAME[:TAG] (pushed to a
    /// registry, with every platform's image).
    #[command(flatten)]
    output: StreamOutputArgs,

    #[command(flatten)]
    push: PushArgs,

    #[command(flatten)]
    archive: ArchiveMtimeArgs,
}

#[derive(Args, Debug)]
struct DiffCommand {
    /// The first image: a docker-archive (ours, `docker save`, legacy) or an OCI layout or
    /// archive. Example: result
    #[arg(value_name = "A")]
    a: PathBuf,

    /// The second image, in any of the same forms. Example: result.check
    #[arg(value_name = "B")]
    b: PathBuf,

    /// Which image of files holding several (both). Example: --image-tag my/app:1.0
    #[arg(long, value_name = "NAME:TAG")]
    image_tag: Option<String>,

    /// Which platform of multi-platform images (default: this machine's).
    /// Example: --architecture arm64
    #[arg(long, value_name = "ARCH", value_parser = parse_platform)]
    architecture: Option<Platform>,

    /// Print the differences as JSON, for programs. Example: --json
    #[arg(long)]
    json: bool,
}

#[derive(Args, Debug)]
struct ExportCommand {
    /// The image: a docker-archive (ours, `docker save`, legacy) or an OCI layout or archive.
    /// Example: image.tar
    #[arg(value_name = "IMAGE")]
    image: PathBuf,

    /// Which image of a file holding several. Example: --image-tag my/app:1.0
    #[arg(long, value_name = "NAME:TAG")]
    image_tag: Option<String>,

    /// Which platform of a multi-platform image (default: this machine's).
    /// Example: --architecture arm64
    #[arg(long, value_name = "ARCH", value_parser = parse_platform)]
    architecture: Option<Platform>,

    #[command(flatten)]
    output: StreamOutputArgs,
}

/// The closure graph and how it is read: for planning and for `registration`.
#[derive(Args, Debug)]
struct ClosureArgs {
    /// A closure graph: exportReferencesGraph's output (text, or JSON with __structuredAttrs,
    /// also a whole .attrs.json), closureInfo's registration, or `nix path-info --json
    /// --recursive`. Repeat to merge graphs. Example: --closure .attrs.json
    #[arg(long = "closure", value_name = "FILE", required = true)]
    closures: Vec<PathBuf>,

    /// The key of an .attrs.json that holds the graph (default: its only graph).
    /// Example: --closure-key closure
    #[arg(long, value_name = "NAME")]
    closure_key: Option<String>,

    /// The most bytes one closure file may hold (default 512 MiB; a closure of 100,000 paths
    /// takes about 60 MB). Example: --max-closure-size 2000000000
    #[arg(long, value_name = "BYTES", default_value_t = layered_gen::json_file::DEFAULT_MAX_CLOSURE)]
    max_closure_size: u64,

    /// A path of the closure left out of the image, though what it references stays in (as
    /// nixpkgs' excludePaths): a file that is a root only for its references, like the config
    /// JSON. No path that stays may reference it. Example: --exclude /nix/store/...-config.json
    #[arg(long = "exclude", value_name = "PATH")]
    exclude: Vec<String>,
}

impl ClosureArgs {
    fn load_options(&self) -> LoadOptions {
        LoadOptions {
            closure_key: self.closure_key.clone(),
            max_size: self.max_closure_size,
            exclude: self.exclude.clone(),
        }
    }
}

#[derive(Args, Debug)]
struct PlanArgs {
    #[command(flatten)]
    closure: ClosureArgs,

    /// The most layers the image may have. Example: --max-layers 100
    #[arg(long, value_name = "N", default_value_t = 100)]
    max_layers: usize,

    /// How store paths are grouped: popularity (nixpkgs' classic grouping, the default), auto
    /// (current dockerTools' default: the largest paths with what only they use; needs a
    /// closure with narSizes) or reuse (layers that survive updates and are shared between
    /// images). Example: --layering reuse
    #[arg(long, value_enum, default_value_t = Layering::Popularity)]
    layering: Layering,

    /// The `plan` JSON of the last release: its layers whose paths are all unchanged are kept
    /// exactly as they were (with --layering reuse). Example: --previous-plan v1-plan.json
    #[arg(long, value_name = "FILE")]
    previous_plan: Option<PathBuf>,

    /// nixpkgs' layeringPipeline, as JSON: operations that cut the graph into layers
    /// (popularity_contest, subcomponent_in/out, split_paths, split_every, limit_layers,
    /// remove_paths, reverse, flatten, over, map, pipe). Instead of --layering.
    /// Example: --layering-pipeline pipeline.json
    #[arg(long, value_name = "FILE", conflicts_with_all = ["layering", "previous_plan"])]
    layering_pipeline: Option<PathBuf>,
}

impl PlanArgs {
    fn options(self, include_store_paths: bool) -> PlanOptions {
        PlanOptions {
            closures: self.closure.closures,
            closure_key: self.closure.closure_key,
            max_closure_size: self.closure.max_closure_size,
            max_layers: self.max_layers,
            include_store_paths,
            layering: self.layering,
            previous_plan: self.previous_plan,
            layering_pipeline: self.layering_pipeline,
            exclude: self.closure.exclude,
        }
    }
}

#[derive(Args, Debug)]
struct BaseArgs {
    /// A base image to put the layers on, like dockerTools' fromImage: a docker-archive (`docker
    /// save`, ours, or the legacy format) or an OCI layout (directory or archive). Its layers
    /// are kept as they are and count toward --max-layers. Example: --from-image base.tar
    #[arg(long, value_name = "PATH")]
    from_image: Option<PathBuf>,

    /// Which image of a --from-image holding several. Example: --from-image-tag alpine:3.19
    #[arg(long, value_name = "NAME:TAG")]
    from_image_tag: Option<String>,
}

impl BaseArgs {
    fn options(&self) -> Option<BaseOptions> {
        self.from_image.as_ref().map(|path| BaseOptions {
            path: path.clone(),
            tag: self.from_image_tag.clone(),
        })
    }
}

#[derive(Args, Debug)]
struct PlanCommand {
    #[command(flatten)]
    plan: PlanArgs,

    #[command(flatten)]
    base: BaseArgs,

    /// The platform to pick from a multi-platform --from-image (default: this machine's).
    /// Example: --architecture arm64
    #[arg(long, value_name = "ARCH", value_parser = parse_platform)]
    architecture: Option<Platform>,

    /// Keep one layer for a customisation layer, as an image with --contents, --extra-dir or
    /// --remove has. Example: --customisation-layer
    #[arg(long)]
    customisation_layer: bool,
}

#[derive(Args, Debug)]
struct BuildArgs {
    #[command(flatten)]
    plan: PlanArgs,

    #[command(flatten)]
    output: StreamOutputArgs,

    /// Print the layer plan (as `layered-gen plan` prints it) on stderr before writing the image,
    /// as dockerTools' `debug` shows its layering in the build log. Example: --print-plan
    #[arg(long)]
    print_plan: bool,

    /// Tag the image with its output path's store hash, as dockerTools does without a tag (the
    /// main tag; --tag adds more). Example: --tag-from-output
    #[arg(long)]
    tag_from_output: bool,

    /// Leave the store paths out: only the base and the customisation layer (dockerTools'
    /// includeStorePaths = false). Example: --no-store-paths
    #[arg(long)]
    no_store_paths: bool,

    /// docker-archive (for `docker load`) or oci (an OCI layout directory, or an oci-archive
    /// when PATH ends in .tar); default docker-archive, or what the -o transport says. For a
    /// registry it picks the manifest's media types (Docker's or OCI's). Example: --format oci
    #[arg(long, value_enum)]
    format: Option<Format>,

    /// Layer compression; default none for docker-archive, gzip for oci and for registries.
    /// zstd needs oci. Example: --compression zstd
    #[arg(long, value_enum)]
    compression: Option<Codec>,

    /// Compression level (gzip 0-9, default 6; zstd 1-22, default 3). Example: --compression-level 9
    #[arg(long, value_name = "N")]
    compression_level: Option<i32>,

    /// Image name, with a registry and slashes if you like (default "image", or the name the
    /// -o reference gives). Example: --name registry.example:5000/my/app
    #[arg(long)]
    name: Option<String>,

    /// Image tag; repeat for several, the first being the main one (default: from the image's
    /// content, so one tag names one image). Example: --tag v1.2 --tag latest
    #[arg(long = "tag", value_name = "TAG")]
    tags: Vec<String>,

    #[command(flatten)]
    push: PushArgs,

    #[command(flatten)]
    cache: CacheArgs,

    /// Also write the pre-1.10 docker-archive metadata (`repositories`, a directory per layer
    /// with `json`, `VERSION` and `layer.tar`) for tools that walk the parent chain.
    /// Example: --docker-legacy
    #[arg(long)]
    docker_legacy: bool,

    /// mtime of every entry: seconds since 1970, an RFC 3339 time (as dockerTools' mtime) or
    /// `now` (default: $SOURCE_DATE_EPOCH, else 1 like the Nix store).
    /// Example: --mtime 1700000000
    #[arg(
        long,
        value_name = "TIME",
        env = "SOURCE_DATE_EPOCH",
        default_value_t = 1,
        value_parser = parse_mtime
    )]
    mtime: u64,

    /// Owner of the store paths' entries; the customisation layer's are root's unless --perms
    /// says otherwise, as in dockerTools. Example: --uid 0
    #[arg(long, default_value_t = 0)]
    uid: u32,

    /// Group of the store paths' entries (the customisation layer's: root's group).
    /// Example: --gid 0
    #[arg(long, default_value_t = 0)]
    gid: u32,

    /// Owner name of the store paths' entries (dockerTools' uname; default none: numbers
    /// only). Example: --uname root
    #[arg(long, value_name = "NAME", default_value = "")]
    uname: String,

    /// Group name of the store paths' entries (dockerTools' gname; default none).
    /// Example: --gname root
    #[arg(long, value_name = "NAME", default_value = "")]
    gname: String,

    /// Read the store paths under this directory (a chroot store): /nix/store/x is read from
    /// DIR/nix/store/x. Example: --store-root examples/tiny/root
    #[arg(long, value_name = "DIR")]
    store_root: Option<PathBuf>,

    /// Platform: a GOARCH name (amd64, arm64, arm/v7, ...) or a Nix system (x86_64-linux, ...);
    /// default: the base image's, else this machine's. Example: --architecture aarch64-linux
    #[arg(long, value_name = "ARCH", value_parser = parse_platform)]
    architecture: Option<Platform>,

    /// Creation time, RFC 3339 or `now` (default 1970-01-01T00:00:01Z, reproducible).
    /// Example: --created 2024-05-01T12:00:00Z
    #[arg(long, value_name = "TIME", default_value = config::DEFAULT_CREATED, value_parser = parse_created)]
    created: String,

    /// The runtime config, a JSON object as dockerTools' `config`: Cmd, Entrypoint, Env,
    /// ExposedPorts, Labels, User, Volumes, WorkingDir, StopSignal, Healthcheck, ArgsEscaped,
    /// OnBuild, Shell. Example: --config config.json
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,

    /// Add an environment variable (merged last; a repeated name keeps its first position and
    /// takes the last value). Example: --env LANG=C.UTF-8
    #[arg(long = "env", value_name = "NAME=VALUE")]
    env: Vec<String>,

    /// Add a label (merged last). Example: --label org.opencontainers.image.source=https://example.org
    #[arg(long = "label", value_name = "KEY=VALUE")]
    labels: Vec<String>,

    /// A store path of the closure whose tree is linked at / (like dockerTools' contents):
    /// directories merged, files as symlinks into the store. Example: --contents /nix/store/...-busybox
    #[arg(long = "contents", value_name = "PATH")]
    contents: Vec<String>,

    /// A directory copied as it is into the image root, keeping permission bits (what
    /// extraCommands produce). Example: --extra-dir ./root
    #[arg(long = "extra-dir", value_name = "DIR")]
    extra_dirs: Vec<PathBuf>,

    /// Owners and modes for the customisation layer, a JSON list of rules like
    /// [{"path": "/var/lib/app", "recursive": true, "uid": 1000, "gid": 1000, "mode": "0750"}]
    /// (keys: path, regex, recursive, uid, gid, uname, gname, mode). Repeat to apply several
    /// files in order, later rules over earlier. Example: --perms perms.json
    #[arg(long, value_name = "FILE")]
    perms: Vec<PathBuf>,

    /// Hide a path of the base image with a whiteout. Example: --remove /etc/motd
    #[arg(long = "remove", value_name = "PATH")]
    remove: Vec<String>,

    #[command(flatten)]
    base: BaseArgs,

    /// What to keep of a base image's runtime config: all of it (Cmd, Entrypoint, User, Env,
    /// ...), as Docker's FROM does (default), or its Env only, as dockerTools' fromImage.
    /// Example: --base-config env
    #[arg(long, value_enum, default_value_t = BaseConfig::All)]
    base_config: BaseConfig,

    /// What to do with a base image's layers: keep them byte for byte (default), or decompress
    /// them to plain tar (for zstd layers into a docker-archive). Example: --base-layers decompress
    #[arg(long, value_enum, default_value_t = BaseLayers::Keep)]
    base_layers: BaseLayers,
}

/// How to reach a registry (`-o docker://…`).
#[derive(Args, Debug)]
struct PushArgs {
    /// Registry credentials (before any auth file: REGISTRY_AUTH_FILE,
    /// $XDG_RUNTIME_DIR/containers/auth.json, ~/.docker/config.json and its helpers).
    /// Example: --creds ci:$TOKEN
    #[arg(
        long,
        value_name = "USER:PASSWORD",
        env = "LAYERED_GEN_CREDS",
        hide_env_values = true
    )]
    creds: Option<String>,

    /// A directory of CA certificates (*.crt) and a client certificate (NAME.cert with
    /// NAME.key) for the registry, as skopeo's. Example: --cert-dir /etc/containers/certs.d/reg:5000
    #[arg(long, value_name = "DIR")]
    cert_dir: Option<PathBuf>,

    /// Verify the registry's TLS certificate (default true); false also allows plain HTTP,
    /// which a registry on 127.0.0.1 or localhost is always allowed. Example: --tls-verify=false
    #[arg(long, value_name = "BOOL", default_value_t = true, action = clap::ArgAction::Set)]
    tls_verify: bool,

    /// A repository of the same registry to mount blobs from instead of uploading them;
    /// repeat for several. Example: --mount-from reg.example/base/nix
    #[arg(long = "mount-from", value_name = "REPO")]
    mount_from: Vec<String>,
}

/// What the layer cache may spare.
#[derive(Args, Debug)]
struct CacheArgs {
    /// Where to keep what earlier builds learnt of their layers, so unchanged layers are not
    /// read again (default $XDG_CACHE_HOME/layered-gen). Example: --cache-dir /var/cache/lg
    #[arg(long, value_name = "DIR", conflicts_with = "no_cache")]
    cache_dir: Option<PathBuf>,

    /// Use no layer cache. Example: --no-cache
    #[arg(long)]
    no_cache: bool,

    /// Make every layer the cache knows again and check it is what the cache says.
    /// Example: --verify-cache
    #[arg(long, conflicts_with = "no_cache")]
    verify_cache: bool,
}

impl PushArgs {
    fn options(&self, registry: Option<&Repository>) -> Result<PushOptions> {
        let creds = self
            .creds
            .as_deref()
            .map(Credentials::parse)
            .transpose()
            .about(Setting::Creds)?;
        let mount_from = self
            .mount_from
            .iter()
            .map(|name| {
                let from = Repository::parse(name).about(Setting::MountFrom)?;
                match registry {
                    Some(to) if to.registry != from.registry => Err(Error::value(format!(
                        "{} is in another registry than {}: blobs mount only within one",
                        from.full_name(),
                        to.registry
                    ))
                    .about(Setting::MountFrom)),
                    _ => Ok(from),
                }
            })
            .collect::<Result<_>>()?;
        Ok(PushOptions {
            connect: ConnectOptions {
                creds,
                sources: Sources::from_environment(),
                cert_dir: self.cert_dir.clone(),
                insecure: !self.tls_verify,
            },
            mount_from,
            verify_cache: false,
        })
    }
}

impl CacheArgs {
    /// The cache to use. A push uses `--cache-dir`, else the default one (which, when it
    /// cannot be made, as in a Nix build's sandbox, is simply not used); an OCI layout
    /// directory uses `--cache-dir` only, to link unchanged layers from the layout it replaces.
    fn cache(&self, target: &Target, oci_layout_dir: bool) -> Result<Option<LayerCache>> {
        if self.no_cache {
            return Ok(None);
        }
        if let Some(dir) = &self.cache_dir {
            return match target {
                Target::Registry(_) => LayerCache::open(dir).map(Some),
                Target::File(_) if oci_layout_dir => LayerCache::open(dir).map(Some),
                _ => Err(Error::value(
                    "the layer cache serves pushes to a registry and OCI layout directories",
                )
                .about(Setting::CacheDir)),
            };
        }
        match target {
            Target::Registry(_) => {
                Ok(LayerCache::default_dir().and_then(|dir| LayerCache::open(&dir).ok()))
            }
            _ => Ok(None),
        }
    }
}

/// Options shared by every command.
#[derive(Args, Debug)]
struct GlobalArgs {
    /// Worker threads: the one pool that compresses and hashes, and at most as many layers
    /// written at once, each with a thread streaming it and one reading its files (default:
    /// $RAYON_NUM_THREADS when set, else $NIX_BUILD_CORES inside a Nix build, else every core;
    /// 0 means every core). The output never depends on it. Example: --threads 4
    #[arg(long, value_name = "N", env = "NIX_BUILD_CORES", global = true)]
    threads: Option<usize>,
}

fn parse_platform(text: &str) -> std::result::Result<Platform, String> {
    Platform::parse(text).map_err(|e| e.to_string())
}

fn parse_mtime(text: &str) -> std::result::Result<u64, String> {
    config::parse_mtime(text).map_err(|e| e.to_string())
}

fn parse_created(text: &str) -> std::result::Result<String, String> {
    config::parse_created(text).map_err(|e| e.to_string())
}

/// Whether stdout was closed when the program was started (see `detect_closed_stdout`).
static STDOUT_CLOSED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Rust's runtime opens /dev/null, read-write, on a standard stream that was closed, before
/// `main` runs (so nothing the program opens can become one). A shell redirection to
/// /dev/null opens it write-only: /dev/null open read-write on stdout means it was closed.
fn detect_closed_stdout() {
    // SAFETY: fstat into a zeroed stat, fcntl(F_GETFL): both only read the descriptor's state.
    let (is_null, read_write) = unsafe {
        let mut stat: libc::stat = std::mem::zeroed();
        let is_null = libc::fstat(1, &mut stat) == 0
            && stat.st_mode & libc::S_IFMT == libc::S_IFCHR
            && stat.st_rdev == libc::makedev(1, 3);
        let flags = libc::fcntl(1, libc::F_GETFL);
        (
            is_null,
            flags != -1 && flags & libc::O_ACCMODE == libc::O_RDWR,
        )
    };
    STDOUT_CLOSED.store(is_null && read_write, std::sync::atomic::Ordering::Relaxed);
}

/// `-o` of the build: a path, `-`, a transport reference, or the output of a structured-attrs
/// derivation.
fn destination_of(args: &StreamOutputArgs) -> Result<Destination> {
    match (&args.output, &args.output_from_attrs) {
        (Some(output), _) => match output.to_str() {
            Some(text) => {
                let destination = transport::parse(text).about(Setting::Output)?;
                if destination.place == Place::Stdout {
                    // Checks that stdout is open.
                    target_of(Some(std::path::Path::new("-")), None)?;
                }
                Ok(destination)
            }
            None => Ok(Destination {
                place: Place::Path(output.clone()),
                implied: Implied::Nothing,
                name: None,
                tag: None,
            }),
        },
        (None, attrs) => Ok(Destination {
            place: match target_of(None, attrs.as_deref())? {
                Target::File(path) => Place::Path(path),
                _ => Place::Stdout,
            },
            implied: Implied::Nothing,
            name: None,
            tag: None,
        }),
    }
}

/// `-o PATH`, `-o -` or the output of a structured-attrs derivation.
fn target_of(
    output: Option<&std::path::Path>,
    from_attrs: Option<&std::path::Path>,
) -> Result<Target> {
    Ok(match (output, from_attrs) {
        (Some(path), _)
            if path.as_os_str() == "-"
                && STDOUT_CLOSED.load(std::sync::atomic::Ordering::Relaxed) =>
        {
            return Err(
                Error::value("stdout is closed: there is nowhere to stream the output")
                    .about(Setting::Output),
            );
        }
        (Some(path), _) if path.as_os_str() == "-" => Target::Stdout,
        (Some(path), _) if is_transport(path) => {
            return Err(Error::value(format!(
                "{}: this command writes a file (a path) or stdout (-), not to a transport",
                path.display()
            ))
            .about(Setting::Output));
        }
        (Some(path), _) => Target::File(path.to_path_buf()),
        (None, Some(attrs)) => Target::File(attrs::output_path(attrs)?),
        (None, None) => {
            return Err(Error::value(
                "no output given: pass -o FILE, or -o - to stream to stdout",
            ));
        }
    })
}

/// Whether `-o` names a transport (`docker://`, `oci:`, ...), which only the build takes.
fn is_transport(path: &std::path::Path) -> bool {
    transport::names_a_transport(&path.to_string_lossy())
}

/// What the build's `-o` makes of the image: where it goes, its format, name and tags, and
/// whether an OCI image is an archive.
struct Resolved {
    target: Target,
    format: Format,
    name: String,
    tags: Vec<String>,
    oci_archive: Option<bool>,
}

fn resolve_destination(args: &BuildArgs) -> Result<Resolved> {
    let destination = destination_of(&args.output)?;
    let implied = match destination.implied {
        Implied::Nothing => None,
        Implied::DockerArchive => Some(Format::DockerArchive),
        Implied::OciLayout | Implied::OciArchive => Some(Format::Oci),
    };
    let format = match (args.format, implied) {
        (Some(given), Some(implied)) if given != implied => {
            return Err(Error::value(format!(
                "the -o transport writes {}, not {}",
                format_name(implied),
                format_name(given)
            ))
            .about(Setting::Format));
        }
        (given, implied) => given.or(implied).unwrap_or(Format::DockerArchive),
    };
    let name = match (&args.name, destination.name) {
        (Some(given), Some(named)) if *given != named => {
            return Err(Error::value(format!(
                "-o names the image {named}; leave --name out, or give the same name"
            ))
            .about(Setting::Name));
        }
        (given, named) => named.or(given.clone()).unwrap_or_else(|| "image".into()),
    };
    let target = match destination.place {
        Place::Path(path) => Target::File(path),
        Place::Stdout => Target::Stdout,
        Place::Registry(repository) => Target::Registry(repository),
        Place::DockerDaemon => Target::DockerDaemon,
    };
    // The reference's tag is the main one; --tag-from-output and --tag add more.
    let mut tags: Vec<String> = destination.tag.into_iter().collect();
    tags.extend(tags_for(&target, args.tag_from_output, &args.tags)?);
    let oci_archive = match destination.implied {
        Implied::OciArchive => Some(true),
        Implied::OciLayout => Some(false),
        _ => None,
    };
    Ok(Resolved {
        target,
        format,
        name,
        tags,
        oci_archive,
    })
}

fn format_name(format: Format) -> &'static str {
    match format {
        Format::DockerArchive => "docker-archive",
        Format::Oci => "oci",
    }
}

/// The tags of an image written to `target`: with `--tag-from-output` first the output
/// path's store hash, then the `--tag`s.
fn tags_for(target: &Target, from_output: bool, tags: &[String]) -> Result<Vec<String>> {
    let mut all = Vec::with_capacity(tags.len() + 1);
    match (target, from_output) {
        (Target::File(path), true) => {
            all.push(attrs::tag_from_output(path).context_with(|| "--tag-from-output")?)
        }
        (Target::Stdout | Target::Registry(_) | Target::DockerDaemon, true) => {
            return Err(Error::value(format!(
                "--tag-from-output needs an output path, not {}",
                target.describe()
            )));
        }
        _ => {}
    }
    all.extend(tags.iter().cloned());
    Ok(all)
}

/// The build's options from its arguments; files named by flags (config, perms) are read here.
fn build_options(args: BuildArgs) -> Result<BuildOptions> {
    let Resolved {
        target,
        format,
        name,
        tags,
        oci_archive,
    } = resolve_destination(&args)?;
    let layer_compression = args.compression.unwrap_or(match (format, &target) {
        (_, Target::Registry(_)) | (Format::Oci, _) => Codec::Gzip,
        (Format::DockerArchive, _) => Codec::None,
    });
    let registry = match &target {
        Target::Registry(repository) => Some(repository),
        _ => None,
    };
    let mut push = args.push.options(registry)?;
    let layout_dir = output::is_layout_dir(format, &target, oci_archive);
    let cache = args.cache.cache(&target, layout_dir)?;
    if args.cache.verify_cache {
        if cache.is_none() || !matches!(target, Target::Registry(_)) {
            return Err(Error::value(
                "--verify-cache checks the layer cache of a push to a registry",
            )
            .about(Setting::CacheDir));
        }
        push.verify_cache = true;
    }
    let report_layers = !args.output.quiet && !std::io::stderr().is_terminal();
    Ok(BuildOptions {
        progress: !args.output.quiet && std::io::stderr().is_terminal(),
        print_plan: args.print_plan,
        customisation: Customisation {
            contents: args.contents,
            extra_dirs: args.extra_dirs,
            perms: args
                .perms
                .iter()
                .map(|file| read_perms(file))
                .collect::<Result<Vec<_>>>()?
                .concat(),
            remove: args.remove,
        },
        output: OutputOptions {
            target,
            format,
            compression: Compression::new(layer_compression, args.compression_level)?,
            name,
            tags,
            docker_legacy: args.docker_legacy,
            archive_compression: Compression::default_for(args.output.archive_compression),
            mtime: args.mtime,
            oci_archive,
            push,
            cache,
            report_layers,
        },
        layer: LayerOptions {
            mtime: args.mtime,
            uid: args.uid.into(),
            gid: args.gid.into(),
            uname: args.uname,
            gname: args.gname,
            store_root: args.store_root,
            // The pipeline decides, from the output.
            parallel_reads: false,
        },
        platform: args.architecture,
        config: RuntimeOptions {
            created: args.created,
            base_config: args.base_config,
            user: args
                .config
                .as_deref()
                .map(runtime::read)
                .transpose()
                .about(Setting::Config)?
                .unwrap_or_default(),
            env: args.env,
            labels: args.labels,
        },
        base: args.base.options(),
        base_layers: args.base_layers,
        plan: args.plan.options(!args.no_store_paths),
    })
}

fn build(args: BuildArgs) -> Result<()> {
    let quiet = args.output.quiet;
    let options = build_options(args)?;
    let written = pipeline::build(&options)?;
    if !quiet {
        let place = options.output.target.describe();
        eprintln!(
            "layered-gen: wrote {} ({} layers) to {place}",
            written.references().join(", "),
            written.layers.len()
        );
    }
    Ok(())
}

fn merge(args: MergeCommand) -> Result<()> {
    let options = MergeOptions {
        target: args.output.target()?,
        archive_compression: Compression::default_for(args.output.archive_compression),
        mtime: args.archive.mtime,
        images: args.images,
    };
    let merged = pipeline::merge(&options)?;
    if !args.output.quiet {
        eprintln!(
            "layered-gen: merged {} images ({} distinct layers) into {}",
            merged.images,
            merged.layers,
            options.target.describe()
        );
    }
    Ok(())
}

fn export(args: ExportCommand) -> Result<()> {
    let options = ExportOptions {
        image: BaseOptions {
            path: args.image,
            tag: args.image_tag,
        },
        platform: args.architecture,
        target: args.output.target()?,
        archive_compression: Compression::default_for(args.output.archive_compression),
    };
    let exported = pipeline::export(&options)?;
    if !args.output.quiet {
        eprintln!(
            "layered-gen: exported {} entries from {} layers to {}",
            exported.entries,
            exported.layers,
            options.target.describe()
        );
    }
    Ok(())
}

fn index(args: IndexCommand) -> Result<()> {
    let destination = destination_of(&args.output)?;
    let (target, name, reference_tag) = match (destination.place, destination.implied) {
        (Place::Registry(repository), _) => {
            let named = repository.full_name();
            if args.name.as_ref().is_some_and(|n| *n != named) {
                return Err(Error::value(format!(
                    "-o names the image {named}; leave --name out, or give the same name"
                ))
                .about(Setting::Name));
            }
            (Target::Registry(repository), named, destination.tag)
        }
        (Place::Path(path), Implied::Nothing) => (Target::File(path), String::new(), None),
        (Place::Stdout, Implied::Nothing) => (Target::Stdout, String::new(), None),
        _ => {
            return Err(Error::value(
                "index writes an OCI layout (a directory), an oci-archive (a .tar or -), or \
                 pushes to docker://HOST/NAME[:TAG]",
            )
            .about(Setting::Output));
        }
    };
    let name = match target {
        Target::Registry(_) => name,
        _ => args.name.clone().unwrap_or_else(|| "image".into()),
    };
    let mut tags: Vec<String> = reference_tag.into_iter().collect();
    tags.extend(tags_for(&target, args.tag_from_output, &args.tags)?);
    let registry = match &target {
        Target::Registry(repository) => Some(repository),
        _ => None,
    };
    let options = IndexOptions {
        images: args.images,
        output: IndexOutput {
            push: args.push.options(registry)?,
            target,
            name,
            tags,
            archive_compression: Compression::default_for(args.output.archive_compression),
            mtime: args.archive.mtime,
            report_layers: !args.output.quiet && !std::io::stderr().is_terminal(),
        },
    };
    let written = pipeline::index(&options)?;
    if !args.output.quiet {
        eprintln!(
            "layered-gen: wrote {} images as {} ({}: {}) to {}",
            options.images.len(),
            written.digest,
            options.output.name,
            written.tags.join(", "),
            options.output.target.describe()
        );
    }
    Ok(())
}

/// Prints why two images differ; true when they do.
fn diff(args: DiffCommand) -> Result<bool> {
    let base = |path: PathBuf| BaseOptions {
        path,
        tag: args.image_tag.clone(),
    };
    let report = pipeline::diff(
        &base(args.a.clone()),
        &base(args.b.clone()),
        args.architecture.as_ref(),
    )?;
    if args.json {
        let json =
            serde_json::to_string_pretty(&report).map_err(|e| Error::value(e.to_string()))?;
        print_stdout(&json)?;
    } else {
        print!("{report}");
    }
    Ok(!report.identical)
}

fn run(cli: Cli) -> Result<ExitCode> {
    let done = |()| ExitCode::SUCCESS;
    match cli.command {
        // As diff(1): 0 the same, 1 different (2 on error, in main).
        Some(Command::Diff(args)) => diff(args).map(|different| {
            if different {
                ExitCode::from(1)
            } else {
                ExitCode::SUCCESS
            }
        }),
        Some(Command::Merge(args)) => merge(args).map(done),
        Some(Command::Index(args)) => index(args).map(done),
        Some(Command::Export(args)) => export(args).map(done),
        Some(Command::Plan(args)) => {
            let json = pipeline::plan_json(
                &args.plan.options(true),
                args.base.options().as_ref(),
                args.architecture.as_ref(),
                args.customisation_layer,
            )?;
            print_stdout(&json)?;
            Ok(ExitCode::SUCCESS)
        }
        Some(Command::StreamScript { attrs }) => {
            attrs::write_stream_script(&attrs)?;
            Ok(ExitCode::SUCCESS)
        }
        Some(Command::LinkContents {
            contents,
            store_root,
            dir,
        }) => {
            let options = LayerOptions {
                store_root,
                ..LayerOptions::default()
            };
            link_contents(&contents, &options, &dir).map_err(|e| e.about(Setting::Contents))?;
            Ok(ExitCode::SUCCESS)
        }
        Some(Command::Registration(args)) => {
            let graph = ClosureGraph::load(&args.closures, &args.load_options())?;
            write_stdout(graph.registration()?.as_bytes())?;
            Ok(ExitCode::SUCCESS)
        }
        Some(Command::RecordModes { dir, owners }) => {
            print_stdout(&record_modes(&dir, owners)?)?;
            Ok(ExitCode::SUCCESS)
        }
        None => build(cli.build).map(done),
    }
}

/// Prints `text` and a newline; a closed pipe is an error, not a panic as in `println!`.
fn print_stdout(text: &str) -> Result<()> {
    write_stdout(format!("{text}\n").as_bytes())
}

fn write_stdout(bytes: &[u8]) -> Result<()> {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    out.write_all(bytes)
        .and_then(|()| out.flush())
        .map_err(|e| Error::io("writing", std::path::Path::new("standard output"), e))
}

/// The flag a setting is given with; `merge` and `export` take their images as arguments.
fn flag(setting: Setting, command: CommandKind) -> &'static str {
    match (setting, command) {
        (Setting::FromImage, CommandKind::ImageArguments | CommandKind::Export) => return "IMAGE",
        (Setting::FromImage, CommandKind::Diff) => return "A or B",
        (Setting::FromImageTag, CommandKind::Export | CommandKind::Diff) => return "--image-tag",
        _ => {}
    }
    match setting {
        Setting::Closure => "--closure",
        Setting::ClosureKey => "--closure-key",
        Setting::MaxLayers => "--max-layers",
        Setting::PreviousPlan => "--previous-plan",
        Setting::Output => "-o",
        Setting::Format => "--format",
        Setting::Compression => "--compression",
        Setting::CompressionLevel => "--compression-level",
        Setting::ArchiveCompression => "--archive-compression",
        Setting::Name => "--name",
        Setting::Tag => "--tag",
        Setting::DockerLegacy => "--docker-legacy",
        Setting::Architecture => "--architecture",
        Setting::Created => "--created",
        Setting::Config => "--config",
        Setting::Env => "--env",
        Setting::Label => "--label",
        Setting::Contents => "--contents",
        Setting::ExtraDir => "--extra-dir",
        Setting::Perms => "--perms",
        Setting::Exclude => "--exclude",
        Setting::LayeringPipeline => "--layering-pipeline",
        Setting::Remove => "--remove",
        Setting::FromImage => "--from-image",
        Setting::FromImageTag => "--from-image-tag",
        Setting::BaseLayers => "--base-layers",
        Setting::StoreRoot => "--store-root",
        Setting::Creds => "--creds",
        Setting::CertDir => "--cert-dir",
        Setting::MountFrom => "--mount-from",
        Setting::CacheDir => "--cache-dir",
    }
}

/// Sizes the worker pool, the one pool that compresses and hashes and bounds how many layers
/// are written at once: `RAYON_NUM_THREADS` when set, else `--threads`/`NIX_BUILD_CORES`, else
/// every core (0, as Nix says "every core", too). Its threads are named `lg-worker`.
fn size_thread_pool(threads: Option<usize>) {
    let threads = match std::env::var_os("RAYON_NUM_THREADS") {
        // rayon reads it itself (0 or unreadable: every core).
        Some(_) => 0,
        None => threads.unwrap_or(0),
    };
    // Fails only if a pool exists already, and then that one is used: harmless.
    let _ = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .thread_name(|_| "lg-worker".to_string())
        .build_global();
}

/// Which command ran, for naming flags in errors.
#[derive(Clone, Copy, PartialEq, Eq)]
enum CommandKind {
    Other,
    /// Commands whose images are arguments (merge, index).
    ImageArguments,
    Export,
    Diff,
}

impl CommandKind {
    fn of(cli: &Cli) -> Self {
        match cli.command {
            Some(Command::Merge(_)) => CommandKind::ImageArguments,
            Some(Command::Export(_)) => CommandKind::Export,
            Some(Command::Diff(_)) => CommandKind::Diff,
            Some(Command::Index(_)) => CommandKind::ImageArguments,
            _ => CommandKind::Other,
        }
    }
}

fn main() -> ExitCode {
    detect_closed_stdout();
    if let Err(err) = layered_gen::output::temporary::install_signal_cleanup() {
        eprintln!("layered-gen: error: setting up the cleanup on signals: {err}");
        return ExitCode::FAILURE;
    }
    let cli = Cli::parse();
    size_thread_pool(cli.global.threads);
    let kind = CommandKind::of(&cli);
    match run(cli) {
        Ok(code) => code,
        Err(err) => {
            report(&err, kind);
            // diff keeps 1 for "different".
            ExitCode::from(if kind == CommandKind::Diff { 2 } else { 1 })
        }
    }
}

/// Prints an error, naming the flag of the setting at fault.
fn report(err: &Error, kind: CommandKind) {
    match err.setting() {
        Some(setting) => eprintln!("layered-gen: error: {}: {err}", flag(setting, kind)),
        None => eprintln!("layered-gen: error: {err}"),
    }
}
