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
    closure: Box<RawValue>,
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
    let mut script = format!(
        "#!{}\n# Streams a container image to stdout: run it and pipe it, e.g. into \
         `docker load`.\n# Extra arguments go to layered-gen (e.g. --quiet).\nexec {} \
         --closure /dev/fd/3",
        attrs.runtime_shell,
        quote(&format!("{}/bin/layered-gen", attrs.layered_gen))
    );
    for arg in &attrs.stream_args {
        script.push(' ');
        script.push_str(&quote(arg));
    }
    for tag in std::iter::once(&tag).chain(&attrs.extra_tags) {
        script.push_str(&format!(" --tag {}", quote(tag)));
    }
    script.push_str(&format!(" -o - \"$@\" 3<<'{END}'\n{closure}\n{END}\n"));
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

    #[test]
    fn stream_script_quotes_and_embeds() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("0123456789abcdfghijklmnpqrsvwxyz-stream-x");
        let attrs = dir.path().join(".attrs.json");
        std::fs::write(
            &attrs,
            json!({
                "outputs": {"out": out},
                "runtimeShell": "/bin/sh",
                "layeredGen": "/opt/lg",
                "streamArgs": ["--name", "it's"],
                "tag": null,
                "extraTags": ["latest"],
                "closure": [{"path": "/nix/store/x", "references": []}],
            })
            .to_string(),
        )
        .unwrap();
        write_stream_script(&attrs).unwrap();
        let script = std::fs::read_to_string(&out).unwrap();
        assert!(script.starts_with("#!/bin/sh\n"));
        assert!(script.contains(
            "exec '/opt/lg/bin/layered-gen' --closure /dev/fd/3 '--name' 'it'\\''s' --tag \
             '0123456789abcdfghijklmnpqrsvwxyz' --tag 'latest' -o - \"$@\" \
             3<<'LAYERED_GEN_CLOSURE_END'\n\
             [{\"path\":\"/nix/store/x\",\"references\":[]}]\nLAYERED_GEN_CLOSURE_END\n"
        ));
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
