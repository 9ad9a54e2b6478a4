//! Runbook bodies written as WebAssembly components: the `runbook` world of `wit/plugin.wit`.
//!
//! [`PluginHost::load_runbook`] compiles a component through the same cache as plugins, checks
//! its `runloom:plugin` version and pre-instantiates it with a linker of its own.
//! [`RunbookComponent::run`] runs it once, in a fresh instance, against a [`RunApi`]: the host
//! calls a Rhai body gets too (plugin calls, steps, sleep, log, secrets, parameters, trigger).
//!
//! Invariant: a runbook has no grants. Its WASI context has no preopened directory, no socket,
//! no environment; outgoing HTTP is linked (toolchains import it) but every request is denied.
//! It reaches the world only through `engine` calls, which the executor checks and records.

use super::epoch::EPOCH_TICK;
use super::host::{self, Denials, Egress, Limiter};
use super::{DeadlinePassed, LoadError, PluginHost};
use crate::grant::Grants;
use crate::runbook::api::{self, BodyError, CallOptions, Level, RunApi};
use std::fmt::Write as _;
use std::sync::Arc;
use std::time::{Duration, Instant};
use wasmtime::Store;
use wasmtime::component::{HasSelf, Linker, ResourceTable};
use wasmtime_wasi::p2::pipe::MemoryOutputPipe;
use wasmtime_wasi::{WasiCtx, WasiCtxBuilder, WasiCtxView, WasiView};
use wasmtime_wasi_http::{WasiHttpCtx, WasiHttpCtxView, WasiHttpView};

/// Host bindings for the `runbook` world. `log` is the plugins' interface, shared.
mod bindings {
    wasmtime::component::bindgen!({
        world: "runbook",
        path: "../wit",
        imports: { default: async | trappable },
        exports: { default: async },
        with: {
            "wasi:io": wasmtime_wasi::p2::bindings::io,
            "wasi:clocks": wasmtime_wasi::p2::bindings::clocks,
            "wasi:random": wasmtime_wasi::p2::bindings::random,
            "runloom:plugin/log": crate::plugin::bindings::runloom::plugin::log,
        },
    });

    pub(super) use self::exports::runloom::plugin::body::RunError;
    pub(super) use self::runloom::plugin::engine;
}

use bindings::engine;

/// Interface every runbook component exports.
const BODY_INTERFACE: &str = "runloom:plugin/body";

/// Limits of one run of a runbook body. Its deadline is the run's own ([`RunApi::deadline`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RunbookLimits {
    /// Linear memory cap in bytes (never more than the host's `max_memory`).
    pub memory: u64,
    /// Largest output document in bytes; also the cap on captured stdout and stderr.
    pub output: usize,
}

impl Default for RunbookLimits {
    fn default() -> Self {
        Self {
            memory: 64 * 1024 * 1024,
            output: 1024 * 1024,
        }
    }
}

/// A loaded runbook component, ready to run. Cheap to clone.
#[derive(Clone)]
pub struct RunbookComponent {
    inner: Arc<RunbookInner>,
}

struct RunbookInner {
    host: PluginHost,
    pre: bindings::RunbookPre<RunbookState>,
    content_hash: String,
    origin: String,
}

impl std::fmt::Debug for RunbookComponent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RunbookComponent")
            .field("origin", &self.inner.origin)
            .field("content_hash", &self.inner.content_hash)
            .finish()
    }
}

/// Everything a runbook instance can reach during one run.
pub(super) struct RunbookState {
    wasi: WasiCtx,
    table: ResourceTable,
    http: WasiHttpCtx,
    /// Built with no grants, so it denies every request (and records it).
    egress: Egress,
    denials: Denials,
    /// Shares its buffer with the pipe given to WASI as stdout.
    stdout: MemoryOutputPipe,
    /// Shares its buffer with the pipe given to WASI as stderr.
    stderr: MemoryOutputPipe,
    limiter: Limiter,
    api: Arc<dyn RunApi>,
}

