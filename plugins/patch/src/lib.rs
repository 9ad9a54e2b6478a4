//! `patch`: pending package updates (security ones marked), applying them, and whether the host
//! needs a reboot, through apt or dnf.
//!
//! The package manager runs only as a granted command (`exec`: no shell, an empty
//! environment). `list-updates` is a `read` action, so it is what a dry-run shows; `apply`
//! lists with the same code, applies that selection, and lists again to report what is still
//! pending. Parsing lives in [`parse`] (pure, unit-tested natively); host calls stay here.

pub mod parse;

use parse::Update;
use runloom_sdk::exec::{Command, ExitStatus, Output};
use runloom_sdk::{Actions, CallContext, Error, Plugin, export_plugin, fs, log};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use std::io::ErrorKind;
use std::path::Path;
use std::time::{Duration, Instant};

/// A package manager the plugin drives.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Manager {
    /// Debian, Ubuntu: `apt-get`.
    Apt,
    /// Fedora, RHEL, Rocky, Alma: `dnf`.
    Dnf,
}

impl Manager {
    fn default_program(self) -> &'static str {
        match self {
            Manager::Apt => "/usr/bin/apt-get",
            Manager::Dnf => "/usr/bin/dnf",
        }
    }

    fn name(self) -> &'static str {
        match self {
            Manager::Apt => "apt",
            Manager::Dnf => "dnf",
        }
    }
}

/// Input of `list-updates`.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ListInput {
    /// `apt` or `dnf`. Without it, `apt-get` is tried first, then `dnf`: the first one that is
    /// granted and installed is used.
    pub manager: Option<Manager>,
    /// Absolute path of the package manager program; needs `manager`. Default
    /// `/usr/bin/apt-get` for apt, `/usr/bin/dnf` for dnf.
    pub program: Option<String>,
    /// Kill the package manager after this many milliseconds (the call's deadline applies too).
    #[serde(default = "default_list_timeout_ms")]
    pub timeout_ms: u64,
}

fn default_list_timeout_ms() -> u64 {
    120_000
}

/// Output of `list-updates`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct UpdateList {
    /// The package manager that was used.
    pub manager: Manager,
    /// Pending updates, in the package manager's order.
    pub updates: Vec<Update>,
    /// Number of pending updates.
    pub total: usize,
    /// Number of pending security updates.
    pub security: usize,
    /// apt only: packages with a newer version that `upgrade` holds back because they need
    /// new or removed dependencies. `apply` does not install them.
    pub kept_back: Vec<String>,
}

/// Input of `apply`.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ApplyInput {
    /// `apt` or `dnf`; detected as in `list-updates` when absent.
    pub manager: Option<Manager>,
    /// Absolute path of the package manager program; needs `manager`.
    pub program: Option<String>,
    /// Apply only security updates (those `list-updates` marks `security`).
    #[serde(default)]
    pub security_only: bool,
    /// Kill the upgrade after this many milliseconds. The call's deadline applies too, so give
    /// the plugin a `timeout` in `runloom.toml` long enough for a patch window.
    #[serde(default = "default_apply_timeout_ms")]
    pub timeout_ms: u64,
}

fn default_apply_timeout_ms() -> u64 {
    3_600_000
}

/// Output of `apply`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct ApplyOutput {
    /// The package manager that was used.
    pub manager: Manager,
    /// Whether only security updates were selected.
    pub security_only: bool,
    /// The command that applied the updates; absent when nothing was selected.
    pub command: Option<String>,
    /// Selected updates that are no longer pending afterwards.
    pub upgraded: Vec<Update>,
    /// Selected updates that are still pending afterwards.
    pub still_pending: Vec<Update>,
    /// Updates of any kind still pending afterwards.
    pub remaining: usize,
    /// Security updates still pending afterwards.
    pub remaining_security: usize,
    /// Time spent in the upgrade command, in milliseconds.
    pub duration_ms: u64,
}

/// Input of `reboot-required`.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RebootInput {
    /// `apt` reads the flag file, `dnf` runs `needs-restarting -r`. Without it, the flag file
    /// is read when its directory is granted, else `needs-restarting` runs.
    pub manager: Option<Manager>,
    /// Guest path of Debian's flag file; grant its directory read-only, e.g.
    /// `dirs = ["/run:/var/run:ro"]`.
    #[serde(default = "default_flag_file")]
    pub flag_file: String,
    /// Absolute path of `needs-restarting` (dnf-utils).
    #[serde(default = "default_needs_restarting")]
    pub needs_restarting: String,
    /// Kill `needs-restarting` after this many milliseconds.
    #[serde(default = "default_list_timeout_ms")]
    pub timeout_ms: u64,
}

