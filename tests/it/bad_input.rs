//! Bad input gets a clear error naming what to fix, a non-zero exit, and no output left behind.

use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{PermissionsExt, symlink};
use std::path::Path;
use std::process::Command;

use crate::common::*;

/// The names in a directory, to check that a failed run left nothing (no temp files either).
fn names_in(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

fn sample_store() -> (TestStore, String) {
    let mut store = TestStore::new();
    store.sample();
    let closure = store.write_closure().to_str().unwrap().to_string();
    (store, closure)
}

/// Runs layered-gen into a fresh output directory, expects failure, checks the directory stays
/// empty, and returns stderr.
fn fails_leaving_nothing(store: &TestStore, closure: &str, extra: &[&str]) -> String {
    let out_dir = store.dir.path().join("out");
    fs::create_dir_all(&out_dir).unwrap();
    let root = store.store_root_arg();
    for format in ["docker-archive", "oci"] {
        let out = out_dir.join("image.tar");
        let mut args = vec![
            "--closure",
            closure,
            "--store-root",
            &root,
            "--format",
            format,
            "-o",
            out.to_str().unwrap(),
        ];
        args.extend_from_slice(extra);
        let stderr = layered_gen_fails(&args);
        assert_eq!(
            names_in(&out_dir),
            Vec::<String>::new(),
            "{format}: {stderr}"
        );
        if format == "oci" {
            return stderr;
        }
    }
    unreachable!()
}

#[test]
fn a_path_missing_from_the_store_is_named() {
    let (store, closure) = sample_store();
    let missing = &store.paths[1].0;
    fs::remove_file(store.source(missing)).unwrap();
    let stderr = fails_leaving_nothing(&store, &closure, &[]);
    assert_eq!(
        stderr,
        format!(
            "layered-gen: error: --store-root: the store path {missing} is in the closure but \
             not under the store root: reading {}: No such file or directory\n",
            store.source(missing).display(),
        )
    );
}

#[test]
fn a_special_file_is_named() {
    let (store, closure) = sample_store();
    let fifo = store.source(&store.paths[3].0).join("bin/fifo");
    run(Command::new("mkfifo").arg(&fifo));
    let stderr = fails_leaving_nothing(&store, &closure, &[]);
    assert_eq!(
        stderr,
        format!(
            "layered-gen: error: layer 3 ({}): {}: it is a fifo; a store path holds only \
             regular files, directories and symlinks\n",
            store.paths[3].0,
            fifo.display()
        )
    );
}

#[test]
fn file_names_that_are_not_utf8_keep_their_bytes() {
    let mut store = TestStore::new();
    let name = b"caf\xe9-\xff.txt";
    let path = store.add("latin1-1", &[], |dir| {
        fs::create_dir_all(dir).unwrap();
        fs::write(dir.join(std::ffi::OsStr::from_bytes(name)), "bytes\n").unwrap();
    });
    let closure = store.write_closure();
    let out = store.dir.path().join("image.tar");
    layered_gen(&[
        "--closure",
        closure.to_str().unwrap(),
        "--store-root",
        &store.store_root_arg(),
        "-o",
        out.to_str().unwrap(),
    ]);
    let mut outer = tar::Archive::new(fs::File::open(&out).unwrap());
    let layer = outer
        .entries()
        .unwrap()
        .map(|e| e.unwrap())
        .find(|e| e.path_bytes().starts_with(b"layers/"))
        .unwrap();
    let mut expected = path.trim_start_matches('/').as_bytes().to_vec();
    expected.push(b'/');
    expected.extend_from_slice(name);
    let names: Vec<Vec<u8>> = tar::Archive::new(layer)
        .entries()
        .unwrap()
        .map(|e| e.unwrap().path_bytes().into_owned())
        .collect();
    assert!(names.contains(&expected), "{names:?}");
}

/// Runs layered-gen as the unprivileged user `nobody` (root reads everything, so permission
/// errors need another user).
fn as_nobody(args: &[&str]) -> std::process::Output {
    let setpriv = require("setpriv");
    Command::new(setpriv)
        .args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"])
        .arg(bin())
        .args(args)
        .output()
        .unwrap()
}

/// Opens the test directory to other users: `nobody` must reach the store and the binary.
fn open_up(dir: &Path) {
    let mut path = dir.to_path_buf();
    loop {
        let mode = fs::metadata(&path).unwrap().permissions().mode();
        fs::set_permissions(&path, fs::Permissions::from_mode(mode | 0o755)).unwrap();
        if !path.pop() || path.as_os_str() == "/" {
            break;
        }
    }
    run(Command::new("chmod").args(["-R", "a+rX"]).arg(dir));
}

/// Builds the sample store as `nobody` into `out_dir` (made with `mode`), with `unreadable`
/// closed to it, expecting failure; returns stderr after checking that nothing was left.
fn fails_as_nobody(
    store: &TestStore,
    closure: &str,
    out_dir: &Path,
    mode: u32,
    unreadable: Option<&Path>,
) -> String {
    open_up(store.dir.path());
    open_up(bin().parent().unwrap());
    if let Some(file) = unreadable {
        fs::set_permissions(file, fs::Permissions::from_mode(0o000)).unwrap();
    }
    fs::create_dir_all(out_dir).unwrap();
    fs::set_permissions(out_dir, fs::Permissions::from_mode(mode)).unwrap();
    let out = out_dir.join("image.tar");
    let output = as_nobody(&[
        "--closure",
        closure,
        "--store-root",
        &store.store_root_arg(),
        "-o",
        out.to_str().unwrap(),
    ]);
    assert!(!output.status.success());
    assert_eq!(names_in(out_dir), Vec::<String>::new());
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[test]
#[cfg_attr(
    not(feature = "tool-tests"),
    ignore = "needs root (it drops to nobody with setpriv): cargo test --features tool-tests (.ci/run)"
)]
fn an_unreadable_file_is_named_and_nothing_is_left() {
    let (store, closure) = sample_store();
    let secret = store.source(&store.paths[3].0).join("bin/not-exec");
    let out_dir = store.dir.path().join("out");
    assert_eq!(
        fails_as_nobody(&store, &closure, &out_dir, 0o777, Some(&secret)),
        format!(
            "layered-gen: error: layer 3 ({}): opening {}: Permission denied\n",
            store.paths[3].0,
            secret.display()
        )
    );
}

