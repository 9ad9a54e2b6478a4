//! The `runloom` command line: argument types (clap) and dispatch to library code.
//!
//! Invariant: no engine logic here. Each subcommand parses its arguments, calls into the
//! library, prints, and returns an [`ExitCode`]. `main.rs` only calls [`run`].

mod plugin;
mod runs;
mod schedule;
mod serve;
mod token;

use crate::config::Config;
use clap::{Parser, Subcommand};
use std::path::PathBuf;

/// How `runloom` exits. Scripts and CI may rely on these numbers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExitCode {
    /// Everything worked.
    Success = 0,
    /// A run or plugin call failed (a check failed, a plugin returned an error, crashed or
    /// broke a limit).
    Failed = 1,
    /// Bad command-line usage: unknown flag, bad value, unknown plugin or action.
    Usage = 2,
    /// A capability was not granted.
    Denied = 3,
    /// An engine fault: a bug, or the host (disk, database) failing.
    Errored = 4,
    /// A run or plugin call ran past its deadline.
    TimedOut = 5,
    /// A definition is invalid: `runloom.toml`, a runbook, or a plugin component.
    Definition = 6,
    /// The run was cancelled.
    Cancelled = 7,
}

/// An error that decides the exit code, with the message to print.
#[derive(Debug)]
pub struct Failure {
    /// Exit code.
    pub code: ExitCode,
    /// What to print after `error: `.
    pub message: String,
}

impl Failure {
    /// A failure with `code`.
    pub fn new(code: ExitCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }
}

impl From<anyhow::Error> for Failure {
    fn from(e: anyhow::Error) -> Self {
        Failure::new(ExitCode::Errored, format!("{e:#}"))
    }
}

/// Result of a subcommand.
pub type Outcome = Result<ExitCode, Failure>;

/// Runloom: automation runbooks for IT operations, with sandboxed WebAssembly plugins.
#[derive(Debug, Parser)]
#[command(name = "runloom", version, about, long_about = None)]
pub struct Cli {
    /// Engine configuration file [default: ./runloom.toml if it exists].
    #[arg(long, global = true, env = "RUNLOOM_CONFIG", value_name = "PATH")]
    pub config: Option<PathBuf>,
    /// Data directory (store, compiled-plugin cache), overriding runloom.toml.
    #[arg(long, global = true, env = "RUNLOOM_DATA_DIR", value_name = "PATH")]
    pub data_dir: Option<PathBuf>,
    /// Store URL, overriding runloom.toml: `sqlite://PATH` (the default is
    /// `sqlite://<data_dir>/runloom.db`) or `postgres://USER@HOST/DB` to share one database
    /// between several nodes.
    #[arg(long, global = true, env = "RUNLOOM_STORE", value_name = "URL")]
    pub store: Option<String>,
    /// More engine diagnostics on stderr (-v info, -vv debug). RUST_LOG overrides.
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Show the main job end to end on this machine, with the embedded store.
    Demo,
    /// Run a runbook once, streaming its log; the exit code follows the run's status.
    Run(runs::RunArgs),
    /// Check runloom.toml, the plugins, and every runbook under PATH (default: the runbook
    /// directory); report every error with file, line and field.
    Validate {
        /// A runbook directory, or a directory of runbooks.
        path: Option<PathBuf>,
    },
    /// List runs, newest first.
    Runs(runs::RunsArgs),
    /// Show one run: trigger, parameters, steps with outcomes and timings, output.
    Show {
        /// Run id (a unique prefix is enough).
        run_id: String,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Print a run's log.
    Logs {
        /// Run id (a unique prefix is enough).
        run_id: String,
        /// Keep printing new lines until the run ends.
        #[arg(long, short)]
        follow: bool,
    },
    /// List, inspect and call plugins.
    #[command(subcommand)]
    Plugin(plugin::PluginCommand),
    /// Cron triggers and their next fire times.
    #[command(subcommand)]
    Schedule(schedule::ScheduleCommand),
    /// Print the JSON Schema of runbook.toml (for editors; also in runbooks/runbook.schema.json).
    Schema,
    /// Serve the HTTP API, alert intake, scheduler and workers in one process, until SIGTERM
    /// or SIGINT (then shut down gracefully).
    Serve(serve::ServeArgs),
    /// Pause every runbook: triggered runs are recorded as skipped (rule `paused`) until
    /// `runloom resume`. Takes effect on a running server at once.
    Pause {
        /// Why, shown on every skipped run.
        #[arg(long)]
        reason: Option<String>,
    },
    /// Lift the global pause.
    Resume,
    /// Circuit breakers: list them, or reset one.
    #[command(subcommand)]
    Breaker(serve::BreakerCommand),
    /// API bearer tokens: create (the secret is shown once), list, revoke.
    #[command(subcommand)]
    Token(token::TokenCommand),
    /// Internal: compile one plugin into the cache, for `runloom serve`, which runs it as a
    /// child process so that the compiler's memory is never the server's.
    #[command(name = crate::plugin::CHILD_SUBCOMMAND, hide = true)]
    CompilePlugin {
        /// Where to write the compiled artifact.
        #[arg(long)]
        out: PathBuf,
        /// Hex SHA-256 of the component: an embedded plugin's, or the bytes on stdin.
        #[arg(long)]
        hash: String,
        /// The parent engine's compatibility fingerprint, which this one must match.
        #[arg(long)]
        fingerprint: String,
        /// Read the component from stdin instead of finding it among the embedded plugins.
        #[arg(long)]
        from_stdin: bool,
    },
}

/// Parse arguments, run the subcommand, and return the process exit code.
pub fn run() -> i32 {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            // clap prints help/version to stdout with success, usage errors with code 2.
            let _ = e.print();
            return e.exit_code();
        }
    };
    init_tracing(cli.verbose);
    if let Command::CompilePlugin {
        out,
        hash,
        fingerprint,
        from_stdin,
    } = &cli.command
    {
        // Before the runtime and the configuration: this process only compiles.
        return crate::plugin::compile_child(out, hash, fingerprint, *from_stdin);
    }
    if prints_only(&cli.command) {
        // `runloom runs | head` should end quietly, as other Unix tools do, instead of
        // panicking on a closed pipe. Only for commands that run no plugins or runbooks: their
        // pipes to child processes must keep reporting EPIPE as an error.
        // SAFETY: called before any other thread exists; restores the default disposition.
        let _ = unsafe {
            nix::sys::signal::signal(
                nix::sys::signal::Signal::SIGPIPE,
                nix::sys::signal::SigHandler::SigDfl,
            )
        };
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        // Idle blocking threads (start-up's plugin loading) exit after this instead of
        // tokio's 10 s, and the memory they hold goes with them: an idle server settles at
        // its idle RSS sooner. Busy ones are reused, whatever this is.
        .thread_keep_alive(BLOCKING_KEEP_ALIVE)
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::Errored as i32;
        }
    };
    match runtime.block_on(dispatch(cli)) {
        Ok(code) => code as i32,
        Err(failure) => {
            eprintln!("error: {}", failure.message);
            failure.code as i32
        }
    }
}

