//! Every core, and nothing that depends on how many: the same bytes at 1, 2 and 8 threads in
//! every format and compression, memory that stays flat however large and many the layers, and
//! a thread count that bounds every pool.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::common::*;

/// Layers of very different sizes: one of several compression blocks, the sample's, and many
/// tiny ones.
fn varied_store() -> TestStore {
    let mut store = TestStore::new();
    let sample = store.sample();
    let refs: Vec<&str> = sample.iter().map(String::as_str).collect();
    store.add("big-1.0", &refs, |dir| {
        fs::create_dir_all(dir.join("lib")).unwrap();
        fs::write(dir.join("lib/big.so"), noisy(3 << 20, 1)).unwrap();
        fs::write(dir.join("lib/odd.so"), noisy((1 << 20) + 12345, 2)).unwrap();
    });
    for i in 0..10 {
        store.add(&format!("tiny-{i}"), &[], |file| {
            fs::write(file, format!("tiny {i}\n")).unwrap();
        });
    }
    store
}

/// Every file under `path` (or `path` itself) by its name relative to `path`, with its bytes.
fn snapshot(path: &Path) -> BTreeMap<String, Vec<u8>> {
    let mut files = BTreeMap::new();
    if path.is_file() {
        files.insert(String::new(), fs::read(path).unwrap());
        return files;
    }
    let mut stack = vec![path.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in fs::read_dir(&dir).unwrap() {
            let entry = entry.unwrap().path();
            if entry.is_dir() {
                stack.push(entry);
            } else {
                let name = entry.strip_prefix(path).unwrap().display().to_string();
                files.insert(name, fs::read(&entry).unwrap());
            }
        }
    }
    files
}

/// The thread counts, and how each is given: the flag, or Nix's variable.
const THREADS: [(&str, bool); 3] = [("1", true), ("2", false), ("8", true)];

fn with_threads(command: &mut Command, threads: &str, by_flag: bool) {
    command.env_remove("RAYON_NUM_THREADS");
    if by_flag {
        command
            .args(["--threads", threads])
            .env_remove("NIX_BUILD_CORES");
    } else {
        command.env("NIX_BUILD_CORES", threads);
    }
}

#[test]
fn every_format_and_compression_is_the_same_at_1_2_and_8_threads() {
    let store = varied_store();
    let closure = store.write_closure();
    let dir = tempfile::tempdir().unwrap();
    let base = dir.path().join("base.tar");
    store.build(&base, &["--max-layers", "3", "--threads", "1"]);
    // (what, arguments, output name; "-" for stdout)
    let cases: Vec<(&str, Vec<&str>, &str)> = vec![
        ("docker-archive", vec![], "image.tar"),
        ("docker-archive to stdout", vec![], "-"),
        (
            "docker-archive, gzip layers",
            vec!["--compression", "gzip"],
            "image.tar",
        ),
        (
            "docker-archive with legacy metadata",
            vec!["--docker-legacy"],
            "image.tar",
        ),
        (
            "docker-archive, zstd archive",
            vec!["--archive-compression", "zstd"],
            "image.tar.zst",
        ),
        (
            "docker-archive on a base",
            vec!["--from-image", base.to_str().unwrap()],
            "image.tar",
        ),
        (
            "oci layout",
            vec!["--format", "oci", "--compression", "none"],
            "oci",
        ),
        ("oci layout, gzip", vec!["--format", "oci"], "oci"),
        (
            "oci layout, zstd",
            vec!["--format", "oci", "--compression", "zstd"],
            "oci",
        ),
        (
            "oci layout on a base, zstd",
            vec![
                "--format",
                "oci",
                "--compression",
                "zstd",
                "--from-image",
                base.to_str().unwrap(),
            ],
            "oci",
        ),
        ("oci-archive, gzip", vec!["--format", "oci"], "image.tar"),
        (
            "oci-archive to stdout, zstd",
            vec!["--format", "oci", "--compression", "zstd"],
            "-",
        ),
    ];
    for (what, args, name) in &cases {
        let mut first: Option<BTreeMap<String, Vec<u8>>> = None;
        for (threads, by_flag) in THREADS {
            let mut command = layered_gen_on(&store, &closure);
            command.args(["--max-layers", "8"]).args(args);
            with_threads(&mut command, threads, by_flag);
            let got = if *name == "-" {
                let output = run(command.args(["-o", "-"]).stdout(Stdio::piped()));
                BTreeMap::from([(String::new(), output.stdout)])
            } else {
                let out = dir.path().join(format!("{threads}-{name}"));
                run(command.arg("-o").arg(&out));
                snapshot(&out)
            };
            assert!(!got.is_empty(), "{what}: nothing written");
            match &first {
                None => first = Some(got),
                Some(first) => {
                    let names =
                        |s: &BTreeMap<String, Vec<u8>>| s.keys().cloned().collect::<Vec<_>>();
                    assert_eq!(
                        names(first),
                        names(&got),
                        "{what}: files at {threads} threads"
                    );
                    for (file, bytes) in first {
                        assert!(
                            &got[file] == bytes,
                            "{what}: {file} differs between 1 and {threads} threads"
                        );
                    }
                }
            }
        }
    }
}

