//! Temporary output: files and directories written beside their target (or in the scratch
//! directory) and renamed into place when complete. Each is named `.layered-gen-<pid>-…` and
//! registered while it exists, so that SIGINT, SIGTERM or SIGHUP removes it before the
//! process ends; and what a killed process (SIGKILL, a crash) left is recognised by that name
//! and removed by the next run that writes into the same directory.

use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// Temporary paths that exist now.
static PENDING: Mutex<Vec<PathBuf>> = Mutex::new(Vec::new());

const PREFIX: &str = ".layered-gen-";

/// The name prefix of this process's temporary output.
pub(crate) fn prefix() -> String {
    format!("{PREFIX}{}-", std::process::id())
}

/// A registered temporary path; dropping it unregisters it (it was renamed or removed).
pub(crate) struct Registered(PathBuf);

impl Drop for Registered {
    fn drop(&mut self) {
        if let Ok(mut pending) = PENDING.lock() {
            pending.retain(|p| *p != self.0);
        }
    }
}

/// Registers `path` for removal should a signal end the process.
pub(crate) fn register(path: &Path) -> Registered {
    if let Ok(mut pending) = PENDING.lock() {
        pending.push(path.to_path_buf());
    }
    Registered(path.to_path_buf())
}

/// Removes every registered path (called when a signal ends the process).
fn remove_pending() {
    let pending = match PENDING.lock() {
        Ok(pending) => pending.clone(),
        Err(poisoned) => poisoned.into_inner().clone(),
    };
    for path in pending {
        remove(&path);
    }
}

fn remove(path: &Path) {
    match std::fs::symlink_metadata(path) {
        Ok(meta) if meta.is_dir() => {
            let _ = std::fs::remove_dir_all(path);
        }
        Ok(_) => {
            let _ = std::fs::remove_file(path);
        }
        Err(_) => {}
    }
}

/// On SIGINT, SIGTERM or SIGHUP: remove the temporary output, then end as the signal would.
pub fn install_signal_cleanup() -> std::io::Result<()> {
    use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
    let mut signals = signal_hook::iterator::Signals::new([SIGINT, SIGTERM, SIGHUP])?;
    std::thread::Builder::new()
        .name("lg-signals".to_string())
        .spawn(move || {
            if let Some(signal) = signals.forever().next() {
                remove_pending();
                let _ = signal_hook::low_level::emulate_default_handler(signal);
                std::process::exit(128 + signal);
            }
        })?;
    Ok(())
}

/// Removes from `dir` the temporary output of processes that no longer run.
pub(crate) fn clear_stale(dir: &Path) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(rest) = name.to_str().and_then(|n| n.strip_prefix(PREFIX)) else {
            continue;
        };
        let Some(pid) = rest
            .split_once('-')
            .and_then(|(pid, _)| pid.parse::<libc::pid_t>().ok())
        else {
            continue;
        };
        if pid != std::process::id() as libc::pid_t && !alive(pid) {
            remove(&entry.path());
        }
    }
}

/// Whether a process with this id runs (one we may not signal runs too).
fn alive(pid: libc::pid_t) -> bool {
    // SAFETY: signal 0 only checks that the process exists.
    let result = unsafe { libc::kill(pid, 0) };
    result == 0 || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn leftovers_of_dead_processes_go_and_others_stay() {
        let dir = tempfile::tempdir().unwrap();
        // No process has pid 2^22 + 1 (above Linux's largest pid).
        let dead = dir.path().join(".layered-gen-4194305-abc.tmp");
        let dead_dir = dir.path().join(".layered-gen-4194305-xyz");
        let ours = dir.path().join(format!("{}abc.tmp", prefix()));
        let other = dir.path().join(".layered-gen-notapid");
        let user = dir.path().join("image.tar");
        for file in [&dead, &ours, &other, &user] {
            std::fs::write(file, "x").unwrap();
        }
        std::fs::create_dir(&dead_dir).unwrap();
        std::fs::write(dead_dir.join("blob"), "x").unwrap();
        clear_stale(dir.path());
        assert!(!dead.exists() && !dead_dir.exists());
        assert!(ours.exists() && other.exists() && user.exists());
    }

    #[test]
    fn registration_ends_with_the_guard() {
        let path = PathBuf::from("/nonexistent/.layered-gen-test");
        {
            let _guard = register(&path);
            assert!(PENDING.lock().unwrap().contains(&path));
        }
        assert!(!PENDING.lock().unwrap().contains(&path));
    }
}
