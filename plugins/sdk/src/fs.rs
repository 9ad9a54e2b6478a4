//! Files in granted directories.
//!
//! The plugin sees only the directories granted to it, at the guest paths the grant names
//! (`/var/log` on the host may appear as `/logs`). `std::fs` works on those paths as usual;
//! the helpers here add one thing: an access outside every granted directory, or a write to a
//! read-only one, becomes [`Error::Denied`] naming the path, so the operator sees which grant
//! is missing instead of a bare "not found".

use crate::Error;
use std::io::ErrorKind;
use std::path::{Component, Path, PathBuf};

/// The guest paths of the directories granted to this plugin.
pub fn granted_dirs() -> Vec<String> {
    crate::bindings::wasi::filesystem::preopens::get_directories()
        .into_iter()
        .map(|(_, path)| path)
        .collect()
}

/// `path` with `.` and `..` resolved lexically (without touching the filesystem).
pub fn normalize(path: &Path) -> PathBuf {
    let mut out = PathBuf::from("/");
    for part in path.components() {
        match part {
            Component::ParentDir => {
                out.pop();
            }
            Component::Normal(p) => out.push(p),
            Component::RootDir | Component::CurDir | Component::Prefix(_) => {}
        }
    }
    out
}

/// Whether `path` lies inside one of `granted` (guest paths).
pub fn is_within(path: &Path, granted: &[String]) -> bool {
    let path = normalize(path);
    granted
        .iter()
        .any(|dir| path.starts_with(normalize(Path::new(dir))))
}

/// Fail with [`Error::Denied`] (capability `capability`, e.g. `read`) unless `path` lies in a
/// granted directory.
pub fn check(path: &Path, capability: &str) -> Result<(), Error> {
    if is_within(path, &granted_dirs()) {
        Ok(())
    } else {
        Err(Error::denied(capability, path.display().to_string()))
    }
}

/// Turn an I/O error on `path` into the plugin error an operator can act on: permission
/// problems become [`Error::Denied`], everything else [`Error::Failed`] naming the path.
pub fn io_error(path: &Path, capability: &str, e: std::io::Error) -> Error {
    match e.kind() {
        ErrorKind::PermissionDenied | ErrorKind::ReadOnlyFilesystem => {
            Error::denied(capability, path.display().to_string())
        }
        _ => Error::failed(format!("cannot {capability} `{}`: {e}", path.display())),
    }
}

/// Read a whole file as UTF-8 text.
pub fn read_to_string(path: impl AsRef<Path>) -> Result<String, Error> {
    let path = path.as_ref();
    check(path, "read")?;
    std::fs::read_to_string(path).map_err(|e| io_error(path, "read", e))
}

/// Read a whole file.
pub fn read(path: impl AsRef<Path>) -> Result<Vec<u8>, Error> {
    let path = path.as_ref();
    check(path, "read")?;
    std::fs::read(path).map_err(|e| io_error(path, "read", e))
}

/// Write a whole file, replacing it.
pub fn write(path: impl AsRef<Path>, bytes: impl AsRef<[u8]>) -> Result<(), Error> {
    let path = path.as_ref();
    check(path, "write")?;
    std::fs::write(path, bytes).map_err(|e| io_error(path, "write", e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_escaping_a_grant_are_outside_it() {
        let granted = vec!["/data".to_string(), "/logs/".to_string()];
        assert!(is_within(Path::new("/data/a/b.txt"), &granted));
        assert!(is_within(Path::new("/logs/x.log"), &granted));
        assert!(is_within(Path::new("/data/./a/../b"), &granted));
        assert!(!is_within(Path::new("/data/../etc/shadow"), &granted));
        assert!(!is_within(Path::new("/etc/shadow"), &granted));
        assert!(!is_within(Path::new("/database"), &granted));
    }
}
