//! The byte plumbing under both readers: hashing the file as it is read, undoing gzip, and a
//! buffered text stream that drops a UTF-8 BOM and knows its offset in the decompressed bytes.

use std::fmt::Write as _;
use std::io::{self, BufRead, BufReader, Cursor, Read};

use sha2::{Digest, Sha256};

use super::Compression;

const UTF8_BOM: [u8; 3] = [0xef, 0xbb, 0xbf];

/// Larger than the default 8 KiB: fewer refills on multi-gigabyte inputs.
const BUFFER_BYTES: usize = 256 * 1024;

/// Passes bytes through while hashing and counting them.
pub(super) struct Hashing<R> {
    inner: R,
    digest: Sha256,
    bytes: u64,
}

impl<R: Read> Hashing<R> {
    pub(super) fn new(inner: R) -> Self {
        Hashing {
            inner,
            digest: Sha256::new(),
            bytes: 0,
        }
    }

    /// Lowercase hex SHA-256 and byte count of everything read so far.
    pub(super) fn finish(self) -> (String, u64) {
        let digest = self.digest.finalize();
        let mut hex = String::with_capacity(digest.len() * 2);
        for byte in digest {
            // Writing into a String cannot fail.
            let _ = write!(hex, "{byte:02x}");
        }
        (hex, self.bytes)
    }
}

impl<R: Read> Read for Hashing<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let read = self.inner.read(buf)?;
        self.digest.update(&buf[..read]);
        self.bytes += read as u64;
        Ok(read)
    }
}

/// The decompressed byte stream. Multi-member gzip files (concatenated `.gz`) read whole.
pub(super) fn decoded<'a, R: Read + Send + 'a>(
    raw: R,
    compression: Compression,
) -> Box<dyn Read + Send + 'a> {
    match compression {
        Compression::None => Box::new(raw),
        Compression::Gzip => Box::new(flate2::read::MultiGzDecoder::new(raw)),
    }
}

/// A buffered decompressed stream, BOM removed, that tracks the offset of its next byte.
pub(super) struct TextStream<'a> {
    reader: BufReader<Box<dyn Read + Send + 'a>>,
    offset: u64,
}

impl<'a> TextStream<'a> {
    pub(super) fn open(mut decoded: Box<dyn Read + Send + 'a>) -> io::Result<Self> {
        let mut prefix = Vec::with_capacity(UTF8_BOM.len());
        (&mut decoded)
            .take(UTF8_BOM.len() as u64)
            .read_to_end(&mut prefix)?;
        if prefix == UTF8_BOM {
            return Ok(TextStream {
                reader: BufReader::with_capacity(BUFFER_BYTES, decoded),
                offset: UTF8_BOM.len() as u64,
            });
        }
        let rejoined: Box<dyn Read + Send + 'a> = Box::new(Cursor::new(prefix).chain(decoded));
        Ok(TextStream {
            reader: BufReader::with_capacity(BUFFER_BYTES, rejoined),
            offset: 0,
        })
    }

    /// Offset, in the decompressed stream, of the next byte [`Self::fill_buf`] returns.
    pub(super) fn offset(&self) -> u64 {
        self.offset
    }

    /// Buffered bytes, refilling when empty; an empty slice means the end of the stream.
    pub(super) fn fill_buf(&mut self) -> io::Result<&[u8]> {
        loop {
            match self.reader.fill_buf() {
                Ok(_) => break,
                Err(error) if error.kind() == io::ErrorKind::Interrupted => continue,
                Err(error) => return Err(error),
            }
        }
        // The buffer is filled (or at its end) now, so this returns it without reading.
        self.reader.fill_buf()
    }

    pub(super) fn consume(&mut self, count: usize) {
        self.reader.consume(count);
        self.offset += count as u64;
    }
}
