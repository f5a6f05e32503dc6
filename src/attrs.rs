//! What Nix hands a builder with `__structuredAttrs = true`: the derivation's attributes as
//! `.attrs.json`, whose `outputs` give the output paths (there is no `$out` then). The functions
//! in `nix/` run layered-gen as the builder directly, so these replace the shell that would
//! otherwise read them: the output path, and the executable that `streamLayeredImage` builds.

use std::path::{Path, PathBuf};

use serde::Deserialize;
use serde_json::value::RawValue;

use crate::error::{Error, Result, shown_path};
use crate::json_file;

/// The attributes layered-gen reads; a derivation has many more, which are ignored.
#[derive(Deserialize)]
struct Outputs {
    outputs: OutputPaths,
}

#[derive(Deserialize)]
struct OutputPaths {
    out: PathBuf,
}

/// The attributes of `streamLayeredImage`'s script derivation (see `nix/default.nix`).
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct StreamAttrs {
    outputs: OutputPaths,
    runtime_shell: String,
    layered_gen: String,
    stream_args: Vec<String>,
    tag: Option<String>,
    /// Tags after the main one (nix/'s `extraTags`).
    #[serde(default)]
    extra_tags: Vec<String>,
    /// For the `copyTo*` scripts: where they copy the image (`registry`, `docker-daemon`,
    /// `podman`), and the image's name.
    #[serde(default)]
    copy_to: Option<CopyTo>,
    #[serde(default)]
    image_name: Option<String>,
    closure: Box<RawValue>,
}

/// Where a `copyTo*` script sends the image.
#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
enum CopyTo {
    Registry,
    DockerDaemon,
    Podman,
}

/// The path of the output `out`.
pub fn output_path(attrs: &Path) -> Result<PathBuf> {
    // An .attrs.json holds the derivation's closure graph: a closure's limit applies.
    let parsed: Outputs = json_file::read_typed_limited(attrs, json_file::DEFAULT_MAX_CLOSURE)
        .map_err(|e| {
            e.context(format!(
                "{} (the .attrs.json of a derivation with __structuredAttrs = true)",
                shown_path(attrs)
            ))
        })?;
    Ok(parsed.outputs.out)
}

/// The tag an image gets from its output path: the store hash, as dockerTools does.
pub fn tag_from_output(output: &Path) -> Result<String> {
    let name = output
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    match name.split_once('-') {
        Some((hash, _)) if hash.len() == 32 => Ok(hash.to_string()),
        _ => Err(Error::value(format!(
            "the output {} is not a store path (<hash>-<name>), so it gives no tag",
            shown_path(output)
        ))),
    }
}

/// streamLayeredImage's script: layered-gen on the embedded closure, the image to stdout.
/// As nixpkgs' script, `--repo_tag NAME[:TAG]` (or `-t`) names the image instead of the
/// name and tags it was built with; other arguments go to layered-gen.
fn stream_script(
    shell: &str,
    layered_gen: &str,
    stream_args: &[String],
    tag_args: &str,
    closure_input: &str,
) -> String {
    // The name leads the arguments (nix/'s commonArgs); it is what --repo_tag replaces.
    let (name_args, rest) = match stream_args {
        [flag, name, rest @ ..] if flag == "--name" => (format!(" --name {}", quote(name)), rest),
        _ => (String::new(), stream_args),
    };
    let fixed: String = rest.iter().map(|a| format!(" {}", quote(a))).collect();
    format!(
        "#!{shell}\n\
         # Streams a container image to stdout: run it and pipe it, e.g. into `docker load`.\n\
         # --repo_tag NAME[:TAG] (or -t) names the image; other arguments go to layered-gen.\n\
         repo=\ntake=\n\
         for arg do\n\
         \x20 shift\n\
         \x20 if [ -n \"$take\" ]; then repo=$arg; take=; continue; fi\n\
         \x20 case $arg in\n\
         \x20   -t|--repo_tag) take=1; continue ;;\n\
         \x20   --repo_tag=*) repo=${{arg#--repo_tag=}}; continue ;;\n\
         \x20 esac\n\
         \x20 set -- \"$@\" \"$arg\"\n\
         done\n\
         if [ -z \"$repo\" ]; then\n\
         \x20 set --{name_args}{tag_args} \"$@\"\n\
         else\n\
         \x20 case ${{repo##*/}} in\n\
         \x20   *:*) set -- --name \"${{repo%:*}}\" --tag \"${{repo##*:}}\" \"$@\" ;;\n\
         \x20   *) set -- --name \"$repo\" \"$@\" ;;\n\
         \x20 esac\n\
         fi\n\
         exec {layered_gen} --closure /dev/fd/3{fixed} -o - \"$@\" {closure_input}"
    )
}

