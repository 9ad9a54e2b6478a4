//! `runloom run | validate | runs | show | logs`.

use super::plugin::{open_host, print_json, print_table};
use super::{ExitCode, Failure, Outcome};
use crate::catalog::{self, Catalog, Prepared};
use crate::config::Config;
use crate::executor::{EnqueueError, Executor, RunRequest, render_log};
use crate::plugin::{PluginHost, Registry};
use crate::run::{RunRecord, RunStatus, StepRecord};
use crate::runbook::{self, LoadContext};
use crate::store::{RunFilter, Store, StoreError};
use clap::Args;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// Arguments of `runloom run`.
#[derive(Debug, Args)]
pub struct RunArgs {
    /// Runbook name (a directory under the runbook directory) or path to a runbook directory.
    pub runbook: String,
    /// A parameter value (repeatable): `-p path=/var/tmp -p max_age=7d`.
    #[arg(short = 'p', long = "param", value_name = "NAME=VALUE", value_parser = parse_param)]
    pub params: Vec<(String, String)>,
    /// Run `read` actions but only plan `mutate` actions, recording their inputs.
    #[arg(long)]
    pub dry_run: bool,
    /// Print the summary as JSON instead of text.
    #[arg(long)]
    pub json: bool,
}

fn parse_param(s: &str) -> Result<(String, String), String> {
    s.split_once('=')
        .map(|(k, v)| (k.trim().to_string(), v.to_string()))
        .filter(|(k, _)| !k.is_empty())
        .ok_or_else(|| format!("`{s}`: expected NAME=VALUE"))
}