/// The linker for runbooks: WASI (denied by each run's context, never by leaving an import
/// unlinked, since toolchains import more than a runbook uses), `log` and `engine`.
pub(super) fn linker(engine: &wasmtime::Engine) -> anyhow::Result<Linker<RunbookState>> {
    let mut linker = Linker::<RunbookState>::new(engine);
    wasmtime_wasi::p2::add_to_linker_async(&mut linker)?;
    wasmtime_wasi_http::p2::add_only_http_to_linker_async(&mut linker)?;
    type Own = HasSelf<RunbookState>;
    super::bindings::log::add_to_linker::<RunbookState, Own>(&mut linker, |s| s)?;
    engine::add_to_linker::<RunbookState, Own>(&mut linker, |s| s)?;
    Ok(linker)
}

impl PluginHost {
    /// Load a component as a runbook body. `origin` names it in messages
    /// (`runbooks/disk-space-low/main.wasm`).
    ///
    /// Rejects components built against another `runloom:plugin` version, components that do
    /// not export `runloom:plugin/body` (a plugin, say), and components importing anything
    /// beyond the `runbook` world and WASI.
    pub async fn load_runbook(
        &self,
        origin: &str,
        bytes: Vec<u8>,
    ) -> Result<RunbookComponent, LoadError> {
        let (component, content_hash) = self
            .compile(origin, std::borrow::Cow::Owned(bytes), None)
            .await?;
        if !self.check_contract(origin, &component, BODY_INTERFACE)? {
            return Err(LoadError::NotARunbook {
                origin: origin.to_string(),
            });
        }
        let link_error = |e: wasmtime::Error| LoadError::Link {
            origin: origin.to_string(),
            message: format!("{e:#}"),
        };
        let pre = self
            .inner
            .runbook_linker
            .instantiate_pre(&component)
            .map_err(link_error)?;
        let pre = bindings::RunbookPre::new(pre).map_err(link_error)?;
        Ok(RunbookComponent {
            inner: Arc::new(RunbookInner {
                host: self.clone(),
                pre,
                content_hash,
                origin: origin.to_string(),
            }),
        })
    }
}

impl RunbookComponent {
    /// Where the component came from, as given to [`PluginHost::load_runbook`].
    pub fn origin(&self) -> &str {
        &self.inner.origin
    }

    /// Hex SHA-256 of the component bytes; recorded on every run of the runbook.
    pub fn content_hash(&self) -> &str {
        &self.inner.content_hash
    }

    /// Run the body once in a fresh instance and return its output document.
    ///
    /// The run ends at `api.deadline()` ([`BodyError::TimedOut`]), as soon as
    /// `api.is_cancelled()` turns true while the body computes, or when a sleep returns
    /// early because of it ([`BodyError::Cancelled`]). A trap fails the run with kind
    /// `crashed`, memory growth past `limits.memory` with kind `memory_limit`, both blamed on
    /// the runbook. A run-error returned by the body fails the run with its kind and blame.
    ///
    /// The body takes one of the host's runbook-body slots (waiting for one, up to its
    /// deadline), not a plugin-call slot: it holds its instance for the whole run while its
    /// own plugin calls need call slots, so sharing them could deadlock.
    pub async fn run(
        &self,
        api: Arc<dyn RunApi>,
        limits: RunbookLimits,
    ) -> Result<serde_json::Value, BodyError> {
        let deadline = api.deadline();
        let _slot =
            match tokio::time::timeout_at(deadline.into(), self.inner.host.body_slot()).await {
                Ok(slot) => slot,
                Err(_) => return Err(BodyError::TimedOut),
            };
        let mut store = self.store(api.clone(), deadline, limits);
        let pre = &self.inner.pre;
        let result = {
            let fut = async {
                let instance = pre.instantiate_async(&mut store).await?;
                instance.runloom_plugin_body().call_run(&mut store).await
            };
            // The epoch callback interrupts a body that computes past its deadline or after a
            // cancellation; this timeout ends one waiting in a host call that did not return
            // at the deadline. A little slack lets the trap win the race.
            let until = deadline.checked_add(EPOCH_TICK * 5).unwrap_or(deadline);
            tokio::time::timeout_at(until.into(), fut).await
        };
        let outcome = classify(api.as_ref(), store.data(), result, limits);
        forward_stdio(store.data());
        outcome
    }

