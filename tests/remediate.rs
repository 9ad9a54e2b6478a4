//! `remediate` on real files in scratch directories, real child processes, and a stand-in
//! service manager (this container has no systemd): each fix does what it says, reports it,
//! and stays inside its grants.

use crate::scratch::{ScratchDir, write_executable};
use crate::support::{builtin, host};
use runloom::grant::{Grants, SystemFact};
use runloom::plugin::{ActionKind, CallError, CallRequest};
use serde_json::{Value, json};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

async fn call(action: &str, input: Value, grants: Grants) -> Result<Value, CallError> {
    let host = host();
    let plugin = builtin(&host, "remediate").await;
    let mut req = CallRequest::new(action, input.to_string());
    req.grants = Arc::new(grants);
    host.call(&plugin, req).await.map(|o| o.output)
}

fn dir_grant(dir: &Path, guest: &str, mode: &str) -> Grants {
    Grants {
        dirs: vec![format!("{}:{guest}:{mode}", dir.display()).parse().unwrap()],
        ..Grants::default()
    }
}

const DAY: Duration = Duration::from_secs(86_400);

/// Write `bytes` bytes to `path`, last modified `age` ago.
fn file(path: &Path, bytes: usize, age: Duration) {
    std::fs::write(path, vec![b'x'; bytes]).unwrap();
    std::fs::File::options()
        .write(true)
        .open(path)
        .unwrap()
        .set_modified(SystemTime::now() - age)
        .unwrap();
}

/// A log directory with old and new files, a subdirectory, and two symlinks that lead out of
/// it: to an old file and to a directory full of old files.
struct Logs {
    logs: ScratchDir,
    outside: ScratchDir,
}

fn logs() -> Logs {
    let logs = ScratchDir::new("remediate-logs");
    let outside = ScratchDir::new("remediate-outside");
    file(&logs.join("old.log"), 1000, DAY * 10);
    file(&logs.join("old.log.1"), 500, DAY * 9);
    file(&logs.join("new.log"), 10, Duration::ZERO);
    std::fs::create_dir(logs.join("sub")).unwrap();
    file(&logs.join("sub/older.log"), 300, DAY * 30);
    file(&outside.join("victim.log"), 7000, DAY * 100);
    std::os::unix::fs::symlink(outside.join("victim.log"), logs.join("link.log")).unwrap();
    std::os::unix::fs::symlink(outside.path(), logs.join("elsewhere")).unwrap();
    Logs { logs, outside }
}

fn paths(out: &Value) -> Vec<&str> {
    out["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["path"].as_str().unwrap())
        .collect()
}

#[tokio::test]
async fn only_the_listings_are_read_actions() {
    let host = host();
    let plugin = builtin(&host, "remediate").await;
    let kinds: Vec<(&str, ActionKind)> = plugin
        .manifest()
        .actions
        .iter()
        .map(|a| (a.name.as_str(), a.kind))
        .collect();
    assert_eq!(
        kinds,
        [
            ("restart-service", ActionKind::Mutate),
            ("find-files", ActionKind::Read),
            ("delete-files", ActionKind::Mutate),
            ("rotate-log", ActionKind::Mutate),
            ("truncate-log", ActionKind::Mutate),
            ("stop-process", ActionKind::Mutate),
        ]
    );
}

#[tokio::test]
async fn find_files_shows_exactly_what_delete_files_then_deletes() {
    let l = logs();
    let grants = dir_grant(l.logs.path(), "/logs", "rw");
    let input = json!({"dir": "/logs", "older_than": "7d"});
    let found = call("find-files", input.clone(), grants.clone())
        .await
        .unwrap();
    assert_eq!(paths(&found), ["/logs/old.log", "/logs/old.log.1"]);
    assert_eq!(found["count"], 2);
    assert_eq!(found["total_bytes"], 1500);
    assert_eq!(found["skipped_symlinks"], 2);
    assert!(found["files"][0]["age_secs"].as_u64().unwrap() >= 10 * 86_400 - 60);

    let recursive = json!({"dir": "/logs", "older_than": "7d", "recursive": true});
    let found = call("find-files", recursive.clone(), grants.clone())
        .await
        .unwrap();
    assert_eq!(
        paths(&found),
        ["/logs/old.log", "/logs/old.log.1", "/logs/sub/older.log"]
    );
    assert_eq!(found["total_bytes"], 1800);

    let deleted = call("delete-files", recursive, grants).await.unwrap();
    assert_eq!(paths(&deleted), paths(&found));
    assert_eq!(deleted["total_bytes"], 1800);
    for gone in ["old.log", "old.log.1", "sub/older.log"] {
        assert!(!l.logs.join(gone).exists(), "{gone}");
    }
    // The new file, the subdirectory, the symlinks and what they point to are untouched.
    assert!(l.logs.join("new.log").exists());
    assert!(l.logs.join("sub").is_dir());
    assert!(l.logs.join("link.log").symlink_metadata().is_ok());
    assert!(l.outside.join("victim.log").exists());
}

#[tokio::test]
async fn size_and_name_narrow_the_selection() {
    let l = logs();
    file(&l.logs.join("core.1234"), 5000, Duration::ZERO);
    let grants = dir_grant(l.logs.path(), "/logs", "ro");
    let out = call(
        "find-files",
        json!({"dir": "/logs", "larger_than": "4KB"}),
        grants.clone(),
    )
    .await
    .unwrap();
    assert_eq!(paths(&out), ["/logs/core.1234"]);
    let out = call(
        "find-files",
        json!({"dir": "/logs", "name": "*.log", "older_than": "1d", "max_listed": 0}),
        grants,
    )
    .await
    .unwrap();
    assert_eq!(out["count"], 1);
    assert_eq!(out["total_bytes"], 1000);
    assert_eq!(out["files"], json!([]));
    assert_eq!(out["truncated"], true);
}

#[tokio::test]
async fn deleting_under_a_read_only_grant_is_denied_and_deletes_nothing() {
    let l = logs();
    let err = call(
        "delete-files",
        json!({"dir": "/logs", "older_than": "7d"}),
        dir_grant(l.logs.path(), "/logs", "ro"),
    )
    .await
    .unwrap_err();
    assert!(matches!(err, CallError::Denied { .. }), "{err:?}");
    assert!(
        err.to_string()
            .starts_with("plugin `remediate` may not write `/logs/old.log"),
        "{err}"
    );
    assert!(l.logs.join("old.log").exists());
}

#[tokio::test]
async fn directories_outside_the_grants_are_denied() {
    let l = logs();
    let grants = dir_grant(l.logs.path(), "/logs", "rw");
    for dir in ["/etc", "/logs/../etc"] {
        let err = call(
            "find-files",
            json!({"dir": dir, "older_than": "1d"}),
            grants.clone(),
        )
        .await
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "plugin `remediate` may not read `/etc`: not granted"
        );
    }
}

