//! The command line's flags, as clap reads them, and the table that names a setting's flag in
//! error messages. Turning them into the library's options is `super::settings`'s job.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use layered_gen::base::BaseLayers;
use layered_gen::codec::Codec;
use layered_gen::config::{self, BaseConfig, Platform};
use layered_gen::error::Setting;
use layered_gen::image_spec::BlobCompression;
use layered_gen::layer::TarCompat;
use layered_gen::output::Format;
use layered_gen::plan::Layering;
use layered_gen::sbom::SbomFormat;

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
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
    #[command(flatten)]
    pub build: BuildArgs,
    #[command(flatten)]
    pub global: GlobalArgs,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Print the layer plan as JSON, without reading the store.
    ///
    /// Example: layered-gen plan --closure closure --max-layers 100
    Plan(PlanCommand),
    /// Build one layer as a directory (layer.json and its blobs, compressed once per
    /// --compression), for images to take as it is with --layer: nix/'s buildLayer, built once
    /// on any builder and substituted from a binary cache afterwards.
    ///
    /// Example: layered-gen layer --closure .attrs.json --closure-key closure -o layer
    Layer(LayerCommand),
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
    /// Print a bill of materials of the closure, one component per store path (name and
    /// version as builtins.parseDrvName splits them, a pkg:nix purl, the narHash, the
    /// references as dependencies): CycloneDX 1.5 or SPDX 2.3 JSON, the same bytes for the
    /// same closure.
    ///
    /// Example: layered-gen sbom --closure closure --format spdx -o sbom.spdx.json
    Sbom(SbomCommand),
    /// Check an image in a registry: it is signed with the key (cosign's simple signing, in the
    /// sha256-<hex>.sig tag, naming its repository and manifest digest), and every SBOM and
    /// provenance statement attached to it is intact, about it, and signed with the key too.
    /// Exit status 0 when all holds, 1 otherwise.
    ///
    /// Example: layered-gen verify docker://reg.example/my/app:1.0 --key cosign.pub
    Verify(VerifyCommand),
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
pub struct StreamOutputArgs {
    /// Where to write the output; `-` streams it to stdout (e.g. into `docker load`). The
    /// build also takes skopeo's transports: docker://HOST[:PORT]/NAME[:TAG] (push to a
    /// registry), docker-daemon:NAME[:TAG] (load into Docker), oci:DIR[:TAG],
    /// oci-archive:FILE[:TAG], docker-archive:FILE[:NAME[:TAG]]. Example: -o image.tar
    #[arg(short = 'o', long = "output", value_name = "PATH")]
    pub output: Option<PathBuf>,

    /// Write to the output path `out` of a structured-attrs derivation (its .attrs.json), for
    /// layered-gen as a Nix builder. Example: --output-from-attrs .attrs.json
    #[arg(long, value_name = "FILE", conflicts_with = "output")]
    pub output_from_attrs: Option<PathBuf>,

    /// Compress the whole archive (a docker-archive, an oci-archive, merged images, a root
    /// filesystem), like dockerTools' compressor; deterministic and parallel.
    /// Example: --archive-compression gzip
    #[arg(long, value_enum, default_value_t = Codec::None)]
    pub archive_compression: Codec,

    /// Print nothing but errors (no progress bar, no summary). Without it, a progress bar is
    /// shown when stderr is a terminal. Example: --quiet
    #[arg(short, long)]
    pub quiet: bool,
}

#[derive(Args, Debug)]
pub struct MergeCommand {
    /// The images: docker-archives (ours, `docker save` of one or several images, compressed
    /// or not), or an OCI layout or archive. Example: app.tar db.tar.gz
    #[arg(value_name = "IMAGE", required = true)]
    pub images: Vec<PathBuf>,

    #[command(flatten)]
    pub output: StreamOutputArgs,

    #[command(flatten)]
    pub archive: ArchiveMtimeArgs,
}

/// The time of an archive's own entries, for commands that write one of existing images.
#[derive(Args, Debug)]
pub struct ArchiveMtimeArgs {
    /// mtime of the archive's own entries: seconds since 1970, an RFC 3339 time or `now`
    /// (default: $SOURCE_DATE_EPOCH, else 1). Example: --mtime 1700000000
    #[arg(
        long,
        value_name = "TIME",
        env = "SOURCE_DATE_EPOCH",
        default_value_t = 1,
        value_parser = parse_mtime
    )]
    pub mtime: u64,
}

