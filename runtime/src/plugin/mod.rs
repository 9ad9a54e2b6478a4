//! The plugin host: loads WebAssembly component plugins and calls their actions in a sandbox.
//!
//! One [`PluginHost`] per process holds the wasmtime engine (pooling allocator, epoch
//! interruption), the linker, and the compiled-code cache. [`PluginHost::load`] compiles a
//! component once (or loads it from the cache), checks that it was built against a compatible
//! `runloom:plugin` WIT version, pre-instantiates it and reads its manifest.
//! [`PluginHost::call`] runs one action in a fresh instance with the caller's grants, a
//! wall-clock deadline, a memory cap and an output cap, and classifies every way it can end.
//! Runbook bodies written as components load and run here too
//! ([`PluginHost::load_runbook`]): same engine, cache and limits, and no grants at all.
//!
//! Invariant: this is the only module that names wasmtime. Nothing survives from one call to
//! the next: every call gets a new `Store` and instance. Every capability check happens here,
//! on every use, against the grants passed with the call.

mod bindings;
mod cache;
mod epoch;
mod exec;
mod host;
mod outgoing;
mod registry;
mod runbook;
mod system;
mod tls;

use crate::grant::{Denial, DirMode, Grants};
use anyhow::Context as _;
use epoch::{Awake, EPOCH_TICK, EpochClock};
use host::{CallEnv, Denials, Egress, HostState, Limiter};
use serde::Serialize;
use std::borrow::Cow;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use wasmtime::component::{Linker, ResourceTable};
use wasmtime::{Engine, Store, UpdateDeadline};
use wasmtime_wasi::p2::pipe::MemoryOutputPipe;
use wasmtime_wasi::{FsPerms, WasiCtxBuilder};
use wasmtime_wasi_http::WasiHttpCtx;

pub use cache::{CHILD_SUBCOMMAND, compile_child, content_hash};
pub use registry::{LoadProblem, Registry, load_file};
pub use runbook::{RunbookComponent, RunbookLimits};

/// The WIT package version this host implements. Plugins must match its major.minor.
pub const WIT_VERSION: &str = "0.1.0";
/// Interface every plugin exports.
const HANDLER_INTERFACE: &str = "runloom:plugin/handler";

/// Deadline for `describe` at load time.
const DESCRIBE_TIMEOUT: Duration = Duration::from_secs(5);

/// Engine-wide settings, fixed for the life of a [`PluginHost`].
#[derive(Debug, Clone)]
pub struct HostConfig {
    /// Where compiled plugins are cached; `None` compiles in memory on every load.
    pub cache_dir: Option<PathBuf>,
    /// The `runloom` executable to compile cache misses in, as a child process, so the
    /// compiler's code and memory never stay with a long-lived process; `None` compiles
    /// in-process. Needs `cache_dir`.
    pub compiler: Option<PathBuf>,
    /// Most plugin calls running at once; more calls wait for a slot.
    pub max_concurrent_calls: u32,
    /// Most WebAssembly runbook bodies running at once, each holding its instance for its
    /// whole run; more wait for a slot. Separate from the call slots, which their own plugin
    /// calls need.
    pub max_concurrent_runbooks: u32,
    /// Largest memory limit any single call may be given, in bytes.
    pub max_memory: u64,
}

impl Default for HostConfig {
    fn default() -> Self {
        Self {
            cache_dir: None,
            compiler: None,
            max_concurrent_calls: 128,
            max_concurrent_runbooks: 256,
            max_memory: 256 * 1024 * 1024,
        }
    }
}

/// Per-call limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Wall-clock deadline for the whole call, including host calls the plugin makes.
    pub timeout: Duration,
    /// Linear memory cap in bytes.
    pub memory: u64,
    /// Largest output document in bytes.
    pub output: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            timeout: Duration::from_secs(30),
            memory: 64 * 1024 * 1024,
            output: 1024 * 1024,
        }
    }
}

/// Whether an action only observes (`read`) or changes something (`mutate`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ActionKind {
    /// Observes only; runs during a dry-run.
    Read,
    /// Changes something; planned, not invoked, during a dry-run.
    Mutate,
}

impl std::fmt::Display for ActionKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            ActionKind::Read => "read",
            ActionKind::Mutate => "mutate",
        })
    }
}

/// One action a plugin offers.
#[derive(Debug, Clone, Serialize)]
pub struct ActionInfo {
    /// Name used to call it.
    pub name: String,
    /// What it does.
    pub description: String,
    /// `read` or `mutate`.
    pub kind: ActionKind,
    /// JSON Schema of the input.
    pub input_schema: serde_json::Value,
    /// JSON Schema of the output.
    pub output_schema: serde_json::Value,
}

/// What a plugin says about itself.
#[derive(Debug, Clone, Serialize)]
pub struct Manifest {
    /// Plugin name (kebab-case).
    pub name: String,
    /// Plugin version.
    pub version: String,
    /// What the plugin is for.
    pub description: String,
    /// Its actions.
    pub actions: Vec<ActionInfo>,
}

