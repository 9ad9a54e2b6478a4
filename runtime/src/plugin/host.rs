//! Per-call host state: the WASI context built from the plugin's grants, the memory limiter,
//! and Runloom's own imports (`log`, `secrets`, `exec`), each checking its grant on every use.

use super::bindings::{exec, log, secrets, types};
use super::outgoing::{self, ConnectionPool, Timeouts};
use super::{LogLevel, LogLine, LogSink, LogSource, SecretSource};
use crate::grant::{Denial, Grants};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use wasmtime::component::ResourceTable;
use wasmtime_wasi::p2::pipe::MemoryOutputPipe;
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};
use wasmtime_wasi_http::{WasiHttpCtx, WasiHttpCtxView, WasiHttpHooks, WasiHttpView};

/// Most log lines one call may write; later lines are counted and dropped.
pub(super) const MAX_LOG_LINES: usize = 1000;
/// Longest log message kept; longer ones are cut.
pub(super) const MAX_LOG_LINE_BYTES: usize = 8 * 1024;

/// Denials recorded during one call, shared with the socket check closure.
pub(super) type Denials = Arc<Mutex<Vec<Denial>>>;

pub(super) fn record(denials: &Denials, denial: Denial) {
    if let Ok(mut list) = denials.lock() {
        list.push(denial);
    }
}

/// What a call may do, shared by every import.
pub(super) struct CallEnv {
    pub(super) plugin: Arc<str>,
    pub(super) grants: Arc<Grants>,
    pub(super) secrets: Arc<dyn SecretSource>,
    pub(super) log: Option<LogSink>,
    pub(super) deadline: Instant,
    pub(super) denials: Denials,
    pub(super) log_lines: usize,
    pub(super) log_dropped: usize,
}

impl CallEnv {
    pub(super) fn emit(&mut self, line: LogLine) {
        if self.log_lines >= MAX_LOG_LINES {
            self.log_dropped += 1;
            return;
        }
        self.log_lines += 1;
        if let Some(sink) = &self.log {
            sink(line);
        }
    }

    pub(super) fn remaining(&self) -> Duration {
        self.deadline.saturating_duration_since(Instant::now())
    }
}

/// Refuses memory and table growth past the call's limits, remembering that it did.
pub(super) struct Limiter {
    pub(super) memory_limit: usize,
    pub(super) memory_hit: bool,
}

/// Most table elements a plugin may allocate.
const MAX_TABLE_ELEMENTS: usize = 100_000;

impl wasmtime::ResourceLimiter for Limiter {
    fn memory_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired > self.memory_limit {
            self.memory_hit = true;
            return Ok(false);
        }
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(desired <= MAX_TABLE_ELEMENTS)
    }
}

/// Outgoing HTTP: every request is checked against the host grants before it is sent.
pub(super) struct Egress {
    pub(super) plugin: Arc<str>,
    pub(super) grants: Arc<Grants>,
    pub(super) denials: Denials,
    pub(super) deadline: Instant,
    /// Keep connections this long for the plugin's next requests; zero: one per request.
    pub(super) keep_alive: Duration,
    pub(super) connections: Arc<ConnectionPool>,
}

/// Defaults for HTTP timeouts the plugin did not set; always capped by the call's deadline.
const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
const DEFAULT_BYTE_TIMEOUT: Duration = Duration::from_secs(30);
/// Time left for the plugin to turn an HTTP timeout into a result before its own deadline.
const DEADLINE_MARGIN: Duration = Duration::from_millis(250);

impl WasiHttpHooks for Egress {
    fn send_request(
        &mut self,
        request: http::Request<wasmtime_wasi_http::WasiBody>,
        options: Option<wasmtime_wasi_http::RequestOptions>,
        fut: Box<dyn Future<Output = wasmtime_wasi_http::Result<()>> + Send>,
    ) -> Box<
        dyn Future<
                Output = wasmtime_wasi_http::Result<(
                    http::Response<wasmtime_wasi_http::WasiBody>,
                    Box<dyn Future<Output = wasmtime_wasi_http::Result<()>> + Send>,
                )>,
            > + Send,
    > {
        drop(fut);
        let uri = request.uri();
        let https = uri.scheme() == Some(&http::uri::Scheme::HTTPS);
        let host = uri.host().unwrap_or_default().to_string();
        let port = uri.port_u16().unwrap_or(if https { 443 } else { 80 });
        if !self.grants.allows_host(&host, port) {
            record(
                &self.denials,
                Denial::new("connect to", format!("{host}:{port}")),
            );
            return Box::new(async { Err(wasmtime_wasi_http::Error::HttpRequestDenied) });
        }
        let budget = self
            .deadline
            .saturating_duration_since(Instant::now())
            .saturating_sub(DEADLINE_MARGIN)
            .max(Duration::from_millis(1));
        let given = options.unwrap_or_default();
        let timeouts = Timeouts {
            connect: given
                .connect_timeout
                .unwrap_or(DEFAULT_CONNECT_TIMEOUT)
                .min(budget),
            first_byte: given
                .first_byte_timeout
                .unwrap_or(DEFAULT_BYTE_TIMEOUT)
                .min(budget),
            between_bytes: given
                .between_bytes_timeout
                .unwrap_or(DEFAULT_BYTE_TIMEOUT)
                .min(budget),
        };
        if !self.keep_alive.is_zero() {
            let (pool, plugin, keep) = (
                self.connections.clone(),
                self.plugin.clone(),
                self.keep_alive,
            );
            return Box::new(async move {
                let response = outgoing::send(&pool, plugin, keep, request, timeouts).await?;
                let io = async { Ok(()) };
                Ok((response, Box::new(io) as Box<dyn Future<Output = _> + Send>))
            });
        }
        let options = wasmtime_wasi_http::RequestOptions {
            connect_timeout: Some(timeouts.connect),
            first_byte_timeout: Some(timeouts.first_byte),
            between_bytes_timeout: Some(timeouts.between_bytes),
        };
        Box::new(async move {
            use http_body_util::BodyExt;
            let (response, io) =
                wasmtime_wasi_http::default_send_request(request, Some(options)).await?;
            Ok((
                response.map(BodyExt::boxed_unsync),
                Box::new(io) as Box<dyn Future<Output = _> + Send>,
            ))
        })
    }
}

