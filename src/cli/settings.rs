//! Settings resolved from the flags: each command's arguments turned into the library's
//! options. What is policy (defaults, which flags go together, the cache, the tags) is the
//! library's (`layered_gen::output::destination`, `layered_gen::output::choose_cache`), so a
//! library caller gets the image the command line gets; what is left here is reading the files
//! flags name and what depends on the terminal.

use std::io::IsTerminal;
use std::path::PathBuf;

use layered_gen::base::BaseOptions;
use layered_gen::base::prebuilt::BlobCheck;
use layered_gen::closure::LoadOptions;
use layered_gen::config::{RuntimeOptions, runtime};
use layered_gen::error::{Error, Result, ResultExt, Setting};
use layered_gen::layer::{Customisation, LayerOptions, read_perms};
use layered_gen::output::destination::{self, OutputArg, Request, Resolved};
use layered_gen::output::{
    self, Compression, ConnectOptions, Credentials, Destination, OutputOptions, PushOptions,
    Repository, Sources,
};
use layered_gen::pipeline::{
    BuildOptions, Documents, ExportOptions, IndexOptions, LayerDirOptions, MergeOptions,
    PlanOptions,
};

use layered_gen::signature::PrivateKey;

use super::args::{
    BaseArgs, BuildArgs, ClosureArgs, ConnectArgs, ExportCommand, IndexCommand, LayerArgs,
    LayerCommand, MergeCommand, OutputPathArgs, PlanArgs, PushArgs, StreamOutputArgs,
};

impl LayerArgs {
    /// The layer options (the pipeline decides `parallel_reads` from the output).
    pub fn options(self) -> LayerOptions {
        LayerOptions {
            mtime: self.mtime,
            uid: self.uid.into(),
            gid: self.gid.into(),
            uname: self.uname,
            gname: self.gname,
            store_root: self.store_root,
            parallel_reads: false,
            tar_compat: self.tar_compat,
        }
    }
}

impl OutputPathArgs {
    /// The path given, or the derivation's output; None when neither is.
    pub fn path(&self) -> Result<Option<PathBuf>> {
        match (&self.output, &self.output_from_attrs) {
            (Some(path), _) => Ok(Some(path.clone())),
            (None, Some(attrs)) => layered_gen::attrs::output_path(attrs).map(Some),
            (None, None) => Ok(None),
        }
    }
}

impl LayerCommand {
    /// The options of `layered-gen layer`.
    pub fn resolve(self) -> Result<LayerDirOptions> {
        let output = self.output.path()?.ok_or_else(|| {
            layered_gen::error::Error::value(
                "say where the layer goes: -o DIR, or --output-from-attrs",
            )
            .about(Setting::Output)
        })?;
        Ok(LayerDirOptions {
            load: LoadOptions {
                closure_key: self.closure.closure_key,
                max_size: self.closure.max_closure_size,
                exclude: self.closure.exclude,
            },
            closures: self.closure.closures,
            below: self.below,
            paths: self.paths,
            contents: self.contents,
            compressions: self.compressions,
            layer: self.layer.options(),
            output,
        })
    }
}

impl StreamOutputArgs {
    /// How `-o` was given, if it was.
    pub fn output_arg(&self) -> Option<OutputArg> {
        match (&self.output, &self.output_from_attrs) {
            (Some(path), _) => Some(OutputArg::Given(path.clone())),
            (None, Some(attrs)) => Some(OutputArg::FromAttrs(attrs.clone())),
            (None, None) => None,
        }
    }

    fn archive_compression(&self) -> Compression {
        Compression::default_for(self.archive_compression)
    }

    /// One line per pushed layer when stderr is not a terminal (a build log), unless quiet.
    fn report_layers(&self) -> bool {
        !self.quiet && !std::io::stderr().is_terminal()
    }
}

impl ClosureArgs {
    pub fn load_options(&self) -> LoadOptions {
        LoadOptions {
            closure_key: self.closure_key.clone(),
            max_size: self.max_closure_size,
            exclude: self.exclude.clone(),
        }
    }
}

