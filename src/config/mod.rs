//! Stage 4: the image configuration — platform, creation time, history, the runtime config
//! (`Cmd`, `Env`, ...) and the root filesystem's layer digests, as the OCI image spec and Docker
//! read them.

pub mod runtime;

use serde_json::{Map, Value};

use crate::error::{Error, Result, Setting, quoted};
use crate::image_spec::{HistoryEntry, ImageConfigBlob, RootFs, to_bytes};

/// The default creation time: one second into 1970, like the Nix store's mtime, so images are
/// reproducible.
pub const DEFAULT_CREATED: &str = "1970-01-01T00:00:01Z";

/// `architecture`, `variant` and `os` of an image.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Platform {
    pub architecture: String,
    pub variant: Option<String>,
    pub os: String,
}

/// Accepted platform names: Go's GOARCH (as OCI uses) and Nix system strings.
const PLATFORMS: &[(&str, &str, Option<&str>)] = &[
    ("amd64", "amd64", None),
    ("x86_64-linux", "amd64", None),
    ("arm64", "arm64", None),
    ("aarch64-linux", "arm64", None),
    ("386", "386", None),
    ("i686-linux", "386", None),
    ("arm", "arm", Some("v7")),
    ("arm/v7", "arm", Some("v7")),
    ("armv7l-linux", "arm", Some("v7")),
    ("arm/v6", "arm", Some("v6")),
    ("armv6l-linux", "arm", Some("v6")),
    ("ppc64le", "ppc64le", None),
    ("powerpc64le-linux", "ppc64le", None),
    ("ppc64", "ppc64", None),
    ("powerpc64-linux", "ppc64", None),
    ("s390x", "s390x", None),
    ("s390x-linux", "s390x", None),
    ("riscv64", "riscv64", None),
    ("riscv64-linux", "riscv64", None),
    ("mips64le", "mips64le", None),
    ("mips64el-linux", "mips64le", None),
    ("mips64", "mips64", None),
    ("mips64-linux", "mips64", None),
];

impl Platform {
    /// Parses a GOARCH name (`amd64`, `arm/v7`) or a Nix system (`x86_64-linux`).
    pub fn parse(name: &str) -> Result<Self> {
        PLATFORMS
            .iter()
            .find(|(n, _, _)| *n == name)
            .map(|&(_, architecture, variant)| Platform {
                architecture: architecture.to_string(),
                variant: variant.map(str::to_string),
                os: "linux".to_string(),
            })
            .ok_or_else(|| {
                Error::value(format!(
                    "unknown architecture {}; accepted: {}",
                    quoted(name),
                    PLATFORMS
                        .iter()
                        .map(|(n, _, _)| *n)
                        .collect::<Vec<_>>()
                        .join(", ")
                ))
                .about(Setting::Architecture)
            })
    }

    /// The platform this program runs on.
    pub fn host() -> Self {
        Platform::parse(host_goarch(
            std::env::consts::ARCH,
            cfg!(target_endian = "little"),
        ))
        .unwrap_or(Platform {
            architecture: "amd64".to_string(),
            variant: None,
            os: "linux".to_string(),
        })
    }

    /// The image's platform: as asked, else the base image's (given with its description),
    /// else this machine's. Asking for another than the base's is an error.
    pub fn reconcile(asked: Option<&Platform>, base: Option<(Platform, String)>) -> Result<Self> {
        let Some((theirs, described)) = base else {
            return Ok(asked.cloned().unwrap_or_else(Platform::host));
        };
        if theirs.architecture.is_empty() {
            return Err(Error::input(
                crate::error::shown(&described),
                "$.architecture: the base image's config names no architecture",
            )
            .about(Setting::FromImage));
        }
        match asked {
            Some(asked) if asked.architecture != theirs.architecture || asked.os != theirs.os => {
                Err(Error::value(format!(
                    "the platform asked for is {}, but the base image {} is {}",
                    asked.describe(),
                    crate::error::shown(&described),
                    crate::error::shown(&theirs.describe())
                ))
                .about(Setting::Architecture))
            }
            _ => Ok(theirs),
        }
    }

