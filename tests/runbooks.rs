//! The runbooks in `runbooks/`, validated against the engine configuration they are written
//! for and run end to end: each is copied unchanged into a node started in process (real
//! plugins, a real SQLite store) whose `runloom.toml` grants it scratch directories, and runs
//! against real local targets — old files to clean, archives made by the backup plugin, a
//! stand-in package manager, TLS servers with short-lived certificates, and HTTP servers on
//! 127.0.0.1 as the service and as the notification receiver, which records what it was sent.

use crate::patch::{calls as apt_calls, fake_apt};
use crate::scratch::{ScratchDir, write_executable};
use crate::support::{cache_dir, start_node, wait_for};
use crate::tls_check::expiring_in;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use runloom::node::{IntakeReport, Node};
use runloom::run::{RunRecord, RunStatus};
use serde_json::{Value, json};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

const FIRING: &str = include_str!("cases/alertmanager/firing.json");
const RESOLVED: &str = include_str!("cases/alertmanager/resolved.json");
const MIB: u64 = 1 << 20;

fn repository() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// What the notification receiver was sent: each JSON body posted to it, in order.
type Inbox = Arc<Mutex<Vec<Value>>>;

async fn receiver() -> (SocketAddr, Inbox) {
    async fn receive(State(inbox): State<Inbox>, body: Bytes) -> StatusCode {
        let body = serde_json::from_slice(&body).unwrap_or(Value::Null);
        inbox.lock().unwrap().push(body);
        StatusCode::OK
    }
    let inbox: Inbox = Arc::default();
    let app = axum::Router::new()
        .fallback(axum::routing::post(receive))
        .with_state(inbox.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (addr, inbox)
}

/// A node running copies of some of the repository's runbooks, with `grants` (a part of
/// `runloom.toml`, `{dir}` standing for the scratch directory) and a notification receiver
/// behind the `notify-webhook` secret.
struct Site {
    dir: ScratchDir,
    node: Arc<Node>,
    inbox: Inbox,
}

impl Site {
    async fn start(runbooks: &[&str], grants: &str) -> Site {
        let dir = ScratchDir::new(&format!("runbook-{}", runbooks[0]));
        for name in runbooks {
            let from = repository().join("runbooks").join(name);
            let to = dir.join("runbooks").join(name);
            std::fs::create_dir_all(&to).unwrap();
            for file in ["runbook.toml", "main.rhai"] {
                std::fs::copy(from.join(file), to.join(file)).unwrap();
            }
        }
        let (addr, inbox) = receiver().await;
        std::fs::write(dir.join("notify-webhook"), format!("http://{addr}/hook")).unwrap();
        let config = format!(
            "version = 1\ndata_dir = \"data\"\nrunbook_dir = \"runbooks\"\n{}\n\
             [plugins.notify]\nhosts = [\"{addr}\"]\n\
             [secrets.notify-webhook]\nfile = \"{{dir}}/notify-webhook\"\n",
            grants.trim()
        )
        .replace("{dir}", &dir.path().display().to_string());
        std::fs::write(dir.join("runloom.toml"), config).unwrap();
        std::fs::create_dir_all(dir.join("data")).unwrap();
        // Share compiled plugins with the rest of the suite.
        std::fs::create_dir_all(cache_dir()).unwrap();
        std::os::unix::fs::symlink(cache_dir(), dir.join("data/cache")).unwrap();
        let node = start_node(dir.path(), 2, Duration::from_secs(5)).await;
        Site { dir, node, inbox }
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.dir.join(rel)
    }

    /// A manual run of `runbook` with `params`, to its end.
    async fn run(&self, runbook: &str, params: Value, dry_run: bool) -> RunRecord {
        let params = params.as_object().cloned().unwrap_or_default();
        let run = self.node.submit(runbook, params, dry_run).await.unwrap();
        self.finished(&run.id).await
    }

    async fn finished(&self, id: &str) -> RunRecord {
        wait_for(Duration::from_secs(60), || async {
            let r = self.node.store.get_run(id).await.unwrap();
            r.status.is_final().then_some(r)
        })
        .await
    }

    async fn alert(&self, body: &str) -> IntakeReport {
        self.node
            .ingest_alertmanager(body.as_bytes())
            .await
            .unwrap()
    }

    /// The names of the run's named steps (not the plugin calls inside them), in order.
    async fn step_names(&self, run: &RunRecord) -> Vec<String> {
        let steps = self.node.store.steps(&run.id).await.unwrap();
        steps
            .into_iter()
            .filter(|s| s.kind == "group")
            .map(|s| s.name)
            .collect()
    }

    fn notifications(&self) -> Vec<Value> {
        self.inbox.lock().unwrap().clone()
    }
}

fn succeeded(run: &RunRecord) {
    assert_eq!(
        run.status,
        RunStatus::Succeeded,
        "{:?}: {:?}",
        run.status,
        run.reason
    );
}

fn output(run: &RunRecord) -> &Value {
    run.output.as_ref().expect("the run has an output")
}

/// `FIRING` with the alert's labels (and the common labels) replaced, and `annotations`.
fn firing_alert(labels: Value, annotations: Value, fingerprint: &str) -> String {
    let mut body: Value = serde_json::from_str(FIRING).unwrap();
    body["alerts"][0]["labels"] = labels.clone();
    body["alerts"][0]["annotations"] = annotations.clone();
    body["alerts"][0]["fingerprint"] = json!(fingerprint);
    body["commonLabels"] = labels.clone();
    body["groupLabels"] = json!({ "alertname": labels["alertname"] });
    body["commonAnnotations"] = annotations;
    body.to_string()
}

/// `len` bytes written to `path`, last modified `age` ago.
fn old_file(path: &Path, len: usize, age: Duration) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, vec![b'x'; len]).unwrap();
    let file = std::fs::File::options().write(true).open(path).unwrap();
    file.set_modified(std::time::SystemTime::now() - age)
        .unwrap();
}

