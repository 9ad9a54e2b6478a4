//! `remediate`: the fixes an on-call engineer reaches for first — restart a service, clear old
//! or large files, rotate or truncate a log, stop a runaway process.
//!
//! Files are reached only through granted directories (guest paths); symlinks are never
//! followed, so nothing outside the directory named in the input is read or deleted.
//! `find-files` is the `read` twin of `delete-files`: same input, same selection, so a dry-run
//! shows exactly what would be deleted. Programs (`systemctl`, `kill`) run only as granted
//! commands. The decisions live in [`pure`] (unit-tested natively); host calls stay here.

pub mod pure;

use pure::Criteria;
use runloom_sdk::exec::{Command, ExitStatus};
use runloom_sdk::{Actions, CallContext, Error, Plugin, export_plugin, fs, log, system};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use std::io::ErrorKind;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

struct Remediate;

impl Plugin for Remediate {
    const NAME: &'static str = "remediate";
    const DESCRIPTION: &'static str = "Remediation: restart services, clear old or large files, rotate and truncate logs, stop processes.";

    fn actions() -> Actions {
        Actions::new()
            .mutate(
                "restart-service",
                "Restart a service (systemctl or a given command) and verify it is active again.",
                restart_service,
            )
            .read(
                "find-files",
                "List files in a granted directory older and/or larger than given limits, with their total size.",
                find_files,
            )
            .mutate(
                "delete-files",
                "Delete the files `find-files` selects for the same input and report the bytes freed.",
                delete_files,
            )
            .mutate(
                "rotate-log",
                "Rotate a log file: shift `x.log.1`… up to `keep` copies, then move or copy `x.log` to `x.log.1` and empty it.",
                rotate_log,
            )
            .mutate(
                "truncate-log",
                "Empty a log file in place and report the bytes freed.",
                truncate_log,
            )
            .mutate(
                "stop-process",
                "Signal every process with a given name and wait for them to exit.",
                stop_process,
            )
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

fn command_error(cmd: &Command, out: &runloom_sdk::exec::Output) -> Error {
    let text = out.stderr_text();
    let text = if text.trim().is_empty() {
        out.stdout_text()
    } else {
        text
    };
    Error::failed(format!(
        "`{}` failed ({}): {}",
        cmd.display(),
        out.status_text(),
        text.trim()
    ))
}

// ---------------------------------------------------------------------------------------------
// restart-service

/// Input of `restart-service`.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RestartInput {
    /// The unit to restart, e.g. `nginx.service`.
    pub unit: String,
    /// Absolute path of `systemctl`.
    #[serde(default = "default_systemctl")]
    pub systemctl: String,
    /// Run this instead of `systemctl restart <unit>`: an absolute program and its arguments;
    /// `{unit}` in an argument is replaced by the unit.
    pub restart_command: Option<Vec<String>>,
    /// Verify with this instead of `systemctl is-active <unit>`; exit code 0 means healthy.
    /// `{unit}` is replaced as in `restart_command`.
    pub check_command: Option<Vec<String>>,
    /// Check that the service is active after restarting it.
    #[serde(default = "default_true")]
    pub verify: bool,
    /// How long to wait for the service to become active, in milliseconds.
    #[serde(default = "default_verify_timeout_ms")]
    pub verify_timeout_ms: u64,
    /// Kill the restart command after this many milliseconds.
    #[serde(default = "default_restart_timeout_ms")]
    pub timeout_ms: u64,
}

fn default_systemctl() -> String {
    "/usr/bin/systemctl".into()
}

fn default_true() -> bool {
    true
}

fn default_verify_timeout_ms() -> u64 {
    15_000
}

fn default_restart_timeout_ms() -> u64 {
    60_000
}

/// Output of `restart-service`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct RestartOutput {
    /// The unit.
    pub unit: String,
    /// The command that restarted it.
    pub command: String,
    /// Whether the service was checked after the restart (and found active).
    pub verified: bool,
    /// The last state `systemctl is-active` printed (`active`), or `healthy` for a
    /// `check_command`; absent without verification.
    pub state: Option<String>,
    /// How many checks ran before the service was active.
    pub checks: u32,
    /// Time from the restart to the end of verification, in milliseconds.
    pub duration_ms: u64,
}