    /// `os/architecture[/variant]`, as platforms are written in messages.
    pub fn describe(&self) -> String {
        match &self.variant {
            Some(variant) => format!("{}/{}/{variant}", self.os, self.architecture),
            None => format!("{}/{}", self.os, self.architecture),
        }
    }
}

/// The GOARCH of a Rust target architecture; 64-bit POWER and MIPS come in both byte orders,
/// which GOARCH tells apart (`ppc64` is big-endian, `ppc64le` little-endian).
fn host_goarch(arch: &str, little_endian: bool) -> &'static str {
    match (arch, little_endian) {
        ("x86_64", _) => "amd64",
        ("aarch64", _) => "arm64",
        ("x86", _) => "386",
        ("arm", _) => "arm",
        ("powerpc64", true) => "ppc64le",
        ("powerpc64", false) => "ppc64",
        ("s390x", _) => "s390x",
        ("riscv64", _) => "riscv64",
        ("mips64", true) => "mips64le",
        ("mips64", false) => "mips64",
        _ => "amd64",
    }
}

/// Checks an RFC 3339 time (`2024-05-01T12:00:00Z`, `...+02:00`, fractions allowed) or turns
/// `now` into the current time.
pub fn parse_created(text: &str) -> Result<String> {
    if text == "now" {
        let seconds = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        return Ok(format_rfc3339(seconds));
    }
    if is_rfc3339(text.as_bytes()) {
        return Ok(text.to_string());
    }
    // A plain date, as dockerTools takes it (`date -d 2024-05-01`): its midnight, UTC.
    let midnight = format!("{text}T00:00:00Z");
    if text.len() == 10 && is_rfc3339(midnight.as_bytes()) {
        return Ok(midnight);
    }
    Err(Error::value(format!(
        "{} is not an RFC 3339 time like 2024-05-01T12:00:00Z, a date like 2024-05-01, nor \
         \"now\"",
        quoted(text)
    ))
    .about(Setting::Created))
}

fn is_rfc3339(t: &[u8]) -> bool {
    let digits = |range: std::ops::Range<usize>| {
        t.get(range.clone())
            .is_some_and(|s| s.iter().all(u8::is_ascii_digit))
    };
    let number = |range: std::ops::Range<usize>| -> u32 {
        t[range].iter().fold(0, |n, d| n * 10 + u32::from(d - b'0'))
    };
    if t.len() < 20
        || !digits(0..4)
        || t[4] != b'-'
        || !digits(5..7)
        || t[7] != b'-'
        || !digits(8..10)
        || t[10] != b'T'
        || !digits(11..13)
        || t[13] != b':'
        || !digits(14..16)
        || t[16] != b':'
        || !digits(17..19)
    {
        return false;
    }
    let (year, month, day) = (number(0..4), number(5..7), number(8..10));
    let (hour, minute, second) = (number(11..13), number(14..16), number(17..19));
    let leap = year % 4 == 0 && (year % 100 != 0 || year % 400 == 0);
    let days_in_month = match month {
        2 if leap => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    };
    if !(1..=12).contains(&month) || !(1..=days_in_month).contains(&day) || hour > 23 || minute > 59
    {
        return false;
    }
    if second > 60 {
        return false;
    }
    let mut rest = &t[19..];
    if rest.first() == Some(&b'.') {
        let fraction = rest[1..].iter().take_while(|b| b.is_ascii_digit()).count();
        if fraction == 0 {
            return false;
        }
        rest = &rest[1 + fraction..];
    }
    match rest {
        b"Z" => true,
        [sign, h1, h2, b':', m1, m2] if (*sign == b'+' || *sign == b'-') => {
            let two = |a: u8, b: u8| {
                (a.is_ascii_digit() && b.is_ascii_digit())
                    .then(|| u32::from(a - b'0') * 10 + u32::from(b - b'0'))
            };
            // Offsets are whole hours and minutes of a day.
            matches!((two(*h1, *h2), two(*m1, *m2)), (Some(h), Some(m)) if h <= 23 && m <= 59)
        }
        _ => false,
    }
}

