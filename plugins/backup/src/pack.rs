//! `create`: a directory into a compressed tar archive and its manifest, streaming.
//!
//! The tar stream is produced on demand by [`TarStream`], a `Read` that walks the source
//! directory and yields headers and file contents as the compressor asks for them. So memory
//! stays flat whatever the size of the tree (a few hundred KiB of buffers, plus the names in
//! the directories along the current path), and both compressors can pull from one source:
//! `ruzstd`'s encoder only reads, it cannot be written to.
//!
//! Invariant: an archive appears under its final name only once it and its manifest are
//! complete and synced; the manifest is renamed into place first, so every visible archive
//! has its manifest.

use crate::manifest::{self, Entry, Header, Trailer};
use crate::name::{ArchiveName, Compression, rfc3339};
use crate::stream::{Digester, Failure, HashingFileWriter};
use chrono::{DateTime, Utc};
use runloom_sdk::Error;
use runloom_sdk::fs::io_error;
use std::fs::{self, File, Metadata};
use std::io::{self, BufWriter, Read};
use std::path::{Component, Path, PathBuf};
use std::time::UNIX_EPOCH;

/// Mode stored for files: WASI does not expose Unix permission bits.
const FILE_MODE: u32 = 0o644;
/// Mode stored for read-only files.
const READONLY_FILE_MODE: u32 = 0o444;
/// Mode stored for directories.
const DIR_MODE: u32 = 0o755;
/// At most this many warnings are returned; the rest are counted.
const MAX_WARNINGS: usize = 20;

/// What `create` is asked to do.
pub struct Request<'a> {
    /// The directory to archive.
    pub source: &'a Path,
    /// The directory the archive and manifest go into (created if missing).
    pub destination: &'a Path,
    /// The backup set name.
    pub name: &'a str,
    /// The compression.
    pub compression: Compression,
    /// The archive's timestamp.
    pub started: DateTime<Utc>,
}

/// What `create` did.
#[derive(Debug, Clone)]
pub struct Created {
    /// The archive's path.
    pub archive: PathBuf,
    /// The manifest's path.
    pub manifest: PathBuf,
    /// SHA-256 of the archive file.
    pub sha256: String,
    /// Bytes of file content read.
    pub bytes_in: u64,
    /// Size of the archive file.
    pub bytes_out: u64,
    /// Regular files archived.
    pub files: u64,
    /// Directories archived.
    pub directories: u64,
    /// Symbolic links archived (as links).
    pub symlinks: u64,
    /// Entries left out (sockets, FIFOs, devices, files that vanished).
    pub skipped: u64,
    /// Things an operator should know (at most [`MAX_WARNINGS`], then a count).
    pub warnings: Vec<String>,
}

/// Archive `request.source` into `request.destination`.
pub fn create(request: &Request<'_>) -> Result<Created, Error> {
    let source = request.source;
    let meta = fs::metadata(source).map_err(|e| match e.kind() {
        io::ErrorKind::NotFound => {
            Error::failed(format!("source `{}` does not exist", source.display()))
        }
        _ => io_error(source, "read", e),
    })?;
    if !meta.is_dir() {
        return Err(Error::failed(format!(
            "source `{}` is not a directory",
            source.display()
        )));
    }
    let excluded = excluded_subtree(source, request.destination)?;
    fs::create_dir_all(request.destination)
        .map_err(|e| io_error(request.destination, "write", e))?;

    let name = ArchiveName {
        name: request.name.to_string(),
        timestamp: request.started,
        compression: request.compression,
    };
    let archive = request.destination.join(name.file_name());
    let manifest = request.destination.join(name.manifest_file_name());
    if archive.exists() {
        return Err(Error::retryable(format!(
            "`{}` already exists (one archive per name and second)",
            archive.display()
        )));
    }
    let temp_archive = request
        .destination
        .join(format!(".{}.partial", name.file_name()));
    let temp_manifest = request
        .destination
        .join(format!(".{}.partial", name.manifest_file_name()));

    let result = write_both(request, &name, excluded, &temp_archive, &temp_manifest);
    let done = result.and_then(|created| {
        // Manifest first: an archive is never visible without its manifest.
        rename(&temp_manifest, &manifest)?;
        rename(&temp_archive, &archive)?;
        Ok(created)
    });
    match done {
        Ok(mut created) => {
            created.archive = archive;
            created.manifest = manifest;
            Ok(created)
        }
        Err(e) => {
            // Best effort: the error being returned is the one that matters.
            let _ = fs::remove_file(&temp_archive);
            let _ = fs::remove_file(&temp_manifest);
            Err(e)
        }
    }
}

