//! Engine configuration: `runloom.toml`, parsed strictly into inert data ([`ConfigFile`]),
//! then resolved into typed values ([`Config`]) with every default filled in.
//!
//! Precedence, lowest first: built-in defaults < `runloom.toml` < environment
//! (`RUNLOOM_CONFIG`, `RUNLOOM_DATA_DIR`) < command-line flags. The file is optional.
//!
//! Invariant: no I/O except reading the file; no globals. Other modules receive a [`Config`].

use crate::grant::{CommandGrant, DirGrant, Grants, HostPattern, SystemFact};
use crate::plugin::Limits;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The name looked for in the working directory when no config path is given.
pub const DEFAULT_FILE: &str = "runloom.toml";

/// `runloom.toml` as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConfigFile {
    /// Format version; must be `1`.
    pub version: u32,
    /// Where the store, the compiled-plugin cache and installed plugins live. Relative to the
    /// file's directory. Default: `.runloom` in the working directory.
    pub data_dir: Option<PathBuf>,
    /// Directory of plugin components (`*.wasm`) loaded besides the standard plugins; a plugin
    /// here replaces a standard one of the same name. Default: `<data_dir>/plugins`.
    pub plugin_dir: Option<PathBuf>,
    /// Directory of runbooks (`<runbook_dir>/<name>/runbook.toml`). Relative to the file's
    /// directory. Default: `runbooks` in the working directory.
    pub runbook_dir: Option<PathBuf>,
    /// Where runs are recorded.
    #[serde(default)]
    pub store: StoreFile,
    /// Default limits for every plugin call.
    #[serde(default)]
    pub limits: LimitsFile,
    /// Grants and limits per plugin, by plugin name: `[plugins.http-check]`.
    #[serde(default)]
    pub plugins: BTreeMap<String, PluginFile>,
    /// Where each secret's value comes from, by secret name: `[secrets.slack-webhook]`.
    #[serde(default)]
    pub secrets: BTreeMap<String, SecretFile>,
    /// `runloom serve`: where it listens and how it works.
    #[serde(default)]
    pub server: ServerFile,
}

/// `[server]` as written; each field is optional.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerFile {
    /// Address the HTTP API listens on, e.g. `"127.0.0.1:8080"` (the default). Anything but a
    /// loopback address needs an API token in the store first (`runloom token create`).
    pub listen: Option<String>,
    /// Runs executing at once on this node. Default `16`.
    pub workers: Option<usize>,
    /// This node's name, recorded on the runs it executes; unique among the nodes sharing a
    /// store. Default: the hostname and a random suffix.
    pub name: Option<String>,
    /// How long a node's claim on a run lasts without renewal (renewed every quarter of it);
    /// on PostgreSQL a crashed node's runs go back to the queue after it, e.g. `"6s"` (the
    /// default).
    pub lease: Option<String>,
    /// How long a graceful shutdown lets running runs finish before putting them back in the
    /// queue, e.g. `"30s"` (the default).
    pub shutdown_grace: Option<String>,
    /// Largest request body the API accepts, e.g. `"1MiB"` (the default).
    pub max_body: Option<String>,
    /// How long the API may take to answer a request before it answers 503, e.g. `"30s"` (the
    /// default). Following a run's log is not limited once the stream has started.
    pub request_timeout: Option<String>,
    /// Alert and webhook requests handled at once; more are answered 503 with `Retry-After`
    /// (Alertmanager retries 5xx, never 4xx). Default `256`.
    pub max_intake: Option<usize>,
}

/// `[store]` as written.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StoreFile {
    /// `sqlite:///path/to/runloom.db` or `postgres://user@host/db`.
    /// Default: `sqlite://<data_dir>/runloom.db`.
    pub url: Option<String>,
    /// SQLite durability: `full` (an acknowledged write survives power loss; the default) or
    /// `normal` (faster; the last writes may be lost on power loss, never on a crash).
    pub durability: Option<String>,
}

/// Limits as written; each is optional.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitsFile {
    /// Wall-clock deadline per call, e.g. `"30s"`.
    pub timeout: Option<String>,
    /// Memory cap per call, e.g. `"64MiB"`.
    pub memory: Option<String>,
    /// Largest output document, e.g. `"1MiB"`.
    pub output: Option<String>,
}

