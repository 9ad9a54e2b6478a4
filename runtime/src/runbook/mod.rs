//! Runbooks: the file format (`runbook.toml` plus a body) parsed into a validated model, and
//! the contract between a running body and the engine ([`api`]).
//!
//! Loading is two steps, like every definition in Runloom: [`model`] parses the file strictly
//! into inert data (`deny_unknown_fields`, `version = 1`), then [`load`] resolves it into a
//! [`Runbook`] with typed values (durations, parsed cron schedules and time zones, alert
//! matchers, templates, effective plugin grants) — collecting every problem, each with the
//! file, line and field.
//!
//! Invariant: pure. No tokio, wasmtime, rhai or sqlx here; loading reads files and nothing
//! else. Bodies are compiled by `script` and `plugin`, not here.

pub mod api;
pub mod matcher;
pub mod model;
pub mod params;
pub mod template;

use crate::config::{Config, parse_duration};
use crate::grant::Grants;
use matcher::Matcher;
use model::{PluginUseFile, RunbookFile, TriggerKind};
use params::{Parameter, toml_to_json};
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, BTreeSet};
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::Duration;
use template::Template;
use toml::Spanned;

/// The file every runbook directory holds.
pub const FILE_NAME: &str = "runbook.toml";

/// A definition error: a runbook that cannot be loaded as written.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}", self.render())]
pub struct DefinitionError {
    /// The file.
    pub file: PathBuf,
    /// 1-based line and column, when known.
    pub position: Option<(usize, usize)>,
    /// The field, as a path: `trigger[2].schedule`, `plugins.remediate.dirs`.
    pub field: String,
    /// What is wrong.
    pub message: String,
}

impl DefinitionError {
    fn render(&self) -> String {
        let mut out = self.file.display().to_string();
        if let Some((line, col)) = self.position {
            out.push_str(&format!(":{line}:{col}"));
        }
        out.push_str(": ");
        if !self.field.is_empty() {
            out.push_str(&format!("`{}`: ", self.field));
        }
        out.push_str(&self.message);
        out
    }

    /// An error about `file` as a whole.
    pub fn file(file: &Path, message: impl Into<String>) -> Self {
        Self {
            file: file.to_path_buf(),
            position: None,
            field: String::new(),
            message: message.into(),
        }
    }
}

/// The body kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyKind {
    /// A Rhai script.
    Rhai,
    /// A WebAssembly component implementing the runbook world.
    Wasm,
}

/// A runbook's body file, read.
#[derive(Debug, Clone)]
pub struct Body {
    /// Rhai or Wasm.
    pub kind: BodyKind,
    /// The file.
    pub path: PathBuf,
    /// Its bytes.
    pub bytes: Vec<u8>,
}

/// Missed-tick policy of a cron trigger.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Missed {
    /// Record each missed tick as a skipped run.
    Skip,
    /// Run once for the latest missed tick within the window; record the others as skipped.
    RunOnce {
        /// How far back to look.
        window: Duration,
    },
}

/// Overlap policy of a cron trigger.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Overlap {
    /// Skip a tick while a run of this trigger is queued or running.
    Skip,
    /// Keep at most one waiting run.
    QueueOne,
    /// Start a run on every tick.
    Allow,
}

/// A cron trigger.
#[derive(Debug, Clone)]
pub struct CronTrigger {
    /// The schedule as written.
    pub schedule: String,
    /// The parsed schedule.
    pub cron: croner::Cron,
    /// The time zone it is read in.
    pub timezone: chrono_tz::Tz,
    /// After downtime.
    pub missed: Missed,
    /// When the previous run is still going.
    pub overlap: Overlap,
    /// Parameter values for its runs.
    pub parameters: Map<String, Value>,
}

/// A parameter value a trigger supplies: fixed, or rendered from the event.
#[derive(Debug, Clone, PartialEq)]
pub enum ParamSource {
    /// A fixed value.
    Fixed(Value),
    /// A string template over the event, type-checked when rendered.
    Template(Template),
}

/// An alert trigger.
#[derive(Debug, Clone)]
pub struct AlertTrigger {
    /// Every matcher must match the alert's labels.
    pub matchers: Vec<Matcher>,
    /// Parameter values for its runs.
    pub parameters: BTreeMap<String, ParamSource>,
    /// Run for every notification, not once until resolved.
    pub repeat: bool,
}

