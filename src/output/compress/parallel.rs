//! Parallel compression whose output does not depend on the number of threads.
//!
//! The input is cut into blocks of a fixed size (never by thread count), compressed side by
//! side and written in order, so memory stays bounded and every core works.
//!
//! - gzip: each block is deflated on its own, primed with the 32 KiB before it as a dictionary
//!   so the ratio stays close to a single stream, and ends with a sync flush so the pieces join
//!   into one valid deflate stream; the last block finishes it. This is how pigz works, and like
//!   pigz's the output is one ordinary gzip member.
//! - zstd: each 1 MiB block is one zstd frame (with its checksum); concatenated frames are one
//!   valid zstd stream. zstd's own multithreading needs about 50 MiB per worker, this a few,
//!   and its bytes depend on nothing but the block size.
//!
//! Who does what. The thread writing into the compressor only gathers blocks and writes the
//! compressed ones out; everything that costs CPU runs on the worker pool:
//! - Batches of whole blocks are compressed as pool tasks, several in flight.
//! - With `with_digests`, the SHA-256 of the input and of the output (a layer's diff_id and its
//!   blob digest) are taken on the pool too. A compressed batch joins its stream's *chain* of
//!   two stages, the input's digest then the output's. Each stage takes batches strictly in
//!   order, one at a time, on the pool thread that brought it the batch that was next (a batch
//!   that arrives early waits in the stage, not a thread); the two stages run on different
//!   threads at once, so neither digest waits for the other.
//! - Batches come back to the writing thread in order.
//!
//! Memory: the input bytes in flight are counted across every compressor of the process (several
//! layers may be written at once) against a window of a few MiB per pool thread. A compressor
//! may always have one batch in flight, so none starves whatever the others hold.

use std::cell::RefCell;
use std::collections::{BTreeMap, VecDeque};
use std::io::{self, Write};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{Receiver, Sender, channel};
use std::sync::{Arc, Mutex, MutexGuard};

use flate2::{Compress, FlushCompress, Status};
use rayon::prelude::*;
use sha2::{Digest as _, Sha256};

use crate::digest::{Digest, digest_name};

/// Input buffer bytes in flight (sent to the pool, not yet written) per pool thread: two or
/// three batches each, enough to keep it busy while the writer catches up.
const WINDOW_PER_THREAD: usize = 6 << 20;

/// Input bytes in flight across every compressor of the process.
static BYTES_IN_FLIGHT: AtomicUsize = AtomicUsize::new(0);

/// How many input bytes may be in flight at once: enough to keep every pool thread busy.
fn window() -> usize {
    WINDOW_PER_THREAD * rayon::current_num_threads()
}

/// How one format compresses a block.
pub trait BlockCodec: Clone + Send + Sync + 'static {
    /// Uncompressed bytes per block.
    const BLOCK: usize;
    /// Blocks sent to the pool together (fewer, larger tasks); the output does not depend on it.
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

/// A batch on its way back to the writer: its compressed blocks, and the buffer its input was in
/// (to be filled again).
struct Compressed {
    blocks: io::Result<Vec<Vec<u8>>>,
    data: Vec<u8>,
}

/// The SHA-256 digests (`sha256:<hex>`) and lengths of what went in and what came out.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StreamDigests {
    pub input: Digest,
    pub input_len: u64,
    pub output: Digest,
    pub output_len: u64,
}

/// Puts a stream's compressed batches back in order, hashing them on the way (see the module
/// doc): a batch passes the input's digest, then the output's, then goes to the writer. The
/// two digests are taken by different threads at once, each in order.
struct Chain {
    input: Mutex<Stage>,
    output: Mutex<Stage>,
    done: Sender<Compressed>,
}

/// One digest of the chain.
struct Stage {
    /// The batch to take next.
    next: u64,
    /// A thread is taking batches (and holds the hasher).
    busy: bool,
    ready: BTreeMap<u64, Compressed>,
    /// None: no digest is asked for.
    hasher: Option<Sha256>,
}

impl Stage {
    fn new() -> Mutex<Self> {
        Mutex::new(Stage {
            next: 0,
            busy: false,
            ready: BTreeMap::new(),
            hasher: None,
        })
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Side {
    Input,
    Output,
}

fn lock(stage: &Mutex<Stage>) -> MutexGuard<'_, Stage> {
    // A panic elsewhere cannot leave a stage half-changed: every change is one statement.
    stage.lock().unwrap_or_else(|e| e.into_inner())
}

impl Chain {
    fn new(done: Sender<Compressed>) -> Self {
        Chain {
            input: Stage::new(),
            output: Stage::new(),
            done,
        }
    }

    /// Batch `sequence` is compressed. `inline`: the whole chain runs on this thread (a pool
    /// thread that will wait for the batch); otherwise the output's stage is a pool task.
    fn complete(self: &Arc<Self>, sequence: u64, batch: Compressed, inline: bool) {
        self.advance(Side::Input, sequence, batch, inline);
    }