/// A time for file mtimes: seconds since the epoch, an RFC 3339 time (as dockerTools' `mtime`
/// takes it; a fraction is dropped) or `now`. Before the epoch is refused: tar cannot say it.
pub fn parse_mtime(text: &str) -> Result<u64> {
    if let Ok(seconds) = text.parse::<u64>() {
        return Ok(seconds);
    }
    let seconds = if text == "now" {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs() as i64)
            .unwrap_or(0)
    } else if is_rfc3339(text.as_bytes()) {
        epoch_seconds(text.as_bytes())
    } else {
        return Err(Error::value(format!(
            "{} is not a time: give seconds since 1970, an RFC 3339 time like \
             2024-05-01T12:00:00Z, or \"now\"",
            quoted(text)
        )));
    };
    u64::try_from(seconds).map_err(|_| {
        Error::value(format!(
            "{} is before 1970, which a tar header cannot hold",
            quoted(text)
        ))
    })
}

/// Seconds since the epoch of a time `is_rfc3339` accepted.
fn epoch_seconds(t: &[u8]) -> i64 {
    let number = |range: std::ops::Range<usize>| -> i64 {
        t[range].iter().fold(0, |n, d| n * 10 + i64::from(d - b'0'))
    };
    let (year, month, day) = (number(0..4), number(5..7), number(8..10));
    // Days since 1970-01-01 from a civil date (Howard Hinnant's algorithm).
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    let mut seconds = days * 86_400 + number(11..13) * 3600 + number(14..16) * 60 + number(17..19);
    let zone = t
        .iter()
        .rposition(|&b| b == b'+' || b == b'-')
        .filter(|&i| i > 18);
    if let Some(at) = zone {
        let offset = number(at + 1..at + 3) * 3600 + number(at + 4..at + 6) * 60;
        seconds -= if t[at] == b'+' { offset } else { -offset };
    }
    seconds
}

/// Seconds since the epoch as `YYYY-MM-DDTHH:MM:SSZ`.
pub fn format_rfc3339(seconds: u64) -> String {
    let days = (seconds / 86_400) as i64;
    let rem = seconds % 86_400;
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// What the image config says besides the layers.
#[derive(Clone, Debug)]
pub struct ImageConfig {
    pub platform: Platform,
    pub created: String,
    /// A base image's history, kept before ours.
    pub base_history: Vec<Value>,
    /// How our layers' history entries are written.
    pub history_style: HistoryStyle,
    /// The `config` object: Cmd, Env, Labels, ...
    pub runtime: Map<String, Value>,
}

/// How the history entries of the layers we build are written.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum HistoryStyle {
    /// `created`, `created_by: "layered-gen"` and our comment.
    #[default]
    Ours,
    /// As dockerTools writes them: `created` and the comment alone.
    Nixpkgs,
}

/// What the image config says besides the layers and the platform.
#[derive(Clone, Debug, Default)]
pub struct RuntimeOptions {
    pub created: String,
    /// What the image keeps of a base image's runtime config.
    pub base_config: BaseConfig,
    /// A user config (see [`runtime::read`]).
    pub user: Map<String, Value>,
    /// `NAME=VALUE` entries, merged last.
    pub env: Vec<String>,
    /// `KEY=VALUE` labels, merged last.
    pub labels: Vec<String>,
}

/// What an image keeps of its base image's runtime config.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum BaseConfig {
    /// Everything (Cmd, Entrypoint, User, Env, Labels, ...), as Docker's `FROM` does: an image
    /// built on a base runs like it unless told otherwise.
    #[default]
    All,
    /// Only `Env`, as nixpkgs' dockerTools keeps of a `fromImage`.
    Env,
}