/// A webhook trigger.
#[derive(Debug, Clone)]
pub struct WebhookTrigger {
    /// The name in `/hooks/webhook/<name>`.
    pub name: String,
    /// Parameter values for its runs.
    pub parameters: BTreeMap<String, ParamSource>,
}

/// What starts a run.
#[derive(Debug, Clone)]
pub enum Trigger {
    /// A schedule (boxed: a parsed schedule is large).
    Cron(Box<CronTrigger>),
    /// An alert.
    Alert(AlertTrigger),
    /// A webhook.
    Webhook(WebhookTrigger),
    /// By hand (always allowed; listed for documentation).
    Manual,
}

/// N runs per window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimit {
    /// Runs allowed per window.
    pub count: u32,
    /// The window.
    pub window: Duration,
}

/// The runbook's policy, defaults filled in.
#[derive(Debug, Clone)]
pub struct Policy {
    /// The run's deadline.
    pub timeout: Duration,
    /// Retries of retryable plugin failures.
    pub retries: u32,
    /// First retry delay.
    pub retry_backoff: Duration,
    /// Longest retry delay.
    pub retry_backoff_max: Duration,
    /// Most concurrent runs.
    pub concurrency: u32,
    /// Per-target lock key.
    pub lock: Option<Template>,
    /// Runs per window per key.
    pub rate_limit: Option<RateLimit>,
    /// Quiet time per key after a run.
    pub cooldown: Option<Duration>,
    /// Consecutive failures that pause the runbook.
    pub breaker: Option<u32>,
    /// Rhai operation budget.
    pub max_operations: u64,
}

impl Default for Policy {
    fn default() -> Self {
        Self {
            timeout: Duration::from_secs(600),
            retries: 0,
            retry_backoff: Duration::from_secs(1),
            retry_backoff_max: Duration::from_secs(60),
            concurrency: 10,
            lock: None,
            rate_limit: None,
            cooldown: None,
            breaker: None,
            max_operations: 10_000_000,
        }
    }
}

/// A plugin the runbook may call, with its effective grants for this runbook.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PluginUse {
    /// What the plugin may use when this runbook calls it.
    pub grants: Grants,
    /// Per-call deadline override.
    pub timeout: Option<Duration>,
}

/// A loaded, validated runbook.
#[derive(Debug, Clone)]
pub struct Runbook {
    /// The directory name.
    pub name: String,
    /// The directory.
    pub dir: PathBuf,
    /// What it does.
    pub description: String,
    /// The body.
    pub body: Body,
    /// SHA-256 over `runbook.toml` and the body, recorded on every run.
    pub content_hash: String,
    /// Declared parameters, in name order.
    pub parameters: Vec<Parameter>,
    /// Triggers, in file order.
    pub triggers: Vec<Trigger>,
    /// Policy.
    pub policy: Policy,
    /// Plugins it may call, by name.
    pub plugins: BTreeMap<String, PluginUse>,
    /// Secrets the body may read.
    pub secrets: Vec<String>,
}

/// What loading checks a runbook against.
pub struct LoadContext<'a> {
    /// The engine configuration (plugin grants, secrets).
    pub config: &'a Config,
    /// Names of the loaded plugins.
    pub plugins: &'a BTreeSet<String>,
}

/// The JSON Schema of `runbook.toml`, pretty-printed, for editors (`#:schema` in TOML files).
pub fn json_schema() -> String {
    let schema = schemars::schema_for!(RunbookFile);
    serde_json::to_string_pretty(&schema).unwrap_or_default()
}

/// Whether `dir` looks like a runbook directory.
pub fn is_runbook_dir(dir: &Path) -> bool {
    dir.join(FILE_NAME).is_file()
}

/// The runbook directories directly under `root`, in name order. `root` itself, if it is a
/// runbook directory, is the only one.
pub fn discover(root: &Path) -> Result<Vec<PathBuf>, DefinitionError> {
    if is_runbook_dir(root) {
        return Ok(vec![root.to_path_buf()]);
    }
    let entries = std::fs::read_dir(root).map_err(|e| {
        DefinitionError::file(root, format!("cannot read the runbook directory: {e}"))
    })?;
    let mut dirs: Vec<PathBuf> = entries
        .flatten()
        .map(|e| e.path())
        .filter(|p| is_runbook_dir(p))
        .collect();
    dirs.sort();
    Ok(dirs)
}

