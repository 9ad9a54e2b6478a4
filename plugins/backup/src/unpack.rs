//! `restore`: an archive into an empty directory, verified first, refusing any entry that
//! would land outside it.
//!
//! Order matters for safety (see `safety`): verify the archive against its manifest; check
//! every manifest path and link target before writing anything; write directories and files;
//! create symbolic links last, none below another link.

use crate::name::Compression;
use crate::safety;
use crate::verify::{self, open_tar};
use runloom_sdk::Error;
use runloom_sdk::fs::io_error;
use std::fs::{self, File, OpenOptions};
use std::io::BufWriter;
use std::path::{Path, PathBuf};
use std::time::{Duration, UNIX_EPOCH};

/// What `restore` wrote.
#[derive(Debug, Clone, Default)]
pub struct Restored {
    /// Regular files written.
    pub files: u64,
    /// Directories created.
    pub directories: u64,
    /// Symbolic links created.
    pub symlinks: u64,
    /// Bytes of file content written.
    pub bytes: u64,
    /// SHA-256 of the archive, checked against the manifest.
    pub archive_sha256: String,
}

/// Restore `archive` (described by `manifest`) into `target`, which must be empty or absent.
pub fn restore(archive: &Path, manifest: &Path, target: &Path) -> Result<Restored, Error> {
    require_empty(target)?;
    let report = verify::verify(archive, manifest)?;
    if let Some(first) = report.findings.mismatches.first() {
        return Err(Error::failed(format!(
            "`{}` does not match its manifest ({} mismatches; first: `{}`: {}); nothing restored",
            archive.display(),
            report.findings.total,
            first.path,
            first.problem
        )));
    }
    let compression = check_manifest_paths(manifest)?;

    let mut restored = Restored {
        archive_sha256: report.archive_sha256,
        ..Restored::default()
    };
    let mut links = Vec::new();
    let result = extract(archive, compression, target, &mut restored, &mut links)
        .and_then(|()| create_links(target, &links, &mut restored));
    result.map(|()| restored).map_err(|e| match e {
        Error::Failed(m) => Error::failed(format!(
            "{m}; `{}` holds a partial restore",
            target.display()
        )),
        other => other,
    })
}

fn require_empty(target: &Path) -> Result<(), Error> {
    fs::create_dir_all(target).map_err(|e| io_error(target, "write", e))?;
    let mut entries = fs::read_dir(target).map_err(|e| io_error(target, "read", e))?;
    if let Some(entry) = entries.next() {
        let name = entry
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .unwrap_or_default();
        return Err(Error::failed(format!(
            "target `{}` is not empty (it holds `{name}`); restore only into an empty directory",
            target.display()
        )));
    }
    Ok(())
}

/// Refuse the archive before writing anything if any entry would leave the target. The
/// archive matched the manifest, so the manifest's entries are the archive's. Returns the
/// archive's compression.
fn check_manifest_paths(manifest: &Path) -> Result<Compression, Error> {
    let (header, reader) = verify::open_manifest(manifest)?;
    for record in reader {
        let record =
            record.map_err(|e| Error::failed(format!("manifest `{}`: {e}", manifest.display())))?;
        if let crate::manifest::Record::Entry(entry) = record {
            check_entry(&entry).map_err(refused)?;
        }
    }
    Ok(header.compression)
}

fn check_entry(entry: &crate::manifest::Entry) -> Result<PathBuf, String> {
    let rel = safety::entry_path(Path::new(entry.path()))?;
    if let crate::manifest::Entry::Symlink { target, .. } = entry {
        safety::link_target(&rel, Path::new(target))?;
    }
    Ok(rel)
}

fn refused(why: String) -> Error {
    Error::failed(format!("refusing to restore: {why}; nothing restored"))
}