    fn store(
        &self,
        api: Arc<dyn RunApi>,
        deadline: Instant,
        limits: RunbookLimits,
    ) -> Store<RunbookState> {
        let host = &self.inner.host;
        let (stdout, stderr) = (
            MemoryOutputPipe::new(limits.output),
            MemoryOutputPipe::new(limits.output),
        );
        let mut wasi = WasiCtxBuilder::new();
        // Nothing else is granted: no preopens, no environment; sockets are denied by default.
        wasi.stdout(stdout.clone()).stderr(stderr.clone());
        let denials = Denials::default();
        let state = RunbookState {
            wasi: wasi.build(),
            table: ResourceTable::new(),
            http: WasiHttpCtx::new(),
            // A runbook body is granted no host: every request is denied before it is sent.
            egress: Egress {
                plugin: "runbook".into(),
                grants: Arc::new(Grants::default()),
                denials: denials.clone(),
                deadline,
                keep_alive: Duration::ZERO,
                connections: host.inner.connections.clone(),
            },
            denials,
            stdout,
            stderr,
            limiter: host.limiter(limits.memory),
            api: api.clone(),
        };
        let mut store = Store::new(&host.inner.engine, state);
        store.limiter(|s| &mut s.limiter);
        super::arm_epochs(&mut store, host.inner.epoch.awake(), deadline, move || {
            api.is_cancelled()
                .then(|| wasmtime::Error::new(RunCancelled))
        });
        store
    }
}

/// Marker error: the run was cancelled while the body was computing.
#[derive(Debug)]
struct RunCancelled;

impl std::fmt::Display for RunCancelled {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("the run was cancelled")
    }
}

impl std::error::Error for RunCancelled {}

type RawRun =
    Result<wasmtime::Result<Result<String, bindings::RunError>>, tokio::time::error::Elapsed>;

/// Turn how a run ended into its output or a [`BodyError`].
fn classify(
    api: &dyn RunApi,
    state: &RunbookState,
    result: RawRun,
    limits: RunbookLimits,
) -> Result<serde_json::Value, BodyError> {
    let denied = state
        .denials
        .lock()
        .ok()
        .and_then(|d| d.first().cloned())
        .map(|d| {
            failed(
                "denied",
                format!(
                    "the runbook may not {} `{}`: a runbook reaches the world only through plugin calls",
                    d.capability, d.target
                ),
            )
        });
    match result {
        Err(_elapsed) => Err(BodyError::TimedOut),
        Ok(Err(trap)) => Err(if trap.downcast_ref::<DeadlinePassed>().is_some() {
            BodyError::TimedOut
        } else if trap.downcast_ref::<RunCancelled>().is_some() {
            BodyError::Cancelled
        } else if state.limiter.memory_hit {
            failed(
                "memory_limit",
                format!(
                    "the runbook exceeded its memory limit of {} MiB",
                    limits.memory / (1024 * 1024)
                ),
            )
        } else if let Some(denied) = denied {
            // Crashing on a refused capability: the refusal is what the author can act on.
            denied
        } else if trap.downcast_ref::<wasmtime::Trap>().is_some() {
            let message =
                super::panic_message(&state.stderr).unwrap_or_else(|| format!("{trap:#}"));
            failed("crashed", format!("the runbook crashed: {message}"))
        } else {
            BodyError::Engine(format!("{trap:#}"))
        }),
        Ok(Ok(Err(bindings::RunError::Failed(reason)))) => {
            Err(denied.unwrap_or_else(|| failed("fail", reason)))
        }
        Ok(Ok(Err(bindings::RunError::Step(e)))) => Err(step_failure(api, e)),
        Ok(Ok(Ok(output))) => {
            if output.len() > limits.output {
                return Err(failed(
                    "output_too_large",
                    format!(
                        "the runbook returned {} bytes of output; the limit is {}",
                        output.len(),
                        limits.output
                    ),
                ));
            }
            serde_json::from_str(&output).map_err(|e| {
                failed(
                    "invalid_output",
                    format!("the runbook returned output that is not JSON: {e}"),
                )
            })
        }
    }
}

/// A failure of kind `kind` blamed on the runbook.
fn failed(kind: &str, message: String) -> BodyError {
    BodyError::Failed {
        message,
        blame: "runbook".into(),
        location: None,
        kind: kind.into(),
    }
}

/// A step error the body returned. `cancelled` and `deadline` end the run as such only when
/// that is what happened: a body cannot fake an interruption.
fn step_failure(api: &dyn RunApi, e: engine::StepError) -> BodyError {
    match e.kind.as_str() {
        "cancelled" if api.is_cancelled() => BodyError::Cancelled,
        "deadline" if Instant::now() >= api.deadline() => BodyError::TimedOut,
        _ => BodyError::Failed {
            message: e.message,
            blame: e.blame,
            location: None,
            kind: e.kind,
        },
    }
}

