//! `verify`: an archive against its manifest. First the archive's own SHA-256 and size,
//! then every entry: type, size, content hash, mode, link target.
//!
//! Both the manifest and the archive list entries in the same order (sorted depth-first,
//! see `pack`), so they are compared in one merge pass without holding either in memory.

use crate::manifest::{self, Entry, Record};
use crate::name::Compression;
use crate::pack::path_text;
use crate::stream::{self, CHUNK, Digester};
use runloom_sdk::Error;
use runloom_sdk::fs::io_error;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use std::cmp::Ordering;
use std::fs::File;
use std::io::{BufReader, Read};
use std::path::Path;

/// At most this many mismatches are listed; the rest are counted.
pub const MAX_MISMATCHES: usize = 100;

/// The largest zstd window accepted. Archives from `create` use 128 KiB; this bounds the
/// decoder's memory for archives from elsewhere (`zstd -19` uses 8 MiB).
const MAX_ZSTD_WINDOW: u64 = 16 * 1024 * 1024;

/// One way the archive differs from its manifest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Mismatch {
    /// The entry's path inside the archive, or the archive's or manifest's file name for a
    /// problem with the file as a whole.
    pub path: String,
    /// What is wrong, in words.
    pub problem: String,
}

/// Mismatches found so far, listing at most [`MAX_MISMATCHES`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Findings {
    /// Entries present in both and compared.
    pub checked: u64,
    /// The first mismatches.
    pub mismatches: Vec<Mismatch>,
    /// All mismatches, listed or not.
    pub total: u64,
}

impl Findings {
    fn push(&mut self, path: &str, problem: impl Into<String>) {
        self.total += 1;
        if self.mismatches.len() < MAX_MISMATCHES {
            self.mismatches.push(Mismatch {
                path: path.to_string(),
                problem: problem.into(),
            });
        }
    }
}

/// What the archive holds at one position.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Seen {
    /// A file, directory or symbolic link, described like a manifest entry.
    Entry(Entry),
    /// An entry of a type `create` never writes (hard link, device, FIFO…).
    Other {
        /// Its path.
        path: String,
        /// Its tar type, for the message.
        kind: String,
    },
}

impl Seen {
    fn path(&self) -> &str {
        match self {
            Seen::Entry(e) => e.path(),
            Seen::Other { path, .. } => path,
        }
    }
}

/// The result of [`verify`].
#[derive(Debug, Clone)]
pub struct Report {
    /// SHA-256 of the archive file as it is now.
    pub archive_sha256: String,
    /// SHA-256 the manifest records.
    pub expected_sha256: String,
    /// Size of the archive file.
    pub archive_bytes: u64,
    /// Entries the manifest lists.
    pub entries_expected: u64,
    /// What differs.
    pub findings: Findings,
}

/// Check `archive` against `manifest_path`. A missing or unreadable file is an error; a
/// corrupt archive is a report with mismatches.
pub fn verify(archive: &Path, manifest_path: &Path) -> Result<Report, Error> {
    let archive_label = file_label(archive);
    let manifest_label = file_label(manifest_path);
    let (header, trailer) = {
        let (header, reader) = open_manifest(manifest_path)?;
        let trailer = reader
            .trailer()
            .map_err(|e| Error::failed(format!("manifest `{}`: {e}", manifest_path.display())))?;
        (header, trailer)
    };

    let mut findings = Findings::default();
    let (archive_sha256, archive_bytes) =
        stream::digest(BufReader::with_capacity(CHUNK, open(archive)?))
            .map_err(|e| io_error(archive, "read", e))?;
    if archive_bytes != trailer.archive_bytes {
        findings.push(
            &archive_label,
            format!(
                "archive is {archive_bytes} bytes, manifest says {}",
                trailer.archive_bytes
            ),
        );
    }
    if archive_sha256 != trailer.archive_sha256 {
        findings.push(
            &archive_label,
            format!(
                "archive sha256 is {archive_sha256}, manifest says {}",
                trailer.archive_sha256
            ),
        );
    }

    let (_, expected) = open_manifest(manifest_path)?;
    let expected = expected.filter_map(|r| match r {
        Ok(Record::Entry(e)) => Some(Ok(e)),
        Ok(Record::Trailer(_)) => None,
        Err(e) => Some(Err(e)),
    });
    match open_tar(open(archive)?, header.compression) {
        Err(e) => findings.push(&archive_label, e),
        Ok(mut tar) => {
            let ended = match tar.entries() {
                Err(e) => {
                    findings.push(&archive_label, format!("cannot read: {e}"));
                    false
                }
                Ok(entries) => {
                    let actual = entries.map(|r| {
                        r.map_err(|e| e.to_string())
                            .and_then(|mut entry| describe(&mut entry))
                    });
                    compare(
                        expected,
                        actual,
                        &archive_label,
                        &manifest_label,
                        &mut findings,
                    )
                }
            };
            // Read the compressed stream to its end: the gzip CRC and the last zstd block
            // come after the tar end marker.
            if ended && let Err(e) = stream::copy(&mut tar.into_inner(), &mut std::io::sink()) {
                findings.push(&archive_label, format!("cannot decompress the end: {e}"));
            }
        }
    }
    Ok(Report {
        archive_sha256,
        expected_sha256: trailer.archive_sha256,
        archive_bytes,
        entries_expected: trailer.entries,
        findings,
    })
}

