//! The archives in a destination directory, and retention applied to them.

use crate::name::{ArchiveName, manifest_file_name};
use crate::retention::{self, Policy};
use runloom_sdk::Error;
use runloom_sdk::fs::io_error;
use std::fs;
use std::io::ErrorKind;
use std::path::{Path, PathBuf};

/// One archive found in a destination directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listed {
    /// What its file name says.
    pub name: ArchiveName,
    /// The archive's path.
    pub path: PathBuf,
    /// The archive's size in bytes.
    pub bytes: u64,
    /// The manifest's path, when the manifest exists.
    pub manifest: Option<PathBuf>,
}

/// The archives in `destination` (of backup set `name`, if given), newest first. Files that
/// are not archives (manifests, temporary files, anything else) are ignored.
pub fn scan(destination: &Path, name: Option<&str>) -> Result<Vec<Listed>, Error> {
    let entries = fs::read_dir(destination).map_err(|e| match e.kind() {
        ErrorKind::NotFound => Error::failed(format!(
            "destination `{}` does not exist",
            destination.display()
        )),
        _ => io_error(destination, "read", e),
    })?;
    let mut found = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| io_error(destination, "read", e))?;
        let file_name = entry.file_name().to_string_lossy().into_owned();
        let Some(parsed) = ArchiveName::parse(&file_name) else {
            continue;
        };
        if name.is_some_and(|n| n != parsed.name) {
            continue;
        }
        let path = destination.join(&file_name);
        let meta = fs::metadata(&path).map_err(|e| io_error(&path, "read", e))?;
        if !meta.is_file() {
            continue;
        }
        let manifest = destination.join(manifest_file_name(&file_name));
        found.push(Listed {
            name: parsed,
            path,
            bytes: meta.len(),
            manifest: manifest.is_file().then_some(manifest),
        });
    }
    found.sort_by(|a, b| {
        b.name
            .timestamp
            .cmp(&a.name.timestamp)
            .then_with(|| a.path.cmp(&b.path))
    });
    Ok(found)
}

/// Archives of one backup set split by a retention policy.
#[derive(Debug, Clone, Default)]
pub struct Plan {
    /// Archives kept, newest first, with the rules that keep them.
    pub keep: Vec<(Listed, Vec<String>)>,
    /// Archives to delete, newest first.
    pub delete: Vec<Listed>,
}

/// What `policy` keeps and deletes among the archives of `name` in `destination`.
pub fn plan(destination: &Path, name: &str, policy: &Policy) -> Result<Plan, Error> {
    let archives = scan(destination, Some(name))?;
    let times: Vec<_> = archives.iter().map(|a| a.name.timestamp).collect();
    let reasons = retention::select(&times, policy);
    let mut plan = Plan::default();
    for (archive, reasons) in archives.into_iter().zip(reasons) {
        if reasons.is_empty() {
            plan.delete.push(archive);
        } else {
            plan.keep.push((archive, reasons));
        }
    }
    Ok(plan)
}

/// Delete an archive, then its manifest: the order `create` relies on, so an archive never
/// lacks its manifest.
pub fn delete(archive: &Listed) -> Result<(), Error> {
    fs::remove_file(&archive.path).map_err(|e| io_error(&archive.path, "delete", e))?;
    if let Some(manifest) = &archive.manifest {
        match fs::remove_file(manifest) {
            Err(e) if e.kind() != ErrorKind::NotFound => {
                return Err(io_error(manifest, "delete", e));
            }
            _ => {}
        }
    }
    Ok(())
}
