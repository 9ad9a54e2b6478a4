//! Host facts WASI cannot reach: disk space of a granted directory, memory, load and the
//! process list (each of the last three behind a `system` grant).

use crate::Error;
use crate::bindings::runloom::plugin::system;

pub use crate::bindings::runloom::plugin::system::{DiskSpace, Load, MemoryInfo, Process};

fn convert(e: system::SystemError) -> Error {
    match e {
        system::SystemError::Denied(d) => Error::Denied(d),
        system::SystemError::Failed(m) => Error::failed(m),
    }
}

/// Space on the filesystem holding `path` (a guest path inside a granted directory).
pub fn disk_usage(path: &str) -> Result<DiskSpace, Error> {
    system::disk_usage(path).map_err(convert)
}

/// Memory and swap of the host. Needs `system = ["memory"]`.
pub fn memory() -> Result<MemoryInfo, Error> {
    system::memory().map_err(convert)
}

/// Load averages and CPU count. Needs `system = ["load"]`.
pub fn load_average() -> Result<Load, Error> {
    system::load_average().map_err(convert)
}

/// Every process (pid, name, resident memory, owner). Needs `system = ["processes"]`.
pub fn processes() -> Result<Vec<Process>, Error> {
    system::processes().map_err(convert)
}