/// Load and validate the runbook in `dir`, reporting every problem found.
pub fn load(dir: &Path, ctx: &LoadContext<'_>) -> Result<Runbook, Vec<DefinitionError>> {
    let file = dir.join(FILE_NAME);
    let text = std::fs::read_to_string(&file)
        .map_err(|e| vec![DefinitionError::file(&file, format!("cannot read: {e}"))])?;
    let mut errors = Errors {
        file: &file,
        text: &text,
        list: Vec::new(),
    };
    let raw: RunbookFile = match toml::from_str(&text) {
        Ok(raw) => raw,
        Err(e) => {
            errors.toml(&e);
            return Err(errors.list);
        }
    };
    let name = dir
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or_default()
        .to_string();
    if !is_name(&name) {
        errors.push(
            None,
            "",
            format!("the directory name `{name}` is the runbook's name and must be kebab-case"),
        );
    }
    if *raw.version.get_ref() != 1 {
        errors.push(
            Some(raw.version.span()),
            "version",
            format!(
                "`version = {}` is not supported; this runloom reads `version = 1`",
                raw.version.get_ref()
            ),
        );
    }
    let parameters = resolve_parameters(&raw, &mut errors);
    let triggers = resolve_triggers(&raw, &parameters, &mut errors);
    let policy = resolve_policy(&raw.policy, &mut errors);
    let plugins = resolve_plugins(&raw.plugins, ctx, &mut errors);
    let secrets = resolve_secrets(&raw.secrets, ctx, &mut errors);
    let body = read_body(dir, raw.body.as_ref(), &mut errors);

    match (body, errors.list.is_empty()) {
        (Some(body), true) => {
            let mut hash = Sha256::new();
            hash.update(text.as_bytes());
            hash.update(&body.bytes);
            Ok(Runbook {
                name,
                dir: dir.to_path_buf(),
                description: raw.description,
                content_hash: hex::encode(hash.finalize()),
                body,
                parameters,
                triggers,
                policy,
                plugins,
                secrets,
            })
        }
        _ => {
            let mut list = errors.list;
            list.sort_by_key(|e| e.position);
            Err(list)
        }
    }
}

/// Collects errors for one file, turning byte spans into line and column.
struct Errors<'a> {
    file: &'a Path,
    text: &'a str,
    list: Vec<DefinitionError>,
}

impl Errors<'_> {
    fn push(&mut self, span: Option<Range<usize>>, field: &str, message: impl Into<String>) {
        let position = span.map(|s| position(self.text, s.start));
        self.list.push(DefinitionError {
            file: self.file.to_path_buf(),
            position,
            field: field.to_string(),
            message: message.into(),
        });
    }

    fn toml(&mut self, e: &toml::de::Error) {
        let span = e.span();
        let message = e.message().trim_end().to_string();
        let field = span
            .as_ref()
            .map(|s| key_path_at(self.text, s.start))
            .unwrap_or_default();
        self.push(span, &field, message);
    }
}

/// 1-based line and column (in characters) of a byte offset.
fn position(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, column)
}

/// Best-effort dotted path of the key at `offset`: the last `[table]` header before it plus
/// the key on its line. Used to name the field in TOML parse errors.
fn key_path_at(text: &str, offset: usize) -> String {
    let before = &text[..offset.min(text.len())];
    let table = before
        .lines()
        .rev()
        .find_map(|l| {
            let l = l.trim();
            l.strip_prefix("[[")
                .and_then(|t| t.strip_suffix("]]"))
                .or_else(|| l.strip_prefix('[').and_then(|t| t.strip_suffix(']')))
        })
        .map(str::trim)
        .unwrap_or("");
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let line = text[line_start..].lines().next().unwrap_or("");
    let key = line
        .split_once('=')
        .map(|(k, _)| k.trim())
        .filter(|k| !k.starts_with('['))
        .unwrap_or("");
    match (table.is_empty(), key.is_empty()) {
        (true, _) => key.to_string(),
        (false, true) => table.to_string(),
        (false, false) => format!("{table}.{key}"),
    }
}

