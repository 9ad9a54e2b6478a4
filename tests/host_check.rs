//! `host-check` against this machine's real `/proc`: memory and load figures match what the
//! kernel reports, this test process is found by name, and each action needs its `system`
//! grant.

use crate::support::{builtin, host};
use runloom::grant::{Grants, SystemFact};
use runloom::plugin::{CallError, CallRequest};
use serde_json::{Value, json};
use std::sync::Arc;

async fn call(action: &str, input: Value, facts: &[SystemFact]) -> Result<Value, CallError> {
    let host = host();
    let plugin = builtin(&host, "host-check").await;
    let mut req = CallRequest::new(action, input.to_string());
    req.grants = Arc::new(Grants {
        system: facts.to_vec(),
        ..Grants::default()
    });
    host.call(&plugin, req).await.map(|o| o.output)
}

/// A `/proc/meminfo` value in bytes.
fn meminfo(key: &str) -> f64 {
    let text = std::fs::read_to_string("/proc/meminfo").unwrap();
    let kib: f64 = text
        .lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix(':'))
        .unwrap()
        .split_whitespace()
        .next()
        .unwrap()
        .parse()
        .unwrap();
    kib * 1024.0
}

#[tokio::test]
async fn memory_used_is_what_the_kernel_reports() {
    let out = call(
        "memory",
        json!({"warning_percent": null, "critical_percent": null}),
        &[SystemFact::Memory],
    )
    .await
    .unwrap();
    assert_eq!(out["status"], "ok", "{out}");
    assert_eq!(out["unit"], "percent");
    let total = meminfo("MemTotal");
    assert_eq!(out["facts"]["total_bytes"].as_f64().unwrap(), total);
    let expected = (total - meminfo("MemAvailable")) * 100.0 / total;
    let value = out["value"].as_f64().unwrap();
    // Other tests allocate between the two reads; two points either way is plenty.
    assert!((value - expected).abs() < 2.0, "{value} vs {expected}");
    assert!(value > 0.0 && value < 100.0, "{out}");
}

#[tokio::test]
async fn memory_thresholds_trip_at_the_measured_figure() {
    // Some memory is always in use, so a zero threshold must trip.
    let out = call(
        "memory",
        json!({"warning_percent": 0, "critical_percent": 100}),
        &[SystemFact::Memory],
    )
    .await
    .unwrap();
    assert_eq!(out["status"], "warning", "{out}");
    let out = call(
        "memory",
        json!({"warning_percent": 0, "critical_percent": 0}),
        &[SystemFact::Memory],
    )
    .await
    .unwrap();
    assert_eq!(out["status"], "critical", "{out}");
    assert!(
        out["detail"]
            .as_str()
            .unwrap()
            .contains("at or above the critical threshold of 0%"),
        "{out}"
    );
}

#[tokio::test]
async fn load_is_the_kernels_average_per_cpu() {
    let out = call(
        "load",
        json!({"period": "15m", "warning_per_cpu": 1e6, "critical_per_cpu": 1e6}),
        &[SystemFact::Load],
    )
    .await
    .unwrap();
    assert_eq!(out["status"], "ok", "{out}");
    let cpus = std::thread::available_parallelism().unwrap().get();
    assert_eq!(out["facts"]["cpus"], cpus);
    let loadavg = std::fs::read_to_string("/proc/loadavg").unwrap();
    let fifteen: f64 = loadavg.split_whitespace().nth(2).unwrap().parse().unwrap();
    // The fifteen-minute average barely moves between two reads.
    let per_cpu = out["value"].as_f64().unwrap();
    assert!(
        (per_cpu - fifteen / cpus as f64).abs() < 0.1,
        "{per_cpu} vs {fifteen} / {cpus}"
    );
    assert_eq!(out["facts"]["period"], "15m");
    // A threshold of zero load per CPU trips on any machine.
    let out = call(
        "load",
        json!({"warning_per_cpu": 0, "critical_per_cpu": 1e6}),
        &[SystemFact::Load],
    )
    .await
    .unwrap();
    assert_eq!(out["status"], "warning", "{out}");
}

/// The file name of this test binary (`e2e-<hash>`), longer than the kernel's 15-byte `comm`.
fn own_program_name() -> String {
    std::env::current_exe()
        .unwrap()
        .file_name()
        .unwrap()
        .to_string_lossy()
        .into_owned()
}

#[tokio::test]
async fn this_test_process_is_found_by_its_program_name() {
    let name = own_program_name();
    let out = call("process", json!({"name": name}), &[SystemFact::Processes])
        .await
        .unwrap();
    assert_eq!(out["status"], "ok", "{out}");
    let comm = std::fs::read_to_string("/proc/self/comm").unwrap();
    assert_eq!(out["facts"]["name"], comm.trim_end());
    assert!(
        out["facts"]["pids"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p == std::process::id()),
        "{out}"
    );
    assert!(out["facts"]["rss_bytes"].as_u64().unwrap() > 0, "{out}");
    // Others may run the same test binary at once, so only an upper bound is certain.
    let out = call(
        "process",
        json!({"name": name, "max": 0, "min": 0}),
        &[SystemFact::Processes],
    )
    .await
    .unwrap();
    assert_eq!(out["status"], "critical", "{out}");
    assert!(
        out["detail"]
            .as_str()
            .unwrap()
            .ends_with("expected at most 0"),
        "{out}"
    );
}

#[tokio::test]
async fn a_process_that_is_not_running_is_critical() {
    let out = call(
        "process",
        json!({"name": "no-such-daemon"}),
        &[SystemFact::Processes],
    )
    .await
    .unwrap();
    assert_eq!(out["status"], "critical", "{out}");
    assert_eq!(out["value"], 0.0);
    assert_eq!(
        out["detail"],
        "no process named `no-such-daemon` is running, expected at least 1"
    );
}

#[tokio::test]
async fn each_action_needs_its_own_system_grant() {
    for (action, input, needs) in [
        ("memory", json!({}), SystemFact::Memory),
        ("load", json!({}), SystemFact::Load),
        ("process", json!({"name": "init"}), SystemFact::Processes),
    ] {
        let err = call(action, input.clone(), &[]).await.unwrap_err();
        assert_eq!(
            err.to_string(),
            format!(
                "plugin `host-check` may not read system facts `{}`: not granted",
                needs.name()
            )
        );
        let others: Vec<SystemFact> = [SystemFact::Memory, SystemFact::Load, SystemFact::Processes]
            .into_iter()
            .filter(|f| *f != needs)
            .collect();
        assert!(
            matches!(
                call(action, input, &others).await,
                Err(CallError::Denied { .. })
            ),
            "{action} with only the other grants"
        );
    }
}