fn rename(from: &Path, to: &Path) -> Result<(), Error> {
    fs::rename(from, to).map_err(|e| io_error(to, "write", e))
}

/// The part of the source to leave out: the destination, when it lies inside the source, so
/// a backup never contains itself or earlier backups.
fn excluded_subtree(source: &Path, destination: &Path) -> Result<Option<PathBuf>, Error> {
    let source = runloom_sdk::fs::normalize(source);
    let destination = runloom_sdk::fs::normalize(destination);
    match destination.strip_prefix(&source) {
        Ok(rel) if rel.as_os_str().is_empty() => Err(Error::invalid_input(format!(
            "`destination` `{}` is the source directory itself",
            destination.display()
        ))),
        Ok(rel) => Ok(Some(rel.to_path_buf())),
        Err(_) => Ok(None),
    }
}

/// Write the archive and the manifest under their temporary names.
fn write_both(
    request: &Request<'_>,
    name: &ArchiveName,
    excluded: Option<PathBuf>,
    temp_archive: &Path,
    temp_manifest: &Path,
) -> Result<Created, Error> {
    let failure = Failure::default();
    let manifest_file =
        File::create(temp_manifest).map_err(|e| io_error(temp_manifest, "write", e))?;
    let header = Header {
        format: manifest::FORMAT.into(),
        version: manifest::VERSION,
        archive: name.file_name(),
        compression: name.compression,
        created: rfc3339(name.timestamp),
        source: request.source.display().to_string(),
    };
    let manifest = manifest::Writer::new(BufWriter::new(manifest_file), &header)
        .map_err(|e| io_error(temp_manifest, "write", e))?;
    let archive_file =
        File::create(temp_archive).map_err(|e| io_error(temp_archive, "write", e))?;
    let drain = HashingFileWriter::new(
        BufWriter::with_capacity(crate::stream::CHUNK, archive_file),
        temp_archive,
        failure.clone(),
    );
    let walker = Walker::new(request.source, excluded)?;
    let tar = TarStream::new(walker, manifest, temp_manifest, failure.clone());

    let (tar, drain) = match request.compression {
        Compression::Zstd => {
            let mut encoder =
                ruzstd::encoding::FrameCompressor::new(ruzstd::encoding::CompressionLevel::Fastest);
            encoder.set_source(tar);
            encoder.set_drain(drain);
            encoder.compress();
            match (encoder.take_source(), encoder.take_drain()) {
                (Some(tar), Some(drain)) => (tar, drain),
                _ => return Err(Error::failed("zstd encoder lost its streams")),
            }
        }
        Compression::Gzip => {
            let mut encoder = flate2::read::GzEncoder::new(tar, flate2::Compression::default());
            let mut drain = drain;
            // The drain never fails (it records into `failure`), so an error here is the
            // encoder's own; `TarStream` never returns errors either.
            if let Err(e) = crate::stream::copy(&mut encoder, &mut drain) {
                failure.set(Error::failed(format!("gzip: {e}")));
            }
            (encoder.into_inner(), drain)
        }
    };
    if let Some(e) = failure.take() {
        return Err(e);
    }
    let (buffered, sha256, bytes_out) = drain.finish()?;
    let archive_file = buffered
        .into_inner()
        .map_err(|e| io_error(temp_archive, "write", e.into_error()))?;
    archive_file
        .sync_all()
        .map_err(|e| io_error(temp_archive, "write", e))?;

    let stats = tar.stats;
    let trailer = Trailer {
        archive_sha256: sha256.clone(),
        archive_bytes: bytes_out,
        entries: stats.files + stats.directories + stats.symlinks,
        bytes_in: stats.bytes_in,
    };
    let manifest_file = tar
        .manifest
        .finish(&trailer)
        .map_err(|e| io_error(temp_manifest, "write", e))?
        .into_inner()
        .map_err(|e| io_error(temp_manifest, "write", e.into_error()))?;
    manifest_file
        .sync_all()
        .map_err(|e| io_error(temp_manifest, "write", e))?;

    let mut warnings = stats.warnings;
    if stats.more_warnings > 0 {
        warnings.push(format!("… and {} more warnings", stats.more_warnings));
    }
    Ok(Created {
        archive: PathBuf::new(),
        manifest: PathBuf::new(),
        sha256,
        bytes_in: stats.bytes_in,
        bytes_out,
        files: stats.files,
        directories: stats.directories,
        symlinks: stats.symlinks,
        skipped: stats.skipped,
        warnings,
    })
}