impl Manifest {
    /// The action called `name`.
    pub fn action(&self, name: &str) -> Option<&ActionInfo> {
        self.actions.iter().find(|a| a.name == name)
    }
}

/// A loaded plugin, ready to call. Cheap to clone.
#[derive(Clone)]
pub struct Plugin {
    inner: Arc<PluginInner>,
}

struct PluginInner {
    manifest: Manifest,
    content_hash: String,
    origin: String,
    /// The compiled code, ready to instantiate; `None` once dropped ([`Plugin::without_code`]).
    pre: Option<bindings::PluginPre<HostState>>,
}

impl std::fmt::Debug for Plugin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Plugin")
            .field("name", &self.inner.manifest.name)
            .field("content_hash", &self.inner.content_hash)
            .field("origin", &self.inner.origin)
            .finish()
    }
}

impl Plugin {
    /// The plugin's name from its manifest.
    pub fn name(&self) -> &str {
        &self.inner.manifest.name
    }

    /// The manifest read at load.
    pub fn manifest(&self) -> &Manifest {
        &self.inner.manifest
    }

    /// The same plugin without its compiled code: it can still be listed and inspected, not
    /// called. A node keeps code only for the plugins its runbooks declare (a runbook may
    /// call no other), so the others cost no memory once loaded.
    pub fn without_code(&self) -> Plugin {
        Plugin {
            inner: Arc::new(PluginInner {
                manifest: self.inner.manifest.clone(),
                content_hash: self.inner.content_hash.clone(),
                origin: self.inner.origin.clone(),
                pre: None,
            }),
        }
    }

    /// Whether it can be called (its compiled code is kept).
    pub fn has_code(&self) -> bool {
        self.inner.pre.is_some()
    }

    /// Hex SHA-256 of the component bytes; recorded on every run that calls the plugin.
    pub fn content_hash(&self) -> &str {
        &self.inner.content_hash
    }

    /// Where the plugin came from (`builtin:http-check`, or a file path).
    pub fn origin(&self) -> &str {
        &self.inner.origin
    }
}

/// Where a call comes from.
#[derive(Debug, Clone, Default)]
pub struct CallContext {
    /// The run (empty for one-off calls).
    pub run_id: String,
    /// The step within the run (empty for one-off calls).
    pub step_id: String,
    /// Stable across retries of the same step.
    pub idempotency_key: String,
    /// Whether the run is a dry-run.
    pub dry_run: bool,
}

/// Severity of a log line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LogLevel {
    /// Very detailed diagnostics.
    Trace,
    /// Diagnostics.
    Debug,
    /// Normal progress.
    Info,
    /// Something unexpected that did not stop the action.
    Warn,
    /// Something failed.
    Error,
}

impl std::fmt::Display for LogLevel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            LogLevel::Trace => "trace",
            LogLevel::Debug => "debug",
            LogLevel::Info => "info",
            LogLevel::Warn => "warn",
            LogLevel::Error => "error",
        })
    }
}

/// Which channel a log line came through.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LogSource {
    /// The plugin's `log` import.
    Plugin,
    /// The plugin's stdout.
    Stdout,
    /// The plugin's stderr.
    Stderr,
    /// The engine, about the plugin (a granted secret with no value, dropped lines).
    Engine,
}

impl std::fmt::Display for LogSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            LogSource::Plugin => "plugin",
            LogSource::Stdout => "stdout",
            LogSource::Stderr => "stderr",
            LogSource::Engine => "engine",
        })
    }
}

/// One log line produced during a call.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LogLine {
    /// Severity.
    pub level: LogLevel,
    /// Channel.
    pub source: LogSource,
    /// Text.
    pub message: String,
    /// `key=value` fields.
    pub fields: Vec<(String, String)>,
}

impl LogLine {
    /// A line with the given parts.
    pub fn new(
        level: LogLevel,
        source: LogSource,
        message: String,
        fields: Vec<(String, String)>,
    ) -> Self {
        Self {
            level,
            source,
            message,
            fields,
        }
    }
}

/// Receives log lines as a call produces them.
pub type LogSink = Arc<dyn Fn(LogLine) + Send + Sync>;

/// Where secret values come from. The host asks only for names granted to the plugin.
///
/// Asynchronous because a value may be read from a file at the moment it is asked for: a
/// slow or hung mount must hold up the call that asked, never an async worker thread.
#[async_trait::async_trait]
pub trait SecretSource: Send + Sync {
    /// The value of `name`, if this host has one.
    async fn get(&self, name: &str) -> Option<String>;
}

/// A source with no secrets.
#[derive(Debug, Default)]
pub struct NoSecrets;

#[async_trait::async_trait]
impl SecretSource for NoSecrets {
    async fn get(&self, _name: &str) -> Option<String> {
        None
    }
}

