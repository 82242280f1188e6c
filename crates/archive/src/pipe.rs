//! Moving a layer stream's bytes through a second thread, so a diff or an apply uses two
//! cores as `tar -cz`/`tar -xz` do with their `gzip` child. Applying, that thread reads,
//! decompresses and hashes while the caller's parses the tar and writes files; diffing,
//! it hashes, compresses and writes while the caller's walks the tree and reads files.

use std::io::{self, Read, Write};
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::thread::{Scope, ScopedJoinHandle};

use oci::{Digest, HashingReader};

const CHUNK: usize = 256 * 1024;
/// Chunks in flight: enough to ride out a slow file create, little memory.
const DEPTH: usize = 8;

/// The reading end, handed to the tar parser.
pub(crate) struct PipeReader {
    full: Receiver<io::Result<Vec<u8>>>,
    empty: SyncSender<Vec<u8>>,
    cur: Vec<u8>,
    pos: usize,
    eof: bool,
}

/// The reading thread: returns the digest and size of everything it read.
pub(crate) type Producer<'scope> = ScopedJoinHandle<'scope, (Digest, u64)>;

/// Starts a thread in `scope` reading `src` to its end in chunks, hashing what it reads.
/// Dropping the [`PipeReader`] early stops the thread.
pub(crate) fn spawn<'scope, R: Read + Send + 'scope>(
    scope: &'scope Scope<'scope, '_>,
    src: R,
) -> (PipeReader, Producer<'scope>) {
    let (full_tx, full_rx) = sync_channel::<io::Result<Vec<u8>>>(DEPTH);
    let (empty_tx, empty_rx) = sync_channel::<Vec<u8>>(DEPTH + 2);
    for _ in 0..DEPTH + 2 {
        // Cannot fail: the channel has room for all of them and the receiver is alive.
        let _ = empty_tx.try_send(vec![0; CHUNK]);
    }
    let handle = scope.spawn(move || {
        let mut src = HashingReader::new(src);
        // Ends when the reader is gone (no more empty buffers) or the stream ends.
        while let Ok(mut buf) = empty_rx.recv() {
            buf.resize(CHUNK, 0);
            let (n, err) = read_full(&mut src, &mut buf);
            buf.truncate(n);
            if n > 0 || err.is_none() {
                // Data read before an error still goes first.
                if full_tx.send(Ok(buf)).is_err() || n == 0 {
                    break;
                }
            }
            if let Some(e) = err {
                let _ = full_tx.send(Err(e));
                break;
            }
        }
        let (_, digest, size) = src.finish();
        (digest, size)
    });
    let reader = PipeReader {
        full: full_rx,
        empty: empty_tx,
        cur: Vec::new(),
        pos: 0,
        eof: false,
    };
    (reader, handle)
}

/// Fills `buf` as far as the stream goes; returns how much was read and the error that
/// stopped it, if any.
fn read_full(r: &mut impl Read, buf: &mut [u8]) -> (usize, Option<io::Error>) {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return (n, Some(e)),
        }
    }
    (n, None)
}

impl Read for PipeReader {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        loop {
            if self.pos < self.cur.len() {
                let n = out.len().min(self.cur.len() - self.pos);
                out[..n].copy_from_slice(&self.cur[self.pos..self.pos + n]);
                self.pos += n;
                return Ok(n);
            }
            if self.eof || out.is_empty() {
                return Ok(0);
            }
            let next = match self.full.recv() {
                Ok(Ok(chunk)) => chunk,
                Ok(Err(e)) => return Err(e),
                Err(_) => {
                    return Err(io::Error::new(
                        io::ErrorKind::BrokenPipe,
                        "layer reader thread stopped",
                    ));
                }
            };
            let done = std::mem::replace(&mut self.cur, next);
            // The producer may have stopped; then the buffer is simply dropped.
            let _ = self.empty.try_send(done);
            self.pos = 0;
            self.eof = self.cur.is_empty();
        }
    }
}

/// The writing end: collects bytes into chunks for the writer thread.
pub(crate) struct PipeWriter {
    full: Option<SyncSender<Vec<u8>>>,
    empty: Receiver<Vec<u8>>,
    cur: Vec<u8>,
}

/// The writer thread: returns the sink, or the error that stopped it.
pub(crate) type Consumer<'scope, W> = ScopedJoinHandle<'scope, io::Result<W>>;