fn is_name(s: &str) -> bool {
    !s.is_empty()
        && !s.starts_with('-')
        && !s.ends_with('-')
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

fn duration(value: &Spanned<String>, field: &str, errors: &mut Errors<'_>) -> Option<Duration> {
    parse_duration(value.get_ref())
        .map_err(|e| errors.push(Some(value.span()), field, e))
        .ok()
}

fn resolve_parameters(raw: &RunbookFile, errors: &mut Errors<'_>) -> Vec<Parameter> {
    let mut out = Vec::new();
    for (name, p) in &raw.parameters {
        let field = format!("parameters.{}", name.get_ref());
        if !name
            .get_ref()
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_')
            || name.get_ref().starts_with(|c: char| c.is_ascii_digit())
        {
            errors.push(
                Some(name.span()),
                &field,
                "parameter names are letters, digits and `_` (scripts read them as `params.NAME`)",
            );
        }
        let kind = *p.kind.get_ref();
        let mut param = Parameter {
            name: name.get_ref().clone(),
            kind,
            description: p.description.clone(),
            default: None,
            required: p.required,
            allowed: None,
        };
        if let Some(allowed) = &p.allowed {
            let mut values = Vec::new();
            for v in allowed.get_ref() {
                match kind.check(&toml_to_json(v)) {
                    Ok(v) => values.push(v),
                    Err(e) => errors.push(Some(allowed.span()), &format!("{field}.allowed"), e),
                }
            }
            param.allowed = Some(values);
        }
        if let Some(default) = &p.default {
            match param.check(&toml_to_json(default.get_ref())) {
                Ok(v) => param.default = Some(v),
                Err(e) => errors.push(Some(default.span()), &format!("{field}.default"), e),
            }
            if p.required {
                errors.push(
                    Some(default.span()),
                    &format!("{field}.required"),
                    "a parameter with a default is never missing; drop `required` or the default",
                );
            }
        }
        out.push(param);
    }
    out
}

/// Check fixed trigger parameters and parse templated ones.
fn trigger_parameters(
    given: &BTreeMap<Spanned<String>, Spanned<toml::Value>>,
    declared: &[Parameter],
    roots: &[&str],
    field: &str,
    errors: &mut Errors<'_>,
) -> BTreeMap<String, ParamSource> {
    let mut out = BTreeMap::new();
    for (name, value) in given {
        let f = format!("{field}.parameters.{}", name.get_ref());
        let Some(param) = declared.iter().find(|p| &p.name == name.get_ref()) else {
            errors.push(
                Some(name.span()),
                &f,
                format!("unknown parameter `{}`", name.get_ref()),
            );
            continue;
        };
        let json = toml_to_json(value.get_ref());
        let source = match &json {
            Value::String(s) if s.contains("{{") => match Template::parse(s, roots) {
                Ok(t) => ParamSource::Template(t),
                Err(e) => {
                    errors.push(Some(value.span()), &f, e);
                    continue;
                }
            },
            _ => match param.check(&json) {
                Ok(v) => ParamSource::Fixed(v),
                Err(e) => {
                    errors.push(Some(value.span()), &f, e);
                    continue;
                }
            },
        };
        out.insert(name.get_ref().clone(), source);
    }
    out
}

fn resolve_triggers(
    raw: &RunbookFile,
    declared: &[Parameter],
    errors: &mut Errors<'_>,
) -> Vec<Trigger> {
    let mut out = Vec::new();
    let mut webhooks = BTreeSet::new();
    for (i, t) in raw.triggers.iter().enumerate() {
        let field = format!("trigger[{}]", i + 1);
        let kind = *t.kind.get_ref();
        // Each kind takes only its own fields; a stray one is almost always a mistake.
        let stray: [(&str, Option<Range<usize>>, bool); 7] = [
            (
                "schedule",
                t.schedule.as_ref().map(Spanned::span),
                kind == TriggerKind::Cron,
            ),
            (
                "timezone",
                t.timezone.as_ref().map(Spanned::span),
                kind == TriggerKind::Cron,
            ),
            (
                "missed",
                t.missed.as_ref().map(Spanned::span),
                kind == TriggerKind::Cron,
            ),
            (
                "missed_window",
                t.missed_window.as_ref().map(Spanned::span),
                kind == TriggerKind::Cron,
            ),
            (
                "overlap",
                t.overlap.as_ref().map(Spanned::span),
                kind == TriggerKind::Cron,
            ),
            (
                "repeat",
                t.repeat.as_ref().map(Spanned::span),
                kind == TriggerKind::Alert,
            ),
            (
                "name",
                t.name.as_ref().map(Spanned::span),
                kind == TriggerKind::Webhook,
            ),
        ];
        for (name, span, allowed) in stray {
            if let (Some(span), false) = (span, allowed) {
                errors.push(
                    Some(span),
                    &format!("{field}.{name}"),
                    format!("`{name}` does not apply to `{}` triggers", kind_name(kind)),
                );
            }
        }
        if let (Some(m), false) = (&t.matchers, kind == TriggerKind::Alert)
            && let Some(first) = m.first()
        {
            errors.push(
                Some(first.span()),
                &format!("{field}.matchers"),
                format!(
                    "`matchers` does not apply to `{}` triggers",
                    kind_name(kind)
                ),
            );
        }
        match kind {
            TriggerKind::Cron => {
                let Some(schedule) = &t.schedule else {
                    errors.push(
                        Some(t.kind.span()),
                        &format!("{field}.schedule"),
                        "a cron trigger needs a `schedule`, e.g. `\"30 3 * * *\"`",
                    );
                    continue;
                };
                let cron = parse_schedule(schedule.get_ref())
                    .map_err(|e| {
                        errors.push(Some(schedule.span()), &format!("{field}.schedule"), e)
                    })
                    .ok();
                let tz = match &t.timezone {
                    None => Some(chrono_tz::UTC),
                    Some(z) => z
                        .get_ref()
                        .parse::<chrono_tz::Tz>()
                        .map_err(|_| {
                            errors.push(
                                Some(z.span()),
                                &format!("{field}.timezone"),
                                format!(
                                    "`{}` is not an IANA time zone (e.g. `Europe/Berlin`, `UTC`)",
                                    z.get_ref()
                                ),
                            )
                        })
                        .ok(),
                };
                let window = t
                    .missed_window
                    .as_ref()
                    .map(|w| duration(w, &format!("{field}.missed_window"), errors))
                    .unwrap_or(Some(Duration::from_secs(3600)));
                let missed = match t.missed.as_ref().map(|m| (m.get_ref().as_str(), m.span())) {
                    None | Some(("skip", _)) => Some(Missed::Skip),
                    Some(("run-once", _)) => window.map(|window| Missed::RunOnce { window }),
                    Some((other, span)) => {
                        errors.push(
                            Some(span),
                            &format!("{field}.missed"),
                            format!("`{other}`: expected `skip` or `run-once`"),
                        );
                        None
                    }
                };
                let overlap = match t.overlap.as_ref().map(|o| (o.get_ref().as_str(), o.span())) {
                    None | Some(("skip", _)) => Some(Overlap::Skip),
                    Some(("queue-one", _)) => Some(Overlap::QueueOne),
                    Some(("allow", _)) => Some(Overlap::Allow),
                    Some((other, span)) => {
                        errors.push(
                            Some(span),
                            &format!("{field}.overlap"),
                            format!("`{other}`: expected `skip`, `queue-one` or `allow`"),
                        );
                        None
                    }
                };
                let params = trigger_parameters(&t.parameters, declared, &[], &field, errors);
                let fixed: Map<String, Value> = params
                    .into_iter()
                    .filter_map(|(k, v)| match v {
                        ParamSource::Fixed(v) => Some((k, v)),
                        ParamSource::Template(_) => None,
                    })
                    .collect();
                if let (Some(cron), Some(timezone), Some(missed), Some(overlap)) =
                    (cron, tz, missed, overlap)
                {
                    out.push(Trigger::Cron(Box::new(CronTrigger {
                        schedule: schedule.get_ref().clone(),
                        cron,
                        timezone,
                        missed,
                        overlap,
                        parameters: fixed,
                    })));
                }
            }
            TriggerKind::Alert => {
                let matchers = t.matchers.as_deref().unwrap_or_default();
                if matchers.is_empty() {
                    errors.push(
                        Some(t.kind.span()),
                        &format!("{field}.matchers"),
                        "an alert trigger needs at least one matcher, e.g. `alertname=\"DiskSpaceLow\"`",
                    );
                }
                let mut parsed = Vec::new();
                for m in matchers {
                    match Matcher::parse(m.get_ref()) {
                        Ok(m) => parsed.push(m),
                        Err(e) => errors.push(Some(m.span()), &format!("{field}.matchers"), e),
                    }
                }
                let roots = [
                    "labels",
                    "annotations",
                    "status",
                    "fingerprint",
                    "startsAt",
                    "generatorURL",
                ];
                let parameters =
                    trigger_parameters(&t.parameters, declared, &roots, &field, errors);
                out.push(Trigger::Alert(AlertTrigger {
                    matchers: parsed,
                    parameters,
                    repeat: t.repeat.as_ref().is_some_and(|r| *r.get_ref()),
                }));
            }
            TriggerKind::Webhook => {
                let Some(name) = &t.name else {
                    errors.push(
                        Some(t.kind.span()),
                        &format!("{field}.name"),
                        "a webhook trigger needs a `name` (the URL is /hooks/webhook/NAME)",
                    );
                    continue;
                };
                if !is_name(name.get_ref()) {
                    errors.push(
                        Some(name.span()),
                        &format!("{field}.name"),
                        "webhook names are kebab-case",
                    );
                } else if !webhooks.insert(name.get_ref().clone()) {
                    errors.push(
                        Some(name.span()),
                        &format!("{field}.name"),
                        format!("webhook `{}` is declared twice", name.get_ref()),
                    );
                }
                let parameters =
                    trigger_parameters(&t.parameters, declared, &["body"], &field, errors);
                out.push(Trigger::Webhook(WebhookTrigger {
                    name: name.get_ref().clone(),
                    parameters,
                }));
            }
            TriggerKind::Manual => {
                if !t.parameters.is_empty() {
                    errors.push(
                        Some(t.kind.span()),
                        &format!("{field}.parameters"),
                        "manual runs take parameters from the caller, not from the trigger",
                    );
                }
                out.push(Trigger::Manual);
            }
        }
    }
    out
}

fn kind_name(kind: TriggerKind) -> &'static str {
    match kind {
        TriggerKind::Cron => "cron",
        TriggerKind::Alert => "alert",
        TriggerKind::Webhook => "webhook",
        TriggerKind::Manual => "manual",
    }
}