/// The runtime config of the image: the user's over the base's (all of it, or its Env only),
/// then the single environment entries and labels last.
pub fn runtime_config(
    base: &Map<String, Value>,
    options: &RuntimeOptions,
) -> Result<Map<String, Value>> {
    runtime::check_base(base)
        .map_err(|e| Error::input("the base image's config", e).about(Setting::FromImage))?;
    let env_only: Map<String, Value>;
    let base = match options.base_config {
        BaseConfig::All => base,
        BaseConfig::Env => {
            env_only = base
                .iter()
                .filter(|(key, _)| *key == "Env")
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect();
            &env_only
        }
    };
    let mut last = Map::new();
    if !options.env.is_empty() {
        for entry in &options.env {
            runtime::check_env_entry(entry).map_err(|e| Error::value(e).about(Setting::Env))?;
        }
        last.insert("Env".to_string(), Value::from(options.env.clone()));
    }
    if !options.labels.is_empty() {
        let mut labels = Map::new();
        for label in &options.labels {
            let (key, value) =
                runtime::split_assignment(label).map_err(|e| e.about(Setting::Label))?;
            labels.insert(key, Value::from(value));
        }
        last.insert("Labels".to_string(), Value::Object(labels));
    }
    Ok(runtime::merge(&runtime::merge(base, &options.user), &last))
}

impl ImageConfig {
    /// The config blob: `diff_ids` are the layers' uncompressed digests (`sha256:...`), and
    /// `history` holds one comment per layer.
    pub fn to_json(&self, diff_ids: &[crate::digest::Digest], history: &[String]) -> Vec<u8> {
        let ours = history.iter().map(|comment| {
            serde_json::to_value(HistoryEntry {
                created: self.created.clone(),
                created_by: match self.history_style {
                    HistoryStyle::Ours => Some("layered-gen".to_string()),
                    HistoryStyle::Nixpkgs => None,
                },
                comment: comment.clone(),
            })
            .unwrap_or_default()
        });
        to_bytes(&ImageConfigBlob {
            architecture: self.platform.architecture.clone(),
            config: Some(self.runtime.clone()),
            created: Some(self.created.clone()),
            history: self.base_history.iter().cloned().chain(ours).collect(),
            os: self.platform.os.clone(),
            rootfs: RootFs {
                kind: "layers".to_string(),
                diff_ids: diff_ids.iter().map(|d| d.to_string()).collect(),
            },
            variant: self.platform.variant.clone(),
            other: Map::new(),
        })
    }
}

/// The history comment of the customisation layer.
pub fn customisation_comment(custom: &crate::layer::Customisation) -> String {
    let mut parts = Vec::new();
    if !custom.contents.is_empty() {
        parts.push(format!("contents: {}", custom.contents.join(" ")));
    }
    if !custom.extra_dirs.is_empty() {
        parts.push(format!("{} extra directories", custom.extra_dirs.len()));
    }
    if !custom.perms.is_empty() {
        parts.push(format!("{} permission rules", custom.perms.len()));
    }
    if !custom.remove.is_empty() {
        parts.push(format!("removes: {}", custom.remove.join(" ")));
    }
    format!("customisation layer; {}", parts.join("; "))
}

/// A history comment for a layer of store paths: the names, shortened when long.
pub fn store_layer_comment(paths: &[&str]) -> String {
    const SHOWN: usize = 5;
    let mut comment = format!("store paths: {}", paths[..paths.len().min(SHOWN)].join(" "));
    if paths.len() > SHOWN {
        comment.push_str(&format!(" and {} more", paths.len() - SHOWN));
    }
    comment
}

/// A history comment as dockerTools writes it: `store paths: ` and the paths as a Python list
/// (`['/nix/store/…-a', '/nix/store/…-b']`), all of them.
pub fn nixpkgs_layer_comment(paths: &[&str]) -> String {
    let items: Vec<String> = paths.iter().map(|p| python_repr(p)).collect();
    format!("store paths: [{}]", items.join(", "))
}

