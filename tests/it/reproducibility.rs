//! Byte-for-byte reproducibility: the output depends on the store paths' NAR contents and the
//! options, nothing else — not the umask, file times, hardlinks, owners or thread counts.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::common::*;

fn example_args(out: &Path, extra: &[&str]) -> Vec<String> {
    let root = repo_root().join("examples/tiny");
    let mut args: Vec<String> = [
        "--closure",
        root.join("closure").to_str().unwrap(),
        "--store-root",
        root.join("root").to_str().unwrap(),
        "--architecture",
        "amd64",
        "--name",
        "example/tiny",
        "-o",
        out.to_str().unwrap(),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    args.extend(extra.iter().map(|s| s.to_string()));
    args
}

/// Golden hashes of the example image in each output form. A change here is a change of the
/// format every user's image digests depend on: make it only on purpose, and say so.
#[test]
fn golden_example_images() {
    let dir = tempfile::tempdir().unwrap();
    let cases: [(&str, &[&str], &str); 3] = [
        (
            "docker.tar",
            &[],
            "6f4fcb96832de000884a4f309bfefa26d7675f88b21dfdceabe000f0bd9eefcf",
        ),
        (
            "gzip-oci.tar",
            &["--format", "oci"],
            "bc85ff233b3364526d44a88b1be43042336f96c3ca6f98b42d05eda0f10940e3",
        ),
        (
            "zstd-oci.tar",
            &["--format", "oci", "--compression", "zstd"],
            "b28b01085be840ff2380f42a68ad4266f2517c180166be4c9341f533eca4caff",
        ),
    ];
    let mut report = Vec::new();
    for (name, extra, expected) in cases {
        let out = dir.path().join(name);
        let args = example_args(&out, extra);
        run(Command::new(bin())
            .args(&args)
            .env_remove("SOURCE_DATE_EPOCH"));
        let actual = sha256_file(&out);
        if actual != expected {
            report.push(format!("{name}: expected {expected}, got {actual}"));
        }
    }
    assert!(
        report.is_empty(),
        "golden hashes changed:\n{}",
        report.join("\n")
    );
}

/// Copies the sample store with a different umask, fresh mtimes and a hardlink where the
/// original has two copies of one file (what `nix-store --optimise` does).
fn perturbed_copy(store: &TestStore) -> PathBuf {
    let copy = store.dir.path().join("perturbed-root");
    // Other owners only where we may give them (as root, as in CI); the rest everywhere.
    let chown = if unsafe { libc::geteuid() } == 0 {
        format!(" && chown -R -h 1234:5678 '{}'", copy.display())
    } else {
        String::new()
    };
    run(Command::new("sh").arg("-c").arg(format!(
        "umask 077 && cp -r --no-preserve=timestamps '{src}' '{dst}' && chmod -R u+w,go-rwx '{dst}'{chown}",
        src = store.root().display(),
        dst = copy.display()
    )));
    run(Command::new("sh").arg("-c").arg(format!(
        "find '{}' -exec touch -h -d @123456789 {{}} +",
        copy.display()
    )));
    let data = copy.join(store.paths[0].0.trim_start_matches('/'));
    let lib = copy.join(store.paths[2].0.trim_start_matches('/'));
    fs::remove_file(lib.join("lib/same.txt")).unwrap();
    fs::hard_link(data.join("share/same.txt"), lib.join("lib/same.txt")).unwrap();
    copy
}

#[test]
fn same_bytes_whatever_the_host_state_and_thread_count() {
    let mut store = TestStore::new();
    store.sample();
    let closure = store.write_closure();
    let copy = perturbed_copy(&store);
    for (format, compression) in [("docker-archive", "none"), ("oci", "gzip"), ("oci", "zstd")] {
        let build = |root: &Path, threads: &str, umask: &str, name: &str| {
            let out = store.dir.path().join(name);
            run(Command::new("sh")
                .arg("-c")
                .arg(format!("umask {umask} && exec \"$@\""))
                .arg("sh")
                .arg(bin())
                .args(["--closure", closure.to_str().unwrap(), "--store-root"])
                .arg(root)
                .args(["--format", format, "--compression", compression])
                .args(["--max-layers", "3", "-o"])
                .arg(&out)
                .env("RAYON_NUM_THREADS", threads)
                .env("LC_ALL", "C"));
            out
        };
        let a = build(&store.root(), "1", "022", &format!("a-{compression}.tar"));
        let b = build(&copy, "8", "077", &format!("b-{compression}.tar"));
        assert_same_bytes(&a, &b, &format!("{format} {compression}"));
    }
}

#[test]
fn mtime_uid_gid_and_source_date_epoch_reach_every_entry() {
    let mut store = TestStore::new();
    store.sample();
    let closure = store.write_closure();
    let out = store.dir.path().join("o.tar");
    run(Command::new(bin())
        .args(["--closure", closure.to_str().unwrap(), "--store-root"])
        .arg(store.root())
        .args(["--uid", "1000", "--gid", "100", "--max-layers", "2", "-o"])
        .arg(&out)
        .env("SOURCE_DATE_EPOCH", "1700000000"));
    let mut outer = tar::Archive::new(fs::File::open(&out).unwrap());
    let mut seen = 0;
    for entry in outer.entries().unwrap() {
        let entry = entry.unwrap();
        let name = entry.path().unwrap().to_string_lossy().into_owned();
        if !name.starts_with("layers/") {
            continue;
        }
        let mut layer = tar::Archive::new(entry);
        for inner in layer.entries().unwrap() {
            let inner = inner.unwrap();
            let header = inner.header();
            assert_eq!(header.mtime().unwrap(), 1_700_000_000);
            assert_eq!(header.uid().unwrap(), 1000);
            assert_eq!(header.gid().unwrap(), 100);
            assert_eq!(header.username_bytes(), Some(&b""[..]));
            assert_ne!(header.entry_type(), tar::EntryType::Link, "no hardlinks");
            seen += 1;
        }
    }
    assert!(seen > 10);
}
