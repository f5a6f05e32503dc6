//! A writer that hands its bytes to a background thread, so the copy into the kernel (a pipe,
//! the page cache) overlaps with hashing and compressing on the caller's thread. Memory is
//! bounded: a few buffers circulate between the two threads.

use std::io::{self, Write};
use std::sync::mpsc::{Receiver, SyncSender, channel, sync_channel};
use std::thread::JoinHandle;

const BUFFER: usize = 1 << 20;
const IN_FLIGHT: usize = 4;

pub struct ThreadedWriter {
    to_writer: Option<SyncSender<Vec<u8>>>,
    recycled: Receiver<Vec<u8>>,
    current: Vec<u8>,
    writer: Option<JoinHandle<io::Result<()>>>,
}

impl ThreadedWriter {
    /// Starts the output thread (`lg-out`).
    pub fn new<W: Write + Send + 'static>(mut inner: W) -> io::Result<Self> {
        let (to_writer, from_caller) = sync_channel::<Vec<u8>>(IN_FLIGHT);
        let (recycle, recycled) = channel::<Vec<u8>>();
        let writer = std::thread::Builder::new()
            .name("lg-out".to_string())
            .spawn(move || -> io::Result<()> {
                for mut buffer in from_caller {
                    inner.write_all(&buffer)?;
                    buffer.clear();
                    let _ = recycle.send(buffer);
                }
                inner.flush()
            })?;
        Ok(ThreadedWriter {
            to_writer: Some(to_writer),
            recycled,
            current: Vec::with_capacity(BUFFER),
            writer: Some(writer),
        })
    }

    /// Stops the background thread and returns its outcome.
    fn join(&mut self) -> io::Result<()> {
        self.to_writer = None;
        match self.writer.take().map(JoinHandle::join) {
            Some(Ok(result)) => result,
            Some(Err(_)) => Err(io::Error::other("the output thread panicked")),
            None => Ok(()),
        }
    }

    fn send_current(&mut self) -> io::Result<()> {
        let next = self
            .recycled
            .try_recv()
            .unwrap_or_else(|_| Vec::with_capacity(BUFFER));
        let full = std::mem::replace(&mut self.current, next);
        let sent = match &self.to_writer {
            Some(sender) => sender.send(full).is_ok(),
            None => false,
        };
        if sent {
            return Ok(());
        }
        // The thread stopped: its error says why.
        Err(self
            .join()
            .err()
            .unwrap_or_else(|| io::Error::other("the output thread stopped")))
    }

    /// Writes out everything and waits for the background thread.
    pub fn finish(mut self) -> io::Result<()> {
        if !self.current.is_empty() {
            self.send_current()?;
        }
        self.join()
    }
}

impl Write for ThreadedWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let room = BUFFER - self.current.len();
        let n = buf.len().min(room);
        self.current.extend_from_slice(&buf[..n]);
        if self.current.len() == BUFFER {
            self.send_current()?;
        }
        Ok(n)
    }

    /// Buffers are sent when full; `finish` sends the rest.
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Drop for ThreadedWriter {
    fn drop(&mut self) {
        let _ = self.join();
    }
}

/// Makes a pipe on stdout hold 1 MiB instead of 64 KiB, so the reader on the other end wakes
/// up less often. Harmless when stdout is not a pipe.
pub fn enlarge_stdout_pipe() {
    // SAFETY: fcntl on fd 1 with an integer argument; failure (not a pipe, no permission to
    // grow it) is fine and ignored.
    unsafe {
        libc::fcntl(1, libc::F_SETPIPE_SZ, BUFFER as libc::c_int);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    #[derive(Clone)]
    struct Shared(Arc<Mutex<Vec<u8>>>);
    impl Write for Shared {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    struct Broken;
    impl Write for Broken {
        fn write(&mut self, _: &[u8]) -> io::Result<usize> {
            Err(io::Error::other("disk full"))
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn passes_every_byte_in_order() {
        let sink = Shared(Arc::new(Mutex::new(Vec::new())));
        let mut writer = ThreadedWriter::new(sink.clone()).unwrap();
        let data: Vec<u8> = (0..5_000_000u32).map(|i| (i % 251) as u8).collect();
        for piece in data.chunks(77_777) {
            writer.write_all(piece).unwrap();
        }
        writer.finish().unwrap();
        assert!(*sink.0.lock().unwrap() == data);
    }

    #[test]
    fn reports_the_inner_error() {
        let mut writer = ThreadedWriter::new(Broken).unwrap();
        let data = vec![0u8; 10 * BUFFER];
        let err = writer
            .write_all(&data)
            .err()
            .or_else(|| writer.finish().err())
            .unwrap();
        assert_eq!(err.to_string(), "disk full");
    }
}