/// One action call.
#[derive(Clone)]
pub struct CallRequest {
    /// Action name.
    pub action: String,
    /// Input JSON document.
    pub input: String,
    /// Run, step, idempotency key, dry-run flag.
    pub context: CallContext,
    /// What the plugin may use during this call.
    pub grants: Arc<Grants>,
    /// Where granted secrets come from.
    pub secrets: Arc<dyn SecretSource>,
    /// Deadline, memory and output caps.
    pub limits: Limits,
    /// Receives log lines live; `None` discards them.
    pub log: Option<LogSink>,
    /// How long the plugin's idle outgoing HTTP connections are kept for its next requests;
    /// zero: a connection per request.
    pub keep_alive: Duration,
}

impl CallRequest {
    /// A call of `action` with `input`, no grants, default limits, and no log sink.
    pub fn new(action: impl Into<String>, input: impl Into<String>) -> Self {
        Self {
            action: action.into(),
            input: input.into(),
            context: CallContext::default(),
            grants: Arc::new(Grants::default()),
            secrets: Arc::new(NoSecrets),
            limits: Limits::default(),
            log: None,
            keep_alive: Duration::ZERO,
        }
    }
}

/// Who is to blame for a failed call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Blame {
    /// The runbook (bad input, a missing grant).
    Runbook,
    /// The plugin (it failed, crashed, or broke a limit).
    Plugin,
    /// The engine or its host (a bug, a misconfiguration).
    Engine,
}

/// Why a call produced no output. Every variant except [`CallError::Engine`] is a step
/// failure; `Engine` is a fault of Runloom or its host.
#[derive(Debug, thiserror::Error)]
pub enum CallError {
    /// The plugin rejected the input.
    #[error("invalid input: {0}")]
    InvalidInput(String),
    /// The plugin ran the action and it failed.
    #[error("{0}")]
    Failed(String),
    /// A transient failure the runbook may retry.
    #[error("{0}")]
    Retryable(String),
    /// The plugin needed a capability it was not granted.
    #[error("{}", denial.render(plugin))]
    Denied {
        /// Plugin name.
        plugin: String,
        /// What was denied.
        denial: Denial,
    },
    /// The call ran past its deadline.
    #[error("plugin `{plugin}` did not finish within {}", humantime::format_duration(*after))]
    Timeout {
        /// Plugin name.
        plugin: String,
        /// The deadline.
        after: Duration,
    },
    /// The plugin tried to grow its memory past the limit.
    #[error("plugin `{plugin}` exceeded its memory limit of {} MiB", limit / (1024 * 1024))]
    MemoryLimit {
        /// Plugin name.
        plugin: String,
        /// The limit in bytes.
        limit: u64,
    },
    /// The output document is larger than allowed.
    #[error("plugin `{plugin}` returned {size} bytes of output; the limit is {limit}")]
    OutputTooLarge {
        /// Plugin name.
        plugin: String,
        /// Output size in bytes.
        size: usize,
        /// The limit in bytes.
        limit: usize,
    },
    /// The output is not a JSON document.
    #[error("plugin `{plugin}` returned output that is not JSON: {message}")]
    InvalidOutput {
        /// Plugin name.
        plugin: String,
        /// Parser message.
        message: String,
    },
    /// The plugin trapped (a Rust panic, an `unreachable`, a stack overflow).
    #[error("plugin `{plugin}` crashed: {message}")]
    Crashed {
        /// Plugin name.
        plugin: String,
        /// The panic message when the plugin printed one, else the trap.
        message: String,
    },
    /// The plugin cannot be called as configured (a granted directory is missing, say).
    #[error("plugin `{plugin}` cannot start: {message}")]
    Misconfigured {
        /// Plugin name.
        plugin: String,
        /// What is wrong.
        message: String,
    },
    /// A fault in the engine.
    #[error("engine fault: {0:#}")]
    Engine(anyhow::Error),
}

impl CallError {
    /// A short, stable name for the kind of failure, used in stored records and exit codes.
    pub fn kind(&self) -> &'static str {
        match self {
            CallError::InvalidInput(_) => "invalid_input",
            CallError::Failed(_) => "failed",
            CallError::Retryable(_) => "retryable",
            CallError::Denied { .. } => "denied",
            CallError::Timeout { .. } => "timeout",
            CallError::MemoryLimit { .. } => "memory_limit",
            CallError::OutputTooLarge { .. } => "output_too_large",
            CallError::InvalidOutput { .. } => "invalid_output",
            CallError::Crashed { .. } => "crashed",
            CallError::Misconfigured { .. } => "misconfigured",
            CallError::Engine(_) => "engine",
        }
    }

    /// Whether a retry may succeed.
    pub fn is_retryable(&self) -> bool {
        matches!(self, CallError::Retryable(_) | CallError::Timeout { .. })
    }

    /// Who is to blame.
    pub fn blame(&self) -> Blame {
        match self {
            CallError::InvalidInput(_) | CallError::Denied { .. } => Blame::Runbook,
            CallError::Misconfigured { .. } | CallError::Engine(_) => Blame::Engine,
            _ => Blame::Plugin,
        }
    }
}

/// A successful call.
#[derive(Debug, Clone)]
pub struct CallOutput {
    /// The output document.
    pub output: serde_json::Value,
    /// Wall-clock time of the call, instantiation included.
    pub duration: Duration,
}