#[derive(Args, Debug)]
pub struct IndexCommand {
    /// The images, one per platform: docker-archives (ours, `docker save`) or OCI layouts or
    /// archives. Example: app-amd64.tar app-arm64.tar
    #[arg(value_name = "IMAGE", required = true)]
    pub images: Vec<PathBuf>,

    /// The name the layout gives the multi-platform image (default "image", or the name the
    /// -o reference gives). Example: --name registry.example/my/app
    #[arg(long)]
    pub name: Option<String>,

    /// Its tag; repeat for several (default: from the index digest). Example: --tag 1.0
    #[arg(long = "tag", value_name = "TAG")]
    pub tags: Vec<String>,

    /// Tag it with its output path's store hash, as buildLayeredImage does without a tag (the
    /// main tag; --tag adds more). Example: --tag-from-output
    #[arg(long)]
    pub tag_from_output: bool,

    /// Where to write it (-o): a directory (an OCI layout), a `.tar` name (an oci-archive),
    /// `-` (an oci-archive on stdout), or docker://HOST[:PORT]/NAME[:TAG] (pushed to a
    /// registry, with every platform's image).
    #[command(flatten)]
    pub output: StreamOutputArgs,

    #[command(flatten)]
    pub push: PushArgs,

    #[command(flatten)]
    pub archive: ArchiveMtimeArgs,
}

#[derive(Args, Debug)]
pub struct DiffCommand {
    /// The first image: a docker-archive (ours, `docker save`, legacy) or an OCI layout or
    /// archive. Example: result
    #[arg(value_name = "A")]
    pub a: PathBuf,

    /// The second image, in any of the same forms. Example: result.check
    #[arg(value_name = "B")]
    pub b: PathBuf,

    /// Which image of files holding several (both). Example: --image-tag my/app:1.0
    #[arg(long, value_name = "NAME:TAG")]
    pub image_tag: Option<String>,

    /// Which platform of multi-platform images (default: this machine's).
    /// Example: --architecture arm64
    #[arg(long, value_name = "ARCH", value_parser = parse_platform)]
    pub architecture: Option<Platform>,

    /// Print the differences as JSON, for programs. Example: --json
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Debug)]
pub struct ExportCommand {
    /// The image: a docker-archive (ours, `docker save`, legacy) or an OCI layout or archive.
    /// Example: image.tar
    #[arg(value_name = "IMAGE")]
    pub image: PathBuf,

    /// Which image of a file holding several. Example: --image-tag my/app:1.0
    #[arg(long, value_name = "NAME:TAG")]
    pub image_tag: Option<String>,

    /// Which platform of a multi-platform image (default: this machine's).
    /// Example: --architecture arm64
    #[arg(long, value_name = "ARCH", value_parser = parse_platform)]
    pub architecture: Option<Platform>,

    #[command(flatten)]
    pub output: StreamOutputArgs,
}

/// The closure graph and how it is read: for planning and for `registration`.
#[derive(Args, Debug)]
pub struct ClosureArgs {
    /// A closure graph: exportReferencesGraph's output (text, or JSON with __structuredAttrs,
    /// also a whole .attrs.json), closureInfo's registration, or `nix path-info --json
    /// --recursive`. Repeat to merge graphs. Example: --closure .attrs.json
    #[arg(long = "closure", value_name = "FILE", required = true)]
    pub closures: Vec<PathBuf>,

    /// The key of an .attrs.json that holds the graph (default: its only graph).
    /// Example: --closure-key closure
    #[arg(long, value_name = "NAME")]
    pub closure_key: Option<String>,

    /// The most bytes one closure file may hold (default 512 MiB; a closure of 100,000 paths
    /// takes about 60 MB). Example: --max-closure-size 2000000000
    #[arg(long, value_name = "BYTES", default_value_t = layered_gen::json_file::DEFAULT_MAX_CLOSURE)]
    pub max_closure_size: u64,

    /// A path of the closure left out of the image, though what it references stays in (as
    /// nixpkgs' excludePaths): a file that is a root only for its references, like the config
    /// JSON. No path that stays may reference it. Example: --exclude /nix/store/...-config.json
    #[arg(long = "exclude", value_name = "PATH")]
    pub exclude: Vec<String>,
}

#[derive(Args, Debug)]
pub struct PlanArgs {
    #[command(flatten)]
    pub closure: ClosureArgs,

