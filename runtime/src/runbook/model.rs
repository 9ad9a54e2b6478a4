//! `runbook.toml` as written: strict, inert data. Fields whose values are checked later keep
//! their position in the file (`Spanned`), so every definition error can name the line.
//!
//! The doc comments here are the format's reference: they become the published JSON Schema
//! (`runbooks/runbook.schema.json`) that editors use to validate and complete runbooks.

use crate::grant::{CommandGrant, DirGrant, HostPattern, SystemFact};
use schemars::JsonSchema;
use serde::Deserialize;
use std::collections::BTreeMap;
use toml::Spanned;

/// A runbook: `runbooks/<name>/runbook.toml`. The directory name is the runbook's name.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(title = "runbook.toml")]
pub struct RunbookFile {
    /// Format version. Must be `1`.
    #[schemars(with = "u32")]
    pub version: Spanned<u32>,
    /// What the runbook does, in a sentence or two. Shown in listings and run history.
    pub description: String,
    /// The body, relative to the runbook directory: a Rhai script (`.rhai`) or a WebAssembly
    /// component implementing the `runloom:plugin` runbook world (`.wasm`). Default:
    /// `main.rhai` if it exists, else `main.wasm`.
    #[schemars(with = "Option<String>")]
    pub body: Option<Spanned<String>>,
    /// Parameters by name. Values come from `-p name=value`, the API, or a trigger.
    #[serde(default)]
    #[schemars(with = "BTreeMap<String, ParameterFile>")]
    pub parameters: BTreeMap<Spanned<String>, ParameterFile>,
    /// What starts the runbook, besides manual runs (always allowed).
    #[serde(default, rename = "trigger")]
    pub triggers: Vec<TriggerFile>,
    /// Timeouts, retries and the remediation safety kernel.
    #[serde(default)]
    pub policy: PolicyFile,
    /// The plugins the runbook may call, by name, each optionally narrowing the grants
    /// `runloom.toml` gives it. A plugin not listed here cannot be called.
    #[serde(default)]
    #[schemars(with = "BTreeMap<String, PluginUseFile>")]
    pub plugins: BTreeMap<Spanned<String>, PluginUseFile>,
    /// Secrets the body may read with `secret(name)`; each needs a `[secrets.NAME]` table in
    /// `runloom.toml`. Their values are masked in every log line and stored record.
    #[serde(default)]
    #[schemars(with = "Vec<String>")]
    pub secrets: Vec<Spanned<String>>,
}

/// The type of a parameter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum ParamType {
    /// Text.
    String,
    /// A whole number.
    Int,
    /// `true` or `false` (`-p x=yes`/`no` also work on the command line).
    Bool,
    /// A duration such as `"30s"`, `"5m"`, `"1h 30m"`; the body receives it as written.
    Duration,
    /// A list of strings (`-p hosts=a,b,c` on the command line).
    List,
}

/// One parameter.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ParameterFile {
    /// `string`, `int`, `bool`, `duration` or `list`.
    #[serde(rename = "type")]
    #[schemars(with = "ParamType")]
    pub kind: Spanned<ParamType>,
    /// What the parameter means, for operators.
    pub description: Option<String>,
    /// Value used when none is given. A parameter with a default is never missing.
    #[schemars(with = "Option<serde_json::Value>")]
    pub default: Option<Spanned<toml::Value>>,
    /// A run without a value for this parameter (and no default) is refused.
    #[serde(default)]
    pub required: bool,
    /// The only values accepted, when set.
    #[schemars(with = "Option<Vec<serde_json::Value>>")]
    pub allowed: Option<Spanned<Vec<toml::Value>>>,
}

/// The kind of a trigger.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum TriggerKind {
    /// On a schedule: `schedule`, `timezone`, `missed`, `missed_window`, `overlap`.
    Cron,
    /// On a Prometheus Alertmanager alert: `matchers`, `repeat`.
    Alert,
    /// On `POST /hooks/webhook/<name>`: `name`.
    Webhook,
    /// By hand. Manual runs are always allowed; this entry only documents intent.
    Manual,
}

