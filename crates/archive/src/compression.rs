//! Layer compression: detection by magic bytes, a decompressing reader and compressing
//! writers for gzip and zstd.

use std::fmt;
use std::io::{self, BufRead, Read, Write};

use flate2::bufread::MultiGzDecoder;

use crate::Error;
use crate::pargz::GzipEncoder;

const GZIP_MAGIC: &[u8] = &[0x1f, 0x8b];
const ZSTD_MAGIC: &[u8] = &[0x28, 0xb5, 0x2f, 0xfd];
const XZ_MAGIC: &[u8] = &[0xfd, b'7', b'z', b'X', b'Z', 0x00];
const BZIP2_MAGIC: &[u8] = b"BZh";

/// How a layer blob is compressed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Compression {
    /// A plain tar stream.
    #[default]
    Uncompressed,
    /// gzip (RFC 1952); several concatenated members are read as one stream.
    Gzip,
    /// Zstandard.
    Zstd,
}

impl Compression {
    /// The compression of a stream starting with `prefix`, judged by its magic bytes.
    /// Anything that is neither gzip nor zstd is taken for an uncompressed tar; give at
    /// least 4 bytes (fewer only at the end of a short stream).
    pub fn detect(prefix: &[u8]) -> Compression {
        if prefix.starts_with(GZIP_MAGIC) {
            Compression::Gzip
        } else if prefix.starts_with(ZSTD_MAGIC) {
            Compression::Zstd
        } else {
            Compression::Uncompressed
        }
    }

    /// The OCI media type of a layer with this compression.
    pub fn layer_media_type(self) -> &'static str {
        match self {
            Compression::Uncompressed => oci::media::OCI_LAYER,
            Compression::Gzip => oci::media::OCI_LAYER_GZIP,
            Compression::Zstd => oci::media::OCI_LAYER_ZSTD,
        }
    }

    /// The compression a layer media type declares (OCI or Docker schema 2), if it is a
    /// layer type we know.
    pub fn from_media_type(media_type: &str) -> Option<Compression> {
        use oci::media::*;
        match media_type {
            OCI_LAYER => Some(Compression::Uncompressed),
            OCI_LAYER_GZIP
            | OCI_LAYER_NONDIST_GZIP
            | DOCKER_LAYER_GZIP
            | DOCKER_LAYER_FOREIGN_GZIP => Some(Compression::Gzip),
            OCI_LAYER_ZSTD => Some(Compression::Zstd),
            _ => None,
        }
    }

    /// The levels the codec accepts, as `(min, max)`.
    pub fn level_range(self) -> (i32, i32) {
        match self {
            Compression::Uncompressed => (0, 0),
            Compression::Gzip => (0, 9),
            Compression::Zstd => (1, 22),
        }
    }

    /// The level used when none is given: gzip 6 and zstd 3, the codecs' own defaults
    /// (and what BuildKit uses).
    pub fn default_level(self) -> i32 {
        match self {
            Compression::Uncompressed => 0,
            Compression::Gzip => 6,
            Compression::Zstd => 3,
        }
    }
}

impl fmt::Display for Compression {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Compression::Uncompressed => "uncompressed",
            Compression::Gzip => "gzip",
            Compression::Zstd => "zstd",
        })
    }
}

/// A reader that decompresses a layer stream.
pub enum Decoder<R: BufRead> {
    /// The stream as it is.
    Plain(R),
    /// A gzip stream (all members).
    Gzip(Box<MultiGzDecoder<R>>),
    /// A zstd stream.
    Zstd(Box<zstd::stream::read::Decoder<'static, R>>),
}

impl<R: BufRead> fmt::Debug for Decoder<R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match self {
            Decoder::Plain(_) => Compression::Uncompressed,
            Decoder::Gzip(_) => Compression::Gzip,
            Decoder::Zstd(_) => Compression::Zstd,
        };
        write!(f, "Decoder({kind})")
    }
}