fn command_from(argv: &[String], field: &str, unit: &str) -> Result<Command, Error> {
    let argv = pure::substitute_unit(argv, unit);
    match argv.split_first() {
        Some((program, args)) if program.starts_with('/') => {
            Ok(Command::new(program).args(args.iter().cloned()))
        }
        _ => Err(Error::invalid_input(format!(
            "`{field}` must start with an absolute program path"
        ))),
    }
}

fn restart_service(input: RestartInput, _ctx: &CallContext) -> Result<RestartOutput, Error> {
    if !pure::valid_unit(&input.unit) {
        return Err(Error::invalid_input(format!(
            "`{}` is not a unit name (letters, digits and `:-_.@\\` only, not starting with `-`)",
            input.unit
        )));
    }
    let unit = input.unit.as_str();
    let restart = match &input.restart_command {
        Some(argv) => command_from(argv, "restart_command", unit)?,
        None => Command::new(&input.systemctl).args(["restart", unit]),
    }
    .timeout(Duration::from_millis(input.timeout_ms.max(1)));
    let check = match &input.check_command {
        Some(argv) => Some(command_from(argv, "check_command", unit)?),
        None => None,
    };
    log::info(
        "restarting",
        &[("unit", unit), ("command", &restart.display())],
    );
    let started = Instant::now();
    let out = restart.run()?;
    if !out.success() {
        return Err(command_error(&restart, &out));
    }
    let mut output = RestartOutput {
        unit: unit.to_string(),
        command: restart.display(),
        verified: false,
        state: None,
        checks: 0,
        duration_ms: millis(started.elapsed()),
    };
    if !input.verify {
        return Ok(output);
    }
    // The window starts once the restart command has returned: a slow restart must not eat
    // into the time the service gets to come up.
    let deadline = Instant::now() + Duration::from_millis(input.verify_timeout_ms);
    let mut pause = Duration::from_millis(100);
    loop {
        output.checks += 1;
        let (healthy, state, settled) = match &check {
            Some(cmd) => {
                let out = cmd.clone().timeout(Duration::from_secs(10)).run()?;
                let healthy = out.success();
                let state = if healthy { "healthy" } else { "unhealthy" };
                (healthy, state.to_string(), false)
            }
            None => {
                let cmd = Command::new(&input.systemctl)
                    .args(["is-active", unit])
                    .timeout(Duration::from_secs(10));
                let out = cmd.run()?;
                let state = out.stdout_text().trim().to_string();
                // `failed` stays failed unless something restarts the unit again; waiting
                // longer would only delay the report.
                let settled = state == "failed";
                (out.success(), state, settled)
            }
        };
        output.state = Some(state.clone());
        if healthy {
            output.verified = true;
            output.duration_ms = millis(started.elapsed());
            log::info("service is active", &[("unit", unit), ("state", &state)]);
            return Ok(output);
        }
        let now = Instant::now();
        if settled || now >= deadline {
            return Err(Error::failed(format!(
                "`{unit}` is `{state}` {} ms after the restart (checked {} times)",
                millis(started.elapsed()),
                output.checks
            )));
        }
        std::thread::sleep(pause.min(deadline - now));
        pause = (pause * 2).min(Duration::from_secs(1));
    }
}

// ---------------------------------------------------------------------------------------------
// find-files, delete-files

/// Input of `find-files` and `delete-files`: a directory and the files to select in it.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct FilesInput {
    /// Guest path of the directory, inside a granted directory (`rw` to delete).
    pub dir: String,
    /// Select files last modified longer ago than this: `30m`, `12h`, `7d`, `2w`.
    pub older_than: Option<String>,
    /// Select files larger than this: `4096`, `500KB`, `10MiB`, `1GB`.
    pub larger_than: Option<String>,
    /// Select files whose name matches this pattern (`*` any run, `?` one character).
    pub name: Option<String>,
    /// Look in subdirectories too (never through symlinks).
    #[serde(default)]
    pub recursive: bool,
    /// List at most this many files in the output; counts and totals cover every file.
    #[serde(default = "default_max_listed")]
    pub max_listed: usize,
}

fn default_max_listed() -> usize {
    100
}

/// One selected file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct FileInfo {
    /// Guest path.
    pub path: String,
    /// Size in bytes.
    pub size_bytes: u64,
    /// Seconds since it was last modified.
    pub age_secs: u64,
}