    /// The most layers the image may have. Example: --max-layers 100
    #[arg(long, value_name = "N", default_value_t = 100)]
    pub max_layers: usize,

    /// How store paths are grouped: popularity (nixpkgs' classic grouping, the default), auto
    /// (current dockerTools' default: the largest paths with what only they use; needs a
    /// closure with narSizes) or reuse (layers that survive updates and are shared between
    /// images). Example: --layering reuse
    #[arg(long, value_enum, default_value_t = Layering::Popularity)]
    pub layering: Layering,

    /// The `plan` JSON of the last release: its layers whose paths are all unchanged are kept
    /// exactly as they were (with --layering reuse). Example: --previous-plan v1-plan.json
    #[arg(long, value_name = "FILE")]
    pub previous_plan: Option<PathBuf>,

    /// nixpkgs' layeringPipeline, as JSON: operations that cut the graph into layers
    /// (popularity_contest, subcomponent_in/out, split_paths, split_every, limit_layers,
    /// remove_paths, reverse, flatten, over, map, pipe). Instead of --layering.
    /// Example: --layering-pipeline pipeline.json
    #[arg(long, value_name = "FILE", conflicts_with_all = ["layering", "previous_plan"])]
    pub layering_pipeline: Option<PathBuf>,
}

#[derive(Args, Debug)]
pub struct BaseArgs {
    /// A base image to put the layers on, like dockerTools' fromImage: a docker-archive (`docker
    /// save`, ours, or the legacy format) or an OCI layout (directory or archive). Its layers
    /// are kept as they are and count toward --max-layers. Example: --from-image base.tar
    #[arg(long, value_name = "PATH")]
    pub from_image: Option<PathBuf>,

    /// Which image of a --from-image holding several. Example: --from-image-tag alpine:3.19
    #[arg(long, value_name = "NAME:TAG")]
    pub from_image_tag: Option<String>,
}

#[derive(Args, Debug)]
pub struct LayerCommand {
    #[command(flatten)]
    pub closure: ClosureArgs,

    /// A layer this one goes on (a `layered-gen layer` directory): its store paths are left out
    /// of this one. Repeat for several. Example: --layer /nix/store/...-glibc-layer
    #[arg(long = "layer", value_name = "DIR")]
    pub below: Vec<PathBuf>,

    /// Exactly this store path, in this order (a planned layer); repeat for several. Default:
    /// every path of the closure but those of --layer, by name. Example: --path /nix/store/...-hello-2.12
    #[arg(long = "path", value_name = "PATH")]
    pub paths: Vec<String>,

    /// A store path whose tree is linked at / in the layer (its closure goes in as the
    /// closure's does), as an image's --contents. Example: --contents /nix/store/...-busybox
    #[arg(long = "contents", value_name = "PATH")]
    pub contents: Vec<String>,

    /// A blob to write, compressed so; repeat for several blobs of the same tarball (default
    /// gzip). Example: --compression gzip --compression zstd
    #[arg(long = "compression", value_enum, value_name = "CODEC", default_values_t = [BlobCompression::Gzip])]
    pub compressions: Vec<BlobCompression>,

    #[command(flatten)]
    pub layer: LayerArgs,

    #[command(flatten)]
    pub output: OutputPathArgs,

    /// Print nothing but errors. Example: --quiet
    #[arg(short, long)]
    pub quiet: bool,
}

#[derive(Args, Debug)]
pub struct PlanCommand {
    #[command(flatten)]
    pub plan: PlanArgs,

    #[command(flatten)]
    pub base: BaseArgs,

    /// The platform to pick from a multi-platform --from-image (default: this machine's).
    /// Example: --architecture arm64
    #[arg(long, value_name = "ARCH", value_parser = parse_platform)]
    pub architecture: Option<Platform>,

    /// Keep one layer for a customisation layer, as an image with --contents, --extra-dir or
    /// --remove has. Example: --customisation-layer
    #[arg(long)]
    pub customisation_layer: bool,

    /// A layer the image takes as it is (`layered-gen layer`): its paths are left out of the
    /// plan and it counts toward --max-layers, as with the build's --layer.
    /// Example: --layer /nix/store/...-glibc-layer
    #[arg(long = "layer", value_name = "DIR")]
    pub layers: Vec<PathBuf>,

    /// Write the plan to this file instead of stdout.
    #[command(flatten)]
    pub output: OutputPathArgs,
}