/// Arguments of `runloom runs`.
#[derive(Debug, Args)]
pub struct RunsArgs {
    /// Only runs of this runbook.
    #[arg(long)]
    pub runbook: Option<String>,
    /// Only runs with this status.
    #[arg(long, value_parser = |s: &str| s.parse::<RunStatus>())]
    pub status: Option<RunStatus>,
    /// At most this many, newest first.
    #[arg(long, default_value_t = 50)]
    pub limit: u32,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

/// The plugins, store and executor a command that runs things needs.
struct Engine {
    host: PluginHost,
    registry: Arc<Registry>,
    store: Store,
}

async fn open(config: &Config) -> Result<Engine, Failure> {
    let host = open_host(config)?;
    let registry = Arc::new(Registry::load(&host, &config.plugin_dir).await);
    for problem in registry.problems() {
        eprintln!("warning: plugin {}: {}", problem.origin, problem.error);
    }
    let store = open_store(config).await?;
    Ok(Engine {
        host,
        registry,
        store,
    })
}

async fn open_store(config: &Config) -> Result<Store, Failure> {
    Store::open(&config.store_url(), config.durability)
        .await
        .map_err(Failure::from)
}

/// Find a runbook directory by name or path.
fn runbook_dir(config: &Config, arg: &str) -> Result<PathBuf, Failure> {
    let as_path = Path::new(arg);
    if arg.contains('/') || runbook::is_runbook_dir(as_path) {
        return if runbook::is_runbook_dir(as_path) {
            Ok(as_path.to_path_buf())
        } else {
            Err(Failure::new(
                ExitCode::Usage,
                format!(
                    "`{arg}` is not a runbook directory (no {} in it)",
                    runbook::FILE_NAME
                ),
            ))
        };
    }
    let dir = config.runbook_dir.join(arg);
    if runbook::is_runbook_dir(&dir) {
        return Ok(dir);
    }
    let known: Vec<String> = runbook::discover(&config.runbook_dir)
        .unwrap_or_default()
        .iter()
        .filter_map(|d| d.file_name().map(|n| n.to_string_lossy().into_owned()))
        .collect();
    Err(Failure::new(
        ExitCode::Usage,
        format!(
            "no runbook `{arg}` in `{}` (runbooks: {})",
            config.runbook_dir.display(),
            if known.is_empty() {
                "none".into()
            } else {
                known.join(", ")
            }
        ),
    ))
}

/// Load and compile one runbook, printing every definition error.
async fn prepare(config: &Config, engine: &Engine, dir: &Path) -> Result<Arc<Prepared>, Failure> {
    let names: BTreeSet<String> = engine
        .registry
        .plugins()
        .map(|p| p.name().to_string())
        .collect();
    let ctx = LoadContext {
        config,
        plugins: &names,
    };
    catalog::prepare(dir, &ctx, &engine.host)
        .await
        .map(Arc::new)
        .map_err(|errors| {
            let lines: Vec<String> = errors.iter().map(ToString::to_string).collect();
            Failure::new(
                ExitCode::Definition,
                format!(
                    "runbook `{}` is invalid:\n{}",
                    dir.display(),
                    lines.join("\n")
                ),
            )
        })
}

/// The exit code for a finished run.
pub(crate) fn status_exit_code(status: RunStatus) -> ExitCode {
    match status {
        RunStatus::Succeeded => ExitCode::Success,
        RunStatus::Failed | RunStatus::Skipped => ExitCode::Failed,
        RunStatus::Errored | RunStatus::Queued | RunStatus::Running => ExitCode::Errored,
        RunStatus::TimedOut => ExitCode::TimedOut,
        RunStatus::Cancelled => ExitCode::Cancelled,
    }
}

pub(super) async fn run(config: &Config, args: RunArgs) -> Outcome {
    let dir = runbook_dir(config, &args.runbook)?;
    let engine = open(config).await?;
    let prepared = prepare(config, &engine, &dir).await?;
    let params = prepared
        .runbook
        .parse_cli_params(&args.params)
        .map_err(|e| Failure::new(ExitCode::Usage, e.join("; ")))?;
    let executor = Executor::new(
        engine.host.clone(),
        engine.registry.clone(),
        Arc::new(config.clone()),
        engine.store.clone(),
    );
    let record = executor
        .enqueue(&prepared, RunRequest::manual(params, args.dry_run))
        .await
        .map_err(|e| match e {
            EnqueueError::Parameters(p) => Failure::new(ExitCode::Usage, p.join("; ")),
            EnqueueError::Store(e) => Failure::from(e),
        })?;
    let quiet = args.json;
    if !quiet {
        println!(
            "run {} of `{}`{} (runbook {})",
            record.id,
            prepared.runbook.name,
            if args.dry_run { " [dry-run]" } else { "" },
            &prepared.runbook.content_hash[..12]
        );
    }
    let cancel = CancellationToken::new();
    let on_interrupt = cancel.clone();
    tokio::spawn(async move {
        if tokio::signal::ctrl_c().await.is_ok() {
            eprintln!("cancelling the run (Ctrl-C again to quit at once)");
            on_interrupt.cancel();
            if tokio::signal::ctrl_c().await.is_ok() {
                std::process::exit(ExitCode::Cancelled as i32);
            }
        }
    });
    let observer: crate::executor::LogObserver = Arc::new(move |line| {
        if !quiet {
            println!("{}", render_log(line));
        }
    });
    let finished = executor
        .execute(prepared, record, cancel, Some(observer))
        .await
        .map_err(Failure::from)?;
    let steps = engine
        .store
        .steps(&finished.id)
        .await
        .map_err(Failure::from)?;
    if args.json {
        print_json(&run_json(&finished, &steps), false);
    } else {
        println!();
        print_summary(&finished, &steps);
    }
    Ok(status_exit_code(finished.status))
}

fn run_json(run: &RunRecord, steps: &[StepRecord]) -> serde_json::Value {
    let mut doc = serde_json::to_value(run).unwrap_or_default();
    doc["duration_ms"] = run.duration_ms().into();
    doc["steps"] = serde_json::to_value(steps).unwrap_or_default();
    doc
}

fn print_summary(run: &RunRecord, steps: &[StepRecord]) {
    let duration = run
        .duration_ms()
        .map(|ms| format!(" in {}", human_ms(ms)))
        .unwrap_or_default();
    println!("run {} {}{duration}", run.id, run.status);
    if let Some(reason) = &run.reason {
        println!("  reason: {reason}");
    }
    if !steps.is_empty() {
        print_steps(steps);
    }
    if let Some(output) = &run.output
        && !output.is_null()
    {
        println!(
            "  output: {}",
            serde_json::to_string_pretty(output)
                .unwrap_or_default()
                .replace('\n', "\n  ")
        );
    }
}

fn print_steps(steps: &[StepRecord]) {
    let depth = |s: &StepRecord| {
        let mut d = 0;
        let mut parent = s.parent;
        while let Some(p) = parent {
            d += 1;
            parent = steps.iter().find(|x| x.seq == p).and_then(|x| x.parent);
        }
        d
    };
    let rows: Vec<[String; 7]> = steps
        .iter()
        .map(|s| {
            let name = format!("{}{}", "  ".repeat(depth(s)), s.name);
            let kind = s.action_kind.clone().unwrap_or_else(|| s.kind.clone());
            let duration = s
                .ended_at
                .map(|e| human_ms(e - s.started_at))
                .unwrap_or_default();
            let error = s
                .error
                .as_deref()
                .map(|e| format!("{} ({})", e, s.blame.as_deref().unwrap_or("-")))
                .unwrap_or_default();
            [
                s.seq.to_string(),
                name,
                kind,
                s.status.as_str().to_string(),
                s.attempts.to_string(),
                duration,
                error,
            ]
        })
        .collect();
    print_table(
        &["#", "STEP", "KIND", "STATUS", "ATTEMPTS", "TIME", "ERROR"],
        &rows,
    );
}

/// `1.2s`, `35ms`, `2m03s`.
fn human_ms(ms: i64) -> String {
    match ms {
        ms if ms < 1000 => format!("{ms}ms"),
        ms if ms < 60_000 => format!("{:.1}s", ms as f64 / 1000.0),
        ms => format!("{}m{:02}s", ms / 60_000, (ms % 60_000) / 1000),
    }
}

pub(super) async fn validate(config: &Config, path: Option<PathBuf>) -> Outcome {
    let host = open_host(config)?;
    let registry = Registry::load(&host, &config.plugin_dir).await;
    let root = path.unwrap_or_else(|| config.runbook_dir.clone());
    let catalog = Catalog::load(&root, config, &registry, &host).await;
    let mut problems = 0;
    for p in registry.problems() {
        println!("{}: {}", p.origin, p.error);
        problems += 1;
    }
    for e in catalog.errors() {
        println!("{e}");
        problems += 1;
    }
    let plugins = registry.plugins().count();
    if problems == 0 {
        println!(
            "ok: {} runbooks and {plugins} plugins are valid",
            catalog.runbooks().count()
        );
        Ok(ExitCode::Success)
    } else {
        println!(
            "{problems} problems ({} of {} runbooks valid, {plugins} plugins loaded)",
            catalog.runbooks().count(),
            catalog.scanned
        );
        Ok(ExitCode::Definition)
    }
}

pub(super) async fn runs(config: &Config, args: RunsArgs) -> Outcome {
    let store = open_store(config).await?;
    let filter = RunFilter {
        runbook: args.runbook,
        status: args.status,
        limit: args.limit,
    };
    let runs = store.list_runs(&filter).await.map_err(Failure::from)?;
    if args.json {
        print_json(&serde_json::to_value(&runs).unwrap_or_default(), false);
        return Ok(ExitCode::Success);
    }
    let rows: Vec<[String; 6]> = runs
        .iter()
        .map(|r| {
            [
                r.id.clone(),
                r.runbook.clone(),
                r.status.to_string(),
                r.trigger_kind.clone() + if r.dry_run { " (dry-run)" } else { "" },
                local_time(r.queued_at),
                r.duration_ms().map(human_ms).unwrap_or_default(),
            ]
        })
        .collect();
    print_table(
        &["ID", "RUNBOOK", "STATUS", "TRIGGER", "QUEUED", "DURATION"],
        &rows,
    );
    Ok(ExitCode::Success)
}

pub(super) fn local_time(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .map(|t| {
            t.with_timezone(&chrono::Local)
                .format("%Y-%m-%d %H:%M:%S")
                .to_string()
        })
        .unwrap_or_default()
}

fn store_failure(e: StoreError) -> Failure {
    match e {
        StoreError::NotFound(_) | StoreError::Ambiguous(_) => {
            Failure::new(ExitCode::Usage, e.to_string())
        }
        StoreError::Database(e) => Failure::from(e),
    }
}

pub(super) async fn show(config: &Config, id: &str, json: bool) -> Outcome {
    let store = open_store(config).await?;
    let run = store.get_run(id).await.map_err(store_failure)?;
    let steps = store.steps(&run.id).await.map_err(Failure::from)?;
    if json {
        print_json(&run_json(&run, &steps), false);
        return Ok(ExitCode::Success);
    }
    println!("run {} of `{}`: {}", run.id, run.runbook, run.status);
    println!("  runbook:  sha256 {}", run.runbook_hash);
    println!("  trigger:  {}", run.trigger);
    println!("  params:   {}", run.params);
    if run.dry_run {
        println!("  dry-run:  mutate actions planned, not invoked");
    }
    println!("  queued:   {}", local_time(run.queued_at));
    if let Some(started) = run.started_at {
        println!(
            "  started:  {} (+{})",
            local_time(started),
            human_ms(started - run.queued_at)
        );
    }
    if let Some(ms) = run.duration_ms() {
        println!("  duration: {}", human_ms(ms));
    }
    if let Some(reason) = &run.reason {
        let blame = run
            .blame
            .as_deref()
            .map(|b| format!(" [blame: {b}]"))
            .unwrap_or_default();
        println!("  reason:   {reason}{blame}");
    }
    if !steps.is_empty() {
        println!();
        print_steps(&steps);
    }
    if let Some(output) = &run.output {
        println!();
        println!("output:");
        print_json(output, false);
    }
    Ok(ExitCode::Success)
}

pub(super) async fn logs(config: &Config, id: &str, follow: bool) -> Outcome {
    let store = open_store(config).await?;
    let run = store.get_run(id).await.map_err(store_failure)?;
    let mut after = 0;
    loop {
        let lines = store
            .logs(&run.id, after, 1000)
            .await
            .map_err(Failure::from)?;
        for line in &lines {
            println!("{}", render_log(line));
            after = line.seq;
        }
        if lines.len() == 1000 {
            continue;
        }
        if !follow {
            break;
        }
        let status = store.get_run(&run.id).await.map_err(store_failure)?.status;
        if status.is_final() {
            // One more read: lines written just before the final status.
            let rest = store
                .logs(&run.id, after, 10_000)
                .await
                .map_err(Failure::from)?;
            for line in &rest {
                println!("{}", render_log(line));
            }
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    Ok(ExitCode::Success)
}
