//! Tests that measure layered-gen's peak memory, in a test binary of their own.
//!
//! A child's peak RSS (`wait4`'s `ru_maxrss`) includes what its parent held when it was
//! started: the kernel keeps the largest resident set the process had, before `exec` too. In
//! the one integration crate, other tests run beside these and hold images in memory, which
//! would count as layered-gen's. Here only these run, and each keeps the test process small.

#[allow(dead_code)]
#[path = "it/common.rs"]
mod common;
#[path = "it/shapes.rs"]
mod shapes;

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use common::*;

/// Runs `command` to its end; its exit status and peak RSS in MiB.
#[allow(clippy::zombie_processes, reason = "wait4 reaps the child")]
fn peak_rss_mib(command: &mut Command) -> (bool, u64) {
    let child = command.spawn().unwrap();
    let mut status = 0;
    // SAFETY: an all-zero rusage is valid, and wait4 fills it for our own child.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    let pid = child.id() as libc::pid_t;
    assert_eq!(unsafe { libc::wait4(pid, &mut status, 0, &mut usage) }, pid);
    let ok = libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0;
    (ok, usage.ru_maxrss as u64 / 1024)
}

/// A layer much larger than the memory bound, and 99 tiny ones, in every output that writes
/// layers: the peak RSS stays under 64 MiB + 16 MiB per thread, whatever the layers' sizes.
#[test]
fn memory_stays_flat_with_one_huge_layer_and_many_tiny() {
    const THREADS: u64 = 4;
    const HUGE_MIB: usize = 192;
    let bound = 64 + 16 * THREADS;
    assert!(
        bound < HUGE_MIB as u64,
        "the layer must not fit in the bound"
    );
    let mut store = TestStore::new();
    let mut refs = Vec::new();
    for i in 0..99 {
        refs.push(store.add(&format!("tiny-{i}"), &[], |file| {
            fs::write(file, format!("tiny {i}\n")).unwrap();
        }));
    }
    let refs: Vec<&str> = refs.iter().map(String::as_str).collect();
    store.add("huge-1.0", &refs, |dir| {
        fs::create_dir_all(dir).unwrap();
        let mut file = fs::File::create(dir.join("huge.bin")).unwrap();
        for i in 0..HUGE_MIB / 16 {
            file.write_all(&noisy(16 << 20, i as u64 + 7)).unwrap();
        }
    });
    let closure = store.write_closure();
    let dir = tempfile::tempdir().unwrap();
    let cases: [(&str, &[&str], &str); 5] = [
        ("docker-archive to stdout", &[], "-"),
        (
            "docker-archive, gzip layers",
            &["--compression", "gzip"],
            "image.tar",
        ),
        ("oci layout, gzip", &["--format", "oci"], "oci"),
        (
            "oci layout, zstd",
            &["--format", "oci", "--compression", "zstd"],
            "oci",
        ),
        (
            "oci-archive, zstd",
            &["--format", "oci", "--compression", "zstd"],
            "oci.tar",
        ),
    ];
    for (what, args, name) in cases {
        let out: PathBuf = if name == "-" {
            PathBuf::from("-")
        } else {
            dir.path().join(name)
        };
        let mut command = layered_gen_on(&store, &closure);
        command
            .args([
                "--max-layers",
                "100",
                "--threads",
                &THREADS.to_string(),
                "-q",
            ])
            .args(args)
            .arg("-o")
            .arg(&out)
            .stdout(Stdio::null())
            .env_remove("RAYON_NUM_THREADS");
        let (ok, peak) = peak_rss_mib(&mut command);
        assert!(ok, "{what}: layered-gen failed");
        eprintln!("{what}: peak RSS {peak} MiB");
        assert!(
            peak <= bound,
            "{what}: peak RSS {peak} MiB over 64 MiB + 16 MiB x {THREADS} threads"
        );
        let _ = fs::remove_dir_all(&out);
        let _ = fs::remove_file(&out);
    }
}

/// diff streams: comparing images whose differing layers hold 2 × 192 MB keeps the process
/// far below that (one record per entry, contents hashed on the way).
#[test]
fn memory_stays_bounded_on_large_layers() {
    let dir = tempfile::tempdir().unwrap();
    // Written a MiB at a time: a child inherits its parent's peak RSS up to exec, so the
    // test itself must stay small for the child's peak to mean anything.
    let big = |byte: u8| {
        move |p: &Path| {
            use std::io::Write;
            let mut file = fs::File::create(p.join("big.bin")).unwrap();
            let mut chunk = vec![7u8; 1 << 20];
            for i in 0..192 {
                chunk[0] = if i == 100 { byte } else { 7 };
                file.write_all(&chunk).unwrap();
            }
        }
    };
    let image = |name: &str, byte: u8| {
        let mut store = TestStore::new();
        let path = store.add("pkg-1.0", &[], |dir| fs::create_dir_all(dir).unwrap());
        big(byte)(&store.source(&path));
        let out = dir.path().join(name);
        store.build(&out, &["--name", "diff/test", "--tag", "t"]);
        out
    };
    let (a, b) = (image("a.tar", 1), image("b.tar", 2));
    // Reaped by wait4 below, which also gives its peak RSS.
    #[allow(clippy::zombie_processes)]
    let mut child = Command::new(bin())
        .arg("diff")
        .arg(&a)
        .arg(&b)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let reader = std::thread::spawn(move || std::io::read_to_string(stdout).unwrap());
    let mut status = 0;
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    let pid = child.id() as libc::pid_t;
    // SAFETY: wait4 on our own child with valid pointers; the Child is not waited on again.
    assert_eq!(unsafe { libc::wait4(pid, &mut status, 0, &mut usage) }, pid);
    let text = reader.join().unwrap();
    assert!(text.contains("big.bin: content: 201326592 bytes"), "{text}");
    let peak_mib = usage.ru_maxrss / 1024;
    assert!(
        peak_mib < 64,
        "diff held {peak_mib} MiB for 384 MB of layers"
    );
}

/// Input shapes that cost quadratic time or memory before (see `it/shapes.rs`): each finishes,
/// or is refused, within a memory bound linear in its size. Their times are measured by
/// `examples/bench.rs --hostile`.
#[test]
fn hostile_shapes_cost_linear_memory() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = TestStore::new();
    store.sample();
    let closure = store.write_closure();
    for case in shapes::hostile_cases(dir.path(), &closure, &store.root()) {
        let mut command = Command::new(bin());
        command.args(&case.args).stderr(Stdio::null());
        let (ok, peak) = peak_rss_mib(&mut command);
        eprintln!("{}: peak RSS {peak} MiB", case.what);
        assert_eq!(
            ok, !case.refused,
            "{}: layered-gen's exit status",
            case.what
        );
        assert!(
            peak <= case.bound_mib,
            "{}: peak RSS {peak} MiB over {} MiB",
            case.what,
            case.bound_mib
        );
    }
}