#[test]
#[cfg_attr(
    not(feature = "tool-tests"),
    ignore = "needs root (it drops to nobody with setpriv): cargo test --features tool-tests (.ci/run)"
)]
fn an_unwritable_output_directory_is_an_error() {
    let (store, closure) = sample_store();
    let out_dir = store.dir.path().join("readonly");
    assert_eq!(
        fails_as_nobody(&store, &closure, &out_dir, 0o555, None),
        format!(
            "layered-gen: error: creating a temporary file in {}: Permission denied\n",
            out_dir.display()
        )
    );
}

#[test]
fn command_line_mistakes_are_explained() {
    let (store, closure) = sample_store();
    let root = store.store_root_arg();
    let out = store.dir.path().join("x.tar");
    let out = out.to_str().unwrap();
    let base = ["--closure", closure.as_str(), "--store-root", root.as_str()];
    let cases: Vec<(Vec<&str>, String)> =
        vec![
        (
            vec![],
            "no output given: pass -o FILE, or -o - to stream to stdout".into(),
        ),
        (
            vec!["--compression", "zstd", "-o", out],
            "--compression: zstd-compressed layers need the OCI format: docker load does not \
             read them from a docker-archive"
                .into(),
        ),
        (
            vec!["--name", "Bad Name", "-o", out],
            "--name: the image name \"Bad Name\" is not valid: the path component \"Bad Name\" \
             must be lower-case letters and digits, separated by '.', '_', '__' or '-'"
                .into(),
        ),
        (
            vec!["--tag", ".x", "-o", out],
            "--tag: the tag \".x\" is not valid: up to 128 letters, digits, '_', '.' and '-', \
             starting with a letter, digit or '_'"
                .into(),
        ),
        (
            vec!["--name", "Foo/bar", "-o", out],
            "--name: the image name \"Foo/bar\" is not valid: the path component \"Foo\" must \
             be lower-case letters and digits, separated by '.', '_', '__' or '-'"
                .into(),
        ),
        (
            vec!["--max-layers", "1", "-o", out],
            "--max-layers: a limit of 1 layers is too small: it must be at least 2".into(),
        ),
        (
            vec!["-o", "/nonexistent/dir/x.tar"],
            "-o: cannot write /nonexistent/dir/x.tar: the directory /nonexistent/dir does not \
             exist"
                .into(),
        ),
        (
            vec!["--compression", "none", "--compression-level", "3", "-o", out],
            "--compression-level: a compression level needs gzip or zstd compression".into(),
        ),
        (
            vec!["--compression-level", "12", "--format", "oci", "-o", out],
            "--compression-level: compression level 12 is out of range for gzip (0-9)".into(),
        ),
        (
            vec!["--env", "NOVALUE", "-o", out],
            "--env: the Env entry \"NOVALUE\" is not NAME=value".into(),
        ),
        (
            vec!["--label", "x", "-o", out],
            "--label: \"x\" is not KEY=VALUE".into(),
        ),
    ];
    for (extra, message) in cases {
        let mut args = base.to_vec();
        args.extend(extra.iter().copied());
        assert_eq!(
            layered_gen_fails(&args),
            format!("layered-gen: error: {message}\n"),
            "{extra:?}"
        );
    }
    // Values clap checks with the library's parsers: clap names the flag and the value.
    let parsed: Vec<(Vec<&str>, &str)> = vec![
        (
            vec!["--architecture", "vax", "-o", out],
            "invalid value 'vax' for '--architecture <ARCH>': unknown architecture \"vax\"; \
             accepted: amd64, x86_64-linux, arm64, aarch64-linux, 386, i686-linux, arm, arm/v7, \
             armv7l-linux, arm/v6, armv6l-linux, ppc64le, powerpc64le-linux, ppc64, \
             powerpc64-linux, s390x, s390x-linux, riscv64, riscv64-linux, mips64le, \
             mips64el-linux, mips64, mips64-linux",
        ),
        (
            vec!["--created", "2024-05-01T12:00:00+99:00", "-o", out],
            "invalid value '2024-05-01T12:00:00+99:00' for '--created <TIME>': \
             \"2024-05-01T12:00:00+99:00\" is not an RFC 3339 time like \
             2024-05-01T12:00:00Z, a date like 2024-05-01, nor \"now\"",
        ),
        (
            vec!["--created", "yesterday", "-o", out],
            "invalid value 'yesterday' for '--created <TIME>': \"yesterday\" is not an RFC 3339 \
             time like 2024-05-01T12:00:00Z, a date like 2024-05-01, nor \"now\"",
        ),
        (
            vec!["--uid", "4294967296", "-o", out],
            "invalid value '4294967296' for '--uid <UID>': 4294967296 is not in 0..=4294967295",
        ),
    ];
    for (extra, message) in parsed {
        let mut args = base.to_vec();
        args.extend(extra.iter().copied());
        let stderr = layered_gen_fails(&args);
        assert!(
            stderr.starts_with(&format!("error: {message}\n")),
            "{extra:?}: {stderr}"
        );
    }
    // SOURCE_DATE_EPOCH is --mtime's default, checked the same way.
    let mut args = base.to_vec();
    args.extend(["-o", out]);
    let output = Command::new(bin())
        .args(&args)
        .env("SOURCE_DATE_EPOCH", "soon")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.starts_with("error: invalid value 'soon' for '--mtime <TIME>'"),
        "{stderr}"
    );
    assert!(!Path::new(out).exists());
}

