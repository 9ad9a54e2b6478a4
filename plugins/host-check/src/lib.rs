//! `host-check`: memory, load and processes of the host the engine runs on.
//!
//! Each action reads one host fact through the `system` capability and needs the matching
//! grant (`system = ["memory"]`, `["load"]`, `["processes"]`); without it the call is an
//! error (`denied`), not a check result.

use runloom_sdk::check::{CheckResult, Status, Thresholds};
use runloom_sdk::system::{self, Load, MemoryInfo, Process};
use runloom_sdk::{Actions, CallContext, Error, Plugin, export_plugin};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Input of `memory`.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct MemoryInput {
    /// Percent of memory used at or above which the check is `warning` (`null` to disable).
    #[serde(default = "default_memory_warning")]
    pub warning_percent: Option<f64>,
    /// Percent of memory used at or above which the check is `critical` (`null` to disable).
    #[serde(default = "default_memory_critical")]
    pub critical_percent: Option<f64>,
    /// Percent of swap used at or above which the check is `warning`; swap is not judged
    /// unless set.
    pub swap_warning_percent: Option<f64>,
    /// Percent of swap used at or above which the check is `critical`.
    pub swap_critical_percent: Option<f64>,
}

fn default_memory_warning() -> Option<f64> {
    Some(90.0)
}

fn default_memory_critical() -> Option<f64> {
    Some(95.0)
}

/// Facts `memory` reports besides its status.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct MemoryFacts {
    /// Physical memory in bytes.
    pub total_bytes: u64,
    /// Memory available for new work without swapping (`MemAvailable`).
    pub available_bytes: u64,
    /// Memory in use: total minus available.
    pub used_bytes: u64,
    /// Percent of memory in use.
    pub used_percent: f64,
    /// Swap space in bytes.
    pub swap_total_bytes: u64,
    /// Swap in use.
    pub swap_used_bytes: u64,
    /// Percent of swap in use; absent when the host has no swap.
    pub swap_used_percent: Option<f64>,
}

/// The load average `load` judges.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum Period {
    /// The one-minute average: quick to react, quick to alarm.
    #[serde(rename = "1m")]
    OneMinute,
    /// The five-minute average.
    #[default]
    #[serde(rename = "5m")]
    FiveMinutes,
    /// The fifteen-minute average: sustained load only.
    #[serde(rename = "15m")]
    FifteenMinutes,
}

impl Period {
    fn words(self) -> &'static str {
        match self {
            Period::OneMinute => "1 minute",
            Period::FiveMinutes => "5 minutes",
            Period::FifteenMinutes => "15 minutes",
        }
    }
}

/// Input of `load`.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct LoadInput {
    /// Which load average to judge: `1m`, `5m` or `15m`.
    #[serde(default)]
    pub period: Period,
    /// Load per CPU at or above which the check is `warning` (`null` to disable). 1.0 means
    /// as many runnable tasks as CPUs.
    #[serde(default = "default_load_warning")]
    pub warning_per_cpu: Option<f64>,
    /// Load per CPU at or above which the check is `critical` (`null` to disable).
    #[serde(default = "default_load_critical")]
    pub critical_per_cpu: Option<f64>,
}

fn default_load_warning() -> Option<f64> {
    Some(1.0)
}

fn default_load_critical() -> Option<f64> {
    Some(2.0)
}

/// Facts `load` reports besides its status.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct LoadFacts {
    /// The period judged.
    pub period: Period,
    /// Load average over one minute.
    pub load_1m: f64,
    /// Load average over five minutes.
    pub load_5m: f64,
    /// Load average over fifteen minutes.
    pub load_15m: f64,
    /// Online CPUs.
    pub cpus: u32,
}

/// Input of `process`.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ProcessInput {
    /// Executable name as the kernel reports it (`comm`, e.g. `nginx`), not the command line.
    /// The kernel keeps only the first 15 bytes, so longer names are compared by those.
    pub name: String,
    /// Fewest matching processes for `ok`; fewer is `critical`.
    #[serde(default = "default_min")]
    pub min: u32,
    /// Most matching processes for `ok`; more is `critical`. No limit unless set.
    pub max: Option<u32>,
}

fn default_min() -> u32 {
    1
}