/// One `[plugins.NAME]` table: what the plugin is granted, and limit overrides.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PluginFile {
    /// Outbound `host:port` pairs: `"api.example.org:443"`, `"*.example.org:443"`, `"127.0.0.1:*"`.
    #[serde(default)]
    pub hosts: Vec<HostPattern>,
    /// Directories: `"/var/log"`, `"/var/log:/logs:ro"`, `{ host = "/srv", guest = "/data", mode = "rw" }`.
    #[serde(default)]
    pub dirs: Vec<DirGrant>,
    /// Programs: `"/usr/bin/df"`, `"/usr/bin/systemctl restart *"`, `{ program = "...", args = [...] }`.
    #[serde(default)]
    pub commands: Vec<CommandGrant>,
    /// Secret names the plugin may read (values come from `[secrets.NAME]`).
    #[serde(default)]
    pub secrets: Vec<String>,
    /// Host facts: `"memory"`, `"load"`, `"processes"`.
    #[serde(default)]
    pub system: Vec<SystemFact>,
    /// Overrides `limits.timeout` for this plugin.
    pub timeout: Option<String>,
    /// Overrides `limits.memory` for this plugin.
    pub memory: Option<String>,
    /// Overrides `limits.output` for this plugin.
    pub output: Option<String>,
    /// Keep the plugin's outgoing HTTP connections open this long when idle, for its next
    /// requests to the same origin, e.g. `"30s"` (keep it below the servers' own idle timeout).
    /// Unset: a connection per request, so a check's latency includes the connect and TLS
    /// handshake.
    pub keep_alive: Option<String>,
}

/// One `[secrets.NAME]` table: exactly one of `env` or `file`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SecretFile {
    /// Read the value from this environment variable of the `runloom` process.
    pub env: Option<String>,
    /// Read the value from this file (one trailing newline is removed).
    pub file: Option<PathBuf>,
}

/// Where a secret's value comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SecretRef {
    /// An environment variable.
    Env(String),
    /// A file.
    File(PathBuf),
}

impl SecretRef {
    /// The current value, read now (so rotated files are picked up without a restart). A file
    /// is read on tokio's blocking pool (`tokio::fs`), not on an async worker thread.
    pub async fn read(&self) -> Option<String> {
        match self {
            SecretRef::Env(var) => std::env::var(var).ok(),
            SecretRef::File(path) => tokio::fs::read_to_string(path).await.ok().map(|mut s| {
                if s.ends_with('\n') {
                    s.pop();
                    if s.ends_with('\r') {
                        s.pop();
                    }
                }
                s
            }),
        }
    }
}

impl std::str::FromStr for SecretRef {
    type Err = String;

    /// `env:VAR` or `file:/path`, as on the command line.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.split_once(':') {
            Some(("env", var)) if !var.is_empty() => Ok(SecretRef::Env(var.to_string())),
            Some(("file", path)) if !path.is_empty() => Ok(SecretRef::File(PathBuf::from(path))),
            _ => Err(format!("`{s}`: expected `env:VARIABLE` or `file:/path`")),
        }
    }
}

/// Resolved settings for one plugin.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PluginSettings {
    /// What it may use.
    pub grants: Grants,
    /// Its limits, defaults filled in.
    pub limits: Limits,
    /// How long its idle outgoing HTTP connections are kept; zero: not kept.
    pub keep_alive: Duration,
}

/// `[server]`, resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerConfig {
    /// Address the HTTP API listens on.
    pub listen: SocketAddr,
    /// Runs executing at once.
    pub workers: usize,
    /// This node's name, if set.
    pub name: Option<String>,
    /// Claim lease.
    pub lease: Duration,
    /// Grace period of a graceful shutdown.
    pub shutdown_grace: Duration,
    /// Largest request body, in bytes.
    pub max_body: usize,
    /// Longest time to answer a request.
    pub request_timeout: Duration,
    /// Alert and webhook requests handled at once.
    pub max_intake: usize,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            workers: 16,
            name: None,
            lease: Duration::from_secs(6),
            shutdown_grace: Duration::from_secs(30),
            max_body: 1 << 20,
            request_timeout: Duration::from_secs(30),
            max_intake: 256,
        }
    }
}