fn extract(
    archive: &Path,
    compression: Compression,
    target: &Path,
    restored: &mut Restored,
    links: &mut Vec<(PathBuf, PathBuf)>,
) -> Result<(), Error> {
    let broken = |e: String| Error::failed(format!("cannot read `{}`: {e}", archive.display()));
    let mut tar = open_tar(verify::open(archive)?, compression).map_err(broken)?;
    let entries = tar.entries().map_err(|e| broken(e.to_string()))?;
    for entry in entries {
        let mut entry = entry.map_err(|e| broken(e.to_string()))?;
        let raw = entry
            .path()
            .map_err(|e| broken(e.to_string()))?
            .into_owned();
        // Checked again here: the archive file could have been swapped since it was verified.
        let rel = safety::entry_path(&raw).map_err(refused)?;
        let path = target.join(&rel);
        match entry.header().entry_type() {
            tar::EntryType::Directory => {
                fs::create_dir_all(&path).map_err(|e| io_error(&path, "write", e))?;
                restored.directories += 1;
            }
            tar::EntryType::Regular | tar::EntryType::Continuous => {
                if let Some(parent) = path.parent() {
                    fs::create_dir_all(parent).map_err(|e| io_error(parent, "write", e))?;
                }
                let file = OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .open(&path)
                    .map_err(|e| io_error(&path, "write", e))?;
                let mut out = BufWriter::with_capacity(crate::stream::CHUNK, file);
                restored.bytes += crate::stream::copy(&mut entry, &mut out).map_err(|e| {
                    Error::failed(format!("cannot restore `{}`: {e}", path.display()))
                })?;
                let file = out
                    .into_inner()
                    .map_err(|e| io_error(&path, "write", e.into_error()))?;
                set_mtime(&file, entry.header().mtime().unwrap_or(0));
                restored.files += 1;
            }
            tar::EntryType::Symlink => {
                let link_to = entry
                    .link_name()
                    .map_err(|e| broken(e.to_string()))?
                    .map(|t| t.into_owned())
                    .unwrap_or_default();
                safety::link_target(&rel, &link_to).map_err(refused)?;
                links.push((rel, link_to));
            }
            other => {
                return Err(refused(format!(
                    "`{}` is a {other:?} entry, which restore does not create",
                    raw.display()
                )));
            }
        }
    }
    Ok(())
}

/// Best effort: WASI may not support setting times on every host filesystem, and a wrong
/// modification time does not make a restore wrong.
fn set_mtime(file: &File, mtime: u64) {
    let _ = file.set_modified(UNIX_EPOCH + Duration::from_secs(mtime));
}

/// Create the symbolic links, refusing any whose directory passes through a link.
fn create_links(
    target: &Path,
    links: &[(PathBuf, PathBuf)],
    restored: &mut Restored,
) -> Result<(), Error> {
    for (rel, link_to) in links {
        let mut dir = target.to_path_buf();
        for part in rel.parent().into_iter().flat_map(Path::components) {
            dir.push(part);
            let is_link = fs::symlink_metadata(&dir).is_ok_and(|m| m.file_type().is_symlink());
            if is_link {
                return Err(refused(format!(
                    "symbolic link `{}` lies below the link `{}`",
                    rel.display(),
                    dir.display()
                )));
            }
        }
        let path = target.join(rel);
        if let Some(parent) = path.parent() {
            fs::create_dir_all(parent).map_err(|e| io_error(parent, "write", e))?;
        }
        crate::sys::symlink(link_to, &path)?;
        restored.symlinks += 1;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest::Entry;

    #[test]
    fn manifest_entries_escaping_the_target_are_refused() {
        let file = |p: &str| Entry::File {
            path: p.into(),
            size: 0,
            mode: "0644".into(),
            sha256: String::new(),
        };
        assert!(check_entry(&file("a/b")).is_ok());
        assert!(check_entry(&file("../b")).is_err());
        assert!(check_entry(&file("/etc/cron.d/x")).is_err());
        let link = |p: &str, t: &str| Entry::Symlink {
            path: p.into(),
            target: t.into(),
        };
        assert!(check_entry(&link("a/l", "../b")).is_ok());
        assert!(check_entry(&link("a/l", "../../b")).is_err());
        assert!(check_entry(&link("l", "/etc")).is_err());
    }
}