/// How many pids `process` lists in its facts; the count covers them all.
pub const MAX_PIDS: usize = 100;

/// Facts `process` reports besides its status.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct ProcessFacts {
    /// The name compared, as the kernel stores it (at most 15 bytes).
    pub name: String,
    /// Matching processes.
    pub count: u32,
    /// Their pids, ascending (at most 100).
    pub pids: Vec<u32>,
    /// Their resident memory together, in bytes.
    pub rss_bytes: u64,
    /// The fewest expected.
    pub min: u32,
    /// The most expected, if limited.
    pub max: Option<u32>,
}

struct HostCheck;

impl Plugin for HostCheck {
    const NAME: &'static str = "host-check";
    const DESCRIPTION: &'static str =
        "Host checks: percent of memory used, load per CPU, processes running by name.";

    fn actions() -> Actions {
        Actions::new()
            .read(
                "memory",
                "Judge the percent of memory (and optionally swap) in use.",
                memory,
            )
            .read(
                "load",
                "Judge the load average per CPU over 1, 5 or 15 minutes.",
                load,
            )
            .read(
                "process",
                "Count the processes running under an executable name and judge the count \
                 against `min` and `max`.",
                process,
            )
    }
}

fn memory(input: MemoryInput, _ctx: &CallContext) -> Result<CheckResult<MemoryFacts>, Error> {
    ordered("", input.warning_percent, input.critical_percent)?;
    ordered(
        "swap_",
        input.swap_warning_percent,
        input.swap_critical_percent,
    )?;
    Ok(judge_memory(&input, &system::memory()?))
}

fn load(input: LoadInput, _ctx: &CallContext) -> Result<CheckResult<LoadFacts>, Error> {
    if let (Some(w), Some(c)) = (input.warning_per_cpu, input.critical_per_cpu)
        && w > c
    {
        return Err(Error::invalid_input(format!(
            "`warning_per_cpu` ({w}) is above `critical_per_cpu` ({c})"
        )));
    }
    Ok(judge_load(&input, &system::load_average()?))
}

fn process(input: ProcessInput, _ctx: &CallContext) -> Result<CheckResult<ProcessFacts>, Error> {
    validate_process(&input)?;
    Ok(judge_process(&input, &system::processes()?))
}

/// Reject percent thresholds that are in the wrong order (higher is worse).
fn ordered(prefix: &str, warning: Option<f64>, critical: Option<f64>) -> Result<(), Error> {
    match (warning, critical) {
        (Some(w), Some(c)) if w > c => Err(Error::invalid_input(format!(
            "`{prefix}warning_percent` ({w}) is above `{prefix}critical_percent` ({c})"
        ))),
        _ => Ok(()),
    }
}

/// Judge memory figures. Pure, so it is unit-tested natively.
pub fn judge_memory(input: &MemoryInput, info: &MemoryInfo) -> CheckResult<MemoryFacts> {
    let thresholds = Thresholds {
        warning: input.warning_percent,
        critical: input.critical_percent,
    };
    let used = info.total_bytes.saturating_sub(info.available_bytes);
    let used_percent = round(percent(used, info.total_bytes), 1);
    let swap_used = info.swap_total_bytes.saturating_sub(info.swap_free_bytes);
    let swap_used_percent =
        (info.swap_total_bytes > 0).then(|| round(percent(swap_used, info.swap_total_bytes), 1));

    let memory_status = thresholds.judge_high(used_percent);
    let mut detail = format!(
        "memory {used_percent}% used ({} available of {})",
        human_bytes(info.available_bytes),
        human_bytes(info.total_bytes)
    );
    if memory_status != Status::Ok {
        detail.push_str(&tripped(memory_status, &thresholds, "%"));
    }
    let swap_thresholds = Thresholds {
        warning: input.swap_warning_percent,
        critical: input.swap_critical_percent,
    };
    let swap_status = match swap_used_percent {
        Some(p) => {
            let status = swap_thresholds.judge_high(p);
            detail.push_str(&format!(
                "; swap {p}% used ({} of {})",
                human_bytes(swap_used),
                human_bytes(info.swap_total_bytes)
            ));
            if status != Status::Ok {
                detail.push_str(&tripped(status, &swap_thresholds, "%"));
            }
            status
        }
        None => {
            detail.push_str("; no swap");
            Status::Ok
        }
    };
    CheckResult {
        status: memory_status.max(swap_status),
        value: Some(used_percent),
        unit: "percent".into(),
        thresholds,
        detail,
        facts: MemoryFacts {
            total_bytes: info.total_bytes,
            available_bytes: info.available_bytes,
            used_bytes: used,
            used_percent,
            swap_total_bytes: info.swap_total_bytes,
            swap_used_bytes: swap_used,
            swap_used_percent,
        },
    }
}