impl<R: BufRead> Decoder<R> {
    /// Peeks at the start of `reader`, detects its compression and returns a reader of
    /// the decompressed stream. xz and bzip2 streams are refused with
    /// [`Error::UnsupportedCompression`] rather than misread as a tar.
    pub fn detect(mut reader: R) -> Result<(Compression, Decoder<R>), Error> {
        let stream_err = |source| Error::Stream {
            after: String::new(),
            source,
        };
        // One fill_buf may return fewer bytes than the magic; BufReader of any sane
        // capacity returns at least 6 at the start of a longer stream.
        let prefix = reader.fill_buf().map_err(stream_err)?;
        if prefix.starts_with(XZ_MAGIC) {
            return Err(Error::UnsupportedCompression("xz"));
        }
        if prefix.starts_with(BZIP2_MAGIC) && prefix.get(3).is_some_and(u8::is_ascii_digit) {
            return Err(Error::UnsupportedCompression("bzip2"));
        }
        let compression = Compression::detect(prefix);
        Ok((
            compression,
            Decoder::new(reader, compression).map_err(stream_err)?,
        ))
    }

    /// A reader decompressing `reader` as `compression`.
    pub fn new(reader: R, compression: Compression) -> io::Result<Decoder<R>> {
        Ok(match compression {
            Compression::Uncompressed => Decoder::Plain(reader),
            Compression::Gzip => Decoder::Gzip(Box::new(MultiGzDecoder::new(reader))),
            Compression::Zstd => {
                Decoder::Zstd(Box::new(zstd::stream::read::Decoder::with_buffer(reader)?))
            }
        })
    }
}

impl<R: BufRead> Read for Decoder<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Decoder::Plain(r) => r.read(buf),
            Decoder::Gzip(r) => r.read(buf),
            Decoder::Zstd(r) => r.read(buf),
        }
    }
}

/// A writer that compresses into an inner writer. Call [`Encoder::finish`] to write the
/// codec's trailer; dropping it loses the end of the stream.
pub enum Encoder<W: Write> {
    /// No compression.
    Plain(W),
    /// gzip, with a fixed header (no name, mtime 0, unknown OS) so the output is
    /// reproducible, compressed on all cores in blocks that share their history (one
    /// gzip member, the same bytes whatever the core count; see [`GzipEncoder`]).
    Gzip(GzipEncoder<W>),
    /// zstd (single-threaded, no checksum, no content size in the frame header).
    Zstd(zstd::stream::write::Encoder<'static, W>),
}

impl<W: Write> fmt::Debug for Encoder<W> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match self {
            Encoder::Plain(_) => Compression::Uncompressed,
            Encoder::Gzip(_) => Compression::Gzip,
            Encoder::Zstd(_) => Compression::Zstd,
        };
        write!(f, "Encoder({kind})")
    }
}

impl<W: Write> Encoder<W> {
    /// A writer compressing into `inner` with `compression` at `level` (the codec's
    /// default when `None`; see [`Compression::level_range`]).
    pub fn new(
        inner: W,
        compression: Compression,
        level: Option<i32>,
    ) -> Result<Encoder<W>, Error> {
        let level = level.unwrap_or_else(|| compression.default_level());
        let (min, max) = compression.level_range();
        if compression != Compression::Uncompressed && !(min..=max).contains(&level) {
            return Err(Error::InvalidLevel {
                compression,
                level,
                min,
                max,
            });
        }
        Ok(match compression {
            Compression::Uncompressed => Encoder::Plain(inner),
            // In range 0..=9, checked above.
            Compression::Gzip => Encoder::Gzip(GzipEncoder::new(inner, level.unsigned_abs())),
            Compression::Zstd => Encoder::Zstd(
                zstd::stream::write::Encoder::new(inner, level).map_err(|source| Error::Write {
                    entry: String::new(),
                    source,
                })?,
            ),
        })
    }

    /// Writes the codec's trailer and returns the inner writer.
    pub fn finish(self) -> io::Result<W> {
        match self {
            Encoder::Plain(w) => Ok(w),
            Encoder::Gzip(w) => w.finish(),
            Encoder::Zstd(w) => w.finish(),
        }
    }
}