/// A string as Python's `repr` writes it: single quotes unless it holds a single quote and no
/// double one, backslash escapes for the quote, backslashes and control characters.
fn python_repr(text: &str) -> String {
    let quote = if text.contains('\'') && !text.contains('"') {
        '"'
    } else {
        '\''
    };
    let mut out = String::with_capacity(text.len() + 2);
    out.push(quote);
    for c in text.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c == quote => {
                out.push('\\');
                out.push(c);
            }
            c if (c as u32) < 0x20 || c as u32 == 0x7f => {
                out.push_str(&format!("\\x{:02x}", c as u32));
            }
            c => out.push(c),
        }
    }
    out.push(quote);
    out
}

#[cfg(test)]
mod tests {

    #[test]
    fn a_base_config_is_kept_whole_or_its_env_only() {
        let base = serde_json::json!({"Cmd": ["/bin/base"], "User": "base", "Env": ["B=1"]});
        let base = base.as_object().unwrap();
        let options = |base_config| RuntimeOptions {
            created: DEFAULT_CREATED.to_string(),
            base_config,
            user: serde_json::json!({"Env": ["U=2"]})
                .as_object()
                .unwrap()
                .clone(),
            env: vec![],
            labels: vec![],
        };
        let all = runtime_config(base, &options(BaseConfig::All)).unwrap();
        assert_eq!(
            Value::Object(all),
            serde_json::json!({"Cmd": ["/bin/base"], "User": "base", "Env": ["B=1", "U=2"]})
        );
        let env = runtime_config(base, &options(BaseConfig::Env)).unwrap();
        assert_eq!(
            Value::Object(env),
            serde_json::json!({"Env": ["B=1", "U=2"]})
        );
    }
    use proptest::prelude::*;

    #[test]
    fn created_takes_a_plain_date_as_its_midnight() {
        assert_eq!(parse_created("2024-05-01").unwrap(), "2024-05-01T00:00:00Z");
        assert_eq!(
            parse_created("2024-05-01T12:00:00Z").unwrap(),
            "2024-05-01T12:00:00Z"
        );
        assert!(parse_created("2024-02-30").is_err());
        assert!(parse_created("2024-5-1").is_err());
    }

    #[test]
    fn mtimes_are_seconds_or_rfc3339() {
        assert_eq!(parse_mtime("1700000000").unwrap(), 1_700_000_000);
        assert_eq!(parse_mtime("1970-01-01T00:00:01Z").unwrap(), 1);
        assert_eq!(parse_mtime("2024-05-01T12:00:00Z").unwrap(), 1_714_564_800);
        assert_eq!(
            parse_mtime("2024-05-01T14:00:00+02:00").unwrap(),
            1_714_564_800
        );
        assert_eq!(
            parse_mtime("2024-05-01T11:30:00.5-00:30").unwrap(),
            1_714_564_800
        );
        assert!(parse_mtime("now").unwrap() > 1_700_000_000);
        assert!(
            parse_mtime("1969-12-31T23:59:59Z")
                .unwrap_err()
                .to_string()
                .contains("before 1970")
        );
        assert!(parse_mtime("yesterday").is_err());
    }

    proptest! {
        #[test]
        fn mtimes_read_back_what_is_written(seconds in 0u64..253_402_300_799) {
            prop_assert_eq!(parse_mtime(&format_rfc3339(seconds)).unwrap(), seconds);
        }
    }

    use super::*;

    #[test]
    fn host_architectures_keep_their_byte_order() {
        assert_eq!(host_goarch("powerpc64", false), "ppc64");
        assert_eq!(host_goarch("powerpc64", true), "ppc64le");
        assert_eq!(host_goarch("mips64", false), "mips64");
        assert_eq!(host_goarch("mips64", true), "mips64le");
        for goarch in ["ppc64", "mips64", "ppc64le", "mips64le"] {
            assert_eq!(Platform::parse(goarch).unwrap().architecture, goarch);
        }
    }