#[test]
fn a_plain_path_list_is_refused() {
    let (store, _) = sample_store();
    let list = store.dir.path().join("store-paths");
    let paths: Vec<&str> = store.paths.iter().map(|(p, _)| p.as_str()).collect();
    fs::write(&list, paths.join("\n") + "\n").unwrap();
    let stderr = layered_gen_fails(&["plan", "--closure", list.to_str().unwrap()]);
    assert!(
        stderr.contains("this is a plain list of store paths (like closureInfo's store-paths)"),
        "{stderr}"
    );
}

/// Bytes from a hostile closure reach the terminal escaped, and a huge value only as an excerpt.
#[test]
fn hostile_input_is_escaped_and_shortened_in_messages() {
    let dir = tempfile::tempdir().unwrap();
    let hash = "0".repeat(32);
    let cases = [
        format!("/nix/store/{hash}-evil\u{1b}]0;owned\u{7}\u{1b}[2J\n\n0\n"),
        format!("/nix/store/{hash}-{}\n\n0\n", "x".repeat(100_000)),
        format!("[{{\"path\": \"/nix/store/{hash}-a\\u009b31m\", \"references\": []}}]"),
    ];
    for (i, text) in cases.iter().enumerate() {
        let closure = dir.path().join(format!("closure-{i}"));
        fs::write(&closure, text).unwrap();
        let stderr = layered_gen_fails(&["plan", "--closure", closure.to_str().unwrap()]);
        let message = stderr.strip_suffix('\n').unwrap_or(&stderr);
        assert!(
            !message.chars().any(char::is_control),
            "case {i}: a control character reached the terminal: {message:?}"
        );
        assert!(message.len() < 1000, "case {i}: {} bytes", message.len());
        assert!(
            message.starts_with("layered-gen: error: --closure: "),
            "{message}"
        );
    }
}

