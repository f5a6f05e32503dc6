//! The `layered-gen` command: parses the flags and dispatches to the command, which resolves
//! them into the library's options (see `cli`).

// Input and I/O failures are errors that say what to fix, never panics: no unwrap or
// expect outside tests (an invariant that cannot fail says why where it is allowed).
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used))]

mod cli;

use std::process::ExitCode;

use clap::Parser;

use cli::args::{Cli, Command, CommandKind};
use cli::commands::{self, print_stdout, write_stdout};
use layered_gen::attrs;
use layered_gen::closure::ClosureGraph;
use layered_gen::error::{Result, Setting};
use layered_gen::layer::{LayerOptions, link_contents, record_modes};
use layered_gen::output::destination::note_closed_stdout;
use layered_gen::output::install_signal_cleanup;
use layered_gen::pipeline;
use layered_gen::sbom;

fn main() -> ExitCode {
    // Before anything is opened (see `note_closed_stdout`).
    note_closed_stdout();
    if let Err(err) = install_signal_cleanup() {
        eprintln!("layered-gen: error: setting up the cleanup on signals: {err}");
        return ExitCode::FAILURE;
    }
    let cli = Cli::parse();
    commands::size_thread_pool(cli.global.threads);
    let kind = CommandKind::of(&cli);
    match run(cli) {
        Ok(code) => code,
        Err(err) => {
            commands::report(&err, kind);
            // diff keeps 1 for "different".
            ExitCode::from(if kind == CommandKind::Diff { 2 } else { 1 })
        }
    }
}

fn run(cli: Cli) -> Result<ExitCode> {
    let done = |()| ExitCode::SUCCESS;
    match cli.command {
        // As diff(1): 0 the same, 1 different (2 on error, in main).
        Some(Command::Diff(args)) => commands::diff(args).map(|different| {
            if different {
                ExitCode::from(1)
            } else {
                ExitCode::SUCCESS
            }
        }),
        Some(Command::Merge(args)) => commands::merge(args).map(done),
        Some(Command::Index(args)) => commands::index(args).map(done),
        Some(Command::Export(args)) => commands::export(args).map(done),
        Some(Command::Plan(args)) => {
            let json = pipeline::plan_json(
                &args.plan.options(true),
                args.base.options().as_ref(),
                args.architecture.as_ref(),
                &args.layers,
                args.customisation_layer,
            )?;
            commands::write_document(&args.output, &json).map(done)
        }
        Some(Command::Layer(args)) => commands::layer(args).map(done),
        Some(Command::Verify(args)) => commands::verify(args).map(done),
        Some(Command::Sbom(args)) => {
            let graph = ClosureGraph::load(&args.closure.closures, &args.closure.load_options())?;
            let options = sbom::SbomOptions {
                created: args.created,
                image: None,
                meta: args.meta.read()?,
            };
            let json = sbom::write(&graph, args.format, &options)?;
            commands::write_document(&args.output, &json).map(done)
        }
        Some(Command::StreamScript { attrs }) => {
            attrs::write_stream_script(&attrs).map(|_script| ExitCode::SUCCESS)
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
            link_contents(&contents, &options, &dir)
                .map_err(|e| e.about(Setting::Contents))
                .map(done)
        }
        Some(Command::Registration(args)) => {
            let graph = ClosureGraph::load(&args.closures, &args.load_options())?;
            write_stdout(graph.registration()?.as_bytes()).map(done)
        }
        Some(Command::RecordModes { dir, owners }) => {
            print_stdout(&record_modes(&dir, owners)?).map(done)
        }
        None => commands::build(cli.build).map(done),
    }
}