    /// Adds batch `sequence` to a stage, then takes every batch the stage can take in order and
    /// hands each on, unless another thread is doing that already (it will find the batch).
    fn advance(self: &Arc<Self>, side: Side, sequence: u64, batch: Compressed, inline: bool) {
        let stage = match side {
            Side::Input => &self.input,
            Side::Output => &self.output,
        };
        let mut state = lock(stage);
        state.ready.insert(sequence, batch);
        if state.busy {
            return;
        }
        state.busy = true;
        loop {
            let next = state.next;
            let Some(batch) = state.ready.remove(&next) else {
                state.busy = false;
                return;
            };
            state.next += 1;
            let mut hasher = state.hasher.take();
            drop(state);
            if let (Some(hasher), Ok(blocks)) = (&mut hasher, &batch.blocks) {
                match side {
                    Side::Input => hasher.update(&batch.data),
                    Side::Output => blocks.iter().for_each(|block| hasher.update(block)),
                }
            }
            // Back before the batch is handed on: the last one's digest is then complete.
            lock(stage).hasher = hasher;
            match side {
                Side::Input if inline => self.advance(Side::Output, next, batch, true),
                Side::Input => {
                    let chain = Arc::clone(self);
                    rayon::spawn(move || chain.advance(Side::Output, next, batch, false));
                }
                // The writer may have given up (an error): nothing is waiting then.
                Side::Output => {
                    let _ = self.done.send(batch);
                }
            }
            state = lock(stage);
        }
    }
}

/// Compresses what is written to it on the pool, writing the result to `inner` in order.
pub struct ParallelWriter<W: Write, C: BlockCodec> {
    inner: Option<W>,
    codec: C,
    /// Full blocks waiting to be sent, then the partial one being filled.
    pending: Vec<u8>,
    /// The last HISTORY bytes before `pending`.
    history: Vec<u8>,
    chain: Arc<Chain>,
    done: Receiver<Compressed>,
    /// The buffer bytes of each batch sent and not yet written, oldest first.
    in_flight: VecDeque<usize>,
    /// Batches sent so far: the next one's place in the chain.
    sent: u64,
    /// Input buffers back from written batches: reused, not reallocated, which keeps the
    /// allocator's per-thread arenas from growing.
    spare: Vec<Vec<u8>>,
    crc: crc32fast::Hasher,
    length: u64,
    written: u64,
    header_written: bool,
}

impl<W: Write, C: BlockCodec> ParallelWriter<W, C> {
    /// A batch, the partial block after it, and one write of up to 1 MiB.
    const CAPACITY: usize = C::BLOCK * (C::BATCH + 1) + (1 << 20);

    pub fn new(inner: W, codec: C) -> Self {
        let (done_tx, done) = channel();
        ParallelWriter {
            inner: Some(inner),
            codec,
            pending: Vec::with_capacity(Self::CAPACITY),
            history: Vec::new(),
            chain: Arc::new(Chain::new(done_tx)),
            done,
            in_flight: VecDeque::new(),
            sent: 0,
            spare: Vec::new(),
            crc: crc32fast::Hasher::new(),
            length: 0,
            written: 0,
            header_written: false,
        }
    }

    /// Also takes the digests of the input and the output, on the pool (see `finish_with_digests`).
    pub fn with_digests(self) -> Self {
        let mut output = Sha256::new();
        output.update(self.codec.header());
        lock(&self.chain.input).hasher = Some(Sha256::new());
        lock(&self.chain.output).hasher = Some(output);
        self
    }

    fn inner(&mut self) -> io::Result<&mut W> {
        self.inner
            .as_mut()
            .ok_or_else(|| io::Error::other("the compressor was used after finishing"))
    }

    fn write_out(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.inner()?.write_all(bytes)?;
        self.written += bytes.len() as u64;
        Ok(())
    }

    /// Writes the oldest batch in flight, once it is compressed and hashed.
    fn write_in_flight(&mut self) -> io::Result<()> {
        let Some(bytes) = self.in_flight.pop_front() else {
            return Ok(());
        };
        let received = self.done.recv();
        BYTES_IN_FLIGHT.fetch_sub(bytes, Ordering::Relaxed);
        let Compressed { blocks, mut data } =
            received.map_err(|_| io::Error::other("a compression job stopped"))?;
        data.clear();
        self.spare.push(data);
        for block in blocks? {
            self.write_out(&block)?;
        }
        Ok(())
    }

