//! gzip on several cores, the way pigz does it: the input is cut into blocks of
//! [`BLOCK`] bytes, each block is deflated on a worker thread with the last 32 KiB of the
//! block before it as its dictionary, and every block but the last ends with a sync flush
//! (an empty stored block, so the next one starts on a byte boundary). The raw deflate
//! outputs, concatenated in order, are one valid deflate stream; with the CRC-32 and size
//! of the whole input it is one ordinary gzip member that any gzip reader reads.
//!
//! Concatenating independently compressed gzip members would also be valid gzip, but some
//! readers stop after the first member, and each block would lose its 32 KiB of history;
//! sharing the dictionary keeps the ratio within a fraction of a percent of plain gzip.
//!
//! The output depends only on the input and the level: not on the number of threads, the
//! machine, or how the input was split into `write` calls (blocks are cut at fixed
//! offsets, and `flush` never cuts one short). Layer digests must not change with the
//! machine that made them, and with one core the same blocks are compressed inline.

use std::collections::VecDeque;
use std::io::{self, Write};
use std::sync::mpsc::{Receiver, SyncSender, TryRecvError, sync_channel};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use flate2::{Compress, Crc, FlushCompress, Status};

/// Input bytes per block (pigz's default): enough work per block that handing it to a
/// thread costs nothing in comparison, small enough that two cores are kept busy from
/// the first megabyte.
pub(crate) const BLOCK: usize = 128 * 1024;

/// The window of deflate: how much of the previous block is the next one's dictionary.
const DICT: usize = 32 * 1024;

/// Worker threads at most, whatever the core count: beyond this the one thread that
/// hashes and writes the output is the limit.
const MAX_WORKERS: usize = 8;

/// One block to deflate.
struct Job {
    dict: Vec<u8>,
    data: Vec<u8>,
    last: bool,
    reply: SyncSender<io::Result<Vec<u8>>>,
}

/// Worker threads taking jobs from one queue.
struct Pool {
    jobs: Option<SyncSender<Job>>,
    workers: Vec<JoinHandle<()>>,
}

impl Pool {
    /// `n` workers compressing at `level`; `None` when no thread could be started (the
    /// caller then compresses inline, with the same output).
    fn start(n: usize, level: flate2::Compression) -> Option<Pool> {
        let (tx, rx) = sync_channel::<Job>(n * 2);
        let rx = Arc::new(Mutex::new(rx));
        let mut workers = Vec::with_capacity(n);
        for i in 0..n {
            let rx = Arc::clone(&rx);
            let spawned = std::thread::Builder::new()
                .name(format!("gzip-{i}"))
                .spawn(move || work(&rx, level));
            match spawned {
                Ok(h) => workers.push(h),
                Err(e) => {
                    tracing::debug!(error = %e, "cannot start a gzip worker thread");
                    break;
                }
            }
        }
        if workers.is_empty() {
            return None;
        }
        Some(Pool {
            jobs: Some(tx),
            workers,
        })
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        // Closing the queue ends the workers once they are done with their block.
        self.jobs = None;
        for w in self.workers.drain(..) {
            let _ = w.join();
        }
    }
}

fn work(rx: &Mutex<Receiver<Job>>, level: flate2::Compression) {
    loop {
        // The lock is held only to take a job, not while compressing it.
        let job = match rx.lock() {
            Ok(rx) => rx.recv(),
            Err(_) => return,
        };
        let Ok(job) = job else { return };
        let out = deflate_block(level, &job.dict, &job.data, job.last);
        // The encoder may have been dropped meanwhile: nobody wants the block then.
        let _ = job.reply.send(out);
    }
}

/// Deflates one block as raw deflate: after `dict`, ending with a sync flush, or with the
/// final block when `last`.
///
/// A fresh compressor each time: one reused after `reset` was seen to give other bytes
/// for the same block (state left over from the blocks before it), and which worker
/// compressed what before must not show in the output. Setting one up costs a few
/// microseconds against milliseconds of compressing a block.
fn deflate_block(
    level: flate2::Compression,
    dict: &[u8],
    data: &[u8],
    last: bool,
) -> io::Result<Vec<u8>> {
    let mut c = Compress::new(level, false);
    if !dict.is_empty() {
        c.set_dictionary(dict).map_err(io::Error::other)?;
    }
    let flush = if last {
        FlushCompress::Finish
    } else {
        FlushCompress::Sync
    };
    // Room for incompressible data (stored blocks) in one call, most of the time.
    let mut out = Vec::with_capacity(data.len() + data.len() / 64 + 64);
    let mut input = data;
    loop {
        if out.capacity() - out.len() < 64 {
            out.reserve(out.capacity().max(4096));
        }
        let before = c.total_in();
        let status = c
            .compress_vec(input, &mut out, flush)
            .map_err(io::Error::other)?;
        let used = usize::try_from(c.total_in() - before).unwrap_or(input.len());
        input = &input[used.min(input.len())..];
        match status {
            Status::StreamEnd => return Ok(out),
            // A flush is complete once the input is used up and the output was not
            // filled: zlib fills the output entirely when it has more to write.
            Status::Ok | Status::BufError
                if !last && input.is_empty() && out.len() < out.capacity() =>
            {
                return Ok(out);
            }
            Status::Ok | Status::BufError => {}
        }
    }
}

