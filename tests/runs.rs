//! Runs end to end: Rhai runbooks calling real plugins, recorded in a real SQLite store.

use crate::support::Harness;
use runloom::run::{RunStatus, StepStatus};
use serde_json::json;
use std::time::Duration;

const HELLO: &str = r#"
version = 1
description = "Greets."
[parameters.name]
type = "string"
default = "ops"
[plugins.hello]
"#;

#[tokio::test]
async fn a_successful_run_records_its_steps_logs_and_output() {
    let h = Harness::new("", &[]).await;
    let rb = h
        .runbook(
            "greet",
            HELLO,
            r#"
            info("greeting " + params.name);
            let out = step("say hello", || call("hello", "greet", #{ name: params.name }));
            #{ said: out.greeting }
            "#,
        )
        .await;
    let run = h.run(&rb, json!({"name": "night shift"}), false).await;
    assert_eq!(run.status, RunStatus::Succeeded, "{:?}", run.reason);
    assert_eq!(run.output, Some(json!({"said": "hello, night shift"})));
    assert_eq!(run.runbook_hash, rb.runbook.content_hash);
    let steps = h.store.steps(&run.id).await.unwrap();
    assert_eq!(steps.len(), 2, "{steps:#?}");
    assert_eq!(
        (
            steps[0].kind.as_str(),
            steps[0].name.as_str(),
            steps[0].status
        ),
        ("group", "say hello", StepStatus::Succeeded)
    );
    let call = &steps[1];
    assert_eq!(call.parent, Some(steps[0].seq));
    assert_eq!(call.name, "hello.greet");
    assert_eq!(call.action_kind.as_deref(), Some("read"));
    assert_eq!(call.status, StepStatus::Succeeded);
    assert_eq!(call.input, Some(json!({"name": "night shift"})));
    assert_eq!(call.output, Some(json!({"greeting": "hello, night shift"})));
    let plugin = h.registry.get("hello").unwrap();
    assert_eq!(call.plugin_hash.as_deref(), Some(plugin.content_hash()));
    let logs = h.store.logs(&run.id, 0, 100).await.unwrap();
    assert!(
        logs.iter()
            .any(|l| l.source == "script" && l.message == "greeting night shift"),
        "{logs:#?}"
    );
}

#[tokio::test]
async fn a_plugin_without_its_compiled_code_is_listed_but_refuses_calls() {
    let h = Harness::new("", &[]).await;
    let hello = h.registry.get("hello").unwrap();
    let listed = hello.without_code();
    assert!(hello.has_code() && !listed.has_code());
    assert_eq!(listed.manifest().name, "hello");
    assert_eq!(listed.content_hash(), hello.content_hash());
    let err = h
        .host
        .call(
            &listed,
            runloom::plugin::CallRequest::new("greet", r#"{"name": "x"}"#),
        )
        .await
        .unwrap_err();
    assert!(
        err.to_string()
            .contains("plugin `hello` cannot be called on this node"),
        "{err}"
    );
    // The plugin it came from still answers.
    h.host
        .call(
            hello,
            runloom::plugin::CallRequest::new("greet", r#"{"name": "x"}"#),
        )
        .await
        .unwrap();
}

#[tokio::test]
async fn a_plugin_failure_fails_the_run_with_blame() {
    let h = Harness::new("", &[]).await;
    let rb = h
        .runbook("greet", HELLO, r#"call("hello", "greet", #{ name: " " })"#)
        .await;
    let run = h.run(&rb, json!({}), false).await;
    assert_eq!(run.status, RunStatus::Failed);
    assert_eq!(run.error_kind.as_deref(), Some("invalid_input"));
    assert_eq!(run.blame.as_deref(), Some("runbook"));
    assert!(
        run.reason
            .as_deref()
            .unwrap()
            .contains("`name` must not be empty"),
        "{:?}",
        run.reason
    );
    let steps = h.store.steps(&run.id).await.unwrap();
    assert_eq!(steps[0].status, StepStatus::Failed);
    assert_eq!(steps[0].error_kind.as_deref(), Some("invalid_input"));
}

#[tokio::test]
async fn a_retryable_failure_is_retried_until_it_succeeds() {
    let h = Harness::new(
        "[plugins.flaky-counter]\ndirs = [\"{dir}:/state:rw\"]\n",
        &["flaky-counter"],
    )
    .await;
    let rb = h
        .runbook(
            "flaky",
            "version = 1\ndescription = \"x\"\n[policy]\nretries = 3\nretry_backoff = \"10ms\"\n[plugins.flaky-counter]\n",
            r#"call("flaky-counter", "call", #{ succeed_on: 3 })"#,
        )
        .await;
    let run = h.run(&rb, json!({}), false).await;
    assert_eq!(run.status, RunStatus::Succeeded, "{:?}", run.reason);
    assert_eq!(run.output, Some(json!({"calls": 3})));
    let steps = h.store.steps(&run.id).await.unwrap();
    assert_eq!((steps.len(), steps[0].attempts), (1, 3));
    let logs = h.store.logs(&run.id, 0, 100).await.unwrap();
    assert_eq!(
        logs.iter()
            .filter(|l| l.message.starts_with("attempt ") && l.message.contains("retrying in"))
            .count(),
        2
    );
}

#[tokio::test]
async fn retries_stop_at_the_policy_limit() {
    let h = Harness::new(
        "[plugins.flaky-counter]\ndirs = [\"{dir}:/state:rw\"]\n",
        &["flaky-counter"],
    )
    .await;
    let rb = h
        .runbook(
            "flaky",
            "version = 1\ndescription = \"x\"\n[policy]\nretries = 1\nretry_backoff = \"10ms\"\n[plugins.flaky-counter]\n",
            r#"call("flaky-counter", "call", #{ succeed_on: 5 })"#,
        )
        .await;
    let run = h.run(&rb, json!({}), false).await;
    assert_eq!(run.status, RunStatus::Failed);
    assert_eq!(run.error_kind.as_deref(), Some("retryable"));
    assert_eq!(h.store.steps(&run.id).await.unwrap()[0].attempts, 2);
}

#[tokio::test]
async fn a_script_error_reports_file_line_and_column() {
    let h = Harness::new("", &[]).await;
    let rb = h
        .runbook(
            "broken",
            HELLO,
            "let x = 1;\nlet y = 2;\nlet z = y + x.len();\n",
        )
        .await;
    let run = h.run(&rb, json!({}), false).await;
    assert_eq!(run.status, RunStatus::Failed);
    assert_eq!(run.blame.as_deref(), Some("runbook"));
    let reason = run.reason.unwrap();
    let file = h.dir.join("runbooks/broken/main.rhai");
    assert!(
        reason.starts_with(&format!("{}:3:", file.display())),
        "{reason}"
    );
    assert!(reason.contains("len"), "{reason}");
}

#[tokio::test]
async fn a_run_past_its_timeout_is_timed_out() {
    let h = Harness::new("", &[]).await;
    let rb = h
        .runbook(
            "slow",
            "version = 1\ndescription = \"x\"\n[policy]\ntimeout = \"500ms\"\n",
            r#"sleep("30s"); 1"#,
        )
        .await;
    let started = std::time::Instant::now();
    let run = h.run(&rb, json!({}), false).await;
    assert_eq!(run.status, RunStatus::TimedOut);
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn cancelling_a_running_run_stops_it() {
    let h = Harness::new("", &[]).await;
    let rb = h
        .runbook(
            "slow",
            "version = 1\ndescription = \"x\"\n",
            r#"sleep("30s"); 1"#,
        )
        .await;
    let run = h
        .executor
        .enqueue(
            &rb,
            runloom::executor::RunRequest::manual(Default::default(), false),
        )
        .await
        .unwrap();
    let cancel = tokio_util::sync::CancellationToken::new();
    let trigger = cancel.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(300)).await;
        trigger.cancel();
    });
    let started = std::time::Instant::now();
    let done = h.executor.execute(rb, run, cancel, None).await.unwrap();
    assert_eq!(done.status, RunStatus::Cancelled);
    assert!(started.elapsed() < Duration::from_secs(10));
}

#[tokio::test]
async fn cancelling_through_the_store_reaches_a_running_run() {
    let h = Harness::new("", &[]).await;
    let rb = h
        .runbook(
            "slow",
            "version = 1\ndescription = \"x\"\n",
            r#"sleep("30s"); 1"#,
        )
        .await;
    let run = h
        .executor
        .enqueue(
            &rb,
            runloom::executor::RunRequest::manual(Default::default(), false),
        )
        .await
        .unwrap();
    let (store, id) = (h.store.clone(), run.id.clone());
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(300)).await;
        store
            .request_cancel(&id, runloom::run::now_ms())
            .await
            .unwrap();
    });
    let done = h
        .executor
        .execute(rb, run, tokio_util::sync::CancellationToken::new(), None)
        .await
        .unwrap();
    assert_eq!(done.status, RunStatus::Cancelled);
}