/// The resolved configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// The file it came from, if any.
    pub source: Option<PathBuf>,
    /// Store, cache and installed plugins.
    pub data_dir: PathBuf,
    /// Extra plugin components.
    pub plugin_dir: PathBuf,
    /// Runbook directories.
    pub runbook_dir: PathBuf,
    /// Store URL; `None` means the SQLite file in the data directory.
    pub store_url: Option<String>,
    /// SQLite durability.
    pub durability: crate::store::Durability,
    /// Limits for plugins without their own.
    pub limits: Limits,
    /// Per-plugin settings, by plugin name.
    pub plugins: BTreeMap<String, PluginSettings>,
    /// Secret sources, by secret name.
    pub secrets: BTreeMap<String, SecretRef>,
    /// `runloom serve` settings.
    pub server: ServerConfig,
}

impl Default for Config {
    fn default() -> Self {
        let data_dir = PathBuf::from(".runloom");
        Self {
            source: None,
            plugin_dir: data_dir.join("plugins"),
            runbook_dir: PathBuf::from("runbooks"),
            store_url: None,
            durability: crate::store::Durability::Full,
            data_dir,
            limits: Limits::default(),
            plugins: BTreeMap::new(),
            secrets: BTreeMap::new(),
            server: ServerConfig::default(),
        }
    }
}

/// A configuration that cannot be used. The message names the file, and the line and field
/// where there is one.
#[derive(Debug, thiserror::Error)]
#[error("{file}: {message}")]
pub struct ConfigError {
    /// The file.
    pub file: String,
    /// What is wrong, and where.
    pub message: String,
}

impl Config {
    /// Read `path`, or `./runloom.toml` when `path` is `None` and that file exists, or use the
    /// defaults.
    pub fn load(path: Option<&Path>) -> Result<Config, ConfigError> {
        let path = match path {
            Some(p) => p.to_path_buf(),
            None if Path::new(DEFAULT_FILE).exists() => PathBuf::from(DEFAULT_FILE),
            None => return Ok(Config::default()),
        };
        let text = std::fs::read_to_string(&path).map_err(|e| ConfigError {
            file: path.display().to_string(),
            message: format!("cannot read: {e}"),
        })?;
        Config::parse(&text, &path)
    }

    /// Parse the text of a config file located at `path` (used for messages and to resolve
    /// relative paths).
    pub fn parse(text: &str, path: &Path) -> Result<Config, ConfigError> {
        let file = path.display().to_string();
        let error = |message: String| ConfigError {
            file: file.clone(),
            message,
        };
        let raw: ConfigFile = toml::from_str(text).map_err(|e| error(render_toml_error(&e)))?;
        if raw.version != 1 {
            return Err(error(format!(
                "`version = {}` is not supported; this runloom reads `version = 1`",
                raw.version
            )));
        }
        let base = path.parent().unwrap_or(Path::new(""));
        let resolve = |p: PathBuf| if p.is_absolute() { p } else { base.join(p) };
        let data_dir = resolve(raw.data_dir.unwrap_or_else(|| PathBuf::from(".runloom")));
        let plugin_dir = raw
            .plugin_dir
            .map(resolve)
            .unwrap_or_else(|| data_dir.join("plugins"));
        let runbook_dir = resolve(raw.runbook_dir.unwrap_or_else(|| PathBuf::from("runbooks")));
        let durability = match raw.store.durability.as_deref() {
            None | Some("full") => crate::store::Durability::Full,
            Some("normal") => crate::store::Durability::Normal,
            Some(other) => {
                return Err(error(format!(
                    "[store]: `durability = \"{other}\"`: expected `full` or `normal`"
                )));
            }
        };
        let limits = resolve_limits(&raw.limits, Limits::default())
            .map_err(|m| error(format!("[limits]: {m}")))?;
        let server = resolve_server(&raw.server).map_err(|m| error(format!("[server]: {m}")))?;

        let mut secrets = BTreeMap::new();
        for (name, s) in raw.secrets {
            let source = match (s.env, s.file) {
                (Some(var), None) => SecretRef::Env(var),
                (None, Some(f)) => SecretRef::File(resolve(f)),
                _ => {
                    return Err(error(format!(
                        "[secrets.{name}]: set exactly one of `env` or `file`"
                    )));
                }
            };
            secrets.insert(name, source);
        }

        let mut plugins = BTreeMap::new();
        for (name, p) in raw.plugins {
            for secret in &p.secrets {
                if !secrets.contains_key(secret) {
                    return Err(error(format!(
                        "[plugins.{name}]: secret `{secret}` is granted but has no [secrets.{secret}] table"
                    )));
                }
            }
            let overrides = LimitsFile {
                timeout: p.timeout,
                memory: p.memory,
                output: p.output,
            };
            let plugin_limits = resolve_limits(&overrides, limits)
                .map_err(|m| error(format!("[plugins.{name}]: {m}")))?;
            let keep_alive = match &p.keep_alive {
                Some(k) => parse_duration(k)
                    .map_err(|e| error(format!("[plugins.{name}]: `keep_alive`: {e}")))?,
                None => Duration::ZERO,
            };
            plugins.insert(
                name,
                PluginSettings {
                    grants: Grants {
                        hosts: p.hosts,
                        dirs: p.dirs,
                        commands: p.commands,
                        secrets: p.secrets,
                        system: p.system,
                    },
                    limits: plugin_limits,
                    keep_alive,
                },
            );
        }
        Ok(Config {
            source: Some(path.to_path_buf()),
            data_dir,
            plugin_dir,
            runbook_dir,
            store_url: raw.store.url,
            durability,
            limits,
            plugins,
            secrets,
            server,
        })
    }