fn default_flag_file() -> String {
    "/var/run/reboot-required".into()
}

fn default_needs_restarting() -> String {
    "/usr/bin/needs-restarting".into()
}

/// Output of `reboot-required`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct RebootOutput {
    /// Whose convention was read: `apt` (the flag file) or `dnf` (`needs-restarting`).
    pub manager: Manager,
    /// Whether the host needs a reboot to use its updates.
    pub reboot_required: bool,
    /// What asks for the reboot: packages from `reboot-required.pkgs`, or what
    /// `needs-restarting` lists.
    pub reasons: Vec<String>,
}

struct Patch;

impl Plugin for Patch {
    const NAME: &'static str = "patch";
    const DESCRIPTION: &'static str =
        "Package updates through apt or dnf: pending (security marked), apply, reboot-required.";

    fn actions() -> Actions {
        Actions::new()
            .read(
                "list-updates",
                "List pending package updates, marking security ones.",
                list_updates,
            )
            .mutate(
                "apply",
                "Apply pending updates (all, or security only) and report what was upgraded.",
                apply,
            )
            .read(
                "reboot-required",
                "Tell whether the host needs a reboot to use installed updates.",
                reboot_required,
            )
    }
}

/// The package managers to try, in order, with their programs.
pub fn candidates(
    manager: Option<Manager>,
    program: Option<&str>,
) -> Result<Vec<(Manager, String)>, Error> {
    match (manager, program) {
        (Some(m), Some(p)) if p.starts_with('/') => Ok(vec![(m, p.to_string())]),
        (Some(_), Some(p)) => Err(Error::invalid_input(format!(
            "`program` must be an absolute path, not `{p}`"
        ))),
        (None, Some(_)) => Err(Error::invalid_input(
            "`program` needs `manager` (`apt` or `dnf`) to say how to drive it",
        )),
        (Some(m), None) => Ok(vec![(m, m.default_program().to_string())]),
        (None, None) => Ok([Manager::Apt, Manager::Dnf]
            .into_iter()
            .map(|m| (m, m.default_program().to_string()))
            .collect()),
    }
}

/// Options that keep apt-get from asking about changed configuration files: keep the
/// operator's version when it was edited, take the package's otherwise.
const APT_NONINTERACTIVE: [&str; 5] = [
    "-y",
    "-o",
    "Dpkg::Options::=--force-confdef",
    "-o",
    "Dpkg::Options::=--force-confold",
];

/// Most output a listing may produce; past this the list cannot be trusted.
const LIST_OUTPUT_CAP: u32 = 8 * 1024 * 1024;

/// The arguments that list pending updates (the first command of a listing).
fn list_args(manager: Manager) -> &'static [&'static str] {
    match manager {
        Manager::Apt => &["-s", "upgrade"],
        Manager::Dnf => &["-q", "check-update"],
    }
}

/// The arguments that apply `selected`; `None` when nothing needs to run.
pub fn apply_args(
    manager: Manager,
    security_only: bool,
    selected: &[Update],
) -> Option<Vec<String>> {
    if selected.is_empty() {
        return None;
    }
    let owned = |a: &[&str]| a.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    Some(match (manager, security_only) {
        (Manager::Apt, false) => {
            let mut args = owned(&APT_NONINTERACTIVE);
            args.push("upgrade".into());
            args
        }
        // apt has no "security only" switch; installing exactly the packages the simulation
        // marked keeps the selection identical to what `list-updates` (the dry-run) showed,
        // and `--only-upgrade` keeps it from installing anything new.
        (Manager::Apt, true) => {
            let mut args = owned(&APT_NONINTERACTIVE);
            args.extend(["install".to_string(), "--only-upgrade".to_string()]);
            args.extend(selected.iter().map(|u| u.name.clone()));
            args
        }
        (Manager::Dnf, false) => owned(&["-y", "upgrade"]),
        (Manager::Dnf, true) => owned(&["-y", "upgrade", "--security"]),
    })
}

/// The last few non-empty lines of a program's error output (or its output when it printed
/// no errors), for failure messages.
pub fn output_tail(stderr: &str, stdout: &str) -> String {
    let text = if stderr.trim().is_empty() {
        stdout
    } else {
        stderr
    };
    let lines: Vec<&str> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    lines[lines.len().saturating_sub(3)..].join(" / ")
}

