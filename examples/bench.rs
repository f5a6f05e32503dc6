//! The benchmark: layered-gen against the floor (reading and hashing the same bytes once, on one
//! thread) and against what users would otherwise run, all in one run on one machine.
//!
//!     cargo run --release --example bench -- [--small] [--corpus DIR] [--out FILE] [--threads 1,2,all]
//!     cargo run --release --example bench -- --write-synthetic FILE   # the 100,000-path graph
//!     cargo run --release --example bench -- --plans   # only `plan` on 100,000-path graphs of every shape
//!     cargo run --release --example bench -- --hostile # hostile input shapes (tests/it/shapes.rs)
//!
//! The tar baselines use `--hard-dereference`: layered-gen never writes hardlinks, so both
//! sides archive the same bytes.
//!
//! Builds the shared corpus with ../shared/corpus/make-corpus when it is missing (the full one, or
//! `--small`: the closure of coreutils and bash), warms the page cache, then times each case as a
//! whole process and prints seconds, MB/s, the ratio to the floor and the peak RSS (from wait4),
//! and appends the same as JSON lines to `--out` (default bench-results/results.jsonl).
//!
//! Every image case runs at each thread count of `--threads` (default 1, 2 and all cores; a
//! count above the cores is kept, to see what oversubscription costs), and a second table shows
//! the speed-up of each over one thread.

use std::fs;
use std::io::{Read, Write};
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use sha2::{Digest, Sha256};

#[path = "../tests/it/shapes.rs"]
mod shapes;