#[tokio::test]
async fn a_dry_run_runs_reads_and_plans_mutations() {
    let h = Harness::new("", &[]).await;
    let rb = h
        .runbook(
            "announce",
            HELLO,
            r#"
            let g = call("hello", "greet", #{ name: "dry" });
            let s = call("hello", "shout", #{ message: g.greeting });
            #{ greeting: g.greeting, shout: s }
            "#,
        )
        .await;
    let run = h.run(&rb, json!({}), true).await;
    assert_eq!(run.status, RunStatus::Succeeded, "{:?}", run.reason);
    assert!(run.dry_run);
    let out = run.output.unwrap();
    assert_eq!(out["greeting"], "hello, dry");
    assert_eq!(out["shout"]["planned"], true);
    let steps = h.store.steps(&run.id).await.unwrap();
    assert_eq!(steps[0].status, StepStatus::Succeeded);
    assert_eq!(
        (steps[1].status, steps[1].action_kind.as_deref()),
        (StepStatus::Planned, Some("mutate"))
    );
    assert_eq!(steps[1].input, Some(json!({"message": "hello, dry"})));
    // The plugin never ran: its log line (the message in capitals) is absent.
    let logs = h.store.logs(&run.id, 0, 100).await.unwrap();
    assert!(!logs.iter().any(|l| l.message == "HELLO, DRY"), "{logs:#?}");
}

#[tokio::test]
async fn a_plugin_the_runbook_does_not_list_cannot_be_called() {
    let h = Harness::new("", &[]).await;
    let rb = h
        .runbook(
            "sneaky",
            "version = 1\ndescription = \"x\"\n",
            r#"call("hello", "greet", #{ name: "x" })"#,
        )
        .await;
    let run = h.run(&rb, json!({}), false).await;
    assert_eq!(run.status, RunStatus::Failed);
    assert_eq!(run.error_kind.as_deref(), Some("not_allowed"));
    assert!(
        run.reason
            .unwrap()
            .contains("runbook `sneaky` may not call plugin `hello`")
    );
}

#[tokio::test]
async fn a_secret_never_reaches_a_stored_row_or_the_database_file() {
    const CANARY: &str = "canary-s3cr3t-7f1e9";
    let h = Harness::new("[secrets.token]\nfile = \"{dir}/token\"\n", &[]).await;
    std::fs::write(h.dir.join("token"), CANARY).unwrap();
    let rb = h
        .runbook(
            "leaky",
            "version = 1\ndescription = \"x\"\nsecrets = [\"token\"]\n[plugins.hello]\n",
            r#"
            let t = secret("token");
            info("the token is " + t);
            let g = call("hello", "greet", #{ name: t });
            call("hello", "shout", #{ message: t });
            fail("giving up with " + g.greeting)
            "#,
        )
        .await;
    let run = h.run(&rb, json!({}), false).await;
    assert_eq!(run.status, RunStatus::Failed);
    let shown = format!(
        "{:?}{:?}{:?}",
        run,
        h.store.steps(&run.id).await.unwrap(),
        h.store.logs(&run.id, 0, 1000).await.unwrap()
    );
    assert!(!shown.contains(CANARY), "{shown}");
    assert!(
        shown.contains("********"),
        "masked values are visible as such: {shown}"
    );
    h.store.flush().await.unwrap();
    for file in ["runloom.db", "runloom.db-wal"] {
        if let Ok(bytes) = std::fs::read(h.dir.join("data").join(file)) {
            assert!(
                !bytes.windows(CANARY.len()).any(|w| w == CANARY.as_bytes()),
                "secret in {file}"
            );
        }
    }
}

#[tokio::test]
async fn an_endless_script_loop_is_stopped_by_its_operation_limit() {
    let h = Harness::new("", &[]).await;
    let rb = h
        .runbook(
            "spin",
            "version = 1\ndescription = \"x\"\n[policy]\nmax_operations = 100000\n",
            "let i = 0; loop { i += 1; }",
        )
        .await;
    let run = h.run(&rb, json!({}), false).await;
    assert_eq!(run.status, RunStatus::Failed);
    assert_eq!(run.error_kind.as_deref(), Some("script"));
    assert!(run.reason.unwrap().to_lowercase().contains("operations"));
}

#[tokio::test]
async fn unbounded_script_allocation_is_stopped_by_its_size_limits() {
    let h = Harness::new("", &[]).await;
    let rb = h
        .runbook(
            "bomb",
            "version = 1\ndescription = \"x\"\n",
            r#"let s = "xxxxxxxx"; loop { s += s; }"#,
        )
        .await;
    let run = h.run(&rb, json!({}), false).await;
    assert_eq!(run.status, RunStatus::Failed);
    assert_eq!(run.error_kind.as_deref(), Some("script"));
}

#[tokio::test]
async fn a_run_that_logs_without_end_keeps_its_first_lines_and_says_where_it_was_cut() {
    let h = Harness::new("", &[]).await;
    let rb = h
        .runbook(
            "chatty",
            "version = 1\ndescription = \"Logs a lot.\"\n[policy]\nmax_operations = 10000000\n",
            r#"for i in 0..10050 { info("line " + i); } "done""#,
        )
        .await;
    let run = h.run(&rb, json!({}), false).await;
    assert_eq!(run.status, RunStatus::Succeeded, "{:?}", run.reason);
    let logs = h.store.logs(&run.id, 0, 20_000).await.unwrap();
    let script: Vec<_> = logs.iter().filter(|l| l.source == "script").collect();
    assert_eq!(script.len(), 10_000, "the first 10,000 body lines are kept");
    assert_eq!(script[9_999].message, "line 9999");
    let cuts: Vec<_> = logs
        .iter()
        .filter(|l| l.message.starts_with("log limit reached"))
        .collect();
    assert_eq!(cuts.len(), 1, "the cut is logged once");
    assert!(
        logs.last().unwrap().message.contains("succeeded"),
        "the engine's own lines are kept: {:?}",
        logs.last()
    );
}