    /// Settings for plugin `name`: its own table, or no grants and the default limits.
    pub fn plugin(&self, name: &str) -> PluginSettings {
        self.plugins.get(name).cloned().unwrap_or(PluginSettings {
            grants: Grants::default(),
            limits: self.limits,
            keep_alive: Duration::ZERO,
        })
    }

    /// Where compiled plugins are cached.
    pub fn cache_dir(&self) -> PathBuf {
        self.data_dir.join("cache")
    }

    /// The store URL: the configured one, or the SQLite file in the data directory.
    pub fn store_url(&self) -> String {
        self.store_url
            .clone()
            .unwrap_or_else(|| crate::store::default_url(&self.data_dir))
    }
}

fn resolve_limits(file: &LimitsFile, base: Limits) -> Result<Limits, String> {
    Ok(Limits {
        timeout: match &file.timeout {
            Some(t) => parse_duration(t).map_err(|e| format!("`timeout`: {e}"))?,
            None => base.timeout,
        },
        memory: match &file.memory {
            Some(m) => parse_size(m).map_err(|e| format!("`memory`: {e}"))?,
            None => base.memory,
        },
        output: match &file.output {
            Some(o) => usize::try_from(parse_size(o).map_err(|e| format!("`output`: {e}"))?)
                .map_err(|_| "`output`: too large".to_string())?,
            None => base.output,
        },
    })
}

fn resolve_server(file: &ServerFile) -> Result<ServerConfig, String> {
    let defaults = ServerConfig::default();
    let duration = |field: &str, value: &Option<String>, default: Duration| match value {
        Some(t) => parse_duration(t).map_err(|e| format!("`{field}`: {e}")),
        None => Ok(default),
    };
    Ok(ServerConfig {
        listen: match &file.listen {
            Some(l) => parse_listen(l).map_err(|e| format!("`listen`: {e}"))?,
            None => defaults.listen,
        },
        workers: match file.workers {
            Some(0) => return Err("`workers`: must be at least 1".into()),
            Some(n) => n,
            None => defaults.workers,
        },
        name: match &file.name {
            Some(n) if n.trim().is_empty() || n.chars().any(char::is_whitespace) => {
                return Err(format!("`name`: `{n}` must be a non-empty word"));
            }
            n => n.clone(),
        },
        lease: match duration("lease", &file.lease, defaults.lease)? {
            l if l < Duration::from_millis(500) => {
                return Err("`lease`: must be at least 500ms".into());
            }
            l => l,
        },
        shutdown_grace: duration(
            "shutdown_grace",
            &file.shutdown_grace,
            defaults.shutdown_grace,
        )?,
        max_body: match &file.max_body {
            Some(m) => usize::try_from(parse_size(m).map_err(|e| format!("`max_body`: {e}"))?)
                .map_err(|_| "`max_body`: too large".to_string())?,
            None => defaults.max_body,
        },
        request_timeout: duration(
            "request_timeout",
            &file.request_timeout,
            defaults.request_timeout,
        )?,
        max_intake: match file.max_intake {
            Some(0) => return Err("`max_intake`: must be at least 1".into()),
            Some(n) => n,
            None => defaults.max_intake,
        },
    })
}

