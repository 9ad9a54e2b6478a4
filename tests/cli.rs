//! The `runloom` executable: output and exit codes of the plugin commands and the demo.

use crate::support::fixture_path;
use std::process::{Command, Output};

/// Run `runloom` with `args` in a scratch directory, sharing the compiled-plugin cache.
fn runloom(args: &[&str]) -> Output {
    let data = std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("cli-data");
    Command::new(env!("CARGO_BIN_EXE_runloom"))
        .args(args)
        .arg("--data-dir")
        .arg(&data)
        .current_dir(env!("CARGO_TARGET_TMPDIR"))
        .env_remove("RUNLOOM_CONFIG")
        .output()
        .expect("run runloom")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn plugin_list_shows_the_standard_plugins() {
    let out = runloom(&["plugin", "list"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(text.starts_with("NAME "), "{text}");
    // Column widths depend on the other plugins; compare words.
    let rows: Vec<Vec<&str>> = text
        .lines()
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert!(
        rows.contains(&vec![
            "hello",
            "0.1.0",
            "greet",
            "(read),",
            "shout",
            "(mutate)",
            "builtin:hello"
        ]),
        "{text}"
    );
    assert!(text.contains("http-check"), "{text}");
}

#[test]
fn plugin_inspect_json_carries_kinds_and_schemas() {
    let out = runloom(&["plugin", "inspect", "http-check", "--json"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(doc["name"], "http-check");
    assert_eq!(doc["actions"][0]["name"], "check");
    assert_eq!(doc["actions"][0]["kind"], "read");
    assert_eq!(doc["actions"][0]["input_schema"]["required"][0], "url");
    assert_eq!(
        doc["actions"][0]["output_schema"]["properties"]["status"]["$ref"],
        "#/$defs/Status"
    );
    assert_eq!(doc["origin"], "builtin:http-check");
}

#[test]
fn plugin_inspect_accepts_a_component_path() {
    let path = fixture_path("count-calls");
    let out = runloom(&["plugin", "inspect", path.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(
        stdout(&out).starts_with("count-calls 0.1.0\n"),
        "{}",
        stdout(&out)
    );
}

#[test]
fn plugin_call_prints_the_output_and_exits_zero() {
    let out = runloom(&[
        "plugin",
        "call",
        "hello",
        "greet",
        "--input",
        r#"{"name":"ops"}"#,
        "--compact",
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(stdout(&out), "{\"greeting\":\"hello, ops\"}\n");
}

#[test]
fn plugin_call_exit_codes_tell_failure_denial_and_usage_apart() {
    // Plugin failure: the plugin refuses the input.
    let out = runloom(&["plugin", "call", "hello", "greet", "-i", r#"{"name":" "}"#]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert_eq!(
        stderr(&out),
        "error: invalid input: `name` must not be empty\n"
    );
    // Denial: a host not granted.
    let out = runloom(&[
        "plugin",
        "call",
        "http-check",
        "check",
        "-i",
        r#"{"url":"https://example.org/"}"#,
    ]);
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    assert_eq!(
        stderr(&out),
        "error: plugin `http-check` may not connect to `example.org:443`: not granted\n"
    );
    // Usage: unknown plugin, unknown action, bad JSON, bad grant flag.
    for (args, message) in [
        (
            vec!["plugin", "call", "nope", "x"],
            "error: no plugin named `nope`",
        ),
        (
            vec!["plugin", "call", "hello", "wave"],
            "error: plugin `hello` has no action `wave`",
        ),
        (
            vec!["plugin", "call", "hello", "greet", "-i", "{oops"],
            "error: --input is not JSON",
        ),
        (
            vec!["plugin", "call", "hello", "greet", "--allow-host", "x"],
            "invalid host grant `x`",
        ),
    ] {
        let out = runloom(&args);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", stderr(&out));
        assert!(stderr(&out).contains(message), "{args:?}: {}", stderr(&out));
    }
}

#[test]
fn plugin_call_grant_flags_let_a_plugin_reach_a_granted_host() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        use std::io::{Read, Write};
        if let Ok((mut conn, _)) = listener.accept() {
            let mut buf = [0u8; 1024];
            let _ = conn.read(&mut buf);
            let _ = conn
                .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok");
        }
    });
    let input = format!(r#"{{"url":"http://{addr}/"}}"#);
    let grant = addr.to_string();
    let out = runloom(&[
        "plugin",
        "call",
        "http-check",
        "check",
        "-i",
        &input,
        "--allow-host",
        &grant,
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(doc["status"], "ok", "{doc}");
    assert_eq!(doc["facts"]["http_status"], 200);
}

#[test]
fn a_bad_config_file_is_a_definition_error_naming_file_and_line() {
    let dir = std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("bad-config");
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("runloom.toml");
    std::fs::write(&file, "version = 1\n[plugins.hello]\nhost = [\"x:1\"]\n").unwrap();
    let out = runloom(&["--config", file.to_str().unwrap(), "plugin", "list"]);
    assert_eq!(out.status.code(), Some(6), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.starts_with(&format!("error: {}: line 3, column 1", file.display())),
        "{err}"
    );
    assert!(err.contains("unknown field `host`"), "{err}");
}

#[test]
fn demo_runs_the_disk_space_low_loop_from_alert_to_verified_cleanup() {
    let out = runloom(&["demo"]);
    let text = stdout(&out);
    assert_eq!(out.status.code(), Some(0), "{text}{}", stderr(&out));
    // The timeline, in order: the alert, the run and its steps, the notification, the
    // resolved alert, and the check of what is left.
    let mut rest = text.as_str();
    for expected in [
        "Alertmanager → POST /hooks/alertmanager: DiskSpaceLow firing for /var on web-1:9100",
        "alert stored; run ",
        " of disk-space-low queued (trigger alert:0)",
        "run started on node `demo`",
        "▸ measure",
        "disk-check.check (read) succeeded",
        "▸ clean up",
        "remediate.delete-files (mutate) succeeded",
        "│ /cleanup/tmp: deleted 6 files (17.0 MiB)",
        "│ /cleanup/logs: deleted 4 files (2.0 MiB)",
        "▸ verify",
        "▸ notify",
        "✉ the webhook received: disk-space-low: /var on web-1:9100 was ",
        "Deleted 10 files older than 7d, freeing 19.0 MiB; now ",
        "run succeeded in ",
        "DiskSpaceLow resolved (1 alert closed, 0 queued runs cancelled, no new run)",
        "on disk: 10 of 10 old files deleted, 2 of 2 fresh files kept",
        "in the store: run ",
        "succeeded, 11 steps",
        "at the webhook: 1 notification",
        "\nDone in ",
    ] {
        match rest.find(expected) {
            Some(at) => rest = &rest[at + expected.len()..],
            None => panic!("missing `{expected}` (in this order) in:\n{text}"),
        }
    }
    // Its scratch directory is gone.
    let scratch = text
        .split_once("Setting up in ")
        .and_then(|(_, after)| after.split_once(" (removed afterwards)"))
        .map(|(dir, _)| std::path::PathBuf::from(dir))
        .expect("the demo names its directory");
    assert!(!scratch.exists(), "{} was left behind", scratch.display());
}

/// A scratch directory with runbooks and a runloom.toml, for the run-history commands.
fn workspace(name: &str, runbooks: &[(&str, &str, &str)]) -> std::path::PathBuf {
    let dir = std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("cli-{name}"));
    let _ = std::fs::remove_dir_all(&dir);
    for (rb, toml, rhai) in runbooks {
        std::fs::create_dir_all(dir.join("runbooks").join(rb)).unwrap();
        std::fs::write(dir.join("runbooks").join(rb).join("runbook.toml"), toml).unwrap();
        std::fs::write(dir.join("runbooks").join(rb).join("main.rhai"), rhai).unwrap();
    }
    let cache = std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("cli-data");
    std::fs::write(
        dir.join("runloom.toml"),
        format!(
            "version = 1\ndata_dir = \"data\"\n[store]\nurl = \"sqlite://{}/data/runloom.db\"\n",
            dir.display()
        ),
    )
    .unwrap();
    // Share the compiled-plugin cache with the other CLI tests.
    std::fs::create_dir_all(dir.join("data")).unwrap();
    let _ = std::os::unix::fs::symlink(cache.join("cache"), dir.join("data/cache"));
    dir
}

fn runloom_in(dir: &std::path::Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_runloom"))
        .args(args)
        .current_dir(dir)
        .env_remove("RUNLOOM_CONFIG")
        .env_remove("RUNLOOM_DATA_DIR")
        .output()
        .expect("run runloom")
}

const GREET_TOML: &str = "version = 1\ndescription = \"Greets.\"\n[parameters.name]\ntype = \"string\"\nrequired = true\n[plugins.hello]\n";

#[test]
fn run_streams_logs_and_exit_codes_follow_the_run_status() {
    let dir = workspace(
        "run",
        &[
            (
                "greet",
                GREET_TOML,
                "let g = call(\"hello\", \"greet\", #{ name: params.name });\ninfo(g.greeting);\ng",
            ),
            (
                "failing",
                "version = 1\ndescription = \"x\"\n",
                "fail(\"disk still full\")",
            ),
            (
                "slow",
                "version = 1\ndescription = \"x\"\n[policy]\ntimeout = \"300ms\"\n",
                "sleep(\"10s\")",
            ),
        ],
    );
    let ok = runloom_in(&dir, &["run", "greet", "-p", "name=ops"]);
    assert_eq!(ok.status.code(), Some(0), "{}", stderr(&ok));
    let text = stdout(&ok);
    assert!(
        text.contains("[script] hello, ops"),
        "the log is streamed: {text}"
    );
    assert!(text.contains(" succeeded in "), "{text}");
    assert!(text.contains("hello.greet  read"), "{text}");

    let failed = runloom_in(&dir, &["run", "failing"]);
    assert_eq!(failed.status.code(), Some(1), "{}", stdout(&failed));
    assert!(stdout(&failed).contains("reason: "), "{}", stdout(&failed));
    assert!(
        stdout(&failed).contains("main.rhai:1:1: disk still full"),
        "{}",
        stdout(&failed)
    );

    let timed_out = runloom_in(&dir, &["run", "slow"]);
    assert_eq!(timed_out.status.code(), Some(5), "{}", stdout(&timed_out));

    // Usage errors: a missing required parameter, an unknown one, an unknown runbook.
    let missing = runloom_in(&dir, &["run", "greet"]);
    assert_eq!(missing.status.code(), Some(2));
    assert_eq!(
        stderr(&missing),
        "error: parameter `name` (string) is required\n"
    );
    let unknown = runloom_in(&dir, &["run", "greet", "-p", "name=x", "-p", "colour=red"]);
    assert_eq!(unknown.status.code(), Some(2));
    assert!(stderr(&unknown).contains("unknown parameter `colour` (known: name)"));
    let nope = runloom_in(&dir, &["run", "nope"]);
    assert_eq!(nope.status.code(), Some(2));
    assert!(
        stderr(&nope).contains("no runbook `nope` in `runbooks` (runbooks: failing, greet, slow)"),
        "{}",
        stderr(&nope)
    );
}

#[test]
fn an_invalid_runbook_is_a_definition_error() {
    let dir = workspace(
        "invalid",
        &[(
            "broken",
            "version = 1\ndescription = \"x\"\n[policy]\ntimeout = \"soon\"\n",
            "1",
        )],
    );
    let out = runloom_in(&dir, &["run", "broken"]);
    assert_eq!(out.status.code(), Some(6), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("runbook.toml:4:11: `policy.timeout`: `soon` is not a duration"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn runs_show_and_logs_read_the_history() {
    let dir = workspace(
        "history",
        &[(
            "greet",
            GREET_TOML,
            "call(\"hello\", \"greet\", #{ name: params.name })",
        )],
    );
    for name in ["a", "b"] {
        let out = runloom_in(
            &dir,
            &["run", "greet", "-p", &format!("name={name}"), "--json"],
        );
        assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    }
    let failing = runloom_in(&dir, &["run", "greet", "-p", "name= ", "--json"]);
    assert_eq!(failing.status.code(), Some(1));
    let failed: serde_json::Value = serde_json::from_slice(&failing.stdout).unwrap();
    assert_eq!(failed["status"], "failed");
    assert_eq!(failed["steps"][0]["error_kind"], "invalid_input");

    let runs = runloom_in(&dir, &["runs", "--json"]);
    let list: Vec<serde_json::Value> = serde_json::from_slice(&runs.stdout).unwrap();
    assert_eq!(list.len(), 3);
    assert_eq!(list[0]["status"], "failed", "newest first");
    let only_failed = runloom_in(&dir, &["runs", "--status", "failed", "--json"]);
    let list: Vec<serde_json::Value> = serde_json::from_slice(&only_failed.stdout).unwrap();
    assert_eq!(list.len(), 1);
    let table = stdout(&runloom_in(&dir, &["runs", "--runbook", "greet"]));
    assert!(table.starts_with("ID "), "{table}");
    assert_eq!(table.lines().count(), 4, "{table}");

    let id = failed["id"].as_str().unwrap();
    let show = runloom_in(&dir, &["show", &id[..10]]);
    assert_eq!(show.status.code(), Some(0), "{}", stderr(&show));
    let text = stdout(&show);
    assert!(
        text.starts_with(&format!("run {id} of `greet`: failed")),
        "{text}"
    );
    assert!(text.contains("hello.greet  read  failed"), "{text}");
    assert!(text.contains("[blame: runbook]"), "{text}");

    let logs = runloom_in(&dir, &["logs", id, "--follow"]);
    assert_eq!(logs.status.code(), Some(0));
    assert!(stdout(&logs).contains("run failed"), "{}", stdout(&logs));
    let missing = runloom_in(&dir, &["show", "zzzzzzzzzz"]);
    assert_eq!(missing.status.code(), Some(2));
    assert_eq!(stderr(&missing), "error: no run `zzzzzzzzzz`\n");
}

#[test]
fn a_dry_run_exits_zero_and_marks_mutations_planned() {
    let dir = workspace(
        "dry",
        &[(
            "shout",
            "version = 1\ndescription = \"x\"\n[plugins.hello]\n",
            "call(\"hello\", \"shout\", #{ message: \"x\" })",
        )],
    );
    let out = runloom_in(&dir, &["run", "shout", "--dry-run", "--json"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let run: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(run["dry_run"], true);
    assert_eq!(run["steps"][0]["status"], "planned");
    assert_eq!(run["output"]["planned"], true);
}

#[test]
fn printing_into_a_closed_pipe_ends_quietly() {
    use std::process::Stdio;
    // The reader goes away before anything is printed, as with `runloom schema | true`.
    let mut child = Command::new(env!("CARGO_BIN_EXE_runloom"))
        .args(["schema"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take());
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!err.contains("panicked"), "{err}");
    assert!(
        out.status.success()
            || std::os::unix::process::ExitStatusExt::signal(&out.status) == Some(13),
        "ends like other Unix tools (SIGPIPE): {:?}",
        out.status
    );
}