/// Why a component could not be loaded as a plugin.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// Not a valid WebAssembly component.
    #[error("`{origin}` is not a valid WebAssembly component: {message}")]
    Invalid {
        /// File or builtin name.
        origin: String,
        /// What wasmtime said.
        message: String,
    },
    /// Built against another version of the plugin contract.
    #[error(
        "`{origin}` was built against runloom:plugin@{found}, but this runloom implements runloom:plugin@{WIT_VERSION}; rebuild it with a runloom-sdk for {WIT_VERSION}"
    )]
    IncompatibleVersion {
        /// File or builtin name.
        origin: String,
        /// Version the plugin was built against.
        found: String,
    },
    /// Exports no `runloom:plugin/handler`.
    #[error("`{origin}` is not a Runloom plugin: it does not export `{HANDLER_INTERFACE}`")]
    NotAPlugin {
        /// File or builtin name.
        origin: String,
    },
    /// Exports no `runloom:plugin/body`.
    #[error("`{origin}` is not a Runloom runbook: it does not export `runloom:plugin/body`")]
    NotARunbook {
        /// File name.
        origin: String,
    },
    /// Needs an import the host does not provide.
    #[error("`{origin}` cannot be linked: {message}")]
    Link {
        /// File or builtin name.
        origin: String,
        /// What wasmtime said, naming the import.
        message: String,
    },
    /// `describe` failed or returned something unusable.
    #[error("`{origin}` has an invalid manifest: {message}")]
    Manifest {
        /// File or builtin name.
        origin: String,
        /// What is wrong.
        message: String,
    },
    /// A fault in the engine.
    #[error("engine fault loading `{origin}`: {source:#}")]
    Engine {
        /// File or builtin name.
        origin: String,
        /// The fault.
        source: anyhow::Error,
    },
}

/// Loads and calls plugins. Cheap to clone; share one per process.
#[derive(Clone)]
pub struct PluginHost {
    inner: Arc<HostInner>,
}

struct HostInner {
    engine: Engine,
    /// Advances the engine's epoch while guests may run.
    epoch: EpochClock,
    linker: Linker<HostState>,
    runbook_linker: Linker<runbook::RunbookState>,
    cache: cache::Cache,
    config: HostConfig,
    slots: tokio::sync::Semaphore,
    /// Slots for WebAssembly runbook bodies.
    body_slots: tokio::sync::Semaphore,
    pooling: bool,
    /// Plugins' kept outgoing HTTP connections.
    connections: Arc<outgoing::ConnectionPool>,
}

impl PluginHost {
    /// Build the engine (pooling allocator when the address space allows it, on-demand
    /// otherwise), the linker with every WASI interface and Runloom's imports, and start the
    /// epoch ticker.
    pub fn new(config: HostConfig) -> anyhow::Result<Self> {
        let (engine, pooling) = match build_engine(&config, true) {
            Ok(engine) => (engine, true),
            Err(e) => {
                tracing::warn!(error = %e, "pooling allocator unavailable; using on-demand allocation");
                (build_engine(&config, false)?, false)
            }
        };
        let mut linker = Linker::<HostState>::new(&engine);
        wasmtime_wasi::p2::add_to_linker_async(&mut linker)?;
        wasmtime_wasi_http::p2::add_only_http_to_linker_async(&mut linker)?;
        // Runloom's own interfaces; WASI is linked above, each with its own context.
        type Own = wasmtime::component::HasSelf<HostState>;
        bindings::types::add_to_linker::<HostState, Own>(&mut linker, |s| s)?;
        bindings::log::add_to_linker::<HostState, Own>(&mut linker, |s| s)?;
        bindings::secrets::add_to_linker::<HostState, Own>(&mut linker, |s| s)?;
        bindings::exec::add_to_linker::<HostState, Own>(&mut linker, |s| s)?;
        bindings::system::add_to_linker::<HostState, Own>(&mut linker, |s| s)?;
        bindings::tls::add_to_linker::<HostState, Own>(&mut linker, |s| s)?;
        let runbook_linker = runbook::linker(&engine)?;
        let epoch = EpochClock::start(&engine, EPOCH_TICK, epoch::IDLE_AFTER);
        let cache = cache::Cache::new(config.cache_dir.clone(), config.compiler.clone(), &engine);
        let slots = tokio::sync::Semaphore::new(config.max_concurrent_calls.max(1) as usize);
        let body_slots =
            tokio::sync::Semaphore::new(config.max_concurrent_runbooks.max(1) as usize);
        Ok(Self {
            inner: Arc::new(HostInner {
                engine,
                epoch,
                linker,
                runbook_linker,
                cache,
                config,
                slots,
                body_slots,
                pooling,
                connections: Arc::default(),
            }),
        })
    }

