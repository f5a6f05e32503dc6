//! The library's error: a kind (what failed, with its cause kept for `source()`), the context
//! it failed in ("layer 37 (/nix/store/…-glibc-2.39)"), outermost first, and the setting whose
//! value was at fault, so the command line can name its flag.
//!
//! Messages speak of files, store paths and values. Whatever comes from input — a closure's
//! paths, a base image's member names, JSON strings — is shown through [`quoted`] or [`shown`],
//! which escape control characters and shorten long values; the rendered message is escaped
//! once more as a whole, so no input byte can drive the user's terminal.

use std::fmt::{self, Write as _};
use std::io;
use std::path::{Path, PathBuf};

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What went wrong.
#[derive(Debug, thiserror::Error)]
pub enum ErrorKind {
    /// A file or directory could not be opened, read, listed, created or renamed.
    #[error("{action} {}: {}", shown_path(path), plain_io(source))]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// Writing the image (a file, a pipe, a scratch file) failed.
    #[error("writing {target}: {}", plain_io(source))]
    Write {
        target: String,
        #[source]
        source: io::Error,
    },
    /// A file does not parse as JSON.
    #[error("{}:{line}:{column}: invalid JSON: {message}", shown(file))]
    Json {
        file: String,
        line: usize,
        column: usize,
        message: String,
    },
    /// An input (closure, config, perms, plan, base image) is not what it must be: where, and
    /// what is wrong.
    #[error("{}", located(at, message))]
    Input { at: String, message: String },
    /// A base image's bytes do not match what it declares.
    #[error("{at}: {message}; the base image is damaged or was changed")]
    Damaged { at: String, message: String },
    /// A store file changed between the scan that sized its layer and the read that wrote it.
    #[error(
        "{}: read {found} bytes where {expected} were expected: the store changed while the \
         image was written",
        shown_path(path)
    )]
    StoreChanged {
        path: PathBuf,
        expected: u64,
        found: u64,
    },
    /// A registry or the Docker daemon could not be reached, or refused a request.
    #[error("{registry}: {doing}: {message}")]
    Registry {
        registry: String,
        doing: String,
        message: String,
    },
    /// A value of the options is not acceptable, or options do not go together.
    #[error("{message}")]
    Value { message: String },
}

/// The option a failing value came from. The library names values in words; the command line
/// maps each setting to its flag.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Setting {
    Closure,
    ClosureKey,
    MaxLayers,
    PreviousPlan,
    Output,
    Format,
    Compression,
    CompressionLevel,
    ArchiveCompression,
    Name,
    Tag,
    DockerLegacy,
    Architecture,
    Created,
    Config,
    Env,
    Label,
    Contents,
    ExtraDir,
    Perms,
    Exclude,
    LayeringPipeline,
    Remove,
    FromImage,
    FromImageTag,
    BaseLayers,
    StoreRoot,
    Creds,
    CertDir,
    MountFrom,
    CacheDir,
    Layer,
    Path,
    Sbom,
    SbomInImage,
    Provenance,
    SignKey,
    Key,
    SbomMeta,
}

#[derive(Debug)]
pub struct Error {
    kind: Box<ErrorKind>,
    /// Outermost first.
    context: Vec<String>,
    setting: Option<Setting>,
}

impl Error {
    pub fn new(kind: ErrorKind) -> Self {
        Error {
            kind: Box::new(kind),
            context: Vec::new(),
            setting: None,
        }
    }

    /// An I/O failure on `path` while doing `action` ("reading", "creating", ...).
    pub fn io(action: &'static str, path: &Path, source: io::Error) -> Self {
        Error::new(ErrorKind::Io {
            action,
            path: path.to_path_buf(),
            source,
        })
    }

    /// A failure writing the output, named by what was being written.
    pub fn write(target: impl Into<String>, source: io::Error) -> Self {
        Error::new(ErrorKind::Write {
            target: target.into(),
            source,
        })
    }

    /// Malformed input at `at` (a file, `file:line`, `file: $.json.path`).
    pub fn input(at: impl fmt::Display, message: impl Into<String>) -> Self {
        Error::new(ErrorKind::Input {
            at: at.to_string(),
            message: message.into(),
        })
    }

    /// A base image whose content contradicts its own description.
    pub fn damaged(at: impl fmt::Display, message: impl Into<String>) -> Self {
        Error::new(ErrorKind::Damaged {
            at: at.to_string(),
            message: message.into(),
        })
    }

    /// A value that cannot be used, and why.
    pub fn value(message: impl Into<String>) -> Self {
        Error::new(ErrorKind::Value {
            message: message.into(),
        })
    }

    pub fn kind(&self) -> &ErrorKind {
        &self.kind
    }

    /// Whether the failure is a full filesystem (or quota), wherever it was writing.
    pub fn is_storage_full(&self) -> bool {
        match &*self.kind {
            ErrorKind::Io { source, .. } | ErrorKind::Write { source, .. } => {
                matches!(
                    source.kind(),
                    io::ErrorKind::StorageFull | io::ErrorKind::QuotaExceeded
                )
            }
            _ => false,
        }
    }

    /// The setting whose value failed, if one did.
    pub fn setting(&self) -> Option<Setting> {
        self.setting
    }

    /// Marks the error as caused by `setting`'s value (the first mark, the most precise, wins).
    pub fn about(mut self, setting: Setting) -> Self {
        self.setting.get_or_insert(setting);
        self
    }

