//! `runloom plugin list | inspect | call`.

use super::{ExitCode, Failure, Outcome};
use crate::config::{Config, SecretRef, parse_duration, parse_size};
use crate::grant::{CommandGrant, DirGrant, Grants, HostPattern};
use crate::plugin::{
    CallError, CallRequest, HostConfig, LogLine, Plugin, PluginHost, Registry, load_file,
};
use crate::secret::Secrets;
use clap::{Args, Subcommand};
use serde_json::Value;
use std::io::Read;
use std::path::Path;
use std::sync::Arc;

/// `runloom plugin …`
#[derive(Debug, Subcommand)]
pub enum PluginCommand {
    /// List the loaded plugins (standard ones and those in the plugin directory).
    List {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Show a plugin's actions with their kind and input/output schemas, and its grants.
    Inspect {
        /// Plugin name, or path to a `.wasm` component.
        plugin: String,
        /// Print the manifest as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Call one action once, with the plugin's grants from runloom.toml plus any given here.
    Call(Box<CallArgs>),
}

/// Arguments of `runloom plugin call`.
#[derive(Debug, Args)]
pub struct CallArgs {
    /// Plugin name, or path to a `.wasm` component.
    pub plugin: String,
    /// Action to call.
    pub action: String,
    /// Input JSON: a document, `@file.json`, or `-` for stdin.
    #[arg(long, short, default_value = "{}")]
    pub input: String,
    /// Also grant an outbound `host:port` (repeatable): `example.org:443`, `127.0.0.1:*`.
    #[arg(long = "allow-host", value_name = "HOST:PORT")]
    pub hosts: Vec<HostPattern>,
    /// Also grant a directory (repeatable): `HOST_PATH[:GUEST_PATH][:ro|rw]`.
    #[arg(long = "allow-dir", value_name = "DIR")]
    pub dirs: Vec<DirGrant>,
    /// Also grant a program (repeatable): `"/usr/bin/df"` or `"/usr/bin/systemctl restart *"`.
    #[arg(long = "allow-command", value_name = "COMMAND")]
    pub commands: Vec<CommandGrant>,
    /// Grant a secret and say where its value is (repeatable): `NAME=env:VAR` or `NAME=file:PATH`.
    #[arg(long = "secret", value_name = "NAME=SOURCE", value_parser = parse_secret_flag)]
    pub secrets: Vec<(String, SecretRef)>,
    /// Deadline for the call, overriding runloom.toml (e.g. `10s`).
    #[arg(long, value_parser = parse_duration)]
    pub timeout: Option<std::time::Duration>,
    /// Memory cap for the call, overriding runloom.toml (e.g. `128MiB`).
    #[arg(long, value_parser = parse_size)]
    pub memory: Option<u64>,
    /// Print the output as one line of JSON instead of pretty-printed.
    #[arg(long)]
    pub compact: bool,
}

fn parse_secret_flag(s: &str) -> Result<(String, SecretRef), String> {
    let (name, source) = s
        .split_once('=')
        .ok_or_else(|| format!("`{s}`: expected NAME=env:VAR or NAME=file:PATH"))?;
    Ok((name.to_string(), source.parse()?))
}

pub(super) async fn run(config: &Config, cmd: PluginCommand) -> Outcome {
    let host = open_host(config)?;
    match cmd {
        PluginCommand::List { json } => list(config, &host, json).await,
        PluginCommand::Inspect { plugin, json } => inspect(config, &host, &plugin, json).await,
        PluginCommand::Call(args) => call(config, &host, *args).await,
    }
}

/// The plugin host configured from `config`.
pub(crate) fn open_host(config: &Config) -> Result<PluginHost, Failure> {
    PluginHost::new(HostConfig {
        cache_dir: Some(config.cache_dir()),
        ..HostConfig::default()
    })
    .map_err(Failure::from)
}

async fn list(config: &Config, host: &PluginHost, json: bool) -> Outcome {
    let registry = Registry::load(host, &config.plugin_dir).await;
    if json {
        let plugins: Vec<Value> = registry
            .plugins()
            .map(|p| {
                serde_json::json!({
                    "name": p.name(),
                    "version": p.manifest().version,
                    "description": p.manifest().description,
                    "origin": p.origin(),
                    "content_hash": p.content_hash(),
                    "actions": p.manifest().actions.iter()
                        .map(|a| serde_json::json!({"name": a.name, "kind": a.kind}))
                        .collect::<Vec<_>>(),
                })
            })
            .collect();
        let problems: Vec<Value> = registry
            .problems()
            .iter()
            .map(|p| serde_json::json!({"origin": p.origin, "error": p.error}))
            .collect();
        print_json(
            &serde_json::json!({"plugins": plugins, "problems": problems}),
            false,
        );
    } else {
        let rows: Vec<[String; 4]> = registry
            .plugins()
            .map(|p| {
                let actions = p
                    .manifest()
                    .actions
                    .iter()
                    .map(|a| format!("{} ({})", a.name, a.kind))
                    .collect::<Vec<_>>()
                    .join(", ");
                [
                    p.name().to_string(),
                    p.manifest().version.clone(),
                    actions,
                    p.origin().to_string(),
                ]
            })
            .collect();
        print_table(&["NAME", "VERSION", "ACTIONS", "ORIGIN"], &rows);
        for problem in registry.problems() {
            eprintln!("error: {}", problem.error);
        }
    }
    Ok(if registry.problems().is_empty() {
        ExitCode::Success
    } else {
        ExitCode::Definition
    })
}

/// Find a plugin by name in the registry, or load it from a path.
async fn resolve(config: &Config, host: &PluginHost, arg: &str) -> Result<Plugin, Failure> {
    let path = Path::new(arg);
    if arg.ends_with(".wasm") || arg.contains('/') {
        return load_file(host, path)
            .await
            .map_err(|e| Failure::new(ExitCode::Definition, e.to_string()));
    }
    let registry = Registry::load(host, &config.plugin_dir).await;
    if let Some(p) = registry.get(arg) {
        return Ok(p.clone());
    }
    let known: Vec<&str> = registry.plugins().map(Plugin::name).collect();
    Err(Failure::new(
        ExitCode::Usage,
        format!("no plugin named `{arg}` (loaded: {})", known.join(", ")),
    ))
}

async fn inspect(config: &Config, host: &PluginHost, arg: &str, json: bool) -> Outcome {
    let plugin = resolve(config, host, arg).await?;
    let settings = config.plugin(plugin.name());
    if json {
        let mut doc = serde_json::to_value(plugin.manifest()).map_err(anyhow::Error::from)?;
        doc["origin"] = plugin.origin().into();
        doc["content_hash"] = plugin.content_hash().into();
        doc["grants"] = settings.grants.describe().into();
        print_json(&doc, false);
        return Ok(ExitCode::Success);
    }
    let m = plugin.manifest();
    println!("{} {}", m.name, m.version);
    println!("  {}", m.description);
    println!("  origin:  {}", plugin.origin());
    println!("  sha256:  {}", plugin.content_hash());
    for action in &m.actions {
        println!();
        println!("  {} [{}]", action.name, action.kind);
        println!("    {}", action.description);
        for (title, schema) in [
            ("input", &action.input_schema),
            ("output", &action.output_schema),
        ] {
            println!("    {title}:");
            let fields = schema_fields(schema);
            if fields.is_empty() {
                println!("      (none)");
            }
            let width = fields.iter().map(|f| f.0.len()).max().unwrap_or(0);
            let type_width = fields.iter().map(|f| f.1.len()).max().unwrap_or(0);
            for (name, ty, required, doc) in fields {
                let req = if required { "required" } else { "optional" };
                println!("      {name:width$}  {ty:type_width$}  {req}  {doc}");
            }
        }
    }
    println!();
    let grants = settings.grants.describe();
    if grants.is_empty() {
        println!(
            "  grants: none (runloom.toml has no [plugins.{}] grants)",
            m.name
        );
    } else {
        println!("  grants (runloom.toml):");
        for g in grants {
            println!("    {g}");
        }
    }
    Ok(ExitCode::Success)
}

/// Top-level properties of a JSON Schema object as (name, type, required, description).
fn schema_fields(schema: &Value) -> Vec<(String, String, bool, String)> {
    let Some(props) = schema.get("properties").and_then(Value::as_object) else {
        return Vec::new();
    };
    let required: Vec<&str> = schema
        .get("required")
        .and_then(Value::as_array)
        .map(|r| r.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    props
        .iter()
        .map(|(name, p)| {
            let doc = p
                .get("description")
                .and_then(Value::as_str)
                .unwrap_or("")
                .replace('\n', " ");
            (
                name.clone(),
                type_name(p),
                required.contains(&name.as_str()),
                doc,
            )
        })
        .collect()
}

fn type_name(p: &Value) -> String {
    if let Some(values) = p.get("enum").and_then(Value::as_array) {
        return values
            .iter()
            .map(|v| {
                v.as_str()
                    .map(str::to_string)
                    .unwrap_or_else(|| v.to_string())
            })
            .collect::<Vec<_>>()
            .join("|");
    }
    if let Some(r) = p.get("$ref").and_then(Value::as_str) {
        return r.rsplit('/').next().unwrap_or(r).to_string();
    }
    if let Some(any) = p
        .get("anyOf")
        .or_else(|| p.get("oneOf"))
        .and_then(Value::as_array)
    {
        return any.iter().map(type_name).collect::<Vec<_>>().join("|");
    }
    match p.get("type") {
        Some(Value::String(t)) if t == "array" => {
            format!("[{}]", p.get("items").map(type_name).unwrap_or_default())
        }
        Some(Value::String(t)) => t.clone(),
        Some(Value::Array(ts)) => ts
            .iter()
            .filter_map(Value::as_str)
            .collect::<Vec<_>>()
            .join("|"),
        _ => "any".into(),
    }
}

async fn call(config: &Config, host: &PluginHost, args: CallArgs) -> Outcome {
    let plugin = resolve(config, host, &args.plugin).await?;
    let manifest = plugin.manifest();
    if manifest.action(&args.action).is_none() {
        let known: Vec<&str> = manifest.actions.iter().map(|a| a.name.as_str()).collect();
        return Err(Failure::new(
            ExitCode::Usage,
            format!(
                "plugin `{}` has no action `{}` (it has: {})",
                manifest.name,
                args.action,
                known.join(", ")
            ),
        ));
    }
    let input = read_input(&args.input)?;

    let settings = config.plugin(plugin.name());
    let mut grants: Grants = settings.grants;
    grants.hosts.extend(args.hosts);
    grants.dirs.extend(args.dirs);
    grants.commands.extend(args.commands);
    let mut secrets = Secrets::new(config.secrets.clone());
    for (name, source) in args.secrets {
        grants.secrets.push(name.clone());
        secrets.insert(name, source);
    }
    let mut limits = settings.limits;
    if let Some(t) = args.timeout {
        limits.timeout = t;
    }
    if let Some(m) = args.memory {
        limits.memory = m;
    }

    let mut request = CallRequest::new(args.action, input);
    request.grants = Arc::new(grants);
    request.secrets = Arc::new(secrets);
    request.limits = limits;
    request.log = Some(Arc::new(print_log_line));
    match host.call(&plugin, request).await {
        Ok(out) => {
            print_json(&out.output, args.compact);
            Ok(ExitCode::Success)
        }
        Err(e) => Err(Failure::new(call_exit_code(&e), e.to_string())),
    }
}

/// The exit code for a failed plugin call.
pub(crate) fn call_exit_code(e: &CallError) -> ExitCode {
    match e {
        CallError::Denied { .. } => ExitCode::Denied,
        CallError::Timeout { .. } => ExitCode::TimedOut,
        CallError::Engine(_) | CallError::Misconfigured { .. } => ExitCode::Errored,
        _ => ExitCode::Failed,
    }
}

fn read_input(arg: &str) -> Result<String, Failure> {
    let usage = |m: String| Failure::new(ExitCode::Usage, m);
    let text = if arg == "-" {
        let mut s = String::new();
        std::io::stdin()
            .read_to_string(&mut s)
            .map_err(|e| usage(format!("reading --input from stdin: {e}")))?;
        s
    } else if let Some(path) = arg.strip_prefix('@') {
        std::fs::read_to_string(path)
            .map_err(|e| usage(format!("reading --input `{path}`: {e}")))?
    } else {
        arg.to_string()
    };
    serde_json::from_str::<Value>(&text).map_err(|e| usage(format!("--input is not JSON: {e}")))?;
    Ok(text)
}

fn print_log_line(line: LogLine) {
    let fields: String = line
        .fields
        .iter()
        .map(|(k, v)| format!(" {k}={v}"))
        .collect();
    eprintln!("[{} {}] {}{fields}", line.level, line.source, line.message);
}

pub(crate) fn print_json(value: &Value, compact: bool) {
    let text = if compact {
        value.to_string()
    } else {
        serde_json::to_string_pretty(value).unwrap_or_else(|_| value.to_string())
    };
    println!("{text}");
}

/// Print rows under a header, columns padded to their widest cell.
pub(crate) fn print_table<const N: usize>(header: &[&str; N], rows: &[[String; N]]) {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: Vec<&str>| {
        let mut out = String::new();
        for (i, (cell, w)) in cells.iter().zip(&widths).enumerate() {
            if i + 1 == N {
                out.push_str(cell);
            } else {
                out.push_str(&format!("{cell:w$}  "));
            }
        }
        println!("{}", out.trim_end());
    };
    line(header.to_vec());
    for row in rows {
        line(row.iter().map(String::as_str).collect());
    }
}