/// Depth-first walk of a directory in sorted order, not following symbolic links.
///
/// Sorted depth-first order is also the component-wise order of the paths, which `verify`
/// relies on to compare an archive with its manifest in one pass.
struct Walker {
    root: PathBuf,
    excluded: Option<PathBuf>,
    /// For each directory being walked, its remaining children (relative paths).
    stack: Vec<std::vec::IntoIter<PathBuf>>,
}

impl Walker {
    fn new(root: &Path, excluded: Option<PathBuf>) -> Result<Self, Error> {
        let mut walker = Self {
            root: root.to_path_buf(),
            excluded,
            stack: Vec::new(),
        };
        let top = walker.children(Path::new(""))?;
        walker.stack.push(top);
        Ok(walker)
    }

    fn children(&self, rel: &Path) -> Result<std::vec::IntoIter<PathBuf>, Error> {
        let dir = self.root.join(rel);
        let mut names = Vec::new();
        for entry in fs::read_dir(&dir).map_err(|e| io_error(&dir, "read", e))? {
            let entry = entry.map_err(|e| io_error(&dir, "read", e))?;
            names.push(entry.file_name());
        }
        names.sort();
        let children: Vec<PathBuf> = names.into_iter().map(|n| rel.join(n)).collect();
        Ok(children.into_iter())
    }

    /// The next entry, with its metadata; `Ok(None)` at the end. Entries that vanish between
    /// listing and looking are passed over: live directories change while they are backed up.
    fn next(&mut self) -> Result<Option<(PathBuf, Metadata)>, Error> {
        loop {
            let Some(level) = self.stack.last_mut() else {
                return Ok(None);
            };
            let Some(rel) = level.next() else {
                self.stack.pop();
                continue;
            };
            if self.excluded.as_deref() == Some(rel.as_path()) {
                continue;
            }
            let path = self.root.join(&rel);
            let meta = match fs::symlink_metadata(&path) {
                Ok(meta) => meta,
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(io_error(&path, "read", e)),
            };
            if meta.is_dir() {
                let children = self.children(&rel)?;
                self.stack.push(children);
            }
            return Ok(Some((rel, meta)));
        }
    }
}

#[derive(Default)]
struct Stats {
    files: u64,
    directories: u64,
    symlinks: u64,
    skipped: u64,
    bytes_in: u64,
    warnings: Vec<String>,
    more_warnings: u64,
}

impl Stats {
    fn warn(&mut self, warning: String) {
        if self.warnings.len() < MAX_WARNINGS {
            self.warnings.push(warning);
        } else {
            self.more_warnings += 1;
        }
    }
}

/// The file whose content is being streamed.
struct Body {
    rel: PathBuf,
    file: File,
    size: u64,
    mode: u32,
    remaining: u64,
    digester: Digester,
    shrank: bool,
}