fn command_failed(cmd: &Command, out: &Output) -> Error {
    let tail = output_tail(&out.stderr_text(), &out.stdout_text());
    let message = format!("`{}` failed ({}): {tail}", cmd.display(), out.status_text());
    // Another apt or dpkg run holds the lock: the same step can succeed a little later.
    if tail.contains("Could not get lock") || tail.contains("Unable to acquire the dpkg") {
        Error::retryable(message)
    } else {
        Error::failed(message)
    }
}

fn timed_out(cmd: &Command, timeout_ms: u64) -> Error {
    Error::retryable(format!(
        "`{}` did not finish within {timeout_ms} ms",
        cmd.display()
    ))
}

/// Pending updates as one package manager sees them.
struct Listing {
    manager: Manager,
    program: String,
    updates: Vec<Update>,
    kept_back: Vec<String>,
}

fn list_command(manager: Manager, program: &str, timeout_ms: u64) -> Command {
    Command::new(program)
        .args(list_args(manager).iter().copied())
        .timeout(Duration::from_millis(timeout_ms.max(1)))
        .max_output_bytes(LIST_OUTPUT_CAP)
}

/// List with the first usable package manager among `candidates`. A manager whose program is
/// not granted or not installed is skipped; one that runs and fails is an error.
fn list(candidates: &[(Manager, String)], timeout_ms: u64) -> Result<Listing, Error> {
    let mut errors: Vec<Error> = Vec::new();
    for (manager, program) in candidates {
        let cmd = list_command(*manager, program, timeout_ms);
        match cmd.run() {
            Ok(out) => return finish_listing(*manager, program, &cmd, out, timeout_ms),
            Err(e) => {
                log::debug(
                    "package manager not usable",
                    &[("manager", manager.name()), ("program", program)],
                );
                errors.push(e);
            }
        }
    }
    if errors.len() > 1 {
        log::warn(
            "neither apt-get nor dnf could run; grant one, or name `manager` and `program`",
            &[],
        );
    }
    // A missing grant is what an operator can fix, so it wins over "not installed".
    let denied = errors.iter().position(|e| matches!(e, Error::Denied(_)));
    match denied {
        Some(i) => Err(errors.swap_remove(i)),
        None => Err(errors
            .into_iter()
            .next()
            .unwrap_or_else(|| Error::invalid_input("no package manager to try"))),
    }
}

fn finish_listing(
    manager: Manager,
    program: &str,
    cmd: &Command,
    out: Output,
    timeout_ms: u64,
) -> Result<Listing, Error> {
    if matches!(out.status, ExitStatus::TimedOut) {
        return Err(timed_out(cmd, timeout_ms));
    }
    if out.stdout_truncated {
        return Err(Error::failed(format!(
            "`{}` printed more than {LIST_OUTPUT_CAP} bytes; the list would be incomplete",
            cmd.display()
        )));
    }
    match manager {
        Manager::Apt => {
            if !out.success() {
                return Err(command_failed(cmd, &out));
            }
            let plan = parse::parse_apt_simulation(&out.stdout_text());
            Ok(Listing {
                manager,
                program: program.to_string(),
                updates: plan.updates,
                kept_back: plan.kept_back,
            })
        }
        Manager::Dnf => {
            // `check-update` exits 100 when updates are pending and 0 when there are none.
            let mut updates = match out.status {
                ExitStatus::Exited(0) => Vec::new(),
                ExitStatus::Exited(100) => parse::parse_dnf_check_update(&out.stdout_text()),
                _ => return Err(command_failed(cmd, &out)),
            };
            if !updates.is_empty() {
                let cmd = Command::new(program)
                    .args(["-q", "updateinfo", "list", "--security"])
                    .timeout(Duration::from_millis(timeout_ms.max(1)))
                    .max_output_bytes(LIST_OUTPUT_CAP);
                let out = cmd.run()?;
                if matches!(out.status, ExitStatus::TimedOut) {
                    return Err(timed_out(&cmd, timeout_ms));
                }
                if !out.success() {
                    return Err(command_failed(&cmd, &out));
                }
                let advisories = parse::parse_dnf_security_advisories(&out.stdout_text());
                parse::mark_security(&mut updates, &advisories);
            }
            Ok(Listing {
                manager,
                program: program.to_string(),
                updates,
                kept_back: Vec::new(),
            })
        }
    }
}