/// Judge load averages. Pure, so it is unit-tested natively.
pub fn judge_load(input: &LoadInput, load: &Load) -> CheckResult<LoadFacts> {
    let thresholds = Thresholds {
        warning: input.warning_per_cpu,
        critical: input.critical_per_cpu,
    };
    let average = match input.period {
        Period::OneMinute => load.one,
        Period::FiveMinutes => load.five,
        Period::FifteenMinutes => load.fifteen,
    };
    // The host reports at least one CPU; guard anyway rather than divide by zero.
    let cpus = load.cpus.max(1);
    let per_cpu = round(average / f64::from(cpus), 2);
    let status = thresholds.judge_high(per_cpu);
    let mut detail = format!(
        "load over {} is {average:.2} on {cpus} CPU{} ({per_cpu} per CPU)",
        input.period.words(),
        if cpus == 1 { "" } else { "s" }
    );
    if status != Status::Ok {
        detail.push_str(&tripped(status, &thresholds, " per CPU"));
    }
    CheckResult {
        status,
        value: Some(per_cpu),
        unit: "load per CPU".into(),
        thresholds,
        detail,
        facts: LoadFacts {
            period: input.period,
            load_1m: load.one,
            load_5m: load.five,
            load_15m: load.fifteen,
            cpus: load.cpus,
        },
    }
}

/// Reject a `process` input that cannot be judged.
pub fn validate_process(input: &ProcessInput) -> Result<(), Error> {
    if input.name.is_empty() {
        return Err(Error::invalid_input("`name` is empty"));
    }
    if let Some(max) = input.max
        && max < input.min
    {
        return Err(Error::invalid_input(format!(
            "`max` ({max}) is below `min` ({})",
            input.min
        )));
    }
    Ok(())
}

/// The kernel's form of an executable name: its first 15 bytes (`TASK_COMM_LEN` is 16 with
/// the terminating NUL), cut back to a character boundary.
pub fn comm_name(name: &str) -> &str {
    const COMM_BYTES: usize = 15;
    if name.len() <= COMM_BYTES {
        return name;
    }
    let mut end = COMM_BYTES;
    while !name.is_char_boundary(end) {
        end -= 1;
    }
    &name[..end]
}

/// Count the processes named as the input says and judge the count. Pure, so it is
/// unit-tested natively.
pub fn judge_process(input: &ProcessInput, processes: &[Process]) -> CheckResult<ProcessFacts> {
    let name = comm_name(&input.name);
    let mut matching: Vec<&Process> = processes.iter().filter(|p| p.name == name).collect();
    matching.sort_by_key(|p| p.pid);
    let count = u32::try_from(matching.len()).unwrap_or(u32::MAX);
    let facts = ProcessFacts {
        name: name.to_string(),
        count,
        pids: matching.iter().take(MAX_PIDS).map(|p| p.pid).collect(),
        rss_bytes: matching.iter().map(|p| p.rss_bytes).sum(),
        min: input.min,
        max: input.max,
    };
    let running = match count {
        0 => format!("no process named `{name}` is running"),
        1 => format!(
            "1 process named `{name}` is running (pid {})",
            facts.pids[0]
        ),
        n => format!("{n} processes named `{name}` are running"),
    };
    let (status, detail) = if count < input.min {
        (
            Status::Critical,
            format!("{running}, expected at least {}", input.min),
        )
    } else if let Some(max) = input.max.filter(|max| count > *max) {
        (
            Status::Critical,
            format!("{running}, expected at most {max}"),
        )
    } else {
        (Status::Ok, running)
    };
    CheckResult {
        status,
        value: Some(f64::from(count)),
        unit: "processes".into(),
        thresholds: Thresholds::default(),
        detail,
        facts,
    }
}