/// What starts a run. `kind` selects the trigger type; each kind takes only its own fields.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TriggerFile {
    /// `cron`, `alert`, `webhook` or `manual`.
    #[schemars(with = "TriggerKind")]
    pub kind: Spanned<TriggerKind>,
    /// cron: standard 5-field crontab (`m h dom mon dow`, Sunday = 0 or 7), or 6 fields with
    /// seconds first. `@hourly`, `@daily`, `@weekly`, `@monthly` also work.
    #[schemars(with = "Option<String>")]
    pub schedule: Option<Spanned<String>>,
    /// cron: IANA time zone the schedule is read in, e.g. `"Europe/Berlin"`. Default `"UTC"`.
    #[schemars(with = "Option<String>")]
    pub timezone: Option<Spanned<String>>,
    /// cron: after downtime, `skip` missed ticks (each recorded as a skipped run) or `run-once`
    /// for the latest missed tick within `missed_window`. Default `skip`.
    #[schemars(with = "Option<String>")]
    pub missed: Option<Spanned<String>>,
    /// cron: how far back `run-once` looks, e.g. `"1h"`. Default `"1h"`.
    #[schemars(with = "Option<String>")]
    pub missed_window: Option<Spanned<String>>,
    /// cron: when the previous run is still going, `skip` the tick (recorded as skipped),
    /// `queue-one` (at most one waiting run) or `allow` overlapping runs. Default `skip`.
    #[schemars(with = "Option<String>")]
    pub overlap: Option<Spanned<String>>,
    /// alert: Alertmanager-style matchers, all of which must match the alert's labels:
    /// `alertname="DiskSpaceLow"`, `severity=~"warning|critical"`, `env!="dev"`,
    /// `instance!~"test-.*"`. Regular expressions match the whole value.
    #[schemars(with = "Option<Vec<String>>")]
    pub matchers: Option<Vec<Spanned<String>>>,
    /// alert: run again for every notification of a firing alert, instead of once until it
    /// resolves. Default `false`.
    #[schemars(with = "Option<bool>")]
    pub repeat: Option<Spanned<bool>>,
    /// webhook: the name in `/hooks/webhook/<name>`.
    #[schemars(with = "Option<String>")]
    pub name: Option<Spanned<String>>,
    /// Parameter values for runs this trigger starts. For alert triggers, strings may use
    /// templates such as `"{{ labels.mountpoint }}"` or `"{{ annotations.summary }}"`; for
    /// webhook triggers, `"{{ body.service }}"`.
    #[serde(default)]
    #[schemars(with = "BTreeMap<String, serde_json::Value>")]
    pub parameters: BTreeMap<Spanned<String>, Spanned<toml::Value>>,
}

/// Timeouts, retries and the remediation safety kernel. Every field has a safe default.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PolicyFile {
    /// The whole run's deadline, e.g. `"10m"`. Default `"10m"`.
    #[schemars(with = "Option<String>")]
    pub timeout: Option<Spanned<String>>,
    /// Retries of a plugin call that failed with a retryable error. Default `0`.
    pub retries: Option<u32>,
    /// Wait before the first retry; doubles each time, with jitter. Default `"1s"`.
    #[schemars(with = "Option<String>")]
    pub retry_backoff: Option<Spanned<String>>,
    /// Longest wait between retries. Default `"1m"`.
    #[schemars(with = "Option<String>")]
    pub retry_backoff_max: Option<Spanned<String>>,
    /// Most runs of this runbook running at once. Default `10`.
    #[schemars(with = "Option<u32>")]
    pub concurrency: Option<Spanned<u32>>,
    /// Per-target lock: runs with the same key never overlap. A template over the trigger
    /// and parameters, e.g. `"{{ labels.instance }}"` or `"{{ params.host }}"`.
    #[schemars(with = "Option<String>")]
    pub lock: Option<Spanned<String>>,
    /// At most N runs per window per lock key (or per runbook without a lock), e.g. `"5/1h"`.
    #[schemars(with = "Option<String>")]
    pub rate_limit: Option<Spanned<String>>,
    /// After a run for a key, suppress new runs for that key this long, e.g. `"15m"`.
    #[schemars(with = "Option<String>")]
    pub cooldown: Option<Spanned<String>>,
    /// Pause the runbook after this many consecutive failed runs, until reset. Default: off.
    #[schemars(with = "Option<u32>")]
    pub breaker: Option<Spanned<u32>>,
    /// Rhai operations a run may execute before it is stopped. Default `10000000`.
    #[schemars(with = "Option<u64>")]
    pub max_operations: Option<Spanned<u64>>,
}

/// A plugin the runbook may call. Each grant list, when given, replaces the plugin's grant of
/// that kind from `runloom.toml` for this runbook, and must lie within it: a runbook can narrow
/// a plugin's grants, never widen them.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PluginUseFile {
    /// Outbound `host:port` pairs.
    #[schemars(with = "Option<Vec<String>>")]
    pub hosts: Option<Spanned<Vec<HostPattern>>>,
    /// Directories, `HOST[:GUEST][:ro|rw]`.
    #[schemars(with = "Option<Vec<String>>")]
    pub dirs: Option<Spanned<Vec<DirGrant>>>,
    /// Programs with argument patterns.
    #[schemars(with = "Option<Vec<String>>")]
    pub commands: Option<Spanned<Vec<CommandGrant>>>,
    /// Secret names.
    #[schemars(with = "Option<Vec<String>>")]
    pub secrets: Option<Spanned<Vec<String>>>,
    /// Host facts: `memory`, `load`, `processes`.
    #[schemars(with = "Option<Vec<String>>")]
    pub system: Option<Spanned<Vec<SystemFact>>>,
    /// Deadline for each call of this plugin, e.g. `"10s"` (at most the plugin's limit).
    #[schemars(with = "Option<String>")]
    pub timeout: Option<Spanned<String>>,
}
