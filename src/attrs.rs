//! What Nix hands a builder with `__structuredAttrs = true`: the derivation's attributes as
//! `.attrs.json`, whose `outputs` give the output paths (there is no `$out` then). The functions
//! in `nix/` run layered-gen as the builder directly, so these replace the shell that would
//! otherwise read them: the output path, and the executable that `streamLayeredImage` builds.

use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::error::{Error, Result};

fn read(attrs: &Path) -> Result<Value> {
    let bytes = std::fs::read(attrs).map_err(|e| Error::io("reading", attrs, e))?;
    serde_json::from_slice(&bytes)
        .map_err(|e| Error::new(format!("{}: not valid JSON: {e}", attrs.display())))
}

fn string<'a>(attrs_file: &Path, value: &'a Value, key: &str) -> Result<&'a str> {
    value[key].as_str().ok_or_else(|| {
        Error::new(format!(
            "{}: expected a string at {key:?}",
            attrs_file.display()
        ))
    })
}

/// The path of the output `out`.
pub fn output_path(attrs: &Path) -> Result<PathBuf> {
    let value = read(attrs)?;
    value["outputs"]["out"]
        .as_str()
        .map(PathBuf::from)
        .ok_or_else(|| {
            Error::new(format!(
                "{}: no outputs.out; is this the .attrs.json of a derivation with \
                 __structuredAttrs = true?",
                attrs.display()
            ))
        })
}

/// The tag an image gets from its output path: the store hash, as dockerTools does.
pub fn tag_from_output(output: &Path) -> Result<String> {
    let name = output
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    match name.split_once('-') {
        Some((hash, _)) if hash.len() == 32 => Ok(hash.to_string()),
        _ => Err(Error::new(format!(
            "--tag-from-output: {} is not a store path (<hash>-<name>)",
            output.display()
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
/// the script's own store hash) and the closure graph under `closure`.
pub fn write_stream_script(attrs_file: &Path) -> Result<PathBuf> {
    let attrs = read(attrs_file)?;
    let out = output_path(attrs_file)?;
    let shell = string(attrs_file, &attrs, "runtimeShell")?;
    let layered_gen = string(attrs_file, &attrs, "layeredGen")?;
    let args: Vec<&str> = attrs["streamArgs"]
        .as_array()
        .ok_or_else(|| {
            Error::new(format!(
                "{}: expected a list of strings at \"streamArgs\"",
                attrs_file.display()
            ))
        })?
        .iter()
        .filter_map(Value::as_str)
        .collect();
    let tag = match attrs["tag"].as_str() {
        Some(tag) => tag.to_string(),
        None => tag_from_output(&out)?,
    };
    let closure = serde_json::to_string(&attrs["closure"])
        .map_err(|e| Error::new(format!("writing the closure: {e}")))?;
    const END: &str = "LAYERED_GEN_CLOSURE_END";
    if closure.contains(END) {
        return Err(Error::new("the closure contains the script's end marker"));
    }
    let mut script = format!(
        "#!{shell}\n# Streams a container image to stdout: run it and pipe it, e.g. into \
         `docker load`.\n# Extra arguments go to layered-gen (e.g. --quiet).\nexec {} \
         --closure /dev/fd/3",
        quote(&format!("{layered_gen}/bin/layered-gen"))
    );
    for arg in args {
        script.push(' ');
        script.push_str(&quote(arg));
    }
    script.push_str(&format!(
        " --tag {} -o - \"$@\" 3<<'{END}'\n{closure}\n{END}\n",
        quote(&tag)
    ));
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
             '0123456789abcdfghijklmnpqrsvwxyz' -o - \"$@\" 3<<'LAYERED_GEN_CLOSURE_END'\n\
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
