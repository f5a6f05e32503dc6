//! Compression formats as stored: told apart by their magic bytes, and decoded. The base
//! reader detects and decodes with them; the output stage's `Compression` adds a level to a
//! codec when it encodes.

use std::io::{self, Read, Write};

use crate::image_spec::media_type;

/// How a stream is compressed, without a level: what can be detected from its bytes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum Codec {
    #[default]
    None,
    Gzip,
    Zstd,
}

impl Codec {
    /// Its name in messages.
    pub fn name(self) -> &'static str {
        match self {
            Codec::None => "no compression",
            Codec::Gzip => "gzip",
            Codec::Zstd => "zstd",
        }
    }

    /// The codec of a stream from its first bytes (at least four, when it has them).
    pub fn sniff(magic: &[u8]) -> Codec {
        match magic {
            [0x1f, 0x8b, ..] => Codec::Gzip,
            [0x28, 0xb5, 0x2f, 0xfd, ..] => Codec::Zstd,
            _ => Codec::None,
        }
    }

    /// Reads up to four bytes from `reader` and sniffs them.
    pub fn sniff_reader(reader: &mut dyn Read) -> io::Result<Codec> {
        let mut magic = [0u8; 4];
        let mut got = 0;
        while got < magic.len() {
            match reader.read(&mut magic[got..])? {
                0 => break,
                n => got += n,
            }
        }
        Ok(Codec::sniff(&magic[..got]))
    }

    /// A reader of `input` decoded.
    pub fn decoding_reader<'a>(self, input: impl Read + 'a) -> io::Result<Box<dyn Read + 'a>> {
        Ok(match self {
            Codec::None => Box::new(input),
            Codec::Gzip => Box::new(flate2::read::MultiGzDecoder::new(io::BufReader::new(input))),
            Codec::Zstd => Box::new(zstd::stream::read::Decoder::new(input)?),
        })
    }

    /// A writer that decodes what is written to it into `output`.
    pub fn decoding_writer<'a>(self, output: impl Write + 'a) -> io::Result<Box<dyn Write + 'a>> {
        Ok(match self {
            Codec::None => Box::new(output),
            Codec::Gzip => Box::new(flate2::write::MultiGzDecoder::new(output)),
            Codec::Zstd => Box::new(zstd::stream::write::Decoder::new(output)?),
        })
    }

    /// The codec an OCI or Docker layer media type names; None for a type that is no layer.
    pub fn of_layer_media_type(media: &str) -> Option<Codec> {
        match media {
            media_type::OCI_LAYER | media_type::DOCKER_LAYER => Some(Codec::None),
            media_type::OCI_LAYER_GZIP | media_type::DOCKER_LAYER_GZIP => Some(Codec::Gzip),
            media_type::OCI_LAYER_ZSTD => Some(Codec::Zstd),
            // Non-distributable ("foreign") layers name their codec the same way.
            m if m.ends_with("tar+zstd") => Some(Codec::Zstd),
            m if m.ends_with("tar+gzip") || m.ends_with("tar.gzip") => Some(Codec::Gzip),
            m if m.ends_with(".tar") => Some(Codec::None),
            _ => None,
        }
    }

    /// The OCI media type of a layer compressed this way.
    pub fn oci_layer_media_type(self) -> &'static str {
        match self {
            Codec::None => media_type::OCI_LAYER,
            Codec::Gzip => media_type::OCI_LAYER_GZIP,
            Codec::Zstd => media_type::OCI_LAYER_ZSTD,
        }
    }

    /// The file name suffix of a layer compressed this way.
    pub fn file_suffix(self) -> &'static str {
        match self {
            Codec::None => "tar",
            Codec::Gzip => "tar.gz",
            Codec::Zstd => "tar.zst",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sniffs_and_names() {
        assert_eq!(Codec::sniff(&[0x1f, 0x8b, 8, 0]), Codec::Gzip);
        assert_eq!(Codec::sniff(&[0x28, 0xb5, 0x2f, 0xfd]), Codec::Zstd);
        assert_eq!(Codec::sniff(b"ustar"), Codec::None);
        assert_eq!(Codec::sniff(&[0x1f]), Codec::None);
        for codec in [Codec::None, Codec::Gzip, Codec::Zstd] {
            assert_eq!(
                Codec::of_layer_media_type(codec.oci_layer_media_type()),
                Some(codec)
            );
        }
        assert_eq!(
            Codec::of_layer_media_type(media_type::DOCKER_LAYER_GZIP),
            Some(Codec::Gzip)
        );
        assert_eq!(Codec::of_layer_media_type("application/json"), None);
    }

    #[test]
    fn decoders_round_trip() {
        let data = b"layered".repeat(100);
        let gz = {
            let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
            e.write_all(&data).unwrap();
            e.finish().unwrap()
        };
        let zst = zstd::encode_all(&data[..], 3).unwrap();
        for (codec, bytes) in [(Codec::Gzip, gz), (Codec::Zstd, zst)] {
            assert_eq!(Codec::sniff(&bytes), codec);
            let mut out = Vec::new();
            codec
                .decoding_reader(&bytes[..])
                .unwrap()
                .read_to_end(&mut out)
                .unwrap();
            assert_eq!(out, data);
        }
    }
}