/// What the packages' Nix `meta` adds to an SBOM.
#[derive(Args, Debug)]
pub struct SbomMetaArgs {
    /// The packages' description, homepage and licenses, as nix/ writes them from `meta`: a
    /// JSON list of {"path", "description", "homepage", "licenses": [{"spdxId", "fullName"}]}.
    /// Example: --sbom-meta /nix/store/...-sbom-meta.json
    #[arg(long = "sbom-meta", value_name = "FILE")]
    pub file: Option<PathBuf>,
}

impl SbomMetaArgs {
    /// The metadata read from the file, if one is given.
    pub fn read(&self) -> layered_gen::Result<layered_gen::sbom::PackageMetas> {
        match &self.file {
            Some(path) => layered_gen::sbom::read_meta(path),
            None => Ok(Default::default()),
        }
    }
}

#[derive(Args, Debug)]
pub struct SbomCommand {
    #[command(flatten)]
    pub closure: ClosureArgs,

    /// The document's format. Example: --format spdx
    #[arg(long, value_enum, default_value_t = SbomFormat::Cyclonedx)]
    pub format: SbomFormat,

    #[command(flatten)]
    pub meta: SbomMetaArgs,

    /// The document's time, RFC 3339 or `now` (default 1970-01-01T00:00:01Z, reproducible;
    /// SPDX takes UTC to the second). Example: --created 2024-05-01T12:00:00Z
    #[arg(long, value_name = "TIME", default_value = config::DEFAULT_CREATED, value_parser = parse_created)]
    pub created: String,

    /// Write the document to this file instead of stdout.
    #[command(flatten)]
    pub output: OutputPathArgs,
}

#[derive(Args, Debug)]
pub struct BuildArgs {
    #[command(flatten)]
    pub plan: PlanArgs,

    #[command(flatten)]
    pub output: StreamOutputArgs,

    /// Print the layer plan (as `layered-gen plan` prints it) on stderr before writing the image,
    /// as dockerTools' `debug` shows its layering in the build log. Example: --print-plan
    #[arg(long)]
    pub print_plan: bool,

    /// Tag the image with its output path's store hash, as dockerTools does without a tag (the
    /// main tag; --tag adds more). Example: --tag-from-output
    #[arg(long)]
    pub tag_from_output: bool,

    /// Leave the store paths out: only the base and the customisation layer (dockerTools'
    /// includeStorePaths = false). Example: --no-store-paths
    #[arg(long)]
    pub no_store_paths: bool,

    /// docker-archive (for `docker load`) or oci (an OCI layout directory, or an oci-archive
    /// when PATH ends in .tar); default docker-archive, or what the -o transport says. For a
    /// registry it picks the manifest's media types (Docker's or OCI's). Example: --format oci
    #[arg(long, value_enum)]
    pub format: Option<Format>,

    /// Layer compression; default none for docker-archive, gzip for oci and for registries.
    /// zstd needs oci. Example: --compression zstd
    #[arg(long, value_enum)]
    pub compression: Option<Codec>,

    /// Compression level (gzip 0-9, default 6; zstd 1-22, default 3). Example: --compression-level 9
    #[arg(long, value_name = "N")]
    pub compression_level: Option<i32>,

    /// Image name, with a registry and slashes if you like (default "image", or the name the
    /// -o reference gives). Example: --name registry.example:5000/my/app
    #[arg(long)]
    pub name: Option<String>,

    /// Image tag; repeat for several, the first being the main one (default: from the image's
    /// content, so one tag names one image). Example: --tag v1.2 --tag latest
    #[arg(long = "tag", value_name = "TAG")]
    pub tags: Vec<String>,

    #[command(flatten)]
    pub push: PushArgs,

    #[command(flatten)]
    pub cache: CacheArgs,

    /// Also write the pre-1.10 docker-archive metadata (`repositories`, a directory per layer
    /// with `json`, `VERSION` and `layer.tar`) for tools that walk the parent chain.
    /// Example: --docker-legacy
    #[arg(long)]
    pub docker_legacy: bool,

    #[command(flatten)]
    pub layer: LayerArgs,

    /// A layer built before the image (`layered-gen layer`, nix/'s buildLayer): its blob goes in
    /// as it is, after the base's layers, and its store paths are left out of the plan. Repeat
    /// for several, in order. Example: --layer /nix/store/...-glibc-layer
    #[arg(long = "layer", value_name = "DIR")]
    pub layers: Vec<PathBuf>,