#[tokio::test]
async fn unsafe_selections_are_refused() {
    let l = logs();
    let grants = dir_grant(l.logs.path(), "/logs", "rw");
    for (input, expected) in [
        (json!({"dir": "/logs"}), "would take every file"),
        (
            json!({"dir": "/logs/new.log", "older_than": "1d"}),
            "is not a directory",
        ),
        (
            json!({"dir": "/logs/elsewhere", "older_than": "1d"}),
            "symlinks are not followed",
        ),
        (
            json!({"dir": "/logs", "older_than": "7"}),
            "the unit must be",
        ),
    ] {
        match call("delete-files", input.clone(), grants.clone()).await {
            Err(CallError::InvalidInput(m)) => assert!(m.contains(expected), "{input}: {m}"),
            other => panic!("{input}: expected invalid input, got {other:?}"),
        }
    }
    assert!(l.outside.join("victim.log").exists());
}

#[tokio::test]
async fn rotate_log_shifts_copies_and_keeps_at_most_n() {
    let dir = ScratchDir::new("remediate-rotate");
    for (name, text) in [
        ("app.log", "current\n"),
        ("app.log.1", "one\n"),
        ("app.log.2", "two\n"),
    ] {
        std::fs::write(dir.join(name), text).unwrap();
    }
    let out = call(
        "rotate-log",
        json!({"path": "/logs/app.log", "keep": 2}),
        dir_grant(dir.path(), "/logs", "rw"),
    )
    .await
    .unwrap();
    assert_eq!(
        out,
        json!({
            "path": "/logs/app.log",
            "rotated_to": "/logs/app.log.1",
            "bytes": 8,
            "removed": "/logs/app.log.2",
            "freed_bytes": 4,
        })
    );
    let read = |name: &str| std::fs::read_to_string(dir.join(name)).unwrap();
    assert_eq!(read("app.log"), "");
    assert_eq!(read("app.log.1"), "current\n");
    assert_eq!(read("app.log.2"), "one\n");
    assert!(!dir.join("app.log.3").exists());
}

#[tokio::test]
async fn copytruncate_rotation_keeps_the_live_file() {
    use std::os::unix::fs::MetadataExt;
    let dir = ScratchDir::new("remediate-copytruncate");
    std::fs::write(dir.join("app.log"), "current\n").unwrap();
    let inode = std::fs::metadata(dir.join("app.log")).unwrap().ino();
    let out = call(
        "rotate-log",
        json!({"path": "/logs/app.log", "mode": "copytruncate"}),
        dir_grant(dir.path(), "/logs", "rw"),
    )
    .await
    .unwrap();
    assert_eq!(out["removed"], Value::Null);
    let live = std::fs::metadata(dir.join("app.log")).unwrap();
    assert_eq!((live.ino(), live.len()), (inode, 0));
    assert_eq!(
        std::fs::read_to_string(dir.join("app.log.1")).unwrap(),
        "current\n"
    );
}