    /// Sends the first `blocks` whole blocks of `pending` (all of it, finishing the stream,
    /// when `last`) to be compressed.
    fn flush_blocks(&mut self, blocks: usize, last: bool) -> io::Result<()> {
        if !self.header_written {
            let header = self.codec.header();
            self.write_out(&header)?;
            self.header_written = true;
        }
        let data_len = if last {
            self.pending.len()
        } else {
            blocks * C::BLOCK
        };
        // Wait for room in the window; one batch of our own may always be in flight.
        while !self.in_flight.is_empty()
            && BYTES_IN_FLIGHT.load(Ordering::Relaxed) + Self::CAPACITY > window()
        {
            self.write_in_flight()?;
        }
        let mut next = self.spare.pop().unwrap_or_default();
        next.reserve(Self::CAPACITY);
        next.extend_from_slice(&self.pending[data_len..]);
        self.pending.truncate(data_len);
        let data = std::mem::replace(&mut self.pending, next);
        // The window counts the memory held, which is the buffer's, not its content's.
        let held = data.capacity();
        let history = self.history.clone();
        if C::HISTORY > 0 {
            self.history
                .extend_from_slice(&data[data.len().saturating_sub(C::HISTORY)..]);
            let cut = self.history.len().saturating_sub(C::HISTORY);
            self.history.drain(..cut);
        }
        let sequence = self.sent;
        self.sent += 1;
        BYTES_IN_FLIGHT.fetch_add(held, Ordering::Relaxed);
        self.in_flight.push_back(held);
        let chain = Arc::clone(&self.chain);
        let codec = self.codec.clone();
        // On a pool thread, waiting for a pool job could starve the pool: work inline.
        let inline = rayon::current_thread_index().is_some();
        let job = move || {
            let blocks = compress_batch(&codec, &history, &data, last);
            chain.complete(sequence, Compressed { blocks, data }, inline);
        };
        if inline {
            job();
            while !self.in_flight.is_empty() {
                self.write_in_flight()?;
            }
        } else {
            rayon::spawn(job);
        }
        Ok(())
    }

    /// Compresses what is left and writes the trailer; the inner writer and, with
    /// `with_digests`, the digests.
    fn end(mut self) -> io::Result<(W, Option<StreamDigests>)> {
        self.flush_blocks(0, true)?;
        while !self.in_flight.is_empty() {
            self.write_in_flight()?;
        }
        let trailer = self.codec.trailer(self.crc.clone().finalize(), self.length);
        self.write_out(&trailer)?;
        let input = lock(&self.chain.input).hasher.take();
        let output = lock(&self.chain.output).hasher.take();
        let digests = input.zip(output).map(|(input, mut output)| {
            output.update(&trailer);
            StreamDigests {
                input: digest_name(input),
                input_len: self.length,
                output: digest_name(output),
                output_len: self.written,
            }
        });
        let inner = self
            .inner
            .take()
            .ok_or_else(|| io::Error::other("the compressor was finished twice"))?;
        Ok((inner, digests))
    }

    /// Compresses what is left, writes the trailer and returns the inner writer.
    pub fn finish(self) -> io::Result<W> {
        self.end().map(|(inner, _)| inner)
    }

    /// As `finish`, with the digests `with_digests` asked for.
    pub fn finish_with_digests(self) -> io::Result<(W, StreamDigests)> {
        match self.end()? {
            (inner, Some(digests)) => Ok((inner, digests)),
            (_, None) => Err(io::Error::other("the compressor was not asked for digests")),
        }
    }
}

impl<W: Write, C: BlockCodec> Drop for ParallelWriter<W, C> {
    /// Batches still in flight leave the window (an error stopped the stream).
    fn drop(&mut self) {
        let bytes: usize = self.in_flight.drain(..).sum();
        BYTES_IN_FLIGHT.fetch_sub(bytes, Ordering::Relaxed);
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
    const BATCH: usize = 2;
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

    use sha2::Digest;

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

    /// The digests taken on the pool are those of the bytes in and out, whether the chain runs
    /// as pool tasks (a writer off the pool) or inline (a writer on a pool thread).
    #[test]
    fn digests_are_those_of_the_input_and_the_output() {
        let sha = |bytes: &[u8]| format!("sha256:{}", crate::digest::hex(&Sha256::digest(bytes)));
        for len in lengths::<Zstd>().into_iter().chain([Gzip::BLOCK * 40 + 9]) {
            let data = sample(len);
            let check = |out: Vec<u8>, digests: StreamDigests, what: &str| {
                assert_eq!(digests.input, sha(&data), "{what} {len}");
                assert_eq!(digests.input_len, len as u64, "{what} {len}");
                assert_eq!(digests.output, sha(&out), "{what} {len}");
                assert_eq!(digests.output_len, out.len() as u64, "{what} {len}");
            };
            let mut off_pool = gzip(Vec::new(), 6).with_digests();
            off_pool.write_all(&data).unwrap();
            let (out, digests) = off_pool.finish_with_digests().unwrap();
            check(out, digests, "gzip off the pool");
            for threads in [1, 4] {
                let pool = rayon::ThreadPoolBuilder::new()
                    .num_threads(threads)
                    .build()
                    .unwrap();
                let (out, digests) = pool.install(|| {
                    let mut w = zstd(Vec::new(), 3).with_digests();
                    for piece in data.chunks(100_000) {
                        w.write_all(piece).unwrap();
                    }
                    w.finish_with_digests().unwrap()
                });
                check(out, digests, &format!("zstd inline, {threads} threads"));
            }
        }
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