/// A `copyTo*` script, as `$out/bin/copy-to-KIND` (what `nix run` runs): it runs layered-gen
/// on the embedded closure straight to the destination, no archive in between. Registry and
/// Docker daemon scripts take a destination as their first argument (its tag then replaces the
/// image's tags), else use `docker://NAME` or `docker-daemon:NAME` under the image's tags;
/// the podman one pipes into `podman load`. Other arguments go to layered-gen.
#[allow(clippy::too_many_arguments)]
fn copy_script(
    kind: CopyTo,
    name: &str,
    shell: &str,
    layered_gen: &str,
    fixed_args: &str,
    tag_args: &str,
    closure_input: &str,
    out: &Path,
) -> Result<(String, PathBuf)> {
    // The name lands in the script (quoted, and in a comment): it must be a plain image name.
    crate::output::transport::reference::check_name(name)?;
    let (program, what, default) = match kind {
        CopyTo::Registry => (
            "copy-to-registry",
            "Pushes the image to a registry",
            format!("docker://{name}"),
        ),
        CopyTo::DockerDaemon => (
            "copy-to-docker-daemon",
            "Loads the image into the Docker daemon ($DOCKER_HOST)",
            format!("docker-daemon:{name}"),
        ),
        CopyTo::Podman => (
            "copy-to-podman",
            "Loads the image into podman",
            String::new(),
        ),
    };
    let run = format!(
        "run() {{\n  {layered_gen} --closure /dev/fd/3{fixed_args} \"$@\" {closure_input}}}\n"
    );
    let body = match kind {
        CopyTo::Podman => format!(
            "{run}run --name {}{tag_args} -o - \"$@\" | podman load\n",
            quote(name)
        ),
        CopyTo::Registry | CopyTo::DockerDaemon => format!(
            "{run}case \"${{1:-}}\" in\n  ''|-*) run{tag_args} -o {} \"$@\" ;;\n  \
             *) dest=$1; shift; run -o \"$dest\" \"$@\" ;;\nesac\n",
            quote(&default)
        ),
    };
    let usage = match kind {
        CopyTo::Podman => format!("# Usage: {program} [layered-gen flags]"),
        _ => format!("# Usage: {program} [DESTINATION] [layered-gen flags]; default {default}"),
    };
    let bin = out.join("bin");
    std::fs::create_dir_all(&bin).map_err(|e| Error::io("creating", &bin, e))?;
    Ok((
        format!("#!{shell}\n# {what}, read from the store as it runs.\n{usage}\n{body}"),
        bin.join(program),
    ))
}

/// Quotes a word for a POSIX shell.
fn quote(word: &str) -> String {
    format!("'{}'", word.replace('\'', r"'\''"))
}

