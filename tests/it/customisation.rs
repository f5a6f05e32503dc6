//! The runtime config and the customisation layer, checked with skopeo, Docker and podman.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;

use crate::common::*;
use serde_json::{Value, json};

/// A store with busybox and an app, a config with duplicated Env names, an extra directory
/// owned by an app user through --perms, and busybox linked at /.
struct Fixture {
    store: TestStore,
    busybox: String,
    image: std::path::PathBuf,
}

fn build_fixture(name: &str) -> Fixture {
    let mut store = TestStore::new();
    let busybox = store.add_busybox();
    store.sample();
    let closure = store.write_closure();
    let dir = store.dir.path().to_path_buf();
    fs::write(
        dir.join("config.json"),
        json!({
            "Cmd": ["/bin/sh", "-c", "echo A=$A B=$B C=$C"],
            "Env": ["A=1", "B=b", "A=2", "PATH=/bin"],
            "Labels": {"org.example.from-config": "yes"},
            "ExposedPorts": {"8080/tcp": {}},
            "WorkingDir": "/var/lib/app",
        })
        .to_string(),
    )
    .unwrap();
    let extra = dir.join("extra");
    fs::create_dir_all(extra.join("var/lib/app/state")).unwrap();
    fs::write(extra.join("var/lib/app/state/db"), "data\n").unwrap();
    fs::create_dir_all(extra.join("tmp")).unwrap();
    fs::set_permissions(extra.join("tmp"), fs::Permissions::from_mode(0o1777)).unwrap();
    fs::write(
        dir.join("perms.json"),
        json!([{"path": "/var/lib/app", "recursive": true, "uid": 1000, "gid": 1000,
                "uname": "app", "gname": "app", "mode": "0750"}])
        .to_string(),
    )
    .unwrap();
    let image = dir.join("custom.tar");
    layered_gen(&[
        "--closure",
        closure.to_str().unwrap(),
        "--store-root",
        &store.store_root_arg(),
        "--max-layers",
        "3",
        "--name",
        name,
        "--tag",
        "custom",
        "--config",
        dir.join("config.json").to_str().unwrap(),
        "--env",
        "A=3",
        "--env",
        "C=from-flag",
        "--label",
        "org.example.from-flag=yes",
        "--contents",
        &busybox,
        "--extra-dir",
        extra.to_str().unwrap(),
        "--perms",
        dir.join("perms.json").to_str().unwrap(),
        "--remove",
        "/etc/motd",
        "-o",
        image.to_str().unwrap(),
    ]);
    Fixture {
        store,
        busybox,
        image,
    }
}

#[test]
#[cfg_attr(
    not(feature = "tool-tests"),
    ignore = "needs skopeo: cargo test --features tool-tests (.ci/run)"
)]
fn config_is_merged_as_skopeo_sees_it() {
    let fixture = build_fixture("layered-gen-test/config");
    let output = run(Command::new(require("skopeo"))
        .args(["inspect", "--config"])
        .arg(format!("docker-archive:{}", fixture.image.display())));
    let config: Value = serde_json::from_slice(&output.stdout).unwrap();
    let runtime = &config["config"];
    // A keeps its first position and takes the last value (the --env flag's).
    assert_eq!(
        runtime["Env"],
        json!(["A=3", "B=b", "PATH=/bin", "C=from-flag"])
    );
    assert_eq!(
        runtime["Cmd"],
        json!(["/bin/sh", "-c", "echo A=$A B=$B C=$C"])
    );
    assert_eq!(runtime["ExposedPorts"], json!({"8080/tcp": {}}));
    assert_eq!(
        runtime["Labels"],
        json!({"org.example.from-config": "yes", "org.example.from-flag": "yes"})
    );
    // Two store layers and the customisation layer: --max-layers 3 counts it.
    assert_eq!(config["rootfs"]["diff_ids"].as_array().unwrap().len(), 3);
    let history = config["history"].as_array().unwrap();
    assert!(
        history[2]["comment"]
            .as_str()
            .unwrap()
            .starts_with("customisation layer; contents: /nix/store/")
    );
}

