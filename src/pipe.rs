//! A producer and a consumer joined by an OS pipe, the consumer on its own thread: for bytes
//! that are made by one API (a writer) and taken by another (a reader), without holding them.
//!
//! The consumer may stop early (an error, a dropped connection). The pipe is then drained to
//! its end, so the producer never writes into a closed pipe: that is SIGPIPE for a process that
//! has not set it aside (a program using this library, a fuzzer), not an error it can report.

use std::io::{BufWriter, PipeReader, Write};

use crate::error::{Error, Result};

/// Runs `consume` on a thread, reading what `produce` writes on this one (buffered); returns
/// both results once both are done.
pub fn through<T, U: Send>(
    produce: impl FnOnce(&mut dyn Write) -> Result<T>,
    consume: impl FnOnce(&mut PipeReader) -> U + Send,
) -> Result<(Result<T>, U)> {
    let (mut reader, writer) = std::io::pipe().map_err(|e| Error::write("a pipe", e))?;
    std::thread::scope(|scope| {
        let consumer = scope.spawn(move || {
            let consumed = consume(&mut reader);
            let _ = std::io::copy(&mut reader, &mut std::io::sink());
            consumed
        });
        let produced = {
            let mut out = BufWriter::with_capacity(1 << 20, writer);
            produce(&mut out).and_then(|value| {
                out.flush()
                    .map_err(|e| Error::write("a pipe", e))
                    .map(|()| value)
            })
            // Dropping the writer ends the stream.
        };
        let consumed = consumer
            .join()
            .map_err(|_| Error::value("a thread reading a pipe stopped unexpectedly"))?;
        Ok((produced, consumed))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    #[test]
    fn bytes_pass_and_an_early_stop_does_not_break_the_producer() {
        let data = vec![7u8; 3 << 20];
        let (produced, consumed) = through(
            |out| out.write_all(&data).map_err(|e| Error::write("test", e)),
            |reader| {
                let mut all = Vec::new();
                reader.read_to_end(&mut all).map(|_| all.len())
            },
        )
        .unwrap();
        produced.unwrap();
        assert_eq!(consumed.unwrap(), 3 << 20);
        // The consumer reads 10 bytes and stops; the producer still writes 3 MiB cleanly.
        let (produced, consumed) = through(
            |out| out.write_all(&data).map_err(|e| Error::write("test", e)),
            |reader| {
                let mut some = [0u8; 10];
                reader.read_exact(&mut some).map(|()| some.len())
            },
        )
        .unwrap();
        produced.unwrap();
        assert_eq!(consumed.unwrap(), 10);
    }
}