/// The tar stream of a directory, produced as it is read, writing the manifest as it goes.
///
/// Never returns an error: on failure it records it in the [`Failure`] slot and ends the
/// stream (see [`Failure`] for why).
struct TarStream {
    walker: Walker,
    /// Serialises headers, including GNU long-name records, into its `Vec`.
    headers: tar::Builder<Vec<u8>>,
    pending: Vec<u8>,
    pending_at: usize,
    body: Option<Body>,
    manifest: manifest::Writer<BufWriter<File>>,
    manifest_path: PathBuf,
    failure: Failure,
    stats: Stats,
    ended: bool,
}

impl TarStream {
    fn new(
        walker: Walker,
        manifest: manifest::Writer<BufWriter<File>>,
        manifest_path: &Path,
        failure: Failure,
    ) -> Self {
        Self {
            walker,
            headers: tar::Builder::new(Vec::new()),
            pending: Vec::new(),
            pending_at: 0,
            body: None,
            manifest,
            manifest_path: manifest_path.to_path_buf(),
            failure,
            stats: Stats::default(),
            ended: false,
        }
    }

    fn record(&mut self, entry: &Entry) -> Result<(), Error> {
        self.manifest
            .entry(entry)
            .map_err(|e| io_error(&self.manifest_path, "write", e))
    }

    /// Queue the header of the next entry (and open its file). `Ok(false)` at the end.
    fn next_entry(&mut self) -> Result<bool, Error> {
        let Some((rel, meta)) = self.walker.next()? else {
            return Ok(false);
        };
        let path_text = path_text(&rel);
        let full = self.walker.root.join(&rel);
        let mut header = tar::Header::new_gnu();
        header.set_mtime(mtime(&meta));
        header.set_uid(0);
        header.set_gid(0);
        header.set_size(0);
        let header_error =
            |e: io::Error| Error::failed(format!("cannot archive `{}`: {e}", full.display()));
        if meta.is_dir() {
            header.set_entry_type(tar::EntryType::Directory);
            header.set_mode(DIR_MODE);
            self.headers
                .append_data(&mut header, &rel, io::empty())
                .map_err(header_error)?;
            self.record(&Entry::Dir {
                path: path_text,
                mode: manifest::mode_string(DIR_MODE),
            })?;
            self.stats.directories += 1;
        } else if meta.is_file() {
            let file = match File::open(&full) {
                Ok(file) => file,
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    self.stats.skipped += 1;
                    return Ok(true);
                }
                Err(e) => return Err(io_error(&full, "read", e)),
            };
            let mode = if meta.permissions().readonly() {
                READONLY_FILE_MODE
            } else {
                FILE_MODE
            };
            header.set_entry_type(tar::EntryType::Regular);
            header.set_mode(mode);
            header.set_size(meta.len());
            self.headers
                .append_data(&mut header, &rel, io::empty())
                .map_err(header_error)?;
            self.body = Some(Body {
                rel,
                file,
                size: meta.len(),
                mode,
                remaining: meta.len(),
                digester: Digester::default(),
                shrank: false,
            });
            self.stats.files += 1;
        } else if meta.is_symlink() {
            let target = fs::read_link(&full).map_err(|e| io_error(&full, "read", e))?;
            if target.is_absolute() {
                self.stats.warn(format!(
                    "`{path_text}` links to the absolute path `{}`; restore refuses such links",
                    target.display()
                ));
            }
            header.set_entry_type(tar::EntryType::Symlink);
            header.set_mode(0o777);
            self.headers
                .append_link(&mut header, &rel, &target)
                .map_err(header_error)?;
            self.record(&Entry::Symlink {
                path: path_text,
                target: target.to_string_lossy().into_owned(),
            })?;
            self.stats.symlinks += 1;
        } else {
            self.stats.skipped += 1;
            self.stats.warn(format!(
                "`{path_text}` is not a file, directory or link; skipped"
            ));
            return Ok(true);
        }
        self.pending = std::mem::take(self.headers.get_mut());
        self.pending_at = 0;
        Ok(true)
    }

    /// The file's content is all out: record it and queue the padding to a 512-byte block.
    fn finish_body(&mut self, body: Body) -> Result<(), Error> {
        let Body {
            rel,
            size,
            mode,
            digester,
            shrank,
            ..
        } = body;
        let path = path_text(&rel);
        if shrank {
            self.stats.warn(format!(
                "`{path}` shrank while it was archived; the missing end is stored as zeros"
            ));
        }
        let (sha256, _) = digester.finish();
        self.record(&Entry::File {
            path,
            size,
            mode: manifest::mode_string(mode),
            sha256,
        })?;
        let partial = (size % 512) as usize;
        self.pending = if partial == 0 {
            Vec::new()
        } else {
            vec![0; 512 - partial]
        };
        self.pending_at = 0;
        Ok(())
    }

    fn read_body(&mut self, buf: &mut [u8]) -> Result<Option<usize>, Error> {
        let Some(body) = self.body.as_mut() else {
            return Ok(None);
        };
        if body.remaining == 0 {
            if let Some(body) = self.body.take() {
                self.finish_body(body)?;
            }
            return Ok(Some(0));
        }
        let want = usize::try_from(body.remaining)
            .unwrap_or(usize::MAX)
            .min(buf.len());
        let n = loop {
            match body.file.read(&mut buf[..want]) {
                // The header promised `size` bytes; pad so the archive stays well-formed.
                Ok(0) => {
                    buf[..want].fill(0);
                    body.shrank = true;
                    break want;
                }
                Ok(n) => break n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    let full = self.walker.root.join(&body.rel);
                    return Err(io_error(&full, "read", e));
                }
            }
        };
        body.digester.update(&buf[..n]);
        body.remaining -= n as u64;
        self.stats.bytes_in += n as u64;
        Ok(Some(n))
    }

    fn produce(&mut self, buf: &mut [u8]) -> Result<usize, Error> {
        loop {
            if self.pending_at < self.pending.len() {
                let n = (self.pending.len() - self.pending_at).min(buf.len());
                buf[..n].copy_from_slice(&self.pending[self.pending_at..self.pending_at + n]);
                self.pending_at += n;
                return Ok(n);
            }
            match self.read_body(buf)? {
                Some(0) => continue,
                Some(n) => return Ok(n),
                None => {}
            }
            if self.ended {
                return Ok(0);
            }
            if !self.next_entry()? {
                // End of archive: two zero blocks.
                self.pending = vec![0; 1024];
                self.pending_at = 0;
                self.ended = true;
            }
        }
    }
}

