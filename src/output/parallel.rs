//! Parallel compression whose output does not depend on the number of threads.
//!
//! The input is cut into blocks of a fixed size (never by thread count), compressed side by
//! side in small batches and written in order, so memory stays bounded and every core works.
//!
//! - gzip: each block is deflated on its own, primed with the 32 KiB before it as a dictionary
//!   so the ratio stays close to a single stream, and ends with a sync flush so the pieces join
//!   into one valid deflate stream; the last block finishes it. This is how pigz works, and like
//!   pigz's the output is one ordinary gzip member.
//! - zstd: each 1 MiB block is one zstd frame (with its checksum); concatenated frames are one
//!   valid zstd stream. zstd's own multithreading needs about 50 MiB per worker, this a few,
//!   and its bytes depend on nothing but the block size.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::io::{self, Write};
use std::sync::mpsc::{Receiver, channel};

use flate2::{Compress, FlushCompress, Status};
use rayon::prelude::*;

/// Batches compressed at once.
const IN_FLIGHT: usize = 2;

/// How one format compresses a block.
pub trait BlockCodec: Clone + Send + Sync + 'static {
    /// Uncompressed bytes per block.
    const BLOCK: usize;
    /// Blocks compressed together: enough to keep every core busy, little memory.
    const BATCH: usize;
    /// Bytes before a block that it may refer to.
    const HISTORY: usize;
    /// Whether the trailer needs the CRC-32 of the uncompressed bytes.
    const CRC: bool;
    fn header(&self) -> Vec<u8>;
    /// Compresses one block; `history` holds up to HISTORY bytes before it.
    fn block(&self, data: &[u8], history: &[u8], last: bool) -> io::Result<Vec<u8>>;
    fn trailer(&self, crc: u32, length: u64) -> Vec<u8>;
}

/// A compressed batch, and the buffer its input was in (to be filled again).
type Batch = (io::Result<Vec<Vec<u8>>>, Vec<u8>);

/// Compresses a batch of blocks side by side.
fn compress_batch<C: BlockCodec>(
    codec: &C,
    history: &[u8],
    data: &[u8],
    last: bool,
) -> io::Result<Vec<Vec<u8>>> {
    let chunks: Vec<&[u8]> = if data.is_empty() {
        vec![&[]]
    } else {
        data.chunks(C::BLOCK).collect()
    };
    let count = chunks.len();
    chunks
        .par_iter()
        .enumerate()
        .map(|(i, chunk)| {
            let before: &[u8] = if i == 0 {
                history
            } else {
                let before = &data[..i * C::BLOCK];
                &before[before.len().saturating_sub(C::HISTORY)..]
            };
            codec.block(chunk, before, last && i == count - 1)
        })
        .collect()
}

/// Batches are compressed in the background while the next one fills, and written in order.
pub struct ParallelWriter<W: Write, C: BlockCodec> {
    inner: Option<W>,
    codec: C,
    /// Full blocks waiting to be compressed, then the partial one being filled.
    pending: Vec<u8>,
    /// The last HISTORY bytes before `pending`.
    history: Vec<u8>,
    /// The batches being compressed, oldest first. Two in flight keep every core busy at the
    /// tail of a batch, when its last blocks are still being compressed.
    in_flight: VecDeque<Receiver<Batch>>,
    /// Input buffers back from finished batches: reused, not reallocated, which keeps the
    /// allocator's per-thread arenas from growing.
    spare: Vec<Vec<u8>>,
    crc: crc32fast::Hasher,
    length: u64,
    header_written: bool,
}

impl<W: Write, C: BlockCodec> ParallelWriter<W, C> {
    /// A batch, the partial block after it, and one write of up to 1 MiB.
    const CAPACITY: usize = C::BLOCK * (C::BATCH + 1) + (1 << 20);

    pub fn new(inner: W, codec: C) -> Self {
        ParallelWriter {
            inner: Some(inner),
            codec,
            pending: Vec::with_capacity(Self::CAPACITY),
            history: Vec::new(),
            in_flight: VecDeque::new(),
            spare: Vec::new(),
            crc: crc32fast::Hasher::new(),
            length: 0,
            header_written: false,
        }
    }

    fn inner(&mut self) -> io::Result<&mut W> {
        self.inner
            .as_mut()
            .ok_or_else(|| io::Error::other("the compressor was used after finishing"))
    }

    /// Writes the oldest batch in flight, once it is compressed.
    fn write_in_flight(&mut self) -> io::Result<()> {
        if let Some(receiver) = self.in_flight.pop_front() {
            let (blocks, mut buffer) = receiver
                .recv()
                .map_err(|_| io::Error::other("a compression job stopped"))?;
            buffer.clear();
            self.spare.push(buffer);
            let blocks = blocks?;
            let inner = self.inner()?;
            for block in blocks {
                inner.write_all(&block)?;
            }
        }
        Ok(())
    }