struct Case {
    name: String,
    /// The case without its thread count, and the count (image cases only).
    sweep: Option<(String, usize)>,
    seconds: f64,
    bytes: u64,
    peak_rss_kib: u64,
    /// User and system CPU seconds, all threads.
    cpu: f64,
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("--measure") {
        measure(&args[1..]);
    }
    if let [flag, file] = args.as_slice() {
        if flag == "--write-synthetic" {
            fs::write(file, synthetic_graph(100_000, 7))
                .unwrap_or_else(|e| fail(&format!("writing {file}: {e}")));
            return;
        }
    }
    if args.iter().any(|a| a == "--plans") {
        plans_only();
    }
    if args.iter().any(|a| a == "--hostile") {
        hostile_only();
    }
    let small = args.iter().any(|a| a == "--small");
    let value = |flag: &str| {
        args.iter()
            .position(|a| a == flag)
            .and_then(|i| args.get(i + 1))
            .cloned()
    };
    let repo = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let corpus = value("--corpus").map(PathBuf::from).unwrap_or_else(|| {
        repo.join("target/bench-corpus")
            .join(if small { "small" } else { "full" })
    });
    let results = value("--out")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo.join("bench-results/results.jsonl"));
    let bin = repo.join("target/release/layered-gen");
    if !bin.is_file() {
        fail("build the binary first: cargo build --release");
    }
    if !corpus.join("graph.json").is_file() {
        make_corpus(&repo, &corpus, small);
    }
    let scratch = repo.join("target/bench-out");
    let _ = fs::remove_dir_all(&scratch);
    fs::create_dir_all(&scratch).unwrap_or_else(|e| fail(&format!("creating {scratch:?}: {e}")));

    let graph = corpus.join("graph.json");
    let store_paths = read_store_paths(&graph);
    eprintln!(
        "warming the page cache ({} store paths)...",
        store_paths.len()
    );
    let _ = floor(&store_paths);

    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let mut cases = Vec::new();

    let start = Instant::now();
    let (bytes, _) = floor(&store_paths);
    cases.push(Case {
        name: "floor: read + sha256, one thread".into(),
        sweep: None,
        seconds: start.elapsed().as_secs_f64(),
        bytes,
        peak_rss_kib: 0,
        cpu: start.elapsed().as_secs_f64(),
    });
    let floor_seconds = cases[0].seconds;

    let graph_arg = graph.to_str().unwrap().to_string();
    let out_tar = scratch.join("image.tar");
    let out_dir = scratch.join("oci");
    let lg = |extra: &[&str]| -> Vec<String> {
        let mut v = vec![
            bin.to_str().unwrap().to_string(),
            "--closure".into(),
            graph_arg.clone(),
            "-q".into(),
        ];
        v.extend(extra.iter().map(|s| s.to_string()));
        v
    };
    let sweep = thread_counts(value("--threads").as_deref().unwrap_or("1,2,all"), cores);
    // (name, argv, stdout into a pipe, runs: the best one counts)
    let image_cases: Vec<(&str, Vec<&str>, bool, usize)> = vec![
        (
            "layered-gen docker-archive -> stdout pipe",
            vec!["-o", "-"],
            true,
            2,
        ),
        (
            "layered-gen docker-archive -> file",
            vec!["-o", out_tar.to_str().unwrap()],
            false,
            2,
        ),
        (
            "layered-gen oci gzip -> dir",
            vec!["--format", "oci", "-o", out_dir.to_str().unwrap()],
            false,
            1,
        ),
        (
            "layered-gen oci zstd -> dir",
            vec![
                "--format",
                "oci",
                "--compression",
                "zstd",
                "-o",
                out_dir.to_str().unwrap(),
            ],
            false,
            1,
        ),
    ];
    for (name, extra, pipe, repeat) in &image_cases {
        for &threads in &sweep {
            let count = threads.to_string();
            let mut args = extra.clone();
            args.extend(["--threads", &count]);
            let argv = lg(&args);
            let mut best = (f64::MAX, 0, 0.0);
            let mut output_size = None;
            for _ in 0..*repeat {
                settle();
                let (seconds, rss, cpu) = time_process(&argv, *pipe);
                if seconds < best.0 {
                    best = (seconds, rss, cpu);
                }
                if out_dir.is_dir() {
                    output_size = Some(dir_size(&out_dir.join("blobs/sha256")));
                }
                let _ = fs::remove_file(&out_tar);
                let _ = fs::remove_dir_all(&out_dir);
            }
            let label = format!("{name} [{threads} threads]");
            cases.push(Case {
                name: match output_size {
                    Some(size) => format!("{label} ({:.0} MB)", size as f64 / 1e6),
                    None => label,
                },
                sweep: Some((name.to_string(), threads)),
                seconds: best.0,
                bytes,
                peak_rss_kib: best.1,
                cpu: best.2,
            });
        }
    }
    let tar_list = scratch.join("paths");
    fs::write(
        &tar_list,
        store_paths
            .iter()
            .map(|p| p.strip_prefix("/").unwrap_or(p).display().to_string() + "\n")
            .collect::<String>(),
    )
    .unwrap();
    let tar_file = scratch.join("gnu.tar");
    let size_file = scratch.join("size");
    for (name, script) in [
        (
            "floor: tar | sha256sum".to_string(),
            format!(
                "tar --hard-dereference -C / -cf - -T '{}' | sha256sum > '{}'",
                tar_list.display(),
                tar_file.display()
            ),
        ),
        (
            "GNU tar -> file (no hashing)".to_string(),
            format!(
                "tar --hard-dereference -C / -cf '{}' -T '{}'",
                tar_file.display(),
                tar_list.display()
            ),
        ),
        (
            format!("tar | pigz -6 -p {cores}"),
            format!(
                "tar --hard-dereference -C / -cf - -T '{}' | pigz -6 -p {cores} | wc -c > '{}'",
                tar_list.display(),
                size_file.display()
            ),
        ),
        (
            format!("tar | zstd -3 -T{cores}"),
            format!(
                "tar --hard-dereference -C / -cf - -T '{}' | zstd -3 -T{cores} | wc -c > '{}'",
                tar_list.display(),
                size_file.display()
            ),
        ),
    ] {
        settle();
        let _ = fs::remove_file(&size_file);
        let (seconds, rss, cpu) = time_process(&["sh".into(), "-c".into(), script], false);
        let _ = fs::remove_file(&tar_file);
        let size = fs::read_to_string(&size_file)
            .ok()
            .and_then(|s| s.trim().parse::<f64>().ok());
        cases.push(Case {
            name: match size {
                Some(size) => format!("{name} ({:.0} MB)", size / 1e6),
                None => name,
            },
            sweep: None,
            seconds,
            bytes,
            peak_rss_kib: rss,
            cpu,
        });
    }
    let (seconds, rss, cpu) = time_process(
        &[
            bin.to_str().unwrap().into(),
            "plan".into(),
            "--closure".into(),
            graph_arg.clone(),
        ],
        true,
    );
    cases.push(Case {
        name: "layered-gen plan (corpus)".into(),
        sweep: None,
        seconds,
        bytes: 0,
        peak_rss_kib: rss,
        cpu,
    });

    cases.extend(plan_cases(&bin, &scratch));

    let tiny = repo.join("examples/tiny");
    let mut tiny_times: Vec<(f64, u64, f64)> = (0..21)
        .map(|_| {
            time_process(
                &[
                    bin.to_str().unwrap().into(),
                    "--closure".into(),
                    tiny.join("closure").to_str().unwrap().into(),
                    "--store-root".into(),
                    tiny.join("root").to_str().unwrap().into(),
                    "-q".into(),
                    "-o".into(),
                    out_tar.to_str().unwrap().into(),
                ],
                false,
            )
        })
        .collect();
    tiny_times.sort_by(|a, b| a.0.total_cmp(&b.0));
    cases.push(Case {
        name: "startup + tiny closure (median of 21)".into(),
        sweep: None,
        seconds: tiny_times[10].0,
        bytes: 0,
        peak_rss_kib: tiny_times[10].1,
        cpu: tiny_times[10].2,
    });

    let machine = format!(
        "{} cores, corpus {} ({} paths, {:.1} GB)",
        cores,
        corpus.display(),
        store_paths.len(),
        bytes as f64 / 1e9
    );
    println!("{machine}");
    println!(
        "{:<58} {:>9} {:>10} {:>9} {:>10} {:>8}",
        "case", "seconds", "MB/s", "x floor", "peak RSS", "CPU s"
    );
    if let Some(parent) = results.parent() {
        let _ = fs::create_dir_all(parent);
    }
    let mut jsonl = fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&results)
        .unwrap_or_else(|e| fail(&format!("opening {results:?}: {e}")));
    let when = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    for case in &cases {
        let mbps = if case.bytes > 0 {
            format!("{:.0}", case.bytes as f64 / 1e6 / case.seconds)
        } else {
            "-".into()
        };
        let ratio = if case.bytes > 0 {
            format!("{:.2}", case.seconds / floor_seconds)
        } else {
            "-".into()
        };
        println!(
            "{:<58} {:>9.3} {:>10} {:>9} {:>7} MiB {:>8.2}",
            case.name,
            case.seconds,
            mbps,
            ratio,
            case.peak_rss_kib / 1024,
            case.cpu
        );
        let line = serde_json::json!({
            "time": when,
            "corpus": corpus.display().to_string(),
            "paths": store_paths.len(),
            "bytes": bytes,
            "cores": cores,
            "case": case.name,
            "seconds": case.seconds,
            "ratio_to_floor": if case.bytes > 0 { Some(case.seconds / floor_seconds) } else { None },
            "peak_rss_kib": case.peak_rss_kib,
            "cpu_seconds": case.cpu,
            "threads": case.sweep.as_ref().map(|(_, threads)| threads),
        });
        writeln!(jsonl, "{line}").unwrap();
    }
    print_speed_ups(&cases, &sweep);
    let _ = fs::remove_dir_all(&scratch);
}