impl<W: Write> Write for Encoder<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Encoder::Plain(w) => w.write(buf),
            Encoder::Gzip(w) => w.write(buf),
            Encoder::Zstd(w) => w.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            Encoder::Plain(w) => w.flush(),
            Encoder::Gzip(w) => w.flush(),
            Encoder::Zstd(w) => w.flush(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round_trip(compression: Compression, level: Option<i32>) -> Vec<u8> {
        let data: Vec<u8> = (0..200_000u32).map(|i| (i * 7 % 251) as u8).collect();
        let mut enc = Encoder::new(Vec::new(), compression, level).unwrap();
        enc.write_all(&data).unwrap();
        let blob = enc.finish().unwrap();
        assert_eq!(Compression::detect(&blob), compression);
        let (found, mut dec) = Decoder::detect(&blob[..]).unwrap();
        assert_eq!(found, compression);
        let mut out = Vec::new();
        dec.read_to_end(&mut out).unwrap();
        assert_eq!(out, data);
        blob
    }

    #[test]
    fn every_codec_round_trips_and_is_detected() {
        assert_eq!(round_trip(Compression::Uncompressed, None).len(), 200_000);
        assert!(round_trip(Compression::Gzip, Some(1)).len() < 200_000);
        assert!(round_trip(Compression::Zstd, Some(19)).len() < 200_000);
    }

    #[test]
    fn compression_is_reproducible() {
        assert_eq!(
            round_trip(Compression::Gzip, None),
            round_trip(Compression::Gzip, None)
        );
        assert_eq!(
            round_trip(Compression::Zstd, None),
            round_trip(Compression::Zstd, None)
        );
    }

    #[test]
    fn concatenated_gzip_members_are_one_stream() {
        let mut blob = Vec::new();
        for part in [&b"hello "[..], b"world"] {
            let mut enc = Encoder::new(Vec::new(), Compression::Gzip, None).unwrap();
            enc.write_all(part).unwrap();
            blob.extend(enc.finish().unwrap());
        }
        let (_, mut dec) = Decoder::detect(&blob[..]).unwrap();
        let mut out = String::new();
        dec.read_to_string(&mut out).unwrap();
        assert_eq!(out, "hello world");
    }

    #[test]
    fn bad_levels_and_foreign_codecs_are_refused() {
        let err = Encoder::new(Vec::new(), Compression::Gzip, Some(10)).unwrap_err();
        assert!(err.to_string().contains("gzip"), "{err}");
        assert!(Encoder::new(Vec::new(), Compression::Zstd, Some(23)).is_err());
        let xz = [0xfd, b'7', b'z', b'X', b'Z', 0, 1, 2];
        assert!(matches!(
            Decoder::detect(&xz[..]),
            Err(Error::UnsupportedCompression("xz"))
        ));
        assert!(matches!(
            Decoder::detect(&b"BZh91AY&SY"[..]),
            Err(Error::UnsupportedCompression("bzip2"))
        ));
        // A tar whose first file is named "BZh" is still a tar.
        let (c, _) = Decoder::detect(&b"BZh.txt\0\0\0"[..]).unwrap();
        assert_eq!(c, Compression::Uncompressed);
    }

    #[test]
    fn media_types_map_both_ways() {
        for c in [
            Compression::Uncompressed,
            Compression::Gzip,
            Compression::Zstd,
        ] {
            assert_eq!(Compression::from_media_type(c.layer_media_type()), Some(c));
        }
        assert_eq!(
            Compression::from_media_type(oci::media::DOCKER_LAYER_GZIP),
            Some(Compression::Gzip)
        );
        assert_eq!(Compression::from_media_type(oci::media::OCI_CONFIG), None);
    }

    #[test]
    fn corrupt_gzip_is_an_error_not_a_panic() {
        let mut blob = round_trip(Compression::Gzip, None);
        let n = blob.len();
        blob[n / 2] ^= 0xff;
        blob.truncate(n - 3);
        let (_, mut dec) = Decoder::detect(&blob[..]).unwrap();
        let mut out = Vec::new();
        assert!(dec.read_to_end(&mut out).is_err());
    }
}
