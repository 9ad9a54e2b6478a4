//! The on-disk cache of compiled plugins, keyed by the SHA-256 of the component and by
//! wasmtime's compatibility hash (which covers the wasmtime version and every compilation
//! setting), so an upgraded engine never loads a stale artifact.
//!
//! A long-lived process (`runloom serve`) compiles a missing plugin in a child process, the
//! same `runloom` executable run as `runloom __compile-plugin`, and then maps the file the
//! child wrote, as a warm start does. The compiler's code and the memory it used are never
//! the server's: compiled in-process, they stayed resident after start-up (60 MB against
//! 30 MB after a warm start, BENCHMARKS.md). Anything wrong with the child other than the
//! component itself falls back to compiling in-process, with a warning.

use anyhow::Context;
use sha2::{Digest, Sha256};
use std::borrow::Cow;
use std::hash::{Hash, Hasher};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use wasmtime::component::Component;

/// The hidden subcommand that runs [`compile_child`].
pub const CHILD_SUBCOMMAND: &str = "__compile-plugin";
/// The child's exit code when the component itself does not compile (stderr says why).
const CHILD_INVALID: i32 = 6;
/// The child's exit code when it could not do its work otherwise (stderr says why).
const CHILD_UNUSABLE: i32 = 4;

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
    /// The `runloom` executable that compiles cache misses; `None` compiles in-process.
    compiler: Option<PathBuf>,
    fingerprint: String,
}

/// Why a compiling child did not produce the artifact.
enum ChildFailure {
    /// The component does not compile; the message is the compiler's.
    Invalid(String),
    /// The child could not do its work (not started, wrong engine, disk); compile in-process.
    Unusable(String),
}

impl Cache {
    pub(super) fn new(
        dir: Option<PathBuf>,
        compiler: Option<PathBuf>,
        engine: &wasmtime::Engine,
    ) -> Self {
        Self {
            dir,
            compiler,
            fingerprint: engine_fingerprint(engine),
        }
    }

    fn path(&self, hash: &str) -> Option<PathBuf> {
        self.dir
            .as_ref()
            .map(|d| d.join(format!("{hash}-{}.cwasm", self.fingerprint)))
    }

