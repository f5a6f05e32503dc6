//! Hostile input shapes made small, shared by `tests/memory.rs` (a bound on peak RSS) and
//! `examples/bench.rs --hostile` (their times): a base config with 100,000 Env entries or
//! labels, a base listing 100,000 layers, and an image with one path of 20,000 components to
//! export. Each used to cost quadratic time or memory.
//!
//! The layouts are written piece by piece, so that the process making them stays small (a
//! child's peak RSS includes what its parent held when it started it).

use std::ffi::OsString;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

/// One shape: what it is, layered-gen's arguments, the peak RSS it must stay under, and
/// whether it is refused (rather than built).
pub struct HostileCase {
    pub what: &'static str,
    pub args: Vec<OsString>,
    pub bound_mib: u64,
    pub refused: bool,
}

/// The cases, their inputs written under `dir`; builds read `closure` from `store_root`.
pub fn hostile_cases(dir: &Path, closure: &Path, store_root: &Path) -> Vec<HostileCase> {
    let layer = one_file_layer("a", None);
    let many = |out: &mut dyn Write, open: &str, item: &dyn Fn(usize) -> String, close: &str| {
        out.write_all(open.as_bytes()).unwrap();
        for i in 0..100_000 {
            let separator = if i == 0 { "" } else { "," };
            write!(out, "{separator}{}", item(i)).unwrap();
        }
        out.write_all(close.as_bytes()).unwrap();
    };
    let empty = |out: &mut dyn Write| out.write_all(b"{}").unwrap();
    let build = |base: PathBuf, extra: &[&str]| {
        let mut args: Vec<OsString> = vec![
            "--closure".into(),
            closure.into(),
            "--store-root".into(),
            store_root.into(),
            "--from-image".into(),
            base.into(),
            "-q".into(),
            "-o".into(),
            dir.join("out.tar").into(),
        ];
        args.extend(extra.iter().map(OsString::from));
        args
    };
    let deep = crafted_layout(
        &dir.join("deep"),
        empty,
        &one_file_layer("f", Some(&("d/".repeat(20_000) + "f"))),
        1,
    );
    vec![
        HostileCase {
            what: "a base config with 100,000 Env entries",
            args: build(
                crafted_layout(
                    &dir.join("env"),
                    |out| many(out, r#"{"Env":["#, &|i| format!("\"V{i}=x\""), "]}"),
                    &layer,
                    1,
                ),
                &[],
            ),
            bound_mib: 128,
            refused: false,
        },
        HostileCase {
            what: "a base config with 100,000 labels",
            args: build(
                crafted_layout(
                    &dir.join("labels"),
                    |out| many(out, r#"{"Labels":{"#, &|i| format!("\"l{i}\":\"x\""), "}}"),
                    &layer,
                    1,
                ),
                &[],
            ),
            bound_mib: 128,
            refused: false,
        },
        HostileCase {
            what: "a base listing 100,000 layers",
            args: build(
                crafted_layout(&dir.join("layers"), empty, &layer, 100_000),
                &["--max-layers", "200000"],
            ),
            bound_mib: 512,
            refused: false,
        },
        HostileCase {
            what: "export of one path of 20,000 components",
            args: vec![
                "export".into(),
                deep.into(),
                "-o".into(),
                dir.join("rootfs.tar").into(),
            ],
            bound_mib: 64,
            refused: true,
        },
    ]
}

/// An OCI layout whose config's runtime part `runtime` writes and whose manifest lists `layer`
/// (a plain tar) `times` times: hostile shapes, written piece by piece so that the test
/// process stays small (its peak would count as layered-gen's, see the module doc).
pub fn crafted_layout(
    dir: &Path,
    runtime: impl Fn(&mut dyn Write),
    layer: &[u8],
    times: usize,
) -> PathBuf {
    use sha2::{Digest, Sha256};
    let blobs = dir.join("blobs/sha256");
    fs::create_dir_all(&blobs).unwrap();
    // Writes a blob with `fill`, names it by its digest; returns the digest and size.
    let put = |fill: &dyn Fn(&mut dyn Write)| {
        let scratch = blobs.join("scratch");
        {
            let mut out = std::io::BufWriter::new(fs::File::create(&scratch).unwrap());
            fill(&mut out);
            out.flush().unwrap();
        }
        let mut hasher = Sha256::new();
        std::io::copy(&mut fs::File::open(&scratch).unwrap(), &mut hasher).unwrap();
        let hex = format!("{:x}", hasher.finalize());
        let size = fs::metadata(&scratch).unwrap().len();
        fs::rename(&scratch, blobs.join(&hex)).unwrap();
        (format!("sha256:{hex}"), size)
    };
    let (digest, size) = put(&|out| out.write_all(layer).unwrap());
    let repeated = |out: &mut dyn Write, item: &str| {
        for i in 0..times {
            let separator = if i == 0 { "" } else { "," };
            write!(out, "{separator}{item}").unwrap();
        }
    };
    let (config_digest, config_size) = put(&|out| {
        out.write_all(br#"{"architecture":"amd64","os":"linux","config":"#)
            .unwrap();
        runtime(out);
        out.write_all(br#","rootfs":{"type":"layers","diff_ids":["#)
            .unwrap();
        repeated(out, &format!("\"{digest}\""));
        out.write_all(b"]}}").unwrap();
    });
    let (manifest_digest, manifest_size) = put(&|out| {
        write!(
            out,
            r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"{config_digest}","size":{config_size}}},"layers":["#
        )
        .unwrap();
        repeated(
            out,
            &format!(
                r#"{{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":"{digest}","size":{size}}}"#
            ),
        );
        out.write_all(b"]}").unwrap();
    });
    fs::write(
        dir.join("index.json"),
        format!(
            r#"{{"schemaVersion":2,"manifests":[{{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"{manifest_digest}","size":{manifest_size},"annotations":{{"org.opencontainers.image.ref.name":"x"}}}}]}}"#
        ),
    )
    .unwrap();
    fs::write(dir.join("oci-layout"), r#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
    dir.to_path_buf()
}

/// A plain tar with one file `name`, given a long name by a PAX `path` record when `long` is
/// given.
fn one_file_layer(name: &str, long: Option<&str>) -> Vec<u8> {
    let mut builder = tar::Builder::new(Vec::new());
    let mut header = tar::Header::new_ustar();
    header.set_size(1);
    header.set_mode(0o644);
    header.set_mtime(1);
    header.set_entry_type(tar::EntryType::Regular);
    if let Some(long) = long {
        builder
            .append_pax_extensions([("path", long.as_bytes())])
            .unwrap();
    }
    builder.append_data(&mut header, name, &b"x"[..]).unwrap();
    builder.into_inner().unwrap()
}
