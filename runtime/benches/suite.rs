//! Every benchmark of issue 7 in one run, each figure beside a baseline measured in the same
//! run: the same check or action done by spawning a process per action (a shell, and Python),
//! as process-based runbook tools do. It ends by printing one table:
//! figure | Runloom | baseline (shell) | baseline (Python) | target | met?
//!
//! Run with `cargo bench -p runloom --bench suite` (BENCHMARKS.md, "The suite"). It measures:
//!
//! 1. a warm plugin call (p50, p99) against spawning `/bin/sh -c true` and `python3 -c pass`;
//! 2. a Rhai runbook making three plugin calls, every store write committed (p50, and runs/s
//!    with 16 in flight) against a shell script and a Python script each spawning three
//!    such processes;
//! 3. alerts over HTTP on 127.0.0.1 to a node in this process: acknowledged, alert → run
//!    start, alert → remediation done, one at a time; then sustained alert-triggered runs/s
//!    on SQLite, every alert accounted for (one succeeded run each, its remediation received
//!    exactly once). The baseline is a minimal Python webhook receiver that stores each alert
//!    in SQLite before answering and spawns a process per action (a shell running `curl`, or
//!    a Python process);
//! 4. the same sustained load with the node's store on a fresh PostgreSQL database
//!    (`RUNLOOM_BENCH_POSTGRES_URL` or `RUNLOOM_TEST_POSTGRES_URL`; skipped with a note
//!    without one);
//! 5. memory of a `runloom serve` process: idle after its first start (every plugin compiled)
//!    and after a restart (the compiled cache), its wake-ups per second while idle, and with
//!    1,000 runs started in `sleep("60s")` (counting those that reached their sleep); against
//!    the Python receiver idle, and 1,000 waiting shell scripts or Python processes (a
//!    sample of 100 scaled by ten), their proportional set sizes summed;
//! 6. `runloom serve` start-up with 50 plugins in its plugin directory, cold (empty data
//!    directory) and with the compiled cache, from spawn to `GET /healthz` 200;
//! 7. a burst of 10,000 distinct alerts with 500 in flight to a `runloom serve` with
//!    `max_intake = 32`: each 503 is retried after its `Retry-After`, as Alertmanager retries
//!    a 5xx; the peak RSS during the burst, and every alert accounted for.
//!
//! A broken setup, a lost or doubled run, or a missed remediation panics. Timings are only
//! reported, never asserted. Baselines that need python3 (or curl) are skipped with a note
//! where it is missing.

#![allow(
    clippy::expect_used,
    clippy::unwrap_used,
    reason = "a broken setup should panic"
)]

mod common;

use common::alerts::{
    KEEP_ALIVE, Latencies, NodeFigures, Receiver, assert_one_run_each, fingerprints, measure_node,
    one_at_a_time, post_all, sustained, write_site,
};
use common::baseline::{PythonReceiver, python_action, shell_action};
use common::process::{
    context_switches, megabytes, proc_field, process_tree, pss_kib, python3, rss_kib,
    spawn_and_wait, threads, which,
};
use common::runbook::{ThreeCalls, threaded_throughput};
use common::server::{Server, get_json};
use common::site::{copy_dir, scratch, write_runbook};
use common::{Sample, plugin, process, time_sync};
use runloom::store::{Durability, RunFilter, Store};
use std::io::{BufRead, BufReader};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

// ---- sizes -------------------------------------------------------------------------------

const RUNBOOK_WARMUP: usize = 50;
const RUNBOOK_ITERS: usize = 500;
const RUNBOOK_RUNS: usize = 2_000;
const IN_FLIGHT: usize = 16;
/// (warm-up, timed one at a time, runs with `IN_FLIGHT` at a time) for the baseline scripts.
const SHELL_SCRIPT: (usize, usize, usize) = (20, 300, 1_000);
const PYTHON_SCRIPT: (usize, usize, usize) = (3, 30, 96);

const ALERT_WARMUP: usize = 100;
const ALERT_ITERS: usize = 1_000;
const SUSTAINED: usize = 10_000;
const SENDERS: usize = 64;
/// (warm-up, one at a time, sustained) alerts for the baseline receiver.
const SHELL_ALERTS: (usize, usize, usize) = (10, 300, 2_000);
const PYTHON_ALERTS: (usize, usize, usize) = (5, 100, 300);
/// Worker threads of the baseline receiver, as many as the node has workers.
const BASELINE_WORKERS: usize = 64;

/// How long a process sits idle before its memory is read.
const SETTLE: Duration = Duration::from_secs(5);
/// How long an idle process's wake-ups are counted, after [`SETTLE`].
const WAKEUP_WINDOW: Duration = Duration::from_secs(5);
const WAITING_RUNS: usize = 1_000;
/// Python processes actually started for the 1,000-waiting baseline; the sum is scaled up.
const PYTHON_WAITING_SAMPLE: usize = 100;

const STARTUP_PLUGINS: usize = 50;
const WARM_STARTS: usize = 3;

const BURST: usize = 10_000;
const BURST_IN_FLIGHT: usize = 500;
const BURST_MAX_INTAKE: usize = 32;

// ---- the table ---------------------------------------------------------------------------

/// One line of the summary.
struct Row {
    figure: String,
    runloom: String,
    shell: String,
    python: String,
    target: String,
    met: Option<bool>,
}

#[derive(Default)]
struct Report {
    rows: Vec<Row>,
    notes: Vec<String>,
}

impl Report {
    fn row(
        &mut self,
        figure: &str,
        runloom: String,
        shell: Option<String>,
        python: Option<String>,
        target: &str,
        met: Option<bool>,
    ) {
        self.rows.push(Row {
            figure: figure.into(),
            runloom,
            shell: shell.unwrap_or_else(|| "—".into()),
            python: python.unwrap_or_else(|| "—".into()),
            target: target.into(),
            met,
        });
    }