    /// Decompress every --layer blob as it is copied and check its diffId too (by default its
    /// size and digest are checked, and layer.json's diffId, which `layered-gen layer` took from
    /// the tar it made, is trusted as the store holding it is). Example: --verify-layers
    #[arg(long, requires = "layers")]
    pub verify_layers: bool,

    /// Platform: a GOARCH name (amd64, arm64, arm/v7, ...) or a Nix system (x86_64-linux, ...);
    /// default: the base image's, else this machine's. Example: --architecture aarch64-linux
    #[arg(long, value_name = "ARCH", value_parser = parse_platform)]
    pub architecture: Option<Platform>,

    /// Write the closure's bill of materials beside the image, the image as its subject: in an
    /// OCI layout or a registry as an OCI 1.1 artifact about the image manifest (the referrers
    /// API, or the sha256-<hex> tag where the registry has none), in a docker-archive as
    /// sbom.cdx.json or sbom.spdx.json. Repeat for both formats. Example: --sbom cyclonedx
    #[arg(long = "sbom", value_enum, value_name = "FORMAT")]
    pub sbom: Vec<SbomFormat>,

    #[command(flatten)]
    pub sbom_meta: SbomMetaArgs,

    /// Also put the closure's CycloneDX SBOM into the image, at this path of the customisation
    /// layer, for scanners that read files (it cannot name the image it is in: the image's
    /// digests depend on it). Example: --sbom-in-image /share/sbom.cdx.json
    #[arg(long, value_name = "PATH")]
    pub sbom_in_image: Option<String>,

    /// Sign the pushed image, and the documents attached to it, with this ECDSA P-256 key
    /// (PKCS#8 PEM, unencrypted; keep it out of the Nix store), as cosign does: a
    /// sha256-<hex>.sig tag that cosign verify and layered-gen verify read. Pushes only.
    /// Example: --sign-key /run/secrets/cosign.key
    #[arg(long, value_name = "KEY.pem")]
    pub sign_key: Option<PathBuf>,

    /// Write an in-toto SLSA v1 provenance statement beside the image, as --sbom is: the
    /// closure's store paths and derivations as dependencies, the options that decide the
    /// image's bytes. Example: --provenance
    #[arg(long)]
    pub provenance: bool,

    /// Creation time, RFC 3339 or `now` (default 1970-01-01T00:00:01Z, reproducible).
    /// Example: --created 2024-05-01T12:00:00Z
    #[arg(long, value_name = "TIME", default_value = config::DEFAULT_CREATED, value_parser = parse_created)]
    pub created: String,

    /// The runtime config, a JSON object as dockerTools' `config`: Cmd, Entrypoint, Env,
    /// ExposedPorts, Labels, User, Volumes, WorkingDir, StopSignal, Healthcheck, ArgsEscaped,
    /// OnBuild, Shell. Example: --config config.json
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,

    /// Add an environment variable (merged last; a repeated name keeps its first position and
    /// takes the last value). Example: --env LANG=C.UTF-8
    #[arg(long = "env", value_name = "NAME=VALUE")]
    pub env: Vec<String>,

    /// Add a label (merged last). Example: --label org.opencontainers.image.source=https://example.org
    #[arg(long = "label", value_name = "KEY=VALUE")]
    pub labels: Vec<String>,

    /// A store path of the closure whose tree is linked at / (like dockerTools' contents):
    /// directories merged, files as symlinks into the store. Example: --contents /nix/store/...-busybox
    #[arg(long = "contents", value_name = "PATH")]
    pub contents: Vec<String>,

    /// A directory copied as it is into the image root, keeping permission bits (what
    /// extraCommands produce). Example: --extra-dir ./root
    #[arg(long = "extra-dir", value_name = "DIR")]
    pub extra_dirs: Vec<PathBuf>,

    /// Owners and modes for the customisation layer, a JSON list of rules like
    /// [{"path": "/var/lib/app", "recursive": true, "uid": 1000, "gid": 1000, "mode": "0750"}]
    /// (keys: path, regex, recursive, uid, gid, uname, gname, mode). Repeat to apply several
    /// files in order, later rules over earlier. Example: --perms perms.json
    #[arg(long, value_name = "FILE")]
    pub perms: Vec<PathBuf>,