const DAY: Duration = Duration::from_secs(86_400);

// ---------------------------------------------------------------------------------------------
// All of them

const RUNBOOKS: [&str; 7] = [
    "disk-space-low",
    "service-down",
    "nightly-backup",
    "restore-drill",
    "patch-window",
    "cert-expiry",
    "capacity-report",
];

#[test]
fn the_runbooks_are_valid_against_the_engine_config_they_are_written_for() {
    let data = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("runbooks-validate");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_runloom"))
        .current_dir(repository())
        .env_remove("RUNLOOM_CONFIG")
        .args(["--data-dir", &data.display().to_string()])
        .args(["--config", "runbooks/runloom.toml", "validate", "runbooks"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{text}");
    // hello, hello-wasm and the seven operational runbooks.
    assert_eq!(text, "ok: 9 runbooks and 11 plugins are valid\n");
    for name in RUNBOOKS {
        let dir = repository().join("runbooks").join(name);
        let toml = std::fs::read_to_string(dir.join("runbook.toml")).unwrap();
        let rhai = std::fs::read_to_string(dir.join("main.rhai")).unwrap();
        // Each says what it does, its parameters, its grants and how to adapt it.
        for heading in [
            format!("# {name}: "),
            "# Parameters: ".into(),
            "# Grants (see runbooks/runloom.toml):".into(),
            "# Adapt it: ".into(),
        ] {
            assert!(
                toml.contains(&heading),
                "{name}/runbook.toml lacks `{heading}`"
            );
        }
        assert!(
            rhai.starts_with(&format!("// {name}: ")),
            "{name}/main.rhai"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// disk-space-low

const DISK_GRANTS: &str = r#"
[plugins.disk-check]
dirs = ["{dir}/tmp:/cleanup/tmp:ro"]
[plugins.remediate]
dirs = ["{dir}/tmp:/cleanup/tmp:rw", "{dir}/logs:/cleanup/logs:rw"]
"#;

/// Old and new files in the two directories disk-space-low cleans: 3 MiB and 64 KiB of old
/// files (5 of them), and new ones that must stay.
fn fill_disk(site: &Site) -> Vec<PathBuf> {
    let old = [
        ("tmp/cache-1.bin", MIB),
        ("tmp/cache-2.bin", MIB),
        ("tmp/nested/cache-3.bin", MIB),
        ("logs/app.log.3.gz", 32 << 10),
        ("logs/app.log.2.gz", 32 << 10),
    ];
    for (rel, len) in old {
        old_file(&site.path(rel), len as usize, 10 * DAY);
    }
    for rel in ["tmp/fresh.bin", "logs/app.log"] {
        old_file(&site.path(rel), 1000, Duration::from_secs(60));
    }
    old.iter().map(|(rel, _)| site.path(rel)).collect()
}

#[tokio::test]
async fn disk_space_low_cleans_up_when_the_alert_fires_and_notifies_what_it_freed() {
    let site = Site::start(&["disk-space-low"], DISK_GRANTS).await;
    let old = fill_disk(&site);

    let report = site.alert(FIRING).await;
    assert_eq!((report.new, report.runs.len()), (1, 1), "{report:?}");
    let run = site.finished(&report.runs[0].id).await;
    succeeded(&run);
    assert_eq!(run.trigger_kind, "alert");
    assert_eq!(run.params["mountpoint"], "/var");
    assert_eq!(
        site.step_names(&run).await,
        ["measure", "clean up", "verify", "notify"]
    );

    // The old files are gone, the new ones stay.
    for path in &old {
        assert!(!path.exists(), "{} was not deleted", path.display());
    }
    assert!(site.path("tmp/fresh.bin").exists());
    assert!(site.path("logs/app.log").exists());

    let freed = 3 * MIB + (64 << 10);
    let out = output(&run);
    assert_eq!(out["status"], "resolved", "{out}");
    assert_eq!(out["freed_bytes"], freed);
    assert_eq!(out["files_deleted"], 5);

    let sent = site.notifications();
    assert_eq!(sent.len(), 1, "{sent:#?}");
    let body = &sent[0];
    assert_eq!(body["runbook"], "disk-space-low");
    assert_eq!(body["status"], "resolved");
    assert_eq!(body["freed_bytes"], freed);
    assert_eq!(
        body["details"],
        json!([
            "/cleanup/tmp: deleted 3 files (3.0 MiB)",
            "/cleanup/logs: deleted 2 files (64.0 KiB)"
        ])
    );
    let text = body["text"].as_str().unwrap();
    assert!(
        text.starts_with("disk-space-low: /var on 127.0.0.1:57265 was ")
            && text.contains("Deleted 5 files older than 7d, freeing 3.1 MiB; now "),
        "{text}"
    );

    // Alertmanager repeats the notification: the episode already has its run. Then it
    // resolves.
    let again = site.alert(FIRING).await;
    assert_eq!((again.duplicates, again.runs.len()), (1, 0), "{again:?}");
    let resolved = site.alert(RESOLVED).await;
    assert_eq!((resolved.resolved, resolved.runs.len()), (1, 0));
    assert_eq!(site.notifications().len(), 1);
}

#[tokio::test]
async fn disk_space_low_in_a_dry_run_lists_what_it_would_delete_and_deletes_nothing() {
    let site = Site::start(&["disk-space-low"], DISK_GRANTS).await;
    let old = fill_disk(&site);
    let run = site.run("disk-space-low", json!({}), true).await;
    succeeded(&run);
    let out = output(&run);
    assert_eq!(out["status"], "planned");
    assert_eq!(
        out["details"],
        json!([
            "/cleanup/tmp: would delete 3 files (3.0 MiB)",
            "/cleanup/logs: would delete 2 files (64.0 KiB)"
        ])
    );
    assert!(old.iter().all(|p| p.exists()));
    assert!(
        site.notifications().is_empty(),
        "a dry-run plans the notice"
    );
}

#[tokio::test]
async fn disk_space_low_fails_and_says_so_when_the_disk_is_still_too_full() {
    let site = Site::start(&["disk-space-low"], DISK_GRANTS).await;
    fill_disk(&site);
    // No filesystem is below 0% used: the cleanup cannot reach the target.
    let run = site
        .run("disk-space-low", json!({"target_percent": 0}), false)
        .await;
    assert_eq!(run.status, RunStatus::Failed);
    assert_eq!(run.error_kind.as_deref(), Some("fail"));
    let sent = site.notifications();
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0]["status"], "still-low");
    assert_eq!(sent[0]["files_deleted"], 5);
    let text = sent[0]["text"].as_str().unwrap();
    assert!(
        text.ends_with("Still at or above 0%: needs a human."),
        "{text}"
    );
    assert!(run.reason.as_deref().unwrap().contains(text), "{run:?}");
}

// ---------------------------------------------------------------------------------------------
// service-down

/// A service on 127.0.0.1 whose `/health` answers 200 once `marker` exists, 503 before.
async fn service(marker: PathBuf) -> SocketAddr {
    let app = axum::Router::new().route(
        "/health",
        axum::routing::get(move || {
            let up = marker.exists();
            async move {
                if up {
                    (StatusCode::OK, "ok")
                } else {
                    (StatusCode::SERVICE_UNAVAILABLE, "starting")
                }
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    addr
}

const SERVICE_GRANTS: &str = r#"
[plugins.http-check]
hosts = ["127.0.0.1:*"]
[plugins.remediate]
commands = ["{dir}/restart-app *", "{dir}/restart-broken *"]
"#;

/// Stand-in restart programs: `restart-app` brings the service up, `restart-broken` does
/// not. Both record their arguments in `restarts`.
fn restart_programs(site: &Site) {
    let d = site.dir.path().display();
    write_executable(
        &site.path("restart-app"),
        &format!("#!/bin/sh\necho \"$*\" >> {d}/restarts\ntouch {d}/up\n"),
    );
    write_executable(
        &site.path("restart-broken"),
        &format!("#!/bin/sh\necho \"$*\" >> {d}/restarts\n"),
    );
}

#[tokio::test]
async fn service_down_restarts_the_service_verifies_it_over_http_and_reports_recovery() {
    let site = Site::start(&["service-down"], SERVICE_GRANTS).await;
    restart_programs(&site);
    let addr = service(site.path("up")).await;
    let url = format!("http://{addr}/health");

    // A blackbox-exporter style alert: `instance` is the probed URL; the rule names the unit
    // and, for a service systemd does not run, how to restart it.
    let body = firing_alert(
        json!({"alertname": "ServiceDown", "instance": url, "job": "blackbox",
               "unit": "app.service", "severity": "critical"}),
        json!({"summary": "app is not answering",
               "restart_command": format!("{},{{unit}}", site.path("restart-app").display())}),
        "5a3f0c1d2e4b6a79",
    );
    let report = site.alert(&body).await;
    assert_eq!(report.runs.len(), 1, "{report:?}");
    let run = site.finished(&report.runs[0].id).await;
    succeeded(&run);
    assert_eq!(
        std::fs::read_to_string(site.path("restarts")).unwrap(),
        "app.service\n"
    );
    assert_eq!(site.step_names(&run).await, ["restart", "verify", "notify"]);
    assert_eq!(output(&run)["recovered"], true);
    let sent = site.notifications();
    assert_eq!(sent.len(), 1, "{sent:#?}");
    assert_eq!(sent[0]["status"], "recovered");
    assert_eq!(sent[0]["unit"], "app.service");
    // The node kept compiled code only for the plugins its one runbook declares; the others
    // are listed, not callable.
    let registry = &site.node.registry;
    let callable: Vec<&str> = registry
        .plugins()
        .filter(|p| p.has_code())
        .map(|p| p.name())
        .collect();
    assert_eq!(callable, ["http-check", "notify", "remediate"]);
    assert!(registry.get("hello").is_some_and(|p| !p.has_code()));
    let text = sent[0]["text"].as_str().unwrap();
    assert!(
        text.starts_with(&format!(
            "service-down: restarted app.service; {url} answers again (GET {url} returned 200"
        )),
        "{text}"
    );
}

#[tokio::test]
async fn service_down_escalates_when_the_service_is_still_down_after_the_restart() {
    let site = Site::start(&["service-down"], SERVICE_GRANTS).await;
    restart_programs(&site);
    let addr = service(site.path("up")).await;
    let url = format!("http://{addr}/health");
    let run = site
        .run(
            "service-down",
            json!({
                "unit": "app.service",
                "url": url,
                "restart_command": [site.path("restart-broken").display().to_string(), "{unit}"],
                "verify_attempts": 3,
                "verify_interval": "50ms",
            }),
            false,
        )
        .await;
    assert_eq!(run.status, RunStatus::Failed);
    assert_eq!(
        std::fs::read_to_string(site.path("restarts")).unwrap(),
        "app.service\n"
    );
    assert_eq!(
        site.step_names(&run).await,
        ["restart", "verify", "escalate"]
    );
    let checks = site
        .node
        .store
        .steps(&run.id)
        .await
        .unwrap()
        .iter()
        .filter(|s| s.name == "http-check.check")
        .count();
    assert_eq!(checks, 3);
    let sent = site.notifications();
    assert_eq!(sent.len(), 1, "{sent:#?}");
    assert_eq!(sent[0]["status"], "escalated");
    assert_eq!(sent[0]["checks"], 3);
    let text = sent[0]["text"].as_str().unwrap();
    assert!(
        text.starts_with(&format!(
            "service-down: ESCALATION: app.service is still down; {url} failed 3 checks after the restart (last: GET {url} returned 503"
        )),
        "{text}"
    );
}

// ---------------------------------------------------------------------------------------------
// nightly-backup and restore-drill

const BACKUP_GRANTS: &str = r#"
[plugins.backup]
dirs = ["{dir}/source:/backup/source:ro", "{dir}/archives:/backup/archives:rw", "{dir}/drill:/restore-drill:rw"]
[plugins.remediate]
dirs = ["{dir}/drill:/restore-drill:rw"]
"#;

fn source_tree(site: &Site) {
    let write = |rel: &str, text: &str| {
        let path = site.path(&format!("source/{rel}"));
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    };
    write("conf/app.toml", "port = 8080\n");
    write("data/orders.csv", &"42,widget,3\n".repeat(5000));
    write("data/empty.log", "");
    std::fs::create_dir_all(site.path("archives")).unwrap();
    std::fs::create_dir_all(site.path("drill")).unwrap();
}

/// Files (relative path → content) under `root`, symlinks and directories left out.
fn tree(root: &Path) -> std::collections::BTreeMap<String, Vec<u8>> {
    fn walk(root: &Path, dir: &Path, out: &mut std::collections::BTreeMap<String, Vec<u8>>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            let meta = std::fs::symlink_metadata(&path).unwrap();
            if meta.is_dir() {
                walk(root, &path, out);
            } else if meta.is_file() {
                let rel = path.strip_prefix(root).unwrap().display().to_string();
                out.insert(rel, std::fs::read(&path).unwrap());
            }
        }
    }
    let mut out = Default::default();
    walk(root, root, &mut out);
    out
}

/// Move an archive and its manifest to the name they would have had `age` ago.
fn age_archive(site: &Site, guest_archive: &Value, age: Duration) -> PathBuf {
    let name = Path::new(guest_archive.as_str().unwrap())
        .file_name()
        .unwrap()
        .to_str()
        .unwrap()
        .to_string();
    let stamp = chrono::Utc::now() - chrono::Duration::from_std(age).unwrap();
    let new_name = format!("app-{}.tar.zst", stamp.format("%Y%m%dT%H%M%SZ"));
    let dir = site.path("archives");
    std::fs::rename(dir.join(&name), dir.join(&new_name)).unwrap();
    std::fs::rename(
        dir.join(format!("{name}.manifest.jsonl")),
        dir.join(format!("{new_name}.manifest.jsonl")),
    )
    .unwrap();
    dir.join(new_name)
}

fn archives(site: &Site) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(site.path("archives"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".tar.zst"))
        .collect();
    names.sort();
    names
}

#[tokio::test]
async fn nightly_backup_archives_verifies_and_applies_retention_quietly() {
    let site = Site::start(&["nightly-backup"], BACKUP_GRANTS).await;
    source_tree(&site);
    // Four earlier nights, made by the runbook itself and moved back in time.
    let mut earlier = Vec::new();
    for night in 1..=4 {
        let run = site.run("nightly-backup", json!({}), false).await;
        succeeded(&run);
        earlier.push(age_archive(&site, &output(&run)["archive"], night * DAY));
    }
    assert_eq!(archives(&site).len(), 4);

    let run = site
        .run(
            "nightly-backup",
            json!({"keep_last": 2, "keep_daily": 0, "keep_weekly": 0}),
            false,
        )
        .await;
    succeeded(&run);
    assert_eq!(
        site.step_names(&run).await,
        ["back up", "verify", "retention"]
    );
    let out = output(&run);
    assert_eq!(out["files"], 3);
    // Three files and two directories (conf, data).
    assert_eq!(out["verified_entries"], 5);
    // Kept: tonight's and last night's; the three before are deleted.
    assert_eq!(out["kept"], 2);
    let tonight = Path::new(out["archive"].as_str().unwrap())
        .file_name()
        .unwrap()
        .to_string_lossy()
        .into_owned();
    let last_night = earlier[0]
        .file_name()
        .unwrap()
        .to_string_lossy()
        .into_owned();
    let mut expected = vec![last_night, tonight];
    expected.sort();
    assert_eq!(archives(&site), expected);
    let deleted: Vec<&str> = out["deleted"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap())
        .collect();
    assert_eq!(deleted.len(), 3, "{deleted:?}");
    assert!(earlier[1..].iter().all(|p| !p.exists()));
    assert!(
        site.notifications().is_empty(),
        "a good night is not notified"
    );
}

#[tokio::test]
async fn a_failed_nightly_backup_is_notified_and_fails_the_run() {
    let site = Site::start(&["nightly-backup"], BACKUP_GRANTS).await;
    source_tree(&site);
    // The disk holding the data is gone.
    std::fs::remove_dir_all(site.path("source")).unwrap();
    let run = site.run("nightly-backup", json!({}), false).await;
    assert_eq!(run.status, RunStatus::Failed);
    assert_eq!(site.step_names(&run).await, ["back up", "notify"]);
    assert!(archives(&site).is_empty());
    let sent = site.notifications();
    assert_eq!(sent.len(), 1, "{sent:#?}");
    assert_eq!(sent[0]["status"], "failed");
    let text = sent[0]["text"].as_str().unwrap();
    assert!(
        text.starts_with("nightly-backup: backing up /backup/source (set app) FAILED: ")
            && text.contains("No such file or directory"),
        "{text}"
    );
}

#[tokio::test]
async fn restore_drill_restores_the_newest_backup_into_scratch_and_verifies_it() {
    let site = Site::start(&["nightly-backup", "restore-drill"], BACKUP_GRANTS).await;
    source_tree(&site);
    let first = site.run("nightly-backup", json!({}), false).await;
    succeeded(&first);
    age_archive(&site, &output(&first)["archive"], DAY);
    // The next night, the data has changed: the drill must restore this one.
    std::fs::write(site.path("source/data/new.csv"), "7,gadget,1\n").unwrap();
    let second = site.run("nightly-backup", json!({}), false).await;
    succeeded(&second);

    let run = site
        .run("restore-drill", json!({"keep_restored": true}), false)
        .await;
    succeeded(&run);
    assert_eq!(
        site.step_names(&run).await,
        ["find the latest backup", "restore", "verify"]
    );
    let out = output(&run);
    assert_eq!(out["archive"], output(&second)["archive"]);
    assert_eq!(out["files"], 4);
    let target = out["target"].as_str().unwrap();
    let restored = site.path(&format!(
        "drill/{}",
        target.strip_prefix("/restore-drill/").unwrap()
    ));
    assert_eq!(tree(&restored), tree(&site.path("source")));

    // By default the restored files are deleted once verified.
    let run = site.run("restore-drill", json!({}), false).await;
    succeeded(&run);
    assert_eq!(
        site.step_names(&run).await,
        ["find the latest backup", "restore", "verify", "clean up"]
    );
    let target = output(&run)["target"].as_str().unwrap().to_string();
    let restored = site.path(&format!(
        "drill/{}",
        target.strip_prefix("/restore-drill/").unwrap()
    ));
    assert!(restored.is_dir());
    assert!(tree(&restored).is_empty());
    assert!(site.notifications().is_empty());
}

#[tokio::test]
async fn a_drill_on_a_corrupt_or_stale_backup_fails_and_is_notified() {
    let site = Site::start(&["nightly-backup", "restore-drill"], BACKUP_GRANTS).await;
    source_tree(&site);
    let backup = site.run("nightly-backup", json!({}), false).await;
    succeeded(&backup);

    // Flip one byte in the middle of the archive.
    let archive = age_archive(
        &site,
        &output(&backup)["archive"],
        Duration::from_secs(3600),
    );
    let mut bytes = std::fs::read(&archive).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0xff;
    std::fs::write(&archive, bytes).unwrap();
    let run = site.run("restore-drill", json!({}), false).await;
    assert_eq!(run.status, RunStatus::Failed);
    assert_eq!(
        site.step_names(&run).await,
        ["find the latest backup", "restore", "notify"]
    );
    let sent = site.notifications();
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0]["status"], "failed");
    let text = sent[0]["text"].as_str().unwrap();
    assert!(
        text.starts_with("restore-drill: the drill for backup set app FAILED: "),
        "{text}"
    );
    assert!(text.contains("does not match its manifest"), "{text}");

    // Backups that stopped three days ago fail the drill before anything is restored.
    std::fs::remove_file(&archive).unwrap();
    let fresh = site.run("nightly-backup", json!({}), false).await;
    succeeded(&fresh);
    age_archive(&site, &output(&fresh)["archive"], 3 * DAY);
    let run = site.run("restore-drill", json!({}), false).await;
    assert_eq!(run.status, RunStatus::Failed);
    assert_eq!(
        site.step_names(&run).await,
        ["find the latest backup", "notify"]
    );
    let sent = site.notifications();
    assert_eq!(sent.len(), 2);
    let text = sent[1]["text"].as_str().unwrap();
    assert!(text.contains("older than 48 hours"), "{text}");
}

// ---------------------------------------------------------------------------------------------
// patch-window

/// Window parameters that put now inside (or outside) the maintenance window.
fn window(inside: bool) -> Value {
    use chrono::Datelike;
    let day = |d: chrono::DateTime<chrono::Utc>| d.format("%a").to_string().to_lowercase();
    let now = chrono::Utc::now();
    let days = if inside {
        // Today and tomorrow, in case midnight passes meanwhile.
        vec![day(now), day(now + chrono::Duration::days(1))]
    } else {
        vec![day(now + chrono::Duration::days(3))]
    };
    assert!(inside || now.weekday() != (now + chrono::Duration::days(3)).weekday());
    json!({"window_days": days, "window_hours": "00-24"})
}

fn patch_grants(apt: &str) -> String {
    format!(
        r#"
[plugins.patch]
commands = ["{apt} -s upgrade", "{apt} -y **"]
dirs = ["{{dir}}/run:/var/run:ro"]
"#
    )
}

/// `params` plus the stand-in apt and the window.
fn patch_params(apt: &str, inside: bool, params: Value) -> Value {
    let mut all = window(inside);
    all["manager"] = json!("apt");
    all["program"] = json!(apt);
    all.as_object_mut()
        .unwrap()
        .extend(params.as_object().unwrap().clone());
    all
}

#[tokio::test]
async fn patch_window_reports_by_default_and_flags_a_needed_reboot() {
    let apt_dir = ScratchDir::new("runbook-apt");
    let apt = fake_apt(&apt_dir);
    let site = Site::start(&["patch-window"], &patch_grants(&apt)).await;
    std::fs::create_dir_all(site.path("run")).unwrap();
    std::fs::write(
        site.path("run/reboot-required"),
        "*** System restart required ***\n",
    )
    .unwrap();
    std::fs::write(site.path("run/reboot-required.pkgs"), "libc6\n").unwrap();

    let run = site
        .run("patch-window", patch_params(&apt, true, json!({})), false)
        .await;
    succeeded(&run);
    assert_eq!(apt_calls(&apt_dir), ["-s upgrade"], "nothing applied");
    assert_eq!(
        site.step_names(&run).await,
        ["list", "reboot needed?", "notify"]
    );
    let out = output(&run);
    assert_eq!(
        (
            &out["pending"],
            &out["pending_security"],
            &out["applied"],
            &out["in_window"]
        ),
        (&json!(3), &json!(2), &json!(false), &json!(true))
    );
    assert_eq!(out["skipped"], "report only (set apply = true to apply)");
    assert_eq!(out["reboot_required"], true);
    assert_eq!(out["reboot_reasons"], json!(["libc6"]));
    let sent = site.notifications();
    assert_eq!(sent.len(), 1);
    assert_eq!(
        sent[0]["text"],
        "patch-window: 3 updates pending, none applied: report only (set apply = true to apply). REBOOT REQUIRED ([\"libc6\"])."
    );

    // A dry-run of an apply plans it without running the package manager.
    let run = site
        .run(
            "patch-window",
            patch_params(&apt, true, json!({"apply": true})),
            true,
        )
        .await;
    succeeded(&run);
    assert_eq!(output(&run)["planned"], true);
    assert_eq!(apt_calls(&apt_dir), ["-s upgrade", "-s upgrade"]);
}

#[tokio::test]
async fn patch_window_applies_inside_the_window_when_told_to_and_never_outside() {
    let apt_dir = ScratchDir::new("runbook-apt");
    let apt = fake_apt(&apt_dir);
    let site = Site::start(&["patch-window"], &patch_grants(&apt)).await;
    std::fs::create_dir_all(site.path("run")).unwrap();

    let run = site
        .run(
            "patch-window",
            patch_params(&apt, false, json!({"apply": true})),
            false,
        )
        .await;
    succeeded(&run);
    assert_eq!(apt_calls(&apt_dir), ["-s upgrade"]);
    let out = output(&run);
    assert_eq!(out["applied"], false);
    assert!(
        out["skipped"]
            .as_str()
            .unwrap()
            .starts_with("outside the maintenance window"),
        "{out}"
    );
    assert!(site.notifications().is_empty());

    let run = site
        .run(
            "patch-window",
            patch_params(&apt, true, json!({"apply": true, "security_only": true})),
            false,
        )
        .await;
    succeeded(&run);
    assert_eq!(
        site.step_names(&run).await,
        ["list", "apply", "reboot needed?", "notify"]
    );
    let out = output(&run);
    assert_eq!(out["applied"], true);
    assert_eq!(out["upgraded"], json!(["libssl3", "openssl"]));
    assert_eq!(out["reboot_required"], false);
    let calls = apt_calls(&apt_dir);
    let installs: Vec<&String> = calls.iter().filter(|c| c.contains(" install ")).collect();
    assert_eq!(installs.len(), 1, "{calls:?}");
    assert!(
        installs[0].ends_with("install --only-upgrade libssl3 openssl"),
        "{calls:?}"
    );
    let sent = site.notifications();
    assert_eq!(sent.len(), 1);
    assert_eq!(
        sent[0]["text"],
        "patch-window: applied 2 updates ([\"libssl3\", \"openssl\"]), 0 failed to apply. No reboot needed."
    );
}

// ---------------------------------------------------------------------------------------------
// cert-expiry

#[tokio::test]
async fn cert_expiry_notifies_the_certificates_expiring_within_n_days() {
    let site = Site::start(
        &["cert-expiry"],
        "[plugins.tls-check]\nhosts = [\"localhost:*\"]\n",
    )
    .await;
    let soon = expiring_in(10).await;
    let later = expiring_in(100).await;
    let expired = expiring_in(-2).await;
    let endpoints = [soon, later, expired].map(|p| format!("localhost:{p}"));

    let run = site
        .run(
            "cert-expiry",
            json!({"endpoints": endpoints, "days": 30, "allow_untrusted": true}),
            false,
        )
        .await;
    succeeded(&run);
    let out = output(&run);
    assert_eq!(out["checked"], 3);
    let listed: Vec<(&str, f64)> = out["expiring"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["endpoint"].as_str().unwrap(),
                e["days_left"].as_f64().unwrap(),
            )
        })
        .collect();
    assert_eq!(listed.len(), 2, "{out}");
    assert_eq!(listed[0].0, endpoints[2], "expired first");
    assert!((listed[0].1 + 2.0).abs() <= 0.1, "{listed:?}");
    assert_eq!(listed[1].0, endpoints[0]);
    assert!((listed[1].1 - 10.0).abs() <= 0.1, "{listed:?}");

    let sent = site.notifications();
    assert_eq!(sent.len(), 1);
    let text = sent[0]["text"].as_str().unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(
        lines[0],
        "cert-expiry: 2 of 3 certificates expire within 30 days:"
    );
    assert!(
        lines[1].starts_with(&format!("{}: EXPIRED on ", endpoints[2])),
        "{text}"
    );
    assert!(
        lines[2].starts_with(&format!("{}: expires in 10", endpoints[0])),
        "{text}"
    );
    assert_eq!(lines.len(), 3, "{text}");

    // Nothing within 5 days but the expired one; an endpoint that does not answer fails the
    // run and is named.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let closed_port = closed.local_addr().unwrap().port();
    drop(closed);
    let run = site
        .run(
            "cert-expiry",
            json!({
                "endpoints": [endpoints[1].clone(), format!("localhost:{closed_port}")],
                "days": 5,
                "allow_untrusted": true,
            }),
            false,
        )
        .await;
    assert_eq!(run.status, RunStatus::Failed);
    let sent = site.notifications();
    assert_eq!(sent.len(), 2);
    let text = sent[1]["text"].as_str().unwrap();
    assert!(
        text.starts_with(
            "cert-expiry: 0 of 2 certificates expire within 5 days, 1 endpoint could not be checked:\n"
        ) && text.contains(&format!("localhost:{closed_port}: could not be checked: ")),
        "{text}"
    );
}

// ---------------------------------------------------------------------------------------------
// capacity-report

#[tokio::test]
async fn capacity_report_fits_a_trend_through_its_history_and_estimates_when_full() {
    // tmpfs: its usage is exactly what this test writes, whatever else the machine does.
    let shm = Path::new("/dev/shm");
    if !shm.is_dir() {
        eprintln!("skipped: this machine has no /dev/shm");
        return;
    }
    let data = shm.join(format!("runloom-capacity-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&data);
    std::fs::create_dir_all(&data).unwrap();
    struct Cleanup(PathBuf);
    impl Drop for Cleanup {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
    let _cleanup = Cleanup(data.clone());
    let grants = format!(
        "[plugins.disk-check]\ndirs = [\"{}:/capacity/var:ro\"]\n[plugins.host-check]\nsystem = [\"memory\"]\n",
        data.display()
    );
    let site = Site::start(&["capacity-report"], &grants).await;
    // 4 MiB a day: four days fit in the 64 MiB /dev/shm of a default Docker container.
    let grow = |n: u32| std::fs::write(data.join(format!("day-{n}")), vec![1u8; 4 << 20]);

    // Three earlier days, 4 MiB more each day.
    let mut earlier = Vec::new();
    for day in 1..=3 {
        grow(day).unwrap();
        let run = site.run("capacity-report", json!({}), false).await;
        succeeded(&run);
        let trend = &output(&run)["trends"][0];
        assert_eq!(trend["resource"], "disk /capacity/var");
        assert!(
            trend["estimate"]
                .as_str()
                .unwrap()
                .starts_with(&format!("collecting: {day} samples")),
            "{trend}"
        );
        earlier.push(run.id);
    }
    // They ran a moment ago; move them to 3, 2 and 1 days ago.
    let pool = sqlx::SqlitePool::connect(&site.node.config.store_url())
        .await
        .unwrap();
    let now = chrono::Utc::now().timestamp_millis();
    for (i, id) in earlier.iter().enumerate() {
        let days_ago = 3 - i as i64;
        sqlx::query("UPDATE runs SET started_at = ? WHERE id = ?")
            .bind(now - days_ago * 86_400_000)
            .bind(id)
            .execute(&pool)
            .await
            .unwrap();
    }

    grow(4).unwrap();
    let run = site.run("capacity-report", json!({}), false).await;
    succeeded(&run);
    let out = output(&run);
    let disk = &out["trends"][0];
    assert_eq!(disk["samples"], 4, "{out:#}");
    assert_eq!(disk["span_days"], 3.0);
    let growth = disk["growth_bytes_per_day"].as_f64().unwrap();
    let expected = (4 << 20) as f64;
    assert!(
        (growth - expected).abs() < expected * 0.02,
        "growth {growth} B/day, expected {expected}: {out:#}"
    );
    let free = disk["capacity_bytes"].as_f64().unwrap() - disk["used_bytes"].as_f64().unwrap();
    let full_in = disk["full_in_days"].as_f64().unwrap();
    assert!(
        (full_in - free / expected).abs() <= free / expected * 0.02 + 0.1,
        "full in {full_in} days, expected about {}: {out:#}",
        free / expected
    );
    let estimate = disk["estimate"].as_str().unwrap();
    assert!(
        estimate.starts_with("+4.0 MiB/day over 3.0 days: full in "),
        "{estimate}"
    );
    let memory = &out["trends"][1];
    assert_eq!(memory["resource"], "memory");
    assert_eq!(memory["samples"], 4);
    assert!(
        out["report"][0].as_str().unwrap().contains(estimate),
        "{out:#}"
    );
}