    /// Say `text` now and again under the table.
    fn note(&mut self, text: String) {
        println!("  {text}");
        self.notes.push(text);
    }

    fn print(&self) {
        let header = [
            "figure",
            "Runloom",
            "baseline (shell)",
            "baseline (Python)",
            "target",
            "met?",
        ];
        let cells: Vec<[String; 6]> = self
            .rows
            .iter()
            .map(|r| {
                [
                    r.figure.clone(),
                    r.runloom.clone(),
                    r.shell.clone(),
                    r.python.clone(),
                    r.target.clone(),
                    match r.met {
                        Some(true) => "yes".into(),
                        Some(false) => "NO".into(),
                        None => "—".into(),
                    },
                ]
            })
            .collect();
        let width = |i: usize| {
            cells
                .iter()
                .map(|c| c[i].chars().count())
                .chain([header[i].chars().count()])
                .max()
                .unwrap_or(0)
        };
        let widths: Vec<usize> = (0..6).map(width).collect();
        let line = |c: &[&str]| {
            let padded: Vec<String> = c
                .iter()
                .zip(&widths)
                .map(|(s, w)| format!("{s}{}", " ".repeat(w - s.chars().count())))
                .collect();
            println!("| {} |", padded.join(" | "));
        };
        line(&header);
        let rule: Vec<String> = widths.iter().map(|w| "-".repeat(*w)).collect();
        println!("|-{}-|", rule.join("-|-"));
        for c in &cells {
            line(&c.iter().map(String::as_str).collect::<Vec<_>>());
        }
        println!();
        for n in &self.notes {
            println!("- {n}");
        }
    }
}

fn micros(d: Duration) -> String {
    format!("{:.1} µs", d.as_secs_f64() * 1e6)
}

fn millis(d: Duration) -> String {
    let ms = d.as_secs_f64() * 1e3;
    if ms < 10.0 {
        format!("{ms:.2} ms")
    } else {
        format!("{ms:.1} ms")
    }
}

fn rate(per_second: f64) -> String {
    let n = per_second.round() as u64;
    if n >= 1_000 {
        format!("{},{:03}/s", n / 1_000, n % 1_000)
    } else {
        format!("{n}/s")
    }
}

fn mb(kib: u64) -> String {
    format!("{:.1} MB", megabytes(kib))
}

fn seconds(d: Duration) -> String {
    format!("{:.2} s", d.as_secs_f64())
}

fn section(title: &str) {
    println!("\n== {title}");
}

// ---- 1. plugin call ----------------------------------------------------------------------

/// The first [`LISTED`] of `lines`, and how many more there were: a slow machine can put
/// hundreds of calls above the bound (the `plugin_call` bench lists every one).
fn listed(lines: &[String]) -> String {
    const LISTED: usize = 20;
    let shown = lines[..lines.len().min(LISTED)].join("; ");
    match lines.len().saturating_sub(LISTED) {
        0 => shown,
        more => format!("{shown}; and {more} more"),
    }
}

fn plugin_calls(rt: &tokio::runtime::Runtime, python: Option<&str>, report: &mut Report) {
    section("warm plugin call against a process per action");
    let plugin::WarmCalls {
        calls: timed,
        control,
    } = plugin::warm_calls(rt, plugin::WARMUP, plugin::ITERS);
    let above = plugin::count_above(&timed, plugin::NEVER_ABOVE);
    let above_on_cpu = plugin::own_cpu(&timed, plugin::NEVER_ABOVE);
    let control_above = plugin::count_above(&control, plugin::NEVER_ABOVE);
    let calls = Sample::new("plugin call", timed.iter().map(|c| c.took).collect());
    let shell = Sample::new(
        "sh -c true",
        time_sync(process::SPAWN_WARMUP, process::SPAWN_ITERS, || {
            spawn_and_wait("/bin/sh", &["-c", "true"])
        }),
    );
    let py = python.map(|p| {
        Sample::new(
            "python3 -c pass",
            time_sync(process::PYTHON_WARMUP, process::PYTHON_ITERS, || {
                spawn_and_wait(p, &["-c", "pass"])
            }),
        )
    });
    let (p50, p99) = (calls.percentile(50.0), calls.percentile(99.0));
    report.note(format!(
        "plugin call (hello.greet, fresh instance, JSON in and out): {}",
        plugin::summary(&timed, plugin::NEVER_ABOVE)
    ));
    report.note(format!(
        "the calls above 50 µs, wall clock and the calling thread's CPU clock \
         (CLOCK_THREAD_CPUTIME_ID: the call's own work, any interrupt on its CPU and any vCPU \
         stall the hypervisor does not report; not time preempted or reported as steal): {}",
        listed(&plugin::describe_slow(&timed, plugin::NEVER_ABOVE))
    ));
    report.note(format!(
        "the control, a CPU-only loop as long as the warm-up calls' median, timed the same way \
         right after each call: {}",
        plugin::summary(&control, plugin::NEVER_ABOVE)
    ));
    let pct = |s: &Sample, p: f64| millis(s.percentile(p));
    report.row(
        "warm plugin call p50",
        micros(p50),
        Some(pct(&shell, 50.0)),
        py.as_ref().map(|s| pct(s, 50.0)),
        "≤ 25 µs",
        Some(p50 <= Duration::from_micros(25)),
    );
    report.row(
        "warm plugin call p99",
        micros(p99),
        Some(pct(&shell, 99.0)),
        py.as_ref().map(|s| pct(s, 99.0)),
        "≤ 50 µs",
        Some(p99 <= plugin::NEVER_ABOVE),
    );
    report.row(
        "plugin calls above 50 µs",
        format!("{above} of {}", plugin::ITERS),
        None,
        None,
        "never above 50 µs",
        Some(above == 0),
    );
    report.row(
        "… of them above 50 µs of the calling thread's CPU time",
        format!("{above_on_cpu} of {above}"),
        None,
        None,
        "—",
        None,
    );
    report.row(
        "control: a CPU-only loop as long as a call, above 50 µs",
        format!("{control_above} of {}", plugin::ITERS),
        None,
        None,
        "—",
        None,
    );
    let ratio = |s: &Sample| s.percentile(50.0).as_secs_f64() / p50.as_secs_f64();
    let shell_ratio = ratio(&shell);
    report.row(
        "process per action ÷ plugin call, p50",
        "1×".into(),
        Some(format!("{shell_ratio:.0}×")),
        py.as_ref().map(|s| format!("{:.0}×", ratio(s))),
        "≥ 20×",
        Some(shell_ratio >= 20.0),
    );
}