/// Output of `find-files` and `delete-files`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct FilesOutput {
    /// The directory searched.
    pub dir: String,
    /// The selected (or deleted) files, by path, at most `max_listed`.
    pub files: Vec<FileInfo>,
    /// True when more files were selected than listed.
    pub truncated: bool,
    /// Number of files selected (or deleted).
    pub count: u64,
    /// Their total size: what deleting them frees (or freed).
    pub total_bytes: u64,
    /// Symlinks seen and left alone.
    pub skipped_symlinks: u64,
}

/// Files a selection takes, in path order.
struct Selection {
    files: Vec<FileInfo>,
    skipped_symlinks: u64,
}

fn select(input: &FilesInput) -> Result<(PathBuf, Selection), Error> {
    let criteria = Criteria::parse(
        input.older_than.as_deref(),
        input.larger_than.as_deref(),
        input.name.as_deref(),
    )
    .map_err(Error::invalid_input)?;
    if !input.dir.starts_with('/') {
        return Err(Error::invalid_input(format!(
            "`dir` must be an absolute guest path, not `{}`",
            input.dir
        )));
    }
    let dir = fs::normalize(Path::new(&input.dir));
    fs::check(&dir, "read")?;
    let meta = std::fs::symlink_metadata(&dir).map_err(|e| fs::io_error(&dir, "read", e))?;
    if !meta.is_dir() {
        return Err(Error::invalid_input(format!(
            "`{}` is not a directory (symlinks are not followed)",
            dir.display()
        )));
    }
    let mut selection = Selection {
        files: Vec::new(),
        skipped_symlinks: 0,
    };
    let now = SystemTime::now();
    walk(&dir, input.recursive, &criteria, now, &mut selection)?;
    selection.files.sort_by(|a, b| a.path.cmp(&b.path));
    Ok((dir, selection))
}

fn walk(
    dir: &Path,
    recursive: bool,
    criteria: &Criteria,
    now: SystemTime,
    selection: &mut Selection,
) -> Result<(), Error> {
    let entries = std::fs::read_dir(dir).map_err(|e| fs::io_error(dir, "read", e))?;
    for entry in entries {
        let entry = entry.map_err(|e| fs::io_error(dir, "read", e))?;
        let path = entry.path();
        // `symlink_metadata` describes the entry itself, never what a symlink points to.
        let meta = match std::fs::symlink_metadata(&path) {
            Ok(m) => m,
            // Gone since the listing: nothing to select.
            Err(e) if e.kind() == ErrorKind::NotFound => continue,
            Err(e) => return Err(fs::io_error(&path, "read", e)),
        };
        let kind = meta.file_type();
        if kind.is_symlink() {
            selection.skipped_symlinks += 1;
        } else if kind.is_dir() {
            if recursive {
                walk(&path, recursive, criteria, now, selection)?;
            }
        } else if kind.is_file() {
            let age = meta
                .modified()
                .ok()
                .and_then(|m| now.duration_since(m).ok())
                .unwrap_or_default();
            let name = entry.file_name();
            if criteria.selects(&name.to_string_lossy(), meta.len(), age) {
                selection.files.push(FileInfo {
                    path: path.display().to_string(),
                    size_bytes: meta.len(),
                    age_secs: age.as_secs(),
                });
            }
        }
    }
    Ok(())
}

fn files_output(dir: &Path, files: Vec<FileInfo>, skipped: u64, max: usize) -> FilesOutput {
    let count = files.len() as u64;
    let total_bytes = files.iter().map(|f| f.size_bytes).sum();
    let truncated = files.len() > max;
    FilesOutput {
        dir: dir.display().to_string(),
        files: files.into_iter().take(max).collect(),
        truncated,
        count,
        total_bytes,
        skipped_symlinks: skipped,
    }
}

fn find_files(input: FilesInput, _ctx: &CallContext) -> Result<FilesOutput, Error> {
    let (dir, selection) = select(&input)?;
    let out = files_output(
        &dir,
        selection.files,
        selection.skipped_symlinks,
        input.max_listed,
    );
    log::info(
        "found files",
        &[
            ("dir", &out.dir),
            ("count", &out.count.to_string()),
            ("bytes", &out.total_bytes.to_string()),
        ],
    );
    Ok(out)
}