/// Parse a listen address: `127.0.0.1:8080`, `[::1]:8080`, `0.0.0.0:8080`, or
/// `localhost:8080` (read as `127.0.0.1`, so it never depends on name resolution).
pub fn parse_listen(s: &str) -> Result<SocketAddr, String> {
    let t = s.trim();
    if let Some(port) = t.strip_prefix("localhost:") {
        let port: u16 = port
            .parse()
            .map_err(|_| format!("`{s}`: `{port}` is not a port number"))?;
        return Ok(SocketAddr::from(([127, 0, 0, 1], port)));
    }
    t.parse().map_err(|_| {
        format!("`{s}` is not an address; write e.g. `127.0.0.1:8080` or `[::1]:8080`")
    })
}

/// Parse a human duration: `500ms`, `30s`, `5m`, `1h 30m`.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let d = humantime::parse_duration(s.trim())
        .map_err(|e| format!("`{s}` is not a duration ({e}); write e.g. `30s`, `5m`, `500ms`"))?;
    if d.is_zero() {
        return Err(format!("`{s}`: must be longer than zero"));
    }
    Ok(d)
}

/// Parse a byte size: `512KiB`, `64MiB`, `1GiB`, `100MB`, or a plain number of bytes.
pub fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (digits, unit) = t.split_at(split);
    let bad = || format!("`{s}` is not a size; write e.g. `64MiB`, `512KiB`, `1GiB`");
    let n: u64 = digits.parse().map_err(|_| bad())?;
    let multiplier: u64 = match unit.trim() {
        "" | "B" => 1,
        "KiB" => 1 << 10,
        "MiB" => 1 << 20,
        "GiB" => 1 << 30,
        "KB" | "kB" => 1_000,
        "MB" => 1_000_000,
        "GB" => 1_000_000_000,
        _ => return Err(bad()),
    };
    let bytes = n.checked_mul(multiplier).ok_or_else(bad)?;
    if bytes == 0 {
        return Err(format!("`{s}`: must be larger than zero"));
    }
    Ok(bytes)
}