// ---- 2. a runbook with three plugin calls --------------------------------------------------

fn runbooks(rt: &tokio::runtime::Runtime, python: Option<&str>, report: &mut Report) {
    section("Rhai runbook with three plugin calls against a script spawning three processes");
    let s = rt.block_on(ThreeCalls::setup(Durability::Full));
    let runloom = Sample::new(
        "runbook",
        rt.block_on(s.sequential(RUNBOOK_WARMUP, RUNBOOK_ITERS)),
    );
    let runloom_rate = rt.block_on(s.throughput(RUNBOOK_RUNS, IN_FLIGHT));
    s.remove();

    let dir = scratch("suite-scripts");
    let three_sh = dir.join("three.sh");
    std::fs::write(
        &three_sh,
        "/bin/sh -c true\n/bin/sh -c true\n/bin/sh -c true\n",
    )
    .unwrap();
    let three_sh = three_sh.display().to_string();
    let shell_run = || spawn_and_wait("/bin/sh", &[&three_sh]);
    let (warm, iters, runs) = SHELL_SCRIPT;
    let shell = Sample::new("three.sh", time_sync(warm, iters, shell_run));
    let shell_rate = threaded_throughput(runs, IN_FLIGHT, shell_run);

    let py = python.map(|p| {
        let three_py = dir.join("three.py");
        std::fs::write(
            &three_py,
            "import subprocess, sys\nfor _ in range(3):\n    \
             subprocess.run([sys.executable, '-c', 'pass'], check=True)\n",
        )
        .unwrap();
        let three_py = three_py.display().to_string();
        let run = || spawn_and_wait(p, &[&three_py]);
        let (warm, iters, runs) = PYTHON_SCRIPT;
        let sample = Sample::new("three.py", time_sync(warm, iters, run));
        (sample, threaded_throughput(runs, IN_FLIGHT, run))
    });
    let _ = std::fs::remove_dir_all(&dir);
    report.note(format!(
        "runbook: enqueue + execute, 3 × hello.greet, every store write committed (SQLite, \
         synchronous=FULL); {RUNBOOK_ITERS} one at a time, then {RUNBOOK_RUNS} with {IN_FLIGHT} \
         in flight. Baselines store nothing: `sh three.sh` (three `/bin/sh -c true`), \
         `python3 three.py` (three `python3 -c pass`)"
    ));
    report.row(
        "Rhai runbook, 3 plugin calls: p50",
        millis(runloom.percentile(50.0)),
        Some(millis(shell.percentile(50.0))),
        py.as_ref().map(|(s, _)| millis(s.percentile(50.0))),
        "—",
        None,
    );
    report.row(
        "Rhai runbook, 3 plugin calls: runs/s, 16 in flight",
        rate(runloom_rate),
        Some(rate(shell_rate)),
        py.as_ref().map(|(_, r)| rate(*r)),
        "—",
        None,
    );
}

// ---- 3. alerts over HTTP -----------------------------------------------------------------

/// The latency rows: figure, target, bound. Values come from [`latencies`] in this order.
const ALERT_FIGURES: [(&str, &str, Option<Duration>); 5] = [
    ("alert acknowledged p50", "—", None),
    (
        "alert acknowledged p99",
        "≤ 20 ms",
        Some(Duration::from_millis(20)),
    ),
    ("alert → run start p50 (1 ms clock)", "—", None),
    ("alert → run start p99 (1 ms clock)", "—", None),
    (
        "alert → remediation done p50",
        "≤ 5 ms",
        Some(Duration::from_millis(5)),
    ),
];

/// The figures of [`ALERT_FIGURES`], in its order.
fn latencies(l: Latencies) -> [Duration; 5] {
    let (ack, start, done) = (
        Sample::new("ack", l.ack),
        Sample::new("start", l.start),
        Sample::new("done", l.done),
    );
    [
        ack.percentile(50.0),
        ack.percentile(99.0),
        start.percentile(50.0),
        start.percentile(99.0),
        done.percentile(50.0),
    ]
}