/// A file's name, for messages about the file as a whole.
pub fn file_label(path: &Path) -> String {
    path.file_name().map_or_else(
        || path.display().to_string(),
        |n| n.to_string_lossy().into_owned(),
    )
}

/// Open a file for reading; a missing file is a failure naming it.
pub fn open(path: &Path) -> Result<File, Error> {
    File::open(path).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => {
            Error::failed(format!("`{}` does not exist", path.display()))
        }
        _ => io_error(path, "read", e),
    })
}

/// Open a manifest and check its header.
pub fn open_manifest(
    path: &Path,
) -> Result<(manifest::Header, manifest::Reader<BufReader<File>>), Error> {
    manifest::Reader::open(BufReader::new(open(path)?))
        .map_err(|e| Error::failed(format!("manifest `{}`: {e}", path.display())))
}

/// A tar reader over a compressed archive file. Errors are decompression errors, in words.
pub fn open_tar(
    file: File,
    compression: Compression,
) -> Result<tar::Archive<Box<dyn Read>>, String> {
    let buffered = BufReader::with_capacity(CHUNK, file);
    let decoded: Box<dyn Read> = match compression {
        Compression::Zstd => Box::new(
            ruzstd::decoding::StreamingDecoder::new_with_max_window_size(buffered, MAX_ZSTD_WINDOW)
                .map_err(|e| format!("not a readable zstd stream: {e}"))?,
        ),
        Compression::Gzip => Box::new(flate2::bufread::GzDecoder::new(buffered)),
    };
    Ok(tar::Archive::new(decoded))
}

/// Describe the entry the tar reader is at, hashing a file's content. An error means the
/// stream itself is broken.
fn describe<R: Read>(entry: &mut tar::Entry<'_, R>) -> Result<Seen, String> {
    let path = path_text(&entry.path().map_err(|e| e.to_string())?);
    let header = entry.header();
    let mode = manifest::mode_string(header.mode().map_err(|e| format!("`{path}`: {e}"))?);
    let kind = header.entry_type();
    Ok(Seen::Entry(match kind {
        tar::EntryType::Regular | tar::EntryType::Continuous => {
            let mut digester = Digester::default();
            stream::copy(entry, &mut digester).map_err(|e| format!("cannot read `{path}`: {e}"))?;
            let (sha256, size) = digester.finish();
            Entry::File {
                path,
                size,
                mode,
                sha256,
            }
        }
        tar::EntryType::Directory => Entry::Dir { path, mode },
        tar::EntryType::Symlink => {
            let target = entry
                .link_name()
                .map_err(|e| format!("`{path}`: {e}"))?
                .map(|t| t.to_string_lossy().into_owned())
                .unwrap_or_default();
            Entry::Symlink { path, target }
        }
        other => {
            return Ok(Seen::Other {
                path,
                kind: format!("{other:?}").to_lowercase(),
            });
        }
    }))
}

/// Merge the manifest's entries with the archive's, both in sorted order, recording every
/// difference. Returns whether the archive was read to its end (no broken stream).
pub fn compare(
    expected: impl Iterator<Item = Result<Entry, String>>,
    actual: impl Iterator<Item = Result<Seen, String>>,
    archive_label: &str,
    manifest_label: &str,
    findings: &mut Findings,
) -> bool {
    let mut expected = Side::new(expected, manifest_label, "the manifest");
    let mut actual = Side::new(actual, archive_label, "the archive");
    let mut e = expected.next(findings);
    let mut a = actual.next(findings);
    loop {
        match (&e, &a) {
            (None, None) => break,
            (Some(x), None) => {
                if !actual.broken {
                    findings.push(x.path(), "missing from the archive");
                }
                e = expected.next(findings);
            }
            (None, Some(y)) => {
                if !expected.broken {
                    findings.push(y.path(), "in the archive but not in the manifest");
                }
                a = actual.next(findings);
            }
            (Some(x), Some(y)) => match Path::new(x.path()).cmp(Path::new(y.path())) {
                Ordering::Less => {
                    findings.push(x.path(), "missing from the archive");
                    e = expected.next(findings);
                }
                Ordering::Greater => {
                    findings.push(y.path(), "in the archive but not in the manifest");
                    a = actual.next(findings);
                }
                Ordering::Equal => {
                    findings.checked += 1;
                    if let Some(problem) = differences(x, y) {
                        findings.push(x.path(), problem);
                    }
                    e = expected.next(findings);
                    a = actual.next(findings);
                }
            },
        }
    }
    !actual.broken
}

