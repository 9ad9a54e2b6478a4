//! The on-disk cache of compiled plugins, keyed by the SHA-256 of the component and by
//! wasmtime's compatibility hash (which covers the wasmtime version and every compilation
//! setting), so an upgraded engine never loads a stale artifact.

use anyhow::Context;
use sha2::{Digest, Sha256};
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use wasmtime::component::Component;

/// Hex SHA-256 of `bytes`.
pub fn content_hash(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// A short, stable fingerprint of the engine's compilation settings.
pub(super) fn engine_fingerprint(engine: &wasmtime::Engine) -> String {
    // `DefaultHasher::new()` is deterministic (fixed keys), unlike `RandomState`.
    let mut hasher = std::hash::DefaultHasher::new();
    engine.precompile_compatibility_hash().hash(&mut hasher);
    format!("{:016x}", hasher.finish())
}

/// Where compiled artifacts live, or nowhere (compile in memory every time).
pub(super) struct Cache {
    dir: Option<PathBuf>,
    fingerprint: String,
}

impl Cache {
    pub(super) fn new(dir: Option<PathBuf>, engine: &wasmtime::Engine) -> Self {
        Self {
            dir,
            fingerprint: engine_fingerprint(engine),
        }
    }

    fn path(&self, hash: &str) -> Option<PathBuf> {
        self.dir
            .as_ref()
            .map(|d| d.join(format!("{hash}-{}.cwasm", self.fingerprint)))
    }

    /// The compiled component for `bytes` (whose hash is `hash`): loaded from the cache when
    /// present, otherwise compiled and stored. Blocking: call from `spawn_blocking`.
    pub(super) fn component(
        &self,
        engine: &wasmtime::Engine,
        bytes: &[u8],
        hash: &str,
    ) -> anyhow::Result<(Component, bool)> {
        let Some(path) = self.path(hash) else {
            return Ok((Component::new(engine, bytes)?, false));
        };
        if path.exists() {
            // SAFETY: the file was written by `store` below from `precompile_component` of this
            // very engine configuration (its name carries the compatibility fingerprint), into a
            // directory only Runloom writes. A corrupt or foreign file is rejected by
            // wasmtime's header checks and treated as a miss.
            match unsafe { Component::deserialize_file(engine, &path) } {
                Ok(component) => return Ok((component, true)),
                Err(e) => {
                    tracing::warn!(path = %path.display(), error = %e, "discarding unusable compiled plugin");
                    let _ = std::fs::remove_file(&path);
                }
            }
        }
        let compiled = engine.precompile_component(bytes)?;
        match store(&path, &compiled) {
            Ok(()) => {
                drop(compiled);
                // Map the file just written, as a warm start does: its pages are shared with
                // the page cache instead of held as private memory.
                // SAFETY: written just above from `precompile_component` of this engine.
                if let Ok(component) = unsafe { Component::deserialize_file(engine, &path) } {
                    return Ok((component, false));
                }
                let compiled = std::fs::read(&path)?;
                // SAFETY: as above.
                Ok((unsafe { Component::deserialize(engine, &compiled)? }, false))
            }
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "cannot write the compiled-plugin cache");
                // SAFETY: `compiled` was produced by `precompile_component` of this engine just above.
                Ok((unsafe { Component::deserialize(engine, &compiled)? }, false))
            }
        }
    }
}

/// Write atomically: a crash never leaves a half-written artifact under the final name.
fn store(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    let dir = path.parent().context("cache path has no directory")?;
    std::fs::create_dir_all(dir).with_context(|| format!("creating `{}`", dir.display()))?;
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    std::fs::write(&tmp, bytes).with_context(|| format!("writing `{}`", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("renaming to `{}`", path.display()))?;
    Ok(())
}