/// The baseline receiver with `action`: alerts one at a time, then a sustained load; every
/// action checked to have reached the receiver exactly once. Returns the latency figures and
/// the sustained rate.
async fn baseline_alerts(
    python: &str,
    name: &str,
    action: &[String],
    (warmup, iters, load): (usize, usize, usize),
    report: &mut Report,
) -> ([Duration; 5], f64) {
    let receiver = Receiver::start().await;
    let dir = scratch(&format!("suite-baseline-{name}"));
    let done_url = receiver.done_url();
    let mut r = PythonReceiver::spawn(python, &dir, action, &done_url, BASELINE_WORKERS);
    let http = reqwest::Client::new();
    r.server.ready(&http).await;
    let url = r.url();
    let (warm, seq) = (fingerprints("warm", warmup), fingerprints("seq", iters));
    let posted = one_at_a_time(&http, &url, &receiver, &warm, &seq).await;
    let load_fps = fingerprints("load", load);
    let finished = receiver.wait_for(warmup + iters + load);
    let (went_in, elapsed) = sustained(&http, &url, &load_fps, SENDERS, finished).await;
    let all: Vec<String> = warm.into_iter().chain(seq).chain(load_fps).collect();
    receiver.assert_each_once(&all);
    let started = r.started_ms().await;
    let started_ms: Vec<i64> = posted.iter().map(|p| started[&p.fp]).collect();
    r.server.terminate().await;
    let _ = std::fs::remove_dir_all(&dir);
    report.note(format!(
        "baseline receiver, {name} action ({}): {load} alerts accepted in {}, every action \
         done after {}; each action reached the receiver exactly once",
        action.join(" "),
        seconds(went_in.accepted_in),
        seconds(elapsed)
    ));
    (
        latencies(Latencies::new(&posted, &started_ms)),
        load as f64 / elapsed.as_secs_f64(),
    )
}

async fn alerts(python: Option<&str>, report: &mut Report) {
    section("alerts over HTTP on 127.0.0.1 against a Python webhook receiver");
    let sizes = (ALERT_WARMUP, ALERT_ITERS, SUSTAINED);
    let f = measure_node(
        "suite-sqlite",
        Durability::Full,
        None,
        KEEP_ALIVE,
        sizes,
        SENDERS,
    )
    .await;
    report.note(format!(
        "SQLite (synchronous=FULL), node in process with 64 workers, `http-check` keeping its \
         connection to the receiver (keep_alive = {KEEP_ALIVE:?}): {SUSTAINED} alerts from \
         {SENDERS} senders accepted in {} ({} answered 503 and retried), every run ended after \
         {}; {} alerts, each with exactly one succeeded run and one remediation received",
        seconds(f.load.accepted_in),
        f.load.refused,
        seconds(f.elapsed),
        f.alerts
    ));
    report.note(cpu_note(&f));
    report.row(
        "CPU per sustained alert-triggered run, SQLite: node / load generator",
        cpu_per_alert(&f),
        None,
        None,
        "—",
        None,
    );
    // The same load with a connection opened and closed per remediation (no keep_alive).
    let sizes = (ALERT_WARMUP, 0, SUSTAINED);
    let fresh = measure_node(
        "suite-sqlite-fresh",
        Durability::Full,
        None,
        Duration::ZERO,
        sizes,
        SENDERS,
    )
    .await;
    report.note(format!(
        "without keep_alive (a connection per remediation): {}; {} alerts accounted for",
        cpu_note(&fresh),
        fresh.alerts
    ));
    let fresh_rate = SUSTAINED as f64 / fresh.elapsed.as_secs_f64();
    let runloom = (
        latencies(f.latencies),
        SUSTAINED as f64 / f.elapsed.as_secs_f64(),
    );
    let shell = match (python, which("curl")) {
        (Some(p), Some(curl)) => {
            Some(baseline_alerts(p, "shell", &shell_action(&curl), SHELL_ALERTS, report).await)
        }
        (None, _) => None,
        (Some(_), None) => {
            report.note("curl not found: skipping the shell baseline of alert intake".into());
            None
        }
    };
    let py = match python {
        Some(p) => {
            Some(baseline_alerts(p, "Python", &python_action(p), PYTHON_ALERTS, report).await)
        }
        None => None,
    };
    for (i, (figure, target, bound)) in ALERT_FIGURES.into_iter().enumerate() {
        let value = runloom.0[i];
        report.row(
            figure,
            millis(value),
            shell.map(|(l, _)| millis(l[i])),
            py.map(|(l, _)| millis(l[i])),
            target,
            bound.map(|b| value <= b),
        );
    }
    report.row(
        "sustained alert-triggered runs/s, SQLite",
        rate(runloom.1),
        shell.map(|(_, r)| rate(r)),
        py.map(|(_, r)| rate(r)),
        "≥ 5,000/s, none lost or doubled",
        Some(runloom.1 >= 5_000.0),
    );
    report.row(
        "the same, a connection per remediation (no keep_alive): runs/s; CPU node / load",
        format!("{}; {}", rate(fresh_rate), cpu_per_alert(&fresh)),
        None,
        None,
        "—",
        None,
    );
}

// ---- 4. PostgreSQL -----------------------------------------------------------------------

async fn postgres(report: &mut Report) {
    section("sustained alert-triggered runs on PostgreSQL");
    let figure = "sustained alert-triggered runs/s, PostgreSQL";
    let target = "none lost or doubled";
    let why = match common::postgres::base_url() {
        None => Err("set RUNLOOM_BENCH_POSTGRES_URL or RUNLOOM_TEST_POSTGRES_URL".to_string()),
        Some(base) => match common::postgres::fresh_database(&base).await {
            Ok(url) => Ok((base, url)),
            Err(e) => Err(format!("{base} is unreachable: {e}")),
        },
    };
    let (base, url) = match why {
        Ok(found) => found,
        Err(why) => {
            report.note(format!("PostgreSQL skipped: {why}"));
            return report.row(figure, "skipped".into(), None, None, target, None);
        }
    };
    let sizes = (ALERT_WARMUP, 0, SUSTAINED);
    let f = measure_node(
        "suite-pg",
        Durability::Full,
        Some(&url),
        KEEP_ALIVE,
        sizes,
        SENDERS,
    )
    .await;
    common::postgres::drop_database(&base, &url).await;
    report.note(format!(
        "PostgreSQL (a fresh database), node in process with 64 workers: {SUSTAINED} alerts \
         accepted in {} ({} answered 503 and retried), every run ended after {}; {} alerts, \
         each with exactly one succeeded run and one remediation received. The baseline \
         receiver stores in SQLite only",
        seconds(f.load.accepted_in),
        f.load.refused,
        seconds(f.elapsed),
        f.alerts
    ));
    report.note(cpu_note(&f));
    let per_second = SUSTAINED as f64 / f.elapsed.as_secs_f64();
    report.row(figure, rate(per_second), None, None, target, Some(true));
    report.row(
        "CPU per sustained alert-triggered run, PostgreSQL: node / load generator",
        cpu_per_alert(&f),
        None,
        None,
        "—",
        None,
    );
}