/// Reads a FIFO until its writer closes it, giving up after `limit` (a writer that never
/// comes must fail the test, not hang it): opened without blocking, then polled.
fn read_fifo(path: &Path, limit: std::time::Duration) -> Option<Vec<u8>> {
    use std::io::Read;
    use std::os::unix::fs::OpenOptionsExt;
    use std::os::unix::io::AsRawFd;
    let mut file = fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)
        .ok()?;
    let deadline = std::time::Instant::now() + limit;
    let mut data = Vec::new();
    let mut buffer = vec![0u8; 1 << 16];
    while std::time::Instant::now() < deadline {
        let mut poll = libc::pollfd {
            fd: file.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd for the duration of the call.
        if unsafe { libc::poll(&mut poll, 1, 100) } <= 0 {
            continue;
        }
        match file.read(&mut buffer) {
            Ok(0) if poll.revents & libc::POLLHUP != 0 => return Some(data),
            Ok(n) => data.extend_from_slice(&buffer[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(_) => return None,
        }
    }
    None
}

/// `-o` onto a FIFO writes through it (a reader gets the image) and leaves the FIFO; onto a
/// symlink, writes the file it names and leaves the link; a dangling link's target is
/// created; a socket or a directory is refused. (Devices such as /dev/null are written
/// through like the FIFO; CI runs as root, so no test points at the real /dev/null.)
#[test]
fn output_onto_links_fifos_and_sockets_keeps_them() {
    use std::os::unix::fs::FileTypeExt;
    let (store, closure) = sample_store();
    let dir = store.dir.path().join("targets");
    fs::create_dir_all(&dir).unwrap();
    let build = |out: &Path| {
        Command::new(bin())
            .args([
                "--closure",
                &closure,
                "--store-root",
                &store.store_root_arg(),
                "-q",
                "-o",
            ])
            .arg(out)
            .output()
            .unwrap()
    };

    let fifo = dir.join("fifo");
    run(Command::new("mkfifo").arg(&fifo));
    let reader = {
        let fifo = fifo.clone();
        std::thread::spawn(move || read_fifo(&fifo, std::time::Duration::from_secs(60)))
    };
    let output = build(&fifo);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        fs::symlink_metadata(&fifo).unwrap().file_type().is_fifo(),
        "still a FIFO"
    );
    let image = reader
        .join()
        .unwrap()
        .expect("the image came through the FIFO");
    let mut archive = tar::Archive::new(image.as_slice());
    assert!(
        archive
            .entries()
            .unwrap()
            .any(|e| e.unwrap().path_bytes().as_ref() == b"manifest.json"),
        "the reader got the image"
    );

    let real = dir.join("real.tar");
    fs::write(&real, "old").unwrap();
    let link = dir.join("link.tar");
    symlink("real.tar", &link).unwrap();
    assert!(build(&link).status.success());
    assert!(
        fs::symlink_metadata(&link)
            .unwrap()
            .file_type()
            .is_symlink(),
        "still a link"
    );
    assert!(
        fs::metadata(&real).unwrap().len() > 1024,
        "the target holds the image"
    );

    let dangling = dir.join("dangling.tar");
    symlink("made-by-us.tar", &dangling).unwrap();
    assert!(build(&dangling).status.success());
    assert!(
        fs::symlink_metadata(&dangling)
            .unwrap()
            .file_type()
            .is_symlink()
    );
    assert!(dir.join("made-by-us.tar").is_file());

    let socket = dir.join("socket");
    let _listener = std::os::unix::net::UnixListener::bind(&socket).unwrap();
    let output = build(&socket);
    assert_eq!(
        String::from_utf8_lossy(&output.stderr),
        format!(
            "layered-gen: error: -o: {} is a socket, which cannot hold an image file\n",
            socket.display()
        )
    );
    assert!(
        fs::symlink_metadata(&socket)
            .unwrap()
            .file_type()
            .is_socket()
    );
    let output = build(&dir);
    assert!(
        String::from_utf8_lossy(&output.stderr).contains("is a directory, which cannot hold"),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert_eq!(
        names_in(&dir),
        [
            "dangling.tar",
            "fifo",
            "link.tar",
            "made-by-us.tar",
            "real.tar",
            "socket"
        ],
        "no temporary file left"
    );
}

#[test]
fn closed_stdout_is_an_error_not_a_success() {
    use std::os::unix::process::CommandExt;
    let (store, closure) = sample_store();
    let mut command = Command::new(bin());
    command.args([
        "--closure",
        &closure,
        "--store-root",
        &store.store_root_arg(),
        "-o",
        "-",
    ]);
    // SAFETY: close(2) is async-signal-safe; the child runs nothing else before exec.
    unsafe {
        command.pre_exec(|| {
            libc::close(1);
            Ok(())
        });
    }
    let output = command.output().unwrap();
    assert!(!output.status.success());
    assert_eq!(
        String::from_utf8_lossy(&output.stderr),
        "layered-gen: error: -o: stdout is closed: there is nowhere to stream the output\n"
    );
}

/// A store with one large, incompressible file: a build that takes seconds.
fn slow_store() -> (TestStore, String) {
    use std::io::Write;
    let mut store = TestStore::new();
    store.add("large-1.0", &[], |dir| {
        fs::create_dir_all(dir).unwrap();
        let mut file = fs::File::create(dir.join("noise")).unwrap();
        let mut x = 0x9E37_79B9_7F4A_7C15u64;
        let mut chunk = vec![0u8; 1 << 20];
        for _ in 0..256 {
            for byte in chunk.iter_mut() {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                *byte = x as u8;
            }
            file.write_all(&chunk).unwrap();
        }
    });
    let closure = store.write_closure().to_str().unwrap().to_string();
    (store, closure)
}

/// Starts a slow build into `out`, waits until its temporary output exists, then sends
/// `signal`; returns how it ended.
fn interrupted(
    store: &TestStore,
    closure: &str,
    out: &Path,
    extra: &[&str],
    signal: i32,
) -> std::process::ExitStatus {
    let dir = out.parent().unwrap();
    let mut child = Command::new(bin())
        .args([
            "--closure",
            closure,
            "--store-root",
            &store.store_root_arg(),
            "-q",
        ])
        .args(extra)
        .arg("-o")
        .arg(out)
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while !names_in(dir).iter().any(|n| n.starts_with(".layered-gen-")) {
        assert!(
            child.try_wait().unwrap().is_none(),
            "the build ended before it was interrupted"
        );
        assert!(
            std::time::Instant::now() < deadline,
            "no temporary output appeared"
        );
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    // SAFETY: signalling our own child.
    unsafe { libc::kill(child.id() as libc::pid_t, signal) };
    child.wait().unwrap()
}

#[test]
fn signals_leave_no_temporary_output() {
    let (store, closure) = slow_store();
    for (signal, name, extra) in [
        (libc::SIGTERM, "oci-layout", &["--format", "oci"][..]),
        (
            libc::SIGINT,
            "image.tar",
            &["--archive-compression", "gzip"][..],
        ),
    ] {
        let dir = store.dir.path().join(format!("out-{signal}"));
        fs::create_dir_all(&dir).unwrap();
        let status = interrupted(&store, &closure, &dir.join(name), extra, signal);
        // Ended by the signal, or (when the signal cut a system call short first) by the
        // error that followed: either way not a success, and nothing left.
        assert!(!status.success(), "signal {signal}: {status:?}");
        assert_eq!(
            names_in(&dir),
            Vec::<String>::new(),
            "signal {signal}: nothing left"
        );
    }
}

#[test]
fn leftovers_of_a_killed_run_are_cleared_by_the_next() {
    let (store, closure) = slow_store();
    let dir = store.dir.path().join("out");
    fs::create_dir_all(&dir).unwrap();
    let out = dir.join("image.tar");
    interrupted(
        &store,
        &closure,
        &out,
        &["--archive-compression", "gzip"],
        libc::SIGKILL,
    );
    let left = names_in(&dir);
    assert!(
        left.len() == 1 && left[0].starts_with(".layered-gen-"),
        "SIGKILL leaves its temporary file: {left:?}"
    );
    store.build(&out, &["-q"]);
    assert_eq!(names_in(&dir), ["image.tar"], "the next run cleared it");
}

/// Contents that link out of the store, whiteout names in an extra directory, and removals of
/// the image's own store paths were accepted: the host's tree in the image, or the store
/// hidden from it.
#[test]
fn escapes_from_the_store_and_hidden_stores_are_refused() {
    let mut store = TestStore::new();
    let real = store.add("real-1.0", &[], |dir| {
        fs::create_dir_all(dir.join("bin")).unwrap();
        fs::write(dir.join("bin/tool"), "tool\n").unwrap();
    });
    let evil = store.add("evil-1.0", &[], |dir| symlink("/etc", dir).unwrap());
    let alias = store.add("alias-1.0", &[&real], |dir| {
        symlink(&real, dir).unwrap();
    });
    let closure = store.write_closure();
    let out = store.dir.path().join("x.tar");
    let base = [
        "--closure",
        closure.to_str().unwrap(),
        "--store-root",
        &store.store_root_arg(),
        "-o",
        out.to_str().unwrap(),
    ];
    let with = |extra: &[&str]| -> Vec<String> {
        base.iter().chain(extra).map(|s| s.to_string()).collect()
    };
    let fails = |extra: &[&str]| {
        let args = with(extra);
        layered_gen_fails(&args.iter().map(String::as_str).collect::<Vec<_>>())
    };
    assert_eq!(
        fails(&["--contents", &evil]),
        format!(
            "layered-gen: error: --contents: the contents {evil} is a symlink to /etc, outside \
             the store /nix/store; contents are store paths\n"
        )
    );
    // A link to another store path is followed.
    let args = with(&["--contents", &alias]);
    layered_gen(&args.iter().map(String::as_str).collect::<Vec<_>>());

    let extra = store.dir.path().join("extra");
    fs::create_dir_all(extra.join("etc")).unwrap();
    fs::write(extra.join("etc/.wh..wh..opq"), "").unwrap();
    let stderr = fails(&["--extra-dir", extra.to_str().unwrap()]);
    assert!(
        stderr.starts_with(&format!(
            "layered-gen: error: --extra-dir: {}/etc/.wh..wh..opq has a whiteout's name",
            extra.display()
        )),
        "{stderr}"
    );

    for hidden in ["/nix", "/nix/store", &format!("{real}/bin")] {
        let stderr = fails(&["--contents", &real, "--remove", hidden]);
        assert!(
            stderr.starts_with(&format!(
                "layered-gen: error: --remove: removing {hidden} would hide the image's own store paths"
            )),
            "{hidden}: {stderr}"
        );
    }
}

/// Every JSON and text input is read up to a limit: /dev/zero, which grew memory until it
/// ran out, is an error at once.
#[test]
fn endless_inputs_stop_at_their_limit() {
    let (store, closure) = sample_store();
    let out = store.dir.path().join("x.tar");
    let root = store.store_root_arg();
    let base = ["--store-root", root.as_str(), "-o", out.to_str().unwrap()];
    let cases: [(Vec<&str>, String); 4] = [
        (
            vec!["--closure", "/dev/zero", "--max-closure-size", "1000000"],
            "layered-gen: error: --closure: /dev/zero: it holds more than 1000000 bytes, the \
             limit for this input\n"
                .to_string(),
        ),
        (
            vec!["--closure", &closure, "--config", "/dev/zero"],
            "layered-gen: error: --config: /dev/zero: it holds more than 16777216 bytes, the \
             limit for this input\n"
                .to_string(),
        ),
        (
            vec![
                "--closure",
                &closure,
                "--perms",
                "/dev/zero",
                "--remove",
                "/x",
            ],
            "layered-gen: error: --perms: /dev/zero: it holds more than 16777216 bytes, the \
             limit for this input\n"
                .to_string(),
        ),
        (
            vec![
                "--closure",
                &closure,
                "--layering",
                "reuse",
                "--previous-plan",
                "/dev/zero",
            ],
            "layered-gen: error: --previous-plan: /dev/zero: it holds more than 16777216 bytes, \
             the limit for this input\n"
                .to_string(),
        ),
    ];
    for (extra, expected) in cases {
        let mut args = extra.clone();
        args.extend_from_slice(&base);
        assert_eq!(layered_gen_fails(&args), expected, "{extra:?}");
    }
}

/// A base compressed as a whole expanded into an unbounded scratch file: now at most 100
/// times its size (and 64 MiB more).
#[test]
fn a_decompression_bomb_as_base_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    // A tar holding 200 MiB of zeros, compressed to a few hundred bytes.
    let mut tar = tar::Builder::new(Vec::new());
    let mut header = tar::Header::new_ustar();
    header.set_size(200 << 20);
    header.set_mode(0o644);
    tar.append_data(
        &mut header,
        "zeros",
        std::io::Read::take(std::io::repeat(0), 200 << 20),
    )
    .unwrap();
    let bomb = zstd::encode_all(tar.into_inner().unwrap().as_slice(), 19).unwrap();
    let path = dir.path().join("bomb.tar.zst");
    fs::write(&path, &bomb).unwrap();
    let closure = dir.path().join("closure");
    fs::write(&closure, format!("/nix/store/{}-x\n\n0\n", store_hash("x"))).unwrap();
    let stderr = layered_gen_fails(&[
        "plan",
        "--closure",
        closure.to_str().unwrap(),
        "--from-image",
        path.to_str().unwrap(),
    ]);
    assert!(
        stderr.contains("it decompresses to more than") && stderr.contains("not an image archive"),
        "{stderr}"
    );
}

/// A filesystem without room for an image whose length is known fails before the first
/// byte, saying how much is needed and free (it failed after writing what fit, with ENOSPC).
#[test]
#[cfg_attr(
    not(feature = "tool-tests"),
    ignore = "needs root (mounts a small tmpfs): cargo test --features tool-tests (.ci/run)"
)]
fn a_full_filesystem_fails_before_writing() {
    let mut store = TestStore::new();
    store.sample();
    store.add("large-2.0", &[], |dir| {
        fs::create_dir_all(dir).unwrap();
        fs::write(dir.join("data"), vec![1u8; 3 << 20]).unwrap();
    });
    let small = store.dir.path().join("small");
    let closure = store.write_closure();
    let (stderr, left) = with_small_filesystem(&small, || {
        let stderr = layered_gen_fails(&[
            "--closure",
            closure.to_str().unwrap(),
            "--store-root",
            &store.store_root_arg(),
            "-o",
            small.join("image.tar").to_str().unwrap(),
        ]);
        (stderr, names_in(&small))
    });
    assert!(
        stderr.starts_with("layered-gen: error: -o: the image needs at least ")
            && stderr.contains(&format!("but the filesystem of {} has", small.display())),
        "{stderr}"
    );
    assert_eq!(left, Vec::<String>::new());
}