/// Writes `streamLayeredImage`'s executable: a `runtimeShell` script that runs layered-gen
/// with `streamArgs` and the closure, embedded so that the script references (and keeps alive)
/// every store path the image needs, streaming the image to stdout.
///
/// Attributes read: `outputs.out`, `runtimeShell`, `layeredGen`, `streamArgs`, `tag` (null:
/// the script's own store hash), `extraTags` and the closure graph under `closure`.
pub fn write_stream_script(attrs_file: &Path) -> Result<PathBuf> {
    let attrs: StreamAttrs =
        json_file::read_typed_limited(attrs_file, json_file::DEFAULT_MAX_CLOSURE)?;
    let out = attrs.outputs.out;
    let tag = match attrs.tag {
        Some(tag) => tag,
        None => tag_from_output(&out)?,
    };
    let closure = attrs.closure.get();
    const END: &str = "LAYERED_GEN_CLOSURE_END";
    if closure.lines().any(|line| line == END) {
        return Err(Error::input(
            shown_path(attrs_file),
            "the closure holds a line equal to the script's end marker",
        ));
    }
    let layered_gen = quote(&format!("{}/bin/layered-gen", attrs.layered_gen));
    let mut fixed_args = String::new();
    for arg in &attrs.stream_args {
        fixed_args.push(' ');
        fixed_args.push_str(&quote(arg));
    }
    let mut tag_args = String::new();
    for tag in std::iter::once(&tag).chain(&attrs.extra_tags) {
        tag_args.push_str(&format!(" --tag {}", quote(tag)));
    }
    let closure_input = format!("3<<'{END}'\n{closure}\n{END}\n");
    let (script, out) = match attrs.copy_to {
        None => (
            stream_script(
                &attrs.runtime_shell,
                &layered_gen,
                &attrs.stream_args,
                &tag_args,
                &closure_input,
            ),
            out,
        ),
        Some(kind) => {
            let name = attrs.image_name.as_deref().ok_or_else(|| {
                Error::input(shown_path(attrs_file), "a copyTo script needs imageName")
            })?;
            copy_script(
                kind,
                name,
                &attrs.runtime_shell,
                &layered_gen,
                &fixed_args,
                &tag_args,
                &closure_input,
                &out,
            )?
        }
    };
    std::fs::write(&out, script).map_err(|e| Error::io("writing", &out, e))?;
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&out, std::fs::Permissions::from_mode(0o555))
        .map_err(|e| Error::io("making executable", &out, e))?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// Writes a stream script (`kind` None) or a copyTo script whose layered-gen prints its
    /// arguments and closure, and runs it with `args`; returns what it printed.
    fn run_script(kind: Option<&str>, args: &[&str]) -> String {
        let dir = tempfile::tempdir().unwrap();
        let lg = dir.path().join("lg");
        std::fs::create_dir_all(lg.join("bin")).unwrap();
        let fake = lg.join("bin/layered-gen");
        std::fs::write(
            &fake,
            "#!/bin/sh\nfor a in \"$@\"; do printf '[%s]' \"$a\"; done\necho; cat <&3\n",
        )
        .unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&fake, std::fs::Permissions::from_mode(0o755)).unwrap();
        // podman load, as the podman script calls it, prints what it was given.
        std::fs::write(
            dir.path().join("podman"),
            "#!/bin/sh\necho \"podman $*\"; cat\n",
        )
        .unwrap();
        std::fs::set_permissions(
            dir.path().join("podman"),
            std::fs::Permissions::from_mode(0o755),
        )
        .unwrap();
        let out = dir.path().join("0123456789abcdfghijklmnpqrsvwxyz-copy");
        let attrs = dir.path().join(".attrs.json");
        std::fs::write(
            &attrs,
            json!({
                "outputs": {"out": out},
                "runtimeShell": "/bin/sh",
                "layeredGen": lg,
                "streamArgs": if kind.is_some() {
                    json!(["--max-layers", "9"])
                } else {
                    json!(["--name", "it's app", "--max-layers", "9"])
                },
                "tag": "t1",
                "extraTags": ["latest"],
                "copyTo": kind,
                "imageName": "my/app",
                "closure": [{"path": "/nix/store/x", "references": []}],
            })
            .to_string(),
        )
        .unwrap();
        let script = write_stream_script(&attrs).unwrap();
        // Another test's child, forked while the script was open for writing, holds it open
        // until it execs: running it fails with "text file busy" for that moment.
        let output = (0..100)
            .find_map(|_| {
                let run = std::process::Command::new(&script)
                    .args(args)
                    .env("PATH", format!("{}:/usr/bin:/bin", dir.path().display()))
                    .output();
                match run {
                    Err(e) if e.kind() == std::io::ErrorKind::ExecutableFileBusy => {
                        std::thread::sleep(std::time::Duration::from_millis(20));
                        None
                    }
                    other => Some(other.unwrap()),
                }
            })
            .expect("the script stayed busy for two seconds");
        assert!(output.status.success(), "{output:?}");
        String::from_utf8(output.stdout).unwrap()
    }

    #[test]
    fn copy_scripts_default_to_the_image_and_take_a_destination() {
        let closure = "[{\"path\":\"/nix/store/x\",\"references\":[]}]\n";
        assert_eq!(
            run_script(Some("registry"), &[]),
            format!(
                "[--closure][/dev/fd/3][--max-layers][9][--tag][t1][--tag][latest][-o]\
                 [docker://my/app]\n{closure}"
            )
        );
        assert_eq!(
            run_script(Some("registry"), &["docker://reg:5000/x:v2", "--quiet"]),
            format!(
                "[--closure][/dev/fd/3][--max-layers][9][-o][docker://reg:5000/x:v2][--quiet]\n\
                 {closure}"
            )
        );
        assert_eq!(
            run_script(Some("docker-daemon"), &["--quiet"]),
            format!(
                "[--closure][/dev/fd/3][--max-layers][9][--tag][t1][--tag][latest][-o]\
                 [docker-daemon:my/app][--quiet]\n{closure}"
            )
        );
        assert_eq!(
            run_script(Some("podman"), &[]),
            format!(
                "podman load\n[--closure][/dev/fd/3][--max-layers][9][--name][my/app][--tag][t1]\
                 [--tag][latest][-o][-]\n{closure}"
            )
        );
    }

    #[test]
    fn stream_scripts_quote_embed_and_take_a_repo_tag() {
        let closure = "[{\"path\":\"/nix/store/x\",\"references\":[]}]\n";
        let fixed = "[--closure][/dev/fd/3][--max-layers][9][-o][-]";
        assert_eq!(
            run_script(None, &[]),
            format!("{fixed}[--name][it's app][--tag][t1][--tag][latest]\n{closure}")
        );
        assert_eq!(
            run_script(None, &["-t", "reg:5000/other/x:v2", "--quiet"]),
            format!("{fixed}[--name][reg:5000/other/x][--tag][v2][--quiet]\n{closure}")
        );
        assert_eq!(
            run_script(None, &["--quiet", "--repo_tag=reg:5000/other"]),
            format!("{fixed}[--name][reg:5000/other][--quiet]\n{closure}")
        );
    }

    #[test]
    fn tags_from_store_paths() {
        assert_eq!(
            tag_from_output(Path::new(
                "/nix/store/0123456789abcdfghijklmnpqrsvwxyz-img.tar"
            ))
            .unwrap(),
            "0123456789abcdfghijklmnpqrsvwxyz"
        );
        assert!(tag_from_output(Path::new("/tmp/out.tar")).is_err());
    }
}