fn delete_files(input: FilesInput, _ctx: &CallContext) -> Result<FilesOutput, Error> {
    // Selected again rather than trusting an earlier plan: files age, grow and disappear.
    let (dir, selection) = select(&input)?;
    let mut deleted = Vec::new();
    let mut failures = Vec::new();
    for file in selection.files {
        let path = Path::new(&file.path);
        // Checked again just before deleting, so a file swapped for a symlink or a directory
        // since the walk is left alone.
        match std::fs::symlink_metadata(path) {
            Ok(m) if m.file_type().is_file() => {}
            Ok(_) => continue,
            Err(e) if e.kind() == ErrorKind::NotFound => continue,
            Err(e) => {
                failures.push(format!("{}: {e}", file.path));
                continue;
            }
        }
        match std::fs::remove_file(path) {
            Ok(()) => deleted.push(file),
            Err(e) if e.kind() == ErrorKind::NotFound => {}
            Err(e) => {
                let error = fs::io_error(path, "write", e);
                match error {
                    // A read-only grant refuses every deletion alike: report the grant at once.
                    Error::Denied(_) if deleted.is_empty() => return Err(error),
                    Error::Denied(d) => failures.push(format!("{}: {}", file.path, d.message())),
                    Error::Failed(m) | Error::InvalidInput(m) | Error::Retryable(m) => {
                        failures.push(m)
                    }
                }
            }
        }
    }
    let out = files_output(&dir, deleted, selection.skipped_symlinks, input.max_listed);
    log::info(
        "deleted files",
        &[
            ("dir", &out.dir),
            ("count", &out.count.to_string()),
            ("freed_bytes", &out.total_bytes.to_string()),
        ],
    );
    if !failures.is_empty() {
        return Err(Error::failed(format!(
            "deleted {} files ({} bytes) in `{}`, but {} could not be deleted: {}",
            out.count,
            out.total_bytes,
            out.dir,
            failures.len(),
            failures.join("; ")
        )));
    }
    Ok(out)
}

// ---------------------------------------------------------------------------------------------
// rotate-log, truncate-log

/// How `rotate-log` empties the live log.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum RotateMode {
    /// Rename `x.log` to `x.log.1` and create an empty `x.log`. Needs no extra space, but a
    /// writer that keeps the file open goes on writing to `x.log.1`, and the new file gets the
    /// engine's default owner and mode.
    Create,
    /// Copy `x.log` to `x.log.1` and truncate `x.log` in place. Keeps the file (and its owner
    /// and mode) for writers that hold it open; needs space for the copy, and lines written
    /// between copy and truncation are lost.
    Copytruncate,
}

/// Input of `rotate-log`.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RotateInput {
    /// Guest path of the log file, inside a directory granted `rw`.
    pub path: String,
    /// How many rotated copies to keep (`x.log.1` … `x.log.N`); 0 keeps none and just
    /// empties the log.
    #[serde(default = "default_keep")]
    pub keep: u32,
    /// `create` (default) or `copytruncate`.
    #[serde(default = "default_mode")]
    pub mode: RotateMode,
}

fn default_keep() -> u32 {
    5
}

fn default_mode() -> RotateMode {
    RotateMode::Create
}

/// Output of `rotate-log`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct RotateOutput {
    /// The log file.
    pub path: String,
    /// Where its content went (`x.log.1`); absent with `keep: 0`.
    pub rotated_to: Option<String>,
    /// Size of the log before rotation.
    pub bytes: u64,
    /// The oldest copy, removed to stay within `keep`, if there was one.
    pub removed: Option<String>,
    /// Bytes freed by removing it (or by emptying the log with `keep: 0`).
    pub freed_bytes: u64,
}

/// Output of `truncate-log`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct TruncateOutput {
    /// The log file.
    pub path: String,
    /// Its size before truncation.
    pub freed_bytes: u64,
}

/// Input of `truncate-log`.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TruncateInput {
    /// Guest path of the log file, inside a directory granted `rw`.
    pub path: String,
}

