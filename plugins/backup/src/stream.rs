//! Small stream pieces shared by `create`, `verify` and `restore`: hashing and counting
//! bytes as they pass, and a failure slot for encoders that cannot carry errors.

use runloom_sdk::Error;
use sha2::{Digest, Sha256};
use std::cell::RefCell;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::rc::Rc;

/// Buffer size for copying: large enough that per-call overhead in the sandbox is noise,
/// small enough to be no concern under the memory limit.
pub const CHUNK: usize = 64 * 1024;

/// The first error of a streaming pipeline.
///
/// `ruzstd`'s encoder panics when its source or drain returns an error, and a panic is a trap
/// the operator can only read as a crash. So the stages of `create` never return errors
/// into the encoder: they put the first one here and end the stream, and the caller checks
/// the slot once the encoder returns.
#[derive(Clone, Default)]
pub struct Failure(Rc<RefCell<Option<Error>>>);

impl Failure {
    /// Record `e` unless an earlier failure is already recorded.
    pub fn set(&self, e: Error) {
        self.0.borrow_mut().get_or_insert(e);
    }

    /// Whether a failure has been recorded.
    pub fn is_set(&self) -> bool {
        self.0.borrow().is_some()
    }

    /// The recorded failure, if any.
    pub fn take(&self) -> Option<Error> {
        self.0.borrow_mut().take()
    }
}

/// SHA-256 and byte count of everything written through it.
#[derive(Default)]
pub struct Digester {
    hasher: Sha256,
    bytes: u64,
}

impl Digester {
    /// Account for `data`.
    pub fn update(&mut self, data: &[u8]) {
        self.hasher.update(data);
        self.bytes += data.len() as u64;
    }

    /// Bytes seen so far.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// The hash as lowercase hex, and the byte count.
    pub fn finish(self) -> (String, u64) {
        (hex::encode(self.hasher.finalize()), self.bytes)
    }
}

impl Write for Digester {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.update(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Read `input` to its end, hashing it.
pub fn digest(mut input: impl Read) -> io::Result<(String, u64)> {
    let mut digester = Digester::default();
    copy(&mut input, &mut digester)?;
    Ok(digester.finish())
}

/// `io::copy` with a [`CHUNK`]-sized buffer.
pub fn copy(input: &mut impl Read, output: &mut impl Write) -> io::Result<u64> {
    let mut buf = vec![0u8; CHUNK];
    let mut total = 0u64;
    loop {
        let n = match input.read(&mut buf) {
            Ok(0) => return Ok(total),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        output.write_all(&buf[..n])?;
        total += n as u64;
    }
}

/// A writer into `path` that hashes what it writes and, instead of returning errors, records
/// the first one in a [`Failure`] and swallows the rest of the stream.
pub struct HashingFileWriter<W: Write> {
    inner: W,
    digester: Digester,
    path: PathBuf,
    failure: Failure,
}

impl<W: Write> HashingFileWriter<W> {
    /// Write into `inner`, which writes the file at `path` (named in errors).
    pub fn new(inner: W, path: &Path, failure: Failure) -> Self {
        Self {
            inner,
            digester: Digester::default(),
            path: path.to_path_buf(),
            failure,
        }
    }

    /// The inner writer, flushed, with the hash and size of what was written.
    pub fn finish(mut self) -> Result<(W, String, u64), Error> {
        if let Err(e) = self.inner.flush() {
            return Err(runloom_sdk::fs::io_error(&self.path, "write", e));
        }
        let (sha256, bytes) = self.digester.finish();
        Ok((self.inner, sha256, bytes))
    }
}

impl<W: Write> Write for HashingFileWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if !self.failure.is_set() {
            match self.inner.write_all(buf) {
                Ok(()) => self.digester.update(buf),
                Err(e) => self
                    .failure
                    .set(runloom_sdk::fs::io_error(&self.path, "write", e)),
            }
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digest_is_sha256_hex_with_the_length() {
        let (sha, n) = digest(&b"abc"[..]).unwrap();
        assert_eq!(
            sha,
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_eq!(n, 3);
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
    fn write_errors_are_recorded_not_returned() {
        let failure = Failure::default();
        let mut w = HashingFileWriter::new(Broken, Path::new("/b/x.tar.zst"), failure.clone());
        assert_eq!(w.write(b"abc").unwrap(), 3);
        assert_eq!(w.write(b"def").unwrap(), 3);
        match failure.take() {
            Some(Error::Failed(m)) => assert_eq!(m, "cannot write `/b/x.tar.zst`: disk full"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn the_first_failure_wins() {
        let f = Failure::default();
        f.set(Error::failed("first"));
        f.set(Error::failed("second"));
        assert!(matches!(f.take(), Some(Error::Failed(m)) if m == "first"));
        assert!(!f.is_set());
    }
}
