//! Helpers shared by the end-to-end tests.

use runloom::plugin::{HostConfig, Plugin, PluginHost};
use std::path::PathBuf;

/// The compiled-plugin cache shared by every test in this binary (compiling is slow; caching
/// is itself under test in `plugin_host`).
pub(crate) fn cache_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("plugin-cache")
}

/// A plugin host with a small pool and the shared cache.
pub(crate) fn host() -> PluginHost {
    host_with_cache(cache_dir())
}

/// A plugin host with a small pool caching compiled plugins in `dir`.
pub(crate) fn host_with_cache(dir: PathBuf) -> PluginHost {
    PluginHost::new(HostConfig {
        cache_dir: Some(dir),
        max_concurrent_calls: 16,
        ..HostConfig::default()
    })
    .expect("plugin host")
}

/// The file of a test fixture component, by behaviour name (`sleep-forever`).
pub(crate) fn fixture_path(name: &str) -> PathBuf {
    PathBuf::from(env!("RUNLOOM_FIXTURE_DIR"))
        .join(format!("fixture_{}.wasm", name.replace('-', "_")))
}

/// The bytes of a test fixture component.
pub(crate) fn fixture_bytes(name: &str) -> Vec<u8> {
    let path = fixture_path(name);
    std::fs::read(&path).unwrap_or_else(|e| panic!("fixture {}: {e}", path.display()))
}

/// Load a test fixture.
pub(crate) async fn fixture(host: &PluginHost, name: &str) -> Plugin {
    host.load(&format!("fixture:{name}"), fixture_bytes(name))
        .await
        .unwrap_or_else(|e| panic!("loading fixture `{name}`: {e}"))
}

/// The bytes of a standard plugin embedded in the runtime (`hello`, `http-check`).
pub(crate) fn builtin_bytes(name: &str) -> Vec<u8> {
    runloom::builtin::standard_plugins()
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, b)| b.to_vec())
        .unwrap_or_else(|| panic!("no standard plugin `{name}`"))
}

/// Load a standard plugin.
pub(crate) async fn builtin(host: &PluginHost, name: &str) -> Plugin {
    host.load(&format!("builtin:{name}"), builtin_bytes(name))
        .await
        .unwrap_or_else(|e| panic!("loading `{name}`: {e}"))
}