/// The customisation layer's tar headers: owners, modes, links and the whiteout.
#[test]
#[cfg_attr(
    not(feature = "tool-tests"),
    ignore = "needs busybox, umoci: cargo test --features tool-tests (.ci/run)"
)]
fn customisation_layer_entries() {
    let fixture = build_fixture("layered-gen-test/entries");
    let mut outer = tar::Archive::new(fs::File::open(&fixture.image).unwrap());
    let layer = outer
        .entries()
        .unwrap()
        .map(|e| e.unwrap())
        .find(|e| e.path().unwrap() == Path::new("layers/2.tar"))
        .unwrap();
    let mut seen = std::collections::BTreeMap::new();
    for entry in tar::Archive::new(layer).entries().unwrap() {
        let entry = entry.unwrap();
        let h = entry.header();
        let link = entry
            .link_name()
            .unwrap()
            .map(|l| l.display().to_string())
            .unwrap_or_default();
        seen.insert(
            entry.path().unwrap().display().to_string(),
            format!(
                "{:o} {}:{} {}:{} {link}",
                h.mode().unwrap(),
                h.uid().unwrap(),
                h.gid().unwrap(),
                h.username().unwrap().unwrap_or(""),
                h.groupname().unwrap().unwrap_or("")
            ),
        );
    }
    let bb = &fixture.busybox;
    assert_eq!(seen["bin/sh"], format!("777 0:0 : {bb}/bin/sh"));
    assert_eq!(seen["bin/busybox"], format!("777 0:0 : {bb}/bin/busybox"));
    assert_eq!(seen["var/lib/app/state/db"], "750 1000:1000 app:app ");
    assert_eq!(seen["var/lib/app/"], "750 1000:1000 app:app ");
    assert_eq!(seen["var/lib/"], "755 0:0 : ");
    assert_eq!(seen["tmp/"], "1777 0:0 : ");
    assert_eq!(seen["etc/.wh.motd"], "644 0:0 : ");
    let _ = &fixture.store;
}

#[test]
#[cfg_attr(
    not(feature = "tool-tests"),
    ignore = "needs docker, busybox: cargo test --features tool-tests (.ci/run)"
)]
fn docker_runs_with_the_merged_env_and_owners() {
    let docker = require("docker");
    let fixture = build_fixture("layered-gen-test/custom-docker");
    let reference = "layered-gen-test/custom-docker:custom";
    run(Command::new(&docker)
        .arg("load")
        .arg("-i")
        .arg(&fixture.image));
    let ran = docker_run(&[reference]);
    assert_eq!(
        String::from_utf8_lossy(&ran.stdout),
        "A=3 B=b C=from-flag\n"
    );
    let ran = docker_run(&[
        reference,
        "/bin/sh",
        "-c",
        "stat -c '%u:%g %a' /var/lib/app/state/db && pwd && readlink /bin/sh",
    ]);
    assert_eq!(
        String::from_utf8_lossy(&ran.stdout),
        format!("1000:1000 750\n/var/lib/app\n{}/bin/sh\n", fixture.busybox)
    );
    run(Command::new(&docker).args(["rmi", reference]));
}

#[test]
#[cfg_attr(
    not(feature = "tool-tests"),
    ignore = "needs podman, runc, busybox: cargo test --features tool-tests (.ci/run)"
)]
fn podman_runs_with_the_merged_env_and_owners() {
    let podman = Podman::new();
    let fixture = build_fixture("layered-gen-test/custom-podman");
    let reference = "layered-gen-test/custom-podman:custom";
    run(podman.command().arg("load").arg("-i").arg(&fixture.image));
    let ran = podman.run(&[reference]);
    assert_eq!(
        String::from_utf8_lossy(&ran.stdout),
        "A=3 B=b C=from-flag\n"
    );
    let ran = run(podman.command().args([
        "run",
        "--rm",
        "--network",
        "none",
        reference,
        "/bin/sh",
        "-c",
        "echo $A; stat -c '%u:%g' /var/lib/app/state/db",
    ]));
    assert_eq!(String::from_utf8_lossy(&ran.stdout), "3\n1000:1000\n");
}

