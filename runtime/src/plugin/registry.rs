//! The set of plugins an engine offers: the standard plugins embedded in the binary, then
//! every `*.wasm` in the plugin directory (which may replace a standard plugin of the same
//! name). A component that fails to load is kept as a problem to report, never silently
//! skipped, and never stops the others from loading.

use super::{LoadError, Plugin, PluginHost};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// A component that could not be loaded.
#[derive(Debug)]
pub struct LoadProblem {
    /// Where it came from.
    pub origin: String,
    /// Why it failed.
    pub error: String,
}

/// Loaded plugins by name, and what failed to load.
#[derive(Debug, Default)]
pub struct Registry {
    plugins: BTreeMap<String, Plugin>,
    problems: Vec<LoadProblem>,
}

impl Registry {
    /// Load the standard plugins and every `*.wasm` directly in `plugin_dir` (if it exists).
    pub async fn load(host: &PluginHost, plugin_dir: &Path) -> Registry {
        let mut sources: Vec<(String, Source)> = crate::builtin::standard_plugins()
            .iter()
            .map(|(name, bytes)| (format!("builtin:{name}"), Source::Builtin(name, bytes)))
            .collect();
        let mut problems = Vec::new();
        match wasm_files(plugin_dir) {
            Ok(files) => sources.extend(
                files
                    .into_iter()
                    .map(|f| (f.display().to_string(), Source::File(f))),
            ),
            Err(e) => problems.push(LoadProblem {
                origin: plugin_dir.display().to_string(),
                error: e,
            }),
        }

        // Load concurrently, as many at a time as there are CPUs (a cold start compiles every
        // plugin, and each compilation already spreads over the CPUs): more would only add
        // blocking threads, each keeping its memory for a while after start-up.
        let slots = std::thread::available_parallelism().map_or(2, std::num::NonZero::get);
        let slots = Arc::new(tokio::sync::Semaphore::new(slots));
        let mut tasks = tokio::task::JoinSet::new();
        for (index, (origin, source)) in sources.into_iter().enumerate() {
            let host = host.clone();
            let slots = slots.clone();
            tasks.spawn(async move {
                let _slot = slots.acquire().await;
                let loaded = match source {
                    Source::Builtin(name, bytes) => {
                        match crate::builtin::standard_plugin_hash(name) {
                            Some(hash) => host.load_embedded(&origin, bytes, hash).await,
                            None => host.load(&origin, bytes.to_vec()).await,
                        }
                    }
                    Source::File(path) => load_file(&host, &path).await,
                };
                (index, origin, loaded)
            });
        }
        let mut results = Vec::new();
        while let Some(joined) = tasks.join_next().await {
            match joined {
                Ok(result) => results.push(result),
                Err(e) => problems.push(LoadProblem {
                    origin: "plugin loader".into(),
                    error: e.to_string(),
                }),
            }
        }
        results.sort_by_key(|(index, _, _)| *index);

        let mut plugins: BTreeMap<String, Plugin> = BTreeMap::new();
        for (_, origin, loaded) in results {
            match loaded {
                Ok(plugin) => {
                    let name = plugin.name().to_string();
                    match plugins.get(&name) {
                        Some(existing) if !existing.origin().starts_with("builtin:") => {
                            problems.push(LoadProblem {
                                origin,
                                error: format!(
                                    "plugin `{name}` is already loaded from `{}`",
                                    existing.origin()
                                ),
                            });
                        }
                        Some(existing) => {
                            tracing::info!(plugin = %name, replaced = %existing.origin(), by = %origin, "plugin directory replaces a standard plugin");
                            plugins.insert(name, plugin);
                        }
                        None => {
                            plugins.insert(name, plugin);
                        }
                    }
                }
                Err(e) => problems.push(LoadProblem {
                    origin,
                    error: e.to_string(),
                }),
            }
        }
        Registry { plugins, problems }
    }

    /// The plugin called `name`.
    pub fn get(&self, name: &str) -> Option<&Plugin> {
        self.plugins.get(name)
    }

    /// Every loaded plugin, by name.
    pub fn plugins(&self) -> impl Iterator<Item = &Plugin> {
        self.plugins.values()
    }

    /// Drop the compiled code of every plugin not named in `used` (see
    /// [`Plugin::without_code`]). Returns how many plugins keep their code.
    pub fn keep_code_only_for(&mut self, used: &std::collections::BTreeSet<&str>) -> usize {
        for (name, plugin) in &mut self.plugins {
            if !used.contains(name.as_str()) && plugin.has_code() {
                *plugin = plugin.without_code();
            }
        }
        self.plugins.values().filter(|p| p.has_code()).count()
    }

    /// Components that failed to load.
    pub fn problems(&self) -> &[LoadProblem] {
        &self.problems
    }
}

enum Source {
    Builtin(&'static str, &'static [u8]),
    File(PathBuf),
}

/// Load one component file as a plugin.
pub async fn load_file(host: &PluginHost, path: &Path) -> Result<Plugin, LoadError> {
    let origin = path.display().to_string();
    let bytes = tokio::fs::read(path)
        .await
        .map_err(|e| LoadError::Invalid {
            origin: origin.clone(),
            message: format!("cannot read: {e}"),
        })?;
    host.load(&origin, bytes).await
}

fn wasm_files(dir: &Path) -> Result<Vec<PathBuf>, String> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(format!("cannot read the plugin directory: {e}")),
    };
    let mut files: Vec<PathBuf> = entries
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "wasm"))
        .collect();
    files.sort();
    Ok(files)
}