/// The thread counts of `--threads`: numbers, or `all` for every core; in order, once each.
fn thread_counts(list: &str, cores: usize) -> Vec<usize> {
    let mut counts = Vec::new();
    for word in list.split(',') {
        let count = match word.trim() {
            "all" => cores,
            number => number
                .parse()
                .ok()
                .filter(|&n: &usize| n > 0)
                .unwrap_or_else(|| fail(&format!("--threads: {number:?} is not a count"))),
        };
        if !counts.contains(&count) {
            counts.push(count);
        }
    }
    counts
}

/// Each image case's time at each thread count, and its speed-up over the fewest threads.
fn print_speed_ups(cases: &[Case], sweep: &[usize]) {
    let Some(&fewest) = sweep.first() else {
        return;
    };
    println!();
    let heading: Vec<String> = sweep.iter().map(|t| format!("{t} threads")).collect();
    let title = format!("speed-up over {fewest} thread(s)");
    println!("{title:<44} {}", heading.join(" | "));
    let mut names: Vec<&str> = Vec::new();
    for case in cases {
        if let Some((name, _)) = &case.sweep {
            if !names.contains(&name.as_str()) {
                names.push(name);
            }
        }
    }
    for name in names {
        let seconds = |threads: usize| {
            cases.iter().find_map(|c| match &c.sweep {
                Some((n, t)) if n == name && *t == threads => Some(c.seconds),
                _ => None,
            })
        };
        let base = seconds(fewest).unwrap_or(f64::NAN);
        let cells: Vec<String> = sweep
            .iter()
            .map(|&t| match seconds(t) {
                Some(s) => format!("{s:.2} s ({:.2}x)", base / s),
                None => "-".to_string(),
            })
            .collect();
        println!("{name:<44} {}", cells.join(" | "));
    }
}