    /// Sends the first `blocks` whole blocks of `pending` (all of it, finishing the stream,
    /// when `last`) to be compressed.
    fn flush_blocks(&mut self, blocks: usize, last: bool) -> io::Result<()> {
        if !self.header_written {
            let header = self.codec.header();
            self.inner()?.write_all(&header)?;
            self.header_written = true;
        }
        let data_len = if last {
            self.pending.len()
        } else {
            blocks * C::BLOCK
        };
        if self.in_flight.len() >= IN_FLIGHT {
            self.write_in_flight()?;
        }
        let mut next = self.spare.pop().unwrap_or_default();
        next.reserve(Self::CAPACITY);
        next.extend_from_slice(&self.pending[data_len..]);
        self.pending.truncate(data_len);
        let data = std::mem::replace(&mut self.pending, next);
        let history = self.history.clone();
        if C::HISTORY > 0 {
            self.history
                .extend_from_slice(&data[data.len().saturating_sub(C::HISTORY)..]);
            let cut = self.history.len().saturating_sub(C::HISTORY);
            self.history.drain(..cut);
        }
        if rayon::current_thread_index().is_some() {
            // On a pool thread, waiting for a pool job could starve the pool: work inline.
            while !self.in_flight.is_empty() {
                self.write_in_flight()?;
            }
            let blocks = compress_batch(&self.codec, &history, &data, last)?;
            let inner = self.inner()?;
            for block in blocks {
                inner.write_all(&block)?;
            }
            let mut data = data;
            data.clear();
            self.spare.push(data);
            return Ok(());
        }
        let (sender, receiver) = channel();
        let codec = self.codec.clone();
        rayon::spawn(move || {
            let blocks = compress_batch(&codec, &history, &data, last);
            let _ = sender.send((blocks, data));
        });
        self.in_flight.push_back(receiver);
        Ok(())
    }

    /// Compresses what is left, writes the trailer and returns the inner writer.
    pub fn finish(mut self) -> io::Result<W> {
        self.flush_blocks(0, true)?;
        while !self.in_flight.is_empty() {
            self.write_in_flight()?;
        }
        let trailer = self.codec.trailer(self.crc.clone().finalize(), self.length);
        let mut inner = self
            .inner
            .take()
            .ok_or_else(|| io::Error::other("the compressor was finished twice"))?;
        inner.write_all(&trailer)?;
        Ok(inner)
    }
}

impl<W: Write, C: BlockCodec> Write for ParallelWriter<W, C> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if C::CRC {
            self.crc.update(buf);
        }
        self.length += buf.len() as u64;
        self.pending.extend_from_slice(buf);
        // Keep the partial block (and one full one, since the stream's last block may have to
        // finish it) until more data or finish() arrives.
        if self.pending.len() > C::BLOCK * C::BATCH {
            let blocks = (self.pending.len() - 1) / C::BLOCK;
            self.flush_blocks(blocks, false)?;
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner()?.flush()
    }
}

/// gzip, pigz-style.
#[derive(Clone)]
pub struct Gzip {
    level: u32,
}

pub fn gzip<W: Write>(inner: W, level: u32) -> ParallelWriter<W, Gzip> {
    ParallelWriter::new(inner, Gzip { level })
}

impl BlockCodec for Gzip {
    const BLOCK: usize = 128 * 1024; // pigz's default
    const BATCH: usize = 8;
    const HISTORY: usize = 32 * 1024; // deflate's window
    const CRC: bool = true;

    fn header(&self) -> Vec<u8> {
        // No name, no time, OS "unknown": nothing of the host.
        let xfl = match self.level {
            9 => 2,
            1 => 4,
            _ => 0,
        };
        vec![0x1f, 0x8b, 8, 0, 0, 0, 0, 0, xfl, 255]
    }

