//! Parallel gzip whose output does not depend on the number of threads.
//!
//! The input is cut into blocks of a fixed size (never by thread count). Each block is deflated
//! on its own, primed with the 32 KiB before it as a dictionary so the ratio stays close to a
//! single stream, and ends with a sync flush so the pieces join into one valid deflate stream;
//! the last block finishes it. Blocks are compressed side by side in batches, then written in
//! order. This is how pigz works, and like pigz's the output is one ordinary gzip member.

use std::io::{self, Write};

use flate2::{Compress, Compression, FlushCompress, Status};
use rayon::prelude::*;

/// Uncompressed bytes per block (pigz's default).
const BLOCK: usize = 128 * 1024;
/// Blocks compressed together: enough to keep every core busy, little memory.
const BATCH: usize = 16;
/// Deflate's window: the dictionary carried from one block into the next.
const WINDOW: usize = 32 * 1024;

pub struct ParallelGzWriter<W: Write> {
    inner: Option<W>,
    level: u32,
    /// Full blocks waiting to be compressed, then the partial one being filled.
    pending: Vec<u8>,
    /// The last WINDOW bytes before `pending`.
    dictionary: Vec<u8>,
    crc: crc32fast::Hasher,
    length: u64,
    header_written: bool,
}

impl<W: Write> ParallelGzWriter<W> {
    pub fn new(inner: W, level: u32) -> Self {
        ParallelGzWriter {
            inner: Some(inner),
            level,
            pending: Vec::with_capacity(BLOCK * BATCH),
            dictionary: Vec::new(),
            crc: crc32fast::Hasher::new(),
            length: 0,
            header_written: false,
        }
    }

    fn inner(&mut self) -> &mut W {
        self.inner.as_mut().expect("used after finish")
    }

    fn write_header(&mut self) -> io::Result<()> {
        if !self.header_written {
            // No name, no time, OS "unknown": nothing of the host.
            let xfl = match self.level {
                9 => 2,
                1 => 4,
                _ => 0,
            };
            self.inner()
                .write_all(&[0x1f, 0x8b, 8, 0, 0, 0, 0, 0, xfl, 255])?;
            self.header_written = true;
        }
        Ok(())
    }

    /// Compresses the first `blocks` whole blocks of `pending` (the last one finishing the
    /// stream when `last`) and writes them.
    fn flush_blocks(&mut self, blocks: usize, last: bool) -> io::Result<()> {
        self.write_header()?;
        let data_len = if last {
            self.pending.len()
        } else {
            blocks * BLOCK
        };
        let data = &self.pending[..data_len];
        let chunks: Vec<&[u8]> = if data.is_empty() {
            vec![&[]]
        } else {
            data.chunks(BLOCK).collect()
        };
        let count = chunks.len();
        let level = self.level;
        let dictionary = &self.dictionary;
        let compressed: Vec<io::Result<Vec<u8>>> = chunks
            .par_iter()
            .enumerate()
            .map(|(i, chunk)| {
                let previous: &[u8] = if i == 0 {
                    dictionary
                } else {
                    let before = &data[..i * BLOCK];
                    &before[before.len().saturating_sub(WINDOW)..]
                };
                deflate_block(chunk, previous, level, last && i == count - 1)
            })
            .collect();
        for block in compressed {
            let block = block?;
            self.inner().write_all(&block)?;
        }
        let tail_start = data_len.saturating_sub(WINDOW);
        if data_len >= WINDOW {
            self.dictionary = self.pending[tail_start..data_len].to_vec();
        } else {
            let mut dictionary = std::mem::take(&mut self.dictionary);
            dictionary.extend_from_slice(&self.pending[..data_len]);
            let cut = dictionary.len().saturating_sub(WINDOW);
            self.dictionary = dictionary.split_off(cut);
        }
        self.pending.drain(..data_len);
        Ok(())
    }