    /// The compiled component for `bytes` (whose hash is `hash`): loaded from the cache when
    /// present, otherwise compiled (in a child process when a compiler is set) and stored.
    /// `embedded` says the bytes are one of this binary's standard plugins, which a child
    /// finds in its own copy of the binary: they are not read here. Blocking: call from
    /// `spawn_blocking`.
    pub(super) fn component(
        &self,
        engine: &wasmtime::Engine,
        bytes: &[u8],
        hash: &str,
        embedded: bool,
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
        if let Some(exe) = &self.compiler {
            match self.compile_in_child(exe, &path, bytes, hash, embedded) {
                // SAFETY: the child is this executable, whose engine configuration had the
                // same compatibility fingerprint (it checks before compiling); wasmtime's
                // header checks reject anything else, and then we compile here.
                Ok(()) => match unsafe { Component::deserialize_file(engine, &path) } {
                    Ok(component) => {
                        tracing::debug!(%hash, "compiled in a child process");
                        return Ok((component, false));
                    }
                    Err(e) => {
                        tracing::warn!(path = %path.display(), error = %e, "the compiling child wrote an unusable artifact; compiling in-process");
                        let _ = std::fs::remove_file(&path);
                    }
                },
                Err(ChildFailure::Invalid(message)) => anyhow::bail!(message),
                Err(ChildFailure::Unusable(message)) => {
                    tracing::warn!(compiler = %exe.display(), error = %message, "cannot compile in a child process; compiling in-process");
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

    /// Run `exe __compile-plugin` to compile the component into `path`. The bytes go to its
    /// stdin unless they are `embedded` in the binary.
    fn compile_in_child(
        &self,
        exe: &Path,
        path: &Path,
        bytes: &[u8],
        hash: &str,
        embedded: bool,
    ) -> Result<(), ChildFailure> {
        let unusable =
            |e: std::io::Error| ChildFailure::Unusable(format!("{}: {e}", exe.display()));
        let mut child = Command::new(exe)
            .arg(CHILD_SUBCOMMAND)
            .arg("--out")
            .arg(path)
            .arg("--hash")
            .arg(hash)
            .arg("--fingerprint")
            .arg(&self.fingerprint)
            .args((!embedded).then_some("--from-stdin"))
            // Its stderr is the error message: no diagnostics from the server's RUST_LOG.
            .env_remove("RUST_LOG")
            .stdin(if embedded {
                Stdio::null()
            } else {
                Stdio::piped()
            })
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(unusable)?;
        let written = match child.stdin.take() {
            // Closed when dropped, so the child sees the end of the component.
            Some(mut stdin) => stdin.write_all(bytes),
            None => Ok(()),
        };
        let output = child.wait_with_output().map_err(unusable)?;
        let stderr = String::from_utf8_lossy(&output.stderr).trim().to_string();
        match output.status.code() {
            Some(0) if written.is_ok() => Ok(()),
            Some(CHILD_INVALID) => Err(ChildFailure::Invalid(stderr)),
            _ => Err(ChildFailure::Unusable(match written {
                Err(e) => format!("writing the component to the child: {e}; {stderr}"),
                Ok(()) => format!("{}: {stderr}", output.status),
            })),
        }
    }
}

/// The child side of compiling out of process (`runloom __compile-plugin`): compile the
/// component whose SHA-256 is `hash` (the bytes on stdin if `from_stdin`, otherwise this
/// binary's embedded plugin with that hash) with an engine whose compatibility fingerprint
/// must be `fingerprint`, and write the artifact to `out`. Returns the process exit code: 0,
/// 6 when the component does not compile, 4 for anything else; stderr says why.
pub fn compile_child(out: &Path, hash: &str, fingerprint: &str, from_stdin: bool) -> i32 {
    match compile_child_inner(out, hash, fingerprint, from_stdin) {
        Ok(()) => 0,
        Err(ChildFailure::Invalid(message)) => {
            eprintln!("{message}");
            CHILD_INVALID
        }
        Err(ChildFailure::Unusable(message)) => {
            eprintln!("{message}");
            CHILD_UNUSABLE
        }
    }
}

fn compile_child_inner(
    out: &Path,
    hash: &str,
    fingerprint: &str,
    from_stdin: bool,
) -> Result<(), ChildFailure> {
    let bytes = if from_stdin {
        let mut bytes = Vec::new();
        std::io::stdin()
            .read_to_end(&mut bytes)
            .map_err(|e| ChildFailure::Unusable(format!("reading the component: {e}")))?;
        if content_hash(&bytes) != hash {
            return Err(ChildFailure::Unusable(format!(
                "the component on stdin does not have the SHA-256 {hash}"
            )));
        }
        Cow::Owned(bytes)
    } else {
        let embedded = crate::builtin::standard_plugin_with_hash(hash).ok_or_else(|| {
            ChildFailure::Unusable(format!("no plugin with the SHA-256 {hash} is embedded"))
        })?;
        Cow::Borrowed(embedded)
    };
    // Compiling needs no instance allocator: the pooling settings are not part of the
    // fingerprint, which covers everything that shapes compiled code.
    let engine = super::build_engine(&super::HostConfig::default(), false)
        .map_err(|e| ChildFailure::Unusable(format!("{e:#}")))?;
    let own = engine_fingerprint(&engine);
    if own != fingerprint {
        return Err(ChildFailure::Unusable(format!(
            "this engine's fingerprint is {own}, the parent's {fingerprint}"
        )));
    }
    let compiled = engine
        .precompile_component(&bytes)
        .map_err(|e| ChildFailure::Invalid(format!("{e:#}")))?;
    store(out, &compiled).map_err(|e| ChildFailure::Unusable(format!("{e:#}")))
}

/// Write atomically: a crash never leaves a half-written artifact under the final name.
/// Each write has a temporary file of its own (process and write number): two threads
/// storing the same artifact at once (two hosts sharing a cache, the same component loaded
/// twice) must not truncate the file the other is about to publish, which another thread
/// may already have mapped (a `SIGBUS` on touching it).
fn store(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    static WRITES: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let dir = path.parent().context("cache path has no directory")?;
    std::fs::create_dir_all(dir).with_context(|| format!("creating `{}`", dir.display()))?;
    let write = WRITES.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let tmp = path.with_extension(format!("tmp{}-{write}", std::process::id()));
    std::fs::write(&tmp, bytes).with_context(|| format!("writing `{}`", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("renaming to `{}`", path.display()))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::store;

    #[test]
    fn threads_storing_one_artifact_at_once_only_ever_publish_it_whole() {
        let dir = std::env::temp_dir().join(format!("runloom-cache-store-{}", std::process::id()));
        let path = dir.join("artifact.cwasm");
        let bytes: Vec<u8> = (0..1_000_000u32).map(|i| (i % 251) as u8).collect();
        std::thread::scope(|scope| {
            for _ in 0..4 {
                scope.spawn(|| {
                    for _ in 0..25 {
                        store(&path, &bytes).expect("stored");
                        let published = std::fs::read(&path).expect("published");
                        assert!(published == bytes, "a partial artifact was published");
                    }
                });
            }
        });
        let leftovers: Vec<_> = std::fs::read_dir(&dir)
            .expect("cache dir")
            .filter_map(Result::ok)
            .map(|e| e.file_name())
            .filter(|name| name != "artifact.cwasm")
            .collect();
        let _ = std::fs::remove_dir_all(&dir);
        assert!(leftovers.is_empty(), "temporary files left: {leftovers:?}");
    }
}