/// A gzip writer compressing on several threads (see the module docs). Call
/// [`GzipEncoder::finish`] to write the last block and the trailer.
pub struct GzipEncoder<W: Write> {
    inner: W,
    level: flate2::Compression,
    /// The block being filled.
    buf: Vec<u8>,
    /// The end of the previous block: the dictionary of the next.
    dict: Vec<u8>,
    crc: Crc,
    /// Blocks handed to the workers, oldest first.
    pending: VecDeque<Receiver<io::Result<Vec<u8>>>>,
    max_pending: usize,
    /// The workers; without them, blocks are compressed on the calling thread.
    pool: Option<Pool>,
    header_written: bool,
}

impl<W: Write> std::fmt::Debug for GzipEncoder<W> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GzipEncoder")
            .field("level", &self.level.level())
            .field(
                "workers",
                &self.pool.as_ref().map_or(0, |p| p.workers.len()),
            )
            .finish_non_exhaustive()
    }
}

impl<W: Write> GzipEncoder<W> {
    /// A writer compressing into `inner` at `level` (0 to 9), on as many threads as the
    /// machine has cores.
    pub fn new(inner: W, level: u32) -> GzipEncoder<W> {
        let cores = std::thread::available_parallelism().map_or(1, usize::from);
        // With one core, threads would only add hand-offs to the same work.
        let workers = if cores > 1 { cores.min(MAX_WORKERS) } else { 0 };
        GzipEncoder::with_workers(inner, level, workers)
    }

    /// [`GzipEncoder::new`] with `workers` threads (0: compress on the calling thread).
    pub(crate) fn with_workers(inner: W, level: u32, workers: usize) -> GzipEncoder<W> {
        let level = flate2::Compression::new(level.min(9));
        let pool = if workers > 0 {
            Pool::start(workers, level)
        } else {
            None
        };
        let max_pending = pool.as_ref().map_or(0, |p| p.workers.len() * 2);
        GzipEncoder {
            inner,
            level,
            buf: Vec::with_capacity(BLOCK),
            dict: Vec::new(),
            crc: Crc::new(),
            pending: VecDeque::new(),
            max_pending,
            pool,
            header_written: false,
        }
    }

    /// The gzip header: no name, no time, "unknown" OS, as flate2's encoder writes it.
    fn header(&self) -> [u8; 10] {
        let level = self.level.level();
        let xfl = if level >= 9 {
            2
        } else if level <= 1 {
            4
        } else {
            0
        };
        [0x1f, 0x8b, 8, 0, 0, 0, 0, 0, xfl, 255]
    }

    fn emit(&mut self, block: &[u8]) -> io::Result<()> {
        if !self.header_written {
            let header = self.header();
            self.inner.write_all(&header)?;
            self.header_written = true;
        }
        self.inner.write_all(block)
    }

    /// Compresses the filled block (`last`: the end of the stream).
    fn submit(&mut self, last: bool) -> io::Result<()> {
        let data = std::mem::replace(&mut self.buf, Vec::with_capacity(BLOCK));
        let next_dict = data[data.len().saturating_sub(DICT)..].to_vec();
        let dict = std::mem::replace(&mut self.dict, next_dict);
        let Some(jobs) = self.pool.as_ref().and_then(|p| p.jobs.as_ref()) else {
            let out = deflate_block(self.level, &dict, &data, last)?;
            return self.emit(&out);
        };
        let (reply, rx) = sync_channel(1);
        jobs.send(Job {
            dict,
            data,
            last,
            reply,
        })
        .map_err(|_| io::Error::other("the gzip worker threads stopped"))?;
        self.pending.push_back(rx);
        // Write what is ready, and wait when enough is in flight to keep every worker
        // busy: memory stays at a few blocks per worker.
        while let Some(rx) = self.pending.front() {
            match rx.try_recv() {
                Ok(out) => {
                    self.pending.pop_front();
                    self.emit(&out?)?;
                }
                Err(TryRecvError::Empty) if self.pending.len() <= self.max_pending => break,
                Err(TryRecvError::Empty) => self.collect_one()?,
                Err(TryRecvError::Disconnected) => return Err(worker_gone()),
            }
        }
        Ok(())
    }

    /// Waits for the oldest block in flight and writes it.
    fn collect_one(&mut self) -> io::Result<()> {
        let Some(rx) = self.pending.pop_front() else {
            return Ok(());
        };
        let out = rx.recv().map_err(|_| worker_gone())??;
        self.emit(&out)
    }