    /// Hide a path of the base image with a whiteout. Example: --remove /etc/motd
    #[arg(long = "remove", value_name = "PATH")]
    pub remove: Vec<String>,

    #[command(flatten)]
    pub base: BaseArgs,

    /// What to keep of a base image's runtime config: all of it (Cmd, Entrypoint, User, Env,
    /// ...), as Docker's FROM does (default), or its Env only, as dockerTools' fromImage.
    /// Example: --base-config env
    #[arg(long, value_enum, default_value_t = BaseConfig::All)]
    pub base_config: BaseConfig,

    /// What to do with a base image's layers: keep them byte for byte (default), or decompress
    /// them to plain tar (for zstd layers into a docker-archive). Example: --base-layers decompress
    #[arg(long, value_enum, default_value_t = BaseLayers::Keep)]
    pub base_layers: BaseLayers,
}

/// How to reach a registry (`-o docker://…`).
/// What goes into every entry of a store layer: its time, owner and format.
#[derive(Args, Debug)]
pub struct LayerArgs {
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
    pub mtime: u64,

    /// Owner of the store paths' entries; the customisation layer's are root's unless --perms
    /// says otherwise, as in dockerTools. Example: --uid 0
    #[arg(long, default_value_t = 0)]
    pub uid: u32,

    /// Group of the store paths' entries (the customisation layer's: root's group).
    /// Example: --gid 0
    #[arg(long, default_value_t = 0)]
    pub gid: u32,

    /// Owner name of the store paths' entries (dockerTools' uname; default none: numbers
    /// only). Example: --uname root
    #[arg(long, value_name = "NAME", default_value = "")]
    pub uname: String,

    /// Group name of the store paths' entries (dockerTools' gname; default none).
    /// Example: --gname root
    #[arg(long, value_name = "NAME", default_value = "")]
    pub gname: String,

    /// Whose tar format the store layers follow: ours (`none`), or nixpkgs' dockerTools byte
    /// for byte (`nixpkgs`: absolute names, the files' own modes, Python tarfile's headers), so
    /// that layers are the same blobs as a dockerTools image's of the same paths. With
    /// `nixpkgs` the customisation layer is always there, as in dockerTools, and the history
    /// is written as dockerTools writes it. Example: --tar-compat nixpkgs
    #[arg(long, value_enum, value_name = "FORMAT", default_value_t = TarCompat::None)]
    pub tar_compat: TarCompat,

    /// Read the store paths under this directory (a chroot store): /nix/store/x is read from
    /// DIR/nix/store/x. Example: --store-root examples/tiny/root
    #[arg(long, value_name = "DIR")]
    pub store_root: Option<PathBuf>,
}

/// Where a command writes a file or directory it makes (default, for `plan`: stdout).
#[derive(Args, Debug)]
pub struct OutputPathArgs {
    /// Where to write it. Example: -o layer
    #[arg(short = 'o', long = "output", value_name = "PATH")]
    pub output: Option<PathBuf>,

    /// Write to the output path `out` of a structured-attrs derivation (its .attrs.json), for
    /// layered-gen as a Nix builder. Example: --output-from-attrs .attrs.json
    #[arg(long, value_name = "FILE", conflicts_with = "output")]
    pub output_from_attrs: Option<PathBuf>,
}

#[derive(Args, Debug)]
pub struct PushArgs {
    #[command(flatten)]
    pub connect: ConnectArgs,

    /// A repository of the same registry to mount blobs from instead of uploading them;
    /// repeat for several. Example: --mount-from reg.example/base/nix
    #[arg(long = "mount-from", value_name = "REPO")]
    pub mount_from: Vec<String>,
}