/// The node's and the load generator's CPU per alert of a sustained load, as a table cell.
fn cpu_per_alert(f: &NodeFigures) -> String {
    let (node, load) = f.cpu;
    let per = |d: Duration| micros(d / u32::try_from(SUSTAINED).unwrap());
    format!("{} / {}", per(node), per(load))
}

/// Where the CPU of a sustained load went, and what rate the node's share alone allows.
fn cpu_note(f: &NodeFigures) -> String {
    let (node, load) = f.cpu;
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    format!(
        "during the sustained load the node used {} of CPU and the load generator (senders \
         and receiver, on a thread of their own) {}, over {} on {cores} CPUs; at the node's \
         CPU per run, {cores} CPUs of its own would serve {} (an estimate)",
        seconds(node),
        seconds(load),
        seconds(f.elapsed),
        rate(cores as f64 * SUSTAINED as f64 / node.as_secs_f64())
    )
}

// ---- 5. memory ---------------------------------------------------------------------------

/// Spawn `count` copies of `program args` in one new process group, each printing a line once
/// it is about to wait; returns them once every one has printed it.
fn spawn_waiting(program: &str, args: &[&str], count: usize) -> Vec<Child> {
    let mut group = 0;
    let mut children = Vec::with_capacity(count);
    for _ in 0..count {
        let child = process::quiet(program, args)
            .process_group(group)
            .stdout(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("spawning {program}: {e}"));
        if group == 0 {
            group = i32::try_from(child.id()).unwrap();
        }
        children.push(child);
    }
    for child in &mut children {
        let mut line = String::new();
        BufReader::new(child.stdout.as_mut().unwrap())
            .read_line(&mut line)
            .unwrap();
        assert_eq!(line.trim(), "waiting");
    }
    children
}

/// Kill the process group `children` were started in (their own children with them).
fn kill_group(children: Vec<Child>) {
    let group = i32::try_from(children[0].id()).unwrap();
    let _ = nix::sys::signal::killpg(
        nix::unistd::Pid::from_raw(group),
        nix::sys::signal::Signal::SIGKILL,
    );
    for mut c in children {
        let _ = c.wait();
    }
}