/// Total size of the files in a directory.
fn dir_size(dir: &Path) -> u64 {
    fs::read_dir(dir)
        .map(|entries| {
            entries
                .filter_map(|e| e.ok()?.metadata().ok())
                .map(|m| m.len())
                .sum()
        })
        .unwrap_or(0)
}

/// Flushes dirty pages so that one case's writes are not paid by the next.
fn settle() {
    // SAFETY: sync(2) takes no arguments and cannot fail.
    unsafe { libc::sync() };
}

fn fail(message: &str) -> ! {
    eprintln!("bench: {message}");
    std::process::exit(1);
}

fn make_corpus(repo: &Path, out: &Path, small: bool) {
    let script = repo.join("../shared/corpus/make-corpus");
    eprintln!("building the corpus at {} ...", out.display());
    let mut cmd = Command::new("python3");
    cmd.arg(&script).arg(out);
    if small {
        cmd.args(["--roots", "coreutils,bash"]);
    }
    let status = cmd
        .status()
        .unwrap_or_else(|e| fail(&format!("running {script:?}: {e}")));
    if !status.success() {
        fail("make-corpus failed");
    }
}

fn read_store_paths(graph: &Path) -> Vec<PathBuf> {
    let text = fs::read(graph).unwrap_or_else(|e| fail(&format!("reading {graph:?}: {e}")));
    let value: serde_json::Value = serde_json::from_slice(&text).unwrap();
    value
        .as_array()
        .unwrap()
        .iter()
        .map(|item| PathBuf::from(item["path"].as_str().unwrap()))
        .collect()
}

/// Reads every regular file under the paths once, hashing all bytes on this thread.
fn floor(paths: &[PathBuf]) -> (u64, String) {
    let mut hasher = Sha256::new();
    let mut buffer = vec![0u8; 256 * 1024];
    let mut total = 0u64;
    let mut stack: Vec<PathBuf> = paths.to_vec();
    while let Some(path) = stack.pop() {
        let Ok(meta) = fs::symlink_metadata(&path) else {
            continue;
        };
        if meta.is_dir() {
            let mut children: Vec<PathBuf> = fs::read_dir(&path)
                .unwrap()
                .map(|e| e.unwrap().path())
                .collect();
            children.sort();
            stack.extend(children);
        } else if meta.is_file() {
            let mut file = fs::File::open(&path).unwrap();
            loop {
                let n = file.read(&mut buffer).unwrap();
                if n == 0 {
                    break;
                }
                hasher.update(&buffer[..n]);
                total += n as u64;
            }
        }
    }
    (total, format!("{:x}", hasher.finalize()))
}