    #[test]
    fn platforms_from_goarch_and_nix_systems() {
        assert_eq!(
            Platform::parse("x86_64-linux").unwrap(),
            Platform::parse("amd64").unwrap()
        );
        let arm = Platform::parse("armv7l-linux").unwrap();
        assert_eq!(arm.describe(), "linux/arm/v7");
        let err = Platform::parse("sparc").unwrap_err();
        assert!(
            err.message()
                .starts_with("unknown architecture \"sparc\"; accepted: amd64, x86_64-linux")
        );
    }

    #[test]
    fn created_accepts_rfc3339_and_now() {
        for ok in [
            "1970-01-01T00:00:01Z",
            "2024-02-29T23:59:59.123+02:00",
            "2024-02-29T23:59:60-05:30",
        ] {
            assert_eq!(parse_created(ok).unwrap(), ok);
        }
        for bad in [
            "yesterday",
            "2024-05-01T12:00:00+99:00",
            "2024-05-01T12:00:00-05:60",
            "2023-02-29T00:00:00Z",
            "2024-04-31T00:00:00Z",
            "2024-13-01T00:00:00Z",
            "2024-01-01 00:00:00Z",
            "2024-01-01T00:00:00",
        ] {
            assert!(parse_created(bad).is_err(), "{bad}");
        }
        assert!(is_rfc3339(parse_created("now").unwrap().as_bytes()));
    }

    #[test]
    fn formats_epoch_seconds() {
        assert_eq!(format_rfc3339(1), "1970-01-01T00:00:01Z");
        assert_eq!(format_rfc3339(1_709_251_199), "2024-02-29T23:59:59Z");
    }

    #[test]
    fn config_lists_diff_ids_and_history() {
        let config = ImageConfig {
            platform: Platform::parse("arm/v6").unwrap(),
            created: DEFAULT_CREATED.to_string(),
            base_history: vec![serde_json::json!({"created_by": "base"})],
            history_style: HistoryStyle::Ours,
            runtime: runtime_config(
                &Map::new(),
                &RuntimeOptions {
                    created: DEFAULT_CREATED.to_string(),
                    base_config: BaseConfig::All,
                    user: serde_json::json!({"Env": ["A=1"]})
                        .as_object()
                        .unwrap()
                        .clone(),
                    env: vec!["A=2".to_string()],
                    labels: vec!["k=v".to_string()],
                },
            )
            .unwrap(),
        };
        let json: Value = serde_json::from_slice(
            &config.to_json(&[crate::digest::sha256_digest(b"ab")], &["c".into()]),
        )
        .unwrap();
        assert_eq!(
            json["rootfs"]["diff_ids"][0],
            crate::digest::sha256_digest(b"ab").as_str()
        );
        assert_eq!(json["history"][0]["created_by"], "base");
        assert_eq!(json["history"][1]["comment"], "c");
        assert_eq!(json["variant"], "v6");
        assert_eq!(json["os"], "linux");
        assert_eq!(
            json["config"],
            serde_json::json!({"Env": ["A=2"], "Labels": {"k": "v"}})
        );
    }

    #[test]
    fn nixpkgs_comments_are_python_lists() {
        assert_eq!(
            nixpkgs_layer_comment(&["/nix/store/a-x", "/nix/store/b-y"]),
            "store paths: ['/nix/store/a-x', '/nix/store/b-y']"
        );
        assert_eq!(nixpkgs_layer_comment(&[]), "store paths: []");
        assert_eq!(python_repr("it's"), "\"it's\"");
        assert_eq!(python_repr("a'b\"c"), "'a\\'b\"c'");
        assert_eq!(python_repr("t\tn\n\u{1}\\é"), "'t\\tn\\n\\x01\\\\é'");
    }

    #[test]
    fn long_comments_are_shortened() {
        let paths: Vec<String> = (0..7).map(|i| format!("/nix/store/p{i}")).collect();
        let refs: Vec<&str> = paths.iter().map(String::as_str).collect();
        assert!(store_layer_comment(&refs).ends_with("/nix/store/p4 and 2 more"));
    }
}