/// Parse a cron schedule: 5 fields (standard crontab, Sunday = 0 or 7), 6 fields with seconds
/// first, or an `@nickname`.
pub fn parse_schedule(text: &str) -> Result<croner::Cron, String> {
    let fields = text.split_whitespace().count();
    if !text.trim_start().starts_with('@') && !(5..=6).contains(&fields) {
        return Err(format!(
            "`{text}` has {fields} fields; write 5 (`minute hour day month weekday`) or 6 (seconds first)"
        ));
    }
    croner::parser::CronParser::builder()
        .seconds(croner::parser::Seconds::Optional)
        .year(croner::parser::Year::Disallowed)
        .build()
        .parse(text)
        .map_err(|e| format!("`{text}` is not a valid cron schedule: {e}"))
}

fn resolve_policy(raw: &model::PolicyFile, errors: &mut Errors<'_>) -> Policy {
    let mut p = Policy::default();
    let f = |name: &str| format!("policy.{name}");
    if let Some(v) = &raw.timeout
        && let Some(d) = duration(v, &f("timeout"), errors)
    {
        p.timeout = d;
    }
    if let Some(r) = raw.retries {
        p.retries = r;
    }
    if let Some(v) = &raw.retry_backoff
        && let Some(d) = duration(v, &f("retry_backoff"), errors)
    {
        p.retry_backoff = d;
    }
    if let Some(v) = &raw.retry_backoff_max
        && let Some(d) = duration(v, &f("retry_backoff_max"), errors)
    {
        p.retry_backoff_max = d;
    }
    if let Some(c) = &raw.concurrency {
        if *c.get_ref() == 0 {
            errors.push(
                Some(c.span()),
                &f("concurrency"),
                "must be at least 1 (use `runloom pause` to stop a runbook)",
            );
        }
        p.concurrency = *c.get_ref();
    }
    if let Some(l) = &raw.lock {
        match Template::parse(l.get_ref(), &["labels", "annotations", "params", "body"]) {
            Ok(t) => p.lock = Some(t),
            Err(e) => errors.push(Some(l.span()), &f("lock"), e),
        }
    }
    if let Some(r) = &raw.rate_limit {
        match parse_rate(r.get_ref()) {
            Ok(rate) => p.rate_limit = Some(rate),
            Err(e) => errors.push(Some(r.span()), &f("rate_limit"), e),
        }
    }
    if let Some(v) = &raw.cooldown {
        p.cooldown = duration(v, &f("cooldown"), errors);
    }
    if let Some(b) = &raw.breaker {
        if *b.get_ref() == 0 {
            errors.push(
                Some(b.span()),
                &f("breaker"),
                "must be at least 1 (leave it out to turn the breaker off)",
            );
        }
        p.breaker = Some(*b.get_ref());
    }
    if let Some(m) = &raw.max_operations {
        if *m.get_ref() == 0 {
            errors.push(Some(m.span()), &f("max_operations"), "must be at least 1");
        }
        p.max_operations = *m.get_ref();
    }
    if p.retry_backoff > p.retry_backoff_max {
        errors.push(
            None,
            &f("retry_backoff"),
            "is longer than `retry_backoff_max`",
        );
    }
    p
}

