//! The one error type of the library: a message meant for the user, saying what is wrong and
//! where (which file, which line, which store path), so they know what to fix.

use std::fmt;
use std::io;
use std::path::Path;

#[derive(Debug)]
pub struct Error {
    message: String,
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub fn new(message: impl Into<String>) -> Self {
        Error {
            message: message.into(),
        }
    }

    /// An I/O failure on `path` while doing `what` ("reading", "creating", ...).
    pub fn io(what: &str, path: &Path, err: io::Error) -> Self {
        Error::new(format!("{what} {}: {}", path.display(), describe_io(&err)))
    }

    /// Appends a hint to the message.
    pub fn with_suffix(mut self, suffix: &str) -> Self {
        self.message.push_str(suffix);
        self
    }

    pub fn message(&self) -> &str {
        &self.message
    }

    /// Prefixes the message with more context ("building layer 3: ...").
    pub fn context(self, context: impl fmt::Display) -> Self {
        Error::new(format!("{context}: {}", self.message))
    }
}

/// io::Error's Display appends "(os error N)"; users want the plain reason.
fn describe_io(err: &io::Error) -> String {
    let text = err.to_string();
    match text.find(" (os error") {
        Some(cut) => text[..cut].to_string(),
        None => text,
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Error {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn io_errors_name_the_path_without_os_error_noise() {
        let err = Error::io(
            "reading",
            Path::new("/x/y"),
            io::Error::from_raw_os_error(2),
        );
        assert_eq!(err.message(), "reading /x/y: No such file or directory");
    }
}