/// A TOML error as `line L, column C: message`, with the offending line quoted.
pub fn render_toml_error(e: &toml::de::Error) -> String {
    // The toml crate's Display already carries "line N, column M" and a caret snippet.
    e.to_string().trim_end().replace("TOML parse error at ", "")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::parse(text, Path::new("/etc/runloom/runloom.toml"))
    }

    #[test]
    fn a_full_config_resolves_paths_limits_and_grants() {
        let c = parse(
            r#"
            version = 1
            data_dir = "state"

            [limits]
            timeout = "10s"
            memory = "32MiB"

            [plugins.http-check]
            hosts = ["*.example.org:443"]
            timeout = "5s"

            [plugins.notify]
            secrets = ["slack"]
            keep_alive = "45s"

            [secrets.slack]
            env = "SLACK_URL"
            "#,
        )
        .unwrap();
        assert_eq!(c.data_dir, PathBuf::from("/etc/runloom/state"));
        assert_eq!(c.plugin_dir, PathBuf::from("/etc/runloom/state/plugins"));
        assert_eq!(c.limits.timeout, Duration::from_secs(10));
        let hc = c.plugin("http-check");
        assert_eq!(hc.limits.timeout, Duration::from_secs(5));
        assert_eq!(hc.limits.memory, 32 << 20, "inherits [limits]");
        assert!(hc.grants.allows_host("api.example.org", 443));
        assert_eq!(
            hc.keep_alive,
            Duration::ZERO,
            "a connection per check by default"
        );
        assert_eq!(c.plugin("notify").keep_alive, Duration::from_secs(45));
        assert_eq!(c.plugin("unknown").grants, Grants::default());
        assert_eq!(c.secrets["slack"], SecretRef::Env("SLACK_URL".into()));
    }

    #[test]
    fn unknown_fields_name_the_line_and_field() {
        let err = parse("version = 1\n[limits]\ntimout = \"3s\"\n")
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("/etc/runloom/runloom.toml: line 3, column 1"),
            "{err}"
        );
        assert!(err.contains("unknown field `timout`"), "{err}");
    }

    #[test]
    fn bad_values_are_reported_with_their_table() {
        let err = parse("version = 1\n[plugins.x]\ntimeout = \"soon\"\n")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("[plugins.x]: `timeout`: `soon` is not a duration"),
            "{err}"
        );
        let err = parse("version = 1\n[plugins.x]\nsecrets = [\"db\"]\n")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("secret `db` is granted but has no [secrets.db] table"),
            "{err}"
        );
        let err = parse("version = 2\n").unwrap_err().to_string();
        assert!(err.contains("`version = 2` is not supported"), "{err}");
        let err = parse("version = 1\n[secrets.x]\nenv = \"A\"\nfile = \"b\"\n")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("[secrets.x]: set exactly one of `env` or `file`"),
            "{err}"
        );
        let err = parse("version = 1\n[plugins.x]\nhosts = [\"example.org\"]\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("invalid host grant `example.org`"), "{err}");
        let err = parse("version = 1\n[plugins.x]\nkeep_alive = \"forever\"\n")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("[plugins.x]: `keep_alive`: `forever` is not a duration"),
            "{err}"
        );
    }

    #[test]
    fn the_server_table_resolves_with_defaults_and_names_bad_fields() {
        let c = parse("version = 1\n").unwrap();
        assert_eq!(c.server, ServerConfig::default());
        assert_eq!(c.server.listen.to_string(), "127.0.0.1:8080");
        assert_eq!(c.server.max_body, 1 << 20);
        let c = parse(
            "version = 1\n[server]\nlisten = \"0.0.0.0:9000\"\nworkers = 4\nshutdown_grace = \"5s\"\nmax_body = \"64KiB\"\nrequest_timeout = \"2s\"\nmax_intake = 8\n",
        )
        .unwrap();
        assert_eq!(c.server.listen.to_string(), "0.0.0.0:9000");
        assert_eq!(c.server.workers, 4);
        assert_eq!(c.server.shutdown_grace, Duration::from_secs(5));
        assert_eq!(c.server.max_body, 64 << 10);
        assert_eq!(c.server.request_timeout, Duration::from_secs(2));
        assert_eq!(c.server.max_intake, 8);
        assert_eq!(
            parse_listen("localhost:81").unwrap().to_string(),
            "127.0.0.1:81"
        );
        for (text, message) in [
            (
                "listen = \"example.org\"",
                "[server]: `listen`: `example.org` is not an address",
            ),
            ("workers = 0", "[server]: `workers`: must be at least 1"),
            (
                "max_intake = 0",
                "[server]: `max_intake`: must be at least 1",
            ),
            (
                "max_body = \"lots\"",
                "[server]: `max_body`: `lots` is not a size",
            ),
            (
                "shutdown_grace = \"soon\"",
                "[server]: `shutdown_grace`: `soon` is not a duration",
            ),
            ("listn = \"x\"", "unknown field `listn`"),
        ] {
            let err = parse(&format!("version = 1\n[server]\n{text}\n"))
                .unwrap_err()
                .to_string();
            assert!(err.contains(message), "{text}: {err}");
        }
    }

    #[test]
    fn sizes_and_durations_parse() {
        assert_eq!(parse_size("64MiB").unwrap(), 64 << 20);
        assert_eq!(parse_size("1000").unwrap(), 1000);
        assert_eq!(parse_size("2 GB").unwrap(), 2_000_000_000);
        assert!(parse_size("64mb").is_err());
        assert!(parse_size("0KiB").is_err());
        assert_eq!(parse_duration("1m 30s").unwrap(), Duration::from_secs(90));
        assert!(parse_duration("0s").is_err());
    }

    #[tokio::test]
    async fn secret_refs_read_env_and_files() {
        let file = std::env::temp_dir().join(format!("runloom-secret-{}", std::process::id()));
        std::fs::write(&file, "s3cret\n").unwrap();
        assert_eq!(
            SecretRef::File(file.clone()).read().await.as_deref(),
            Some("s3cret")
        );
        std::fs::remove_file(&file).unwrap();
        assert_eq!(
            SecretRef::Env("RUNLOOM_TEST_NO_SUCH_VARIABLE".into())
                .read()
                .await,
            None
        );
        assert_eq!(
            "env:X".parse::<SecretRef>().unwrap(),
            SecretRef::Env("X".into())
        );
        assert!("vault:x".parse::<SecretRef>().is_err());
    }
}