/// Parse `N/window`, e.g. `5/1h`.
pub fn parse_rate(text: &str) -> Result<RateLimit, String> {
    let (n, window) = text
        .split_once('/')
        .ok_or_else(|| format!("`{text}`: expected `N/WINDOW`, e.g. `5/1h`"))?;
    let count: u32 = n
        .trim()
        .parse()
        .ok()
        .filter(|n| *n > 0)
        .ok_or_else(|| format!("`{text}`: `{n}` is not a positive whole number"))?;
    let window = parse_duration(window)?;
    Ok(RateLimit { count, window })
}

fn resolve_plugins(
    raw: &BTreeMap<Spanned<String>, PluginUseFile>,
    ctx: &LoadContext<'_>,
    errors: &mut Errors<'_>,
) -> BTreeMap<String, PluginUse> {
    let mut out = BTreeMap::new();
    for (name, used) in raw {
        let field = format!("plugins.{}", name.get_ref());
        if !ctx.plugins.contains(name.get_ref()) {
            let known: Vec<&str> = ctx.plugins.iter().map(String::as_str).collect();
            errors.push(
                Some(name.span()),
                &field,
                format!(
                    "no plugin named `{}` is loaded (loaded: {})",
                    name.get_ref(),
                    known.join(", ")
                ),
            );
            continue;
        }
        let settings = ctx.config.plugin(name.get_ref());
        let outer = &settings.grants;
        let mut grants = outer.clone();
        let mut narrow = |kind: &str, span: Range<usize>, ok: bool, what: String| {
            if !ok {
                errors.push(
                    Some(span),
                    &format!("{field}.{kind}"),
                    format!(
                        "{what} is not granted to plugin `{}` in runloom.toml; a runbook can only narrow grants",
                        name.get_ref()
                    ),
                );
            }
        };
        if let Some(hosts) = &used.hosts {
            for h in hosts.get_ref() {
                narrow(
                    "hosts",
                    hosts.span(),
                    outer.hosts.iter().any(|o| h.is_within(o)),
                    format!("host `{h}`"),
                );
            }
            grants.hosts = hosts.get_ref().clone();
        }
        if let Some(dirs) = &used.dirs {
            for d in dirs.get_ref() {
                narrow(
                    "dirs",
                    dirs.span(),
                    outer.dirs.iter().any(|o| d.is_within(o)),
                    format!("directory `{d}`"),
                );
            }
            grants.dirs = dirs.get_ref().clone();
        }
        if let Some(commands) = &used.commands {
            for c in commands.get_ref() {
                narrow(
                    "commands",
                    commands.span(),
                    outer.commands.iter().any(|o| c.is_within(o)),
                    format!("command `{c}`"),
                );
            }
            grants.commands = commands.get_ref().clone();
        }
        if let Some(secrets) = &used.secrets {
            for s in secrets.get_ref() {
                narrow(
                    "secrets",
                    secrets.span(),
                    outer.secrets.contains(s),
                    format!("secret `{s}`"),
                );
            }
            grants.secrets = secrets.get_ref().clone();
        }
        if let Some(system) = &used.system {
            for s in system.get_ref() {
                narrow(
                    "system",
                    system.span(),
                    outer.system.contains(s),
                    format!("system fact `{}`", s.name()),
                );
            }
            grants.system = system.get_ref().clone();
        }
        let timeout = used
            .timeout
            .as_ref()
            .and_then(|t| duration(t, &format!("{field}.timeout"), errors));
        if let (Some(t), Some(span)) = (timeout, used.timeout.as_ref().map(Spanned::span))
            && t > settings.limits.timeout
        {
            errors.push(
                Some(span),
                &format!("{field}.timeout"),
                format!(
                    "is longer than the plugin's limit of {} in runloom.toml",
                    humantime::format_duration(settings.limits.timeout)
                ),
            );
        }
        out.insert(name.get_ref().clone(), PluginUse { grants, timeout });
    }
    out
}