    /// Wait for a runbook-body slot.
    pub(crate) async fn body_slot(&self) -> Option<tokio::sync::SemaphorePermit<'_>> {
        self.inner.body_slots.acquire().await.ok()
    }

    /// Whether the pooling allocator is in use.
    pub fn is_pooling(&self) -> bool {
        self.inner.pooling
    }

    /// Load a component as a plugin. `origin` names it in messages (`builtin:hello`, a path).
    pub async fn load(&self, origin: &str, bytes: Vec<u8>) -> Result<Plugin, LoadError> {
        self.load_with(origin, Cow::Owned(bytes), None).await
    }

    /// Load a component embedded in the binary whose hex SHA-256 is known: with a warm cache
    /// its bytes are never read, so they are not kept in memory either.
    pub async fn load_embedded(
        &self,
        origin: &str,
        bytes: &'static [u8],
        hash: &'static str,
    ) -> Result<Plugin, LoadError> {
        self.load_with(origin, Cow::Borrowed(bytes), Some(hash))
            .await
    }

    async fn load_with(
        &self,
        origin: &str,
        bytes: Cow<'static, [u8]>,
        hash: Option<&'static str>,
    ) -> Result<Plugin, LoadError> {
        let (component, hash) = self.compile(origin, bytes, hash).await?;
        if !self.check_contract(origin, &component, HANDLER_INTERFACE)? {
            return Err(LoadError::NotAPlugin {
                origin: origin.to_string(),
            });
        }
        let pre = self
            .inner
            .linker
            .instantiate_pre(&component)
            .map_err(|e| LoadError::Link {
                origin: origin.to_string(),
                message: format!("{e:#}"),
            })?;
        let pre = bindings::PluginPre::new(pre).map_err(|e| LoadError::Link {
            origin: origin.to_string(),
            message: format!("{e:#}"),
        })?;
        let manifest = self.describe(origin, &pre).await?;
        Ok(Plugin {
            inner: Arc::new(PluginInner {
                manifest,
                content_hash: hash,
                origin: origin.to_string(),
                pre: Some(pre),
            }),
        })
    }

    /// Compile a component, or load it from the cache, off the async threads. Returns it with
    /// the hex SHA-256 of `bytes`.
    async fn compile(
        &self,
        origin: &str,
        bytes: Cow<'static, [u8]>,
        known_hash: Option<&'static str>,
    ) -> Result<(wasmtime::component::Component, String), LoadError> {
        let inner = self.inner.clone();
        let origin_owned = origin.to_string();
        let (component, hash) = tokio::task::spawn_blocking(move || {
            let hash = known_hash.map_or_else(|| content_hash(&bytes), str::to_string);
            let embedded = known_hash.is_some();
            let compiled = inner
                .cache
                .component(&inner.engine, &bytes, &hash, embedded);
            compiled.map(|(c, _)| (c, hash))
        })
        .await
        .map_err(|e| LoadError::Engine {
            origin: origin.to_string(),
            source: e.into(),
        })?
        .map_err(|e| LoadError::Invalid {
            origin: origin_owned,
            message: format!("{e:#}"),
        })?;
        Ok((component, hash))
    }

    /// Whether the component exports `interface` (`runloom:plugin/handler` for a plugin,
    /// `runloom:plugin/body` for a runbook). Rejects components built against another
    /// `runloom:plugin` version with a message that names both versions, before wasmtime's
    /// generic type-check error can.
    fn check_contract(
        &self,
        origin: &str,
        component: &wasmtime::component::Component,
        interface: &str,
    ) -> Result<bool, LoadError> {
        let ty = component.component_type();
        let engine = &self.inner.engine;
        let mut names: Vec<String> = ty.exports(engine).map(|(n, _)| n.to_string()).collect();
        let exported = names.iter().any(|n| {
            n.strip_prefix(interface)
                .is_some_and(|v| v.starts_with('@'))
        });
        names.extend(ty.imports(engine).map(|(n, _)| n.to_string()));
        let foreign = names
            .iter()
            .filter_map(|n| n.strip_prefix("runloom:plugin/")?.split_once('@'))
            .map(|(_, v)| v.to_string())
            .find(|v| !compatible(v));
        match foreign {
            Some(found) => Err(LoadError::IncompatibleVersion {
                origin: origin.to_string(),
                found,
            }),
            None => Ok(exported),
        }
    }

    /// A memory limiter for `memory` bytes, never more than the engine's largest memory.
    fn limiter(&self, memory: u64) -> Limiter {
        Limiter {
            memory_limit: usize::try_from(memory.min(self.inner.config.max_memory))
                .unwrap_or(usize::MAX),
            memory_hit: false,
        }
    }

    async fn describe(
        &self,
        origin: &str,
        pre: &bindings::PluginPre<HostState>,
    ) -> Result<Manifest, LoadError> {
        let limits = Limits {
            timeout: DESCRIBE_TIMEOUT,
            ..Limits::default()
        };
        let request = CallRequest::new("", "");
        let mut store =
            self.store(origin.into(), &request, limits)
                .map_err(|e| LoadError::Engine {
                    origin: origin.to_string(),
                    source: e,
                })?;
        let fut = async {
            let instance = pre.instantiate_async(&mut store).await?;
            instance
                .runloom_plugin_handler()
                .call_describe(&mut store)
                .await
        };
        let raw = match tokio::time::timeout(DESCRIBE_TIMEOUT, fut).await {
            Ok(Ok(m)) => m,
            Ok(Err(e)) => {
                return Err(LoadError::Manifest {
                    origin: origin.to_string(),
                    message: format!("describe trapped: {e:#}"),
                });
            }
            Err(_) => {
                return Err(LoadError::Manifest {
                    origin: origin.to_string(),
                    message: "describe did not return within 5s".into(),
                });
            }
        };
        convert_manifest(raw).map_err(|message| LoadError::Manifest {
            origin: origin.to_string(),
            message,
        })
    }

    fn store(
        &self,
        plugin: Arc<str>,
        request: &CallRequest,
        limits: Limits,
    ) -> anyhow::Result<Store<HostState>> {
        let deadline = Instant::now() + limits.timeout;
        let denials: Denials = Arc::new(Mutex::new(Vec::new()));
        let grants = request.grants.clone();
        let (stdout, stderr) = (
            MemoryOutputPipe::new(limits.output),
            MemoryOutputPipe::new(limits.output),
        );
        let mut wasi = WasiCtxBuilder::new();
        wasi.stdout(stdout.clone()).stderr(stderr.clone());
        for dir in &grants.dirs {
            let perms = match dir.mode {
                DirMode::Ro => FsPerms::ReadOnly,
                DirMode::Rw => FsPerms::ReadWrite,
            };
            wasi.preopened_dir(&dir.host, &dir.guest, perms)
                .map_err(|e| {
                    Misconfigured(format!("granted directory `{}`: {e}", dir.host.display()))
                })?;
        }
        if !grants.hosts.is_empty() {
            let (check_grants, check_denials) = (grants.clone(), denials.clone());
            wasi.allow_tcp(true)
                .allow_ip_name_lookup(true)
                .socket_addr_check(move |addr, addr_use| {
                    let (grants, denials) = (check_grants.clone(), check_denials.clone());
                    Box::pin(async move {
                        use wasmtime_wasi::sockets::SocketAddrUse;
                        match addr_use {
                            SocketAddrUse::TcpConnect => {
                                socket_allowed(&grants, &denials, addr).await
                            }
                            // Before each connect wasmtime asks whether the socket may take the
                            // ephemeral local address the OS assigns; that is not a listener.
                            SocketAddrUse::TcpBind
                                if addr.ip().is_unspecified() && addr.port() == 0 =>
                            {
                                true
                            }
                            _ => {
                                host::record(&denials, Denial::new("listen on", addr.to_string()));
                                false
                            }
                        }
                    })
                });
        }
        let state = HostState {
            wasi: wasi.build(),
            stdout,
            stderr,
            http: WasiHttpCtx::new(),
            egress: Egress {
                plugin: plugin.clone(),
                grants: grants.clone(),
                denials: denials.clone(),
                deadline,
                keep_alive: request.keep_alive,
                connections: self.inner.connections.clone(),
            },
            table: ResourceTable::new(),
            limiter: self.limiter(limits.memory),
            env: CallEnv {
                plugin,
                grants,
                secrets: request.secrets.clone(),
                log: request.log.clone(),
                deadline,
                denials,
                log_lines: 0,
                log_dropped: 0,
            },
        };
        let mut store = Store::new(&self.inner.engine, state);
        store.limiter(|s| &mut s.limiter);
        arm_epochs(&mut store, self.inner.epoch.awake(), deadline, || None);
        Ok(store)
    }

    /// Call an action of `plugin` in a fresh instance.
    pub async fn call(
        &self,
        plugin: &Plugin,
        request: CallRequest,
    ) -> Result<CallOutput, CallError> {
        let name = plugin.name();
        let Some(pre) = &plugin.inner.pre else {
            return Err(CallError::Engine(anyhow::anyhow!(
                "plugin `{name}` cannot be called on this node: no loaded runbook declares it, so its compiled code was not kept"
            )));
        };
        let _slot = self
            .inner
            .slots
            .acquire()
            .await
            .map_err(|e| CallError::Engine(e.into()))?;
        let started = Instant::now();
        let limits = request.limits;
        let mut store = match self.store(name.into(), &request, limits) {
            Ok(store) => store,
            Err(e) => {
                return Err(match e.downcast::<Misconfigured>() {
                    Ok(Misconfigured(message)) => CallError::Misconfigured {
                        plugin: name.to_string(),
                        message,
                    },
                    Err(e) => CallError::Engine(e),
                });
            }
        };
        let context = bindings::types::CallContext {
            run_id: request.context.run_id.clone(),
            step_id: request.context.step_id.clone(),
            idempotency_key: request.context.idempotency_key.clone(),
            dry_run: request.context.dry_run,
        };
        let result = {
            let fut = async {
                let instance = pre.instantiate_async(&mut store).await?;
                instance
                    .runloom_plugin_handler()
                    .call_invoke(&mut store, &request.action, &request.input, &context)
                    .await
            };
            // The epoch callback traps a guest that computes past its deadline; this timeout
            // ends one that waits in a host call. A little slack lets the trap win the race.
            tokio::time::timeout(limits.timeout + EPOCH_TICK * 5, fut).await
        };
        let duration = started.elapsed();
        let outcome = classify(name, &mut store, result, limits);
        forward_stdio(store.data_mut());
        outcome.map(|output| CallOutput { output, duration })
    }
}

