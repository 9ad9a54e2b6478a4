//! Processes: spawning one per action, as process-based runbook tools do (the baselines), and
//! reading a process's memory from `/proc`.

use std::process::{Command, Stdio};

/// Spawning a small process (`/bin/true`, `sh -c true`) takes about a millisecond.
pub(crate) const SPAWN_WARMUP: usize = 100;
pub(crate) const SPAWN_ITERS: usize = 2_000;
/// Python takes tens of milliseconds to start.
pub(crate) const PYTHON_WARMUP: usize = 10;
pub(crate) const PYTHON_ITERS: usize = 200;

/// `program args` with no stdio.
pub(crate) fn quiet(program: &str, args: &[&str]) -> Command {
    let mut command = Command::new(program);
    command
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    command
}

/// Spawn `program args` with no stdio and wait for it; panics unless it exits 0, so a missing
/// program cannot pass for a fast one.
pub(crate) fn spawn_and_wait(program: &str, args: &[&str]) {
    let status = quiet(program, args)
        .status()
        .unwrap_or_else(|e| panic!("spawning {program}: {e}"));
    assert!(status.success(), "{program} exited with {status}");
}

/// The interpreter `python3` on PATH resolves to, or `None` without one. Version managers put
/// a shell-script shim first on PATH; spawning the real binary keeps the shim's cost out of
/// the comparison.
pub(crate) fn python3() -> Option<String> {
    let out = Command::new("python3")
        .args(["-c", "import sys; print(sys.executable)"])
        .stderr(Stdio::null())
        .output()
        .ok()?;
    let path = String::from_utf8(out.stdout).ok()?.trim().to_string();
    (out.status.success() && !path.is_empty()).then_some(path)
}

/// The path of `program` found on PATH, or `None`.
pub(crate) fn which(program: &str) -> Option<String> {
    std::env::var_os("PATH")?
        .to_str()?
        .split(':')
        .map(|dir| std::path::Path::new(dir).join(program))
        .find(|p| p.is_file())
        .map(|p| p.display().to_string())
}

/// A `kB` field (`VmRSS:`, `Threads:`, `Pss:` …) of a `/proc/<pid>/…` file, or `None` when the
/// process is gone.
pub(crate) fn proc_field(pid: u32, file: &str, field: &str) -> Option<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/{file}")).ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|rest| rest.split_whitespace().next()?.parse().ok())
}

/// Resident set size of `pid`, in KiB.
pub(crate) fn rss_kib(pid: u32) -> Option<u64> {
    proc_field(pid, "status", "VmRSS:")
}

/// Proportional set size of `pid`, in KiB: its private pages plus its share of pages it shares
/// with other processes. Summed over many processes it counts shared libraries once, where a
/// sum of RSS would count them once per process.
pub(crate) fn pss_kib(pid: u32) -> Option<u64> {
    proc_field(pid, "smaps_rollup", "Pss:")
}

/// Threads of `pid`.
pub(crate) fn threads(pid: u32) -> Option<u64> {
    proc_field(pid, "status", "Threads:")
}

/// Times the threads of `pid` have been switched off a CPU so far (voluntarily, to wait, and
/// preempted), summed: the difference over an idle spell counts its wake-ups.
pub(crate) fn context_switches(pid: u32) -> Option<u64> {
    let tasks = std::fs::read_dir(format!("/proc/{pid}/task")).ok()?;
    let mut sum = 0;
    for task in tasks.flatten() {
        let tid = task.file_name();
        let tid = tid.to_string_lossy();
        for field in ["voluntary_ctxt_switches:", "nonvoluntary_ctxt_switches:"] {
            sum += proc_field(pid, &format!("task/{tid}/status"), field).unwrap_or(0);
        }
    }
    Some(sum)
}

/// `pid` and every process below it.
pub(crate) fn process_tree(pid: u32) -> Vec<u32> {
    let mut all = vec![pid];
    let mut i = 0;
    while i < all.len() {
        let p = all[i];
        if let Ok(tasks) = std::fs::read_dir(format!("/proc/{p}/task")) {
            for task in tasks.flatten() {
                let children = std::fs::read_to_string(task.path().join("children"));
                all.extend(
                    children
                        .unwrap_or_default()
                        .split_whitespace()
                        .filter_map(|c| c.parse::<u32>().ok()),
                );
            }
        }
        i += 1;
    }
    all
}

/// Kilobytes (KiB from `/proc`) as decimal megabytes, the unit of the targets.
pub(crate) fn megabytes(kib: u64) -> f64 {
    kib as f64 * 1024.0 / 1e6
}