/// `, at or above the warning threshold of 90%`.
fn tripped(status: Status, thresholds: &Thresholds, unit: &str) -> String {
    let (name, value) = if status == Status::Critical {
        ("critical", thresholds.critical)
    } else {
        ("warning", thresholds.warning)
    };
    format!(
        ", at or above the {name} threshold of {}{unit}",
        value.unwrap_or_default()
    )
}

fn percent(part: u64, whole: u64) -> f64 {
    if whole == 0 {
        0.0
    } else {
        part as f64 * 100.0 / whole as f64
    }
}

fn round(value: f64, decimals: i32) -> f64 {
    let scale = 10f64.powi(decimals);
    (value * scale).round() / scale
}

/// `1.5 GiB`: bytes in binary units, for detail sentences.
fn human_bytes(bytes: u64) -> String {
    const UNITS: [&str; 6] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{:.1} {}", value, UNITS[unit])
    }
}

export_plugin!(HostCheck);

#[cfg(test)]
mod tests {
    use super::*;

    const GIB: u64 = 1024 * 1024 * 1024;

    fn parse<T: serde::de::DeserializeOwned>(json: &str) -> T {
        serde_json::from_str(json).unwrap()
    }

    fn mem(total: u64, available: u64, swap_total: u64, swap_free: u64) -> MemoryInfo {
        MemoryInfo {
            total_bytes: total,
            available_bytes: available,
            swap_total_bytes: swap_total,
            swap_free_bytes: swap_free,
        }
    }

    #[test]
    fn memory_used_is_total_minus_available() {
        let r = judge_memory(&parse("{}"), &mem(16 * GIB, 4 * GIB, 0, 0));
        assert_eq!(r.status, Status::Ok);
        assert_eq!(r.value, Some(75.0));
        assert_eq!(r.facts.used_bytes, 12 * GIB);
        assert_eq!(r.facts.swap_used_percent, None);
        assert_eq!(
            r.detail,
            "memory 75% used (4.0 GiB available of 16.0 GiB); no swap"
        );
    }

    #[test]
    fn memory_defaults_warn_at_90_and_are_critical_at_95_percent() {
        let input: MemoryInput = parse("{}");
        assert_eq!(
            judge_memory(&input, &mem(100, 9, 0, 0)).status,
            Status::Warning
        );
        let r = judge_memory(&input, &mem(100, 4, 0, 0));
        assert_eq!(r.status, Status::Critical);
        assert_eq!(
            r.detail,
            "memory 96% used (4 B available of 100 B), at or above the critical threshold of \
             95%; no swap"
        );
    }

