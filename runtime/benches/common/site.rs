//! A site on disk for one measurement: a scratch directory, runbooks in it, and the compiled
//! plugin cache a restarted server would find.

use std::path::{Path, PathBuf};

/// A scratch directory named after `name` and this process, emptied.
pub(crate) fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("runloom-bench-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Write runbook `name` under `runbook_dir`: its `runbook.toml` and its Rhai body.
pub(crate) fn write_runbook(runbook_dir: &Path, name: &str, toml: &str, body: &str) {
    let dir = runbook_dir.join(name);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("runbook.toml"), toml).unwrap();
    std::fs::write(dir.join("main.rhai"), body).unwrap();
}

/// Copy every file of directory `from` into `to` (created).
pub(crate) fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap().flatten() {
        std::fs::copy(entry.path(), to.join(entry.file_name())).unwrap();
    }
}