/// Runs a process to completion; returns wall seconds and its peak RSS in KiB. With `pipe`, its
/// stdout goes into a pipe that a thread drains (what `| docker load` costs the writer).
///
/// The process is started by a fresh copy of this program (`--measure`): Linux counts a child's
/// peak RSS from the memory of the process that spawned it, which for this benchmark (holding a
/// 100,000-path graph) would swamp the numbers.
fn time_process(argv: &[String], pipe: bool) -> (f64, u64, f64) {
    let me = std::env::current_exe().unwrap_or_else(|e| fail(&format!("finding myself: {e}")));
    let output = Command::new(me)
        .arg("--measure")
        .arg(if pipe { "pipe" } else { "null" })
        .args(argv)
        .stdout(Stdio::piped())
        .output()
        .unwrap_or_else(|e| fail(&format!("starting {argv:?}: {e}")));
    let text = String::from_utf8_lossy(&output.stdout);
    let mut words = text.split_whitespace();
    match (
        words.next().and_then(|w| w.parse().ok()),
        words.next().and_then(|w| w.parse().ok()),
        words.next().and_then(|w| w.parse().ok()),
    ) {
        (Some(seconds), Some(rss), Some(cpu)) if output.status.success() => (seconds, rss, cpu),
        _ => fail(&format!("{argv:?} failed: {text}")),
    }
}

/// `--measure pipe|null ARGV...`: runs ARGV, prints "<seconds> <peak RSS KiB> <CPU seconds>"
/// and exits.
fn measure(args: &[String]) -> ! {
    let pipe = args[0] == "pipe";
    let argv = &args[1..];
    let start = Instant::now();
    let mut child = Command::new(&argv[0])
        .args(&argv[1..])
        .stdout(if pipe { Stdio::piped() } else { Stdio::null() })
        .spawn()
        .unwrap_or_else(|e| fail(&format!("starting {argv:?}: {e}")));
    let drain = child.stdout.take().map(|mut out| {
        std::thread::spawn(move || {
            let mut buffer = vec![0u8; 1 << 20];
            while out.read(&mut buffer).is_ok_and(|n| n > 0) {}
        })
    });
    let pid = child.id() as libc::pid_t;
    let mut status = 0;
    // SAFETY: rusage is plain data; all-zero is a valid value.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: wait4 on our own child with valid pointers; the Child is never waited on again.
    let waited = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
    let seconds = start.elapsed().as_secs_f64();
    if let Some(drain) = drain {
        let _ = drain.join();
    }
    std::mem::forget(child);
    if waited != pid || std::process::ExitStatus::from_raw(status).code() != Some(0) {
        fail(&format!("{argv:?} failed (status {status})"));
    }
    let cpu = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    println!(
        "{seconds} {} {}",
        usage.ru_maxrss,
        cpu(usage.ru_utime) + cpu(usage.ru_stime)
    );
    std::process::exit(0);
}

/// `--hostile`: the input shapes that once cost quadratic time or memory, each timed as a whole
/// process (a refused one counts until it is refused).
fn hostile_only() -> ! {
    let repo = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let bin = repo.join("target/release/layered-gen");
    if !bin.is_file() {
        fail("build the binary first: cargo build --release");
    }
    let scratch = repo.join("target/bench-hostile");
    fs::create_dir_all(&scratch).unwrap_or_else(|e| fail(&format!("creating {scratch:?}: {e}")));
    let tiny = repo.join("examples/tiny");
    println!(
        "{:<46} {:>9} {:>10} {:>10}",
        "case", "seconds", "peak RSS", "test bound"
    );
    for case in shapes::hostile_cases(&scratch, &tiny.join("closure"), &tiny.join("root")) {
        let mut argv = vec![bin.display().to_string()];
        argv.extend(case.args.iter().map(|a| a.to_string_lossy().into_owned()));
        // `--measure` fails on a non-zero exit: a refused case is run through `sh` ignoring it.
        let argv = if case.refused {
            let quoted: Vec<String> = argv.iter().map(|a| format!("'{a}'")).collect();
            vec![
                "/bin/sh".to_string(),
                "-c".to_string(),
                format!("{} 2>/dev/null; true", quoted.join(" ")),
            ]
        } else {
            argv
        };
        let (seconds, rss, _) = time_process(&argv, false);
        println!(
            "{:<46} {seconds:>9.3} {:>7} MiB {:>6} MiB",
            case.what,
            rss / 1024,
            case.bound_mib
        );
    }
    let _ = fs::remove_dir_all(&scratch);
    std::process::exit(0);
}