/// How to reach a registry (pushes, verify).
#[derive(Args, Debug)]
pub struct ConnectArgs {
    /// Registry credentials (before any auth file: REGISTRY_AUTH_FILE,
    /// $XDG_RUNTIME_DIR/containers/auth.json, ~/.docker/config.json and its helpers).
    /// Example: --creds ci:$TOKEN
    #[arg(
        long,
        value_name = "USER:PASSWORD",
        env = "LAYERED_GEN_CREDS",
        hide_env_values = true
    )]
    pub creds: Option<String>,

    /// A directory of CA certificates (*.crt) and a client certificate (NAME.cert with
    /// NAME.key) for the registry, as skopeo's. Example: --cert-dir /etc/containers/certs.d/reg:5000
    #[arg(long, value_name = "DIR")]
    pub cert_dir: Option<PathBuf>,

    /// Verify the registry's TLS certificate (default true); false also allows plain HTTP,
    /// which a registry on 127.0.0.1 or localhost is always allowed. Example: --tls-verify=false
    #[arg(long, value_name = "BOOL", default_value_t = true, action = clap::ArgAction::Set)]
    pub tls_verify: bool,

    /// The longest wait, in seconds, for the next byte to or from a registry or token server
    /// (default 30); a peer that stalls longer fails the push, naming the host and what it
    /// was doing. Example: --timeout 120
    #[arg(long, value_name = "SECONDS", value_parser = parse_timeout)]
    pub timeout: Option<std::time::Duration>,
}

#[derive(Args, Debug)]
pub struct VerifyCommand {
    /// The image in its registry. Example: docker://reg.example/my/app:1.0
    #[arg(value_name = "IMAGE")]
    pub image: String,

    /// The public key (PEM, ECDSA P-256) whose signatures count. Example: --key cosign.pub
    #[arg(long, value_name = "PUB.pem")]
    pub key: PathBuf,

    #[command(flatten)]
    pub connect: ConnectArgs,
}

/// What the layer cache may spare.
#[derive(Args, Debug)]
pub struct CacheArgs {
    /// Where to keep what earlier builds learnt of their layers, so unchanged layers are not
    /// read again (default $XDG_CACHE_HOME/layered-gen). Example: --cache-dir /var/cache/lg
    #[arg(long, value_name = "DIR", conflicts_with = "no_cache")]
    pub cache_dir: Option<PathBuf>,

    /// Use no layer cache. Example: --no-cache
    #[arg(long)]
    pub no_cache: bool,

    /// Make every layer the cache knows again and check it is what the cache says.
    /// Example: --verify-cache
    #[arg(long, conflicts_with = "no_cache")]
    pub verify_cache: bool,
}

/// Options shared by every command.
#[derive(Args, Debug)]
pub struct GlobalArgs {
    /// Worker threads: the one pool that compresses and hashes, and at most as many layers
    /// written at once, each with a thread streaming it and one reading its files (default:
    /// $RAYON_NUM_THREADS when set, else $NIX_BUILD_CORES inside a Nix build, else every core;
    /// 0 means every core). The output never depends on it. Example: --threads 4
    #[arg(long, value_name = "N", env = "NIX_BUILD_CORES", global = true)]
    pub threads: Option<usize>,
}

fn parse_platform(text: &str) -> std::result::Result<Platform, String> {
    Platform::parse(text).map_err(|e| e.to_string())
}

fn parse_mtime(text: &str) -> std::result::Result<u64, String> {
    config::parse_mtime(text).map_err(|e| e.to_string())
}

fn parse_timeout(text: &str) -> std::result::Result<std::time::Duration, String> {
    match text.parse::<u64>() {
        Ok(seconds) if (1..=86_400).contains(&seconds) => {
            Ok(std::time::Duration::from_secs(seconds))
        }
        _ => Err("a whole number of seconds from 1 to 86400".into()),
    }
}

fn parse_created(text: &str) -> std::result::Result<String, String> {
    config::parse_created(text).map_err(|e| e.to_string())
}

/// The flag a setting is given with; `merge` and `export` take their images as arguments.
pub fn flag(setting: Setting, command: CommandKind) -> &'static str {
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
        Setting::Layer => "--layer",
        Setting::Path => "--path",
        Setting::Sbom => "--sbom",
        Setting::SbomInImage => "--sbom-in-image",
        Setting::Provenance => "--provenance",
        Setting::SignKey => "--sign-key",
        Setting::Key => "--key",
        Setting::SbomMeta => "--sbom-meta",
    }
}

/// Which command ran, for naming flags in errors.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum CommandKind {
    Other,
    /// Commands whose images are arguments (merge, index).
    ImageArguments,
    Export,
    Diff,
}

impl CommandKind {
    pub fn of(cli: &Cli) -> Self {
        match cli.command {
            Some(Command::Merge(_)) => CommandKind::ImageArguments,
            Some(Command::Export(_)) => CommandKind::Export,
            Some(Command::Diff(_)) => CommandKind::Diff,
            Some(Command::Index(_)) => CommandKind::ImageArguments,
            _ => CommandKind::Other,
        }
    }
}