/// Hand what the body printed to the run's log, one line each: stdout as `info`, stderr as
/// `warn`.
fn forward_stdio(state: &RunbookState) {
    for (pipe, level) in [(&state.stdout, Level::Info), (&state.stderr, Level::Warn)] {
        for line in String::from_utf8_lossy(&pipe.contents()).lines() {
            if !line.trim().is_empty() {
                state.api.log(level, &host::clip(line.to_string()));
            }
        }
    }
}

impl WasiView for RunbookState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl WasiHttpView for RunbookState {
    fn http(&mut self) -> WasiHttpCtxView<'_> {
        WasiHttpCtxView {
            ctx: &mut self.http,
            table: &mut self.table,
            hooks: &mut self.egress,
        }
    }
}

impl super::bindings::log::Host for RunbookState {
    async fn log(
        &mut self,
        level: super::bindings::log::Level,
        message: String,
        fields: Vec<(String, String)>,
    ) -> wasmtime::Result<()> {
        use super::bindings::log::Level as Wit;
        let level = match level {
            Wit::Trace | Wit::Debug => Level::Debug,
            Wit::Info => Level::Info,
            Wit::Warn => Level::Warn,
            Wit::Error => Level::Error,
        };
        // The run's log has no fields; they follow the message as `key=value`.
        let mut line = message;
        for (key, value) in fields {
            let _ = write!(line, " {key}={value}");
        }
        self.api.log(level, &host::clip(line));
        Ok(())
    }
}

impl engine::Host for RunbookState {
    async fn call(
        &mut self,
        plugin: String,
        action: String,
        input: String,
        options: engine::CallOptions,
    ) -> wasmtime::Result<Result<String, engine::StepError>> {
        let input = match serde_json::from_str(&input) {
            Ok(input) => input,
            Err(e) => {
                let message =
                    format!("the input for `{plugin}` action `{action}` is not JSON: {e}");
                return Ok(Err(to_wit(api::StepError::new(
                    "invalid_input",
                    "runbook",
                    message,
                ))));
            }
        };
        let options = CallOptions {
            retries: options.retries,
            timeout: options.timeout_ms.map(Duration::from_millis),
        };
        let output = self.api.call(&plugin, &action, input, options).await;
        Ok(output.map(|v| v.to_string()).map_err(to_wit))
    }

    async fn begin_step(&mut self, name: String) -> wasmtime::Result<()> {
        self.api.begin_step(&name).await;
        Ok(())
    }

    async fn end_step(&mut self, error: Option<engine::StepError>) -> wasmtime::Result<()> {
        let error = error.map(from_wit);
        self.api.end_step(error.as_ref()).await;
        Ok(())
    }

    async fn sleep(&mut self, duration_ms: u64) -> wasmtime::Result<Result<(), engine::StepError>> {
        let slept = self.api.sleep(Duration::from_millis(duration_ms)).await;
        Ok(slept.map_err(to_wit))
    }

    async fn secret(
        &mut self,
        name: String,
    ) -> wasmtime::Result<Result<String, engine::StepError>> {
        Ok(self.api.secret(&name).await.map_err(to_wit))
    }

    async fn parameters(&mut self) -> wasmtime::Result<String> {
        Ok(serde_json::to_string(self.api.parameters())?)
    }

    async fn trigger(&mut self) -> wasmtime::Result<String> {
        Ok(self.api.trigger().to_string())
    }

    async fn cancelled(&mut self) -> wasmtime::Result<bool> {
        Ok(self.api.is_cancelled())
    }

    async fn time_left_ms(&mut self) -> wasmtime::Result<u64> {
        let left = self
            .api
            .deadline()
            .saturating_duration_since(Instant::now());
        Ok(u64::try_from(left.as_millis()).unwrap_or(u64::MAX))
    }
}

fn to_wit(e: api::StepError) -> engine::StepError {
    engine::StepError {
        kind: e.kind,
        message: e.message,
        blame: e.blame,
        retryable: e.retryable,
    }
}

fn from_wit(e: engine::StepError) -> api::StepError {
    api::StepError {
        kind: e.kind,
        message: e.message,
        blame: e.blame,
        retryable: e.retryable,
    }
}