/// Interrupt the guest in `store` at the first epoch tick past `deadline`, or with the error
/// `interrupt` returns (it is asked at every tick). Until then, yield to tokio at every tick:
/// a timeout around the call can fire and other tasks get the thread. The store keeps the
/// clock `awake` until it is dropped.
fn arm_epochs<T: 'static>(
    store: &mut Store<T>,
    awake: Awake,
    deadline: Instant,
    interrupt: impl Fn() -> Option<wasmtime::Error> + Send + Sync + 'static,
) {
    store.set_epoch_deadline(1);
    store.epoch_deadline_callback(move |_| {
        let _ticking = &awake;
        if Instant::now() >= deadline {
            return Err(wasmtime::Error::new(DeadlinePassed));
        }
        if let Some(reason) = interrupt() {
            return Err(reason);
        }
        Ok(UpdateDeadline::YieldCustom(
            1,
            Box::pin(tokio::task::yield_now()),
        ))
    });
}

/// Marker error: the call's deadline passed while the guest was running.
#[derive(Debug)]
struct DeadlinePassed;

impl std::fmt::Display for DeadlinePassed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("deadline passed")
    }
}

impl std::error::Error for DeadlinePassed {}

/// Marker error: the call cannot be set up as configured.
#[derive(Debug)]
struct Misconfigured(String);