/// One side of the merge: stops at its first error (recorded once) and flags entries that
/// are out of order, which a well-formed archive or manifest never has.
struct Side<I> {
    items: I,
    label: String,
    what: &'static str,
    last: Option<String>,
    broken: bool,
}

impl<T: HasPath, I: Iterator<Item = Result<T, String>>> Side<I> {
    fn new(items: I, label: &str, what: &'static str) -> Self {
        Self {
            items,
            label: label.to_string(),
            what,
            last: None,
            broken: false,
        }
    }

    fn next(&mut self, findings: &mut Findings) -> Option<T> {
        if self.broken {
            return None;
        }
        match self.items.next()? {
            Ok(item) => {
                if let Some(last) = &self.last
                    && Path::new(item.path_text()) <= Path::new(last.as_str())
                {
                    findings.push(
                        item.path_text(),
                        format!("out of order in {} (after `{last}`)", self.what),
                    );
                }
                self.last = Some(item.path_text().to_string());
                Some(item)
            }
            Err(e) => {
                self.broken = true;
                let problem = match &self.last {
                    Some(last) => format!("unreadable after `{last}`: {e}"),
                    None => format!("unreadable: {e}"),
                };
                findings.push(&self.label, problem);
                None
            }
        }
    }
}

trait HasPath {
    fn path_text(&self) -> &str;
}

impl HasPath for Entry {
    fn path_text(&self) -> &str {
        self.path()
    }
}

impl HasPath for Seen {
    fn path_text(&self) -> &str {
        self.path()
    }
}

/// How an archive entry differs from its manifest entry, if it does.
fn differences(expected: &Entry, seen: &Seen) -> Option<String> {
    let actual = match seen {
        Seen::Entry(entry) => entry,
        Seen::Other { kind, .. } => {
            return Some(format!(
                "a {kind} in the archive, a {} in the manifest",
                kind_name(expected)
            ));
        }
    };
    let mut problems = Vec::new();
    match (expected, actual) {
        (
            Entry::File {
                size: want_size,
                mode: want_mode,
                sha256: want_sha,
                ..
            },
            Entry::File {
                size, mode, sha256, ..
            },
        ) => {
            if size != want_size {
                problems.push(format!("size {size} bytes, manifest says {want_size}"));
            }
            if sha256 != want_sha {
                problems.push(format!("sha256 {sha256}, manifest says {want_sha}"));
            }
            if mode != want_mode {
                problems.push(format!("mode {mode}, manifest says {want_mode}"));
            }
        }
        (
            Entry::Dir {
                mode: want_mode, ..
            },
            Entry::Dir { mode, .. },
        ) => {
            if mode != want_mode {
                problems.push(format!("mode {mode}, manifest says {want_mode}"));
            }
        }
        (
            Entry::Symlink {
                target: want_target,
                ..
            },
            Entry::Symlink { target, .. },
        ) => {
            if target != want_target {
                problems.push(format!(
                    "links to `{target}`, manifest says `{want_target}`"
                ));
            }
        }
        _ => problems.push(format!(
            "a {} in the archive, a {} in the manifest",
            kind_name(actual),
            kind_name(expected)
        )),
    }
    (!problems.is_empty()).then(|| problems.join("; "))
}