#[tokio::test]
async fn truncate_log_empties_in_place_and_refuses_symlinks() {
    let l = logs();
    let grants = dir_grant(l.logs.path(), "/logs", "rw");
    let out = call(
        "truncate-log",
        json!({"path": "/logs/old.log"}),
        grants.clone(),
    )
    .await
    .unwrap();
    assert_eq!(out, json!({"path": "/logs/old.log", "freed_bytes": 1000}));
    assert_eq!(std::fs::metadata(l.logs.join("old.log")).unwrap().len(), 0);
    let err = call("truncate-log", json!({"path": "/logs/link.log"}), grants)
        .await
        .unwrap_err();
    assert!(matches!(err, CallError::InvalidInput(_)), "{err:?}");
    assert_eq!(
        std::fs::metadata(l.outside.join("victim.log"))
            .unwrap()
            .len(),
        7000
    );
}

/// A stand-in `systemctl`: `restart U` leaves U `activating` (or `failed` for
/// `broken.service`); `is-active U` prints the state, then an activating unit becomes active.
fn fake_systemctl(dir: &ScratchDir) -> String {
    let program = dir.join("systemctl");
    let d = dir.path().display();
    write_executable(
        &program,
        &format!(
            r#"#!/bin/sh
echo "$*" >> {d}/calls
case "$1" in
restart)
  if [ "$2" = broken.service ]; then echo failed > {d}/$2; else echo activating > {d}/$2; fi
  ;;
is-active)
  state=$(cat {d}/$2 2>/dev/null || echo inactive)
  [ "$state" = activating ] && echo active > {d}/$2
  echo "$state"
  [ "$state" = active ] || exit 3
  ;;
*) exit 1 ;;
esac
"#
        ),
    );
    program.display().to_string()
}

fn calls(dir: &ScratchDir) -> Vec<String> {
    std::fs::read_to_string(dir.join("calls"))
        .unwrap_or_default()
        .lines()
        .map(str::to_string)
        .collect()
}

fn systemctl_grants(systemctl: &str) -> Grants {
    Grants {
        commands: vec![
            format!("{systemctl} restart *.service").parse().unwrap(),
            format!("{systemctl} is-active *.service").parse().unwrap(),
        ],
        ..Grants::default()
    }
}

#[tokio::test]
async fn restart_service_waits_until_the_unit_is_active() {
    let dir = ScratchDir::new("remediate-systemctl");
    let systemctl = fake_systemctl(&dir);
    let out = call(
        "restart-service",
        json!({"unit": "web.service", "systemctl": systemctl}),
        systemctl_grants(&systemctl),
    )
    .await
    .unwrap();
    assert_eq!(out["command"], format!("{systemctl} restart web.service"));
    assert_eq!(out["verified"], true);
    assert_eq!(out["state"], "active");
    assert_eq!(out["checks"], 2);
    assert_eq!(
        calls(&dir),
        [
            "restart web.service",
            "is-active web.service",
            "is-active web.service"
        ]
    );
}

#[tokio::test]
async fn a_unit_that_fails_after_the_restart_is_a_failed_step() {
    let dir = ScratchDir::new("remediate-broken");
    let systemctl = fake_systemctl(&dir);
    let err = call(
        "restart-service",
        json!({"unit": "broken.service", "systemctl": systemctl}),
        systemctl_grants(&systemctl),
    )
    .await
    .unwrap_err();
    assert!(matches!(err, CallError::Failed(_)), "{err:?}");
    assert!(
        err.to_string().starts_with("`broken.service` is `failed`"),
        "{err}"
    );
    // A failed unit is reported at once, not after the whole verification window.
    assert_eq!(calls(&dir).len(), 2);
}

#[tokio::test]
async fn a_configured_restart_and_check_command_replace_systemctl() {
    let dir = ScratchDir::new("remediate-service");
    let service = dir.join("service");
    let d = dir.path().display();
    write_executable(
        &service,
        &format!("#!/bin/sh\necho \"$*\" >> {d}/calls\n[ \"$2\" = status ] && exit 0\nexit 0\n"),
    );
    let service = service.display().to_string();
    let out = call(
        "restart-service",
        json!({
            "unit": "legacy",
            "restart_command": [service, "{unit}", "restart"],
            "check_command": [service, "{unit}", "status"],
        }),
        Grants {
            commands: vec![format!("{service} legacy *").parse().unwrap()],
            ..Grants::default()
        },
    )
    .await
    .unwrap();
    assert_eq!(out["state"], "healthy");
    assert_eq!(calls(&dir), ["legacy restart", "legacy status"]);
}