async fn dispatch(cli: Cli) -> Outcome {
    let config = load_config(&cli)?;
    match cli.command {
        Command::Demo => crate::demo::run(&config).await.map_err(Failure::from),
        Command::Run(args) => runs::run(&config, args).await,
        Command::Validate { path } => runs::validate(&config, path).await,
        Command::Runs(args) => runs::runs(&config, args).await,
        Command::Show { run_id, json } => runs::show(&config, &run_id, json).await,
        Command::Logs { run_id, follow } => runs::logs(&config, &run_id, follow).await,
        Command::Plugin(cmd) => plugin::run(&config, cmd).await,
        Command::Schedule(cmd) => schedule::run(&config, cmd).await,
        Command::Schema => {
            println!("{}", crate::runbook::json_schema());
            Ok(ExitCode::Success)
        }
        Command::Serve(args) => serve::serve(&config, args).await,
        Command::Pause { reason } => serve::pause(&config, reason).await,
        Command::Resume => serve::resume(&config).await,
        Command::Breaker(cmd) => serve::breaker(&config, cmd).await,
        Command::Token(cmd) => token::run(&config, cmd).await,
        Command::CompilePlugin { .. } => Err(Failure::new(
            ExitCode::Usage,
            "`__compile-plugin` runs before the configuration is read",
        )),
    }
}

/// This executable, to run again as a child: `/proc/self/exe` where it exists (it stays the
/// running binary even if the file was replaced since), otherwise its path.
pub(crate) fn this_executable() -> Option<PathBuf> {
    let proc = PathBuf::from("/proc/self/exe");
    if proc.exists() {
        Some(proc)
    } else {
        std::env::current_exe().ok()
    }
}

/// How long an idle blocking thread waits for work before it exits.
const BLOCKING_KEEP_ALIVE: std::time::Duration = std::time::Duration::from_secs(2);

/// Commands that only print what is stored or configured.
fn prints_only(command: &Command) -> bool {
    matches!(
        command,
        Command::Runs(_)
            | Command::Show { .. }
            | Command::Logs { .. }
            | Command::Schema
            | Command::Schedule(_)
            | Command::Plugin(plugin::PluginCommand::List { .. })
            | Command::Plugin(plugin::PluginCommand::Inspect { .. })
    )
}

fn load_config(cli: &Cli) -> Result<Config, Failure> {
    let mut config = Config::load(cli.config.as_deref())
        .map_err(|e| Failure::new(ExitCode::Definition, e.to_string()))?;
    if let Some(dir) = &cli.data_dir {
        if config.plugin_dir == config.data_dir.join("plugins") {
            config.plugin_dir = dir.join("plugins");
        }
        config.data_dir = dir.clone();
    }
    if let Some(url) = &cli.store {
        config.store_url = Some(url.clone());
    }
    Ok(config)
}

fn init_tracing(verbose: u8) {
    let default = match verbose {
        0 => "warn",
        1 => "info",
        _ => "debug",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}