/// The size of the regular file at `path`, refusing symlinks and anything else.
fn regular_file(path: &Path) -> Result<u64, Error> {
    fs::check(path, "write")?;
    let meta = std::fs::symlink_metadata(path).map_err(|e| fs::io_error(path, "read", e))?;
    if !meta.file_type().is_file() {
        return Err(Error::invalid_input(format!(
            "`{}` is not a regular file (symlinks are not followed)",
            path.display()
        )));
    }
    Ok(meta.len())
}

fn empty_in_place(path: &Path) -> Result<(), Error> {
    std::fs::OpenOptions::new()
        .write(true)
        .open(path)
        .and_then(|f| f.set_len(0))
        .map_err(|e| fs::io_error(path, "write", e))
}

/// The size of `path` if it exists (without following a symlink).
fn existing_size(path: &Path) -> Result<Option<u64>, Error> {
    match std::fs::symlink_metadata(path) {
        Ok(m) if m.is_dir() => Err(Error::failed(format!(
            "`{}` is a directory; cannot rotate over it",
            path.display()
        ))),
        Ok(m) => Ok(Some(m.len())),
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
        Err(e) => Err(fs::io_error(path, "read", e)),
    }
}

fn rotate_log(input: RotateInput, _ctx: &CallContext) -> Result<RotateOutput, Error> {
    let log_path = fs::normalize(Path::new(&input.path));
    let bytes = regular_file(&log_path)?;
    let shown = |p: &Path| p.display().to_string();
    if input.keep == 0 {
        empty_in_place(&log_path)?;
        return Ok(RotateOutput {
            path: shown(&log_path),
            rotated_to: None,
            bytes,
            removed: None,
            freed_bytes: bytes,
        });
    }
    let oldest = pure::rotated(&log_path, input.keep);
    let (removed, freed_bytes) = match existing_size(&oldest)? {
        Some(size) => {
            std::fs::remove_file(&oldest).map_err(|e| fs::io_error(&oldest, "write", e))?;
            (Some(shown(&oldest)), size)
        }
        None => (None, 0),
    };
    for (from, to) in pure::shift_renames(&log_path, input.keep) {
        if existing_size(&from)?.is_some() {
            std::fs::rename(&from, &to).map_err(|e| fs::io_error(&from, "write", e))?;
        }
    }
    let first = pure::rotated(&log_path, 1);
    match input.mode {
        RotateMode::Create => {
            std::fs::rename(&log_path, &first).map_err(|e| fs::io_error(&log_path, "write", e))?;
            // `create_new`: if a writer recreated the file meanwhile, leave its file alone.
            match std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&log_path)
            {
                Ok(_) => {}
                Err(e) if e.kind() == ErrorKind::AlreadyExists => {}
                Err(e) => return Err(fs::io_error(&log_path, "write", e)),
            }
        }
        RotateMode::Copytruncate => {
            std::fs::copy(&log_path, &first).map_err(|e| fs::io_error(&first, "write", e))?;
            empty_in_place(&log_path)?;
        }
    }
    log::info(
        "rotated log",
        &[("path", &shown(&log_path)), ("bytes", &bytes.to_string())],
    );
    Ok(RotateOutput {
        path: shown(&log_path),
        rotated_to: Some(shown(&first)),
        bytes,
        removed,
        freed_bytes,
    })
}

fn truncate_log(input: TruncateInput, _ctx: &CallContext) -> Result<TruncateOutput, Error> {
    let path = fs::normalize(Path::new(&input.path));
    let freed_bytes = regular_file(&path)?;
    empty_in_place(&path)?;
    log::info(
        "truncated log",
        &[
            ("path", &path.display().to_string()),
            ("freed_bytes", &freed_bytes.to_string()),
        ],
    );
    Ok(TruncateOutput {
        path: path.display().to_string(),
        freed_bytes,
    })
}

// ---------------------------------------------------------------------------------------------
// stop-process

/// Input of `stop-process`.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct StopInput {
    /// Process name as the kernel reports it (`comm`; names longer than 15 bytes are compared
    /// on their first 15).
    pub name: String,
    /// Signal to send: TERM (default), INT, HUP, QUIT, KILL, USR1 or USR2.
    #[serde(default = "default_signal")]
    pub signal: String,
    /// Only processes owned by this user id.
    pub uid: Option<u32>,
    /// Refuse, signalling nothing, when more processes than this match.
    #[serde(default = "default_max_processes")]
    pub max_processes: usize,
    /// Absolute path of `kill`, run as `kill -s SIGNAL PID…`.
    #[serde(default = "default_kill")]
    pub kill_program: String,
    /// Wait this long for the processes to exit, in milliseconds; 0 does not wait.
    #[serde(default = "default_wait_ms")]
    pub wait_ms: u64,
}