fn kind_name(entry: &Entry) -> &'static str {
    match entry {
        Entry::File { .. } => "file",
        Entry::Dir { .. } => "directory",
        Entry::Symlink { .. } => "symbolic link",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(path: &str, size: u64, sha: &str) -> Entry {
        Entry::File {
            path: path.into(),
            size,
            mode: "0644".into(),
            sha256: sha.into(),
        }
    }

    fn dir(path: &str) -> Entry {
        Entry::Dir {
            path: path.into(),
            mode: "0755".into(),
        }
    }

    fn run(expected: Vec<Entry>, actual: Vec<Result<Seen, String>>) -> (Findings, bool) {
        let mut findings = Findings::default();
        let ended = compare(
            expected.into_iter().map(Ok),
            actual.into_iter(),
            "a.tar.zst",
            "a.tar.zst.manifest.jsonl",
            &mut findings,
        );
        (findings, ended)
    }

    fn seen(entries: &[Entry]) -> Vec<Result<Seen, String>> {
        entries
            .iter()
            .cloned()
            .map(|e| Ok(Seen::Entry(e)))
            .collect()
    }

    fn listed(f: &Findings) -> Vec<(String, String)> {
        f.mismatches
            .iter()
            .map(|m| (m.path.clone(), m.problem.clone()))
            .collect()
    }

    #[test]
    fn identical_listings_match() {
        let entries = vec![
            dir("a"),
            file("a/x", 1, "11"),
            dir("a0"),
            file("b", 2, "22"),
        ];
        let (f, ended) = run(entries.clone(), seen(&entries));
        assert!(ended);
        assert_eq!(f.total, 0, "{f:?}");
        assert_eq!(f.checked, 4);
    }

    #[test]
    fn changed_content_size_and_mode_are_each_reported() {
        let expected = vec![file("a", 3, "aa"), file("b", 3, "bb")];
        let mut b = file("b", 4, "cc");
        if let Entry::File { mode, .. } = &mut b {
            *mode = "0600".into();
        }
        let (f, _) = run(expected, seen(&[file("a", 3, "aa"), b]));
        assert_eq!(
            listed(&f),
            [(
                "b".to_string(),
                "size 4 bytes, manifest says 3; sha256 cc, manifest says bb; mode 0600, \
                 manifest says 0644"
                    .to_string()
            )]
        );
    }

    #[test]
    fn missing_and_extra_entries_are_reported_in_place() {
        let expected = vec![file("a", 1, "1"), file("b", 1, "1"), file("d", 1, "1")];
        let actual = seen(&[file("a", 1, "1"), file("c", 1, "1"), file("d", 1, "1")]);
        let (f, _) = run(expected, actual);
        assert_eq!(
            listed(&f),
            [
                ("b".into(), "missing from the archive".into()),
                ("c".into(), "in the archive but not in the manifest".into()),
            ]
        );
        assert_eq!(f.checked, 2);
    }

    #[test]
    fn a_broken_stream_ends_the_comparison_without_blaming_every_later_entry() {
        let expected = vec![file("a", 1, "1"), file("b", 1, "1"), file("c", 1, "1")];
        let actual = vec![
            Ok(Seen::Entry(file("a", 1, "1"))),
            Err("invalid checksum".to_string()),
        ];
        let (f, ended) = run(expected, actual);
        assert!(!ended);
        assert_eq!(
            listed(&f),
            [(
                "a.tar.zst".into(),
                "unreadable after `a`: invalid checksum".into()
            )]
        );
    }

    #[test]
    fn type_changes_and_odd_entries_are_reported() {
        let expected = vec![dir("a"), file("b", 1, "1")];
        let actual = vec![
            Ok(Seen::Entry(file("a", 0, "e3"))),
            Ok(Seen::Other {
                path: "b".into(),
                kind: "link".into(),
            }),
        ];
        let (f, _) = run(expected, actual);
        assert_eq!(
            listed(&f),
            [
                (
                    "a".into(),
                    "a file in the archive, a directory in the manifest".into()
                ),
                (
                    "b".into(),
                    "a link in the archive, a file in the manifest".into()
                ),
            ]
        );
    }

    #[test]
    fn symlink_targets_are_compared() {
        let link = |t: &str| Entry::Symlink {
            path: "l".into(),
            target: t.into(),
        };
        let (f, _) = run(vec![link("x")], seen(&[link("/etc/shadow")]));
        assert_eq!(
            listed(&f),
            [(
                "l".into(),
                "links to `/etc/shadow`, manifest says `x`".into()
            )]
        );
    }

    #[test]
    fn out_of_order_entries_are_flagged() {
        let expected = vec![file("a", 1, "1"), file("b", 1, "1")];
        let actual = seen(&[file("b", 1, "1"), file("a", 1, "1")]);
        let (f, _) = run(expected, actual);
        assert!(
            f.mismatches
                .iter()
                .any(|m| m.path == "a" && m.problem == "out of order in the archive (after `b`)"),
            "{f:?}"
        );
    }

    #[test]
    fn the_list_is_capped_but_the_count_is_not() {
        let expected: Vec<Entry> = (0..150)
            .map(|i| file(&format!("f{i:03}"), 1, "1"))
            .collect();
        let (f, _) = run(expected, Vec::new());
        assert_eq!(f.total, 150);
        assert_eq!(f.mismatches.len(), MAX_MISMATCHES);
    }
}