impl PlanArgs {
    pub fn options(self, include_store_paths: bool) -> PlanOptions {
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

impl BaseArgs {
    pub fn options(&self) -> Option<BaseOptions> {
        self.from_image.as_ref().map(|path| BaseOptions {
            path: path.clone(),
            tag: self.from_image_tag.clone(),
        })
    }
}

impl ConnectArgs {
    /// How to reach and authenticate with a registry.
    pub fn options(&self) -> Result<ConnectOptions> {
        let creds = self
            .creds
            .as_deref()
            .map(Credentials::parse)
            .transpose()
            .about(Setting::Creds)?;
        Ok(ConnectOptions {
            creds,
            sources: Sources::from_environment(),
            cert_dir: self.cert_dir.clone(),
            insecure: !self.tls_verify,
            idle_timeout: self.timeout,
        })
    }
}

impl PushArgs {
    /// How to reach the registry of `destination` (defaults for any other destination).
    fn options(&self, destination: &Destination) -> Result<PushOptions> {
        let mount_from = self
            .mount_from
            .iter()
            .map(|name| Repository::parse(name).about(Setting::MountFrom))
            .collect::<Result<_>>()?;
        let push = PushOptions {
            connect: self.connect.options()?,
            mount_from,
            sign_key: None,
        };
        if let Destination::Registry { repository, .. } = destination {
            push.check_mounts(repository)?;
        }
        Ok(push)
    }
}

impl BuildArgs {
    /// The build's options; files named by flags (config, perms) are read here.
    pub fn resolve(self) -> Result<BuildOptions> {
        let Resolved {
            destination,
            name,
            tags,
        } = destination::resolve(&Request {
            output: self.output.output_arg(),
            format: self.format,
            compression: self.compression,
            compression_level: self.compression_level,
            archive_compression: self.output.archive_compression,
            docker_legacy: self.docker_legacy,
            name: self.name.clone(),
            tags: self.tags.clone(),
            tag_from_output: self.tag_from_output,
        })?;
        if self.sbom_meta.file.is_some() && self.sbom.is_empty() && self.sbom_in_image.is_none() {
            return Err(Error::value(
                "package metadata goes into an SBOM: give --sbom or --sbom-in-image with it",
            )
            .about(Setting::SbomMeta));
        }
        let mut push = self.push.options(&destination)?;
        if let Some(key) = &self.sign_key {
            if !matches!(destination, Destination::Registry { .. }) {
                return Err(Error::value(
                    "a signature is kept where cosign looks for it, in the registry beside the \
                     image: sign a push (-o docker://HOST/NAME:TAG)",
                )
                .about(Setting::SignKey));
            }
            push.sign_key = Some(PrivateKey::read(key)?);
        }
        let cache = output::choose_cache(
            &destination,
            self.cache.cache_dir.as_deref(),
            self.cache.no_cache,
            self.cache.verify_cache,
        )?;
        Ok(BuildOptions {
            progress: !self.output.quiet && std::io::stderr().is_terminal(),
            print_plan: self.print_plan,
            customisation: Customisation {
                contents: self.contents,
                extra_dirs: self.extra_dirs,
                perms: self
                    .perms
                    .iter()
                    .map(|file| read_perms(file))
                    .collect::<Result<Vec<_>>>()?
                    .concat(),
                remove: self.remove,
            },
            output: OutputOptions {
                report_layers: self.output.report_layers(),
                destination,
                name,
                tags,
                mtime: self.layer.mtime,
                push,
                cache,
                verify_cache: self.cache.verify_cache,
            },
            layer: self.layer.options(),
            platform: self.architecture,
            config: RuntimeOptions {
                created: self.created,
                base_config: self.base_config,
                user: self
                    .config
                    .as_deref()
                    .map(runtime::read)
                    .transpose()
                    .about(Setting::Config)?
                    .unwrap_or_default(),
                env: self.env,
                labels: self.labels,
            },
            base: self.base.options(),
            prebuilt: self.layers,
            prebuilt_check: if self.verify_layers {
                BlobCheck::Full
            } else {
                BlobCheck::Digest
            },
            base_layers: self.base_layers,
            documents: Documents {
                sbom: self
                    .sbom
                    .iter()
                    .enumerate()
                    .filter(|(i, f)| !self.sbom[..*i].contains(f))
                    .map(|(_, &f)| f)
                    .collect(),
                sbom_in_image: self.sbom_in_image,
                provenance: self.provenance,
                meta: self.sbom_meta.read()?,
            },
            plan: self.plan.options(!self.no_store_paths),
        })
    }
}

impl MergeCommand {
    pub fn resolve(self) -> Result<MergeOptions> {
        Ok(MergeOptions {
            sink: destination::resolve_sink(self.output.output_arg().as_ref())?,
            archive_compression: self.output.archive_compression(),
            mtime: self.archive.mtime,
            images: self.images,
        })
    }
}

impl ExportCommand {
    pub fn resolve(self) -> Result<ExportOptions> {
        Ok(ExportOptions {
            sink: destination::resolve_sink(self.output.output_arg().as_ref())?,
            archive_compression: self.output.archive_compression(),
            image: BaseOptions {
                path: self.image,
                tag: self.image_tag,
            },
            platform: self.architecture,
        })
    }
}

impl IndexCommand {
    pub fn resolve(self) -> Result<IndexOptions> {
        let Resolved {
            destination,
            name,
            tags,
        } = destination::resolve_index(&Request {
            output: self.output.output_arg(),
            archive_compression: self.output.archive_compression,
            name: self.name.clone(),
            tags: self.tags.clone(),
            tag_from_output: self.tag_from_output,
            ..Request::default()
        })?;
        let push = self.push.options(&destination)?;
        Ok(IndexOptions {
            images: self.images,
            output: OutputOptions {
                report_layers: self.output.report_layers(),
                destination,
                name,
                tags,
                mtime: self.archive.mtime,
                push,
                cache: None,
                verify_cache: false,
            },
        })
    }
}
