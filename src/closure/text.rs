//! The line-based closure formats: `exportReferencesGraph`'s text output and closureInfo's
//! `registration`. Both list, per path, the path, some fields, a reference count and the
//! references; they differ in the fields. A plain list of paths (closureInfo's `store-paths`)
//! looks similar but has no references, so it is refused with a message saying what to pass.

use super::{Location, Origin, PathRecord};
use crate::error::{Error, Result, quoted, shown};

#[derive(Clone, Copy, PartialEq, Eq)]
enum Format {
    /// path, deriver (may be empty), count, references
    ExportReferencesGraph,
    /// path, narHash, narSize, deriver (may be empty), count, references
    Registration,
}

pub(super) fn parse(file: &str, text: &str) -> Result<Vec<PathRecord>> {
    let lines: Vec<&str> = text.lines().collect();
    let meaningful: Vec<&str> = lines.iter().copied().filter(|l| !l.is_empty()).collect();
    if meaningful.is_empty() {
        return Err(Error::input(
            shown(file),
            "the file is empty; expected a closure graph",
        ));
    }
    if meaningful.iter().all(|l| l.starts_with('/')) {
        return Err(Error::input(
            shown(file),
            "this is a plain list of store paths (like closureInfo's store-paths), which has no \
             references, so layers cannot be planned from it; give a file that has them: \
             exportReferencesGraph's output (text or __structuredAttrs JSON), closureInfo's \
             registration, or `nix path-info --json --recursive`",
        ));
    }
    // The second line tells the formats apart: a deriver path (or nothing) in
    // exportReferencesGraph's output, a hash in a registration.
    let second = lines.get(1).copied().unwrap_or("");
    let format = if second.is_empty() || second.starts_with('/') {
        Format::ExportReferencesGraph
    } else {
        Format::Registration
    };
    Parser {
        file,
        lines,
        next: 0,
    }
    .records(format)
}

struct Parser<'a> {
    file: &'a str,
    lines: Vec<&'a str>,
    next: usize,
}

impl<'a> Parser<'a> {
    fn error(&self, line: usize, message: String) -> Error {
        Error::input(format!("{}:{line}", shown(self.file)), message)
    }

    fn origin(&self, line: usize) -> Origin {
        Origin {
            file: self.file.into(),
            at: Location::Line(line),
        }
    }

    /// The next line and its 1-based number, or an error saying what was expected.
    fn line(&mut self, expected: &str) -> Result<(&'a str, usize)> {
        let number = self.next + 1;
        match self.lines.get(self.next) {
            Some(line) => {
                self.next += 1;
                Ok((line, number))
            }
            None => Err(self.error(number, format!("the file ends early; expected {expected}"))),
        }
    }

    fn number(&mut self, expected: &str) -> Result<u64> {
        let (line, number) = self.line(expected)?;
        line.parse().map_err(|_| {
            self.error(
                number,
                format!("expected {expected}, found {}", quoted(line)),
            )
        })
    }

