//! Compression: deterministic, parallel gzip and zstd (`parallel`), for layer blobs and for
//! whole archives alike. What is compressed and where it goes is the callers' business.

pub mod parallel;

use std::io::Write;

use crate::codec::Codec;
use crate::error::{Error, Result, Setting};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Compression {
    None,
    Gzip { level: u32 },
    Zstd { level: i32 },
}

impl Compression {
    pub const GZIP_DEFAULT_LEVEL: u32 = 6;
    pub const ZSTD_DEFAULT_LEVEL: i32 = 3;

    /// The format this writes, without its level.
    pub fn codec(&self) -> Codec {
        match self {
            Compression::None => Codec::None,
            Compression::Gzip { .. } => Codec::Gzip,
            Compression::Zstd { .. } => Codec::Zstd,
        }
    }

    /// Compression with `codec` at `level`, or at the codec's default level; a level out of the
    /// codec's range (gzip 0-9, zstd 1-22), or a level without compression, is an error.
    pub fn new(codec: Codec, level: Option<i32>) -> Result<Self> {
        let out_of_range = |range: &str, level: i32| {
            Error::value(format!(
                "compression level {level} is out of range for {} ({range})",
                codec.name()
            ))
            .about(Setting::CompressionLevel)
        };
        match (codec, level) {
            (_, None) => Ok(Self::default_for(codec)),
            (Codec::None, Some(_)) => Err(Error::value(
                "a compression level needs gzip or zstd compression",
            )
            .about(Setting::CompressionLevel)),
            (Codec::Gzip, Some(level)) => match u32::try_from(level) {
                Ok(level) if level <= 9 => Ok(Compression::Gzip { level }),
                _ => Err(out_of_range("0-9", level)),
            },
            (Codec::Zstd, Some(level)) if (1..=22).contains(&level) => {
                Ok(Compression::Zstd { level })
            }
            (Codec::Zstd, Some(level)) => Err(out_of_range("1-22", level)),
        }
    }

    /// `gzip 6`, `zstd 3`, `none`: the codec and level, as a provenance states them.
    pub fn describe(&self) -> String {
        match self {
            Compression::None => "none".to_string(),
            Compression::Gzip { level } => format!("gzip {level}"),
            Compression::Zstd { level } => format!("zstd {level}"),
        }
    }

    /// Compression with `codec` at its default level.
    pub fn default_for(codec: Codec) -> Self {
        match codec {
            Codec::None => Compression::None,
            Codec::Gzip => Compression::Gzip {
                level: Self::GZIP_DEFAULT_LEVEL,
            },
            Codec::Zstd => Compression::Zstd {
                level: Self::ZSTD_DEFAULT_LEVEL,
            },
        }
    }
}

/// Runs `write` into `out`, compressing the whole stream as asked, finishes the compression and
/// gives `out` back (for its writer to finish). `what` names the stream in errors.
pub fn compress_stream<W: Write, T>(
    out: W,
    compression: Compression,
    what: &str,
    write: impl FnOnce(&mut dyn Write) -> Result<T>,
) -> Result<(T, W)> {
    let io_error = |e: std::io::Error| Error::write(what, e);
    Ok(match compression {
        Compression::None => {
            let mut out = out;
            let result = write(&mut out)?;
            (result, out)
        }
        Compression::Gzip { level } => {
            let mut encoder = parallel::gzip(out, level);
            let result = write(&mut encoder)?;
            (result, encoder.finish().map_err(io_error)?)
        }
        Compression::Zstd { level } => {
            let mut encoder = parallel::zstd(out, level);
            let result = write(&mut encoder)?;
            (result, encoder.finish().map_err(io_error)?)
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn levels_are_checked_per_codec() {
        assert_eq!(
            Compression::new(Codec::Gzip, Some(9)).unwrap(),
            Compression::Gzip { level: 9 }
        );
        assert_eq!(
            Compression::new(Codec::Zstd, None).unwrap(),
            Compression::Zstd { level: 3 }
        );
        assert_eq!(
            Compression::new(Codec::Gzip, Some(10))
                .unwrap_err()
                .message(),
            "compression level 10 is out of range for gzip (0-9)"
        );
        assert_eq!(
            Compression::new(Codec::Zstd, Some(0))
                .unwrap_err()
                .message(),
            "compression level 0 is out of range for zstd (1-22)"
        );
        assert!(Compression::new(Codec::None, Some(1)).is_err());
    }

    #[test]
    fn a_whole_stream_compresses_as_asked() {
        for compression in [Compression::None, Compression::default_for(Codec::Gzip)] {
            let (n, out) = compress_stream(Vec::new(), compression, "a test", |out| {
                out.write_all(b"layered")
                    .map_err(|e| Error::write("a test", e))?;
                Ok(7)
            })
            .unwrap();
            assert_eq!(n, 7);
            let mut plain = Codec::sniff(&out).decoding_reader(&out[..]).unwrap();
            let mut text = String::new();
            std::io::Read::read_to_string(&mut plain, &mut text).unwrap();
            assert_eq!(text, "layered");
        }
    }
}
