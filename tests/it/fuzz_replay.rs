//! Every fuzz seed and every saved crash, run through the fuzz targets' code (fuzz/targets.rs)
//! in the ordinary test suite: a crash the fuzzer once found stays fixed.

use crate::targets;

use std::path::Path;

/// The inputs kept for one target: its seeds and its regressions.
fn inputs(target: &str) -> Vec<std::path::PathBuf> {
    let fuzz = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz");
    let mut files = Vec::new();
    for kind in ["seeds", "regressions"] {
        let Ok(dir) = std::fs::read_dir(fuzz.join(kind).join(target)) else {
            continue;
        };
        for entry in dir {
            files.push(entry.expect("listing fuzz inputs").path());
        }
    }
    files.sort();
    files
}

#[test]
fn every_seed_and_regression_runs_clean() {
    for &(target, run) in targets::TARGETS {
        let files = inputs(target);
        assert!(!files.is_empty(), "fuzz/seeds/{target} has no seeds");
        for file in files {
            let data = std::fs::read(&file).expect("reading a fuzz input");
            let outcome = std::panic::catch_unwind(|| run(&data));
            assert!(outcome.is_ok(), "{target} panicked on {}", file.display());
        }
    }
}

#[test]
fn every_target_has_a_binary_and_a_ci_run() {
    let fuzz = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz");
    let script = std::fs::read_to_string(fuzz.join("run")).expect("reading fuzz/run");
    for &(target, _) in targets::TARGETS {
        let binary = fuzz.join("fuzz_targets").join(format!("{target}.rs"));
        assert!(binary.is_file(), "no {}", binary.display());
        assert!(script.contains(target), "fuzz/run does not run {target}");
    }
}