    /// Compresses what is left as the last block, writes the trailer and returns the
    /// inner writer.
    pub fn finish(mut self) -> io::Result<W> {
        self.submit(true)?;
        while !self.pending.is_empty() {
            self.collect_one()?;
        }
        let mut trailer = [0u8; 8];
        trailer[..4].copy_from_slice(&self.crc.sum().to_le_bytes());
        trailer[4..].copy_from_slice(&self.crc.amount().to_le_bytes());
        self.inner.write_all(&trailer)?;
        self.pool = None;
        Ok(self.inner)
    }
}

fn worker_gone() -> io::Error {
    io::Error::other("a gzip worker thread stopped")
}

impl<W: Write> Write for GzipEncoder<W> {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        let n = data.len().min(BLOCK - self.buf.len());
        self.buf.extend_from_slice(&data[..n]);
        self.crc.update(&data[..n]);
        if self.buf.len() == BLOCK {
            self.submit(false)?;
        }
        Ok(n)
    }

    /// Writes out the blocks already compressed or in flight, and flushes the inner
    /// writer. The block being filled is not cut short: that would make the output
    /// depend on when flushes happen.
    fn flush(&mut self) -> io::Result<()> {
        while !self.pending.is_empty() {
            self.collect_one()?;
        }
        self.inner.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    /// Half text-like, half noise, so that blocks compress differently.
    fn sample(len: usize) -> Vec<u8> {
        let mut x: u32 = 0x1234_5678;
        (0..len)
            .map(|i| {
                if (i / 50_000) % 2 == 0 {
                    b"the quick brown fox jumps over the lazy dog "[i % 44]
                } else {
                    x ^= x << 13;
                    x ^= x >> 17;
                    x ^= x << 5;
                    x as u8
                }
            })
            .collect()
    }

    fn encode(data: &[u8], level: u32, workers: usize, step: usize) -> Vec<u8> {
        let mut e = GzipEncoder::with_workers(Vec::new(), level, workers);
        for chunk in data.chunks(step.max(1)) {
            e.write_all(chunk).unwrap();
        }
        e.finish().unwrap()
    }

    /// Decodes as a single gzip member: trailing data would be left unread.
    fn decode_one_member(blob: &[u8]) -> Vec<u8> {
        let mut d = flate2::read::GzDecoder::new(blob);
        let mut out = Vec::new();
        d.read_to_end(&mut out).unwrap();
        out
    }

    #[test]
    fn round_trips_as_one_member_at_every_size() {
        for len in [
            0,
            1,
            DICT,
            BLOCK - 1,
            BLOCK,
            BLOCK + 1,
            3 * BLOCK + 7,
            10 * BLOCK,
        ] {
            let data = sample(len);
            for level in [0, 1, 6, 9] {
                let blob = encode(&data, level, 2, 10_000);
                assert_eq!(decode_one_member(&blob), data, "len {len} level {level}");
                let mut multi = flate2::read::MultiGzDecoder::new(&blob[..]);
                let mut out = Vec::new();
                multi.read_to_end(&mut out).unwrap();
                assert_eq!(out, data);
            }
        }
    }

    #[test]
    fn output_does_not_depend_on_threads_writes_or_flushes() {
        let data = sample(5 * BLOCK + 1234);
        let inline = encode(&data, 6, 0, data.len());
        assert_eq!(encode(&data, 6, 1, 4096), inline);
        assert_eq!(encode(&data, 6, 3, 777), inline);
        let mut e = GzipEncoder::with_workers(Vec::new(), 6, 2);
        for chunk in data.chunks(100_000) {
            e.write_all(chunk).unwrap();
            e.flush().unwrap();
        }
        assert_eq!(e.finish().unwrap(), inline);
    }

    #[test]
    fn header_has_no_time_or_name_and_compresses_like_gzip() {
        let data = sample(4 * BLOCK);
        let blob = encode(&data, 6, 2, BLOCK);
        assert_eq!(blob[..10], [0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 255]);
        assert_eq!(encode(&data, 9, 0, BLOCK)[8], 2);
        assert_eq!(encode(&data, 1, 0, BLOCK)[8], 4);
        let mut plain = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::new(6));
        plain.write_all(&data).unwrap();
        let plain = plain.finish().unwrap();
        // Blocks cost a flush marker and a fresh start each; a few per cent at most.
        assert!(
            blob.len() <= plain.len() + plain.len() / 50 + 64,
            "{} vs {}",
            blob.len(),
            plain.len()
        );
    }

    #[test]
    fn a_failing_writer_is_an_error_not_a_hang() {
        struct Full;
        impl Write for Full {
            fn write(&mut self, _: &[u8]) -> io::Result<usize> {
                Err(io::Error::other("disk full"))
            }
            fn flush(&mut self) -> io::Result<()> {
                Ok(())
            }
        }
        let data = sample(20 * BLOCK);
        let mut e = GzipEncoder::with_workers(Full, 1, 2);
        let err = e.write_all(&data).and_then(|()| e.finish().map(drop));
        assert!(err.unwrap_err().to_string().contains("disk full"));
    }
}