/// `--plans`: only the planning cases, which need no corpus.
fn plans_only() -> ! {
    let repo = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let bin = repo.join("target/release/layered-gen");
    if !bin.is_file() {
        fail("build the binary first: cargo build --release");
    }
    let scratch = repo.join("target/bench-plans");
    fs::create_dir_all(&scratch).unwrap_or_else(|e| fail(&format!("creating {scratch:?}: {e}")));
    println!(
        "{:<58} {:>9} {:>10} {:>8}",
        "case", "seconds", "peak RSS", "CPU s"
    );
    for case in plan_cases(&bin, &scratch) {
        println!(
            "{:<58} {:>9.3} {:>7} MiB {:>8.2}",
            case.name,
            case.seconds,
            case.peak_rss_kib / 1024,
            case.cpu
        );
    }
    let _ = fs::remove_dir_all(&scratch);
    std::process::exit(0);
}

/// `plan` on 100,000-path graphs of every shape, with both strategies: planning must stay
/// near-linear whatever the shape.
fn plan_cases(bin: &Path, scratch: &Path) -> Vec<Case> {
    const N: usize = 100_000;
    let mut cases = Vec::new();
    let graphs = [
        ("synthetic", synthetic_graph(N, 7)),
        ("chain", shape_graph(Shape::Chain, N, 7)),
        (
            "star: one root, 99,999 leaves",
            shape_graph(Shape::Star, N, 7),
        ),
        (
            "fan-in: 99,999 roots, one leaf",
            shape_graph(Shape::FanIn, N, 7),
        ),
        ("wide: 100 levels of 1,000", shape_graph(Shape::Wide, N, 7)),
        (
            "random: 3 references each",
            shape_graph(Shape::Random, N, 7),
        ),
    ];
    // A layeringPipeline as dockerTools users write them: a graph cut in two, each part by
    // popularity, a limit on each.
    let pipeline = scratch.join("pipeline.json");
    fs::write(
        &pipeline,
        r#"[["subcomponent_out", ["/nix/store/none-given"]],
            ["over", "rest", ["pipe", [["popularity_contest"], ["limit_layers", 80]]]],
            ["flatten"], ["limit_layers", 100]]"#,
    )
    .unwrap_or_else(|e| fail(&format!("writing {pipeline:?}: {e}")));
    for (shape, json) in graphs {
        let file = scratch.join("shape.json");
        fs::write(&file, json).unwrap_or_else(|e| fail(&format!("writing {file:?}: {e}")));
        for layering in ["popularity", "auto", "reuse", "pipeline"] {
            let strategy: [String; 2] = if layering == "pipeline" {
                [
                    "--layering-pipeline".into(),
                    pipeline.to_str().unwrap().into(),
                ]
            } else {
                ["--layering".into(), layering.into()]
            };
            let (seconds, peak_rss_kib, cpu) = time_process(
                &[
                    bin.to_str().unwrap().into(),
                    "plan".into(),
                    strategy[0].clone(),
                    strategy[1].clone(),
                    "--closure".into(),
                    file.to_str().unwrap().into(),
                ],
                true,
            );
            cases.push(Case {
                name: format!("plan {layering}, {shape}"),
                sweep: None,
                seconds,
                bytes: 0,
                peak_rss_kib,
                cpu,
            });
        }
    }
    cases
}

#[derive(Clone, Copy)]
enum Shape {
    Chain,
    Star,
    FanIn,
    Wide,
    Random,
}