/// Bytes that do not compress: a filesystem fills however the layers are compressed.
fn incompressible(len: usize) -> Vec<u8> {
    let mut state = 0x9E37_79B9_7F4A_7C15u64;
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state as u8
        })
        .collect()
}

/// Mounts a 1 MiB tmpfs at `dir` (root only), for `run`, unmounting it after.
fn with_small_filesystem<T>(dir: &Path, run_in: impl FnOnce() -> T) -> T {
    fs::create_dir_all(dir).unwrap();
    run(Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=1m", "tmpfs"])
        .arg(dir));
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(run_in));
    let _ = Command::new("umount").arg(dir).status();
    result.unwrap_or_else(|panic| std::panic::resume_unwind(panic))
}

/// Compressed output has no length known in advance: when the filesystem fills, the error
/// names the output's filesystem and the room it had (it said only "writing the image: No
/// space left on device"), and nothing is left behind, for every compressed form.
#[test]
#[cfg_attr(
    not(feature = "tool-tests"),
    ignore = "needs root (mounts a small tmpfs): cargo test --features tool-tests (.ci/run)"
)]
fn a_filesystem_filling_while_compressing_is_named_and_cleaned_up() {
    let mut store = TestStore::new();
    store.add("noise-1.0", &[], |dir| {
        fs::create_dir_all(dir).unwrap();
        fs::write(dir.join("data"), incompressible(3 << 20)).unwrap();
    });
    let closure = store.write_closure();
    let small = store.dir.path().join("small");
    let cases: [(&[&str], &str); 3] = [
        (&["--format", "oci", "--compression", "gzip"], "oci"),
        (&["--format", "oci", "--compression", "zstd"], "oci.tar"),
        (&["--archive-compression", "gzip"], "image.tar.gz"),
    ];
    for (flags, name) in cases {
        let (stderr, left) = with_small_filesystem(&small, || {
            let out = small.join(name);
            let root = store.store_root_arg();
            let mut args = vec![
                "--closure",
                closure.to_str().unwrap(),
                "--store-root",
                &root,
            ];
            args.extend_from_slice(flags);
            args.extend(["-o", out.to_str().unwrap()]);
            (layered_gen_fails(&args), names_in(&small))
        });
        let expected = format!(
            "layered-gen: error: -o: the filesystem of {} is full (it had ",
            small.display()
        );
        assert!(
            stderr.starts_with(&expected) && stderr.contains("No space left on device"),
            "{flags:?}: {stderr}"
        );
        assert_eq!(left, Vec::<String>::new(), "{flags:?}");
    }
    // Images already made, merged into one archive (gzip'd as a whole): the same explanation.
    let image = store.dir.path().join("image.tar");
    store.build(&image, &[]);
    let (stderr, left) = with_small_filesystem(&small, || {
        let merged = small.join("merged.tar.gz");
        let stderr = layered_gen_fails(&[
            "merge",
            image.to_str().unwrap(),
            "--archive-compression",
            "gzip",
            "-o",
            merged.to_str().unwrap(),
        ]);
        (stderr, names_in(&small))
    });
    let expected = format!(
        "layered-gen: error: -o: the filesystem of {} is full (it had ",
        small.display()
    );
    assert!(stderr.starts_with(&expected), "merge: {stderr}");
    assert_eq!(left, Vec::<String>::new(), "merge");
}

