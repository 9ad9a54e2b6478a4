//! The one filesystem call `std` cannot make on stable Rust for WASI: creating a symbolic
//! link (`std::os::wasi::fs::symlink_path` is unstable). In the component it goes straight
//! to `wasi:filesystem`, relative to the granted directory that holds the link.

use runloom_sdk::Error;
use std::path::Path;

/// Create a symbolic link at `link` pointing to `target` (stored as given).
#[cfg(target_arch = "wasm32")]
pub(crate) fn symlink(target: &Path, link: &Path) -> Result<(), Error> {
    use runloom_sdk::bindings::wasi::filesystem::preopens::get_directories;
    use runloom_sdk::fs::normalize;
    let link = normalize(link);
    let failed = |why: String| {
        Error::failed(format!(
            "cannot create the link `{}` -> `{}`: {why}",
            link.display(),
            target.display()
        ))
    };
    // The innermost granted directory holding the link: grants may nest.
    let (dir, rel) = get_directories()
        .into_iter()
        .filter_map(|(dir, guest)| {
            let rel = link.strip_prefix(normalize(Path::new(&guest))).ok()?;
            Some((dir, rel.to_path_buf()))
        })
        .min_by_key(|(_, rel)| rel.components().count())
        .ok_or_else(|| Error::denied("write", link.display().to_string()))?;
    let (Some(target), Some(rel)) = (target.to_str(), rel.to_str()) else {
        return Err(failed("the path is not UTF-8".to_string()));
    };
    dir.symlink_at(target, rel)
        .map_err(|code| failed(format!("{code:?}")))
}

/// Create a symbolic link at `link` pointing to `target` (stored as given).
#[cfg(all(unix, not(target_arch = "wasm32")))]
pub(crate) fn symlink(target: &Path, link: &Path) -> Result<(), Error> {
    std::os::unix::fs::symlink(target, link)
        .map_err(|e| runloom_sdk::fs::io_error(link, "write", e))
}