    /// Raw deflate primed with `history`; a sync flush ends it, or the stream's final block.
    fn block(&self, data: &[u8], history: &[u8], last: bool) -> io::Result<Vec<u8>> {
        let mut compress = Compress::new(flate2::Compression::new(self.level), false);
        if !history.is_empty() {
            compress
                .set_dictionary(history)
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

    fn trailer(&self, crc: u32, length: u64) -> Vec<u8> {
        let mut trailer = crc.to_le_bytes().to_vec();
        trailer.extend_from_slice(&(length as u32).to_le_bytes()); // ISIZE: modulo 2^32
        trailer
    }
}

/// zstd as independent frames.
#[derive(Clone)]
pub struct Zstd {
    level: i32,
}

pub fn zstd<W: Write>(inner: W, level: i32) -> ParallelWriter<W, Zstd> {
    ParallelWriter::new(inner, Zstd { level })
}

thread_local! {
    /// One compression context per thread and level, reused across blocks.
    static ZSTD_CONTEXT: RefCell<Option<(i32, zstd::bulk::Compressor<'static>)>> =
        const { RefCell::new(None) };
}

impl BlockCodec for Zstd {
    const BLOCK: usize = 1 << 20;
    const BATCH: usize = 4;
    const HISTORY: usize = 0;
    const CRC: bool = false;

    fn header(&self) -> Vec<u8> {
        Vec::new()
    }

    fn block(&self, data: &[u8], _: &[u8], last: bool) -> io::Result<Vec<u8>> {
        // An empty stream still gets one (empty) frame; other empty blocks get none.
        if data.is_empty() && !last {
            return Ok(Vec::new());
        }
        ZSTD_CONTEXT.with(|cell| {
            let mut cell = cell.borrow_mut();
            if cell.as_ref().is_none_or(|(level, _)| *level != self.level) {
                let mut compressor = zstd::bulk::Compressor::new(self.level)?;
                compressor.include_checksum(true)?;
                *cell = Some((self.level, compressor));
            }
            match cell.as_mut() {
                Some((_, compressor)) => compressor.compress(data),
                None => Err(io::Error::other("no zstd context")),
            }
        })
    }

    fn trailer(&self, _: u32, _: u64) -> Vec<u8> {
        Vec::new()
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

    fn run<C: BlockCodec>(
        make: impl Fn(Vec<u8>) -> ParallelWriter<Vec<u8>, C> + Sync,
        data: &[u8],
        write_size: usize,
        threads: usize,
    ) -> Vec<u8> {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap();
        pool.install(|| {
            let mut w = make(Vec::new());
            for piece in data.chunks(write_size.max(1)) {
                w.write_all(piece).unwrap();
            }
            w.finish().unwrap()
        })
    }

    fn lengths<C: BlockCodec>() -> Vec<usize> {
        vec![
            0,
            1,
            1000,
            C::BLOCK,
            C::BLOCK + 1,
            C::BLOCK * C::BATCH + 3,
            C::BLOCK * (C::BATCH + 2) + 77,
        ]
    }

    /// Outside the pool, batches are compressed in the background; the bytes are the same.
    #[test]
    fn background_batches_give_the_same_bytes() {
        let data = sample(Zstd::BLOCK * (Zstd::BATCH * 3) + 12345);
        let mut background = zstd(Vec::new(), 3);
        background.write_all(&data).unwrap();
        assert!(background.finish().unwrap() == run(|w| zstd(w, 3), &data, 1 << 16, 2));
        let mut background = gzip(Vec::new(), 6);
        for piece in data.chunks(77_777) {
            background.write_all(piece).unwrap();
        }
        assert!(background.finish().unwrap() == run(|w| gzip(w, 6), &data, 1 << 16, 1));
    }

    #[test]
    fn gzip_round_trips_whatever_the_threads_and_write_sizes() {
        for len in lengths::<Gzip>() {
            let data = sample(len);
            let one = run(|w| gzip(w, 6), &data, 4096, 1);
            let many = run(|w| gzip(w, 6), &data, 1 << 20, 4);
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
    fn zstd_round_trips_whatever_the_threads_and_write_sizes() {
        for len in lengths::<Zstd>() {
            let data = sample(len);
            let one = run(|w| zstd(w, 3), &data, 4096, 1);
            let many = run(|w| zstd(w, 3), &data, 1 << 20, 4);
            assert!(one == many, "len {len}");
            let decoded = zstd::stream::decode_all(one.as_slice()).unwrap();
            assert!(decoded == data, "len {len}");
        }
    }

    /// The command-line tools read what we write.
    #[test]
    #[cfg_attr(
        not(feature = "tool-tests"),
        ignore = "needs the zstd command: cargo test --features tool-tests (.ci/run)"
    )]
    fn gzip_and_zstd_tools_read_it() {
        let data = sample(Zstd::BLOCK * 2 + 5);
        for (tool, compressed) in [
            ("gzip", run(|w| gzip(w, 6), &data, 9999, 2)),
            ("zstd", run(|w| zstd(w, 3), &data, 9999, 2)),
        ] {
            let mut child = std::process::Command::new(tool)
                .args(["-dc"])
                .stdin(std::process::Stdio::piped())
                .stdout(std::process::Stdio::piped())
                .spawn()
                .unwrap_or_else(|e| panic!("this test needs `{tool}`: {e}"));
            let mut stdin = child.stdin.take().unwrap();
            let writer = std::thread::spawn(move || stdin.write_all(&compressed).unwrap());
            let output = child.wait_with_output().unwrap();
            writer.join().unwrap();
            assert!(output.status.success(), "{tool}");
            assert!(output.stdout == data, "{tool}");
        }
    }
}