    #[test]
    fn swap_is_judged_only_when_asked() {
        let info = mem(100, 50, 100, 10);
        let r = judge_memory(&parse("{}"), &info);
        assert_eq!(r.status, Status::Ok);
        assert_eq!(r.facts.swap_used_percent, Some(90.0));
        let r = judge_memory(&parse(r#"{"swap_warning_percent":50}"#), &info);
        assert_eq!(r.status, Status::Warning);
        assert!(
            r.detail.ends_with(
                "swap 90% used (90 B of 100 B), at or above the warning threshold of 50%"
            ),
            "{}",
            r.detail
        );
        assert_eq!(r.value, Some(50.0), "the value stays memory used");
    }

    #[test]
    fn percent_thresholds_in_the_wrong_order_are_invalid_input() {
        assert!(matches!(
            ordered("swap_", Some(90.0), Some(80.0)),
            Err(Error::InvalidInput(m)) if m == "`swap_warning_percent` (90) is above `swap_critical_percent` (80)"
        ));
        assert!(ordered("", Some(80.0), None).is_ok());
    }

    fn loadavg(one: f64, five: f64, fifteen: f64, cpus: u32) -> Load {
        Load {
            one,
            five,
            fifteen,
            cpus,
        }
    }

    #[test]
    fn load_is_judged_per_cpu_over_five_minutes_by_default() {
        let r = judge_load(&parse("{}"), &loadavg(9.0, 3.0, 1.0, 4));
        assert_eq!(r.status, Status::Ok);
        assert_eq!(r.value, Some(0.75));
        assert_eq!(r.unit, "load per CPU");
        assert_eq!(
            r.detail,
            "load over 5 minutes is 3.00 on 4 CPUs (0.75 per CPU)"
        );
        assert_eq!(r.facts.load_1m, 9.0);
    }

    #[test]
    fn load_thresholds_apply_to_the_chosen_period() {
        let l = loadavg(9.0, 3.0, 1.0, 4);
        let r = judge_load(&parse(r#"{"period":"1m"}"#), &l);
        assert_eq!(r.status, Status::Critical);
        assert_eq!(
            r.detail,
            "load over 1 minute is 9.00 on 4 CPUs (2.25 per CPU), at or above the critical \
             threshold of 2 per CPU"
        );
        let r = judge_load(&parse(r#"{"period":"15m","warning_per_cpu":0.2}"#), &l);
        assert_eq!(r.status, Status::Warning);
        assert_eq!(r.value, Some(0.25));
        assert!(
            serde_json::from_str::<LoadInput>(r#"{"period":"10m"}"#).is_err(),
            "only 1m, 5m and 15m exist"
        );
    }

    fn procs(list: &[(u32, &str)]) -> Vec<Process> {
        list.iter()
            .map(|(pid, name)| Process {
                pid: *pid,
                name: (*name).to_string(),
                rss_bytes: 1000,
                uid: 0,
            })
            .collect()
    }

    #[test]
    fn a_running_process_is_ok_and_a_missing_one_critical() {
        let list = procs(&[(7, "nginx"), (3, "nginx"), (9, "sshd")]);
        let r = judge_process(&parse(r#"{"name":"nginx"}"#), &list);
        assert_eq!(r.status, Status::Ok);
        assert_eq!(r.value, Some(2.0));
        assert_eq!(r.facts.pids, [3, 7]);
        assert_eq!(r.facts.rss_bytes, 2000);
        assert_eq!(r.detail, "2 processes named `nginx` are running");
        let r = judge_process(&parse(r#"{"name":"postgres"}"#), &list);
        assert_eq!(r.status, Status::Critical);
        assert_eq!(
            r.detail,
            "no process named `postgres` is running, expected at least 1"
        );
    }

    #[test]
    fn counts_outside_min_and_max_are_critical() {
        let list = procs(&[(1, "worker"), (2, "worker"), (3, "worker")]);
        let r = judge_process(&parse(r#"{"name":"worker","min":4}"#), &list);
        assert_eq!(r.status, Status::Critical);
        assert!(r.detail.ends_with("expected at least 4"), "{}", r.detail);
        let r = judge_process(&parse(r#"{"name":"worker","max":2}"#), &list);
        assert_eq!(r.status, Status::Critical);
        assert_eq!(
            r.detail,
            "3 processes named `worker` are running, expected at most 2"
        );
        // "Must not run": min 0, max 0.
        let r = judge_process(&parse(r#"{"name":"cryptominer","min":0,"max":0}"#), &list);
        assert_eq!(r.status, Status::Ok);
    }

    #[test]
    fn long_names_are_compared_as_the_kernel_cuts_them() {
        assert_eq!(comm_name("prometheus-node-exporter"), "prometheus-node");
        assert_eq!(comm_name("sshd"), "sshd");
        // 14 ASCII bytes then a two-byte character: cut before it, not through it.
        assert_eq!(comm_name("abcdefghijklmné"), "abcdefghijklmn");
        let list = procs(&[(42, "prometheus-node")]);
        let r = judge_process(&parse(r#"{"name":"prometheus-node-exporter"}"#), &list);
        assert_eq!(r.status, Status::Ok);
        assert_eq!(r.facts.name, "prometheus-node");
        assert_eq!(
            r.detail,
            "1 process named `prometheus-node` is running (pid 42)"
        );
    }

    #[test]
    fn impossible_process_inputs_are_invalid() {
        assert!(validate_process(&parse(r#"{"name":""}"#)).is_err());
        assert!(matches!(
            validate_process(&parse(r#"{"name":"x","min":3,"max":2}"#)),
            Err(Error::InvalidInput(m)) if m == "`max` (2) is below `min` (3)"
        ));
    }
}