impl Read for TarStream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.failure.is_set() || buf.is_empty() {
            return Ok(0);
        }
        match self.produce(buf) {
            Ok(n) => Ok(n),
            Err(e) => {
                self.failure.set(e);
                Ok(0)
            }
        }
    }
}

/// A path as the manifest writes it: `/`-separated, no `.` parts or trailing `/`. Hostile
/// archives may hold absolute paths or `..`; those are kept, to be reported.
pub fn path_text(path: &Path) -> String {
    let parts: Vec<_> = path
        .components()
        .filter_map(|c| match c {
            Component::RootDir | Component::CurDir => None,
            other => Some(other.as_os_str().to_string_lossy()),
        })
        .collect();
    let joined = parts.join("/");
    if path.has_root() {
        format!("/{joined}")
    } else {
        joined
    }
}

fn mtime(meta: &Metadata) -> u64 {
    meta.modified()
        .ok()
        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_secs())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_destination_inside_the_source_is_left_out() {
        assert_eq!(
            excluded_subtree(Path::new("/data"), Path::new("/data/backups")).unwrap(),
            Some(PathBuf::from("backups"))
        );
        assert_eq!(
            excluded_subtree(Path::new("/data"), Path::new("/backups")).unwrap(),
            None
        );
        assert_eq!(
            excluded_subtree(Path::new("/data"), Path::new("/database")).unwrap(),
            None
        );
        assert!(matches!(
            excluded_subtree(Path::new("/data"), Path::new("/data/./")),
            Err(Error::InvalidInput(_))
        ));
    }

    #[test]
    fn manifest_paths_are_slash_separated() {
        assert_eq!(path_text(Path::new("a/b/c.txt")), "a/b/c.txt");
        assert_eq!(path_text(Path::new("a")), "a");
    }
}