/// The threads of a running layered-gen at their most: by name, and all of them ("*").
///
/// A new thread has its parent's name until it has run and named itself, a moment later: a
/// thread counted under a name may be one its holder just started.
fn most_threads_by_name(mut child: std::process::Child) -> BTreeMap<String, usize> {
    let tasks = PathBuf::from(format!("/proc/{}/task", child.id()));
    let mut most: BTreeMap<String, usize> = BTreeMap::new();
    while child.try_wait().unwrap().is_none() {
        let mut now: BTreeMap<String, usize> = BTreeMap::new();
        for task in fs::read_dir(&tasks).into_iter().flatten().flatten() {
            if let Ok(name) = fs::read_to_string(task.path().join("comm")) {
                *now.entry(name.trim().to_string()).or_default() += 1;
                *now.entry("*".to_string()).or_default() += 1;
            }
        }
        for (name, count) in now {
            let entry = most.entry(name).or_default();
            *entry = (*entry).max(count);
        }
        std::thread::sleep(std::time::Duration::from_millis(2));
    }
    most
}

/// `--threads N` (or NIX_BUILD_CORES, or RAYON_NUM_THREADS) bounds the one pool and the layers
/// in progress: N workers, N layers each with a reader, whatever the layer count and codec (a
/// pool per layer or per codec would show dozens). That at most N layers are in progress at once
/// is `lanes::tests::at_most_one_layer_per_worker_is_in_progress`.
#[test]
fn the_thread_count_bounds_every_pool() {
    let mut store = TestStore::new();
    let mut refs = Vec::new();
    for i in 0..60 {
        refs.push(store.add(&format!("part-{i}"), &[], |file| {
            fs::write(file, noisy(300_000 + i * 20_000, i as u64)).unwrap();
        }));
    }
    let closure = store.write_closure();
    let dir = tempfile::tempdir().unwrap();
    for (threads, how) in [
        (1, "--threads"),
        (3, "NIX_BUILD_CORES"),
        (2, "RAYON_NUM_THREADS"),
    ] {
        for compression in ["gzip", "zstd"] {
            let mut command = layered_gen_on(&store, &closure);
            command
                .args(["--format", "oci", "--compression", compression, "-q"])
                .args(["--max-layers", "60", "-o"])
                .arg(dir.path().join(format!("oci-{threads}-{compression}")))
                .env_remove("RAYON_NUM_THREADS")
                .env_remove("NIX_BUILD_CORES");
            match how {
                "--threads" => command.args(["--threads", &threads.to_string()]),
                variable => command.env(variable, threads.to_string()),
            };
            let most = most_threads_by_name(command.spawn().unwrap());
            let count = |name: &str| most.get(name).copied().unwrap_or(0);
            let what = format!("{how} {threads}, {compression}: threads seen {most:?}");
            // Workers are started by the main thread (which has its own name) and start none.
            assert!(count("lg-worker") >= 1, "{what}");
            assert!(count("lg-worker") <= threads, "{what}");
            // In all: the main thread, the signal watcher, the workers, and per layer in
            // progress a lane (the main thread is one) and its reader. Lanes and readers
            // that have finished may still be seen leaving, as many again at most.
            let layers = threads - 1 + threads;
            assert!(count("*") <= 2 + threads + 2 * layers, "{what}");
        }
    }
}