    /// Compresses what is left, writes the trailer and returns the inner writer.
    pub fn finish(mut self) -> io::Result<W> {
        self.flush_blocks(0, true)?;
        let crc = self.crc.clone().finalize();
        let length = self.length as u32; // ISIZE is the length modulo 2^32
        let mut inner = self.inner.take().expect("finish once");
        inner.write_all(&crc.to_le_bytes())?;
        inner.write_all(&length.to_le_bytes())?;
        Ok(inner)
    }
}

/// Deflates one block as raw deflate data primed with `dictionary`; a sync flush ends it, or
/// the stream's final block when `last`.
fn deflate_block(data: &[u8], dictionary: &[u8], level: u32, last: bool) -> io::Result<Vec<u8>> {
    let mut compress = Compress::new(Compression::new(level), false);
    if !dictionary.is_empty() {
        compress
            .set_dictionary(dictionary)
            .map_err(|e| io::Error::other(format!("deflate dictionary: {e}")))?;
    }
    let mut out = Vec::with_capacity(data.len() / 2 + 1024);
    let flush = if last {
        FlushCompress::Finish
    } else {
        FlushCompress::Sync
    };
    loop {
        out.reserve(64 * 1024);
        let consumed = compress.total_in() as usize;
        let status = compress
            .compress_vec(&data[consumed..], &mut out, flush)
            .map_err(|e| io::Error::other(format!("deflate: {e}")))?;
        let consumed_all = compress.total_in() as usize == data.len();
        // A flush is complete once deflate stops short of filling the output.
        let room_left = out.len() < out.capacity();
        match status {
            Status::StreamEnd => break,
            _ if !last && consumed_all && room_left => break,
            _ => continue,
        }
    }
    Ok(out)
}

impl<W: Write> Write for ParallelGzWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.crc.update(buf);
        self.length += buf.len() as u64;
        self.pending.extend_from_slice(buf);
        // Keep the partial block (and one full block, since the stream's last block must be
        // the one that finishes it) until more data or finish() arrives.
        if self.pending.len() > BLOCK * BATCH {
            let blocks = (self.pending.len() - 1) / BLOCK;
            self.flush_blocks(blocks, false)?;
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner().flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    fn sample(len: usize) -> Vec<u8> {
        // Compressible but not trivial: text-like with some noise.
        let mut x = 12345u32;
        (0..len)
            .map(|i| {
                x = x.wrapping_mul(1103515245).wrapping_add(12345);
                if i % 7 == 0 {
                    (x >> 24) as u8
                } else {
                    b"layered-gen "[i % 12]
                }
            })
            .collect()
    }

    fn compress(data: &[u8], write_size: usize, threads: usize) -> Vec<u8> {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap();
        pool.install(|| {
            let mut w = ParallelGzWriter::new(Vec::new(), 6);
            for piece in data.chunks(write_size.max(1)) {
                w.write_all(piece).unwrap();
            }
            w.finish().unwrap()
        })
    }

    #[test]
    fn round_trips_and_ignores_thread_count_and_write_sizes() {
        for len in [
            0,
            1,
            1000,
            BLOCK,
            BLOCK + 1,
            BLOCK * BATCH + 3,
            BLOCK * (BATCH + 5) + 77,
        ] {
            let data = sample(len);
            let one = compress(&data, 4096, 1);
            let many = compress(&data, 1 << 20, 4);
            assert_eq!(one, many, "len {len}");
            let mut decoded = Vec::new();
            flate2::read::GzDecoder::new(one.as_slice())
                .read_to_end(&mut decoded)
                .unwrap();
            assert_eq!(decoded, data, "len {len}");
            assert_eq!(&one[..4], &[0x1f, 0x8b, 8, 0]);
        }
    }

    #[test]
    fn gzip_tool_reads_it() {
        let data = sample(BLOCK * 3 + 5);
        let gz = compress(&data, 9999, 2);
        let mut child = std::process::Command::new("gzip")
            .args(["-dc"])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let mut stdin = child.stdin.take().unwrap();
        let writer = std::thread::spawn(move || stdin.write_all(&gz).unwrap());
        let output = child.wait_with_output().unwrap();
        writer.join().unwrap();
        assert!(output.status.success());
        assert_eq!(output.stdout, data);
    }
}