/// Runs in the SQLite store at `db` with a log line `message`, waiting up to a few seconds
/// for the store's writer to commit the lines.
async fn runs_that_logged(db: &Path, message: &str) -> usize {
    use sqlx::{Connection, SqliteConnection};
    let mut conn = SqliteConnection::connect(&format!("sqlite://{}?mode=ro", db.display()))
        .await
        .unwrap();
    let (mut last, mut stable_since) = (0, Instant::now());
    loop {
        let n: i64 =
            sqlx::query_scalar("SELECT COUNT(DISTINCT run_id) FROM logs WHERE message = $1")
                .bind(message)
                .fetch_one(&mut conn)
                .await
                .unwrap();
        let n = usize::try_from(n).unwrap();
        if n != last {
            (last, stable_since) = (n, Instant::now());
        }
        if n == WAITING_RUNS || stable_since.elapsed() > Duration::from_secs(3) {
            return n;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// (sum of PSS, sum of RSS, processes) over `children` and everything below them.
fn tree_memory(children: &[Child]) -> (u64, u64, usize) {
    let pids: Vec<u32> = children.iter().flat_map(|c| process_tree(c.id())).collect();
    let pss = pids.iter().filter_map(|p| pss_kib(*p)).sum();
    let rss = pids.iter().filter_map(|p| rss_kib(*p)).sum();
    (pss, rss, pids.len())
}

/// `runloom serve` idle: after its first start (every plugin compiled) and after a restart
/// (the compiled cache). Returns a copy of the compiled cache for the later measurements.
async fn idle(python: Option<&str>, report: &mut Report) -> PathBuf {
    section("idle memory");
    let http = reqwest::Client::new();
    let receiver = Receiver::start().await;
    let dir = scratch("suite-idle");
    let config = write_site(&dir, receiver.port(), "", None);
    let mut idle_rss = Vec::new();
    let mut wakeups = None;
    for start in ["cold", "cached"] {
        let mut server = Server::runloom(&config, &dir.join("stderr.log"));
        server.ready(&http).await;
        tokio::time::sleep(SETTLE).await;
        let pid = server.pid();
        let field = |f| proc_field(pid, "status", f).unwrap();
        idle_rss.push((
            field("VmRSS:"),
            field("RssAnon:"),
            field("RssFile:"),
            field("Threads:"),
        ));
        if start == "cached" {
            wakeups = Some(wakeups_per_second(pid).await);
        }
        server.terminate().await;
    }
    let cache = scratch("suite-cache");
    copy_dir(&dir.join("data/cache"), &cache);
    let py = match python {
        Some(p) => {
            let mut r = PythonReceiver::spawn(
                p,
                &dir.join("baseline"),
                &shell_action("curl"),
                &receiver.done_url(),
                BASELINE_WORKERS,
            );
            r.server.ready(&http).await;
            tokio::time::sleep(SETTLE).await;
            let rss = rss_kib(r.server.pid()).unwrap();
            let wakeups = wakeups_per_second(r.server.pid()).await;
            r.server.terminate().await;
            Some((rss, wakeups))
        }
        None => None,
    };
    let _ = std::fs::remove_dir_all(&dir);
    let [(cold, cold_anon, _, _), (warm, anon, file, threads)] = idle_rss[..] else {
        unreachable!()
    };
    let wakeups = wakeups.expect("measured after the restart");
    report.note(format!(
        "idle: `runloom serve` (SQLite store, the {} standard plugins, one runbook), VmRSS {} \
         s after /healthz answered. Restarted (compiled cache): {} = {} file-backed (the \
         binary's code and data with the embedded plugins, the mapped compiled cache) + {} \
         anonymous, {threads} threads. After its first start, which compiled every plugin: {} \
         ({} anonymous: the compiler's freed memory stays in the allocator's arenas). The \
         Python column is the baseline receiver's VmRSS; the shell column has no resident \
         process. Idle wake-ups: context switches of all the process's threads over {} s \
         after those {} s, per second",
        runloom::builtin::standard_plugins().len(),
        SETTLE.as_secs(),
        mb(warm),
        mb(file),
        mb(anon),
        mb(cold),
        mb(cold_anon),
        WAKEUP_WINDOW.as_secs(),
        SETTLE.as_secs(),
    ));
    report.row(
        "idle RSS (compiled cache)",
        mb(warm),
        None,
        py.map(|(rss, _)| mb(rss)),
        "≤ 30 MB",
        Some(megabytes(warm) <= 30.0),
    );
    report.row(
        "idle RSS after the first start (compiling)",
        mb(cold),
        None,
        py.map(|(rss, _)| mb(rss)),
        "≤ 30 MB",
        Some(megabytes(cold) <= 30.0),
    );
    report.row(
        "idle wake-ups per second (compiled cache)",
        format!("{wakeups:.1}/s"),
        None,
        py.map(|(_, w)| format!("{w:.1}/s")),
        "—",
        None,
    );
    cache
}

/// Context switches per second of the idle process `pid` over [`WAKEUP_WINDOW`].
async fn wakeups_per_second(pid: u32) -> f64 {
    let before = context_switches(pid).unwrap();
    tokio::time::sleep(WAKEUP_WINDOW).await;
    let after = context_switches(pid).unwrap();
    (after - before) as f64 / WAKEUP_WINDOW.as_secs_f64()
}

async fn waiting(python: Option<&str>, cache: &Path, report: &mut Report) {
    section("memory with 1,000 waiting runs");
    let http = reqwest::Client::new();
    let dir = scratch("suite-waiting");
    // Started as a restarted server is: with the compiled cache.
    copy_dir(cache, &dir.join("data/cache"));
    write_runbook(
        &dir.join("runbooks"),
        "wait",
        "version = 1\ndescription = \"Waits a minute.\"\n[policy]\nconcurrency = 1000\n",
        "info(\"waiting\");\nsleep(\"60s\");\n1\n",
    );
    let config = dir.join("runloom.toml");
    std::fs::write(
        &config,
        "version = 1\nrunbook_dir = \"runbooks\"\ndata_dir = \"data\"\n\
         [server]\nworkers = 1000\n",
    )
    .unwrap();
    let mut server = Server::runloom(&config, &dir.join("stderr.log"));
    server.ready(&http).await;
    let base = server.base().to_string();
    let start_url = format!("{base}/api/v1/runbooks/wait/runs");
    let posts: Vec<_> = (0..WAITING_RUNS)
        .map(|_| {
            let (http, url) = (http.clone(), start_url.clone());
            tokio::spawn(async move {
                let r = http
                    .post(&url)
                    .json(&serde_json::json!({}))
                    .send()
                    .await
                    .unwrap();
                assert_eq!(r.status(), reqwest::StatusCode::ACCEPTED);
            })
        })
        .collect();
    for p in posts {
        p.await.unwrap();
    }
    let list = format!("{base}/api/v1/runs?runbook=wait&status=running&limit={WAITING_RUNS}");
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let running = get_json(&http, &list).await;
        let running = running.as_array().unwrap();
        if running.len() == WAITING_RUNS {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "only {} of {WAITING_RUNS} runs running",
            running.len()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let rss = rss_kib(server.pid()).unwrap();
    let threads = threads(server.pid()).unwrap();
    // How many of the runs listed `running` have reached their `sleep`: each logs first.
    let sleeping = runs_that_logged(&dir.join("data/runloom.db"), "waiting").await;
    // Killed, not stopped: a graceful stop would wait out the runs' grace period.
    drop(server);

    let sh_script = dir.join("wait.sh");
    std::fs::write(&sh_script, "echo waiting\nsleep 60\n").unwrap();
    let shell = spawn_waiting("/bin/sh", &[&sh_script.display().to_string()], WAITING_RUNS);
    // `echo` comes before `sleep` starts: give every shell time to fork it.
    std::thread::sleep(Duration::from_secs(1));
    let (shell_pss, shell_rss, shell_procs) = tree_memory(&shell);
    kill_group(shell);
    let py = python.map(|p| {
        let sample = spawn_waiting(
            p,
            &[
                "-c",
                "import sys, time; print('waiting', flush=True); time.sleep(60)",
            ],
            PYTHON_WAITING_SAMPLE,
        );
        let (pss, rss, _) = tree_memory(&sample);
        kill_group(sample);
        let scale = (WAITING_RUNS / PYTHON_WAITING_SAMPLE) as u64;
        (pss * scale, rss * scale)
    });
    let _ = std::fs::remove_dir_all(&dir);
    report.note(format!(
        "1,000 waiting runs: `runloom serve` with `[server] workers = 1000`, 1,000 runs of a \
         Rhai runbook (`info(\"waiting\"); sleep(\"60s\")`) started through the API and \
         listed `running`: {} VmRSS, {threads} threads; {sleeping} of the 1,000 had logged \
         `waiting` (reached their sleep). Baselines sum the PSS of their processes (RSS would count \
         shared libraries once per process): shell `sh wait.sh` ({shell_procs} processes: each \
         shell and its `sleep`) {} PSS, {} summed RSS",
        mb(rss),
        mb(shell_pss),
        mb(shell_rss)
    ));
    if sleeping < WAITING_RUNS {
        report.note(format!(
            "only {sleeping} runs were in their sleep: the other {} runs listed `running` \
             had not reached it when memory was read",
            WAITING_RUNS - sleeping
        ));
    }
    if let Some((pss, rss)) = py {
        report.note(format!(
            "Python: {PYTHON_WAITING_SAMPLE} `python3 -c \"…time.sleep(60)\"` processes \
             measured and scaled ×{}: {} PSS, {} summed RSS",
            WAITING_RUNS / PYTHON_WAITING_SAMPLE,
            mb(pss),
            mb(rss)
        ));
    }
    // The target is about 1,000 runs waiting at once: fewer in their sleep does not meet it.
    report.row(
        "RSS with 1,000 waiting runs",
        if sleeping == WAITING_RUNS {
            mb(rss)
        } else {
            format!("{} ({sleeping} in sleep)", mb(rss))
        },
        Some(mb(shell_pss)),
        py.map(|(pss, _)| mb(pss)),
        "≤ 500 MB",
        Some(megabytes(rss) <= 500.0 && sleeping == WAITING_RUNS),
    );
}

// ---- 6. start-up with 50 plugins ---------------------------------------------------------

/// `component` with every occurrence of `from` replaced by `to` (the same length).
fn rename(component: &[u8], from: &[u8], to: &[u8]) -> Vec<u8> {
    assert_eq!(from.len(), to.len());
    let mut out = component.to_vec();
    let mut found = 0;
    let mut i = 0;
    while i + from.len() <= out.len() {
        if &out[i..i + from.len()] == from {
            out[i..i + from.len()].copy_from_slice(to);
            found += 1;
            i += from.len();
        } else {
            i += 1;
        }
    }
    assert!(found > 0, "the name is not in the component");
    out
}

async fn startup(python: Option<&str>, report: &mut Report) {
    section("`runloom serve` start-up with 50 plugins");
    let http = reqwest::Client::new();
    let dir = scratch("suite-startup");
    // The registry names a plugin by what its `describe` returns, so copies of one component
    // would all be `http-check`. Each copy gets its own name in its data: own bytes, own hash,
    // own compiled artefact, its own plugin.
    let source = common::plugin::standard_plugin("http-check");
    let plugins = dir.join("plugins");
    std::fs::create_dir_all(&plugins).unwrap();
    let names: Vec<String> = (0..STARTUP_PLUGINS)
        .map(|i| format!("plugin-{i:03}"))
        .collect();
    for name in &names {
        let bytes = rename(source, b"http-check", name.as_bytes());
        std::fs::write(plugins.join(format!("{name}.wasm")), bytes).unwrap();
    }
    let config = dir.join("runloom.toml");
    std::fs::write(
        &config,
        "version = 1\nrunbook_dir = \"runbooks\"\ndata_dir = \"data\"\nplugin_dir = \"plugins\"\n",
    )
    .unwrap();
    let start = |check: bool| {
        let (http, config, dir, names) = (http.clone(), config.clone(), dir.clone(), names.clone());
        async move {
            let mut server = Server::runloom(&config, &dir.join("stderr.log"));
            let took = server.ready(&http).await;
            if check {
                let doc = get_json(&http, &format!("{}/api/v1/plugins", server.base())).await;
                assert_eq!(doc["errors"], serde_json::json!([]), "every plugin loaded");
                let loaded: Vec<&str> = doc["plugins"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .filter_map(|p| p["name"].as_str())
                    .collect();
                for name in &names {
                    assert!(loaded.contains(&name.as_str()), "{name} loaded");
                }
            }
            server.terminate().await;
            took
        }
    };
    let cold = start(true).await;
    let cached = std::fs::read_dir(dir.join("data/cache")).unwrap().count();
    let mut warm = Vec::new();
    for _ in 0..WARM_STARTS {
        warm.push(start(false).await);
    }
    warm.sort();
    let warm_median = warm[warm.len() / 2];
    let py = match python {
        Some(p) => {
            let mut times = Vec::new();
            for i in 0..WARM_STARTS {
                let mut r = PythonReceiver::spawn(
                    p,
                    &dir.join(format!("baseline-{i}")),
                    &shell_action("curl"),
                    "http://127.0.0.1:9/done/",
                    BASELINE_WORKERS,
                );
                times.push(r.server.ready(&http).await);
                r.server.terminate().await;
            }
            times.sort();
            Some(times[times.len() / 2])
        }
        None => None,
    };
    let _ = std::fs::remove_dir_all(&dir);
    let builtin = runloom::builtin::standard_plugins().len();
    report.note(format!(
        "start-up: {STARTUP_PLUGINS} plugins in the plugin directory (copies of the standard \
         http-check component, {} KB, each with its own name) plus the {builtin} standard \
         plugins, spawn → /healthz 200; cold: empty data directory (every component compiled, \
         the store created), {cached} artefacts cached; compiled cache: median of \
         {WARM_STARTS} starts ({}). Python column: the baseline receiver's spawn → first 200 \
         (median of {WARM_STARTS})",
        source.len() / 1000,
        warm.iter()
            .map(|d| seconds(*d))
            .collect::<Vec<_>>()
            .join(", ")
    ));
    report.row(
        "`runloom serve` start-up, 50 plugins, cold",
        seconds(cold),
        None,
        py.map(seconds),
        "—",
        None,
    );
    report.row(
        "`runloom serve` start-up, 50 plugins, compiled cache",
        seconds(warm_median),
        None,
        py.map(seconds),
        "—",
        None,
    );
}

// ---- 7. a burst of 10,000 alerts ---------------------------------------------------------

async fn burst(cache: &Path, report: &mut Report) {
    section("a burst of 10,000 alerts, 500 in flight, max_intake = 32");
    let http = reqwest::Client::new();
    let receiver = Receiver::start().await;
    let dir = scratch("suite-burst");
    copy_dir(cache, &dir.join("data/cache"));
    let config = write_site(
        &dir,
        receiver.port(),
        &format!("workers = 64\nmax_intake = {BURST_MAX_INTAKE}"),
        None,
    );
    let mut server = Server::runloom(&config, &dir.join("stderr.log"));
    server.ready(&http).await;
    let pid = server.pid();
    let idle = rss_kib(pid).unwrap();
    let peak = Arc::new(AtomicU64::new(idle));
    let sampling = Arc::new(AtomicBool::new(true));
    let sampler = {
        let (peak, sampling) = (peak.clone(), sampling.clone());
        tokio::spawn(async move {
            while sampling.load(Ordering::SeqCst) {
                if let Some(rss) = rss_kib(pid) {
                    peak.fetch_max(rss, Ordering::SeqCst);
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
    };
    let url = format!("{}/hooks/alertmanager", server.base());
    let fps = fingerprints("burst", BURST);
    let started = Instant::now();
    let went_in = post_all(&http, &url, &fps, BURST_IN_FLIGHT).await;
    receiver.wait_for(BURST).await;
    let unfinished = |status: &'static str| {
        let url = format!("{}/api/v1/runs?status={status}&limit=1", server.base());
        let http = http.clone();
        async move { get_json(&http, &url).await.as_array().unwrap().len() }
    };
    while unfinished("queued").await + unfinished("running").await > 0 {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let elapsed = started.elapsed();
    sampling.store(false, Ordering::SeqCst);
    sampler.await.unwrap();
    server.terminate().await;

    let store = Store::open(
        &runloom::store::default_url(&dir.join("data")),
        Durability::Full,
    )
    .await
    .unwrap();
    let runs = store
        .list_runs(&RunFilter {
            runbook: Some(common::alerts::RUNBOOK.into()),
            status: None,
            limit: u32::try_from(BURST * 2).unwrap(),
        })
        .await
        .unwrap();
    drop(store);
    assert_one_run_each(&runs, &fps);
    receiver.assert_each_once(&fps);
    let _ = std::fs::remove_dir_all(&dir);
    let peak = peak.load(Ordering::SeqCst);
    report.note(format!(
        "burst: {BURST} distinct alerts from {BURST_IN_FLIGHT} concurrent senders to `runloom \
         serve` (`max_intake = {BURST_MAX_INTAKE}`, 64 workers): {} answers were 503 with \
         Retry-After and retried after it; all accepted after {}, every run ended after {}; \
         {BURST} runs, each succeeded, one per alert, each remediation received once (0 lost, \
         0 doubled). VmRSS sampled every 20 ms: {} before, {} at the peak",
        went_in.refused,
        seconds(went_in.accepted_in),
        seconds(elapsed),
        mb(idle),
        mb(peak)
    ));
    report.row(
        "burst of 10,000 alerts: peak RSS (0 lost, 0 doubled)",
        mb(peak),
        None,
        None,
        "bounded; nothing accepted lost",
        Some(true),
    );
}

// ---- main --------------------------------------------------------------------------------

fn machine() -> String {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name")?.split_once(':'))
        .map(|(_, m)| m.trim().to_string())
        .unwrap_or_default();
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let memory = meminfo
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .map(str::trim)
        .unwrap_or_default()
        .to_string();
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let cpus = std::thread::available_parallelism().map_or(1, usize::from);
    format!(
        "{cpus} CPUs ({model}), MemTotal {memory}, Linux {}",
        kernel.trim()
    )
}

fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ")
}

fn main() {
    // `cargo bench` passes `--bench`; a filter or other flags mean nothing to this harness.
    let started = Instant::now();
    println!("machine: {}", machine());
    println!("load average at start: {}", load_average());
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let mut report = Report::default();
    let python = python3();
    match &python {
        Some(p) => report.note(format!("python3: {p}")),
        None => report.note("python3 not found: the Python baselines are skipped".into()),
    }
    let python = python.as_deref();

    plugin_calls(&rt, python, &mut report);
    runbooks(&rt, python, &mut report);
    rt.block_on(alerts(python, &mut report));
    rt.block_on(postgres(&mut report));
    let cache = rt.block_on(idle(python, &mut report));
    rt.block_on(waiting(python, &cache, &mut report));
    rt.block_on(startup(python, &mut report));
    rt.block_on(burst(&cache, &mut report));
    let _ = std::fs::remove_dir_all(&cache);

    report.note(format!(
        "load average at the end: {}; the suite took {:.0} s",
        load_average(),
        started.elapsed().as_secs_f64()
    ));
    println!("\n== summary\n");
    report.print();
}