impl std::fmt::Display for Misconfigured {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Misconfigured {}

type RawResult =
    Result<wasmtime::Result<Result<String, bindings::types::Error>>, tokio::time::error::Elapsed>;

/// Turn how a call ended into its output or a [`CallError`].
fn classify(
    plugin: &str,
    store: &mut Store<HostState>,
    result: RawResult,
    limits: Limits,
) -> Result<serde_json::Value, CallError> {
    let state = store.data_mut();
    let denial = state
        .env
        .denials
        .lock()
        .ok()
        .and_then(|d| d.first().cloned());
    let denied = |denial: Denial| CallError::Denied {
        plugin: plugin.to_string(),
        denial,
    };
    let timeout = || CallError::Timeout {
        plugin: plugin.to_string(),
        after: limits.timeout,
    };
    match result {
        Err(_elapsed) => Err(timeout()),
        Ok(Err(trap)) => {
            if trap.downcast_ref::<DeadlinePassed>().is_some() {
                Err(timeout())
            } else if state.limiter.memory_hit {
                Err(CallError::MemoryLimit {
                    plugin: plugin.to_string(),
                    limit: limits.memory,
                })
            } else if let Some(denial) = denial {
                // The plugin crashed on a refused capability (a panic on an `Err`, say):
                // the missing grant is the cause an operator can act on.
                Err(denied(denial))
            } else if trap.downcast_ref::<wasmtime::Trap>().is_some() {
                let message = panic_message(&state.stderr).unwrap_or_else(|| format!("{trap:#}"));
                Err(CallError::Crashed {
                    plugin: plugin.to_string(),
                    message,
                })
            } else {
                Err(CallError::Engine(anyhow::anyhow!("{trap:#}")))
            }
        }
        Ok(Ok(Err(error))) => Err(match error {
            bindings::types::Error::InvalidInput(m) => CallError::InvalidInput(m),
            // A plugin that chose to report a failure may have handled a denial on the way
            // (probing for one of several tools, say): its own account stands.
            bindings::types::Error::Failed(m) => CallError::Failed(m),
            bindings::types::Error::Retryable(m) => CallError::Retryable(m),
            bindings::types::Error::Denied(d) => denied(Denial::new(d.capability, d.target)),
        }),
        Ok(Ok(Ok(output))) => {
            if output.len() > limits.output {
                return Err(CallError::OutputTooLarge {
                    plugin: plugin.to_string(),
                    size: output.len(),
                    limit: limits.output,
                });
            }
            serde_json::from_str(&output).map_err(|e| CallError::InvalidOutput {
                plugin: plugin.to_string(),
                message: e.to_string(),
            })
        }
    }
}

/// The Rust panic message the guest printed to `stderr`, if any.
fn panic_message(stderr: &MemoryOutputPipe) -> Option<String> {
    let stderr = stderr.contents();
    let text = String::from_utf8_lossy(&stderr);
    let start = text.find("panicked at ")?;
    let message: Vec<&str> = text[start..].lines().take(2).collect();
    Some(message.join(": "))
}

/// Hand what the plugin printed to stdout and stderr to the log sink, one line each, then
/// say how many lines were dropped over the per-call limit.
fn forward_stdio(state: &mut HostState) {
    for (pipe, source, level) in [
        (state.stdout.contents(), LogSource::Stdout, LogLevel::Info),
        (state.stderr.contents(), LogSource::Stderr, LogLevel::Warn),
    ] {
        for line in String::from_utf8_lossy(&pipe).lines() {
            if !line.trim().is_empty() {
                let message = host::clip(line.to_string());
                state
                    .env
                    .emit(LogLine::new(level, source, message, Vec::new()));
            }
        }
    }
    if state.env.log_dropped > 0 {
        let dropped = state.env.log_dropped;
        if let Some(sink) = &state.env.log {
            sink(LogLine::new(
                LogLevel::Warn,
                LogSource::Engine,
                format!(
                    "{dropped} log lines dropped over the limit of {} per call",
                    host::MAX_LOG_LINES
                ),
                Vec::new(),
            ));
        }
    }
}

fn compatible(version: &str) -> bool {
    let ours: Vec<&str> = WIT_VERSION.split('.').collect();
    let theirs: Vec<&str> = version.split('.').collect();
    theirs.len() == 3 && theirs[..2] == ours[..2]
}

async fn socket_allowed(grants: &Grants, denials: &Denials, addr: SocketAddr) -> bool {
    let ip = addr.ip().to_string();
    if grants.allows_host(&ip, addr.port()) {
        return true;
    }
    // A hostname grant covers the addresses that name resolves to right now.
    for pattern in &grants.hosts {
        let Some(name) = pattern.exact_host() else {
            continue;
        };
        if !pattern.matches(name, addr.port()) {
            continue;
        }
        if let Ok(mut resolved) = tokio::net::lookup_host((name, addr.port())).await
            && resolved.any(|a| a.ip() == addr.ip())
        {
            return true;
        }
    }
    host::record(denials, Denial::new("connect to", addr.to_string()));
    false
}

fn convert_manifest(raw: bindings::types::Manifest) -> Result<Manifest, String> {
    if !is_kebab(&raw.name) {
        return Err(format!(
            "plugin name `{}` must be kebab-case (lowercase letters, digits, `-`)",
            raw.name
        ));
    }
    let mut actions: Vec<ActionInfo> = Vec::with_capacity(raw.actions.len());
    for a in raw.actions {
        if !is_kebab(&a.name) {
            return Err(format!("action name `{}` must be kebab-case", a.name));
        }
        if actions.iter().any(|b| b.name == a.name) {
            return Err(format!("action `{}` is declared twice", a.name));
        }
        let schema = |what: &str, s: &str| {
            serde_json::from_str::<serde_json::Value>(s)
                .map_err(|e| format!("{what} schema of action `{}` is not JSON: {e}", a.name))
        };
        actions.push(ActionInfo {
            input_schema: schema("input", &a.input_schema)?,
            output_schema: schema("output", &a.output_schema)?,
            kind: match a.kind {
                bindings::types::ActionKind::Read => ActionKind::Read,
                bindings::types::ActionKind::Mutate => ActionKind::Mutate,
            },
            name: a.name,
            description: a.description,
        });
    }
    Ok(Manifest {
        name: raw.name,
        version: raw.version,
        description: raw.description,
        actions,
    })
}

fn is_kebab(s: &str) -> bool {
    !s.is_empty()
        && !s.starts_with('-')
        && !s.ends_with('-')
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

fn build_engine(config: &HostConfig, pooling: bool) -> anyhow::Result<Engine> {
    let mut c = wasmtime::Config::new();
    c.epoch_interruption(true);
    c.async_stack_zeroing(true);
    if pooling {
        // Every call and every runbook body is an instance of its own.
        let n = config
            .max_concurrent_calls
            .max(1)
            .saturating_add(config.max_concurrent_runbooks.max(1));
        let mut pool = wasmtime::PoolingAllocationConfig::new();
        pool.total_component_instances(n)
            .total_core_instances(n.saturating_mul(8))
            .total_memories(n.saturating_mul(2))
            .total_tables(n.saturating_mul(4))
            .total_stacks(n)
            .max_memory_size(usize::try_from(config.max_memory).unwrap_or(usize::MAX))
            .max_component_instance_size(10 * 1024 * 1024)
            .max_core_instance_size(10 * 1024 * 1024);
        // Resetting a slot with `madvise` makes the next call page-fault its memory, tables
        // and stack back in; on the benchmark machine that was most of a call's cost
        // (31 µs → 13 µs p50, BENCHMARKS.md). Instead, reset the pages a call dirtied in place
        // (found with the PAGEMAP_SCAN ioctl, Linux ≥ 6.7; `Auto` falls back elsewhere),
        // up to a bound per slot. Instances stay pristine and stacks zeroed either way; the
        // price is resident memory in used slots, at most
        // total_memories × 256 KiB + total_tables × 16 KiB + total_stacks × 32 KiB
        // (76 MiB if all 128 call slots were used at once; `hello` dirties under 16 KiB of
        // stack; body slots cost the same while in use).
        pool.pagemap_scan(wasmtime::Enabled::Auto)
            .linear_memory_keep_resident(256 * 1024)
            .table_keep_resident(16 * 1024)
            .async_stack_keep_resident(32 * 1024);
        c.allocation_strategy(wasmtime::InstanceAllocationStrategy::Pooling(pool));
    }
    Engine::new(&c)
        .map_err(anyhow::Error::from)
        .context("configuring the WebAssembly engine")
}
