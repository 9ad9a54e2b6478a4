//! The runbooks an engine offers, ready to run: each runbook directory loaded and validated
//! against `runloom.toml` and the plugin registry, its body compiled (a Rhai script) or
//! pre-instantiated (a Wasm component). Every definition error is collected, none hidden.

use crate::config::Config;
use crate::plugin::{PluginHost, Registry, RunbookComponent};
use crate::runbook::{self, BodyKind, DefinitionError, LoadContext, Runbook};
use crate::script::Script;
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::Arc;

/// A runbook's compiled body.
pub enum Body {
    /// A compiled Rhai script.
    Script(Script),
    /// A pre-instantiated Wasm runbook component.
    Wasm(RunbookComponent),
}

/// A runbook ready to run.
pub struct Prepared {
    /// The validated definition.
    pub runbook: Runbook,
    /// Its compiled body.
    pub body: Body,
}

/// Loaded runbooks by name, and every definition error found.
#[derive(Default)]
pub struct Catalog {
    runbooks: BTreeMap<String, Arc<Prepared>>,
    errors: Vec<DefinitionError>,
    /// How many runbook directories were looked at.
    pub scanned: usize,
}

impl Catalog {
    /// Load every runbook under `root` (or `root` itself if it is a runbook directory).
    pub async fn load(
        root: &Path,
        config: &Config,
        registry: &Registry,
        host: &PluginHost,
    ) -> Catalog {
        let mut catalog = Catalog::default();
        let dirs = match runbook::discover(root) {
            Ok(dirs) => dirs,
            Err(e) => {
                catalog.errors.push(e);
                return catalog;
            }
        };
        let names: BTreeSet<String> = registry.plugins().map(|p| p.name().to_string()).collect();
        let ctx = LoadContext {
            config,
            plugins: &names,
        };
        catalog.scanned = dirs.len();
        for dir in dirs {
            match prepare(&dir, &ctx, host).await {
                Ok(p) => {
                    catalog.runbooks.insert(p.runbook.name.clone(), Arc::new(p));
                }
                Err(errors) => catalog.errors.extend(errors),
            }
        }
        catalog
    }

    /// The runbook called `name`.
    pub fn get(&self, name: &str) -> Option<&Arc<Prepared>> {
        self.runbooks.get(name)
    }

    /// Every loaded runbook, by name.
    pub fn runbooks(&self) -> impl Iterator<Item = &Arc<Prepared>> {
        self.runbooks.values()
    }

    /// Every definition error, in file order.
    pub fn errors(&self) -> &[DefinitionError] {
        &self.errors
    }
}

/// Load, validate and compile one runbook directory.
pub async fn prepare(
    dir: &Path,
    ctx: &LoadContext<'_>,
    host: &PluginHost,
) -> Result<Prepared, Vec<DefinitionError>> {
    let runbook = runbook::load(dir, ctx)?;
    let path = runbook.body.path.clone();
    let body = match runbook.body.kind {
        BodyKind::Rhai => {
            let source = String::from_utf8(runbook.body.bytes.clone())
                .map_err(|_| vec![DefinitionError::file(&path, "the script is not UTF-8 text")])?;
            let script = Script::compile(&path.display().to_string(), &source).map_err(|e| {
                vec![DefinitionError {
                    file: path.clone(),
                    position: Some((e.location.line as usize, e.location.column as usize)),
                    field: String::new(),
                    message: e.message.clone(),
                }]
            })?;
            Body::Script(script)
        }
        BodyKind::Wasm => {
            let origin = path.display().to_string();
            let component = host
                .load_runbook(&origin, runbook.body.bytes.clone())
                .await
                .map_err(|e| vec![DefinitionError::file(&path, e.to_string())])?;
            Body::Wasm(component)
        }
    };
    Ok(Prepared { runbook, body })
}