fn resolve_secrets(
    raw: &[Spanned<String>],
    ctx: &LoadContext<'_>,
    errors: &mut Errors<'_>,
) -> Vec<String> {
    let mut out = Vec::new();
    for s in raw {
        if !ctx.config.secrets.contains_key(s.get_ref()) {
            errors.push(
                Some(s.span()),
                "secrets",
                format!(
                    "secret `{}` has no [secrets.{}] table in runloom.toml",
                    s.get_ref(),
                    s.get_ref()
                ),
            );
        }
        out.push(s.get_ref().clone());
    }
    out
}

fn read_body(dir: &Path, body: Option<&Spanned<String>>, errors: &mut Errors<'_>) -> Option<Body> {
    let (path, span) = match body {
        Some(b) => (dir.join(b.get_ref()), Some(b.span())),
        None => {
            let rhai = dir.join("main.rhai");
            let wasm = dir.join("main.wasm");
            if rhai.exists() {
                (rhai, None)
            } else if wasm.exists() {
                (wasm, None)
            } else {
                errors.push(None, "body", "no body: add `main.rhai` or `main.wasm` to the runbook directory, or set `body`");
                return None;
            }
        }
    };
    let kind = match path.extension().and_then(|e| e.to_str()) {
        Some("rhai") => BodyKind::Rhai,
        Some("wasm") => BodyKind::Wasm,
        _ => {
            errors.push(
                span,
                "body",
                format!(
                    "`{}`: a body is a `.rhai` script or a `.wasm` component",
                    path.display()
                ),
            );
            return None;
        }
    };
    match std::fs::read(&path) {
        Ok(bytes) => Some(Body { kind, path, bytes }),
        Err(e) => {
            errors.push(
                span,
                "body",
                format!("cannot read `{}`: {e}", path.display()),
            );
            None
        }
    }
}

impl Runbook {
    /// The parameter called `name`.
    pub fn parameter(&self, name: &str) -> Option<&Parameter> {
        self.parameters.iter().find(|p| p.name == name)
    }

    /// Parse `-p name=value` arguments against the declared parameters.
    pub fn parse_cli_params(
        &self,
        args: &[(String, String)],
    ) -> Result<Map<String, Value>, Vec<String>> {
        let mut errors = Vec::new();
        let mut out = Map::new();
        for (name, text) in args {
            match self.parameter(name) {
                Some(p) => match p.kind.parse_cli(text) {
                    Ok(v) => {
                        out.insert(name.clone(), v);
                    }
                    Err(e) => errors.push(format!("parameter `{name}`: {e}")),
                },
                // Left in so `params::resolve` reports it with the known names.
                None => {
                    out.insert(name.clone(), Value::String(text.clone()));
                }
            }
        }
        if errors.is_empty() {
            Ok(out)
        } else {
            Err(errors)
        }
    }
}

#[cfg(test)]
mod tests;