    fn records(mut self, format: Format) -> Result<Vec<PathRecord>> {
        let mut records = Vec::new();
        loop {
            // Blank lines between records (and at the end) are tolerated.
            while self.lines.get(self.next) == Some(&"") {
                self.next += 1;
            }
            if self.next >= self.lines.len() {
                return Ok(records);
            }
            let (path, path_line) = self.line("a store path")?;
            if !path.starts_with('/') {
                return Err(self.error(
                    path_line,
                    format!("expected a store path, found {}", quoted(path)),
                ));
            }
            let shown_path = shown(path);
            let (mut nar_hash, mut nar_size) = (None, None);
            if format == Format::Registration {
                let (hash, _) = self.line(&format!("the NAR hash of {shown_path}"))?;
                nar_hash = Some(hash.to_string());
                nar_size = Some(self.number(&format!("the NAR size of {shown_path}"))?);
            }
            let (deriver, deriver_line) = self.line(&format!("the deriver of {shown_path}"))?;
            if !deriver.is_empty() && !deriver.starts_with('/') {
                return Err(self.error(
                    deriver_line,
                    format!(
                        "expected the deriver of {shown_path} (a .drv path or an empty line), \
                         found {}",
                        quoted(deriver)
                    ),
                ));
            }
            let count = self.number(&format!("the number of references of {shown_path}"))?;
            let mut references = Vec::new();
            for n in 1..=count {
                let (reference, line) =
                    self.line(&format!("reference {n} of {count} of {shown_path}"))?;
                if !reference.starts_with('/') {
                    return Err(self.error(
                        line,
                        format!(
                            "expected reference {n} of {count} of {shown_path}, found {}",
                            quoted(reference)
                        ),
                    ));
                }
                references.push(reference.to_string());
            }
            records.push(PathRecord {
                path: path.to_string(),
                references,
                nar_size,
                nar_hash,
                deriver: (!deriver.is_empty()).then(|| deriver.to_string()),
                origin: self.origin(path_line),
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::closure::tests::H;

    fn p(i: usize) -> String {
        format!("/nix/store/{}-p{i}", H[i])
    }

    #[test]
    fn export_references_graph_text() {
        let text = format!(
            "{a}\n/nix/store/{h}-a.drv\n2\n{a}\n{b}\n{b}\n\n0\n",
            a = p(0),
            b = p(1),
            h = H[5]
        );
        let records = parse("closure", &text).unwrap();
        assert_eq!(records.len(), 2);
        assert_eq!(records[0].path, p(0));
        assert_eq!(records[0].references, vec![p(0), p(1)]);
        assert_eq!(records[0].nar_size, None);
        assert_eq!(records[1].origin.to_string(), "closure:6");
    }

    #[test]
    fn registration() {
        let text = format!(
            "{a}\n{hex}\n1234\n\n1\n{b}\n{b}\nsha256:abc\n7\n/nix/store/{h}-b.drv\n0\n",
            a = p(0),
            b = p(1),
            hex = "ab".repeat(32),
            h = H[5]
        );
        let records = parse("registration", &text).unwrap();
        assert_eq!(records.len(), 2);
        assert_eq!(records[0].nar_size, Some(1234));
        assert_eq!(
            records[0].nar_hash.as_deref(),
            Some("ab".repeat(32).as_str())
        );
        assert_eq!(records[0].references, vec![p(1)]);
        assert_eq!(records[1].nar_size, Some(7));
    }

    #[test]
    fn plain_path_list_is_refused_with_the_formats_that_work() {
        let err = parse("store-paths", &format!("{}\n{}\n", p(0), p(1))).unwrap_err();
        assert!(
            err.message().starts_with(
                "store-paths: this is a plain list of store paths (like closureInfo's \
                 store-paths), which has no references"
            ),
            "{err}"
        );
        assert!(err.message().contains("registration"));
    }

    #[test]
    fn malformed_files_name_the_line() {
        let cases = [
            (
                format!("{}\n\nx\n", p(0)),
                format!(
                    "closure:3: expected the number of references of {}, found \"x\"",
                    p(0)
                ),
            ),
            (
                format!("{}\n\n2\n{}\n", p(0), p(1)),
                format!(
                    "closure:5: the file ends early; expected reference 2 of 2 of {}",
                    p(0)
                ),
            ),
            (
                format!("{}\n\n1\nnot-a-path\n", p(0)),
                format!(
                    "closure:4: expected reference 1 of 1 of {}, found \"not-a-path\"",
                    p(0)
                ),
            ),
            (
                format!("{}\n\n0\ngarbage\n\n0\n", p(0)),
                "closure:4: expected a store path, found \"garbage\"".to_string(),
            ),
            (
                format!("{}\nsha256:x\nbig\n\n0\n", p(0)),
                format!(
                    "closure:3: expected the NAR size of {}, found \"big\"",
                    p(0)
                ),
            ),
            (
                "\n\n".to_string(),
                "closure: the file is empty; expected a closure graph".into(),
            ),
        ];
        for (text, message) in cases {
            assert_eq!(parse("closure", &text).unwrap_err().message(), message);
        }
    }
}