/// A whiteout in the customisation layer hides a path of a lower layer, as Docker and umoci
/// apply it.
#[test]
#[cfg_attr(
    not(feature = "tool-tests"),
    ignore = "needs docker, umoci, busybox: cargo test --features tool-tests (.ci/run)"
)]
fn removed_paths_are_gone_in_docker_and_umoci() {
    let docker = require("docker");
    let mut store = TestStore::new();
    let busybox = store.add_busybox();
    let paths = store.sample();
    let hidden = format!("{}/share/same.txt", paths[0]);
    let kept = format!("{}/share/deep/er/still/file.txt", paths[0]);
    // The base holds the sample paths; the image on top holds busybox only, and hides a file
    // of the base (a removal of its own store paths is refused: it would hide its own layers).
    let base = store.dir.path().join("base.tar");
    store.build(&base, &["--name", "layered-gen-test/removed-base"]);
    let closure = store.dir.path().join("busybox-closure");
    fs::write(&closure, format!("{busybox}\n\n0\n")).unwrap();
    let image = store.dir.path().join("removed.tar");
    let reference = "layered-gen-test/removed:v1";
    let refused = layered_gen_fails(&[
        "--closure",
        store.write_closure().to_str().unwrap(),
        "--store-root",
        &store.store_root_arg(),
        "--remove",
        &hidden,
        "-o",
        image.to_str().unwrap(),
    ]);
    assert_eq!(
        refused,
        format!(
            "layered-gen: error: --remove: removing {hidden} would hide the image's own store \
             paths ({})\n",
            paths[0]
        )
    );
    layered_gen(&[
        "--closure",
        closure.to_str().unwrap(),
        "--store-root",
        &store.store_root_arg(),
        "--from-image",
        base.to_str().unwrap(),
        "--contents",
        &busybox,
        "--remove",
        &hidden,
        "--name",
        "layered-gen-test/removed",
        "--tag",
        "v1",
        "-o",
        image.to_str().unwrap(),
    ]);
    run(Command::new(&docker).arg("load").arg("-i").arg(&image));
    let script = format!("test -e {hidden} && echo present || echo gone; cat {kept}");
    let ran = run(Command::new(&docker)
        .args([
            "run",
            "--rm",
            "--network",
            "none",
            reference,
            "/bin/sh",
            "-c",
        ])
        .arg(&script));
    assert_eq!(String::from_utf8_lossy(&ran.stdout), "gone\ndeep\n");
    run(Command::new(&docker).args(["rmi", reference]));

    let layout = store.dir.path().join("layout");
    run(Command::new(require("skopeo"))
        .arg("copy")
        .arg(format!("docker-archive:{}", image.display()))
        .arg(format!("oci:{}:v1", layout.display())));
    let bundle = store.dir.path().join("bundle");
    run(Command::new(require("umoci"))
        .args(["unpack", "--rootless", "--image"])
        .arg(format!("{}:v1", layout.display()))
        .arg(&bundle));
    let rootfs = bundle.join("rootfs");
    assert!(!rootfs.join(hidden.trim_start_matches('/')).exists());
    assert!(rootfs.join(kept.trim_start_matches('/')).exists());
    assert!(
        fs::symlink_metadata(rootfs.join("bin/sh"))
            .unwrap()
            .file_type()
            .is_symlink()
    );
}