/// A closure graph of one shape, references pointing to lower indices.
fn shape_graph(shape: Shape, n: usize, seed: u64) -> String {
    let mut next = xorshift(seed);
    let refs: Vec<Vec<usize>> = (0..n)
        .map(|i| match shape {
            Shape::Chain => (i > 0).then(|| i - 1).into_iter().collect(),
            Shape::Star if i == n - 1 => (0..n - 1).collect(),
            Shape::Star => vec![],
            Shape::FanIn => (i > 0).then_some(0).into_iter().collect(),
            Shape::Wide => {
                const WIDTH: usize = 1000;
                let level = i / WIDTH;
                let mut r: Vec<usize> = (0..if level == 0 { 0 } else { 3 })
                    .map(|_| (level - 1) * WIDTH + next(WIDTH))
                    .collect();
                r.sort_unstable();
                r.dedup();
                r
            }
            Shape::Random => {
                let mut r: Vec<usize> = (0..if i == 0 { 0 } else { 3 }).map(|_| next(i)).collect();
                r.sort_unstable();
                r.dedup();
                r
            }
        })
        .collect();
    closure_json(&refs, &mut next)
}

/// A small deterministic random number generator: bench inputs are the same on every run.
fn xorshift(seed: u64) -> impl FnMut(usize) -> usize {
    let mut rng = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    move |bound: usize| -> usize {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        (rng % bound as u64) as usize
    }
}

/// exportReferencesGraph's JSON form of a graph given by reference lists.
fn closure_json(refs: &[Vec<usize>], next: &mut impl FnMut(usize) -> usize) -> String {
    let name = |i: usize| {
        let mut hash = String::with_capacity(32);
        let mut x = (i as u64).wrapping_mul(0x9E3779B97F4A7C15);
        for _ in 0..32 {
            hash.push(b"0123456789abcdfghijklmnpqrsvwxyz"[(x % 32) as usize] as char);
            x = x.rotate_right(5) ^ 0x5555;
        }
        format!("/nix/store/{hash}-pkg-{i}")
    };
    let items: Vec<serde_json::Value> = refs
        .iter()
        .enumerate()
        .map(|(i, r)| {
            serde_json::json!({
                "path": name(i),
                "references": r.iter().map(|&r| name(r)).collect::<Vec<_>>(),
                "narSize": 1000 + next(1_000_000),
            })
        })
        .collect();
    serde_json::to_string(&items).unwrap()
}

/// A realistic 100,000-path closure graph in exportReferencesGraph's JSON form: a few hubs
/// (glibc and friends) that nearly everything references, clusters of packages that depend on
/// each other (an ecosystem each), some cross-cluster dependencies, and a few deep chains.
fn synthetic_graph(n: usize, seed: u64) -> String {
    let mut next = xorshift(seed);
    const HUBS: usize = 20;
    const CLUSTER: usize = 100;
    const CHAIN: usize = 1000;
    let chains_start = n - 3 * CHAIN;
    // References point to lower indices: hubs are 0..HUBS.
    let mut refs: Vec<Vec<usize>> = vec![Vec::new(); n];
    for (i, r) in refs.iter_mut().enumerate().take(HUBS).skip(1) {
        r.push(next(i));
    }
    for (i, slot) in refs.iter_mut().enumerate().take(chains_start).skip(HUBS) {
        let cluster_start = HUBS + (i - HUBS) / CLUSTER * CLUSTER;
        let mut r = vec![next(HUBS)];
        if next(2) == 0 {
            r.push(next(HUBS));
        }
        if i > cluster_start {
            for _ in 0..1 + next(3) {
                let back = 1 + next((i - cluster_start).min(10));
                r.push(i - back);
            }
        }
        if next(20) == 0 && cluster_start > HUBS {
            // a core package of an earlier cluster
            let other = HUBS + next((cluster_start - HUBS) / CLUSTER) * CLUSTER;
            r.push(other + next(10));
        }
        r.sort_unstable();
        r.dedup();
        *slot = r;
    }
    for (i, slot) in refs.iter_mut().enumerate().skip(chains_start) {
        let in_chain = (i - chains_start) % CHAIN;
        *slot = if in_chain == 0 {
            vec![next(HUBS), HUBS + next(chains_start - HUBS)]
        } else {
            vec![i - 1, next(HUBS)]
        };
    }
    closure_json(&refs, &mut next)
}