/// Everything a plugin instance can reach during one call.
pub(super) struct HostState {
    pub(super) wasi: WasiCtx,
    /// Shares its buffer with the pipe given to WASI as stdout.
    pub(super) stdout: MemoryOutputPipe,
    /// Shares its buffer with the pipe given to WASI as stderr.
    pub(super) stderr: MemoryOutputPipe,
    pub(super) http: WasiHttpCtx,
    pub(super) egress: Egress,
    pub(super) table: ResourceTable,
    pub(super) limiter: Limiter,
    pub(super) env: CallEnv,
}

impl WasiView for HostState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl WasiHttpView for HostState {
    fn http(&mut self) -> WasiHttpCtxView<'_> {
        WasiHttpCtxView {
            ctx: &mut self.http,
            table: &mut self.table,
            hooks: &mut self.egress,
        }
    }
}

impl types::Host for HostState {}

impl log::Host for HostState {
    async fn log(
        &mut self,
        level: log::Level,
        message: String,
        fields: Vec<(String, String)>,
    ) -> wasmtime::Result<()> {
        let level = match level {
            log::Level::Trace => LogLevel::Trace,
            log::Level::Debug => LogLevel::Debug,
            log::Level::Info => LogLevel::Info,
            log::Level::Warn => LogLevel::Warn,
            log::Level::Error => LogLevel::Error,
        };
        let line = LogLine::new(level, LogSource::Plugin, clip(message), fields);
        self.env.emit(line);
        Ok(())
    }
}

pub(super) fn clip(mut message: String) -> String {
    if message.len() > MAX_LOG_LINE_BYTES {
        let mut cut = MAX_LOG_LINE_BYTES;
        while !message.is_char_boundary(cut) {
            cut -= 1;
        }
        message.truncate(cut);
        message.push_str(" …[truncated]");
    }
    message
}

impl secrets::Host for HostState {
    async fn get(&mut self, name: String) -> wasmtime::Result<Result<String, types::Denial>> {
        let value = if self.env.grants.allows_secret(&name) {
            let value = self.env.secrets.get(&name).await;
            if value.is_none() {
                let plugin = self.env.plugin.clone();
                self.env.emit(LogLine::new(
                    LogLevel::Warn,
                    LogSource::Engine,
                    format!("secret `{name}` is granted to plugin `{plugin}` but has no value on this host"),
                    Vec::new(),
                ));
            }
            value
        } else {
            None
        };
        Ok(value.ok_or_else(|| {
            let denial = Denial::new("read secret", &name);
            record(&self.env.denials, denial.clone());
            to_wit(denial)
        }))
    }
}

impl exec::Host for HostState {
    async fn run(
        &mut self,
        command: exec::Command,
    ) -> wasmtime::Result<Result<exec::Output, exec::ExecError>> {
        let request = super::exec::Request {
            program: command.program,
            args: command.args,
            stdin: command.stdin,
            timeout: (command.timeout_ms > 0)
                .then(|| Duration::from_millis(command.timeout_ms.into())),
            max_output: command.max_output_bytes as usize,
        };
        if !self
            .env
            .grants
            .allows_command(&request.program, &request.args)
        {
            let denial = Denial::new("run", request.display());
            record(&self.env.denials, denial.clone());
            return Ok(Err(exec::ExecError::Denied(to_wit(denial))));
        }
        let output = super::exec::run(request, self.env.remaining()).await;
        Ok(output
            .map(|o| exec::Output {
                status: match o.status {
                    super::exec::Status::Exited(c) => exec::ExitStatus::Exited(c),
                    super::exec::Status::Signaled(s) => exec::ExitStatus::Signaled(s),
                    super::exec::Status::TimedOut => exec::ExitStatus::TimedOut,
                },
                stdout: o.stdout,
                stderr: o.stderr,
                stdout_truncated: o.stdout_truncated,
                stderr_truncated: o.stderr_truncated,
                duration_ms: u64::try_from(o.duration.as_millis()).unwrap_or(u64::MAX),
            })
            .map_err(exec::ExecError::SpawnFailed))
    }
}

fn to_wit(d: Denial) -> types::Denial {
    types::Denial {
        capability: d.capability,
        target: d.target,
    }
}