/// A base image's layers are copied as they are, so their size is known before the first
/// byte even when the new layers are compressed: too little room fails at once.
#[test]
#[cfg_attr(
    not(feature = "tool-tests"),
    ignore = "needs root (mounts a small tmpfs): cargo test --features tool-tests (.ci/run)"
)]
fn base_layers_that_cannot_fit_fail_before_writing() {
    let mut base_store = TestStore::new();
    base_store.add("noise-1.0", &[], |dir| {
        fs::create_dir_all(dir).unwrap();
        fs::write(dir.join("data"), incompressible(2 << 20)).unwrap();
    });
    let base = base_store.dir.path().join("base.tar");
    run(Command::new(bin())
        .arg("--closure")
        .arg(base_store.write_closure())
        .arg("--store-root")
        .arg(base_store.root())
        .args(["--format", "oci", "--compression", "zstd", "-q", "-o"])
        .arg(&base));
    let mut store = TestStore::new();
    store.sample();
    let small = store.dir.path().join("small");
    let closure = store.write_closure();
    let (stderr, left) = with_small_filesystem(&small, || {
        let stderr = layered_gen_fails(&[
            "--closure",
            closure.to_str().unwrap(),
            "--store-root",
            &store.store_root_arg(),
            "--from-image",
            base.to_str().unwrap(),
            "--format",
            "oci",
            "--compression",
            "zstd",
            "-o",
            small.join("oci").to_str().unwrap(),
        ]);
        (stderr, names_in(&small))
    });
    assert!(
        stderr.starts_with("layered-gen: error: -o: the base image's layers need at least ")
            && stderr.contains(&format!("but the filesystem of {} has", small.display())),
        "{stderr}"
    );
    assert_eq!(left, Vec::<String>::new());
}
