//! The progress bar on a terminal: bytes of the layers we build, throughput, time left.

use std::io::Write;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// Bytes are reported to the bar every this many, not on each small write.
const REPORT_EVERY: u64 = 4 << 20;

/// A bar over `total` bytes on stderr, or none.
#[derive(Clone, Default)]
pub struct Progress {
    bar: Option<ProgressBar>,
}

impl Progress {
    /// A bar when `shown`, else nothing at all.
    pub fn new(shown: bool, total: u64) -> Self {
        if !shown {
            return Progress::default();
        }
        let bar = ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::stderr());
        if let Ok(style) = ProgressStyle::with_template(
            "{bar:40} {bytes}/{total_bytes} {binary_bytes_per_sec} ETA {eta}",
        ) {
            bar.set_style(style);
        }
        Progress { bar: Some(bar) }
    }

    /// Runs `write` with `out` counted on the bar.
    pub fn counting<T>(&self, out: &mut dyn Write, write: impl FnOnce(&mut dyn Write) -> T) -> T {
        let Some(bar) = &self.bar else {
            return write(out);
        };
        let mut counting = CountingWriter {
            out,
            bar,
            uncounted: 0,
        };
        let result = write(&mut counting);
        bar.inc(counting.uncounted);
        result
    }

    /// Counts `bytes` that need no writing (a layer the destination holds already).
    pub fn skip(&self, bytes: u64) {
        if let Some(bar) = &self.bar {
            bar.inc(bytes);
        }
    }

    /// Clears the bar once the image is written.
    pub fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}

/// Counts bytes for the bar, telling it every few MiB.
struct CountingWriter<'a> {
    out: &'a mut dyn Write,
    bar: &'a ProgressBar,
    uncounted: u64,
}

impl Write for CountingWriter<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.out.write(buf)?;
        self.uncounted += n as u64;
        if self.uncounted >= REPORT_EVERY {
            self.bar.inc(self.uncounted);
            self.uncounted = 0;
        }
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.out.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counting_passes_every_byte_through() {
        let progress = Progress::new(true, 10 << 20);
        let mut out = Vec::new();
        progress.counting(&mut out, |w| w.write_all(&vec![7u8; 9 << 20]).unwrap());
        assert_eq!(out.len(), 9 << 20);
        progress.skip(1 << 20);
        assert_eq!(progress.bar.as_ref().map(|b| b.position()), Some(10 << 20));
        let hidden = Progress::new(false, 0);
        let mut out = Vec::new();
        hidden.counting(&mut out, |w| w.write_all(b"x").unwrap());
        assert_eq!(out, b"x");
    }
}