/// Starts a thread in `scope` writing everything written to the [`PipeWriter`] to `dst`.
/// Dropping the [`PipeWriter`] (or [`PipeWriter::close`]) ends it; it stops at the first
/// write error, and the [`PipeWriter`] then fails with `BrokenPipe`.
pub(crate) fn spawn_writer<'scope, W: Write + Send + 'scope>(
    scope: &'scope Scope<'scope, '_>,
    mut dst: W,
) -> (PipeWriter, Consumer<'scope, W>) {
    let (full_tx, full_rx) = sync_channel::<Vec<u8>>(DEPTH);
    let (empty_tx, empty_rx) = sync_channel::<Vec<u8>>(DEPTH + 2);
    let handle = scope.spawn(move || {
        while let Ok(chunk) = full_rx.recv() {
            dst.write_all(&chunk)?;
            // The writer may be gone; then the buffer is simply dropped.
            let _ = empty_tx.try_send(chunk);
        }
        Ok(dst)
    });
    let writer = PipeWriter {
        full: Some(full_tx),
        empty: empty_rx,
        cur: Vec::with_capacity(CHUNK),
    };
    (writer, handle)
}

impl PipeWriter {
    fn send(&mut self) -> io::Result<()> {
        if self.cur.is_empty() {
            return Ok(());
        }
        let next = match self.empty.try_recv() {
            Ok(mut b) => {
                b.clear();
                b
            }
            Err(_) => Vec::with_capacity(CHUNK),
        };
        let chunk = std::mem::replace(&mut self.cur, next);
        let stopped = || io::Error::new(io::ErrorKind::BrokenPipe, "layer writer thread stopped");
        match &self.full {
            Some(tx) => tx.send(chunk).map_err(|_| stopped()),
            None => Err(stopped()),
        }
    }

    /// Sends what is buffered and ends the stream.
    pub(crate) fn close(mut self) -> io::Result<()> {
        self.send()?;
        self.full = None;
        Ok(())
    }
}

impl Write for PipeWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = buf.len().min(CHUNK - self.cur.len());
        self.cur.extend_from_slice(&buf[..n]);
        if self.cur.len() == CHUNK {
            self.send()?;
        }
        Ok(n)
    }

    /// Buffered bytes go out when a chunk fills or on [`PipeWriter::close`]; flushing
    /// does not cut chunks short.
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passes_everything_through_and_hashes_it() {
        let data: Vec<u8> = (0..3 * CHUNK + 123).map(|i| (i % 253) as u8).collect();
        let (digest, size, back) = std::thread::scope(|s| {
            let (mut r, h) = spawn(s, &data[..]);
            let mut back = Vec::new();
            let mut small = [0u8; 100];
            let n = r.read(&mut small).unwrap();
            back.extend_from_slice(&small[..n]);
            r.read_to_end(&mut back).unwrap();
            let (d, n) = h.join().unwrap();
            (d, n, back)
        });
        assert_eq!(back, data);
        assert_eq!(digest, Digest::of(&data));
        assert_eq!(size, data.len() as u64);
    }

    #[test]
    fn dropping_the_reader_stops_the_thread() {
        let endless = io::repeat(1);
        std::thread::scope(|s| {
            let (mut r, h) = spawn(s, endless);
            let mut b = [0u8; 10];
            r.read_exact(&mut b).unwrap();
            drop(r);
            h.join().unwrap();
        });
    }

    #[test]
    fn writes_arrive_whole_and_errors_come_back() {
        let data: Vec<u8> = (0..2 * CHUNK + 77).map(|i| (i % 251) as u8).collect();
        let out = std::thread::scope(|s| {
            let (mut w, h) = spawn_writer(s, Vec::new());
            for part in data.chunks(1000) {
                w.write_all(part).unwrap();
            }
            w.close().unwrap();
            h.join().unwrap().unwrap()
        });
        assert_eq!(out, data);

        #[derive(Debug)]
        struct Full;
        impl Write for Full {
            fn write(&mut self, _: &[u8]) -> io::Result<usize> {
                Err(io::Error::other("disk full"))
            }
            fn flush(&mut self) -> io::Result<()> {
                Ok(())
            }
        }
        std::thread::scope(|s| {
            let (mut w, h) = spawn_writer(s, Full);
            let mut failed = None;
            for _ in 0..(DEPTH + 4) * CHUNK / 4096 {
                if let Err(e) = w.write_all(&[0u8; 4096]) {
                    failed = Some(e);
                    break;
                }
            }
            assert_eq!(failed.unwrap().kind(), io::ErrorKind::BrokenPipe);
            drop(w);
            assert_eq!(h.join().unwrap().unwrap_err().to_string(), "disk full");
        });
    }

    #[test]
    fn read_errors_arrive_in_order() {
        struct Failing(usize);
        impl Read for Failing {
            fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
                if self.0 == 0 {
                    return Err(io::Error::other("disk on fire"));
                }
                let n = buf.len().min(self.0);
                buf[..n].fill(7);
                self.0 -= n;
                Ok(n)
            }
        }
        std::thread::scope(|s| {
            let (mut r, _h) = spawn(s, Failing(1000));
            let mut got = Vec::new();
            let err = r.read_to_end(&mut got).unwrap_err();
            assert_eq!(err.to_string(), "disk on fire");
            assert_eq!(got, vec![7u8; 1000]);
        });
    }
}