fn list_updates(input: ListInput, _ctx: &CallContext) -> Result<UpdateList, Error> {
    let candidates = candidates(input.manager, input.program.as_deref())?;
    let listing = list(&candidates, input.timeout_ms)?;
    let security = listing.updates.iter().filter(|u| u.security).count();
    log::info(
        "listed pending updates",
        &[
            ("manager", listing.manager.name()),
            ("total", &listing.updates.len().to_string()),
            ("security", &security.to_string()),
        ],
    );
    Ok(UpdateList {
        manager: listing.manager,
        total: listing.updates.len(),
        security,
        updates: listing.updates,
        kept_back: listing.kept_back,
    })
}

/// Split `selected` into those that `after` no longer lists and those it still does.
pub fn compare(selected: Vec<Update>, after: &[Update]) -> (Vec<Update>, Vec<Update>) {
    selected
        .into_iter()
        .partition(|u| !after.iter().any(|a| a.name == u.name && a.arch == u.arch))
}

fn apply(input: ApplyInput, _ctx: &CallContext) -> Result<ApplyOutput, Error> {
    let candidates = candidates(input.manager, input.program.as_deref())?;
    let before = list(&candidates, default_list_timeout_ms())?;
    let (manager, program) = (before.manager, before.program);
    let selected: Vec<Update> = before
        .updates
        .into_iter()
        .filter(|u| u.security || !input.security_only)
        .collect();
    let Some(args) = apply_args(manager, input.security_only, &selected) else {
        log::info("nothing to apply", &[("manager", manager.name())]);
        return Ok(ApplyOutput {
            manager,
            security_only: input.security_only,
            command: None,
            upgraded: Vec::new(),
            still_pending: Vec::new(),
            remaining: 0,
            remaining_security: 0,
            duration_ms: 0,
        });
    };
    let cmd = Command::new(&program)
        .args(args)
        .timeout(Duration::from_millis(input.timeout_ms.max(1)));
    log::info(
        "applying updates",
        &[
            ("command", &cmd.display()),
            ("selected", &selected.len().to_string()),
        ],
    );
    let started = Instant::now();
    let out = cmd.run()?;
    let duration_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
    if matches!(out.status, ExitStatus::TimedOut) {
        // Killed midway: not retryable blindly, the package database may be half-configured.
        return Err(Error::failed(format!(
            "`{}` was killed after {} ms; check the package database (`dpkg --configure -a` or `dnf history`) before retrying",
            cmd.display(),
            input.timeout_ms
        )));
    }
    if !out.success() {
        return Err(command_failed(&cmd, &out));
    }
    let after = list(&[(manager, program)], default_list_timeout_ms())?;
    let (upgraded, still_pending) = compare(selected, &after.updates);
    if !still_pending.is_empty() {
        log::warn(
            "some selected updates are still pending",
            &[(
                "packages",
                &still_pending
                    .iter()
                    .map(|u| u.name.as_str())
                    .collect::<Vec<_>>()
                    .join(" "),
            )],
        );
    }
    Ok(ApplyOutput {
        manager,
        security_only: input.security_only,
        command: Some(cmd.display()),
        upgraded,
        still_pending,
        remaining: after.updates.len(),
        remaining_security: after.updates.iter().filter(|u| u.security).count(),
        duration_ms,
    })
}

fn reboot_required(input: RebootInput, _ctx: &CallContext) -> Result<RebootOutput, Error> {
    let flag = Path::new(&input.flag_file);
    let manager = input.manager.unwrap_or_else(|| {
        // Reading a granted file has no side effects and records no denial, so it goes first.
        if fs::is_within(flag, &fs::granted_dirs()) {
            Manager::Apt
        } else {
            Manager::Dnf
        }
    });
    match manager {
        Manager::Apt => read_flag_file(flag),
        Manager::Dnf => run_needs_restarting(&input.needs_restarting, input.timeout_ms),
    }
}

fn read_flag_file(flag: &Path) -> Result<RebootOutput, Error> {
    fs::check(flag, "read")?;
    let reboot_required = match std::fs::symlink_metadata(flag) {
        Ok(_) => true,
        Err(e) if e.kind() == ErrorKind::NotFound => false,
        Err(e) => return Err(fs::io_error(flag, "read", e)),
    };
    let pkgs = flag.with_file_name(format!(
        "{}.pkgs",
        flag.file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default()
    ));
    let reasons = match std::fs::read_to_string(&pkgs) {
        Ok(text) if reboot_required => parse::parse_reboot_required_pkgs(&text),
        Ok(_) => Vec::new(),
        Err(e) if e.kind() == ErrorKind::NotFound => Vec::new(),
        Err(e) => return Err(fs::io_error(&pkgs, "read", e)),
    };
    Ok(RebootOutput {
        manager: Manager::Apt,
        reboot_required,
        reasons,
    })
}