    /// Adds context around the error ("layer 3 (/nix/store/…)").
    pub fn context(mut self, context: impl fmt::Display) -> Self {
        self.context.insert(0, context.to_string());
        self
    }

    /// The whole message, as `Display` renders it.
    pub fn message(&self) -> String {
        self.to_string()
    }
}

impl From<ErrorKind> for Error {
    fn from(kind: ErrorKind) -> Self {
        Error::new(kind)
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut text = String::new();
        for context in &self.context {
            let _ = write!(text, "{context}: ");
        }
        let _ = write!(text, "{}", self.kind);
        f.write_str(&escape_controls(&text))
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        std::error::Error::source(&*self.kind)
    }
}

/// Extension for results: context added only on the error path.
pub trait ResultExt<T> {
    fn context_with<C: fmt::Display>(self, context: impl FnOnce() -> C) -> Result<T>;
    fn about(self, setting: Setting) -> Result<T>;
}

impl<T> ResultExt<T> for Result<T> {
    fn context_with<C: fmt::Display>(self, context: impl FnOnce() -> C) -> Result<T> {
        self.map_err(|e| e.context(context()))
    }

    fn about(self, setting: Setting) -> Result<T> {
        self.map_err(|e| e.about(setting))
    }
}

/// `at: message`, or the message alone where the input as a whole is at fault.
fn located(at: &str, message: &str) -> String {
    if at.is_empty() {
        message.to_string()
    } else {
        format!("{at}: {message}")
    }
}

/// io::Error's Display appends "(os error N)"; users want the plain reason.
pub(crate) fn plain_io(err: &io::Error) -> String {
    let text = err.to_string();
    match text.find(" (os error") {
        Some(cut) => text[..cut].to_string(),
        None => text,
    }
}

/// Longest value shown whole; longer ones keep their start and end.
const SHOWN_MAX: usize = 160;
const SHOWN_HEAD: usize = 100;
const SHOWN_TAIL: usize = 40;

/// An input value for a message: control characters escaped, long values shortened to their
/// start and end with the full length given.
pub fn shown(value: &str) -> String {
    let escaped = escape_controls(value);
    let chars = escaped.chars().count();
    if chars <= SHOWN_MAX {
        return escaped;
    }
    let head: String = escaped.chars().take(SHOWN_HEAD).collect();
    let tail: String = escaped.chars().skip(chars - SHOWN_TAIL).collect();
    format!("{head}…{tail} ({} bytes)", value.len())
}

/// [`shown`] in double quotes, for values that may be empty or hold spaces.
pub fn quoted(value: &str) -> String {
    format!("\"{}\"", shown(value).replace('"', "\\\""))
}

/// Raw bytes (file names need not be UTF-8) as [`shown`] text.
pub fn shown_bytes(value: &[u8]) -> String {
    shown(&String::from_utf8_lossy(value))
}

/// A path as [`shown`] text.
pub fn shown_path(path: &Path) -> String {
    shown(&path.to_string_lossy())
}

/// Escapes control characters (C0, DEL, C1 and Unicode's other invisible controls) so that
/// printing a message cannot move the cursor, change colours or rewrite the terminal title.
fn escape_controls(text: &str) -> String {
    if !text.chars().any(char::is_control) {
        return text.to_string();
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        if c.is_control() {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn io_errors_name_the_path_and_keep_the_cause() {
        let err = Error::io(
            "reading",
            Path::new("/x/y"),
            io::Error::from_raw_os_error(2),
        );
        assert_eq!(err.message(), "reading /x/y: No such file or directory");
        let source = std::error::Error::source(&err).expect("the io::Error is the source");
        assert_eq!(
            source.downcast_ref::<io::Error>().map(io::Error::kind),
            Some(io::ErrorKind::NotFound)
        );
    }

    #[test]
    fn context_reads_outermost_first() {
        let err = Error::new(ErrorKind::StoreChanged {
            path: "/nix/store/x-glibc/lib/libc.so.6".into(),
            expected: 7300608,
            found: 6034944,
        })
        .context("/nix/store/x-glibc")
        .context("layer 37");
        assert_eq!(
            err.message(),
            "layer 37: /nix/store/x-glibc: /nix/store/x-glibc/lib/libc.so.6: read 6034944 bytes \
             where 7300608 were expected: the store changed while the image was written"
        );
    }

    #[test]
    fn control_characters_never_reach_the_terminal() {
        let hostile = "/nix/store/\u{1b}[2J\u{1b}]0;owned\u{7}\r\u{9b}31m";
        let err = Error::input(hostile, format!("bad {}", quoted(hostile)));
        let message = err.message();
        assert!(!message.chars().any(char::is_control), "{message:?}");
        assert!(message.contains("\\u{1b}[2J"), "{message}");
    }

    #[test]
    fn long_values_are_shortened_with_their_length() {
        let long = "a".repeat(5000) + "END";
        let text = shown(&long);
        assert!(text.len() < 200, "{text}");
        assert!(text.ends_with("aaEND (5003 bytes)"), "{text}");
        assert_eq!(shown("short"), "short");
        assert_eq!(quoted("say \"hi\""), "\"say \\\"hi\\\"\"");
    }

    #[test]
    fn the_first_setting_mark_wins() {
        let err = Error::value("x")
            .about(Setting::MaxLayers)
            .about(Setting::FromImage);
        assert_eq!(err.setting(), Some(Setting::MaxLayers));
    }
}
