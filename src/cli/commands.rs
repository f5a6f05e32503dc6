//! What each command does with its resolved options, and what it says when done.

use std::path::PathBuf;

use layered_gen::base::BaseOptions;
use layered_gen::error::{Error, Result, ResultExt, Setting};
use layered_gen::pipeline;

use super::args::{
    BuildArgs, CommandKind, DiffCommand, ExportCommand, IndexCommand, LayerCommand, MergeCommand,
    OutputPathArgs, VerifyCommand, flag,
};

pub fn build(args: BuildArgs) -> Result<()> {
    let quiet = args.output.quiet;
    let options = args.resolve()?;
    let written = pipeline::build(&options)?;
    if !quiet {
        let place = options.output.destination.describe();
        eprintln!(
            "layered-gen: wrote {} ({} layers) to {place}",
            written.references().join(", "),
            written.layers.len()
        );
    }
    Ok(())
}

/// Writes a small document (the plan, an SBOM) where `-o` or `--output-from-attrs` says, else
/// to stdout, with a final newline.
pub fn write_document(output: &OutputPathArgs, text: &str) -> Result<()> {
    match output.path()? {
        Some(path) => layered_gen::output::write_document(&path, text).about(Setting::Output),
        None => print_stdout(text),
    }
}

/// `layered-gen verify`: the image's signature and its attached documents, one line each.
pub fn verify(args: VerifyCommand) -> Result<()> {
    use layered_gen::output::{ImageReference, verify};
    let image = ImageReference::parse(&args.image).map_err(|e| e.context("IMAGE"))?;
    let key = layered_gen::signature::PublicKey::read(&args.key)?;
    let verified = verify(&image, &key, &args.connect.options()?)?;
    let mut report = format!(
        "verified: {}@{} is signed with {}\n",
        image.repository.full_name(),
        verified.digest,
        args.key.display()
    );
    for (kind, digest) in &verified.documents {
        report.push_str(&format!(
            "verified: attached {kind} {digest}: intact, about the image, signed\n"
        ));
    }
    if verified.documents.is_empty() {
        report.push_str("no SBOM or provenance is attached\n");
    }
    print_stdout(report.trim_end())
}

/// `layered-gen layer`: one layer directory.
pub fn layer(args: LayerCommand) -> Result<()> {
    let quiet = args.quiet;
    let options = args.resolve()?;
    let layer = pipeline::build_layer_dir(&options)?;
    if !quiet {
        eprintln!(
            "layered-gen: wrote a layer of {} store paths ({}, {} bytes of tar) to {}",
            layer.paths.len(),
            layer.diff_id,
            layer.tar_size,
            options.output.display()
        );
    }
    Ok(())
}

pub fn merge(args: MergeCommand) -> Result<()> {
    let quiet = args.output.quiet;
    let options = args.resolve()?;
    let merged = pipeline::merge(&options)?;
    if !quiet {
        eprintln!(
            "layered-gen: merged {} images ({} distinct layers) into {}",
            merged.images,
            merged.layers,
            options.sink.describe()
        );
    }
    Ok(())
}

pub fn export(args: ExportCommand) -> Result<()> {
    let quiet = args.output.quiet;
    let options = args.resolve()?;
    let exported = pipeline::export(&options)?;
    if !quiet {
        eprintln!(
            "layered-gen: exported {} entries from {} layers to {}",
            exported.entries,
            exported.layers,
            options.sink.describe()
        );
    }
    Ok(())
}

pub fn index(args: IndexCommand) -> Result<()> {
    let quiet = args.output.quiet;
    let options = args.resolve()?;
    let written = pipeline::index(&options)?;
    if !quiet {
        eprintln!(
            "layered-gen: wrote {} images as {} ({}: {}) to {}",
            options.images.len(),
            written.digest,
            options.output.name,
            written.tags.join(", "),
            options.output.destination.describe()
        );
    }
    Ok(())
}

/// Prints why two images differ; true when they do.
pub fn diff(args: DiffCommand) -> Result<bool> {
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

/// Prints `text` and a newline; a closed pipe is an error, not a panic as in `println!`.
pub fn print_stdout(text: &str) -> Result<()> {
    write_stdout(format!("{text}\n").as_bytes())
}

pub fn write_stdout(bytes: &[u8]) -> Result<()> {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    out.write_all(bytes)
        .and_then(|()| out.flush())
        .map_err(|e| Error::io("writing", std::path::Path::new("standard output"), e))
}

/// Sizes the worker pool, the one pool that compresses and hashes and bounds how many layers
/// are written at once: `RAYON_NUM_THREADS` when set, else `--threads`/`NIX_BUILD_CORES`, else
/// every core (0, as Nix says "every core", too). Its threads are named `lg-worker`.
pub fn size_thread_pool(threads: Option<usize>) {
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

/// Prints an error, naming the flag of the setting at fault.
pub fn report(err: &Error, kind: CommandKind) {
    match err.setting() {
        Some(setting) => eprintln!("layered-gen: error: {}: {err}", flag(setting, kind)),
        None => eprintln!("layered-gen: error: {err}"),
    }
}