fn run_needs_restarting(program: &str, timeout_ms: u64) -> Result<RebootOutput, Error> {
    let cmd = Command::new(program)
        .arg("-r")
        .timeout(Duration::from_millis(timeout_ms.max(1)));
    let out = cmd.run()?;
    // `needs-restarting -r` exits 1 when a reboot is needed and 0 when not.
    let reboot_required = match out.status {
        ExitStatus::Exited(0) => false,
        ExitStatus::Exited(1) => true,
        ExitStatus::TimedOut => return Err(timed_out(&cmd, timeout_ms)),
        _ => return Err(command_failed(&cmd, &out)),
    };
    Ok(RebootOutput {
        manager: Manager::Dnf,
        reboot_required,
        reasons: if reboot_required {
            parse::parse_needs_restarting(&out.stdout_text())
        } else {
            Vec::new()
        },
    })
}

export_plugin!(Patch);

#[cfg(test)]
mod tests {
    use super::*;

    fn update(name: &str, security: bool) -> Update {
        Update {
            name: name.into(),
            arch: "amd64".into(),
            current_version: Some("1".into()),
            new_version: "2".into(),
            origins: Vec::new(),
            security,
            advisories: Vec::new(),
        }
    }

    #[test]
    fn without_a_manager_apt_is_tried_before_dnf() {
        let c = candidates(None, None).unwrap();
        assert_eq!(
            c,
            [
                (Manager::Apt, "/usr/bin/apt-get".to_string()),
                (Manager::Dnf, "/usr/bin/dnf".to_string())
            ]
        );
        let c = candidates(Some(Manager::Dnf), Some("/opt/bin/dnf")).unwrap();
        assert_eq!(c, [(Manager::Dnf, "/opt/bin/dnf".to_string())]);
    }

    #[test]
    fn a_program_needs_a_manager_and_an_absolute_path() {
        assert!(matches!(
            candidates(None, Some("/usr/bin/apt-get")),
            Err(Error::InvalidInput(_))
        ));
        assert!(matches!(
            candidates(Some(Manager::Apt), Some("apt-get")),
            Err(Error::InvalidInput(_))
        ));
    }

    #[test]
    fn apt_security_only_installs_exactly_the_marked_packages() {
        let selected = [update("libssl3", true), update("openssl", true)];
        let args = apply_args(Manager::Apt, true, &selected).unwrap();
        assert_eq!(
            args[APT_NONINTERACTIVE.len()..],
            ["install", "--only-upgrade", "libssl3", "openssl"]
        );
        assert_eq!(args[0], "-y");
        let args = apply_args(Manager::Apt, false, &selected).unwrap();
        assert_eq!(args.last().map(String::as_str), Some("upgrade"));
    }

    #[test]
    fn dnf_security_only_uses_its_security_filter() {
        let selected = [update("kernel", true)];
        assert_eq!(
            apply_args(Manager::Dnf, true, &selected).unwrap(),
            ["-y", "upgrade", "--security"]
        );
        assert_eq!(
            apply_args(Manager::Dnf, false, &selected).unwrap(),
            ["-y", "upgrade"]
        );
    }

    #[test]
    fn nothing_selected_runs_nothing() {
        assert_eq!(apply_args(Manager::Apt, false, &[]), None);
        assert_eq!(apply_args(Manager::Dnf, true, &[]), None);
    }

    #[test]
    fn compare_splits_upgraded_from_still_pending() {
        let selected = vec![update("a", false), update("b", true)];
        let (upgraded, pending) = compare(selected, &[update("b", true)]);
        assert_eq!(upgraded, [update("a", false)]);
        assert_eq!(pending, [update("b", true)]);
    }

    #[test]
    fn failure_messages_end_with_the_last_error_lines() {
        assert_eq!(
            output_tail("E: one\n\nE: two\nE: three\nE: four\n", "ignored"),
            "E: two / E: three / E: four"
        );
        assert_eq!(output_tail("  \n", "only stdout\n"), "only stdout");
    }
}