#[tokio::test]
async fn restarting_without_a_grant_is_denied() {
    let err = call(
        "restart-service",
        json!({"unit": "nginx.service"}),
        Grants::default(),
    )
    .await
    .unwrap_err();
    assert_eq!(
        err.to_string(),
        "plugin `remediate` may not run `/usr/bin/systemctl restart nginx.service`: not granted"
    );
}

/// Start `count` copies of `sleep 300` under a distinctive process name, each reaped by a
/// thread that reports how it ended.
fn sleepers(
    dir: &ScratchDir,
    count: usize,
) -> (
    String,
    Vec<u32>,
    Vec<std::sync::mpsc::Receiver<std::process::ExitStatus>>,
) {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    // At most 15 bytes, the kernel's limit for process names.
    let name = format!(
        "rlz{}x{}",
        std::process::id() % 100_000,
        NEXT.fetch_add(1, Ordering::Relaxed)
    );
    let program = dir.join(&name);
    let status = std::process::Command::new("/usr/bin/install")
        .args(["-m", "0755", "/usr/bin/sleep"])
        .arg(&program)
        .status()
        .unwrap();
    assert!(status.success());
    let mut pids = Vec::new();
    let mut ended = Vec::new();
    for _ in 0..count {
        let mut child = std::process::Command::new(&program)
            .arg("300")
            .spawn()
            .unwrap();
        pids.push(child.id());
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let _ = tx.send(child.wait().unwrap());
        });
        ended.push(rx);
    }
    (name, pids, ended)
}

fn kill_grants(signal: &str) -> Grants {
    Grants {
        commands: vec![format!("/usr/bin/kill -s {signal} **").parse().unwrap()],
        system: vec![SystemFact::Processes],
        ..Grants::default()
    }
}

#[tokio::test]
async fn stop_process_signals_every_match_and_sees_them_exit() {
    use std::os::unix::process::ExitStatusExt;
    let dir = ScratchDir::new("remediate-stop");
    let (name, mut pids, ended) = sleepers(&dir, 2);
    let out = call("stop-process", json!({"name": name}), kill_grants("TERM"))
        .await
        .unwrap();
    pids.sort();
    assert_eq!(out["signal"], "TERM");
    assert_eq!(out["signalled"], json!(pids));
    assert_eq!(out["exited"], json!(pids));
    assert_eq!(out["still_running"], json!([]));
    for rx in ended {
        let status = rx.recv_timeout(Duration::from_secs(10)).unwrap();
        assert_eq!(status.signal(), Some(15), "{status:?}");
    }
}

#[tokio::test]
async fn stop_process_refuses_more_matches_than_its_cap() {
    let dir = ScratchDir::new("remediate-cap");
    let (name, pids, ended) = sleepers(&dir, 3);
    let err = call(
        "stop-process",
        json!({"name": name, "max_processes": 2, "signal": "KILL"}),
        kill_grants("KILL"),
    )
    .await
    .unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "3 processes named `{name}` are running, more than `max_processes` (2); nothing was signalled"
        )
    );
    for rx in &ended {
        assert!(rx.try_recv().is_err(), "a process was stopped");
    }
    for pid in pids {
        std::process::Command::new("/usr/bin/kill")
            .arg(pid.to_string())
            .status()
            .unwrap();
    }
}

#[tokio::test]
async fn stopping_a_process_that_is_not_running_signals_nothing() {
    let out = call(
        "stop-process",
        json!({"name": "no-such-proc-x"}),
        kill_grants("TERM"),
    )
    .await
    .unwrap();
    assert_eq!(out["signalled"], json!([]));
}

#[tokio::test]
async fn stop_process_needs_the_processes_and_kill_grants() {
    let err = call(
        "stop-process",
        json!({"name": "anything"}),
        Grants::default(),
    )
    .await
    .unwrap_err();
    assert_eq!(
        err.to_string(),
        "plugin `remediate` may not read system facts `processes`: not granted"
    );
    let dir = ScratchDir::new("remediate-nokill");
    let (name, pids, _ended) = sleepers(&dir, 1);
    let err = call(
        "stop-process",
        json!({"name": name}),
        Grants {
            system: vec![SystemFact::Processes],
            ..Grants::default()
        },
    )
    .await
    .unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "plugin `remediate` may not run `/usr/bin/kill -s TERM {}`: not granted",
            pids[0]
        )
    );
    std::process::Command::new("/usr/bin/kill")
        .arg(pids[0].to_string())
        .status()
        .unwrap();
}