fn default_signal() -> String {
    "TERM".into()
}

fn default_max_processes() -> usize {
    10
}

fn default_kill() -> String {
    "/usr/bin/kill".into()
}

fn default_wait_ms() -> u64 {
    5_000
}

/// Output of `stop-process`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct StopOutput {
    /// The process name.
    pub name: String,
    /// The signal sent.
    pub signal: String,
    /// Pids that were signalled (empty when none was running).
    pub signalled: Vec<u32>,
    /// Signalled pids that have exited.
    pub exited: Vec<u32>,
    /// Signalled pids still running (only when `wait_ms` is 0).
    pub still_running: Vec<u32>,
}

fn matching_pids(name: &str, uid: Option<u32>) -> Result<Vec<u32>, Error> {
    Ok(system::processes()?
        .into_iter()
        .filter(|p| pure::process_name_matches(name, &p.name))
        .filter(|p| uid.is_none_or(|u| p.uid == u))
        // Never pid 1: signalling init is never the fix for a runaway process.
        .filter(|p| p.pid > 1)
        .map(|p| p.pid)
        .collect())
}

fn stop_process(input: StopInput, _ctx: &CallContext) -> Result<StopOutput, Error> {
    let signal = pure::parse_signal(&input.signal).map_err(Error::invalid_input)?;
    if input.name.is_empty() {
        return Err(Error::invalid_input("`name` must not be empty"));
    }
    let pids = matching_pids(&input.name, input.uid)?;
    let mut output = StopOutput {
        name: input.name.clone(),
        signal: signal.to_string(),
        signalled: Vec::new(),
        exited: Vec::new(),
        still_running: Vec::new(),
    };
    if pids.is_empty() {
        log::info("no such process running", &[("name", &input.name)]);
        return Ok(output);
    }
    if pids.len() > input.max_processes {
        return Err(Error::failed(format!(
            "{} processes named `{}` are running, more than `max_processes` ({}); nothing was signalled",
            pids.len(),
            input.name,
            input.max_processes
        )));
    }
    let cmd = Command::new(&input.kill_program)
        .args(["-s", signal])
        .args(pids.iter().map(u32::to_string))
        .timeout(Duration::from_secs(10));
    log::info("signalling", &[("command", &cmd.display())]);
    let out = cmd.run()?;
    let alive = |pids: &[u32]| -> Result<Vec<u32>, Error> {
        let now = matching_pids(&input.name, input.uid)?;
        Ok(pids.iter().copied().filter(|p| now.contains(p)).collect())
    };
    if !out.success() {
        // `kill` also fails when a process exited on its own just before the signal; only a
        // failure that left every process running is the command's fault.
        let running = alive(&pids)?;
        if running.len() == pids.len() {
            return Err(command_error(&cmd, &out));
        }
    }
    output.signalled = pids.clone();
    let deadline = Instant::now() + Duration::from_millis(input.wait_ms);
    let mut pause = Duration::from_millis(20);
    let running = loop {
        let running = alive(&pids)?;
        let now = Instant::now();
        if running.is_empty() || now >= deadline {
            break running;
        }
        std::thread::sleep(pause.min(deadline - now));
        pause = (pause * 2).min(Duration::from_millis(500));
    };
    output.exited = pids
        .iter()
        .copied()
        .filter(|p| !running.contains(p))
        .collect();
    if input.wait_ms > 0 && !running.is_empty() {
        let list = |p: &[u32]| p.iter().map(u32::to_string).collect::<Vec<_>>().join(", ");
        return Err(Error::failed(format!(
            "sent {signal} to `{}` (pids {}); still running after {} ms: {}",
            input.name,
            list(&pids),
            input.wait_ms,
            list(&running)
        )));
    }
    output.still_running = running;
    if let ExitStatus::Exited(code) = out.status
        && code != 0
    {
        log::warn(
            "kill reported an error",
            &[("stderr", out.stderr_text().trim())],
        );
    }
    Ok(output)
}

export_plugin!(Remediate);
