//! Hashing while copying: every byte is hashed on its way to disk, so each file
//! is read exactly once (the data is 180 MB; a second pass would double the I/O).

use std::io::{self, Read, Write};

use md5::Md5;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// Size and checksums of one byte stream, hex-encoded (lower case).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Digests {
    pub bytes: u64,
    pub md5: String,
    pub sha256: String,
}

/// MD5 and SHA-256 of a stream, computed together.
///
/// MD5 is what the official archive and the published file lists record; SHA-256 is
/// what we trust. Both are needed, so both are computed in the same pass.
#[derive(Default)]
pub(crate) struct StreamHasher {
    bytes: u64,
    md5: Md5,
    sha256: Sha256,
}

impl StreamHasher {
    pub(crate) fn update(&mut self, data: &[u8]) {
        self.bytes += data.len() as u64;
        self.md5.update(data);
        self.sha256.update(data);
    }

    pub(crate) fn bytes(&self) -> u64 {
        self.bytes
    }

    pub(crate) fn finish(self) -> Digests {
        Digests {
            bytes: self.bytes,
            md5: to_hex(&self.md5.finalize()),
            sha256: to_hex(&self.sha256.finalize()),
        }
    }
}

/// Which side of a copy failed: reading usually means a corrupt source, writing a full disk.
#[derive(Debug)]
pub(crate) enum CopyError {
    Read(io::Error),
    Write(io::Error),
}

/// Copy at most `limit` bytes from `reader` to `writer`, hashing them.
///
/// The limit protects against a decompression bomb posing as a data file: we never
/// write more than the caller is prepared to accept. The returned digests tell how
/// many bytes were actually read, so a caller can detect "more than expected" by
/// passing `expected + 1` as the limit.
pub(crate) fn copy_hashed(
    reader: impl Read,
    writer: &mut impl Write,
    limit: u64,
) -> Result<Digests, CopyError> {
    let mut reader = reader.take(limit);
    let mut hasher = StreamHasher::default();
    // 256 KiB: large enough that syscalls don't dominate, small enough for the stack-free heap buffer.
    let mut buf = vec![0u8; 256 * 1024];
    loop {
        let n = match reader.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(CopyError::Read(e)),
        };
        hasher.update(&buf[..n]);
        writer.write_all(&buf[..n]).map_err(CopyError::Write)?;
    }
    Ok(hasher.finish())
}

/// A reader that hashes everything read through it (used to checksum a local archive
/// in the same pass that decompresses it).
pub(crate) struct HashingReader<R> {
    inner: R,
    hasher: StreamHasher,
}

impl<R: Read> HashingReader<R> {
    pub(crate) fn new(inner: R) -> Self {
        HashingReader {
            inner,
            hasher: StreamHasher::default(),
        }
    }

    /// Read the rest of the stream (gzip may stop before trailing bytes) and return its digests.
    pub(crate) fn finish(mut self) -> io::Result<Digests> {
        io::copy(&mut self, &mut io::sink())?;
        Ok(self.hasher.finish())
    }
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }
}

pub(crate) fn to_hex(bytes: &[u8]) -> String {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(HEX[(b >> 4) as usize] as char);
        s.push(HEX[(b & 0xf) as usize] as char);
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_vectors() {
        let mut out = Vec::new();
        let d = copy_hashed(&b"abc"[..], &mut out, 10).unwrap();
        assert_eq!(out, b"abc");
        assert_eq!(d.bytes, 3);
        assert_eq!(d.md5, "900150983cd24fb0d6963f7d28e17f72");
        assert_eq!(
            d.sha256,
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn limit_stops_copy() {
        let mut out = Vec::new();
        let d = copy_hashed(&b"abcdef"[..], &mut out, 4).unwrap();
        assert_eq!(d.bytes, 4);
        assert_eq!(out, b"abcd");
    }
}
