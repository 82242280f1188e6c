//! The output side of a diff: tar entries written through a hasher of the uncompressed
//! stream (the diffID), the compressor, and a hasher of the compressed blob, in one pass.

use std::io::{self, BufWriter, Read, Write};

use oci::{Digest, HashingWriter};

use crate::header::{self, BLOCK, Entry, Kind};
use crate::{Compression, Encoder, Error};

/// Digests and sizes of a written layer.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct DiffStats {
    /// The compression of the blob written.
    pub compression: Compression,
    /// sha256 of the uncompressed tar stream.
    pub diff_id: Digest,
    /// Size of the uncompressed tar stream.
    pub uncompressed_size: u64,
    /// sha256 of the blob as written (equal to `diff_id` when uncompressed).
    pub digest: Digest,
    /// Size of the blob as written.
    pub size: u64,
    /// Tar entries written (whiteouts and opaque markers included).
    pub entries: u64,
}

/// Where the tar stream goes: a hasher of the uncompressed bytes (the diffID), the
/// compressor, and a hasher of the blob, in one pass.
pub(crate) enum Output<W: Write> {
    Plain(HashingWriter<BufWriter<W>>),
    Compressed(Box<HashingWriter<Encoder<HashingWriter<BufWriter<W>>>>>),
}

/// Digests and sizes of both sides of an [`Output`].
pub(crate) struct Digests {
    pub diff_id: Digest,
    pub uncompressed_size: u64,
    pub digest: Digest,
    pub size: u64,
}

const OUT_BUFFER: usize = 256 * 1024;

impl<W: Write> Output<W> {
    pub(crate) fn new(
        w: W,
        compression: Compression,
        level: Option<i32>,
    ) -> Result<Output<W>, Error> {
        let sink = BufWriter::with_capacity(OUT_BUFFER, w);
        Ok(match compression {
            Compression::Uncompressed => Output::Plain(HashingWriter::new(sink)),
            _ => Output::Compressed(Box::new(HashingWriter::new(Encoder::new(
                HashingWriter::new(sink),
                compression,
                level,
            )?))),
        })
    }

    /// Writes the codec trailer, flushes, and returns the digests.
    pub(crate) fn finish(self) -> io::Result<Digests> {
        let (diff_id, uncompressed_size, digest, size, mut sink) = match self {
            Output::Plain(w) => {
                let (sink, d, n) = w.finish();
                (d, n, d, n, sink)
            }
            Output::Compressed(w) => {
                let (enc, diff_id, usize_) = w.finish();
                let (sink, d, n) = enc.finish()?.finish();
                (diff_id, usize_, d, n, sink)
            }
        };
        sink.flush()?;
        sink.into_inner()
            .map_err(io::IntoInnerError::into_error)?
            .flush()?;
        Ok(Digests {
            diff_id,
            uncompressed_size,
            digest,
            size,
        })
    }
}

impl<W: Write> Write for Output<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Output::Plain(w) => w.write(buf),
            Output::Compressed(w) => w.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            Output::Plain(w) => w.flush(),
            Output::Compressed(w) => w.flush(),
        }
    }
}

/// Writes tar entries to a byte sink.
pub(crate) struct TarWriter<O: Write> {
    out: O,
    header: Vec<u8>,
    buf: Vec<u8>,
    entries: u64,
}

impl<O: Write> TarWriter<O> {
    pub(crate) fn new(out: O) -> TarWriter<O> {
        TarWriter {
            out,
            header: Vec::with_capacity(4 * BLOCK),
            buf: vec![0; OUT_BUFFER],
            entries: 0,
        }
    }

    /// Writes `e`, then for a file exactly `size` bytes of `data`: a file that shrank
    /// while being read is an error rather than a corrupt tar, and one that grew is cut
    /// at the size its header promised.
    pub(crate) fn append(&mut self, e: &Entry<'_>, data: Option<&mut dyn Read>) -> io::Result<()> {
        header::encode(e, &mut self.header);
        self.out.write_all(&self.header)?;
        self.entries += 1;
        let Kind::File { size } = e.kind else {
            return Ok(());
        };
        let mut left = size;
        if let Some(r) = data {
            while left > 0 {
                let want = self
                    .buf
                    .len()
                    .min(usize::try_from(left).unwrap_or(usize::MAX));
                let n = match r.read(&mut self.buf[..want]) {
                    Ok(0) => break,
                    Ok(n) => n,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(e) => return Err(e),
                };
                self.out.write_all(&self.buf[..n])?;
                left -= n as u64;
            }
        }
        if left > 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!("file shrank while being archived ({left} of {size} bytes missing)"),
            ));
        }
        let pad = (BLOCK - (size % BLOCK as u64) as usize) % BLOCK;
        self.out.write_all(&[0u8; BLOCK][..pad])
    }

    /// Writes the end-of-archive blocks; returns the sink and the number of entries.
    pub(crate) fn finish(mut self) -> io::Result<(O, u64)> {
        self.out.write_all(&[0u8; 2 * BLOCK])?;
        Ok((self.out, self.entries))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Decoder;

    fn write(compression: Compression, data: &[u8]) -> (Digests, Vec<u8>) {
        let mut blob = Vec::new();
        let mut w = TarWriter::new(Output::new(&mut blob, compression, None).unwrap());
        let e = Entry {
            name: b"f",
            kind: Kind::File {
                size: data.len() as u64,
            },
            mode: 0o644,
            uid: 0,
            gid: 0,
            mtime: 0,
            xattrs: &[],
        };
        w.append(&e, Some(&mut &data[..])).unwrap();
        let (out, entries) = w.finish().unwrap();
        assert_eq!(entries, 1);
        (out.finish().unwrap(), blob)
    }

    #[test]
    fn digests_cover_both_sides() {
        let data = b"some content".repeat(100);
        let (plain, tar) = write(Compression::Uncompressed, &data);
        assert_eq!(plain.diff_id, Digest::of(&tar));
        assert_eq!(plain.digest, plain.diff_id);
        assert_eq!(tar.len() % BLOCK, 0);
        for c in [Compression::Gzip, Compression::Zstd] {
            let (stats, blob) = write(c, &data);
            assert_eq!(stats.diff_id, plain.diff_id, "{c}");
            assert_eq!(stats.uncompressed_size, tar.len() as u64);
            assert_eq!(stats.digest, Digest::of(&blob));
            assert_eq!(stats.size, blob.len() as u64);
            let (_, mut dec) = Decoder::detect(&blob[..]).unwrap();
            let mut back = Vec::new();
            dec.read_to_end(&mut back).unwrap();
            assert_eq!(back, tar);
        }
    }

    #[test]
    fn short_data_is_an_error() {
        let mut w = TarWriter::new(Vec::new());
        let e = Entry {
            name: b"f",
            kind: Kind::File { size: 10 },
            mode: 0o644,
            uid: 0,
            gid: 0,
            mtime: 0,
            xattrs: &[],
        };
        let err = w.append(&e, Some(&mut &b"abc"[..])).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::UnexpectedEof);
    }
}