#[test]
fn bad_customisation_input_is_explained() {
    let mut store = TestStore::new();
    // Any tree with bin/sh does here: no busybox needed, so the test stays hermetic.
    let busybox = store.add("shell-1", &[], |dir| {
        fs::create_dir_all(dir.join("bin")).unwrap();
        fs::write(dir.join("bin/sh"), "#!/bin/false\n").unwrap();
    });
    let clash = store.add("clash-1", &[], |dir| {
        fs::create_dir_all(dir.join("bin")).unwrap();
        fs::write(dir.join("bin/sh"), "not busybox").unwrap();
    });
    let outside = format!("/nix/store/{}-outside-1", store_hash("outside"));
    let closure = store.write_closure();
    let dir = store.dir.path().to_path_buf();
    let file = |name: &str, content: Value| {
        let path = dir.join(name);
        fs::write(&path, content.to_string()).unwrap();
        path.to_str().unwrap().to_string()
    };
    let typo = file("typo.json", json!({"Entrypont": ["/bin/sh"]}));
    let wrong = file("wrong.json", json!({"Cmd": "/bin/sh"}));
    let env = file("env.json", json!({"Env": ["A=1", "JUSTANAME"]}));
    let perms = file(
        "perms.json",
        json!([{"path": "/var/lib/missing", "uid": 1}]),
    );
    let out = dir.join("out.tar");
    let base = [
        "--closure".to_string(),
        closure.to_str().unwrap().to_string(),
        "--store-root".to_string(),
        store.store_root_arg(),
        "-o".to_string(),
        out.to_str().unwrap().to_string(),
    ];
    let cases: Vec<(Vec<&str>, String)> = vec![
        (
            vec!["--config", &typo],
            format!(
                "--config: {typo}:1:12: unknown key \"Entrypont\"; the keys are: Cmd, Entrypoint, \
                 Env, ExposedPorts, Labels, User, Volumes, WorkingDir, StopSignal, Healthcheck, \
                 ArgsEscaped, OnBuild, Shell"
            ),
        ),
        (
            vec!["--config", &wrong],
            format!(
                "--config: {wrong}:1:17: $.Cmd: expected a list of strings, e.g. [\"/bin/sh\", \
                 \"-c\", \"echo hi\"], found a string"
            ),
        ),
        (
            vec!["--config", &env],
            format!("--config: {env}:1:27: $.Env: the Env entry \"JUSTANAME\" is not NAME=value"),
        ),
        (
            vec!["--env", "NOEQUALS"],
            "--env: the Env entry \"NOEQUALS\" is not NAME=value".to_string(),
        ),
        (
            vec!["--label", "=x"],
            "--label: \"=x\" is not KEY=VALUE".to_string(),
        ),
        (
            vec!["--contents", &busybox, "--contents", &clash],
            format!(
                "/bin/sh is provided twice: a link from the contents {busybox} and a link from the \
                 contents {clash}; drop one of them from the contents or make them agree"
            ),
        ),
        (
            vec!["--contents", &outside],
            format!(
                "--contents: the contents {outside} is not in the closure; the closure must \
                 include the contents (export their references graph)"
            ),
        ),
        (
            vec!["--contents", &busybox, "--perms", &perms],
            format!(
                "--perms: {perms}: $[0]: the rule for \"/var/lib/missing\" matches nothing in the \
                 customisation layer; is the path spelled right?"
            ),
        ),
        (
            vec!["--perms", &perms],
            "--perms: permission rules apply to the customisation layer, which is empty: add \
             contents, an extra directory or a removal"
                .to_string(),
        ),
        (
            vec!["--contents", &busybox, "--max-layers", "2", "--remove", "x"],
            "--remove: \"x\" is not an absolute, normalised path like /etc/motd".to_string(),
        ),
    ];
    for (extra, message) in cases {
        let mut args: Vec<&str> = base.iter().map(String::as_str).collect();
        args.extend(extra.iter().copied());
        assert_eq!(
            layered_gen_fails(&args),
            format!("layered-gen: error: {message}\n"),
            "{extra:?}"
        );
        assert!(!out.exists());
    }
}

#[test]
fn help_documents_every_option_with_an_example() {
    let help = String::from_utf8(layered_gen(&["--help"]).stdout).unwrap();
    let options_section = help.split("Options:").nth(1).unwrap();
    let mut options = 0;
    for block in options_section.split("\n\n") {
        let name = block.split_whitespace().next().unwrap_or_default();
        if !name.starts_with('-') || ["-h,", "-V,", "-q,"].contains(&name) {
            continue;
        }
        options += 1;
        assert!(
            block.contains("Example:"),
            "--help has no example for {name}:\n{block}"
        );
    }
    assert!(options >= 20, "{help}");
}

/// `--exclude`: a root that is there for its references (the config JSON nix/ writes) is left
/// out of the image, what it references stays; a typo, or a path that stays but references
/// the excluded one, is an error.
#[test]
fn excluded_roots_leave_their_references_in_the_image() {
    let mut store = TestStore::new();
    let sample = store.sample();
    let app = sample[3].clone();
    let config = store.add("app-config.json", &[&app], |file| {
        fs::write(file, format!("{{\"Cmd\": [\"{app}/bin/app\"]}}")).unwrap();
    });
    let closure = store.write_closure();
    let closure = closure.to_str().unwrap();
    let plan = layered_gen_json(&["plan", "--closure", closure, "--exclude", &config]);
    let planned: Vec<&str> = plan["layers"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|l| l["paths"].as_array().unwrap())
        .map(|p| p.as_str().unwrap())
        .collect();
    assert!(planned.contains(&app.as_str()), "{plan}");
    assert_eq!(planned.len(), sample.len(), "{plan}");
    assert!(!planned.contains(&config.as_str()), "{plan}");

    let image = store.dir.path().join("image.tar");
    store.build(&image, &["--exclude", &config, "--name", "t/excluded"]);
    let manifest = archive_manifest(&image);
    assert_eq!(
        manifest[0]["Layers"].as_array().unwrap().len(),
        sample.len()
    );

    let typo = format!("{config}x");
    let err = layered_gen_fails(&["plan", "--closure", closure, "--exclude", &typo]);
    assert!(
        err.contains("--exclude") && err.contains("is not in the closure"),
        "{err}"
    );
    let err = layered_gen_fails(&["plan", "--closure", closure, "--exclude", &app]);
    assert!(
        err.contains("--exclude") && err.contains("would dangle"),
        "{err}"
    );
}
