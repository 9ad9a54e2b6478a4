use super::*;
use serde_json::json;

/// A fresh SQLite store in a temp dir.
pub(crate) async fn temp_store() -> (Store, std::path::PathBuf) {
    let dir = std::env::temp_dir().join(format!(
        "runloom-store-{}-{}",
        std::process::id(),
        rand::random::<u32>()
    ));
    let store = Store::open(&default_url(&dir), Durability::Full)
        .await
        .unwrap();
    (store, dir)
}

fn run(runbook: &str, status: RunStatus) -> RunRecord {
    let mut r = RunRecord::queued(
        runbook,
        "abc",
        "manual",
        json!({"kind": "manual"}),
        json!({"path": "/var"}),
        false,
    );
    r.status = status;
    r
}

#[tokio::test]
async fn a_run_round_trips_through_its_lifecycle() {
    let (store, dir) = temp_store().await;
    let r = run("disk", RunStatus::Queued);
    store.insert_run(&r).await.unwrap();
    assert!(store.start_run(&r.id, 10).await.unwrap());
    assert!(
        !store.start_run(&r.id, 11).await.unwrap(),
        "only a queued run starts"
    );
    store
        .finish_run(&RunEnd {
            id: r.id.clone(),
            status: RunStatus::Succeeded,
            output: Some(json!({"freed": 42})),
            reason: None,
            error_kind: None,
            blame: None,
            ended_at: 20,
        })
        .await
        .unwrap();
    let got = store.get_run(&r.id).await.unwrap();
    assert_eq!(got.status, RunStatus::Succeeded);
    assert_eq!(got.output, Some(json!({"freed": 42})));
    assert_eq!(got.params, json!({"path": "/var"}));
    assert_eq!(
        (got.started_at, got.ended_at, got.attempt),
        (Some(10), Some(20), 1)
    );
    // A unique prefix finds it; the file is a real SQLite database in WAL mode.
    assert_eq!(store.get_run(&r.id[..12]).await.unwrap().id, r.id);
    assert!(dir.join("runloom.db-wal").exists() || dir.join("runloom.db").exists());
    std::fs::remove_dir_all(dir).unwrap();
}

#[tokio::test]
async fn steps_and_logs_are_stored_in_order() {
    let (store, dir) = temp_store().await;
    let r = run("disk", RunStatus::Running);
    store.insert_run(&r).await.unwrap();
    let mut step = StepRecord {
        run_id: r.id.clone(),
        seq: 1,
        parent: None,
        kind: "call".into(),
        name: "disk-check.usage".into(),
        plugin: Some("disk-check".into()),
        action: Some("usage".into()),
        action_kind: Some("read".into()),
        plugin_hash: None,
        status: StepStatus::Running,
        input: Some(json!({"path": "/"})),
        output: None,
        error_kind: None,
        error: None,
        blame: None,
        attempts: 1,
        call_index: Some(1),
        started_at: 1,
        ended_at: None,
    };
    store.insert_step(&step).await.unwrap();
    step.status = StepStatus::Succeeded;
    step.output = Some(json!({"status": "ok"}));
    step.ended_at = Some(2);
    step.plugin_hash = Some("h".into());
    store.finish_step(&step).await.unwrap();
    let lines: Vec<LogRecord> = (1..=250)
        .map(|i| LogRecord {
            run_id: r.id.clone(),
            seq: i,
            step: Some(1),
            ts: i,
            level: "info".into(),
            source: "plugin".into(),
            message: format!("line {i}"),
            fields: vec![("k".into(), "v".into())],
        })
        .collect();
    store.append_logs(lines);
    store.flush().await.unwrap();
    let steps = store.steps(&r.id).await.unwrap();
    assert_eq!(steps, [step]);
    let logs = store.logs(&r.id, 0, 1000).await.unwrap();
    assert_eq!(logs.len(), 250);
    assert_eq!(logs[249].message, "line 250");
    assert_eq!(logs[0].fields, [("k".to_string(), "v".to_string())]);
    assert_eq!(store.logs(&r.id, 240, 5).await.unwrap()[0].seq, 241);
    std::fs::remove_dir_all(dir).unwrap();
}

#[tokio::test]
async fn runs_filter_by_runbook_and_status_newest_first() {
    let (store, dir) = temp_store().await;
    let mut ids = Vec::new();
    for (rb, st) in [
        ("a", RunStatus::Queued),
        ("b", RunStatus::Skipped),
        ("a", RunStatus::Skipped),
    ] {
        let r = run(rb, st);
        ids.push(r.id.clone());
        store.insert_run(&r).await.unwrap();
        tokio::time::sleep(std::time::Duration::from_millis(2)).await;
    }
    let all = store.list_runs(&RunFilter::default()).await.unwrap();
    assert_eq!(
        all.iter().map(|r| r.id.clone()).collect::<Vec<_>>(),
        [ids[2].clone(), ids[1].clone(), ids[0].clone()]
    );
    let a = store
        .list_runs(&RunFilter {
            runbook: Some("a".into()),
            ..RunFilter::default()
        })
        .await
        .unwrap();
    assert_eq!(a.len(), 2);
    let skipped_a = store
        .list_runs(&RunFilter {
            runbook: Some("a".into()),
            status: Some(RunStatus::Skipped),
            limit: 10,
        })
        .await
        .unwrap();
    assert_eq!(skipped_a.len(), 1);
    assert_eq!(skipped_a[0].id, ids[2]);
    std::fs::remove_dir_all(dir).unwrap();
}

#[tokio::test]
async fn cancelling_a_queued_run_ends_it_and_flags_a_running_one() {
    let (store, dir) = temp_store().await;
    let queued = run("a", RunStatus::Queued);
    let running = run("a", RunStatus::Running);
    store.insert_run(&queued).await.unwrap();
    store.insert_run(&running).await.unwrap();
    assert_eq!(
        store.request_cancel(&queued.id, 5).await.unwrap(),
        RunStatus::Cancelled
    );
    assert_eq!(
        store.request_cancel(&running.id, 5).await.unwrap(),
        RunStatus::Running
    );
    assert!(store.cancel_requested(&running.id).await.unwrap());
    assert!(matches!(
        store.get_run("zzzzzzzz").await,
        Err(StoreError::NotFound(_))
    ));
    std::fs::remove_dir_all(dir).unwrap();
}

#[tokio::test]
async fn a_failing_write_fails_alone_in_its_batch() {
    let (store, dir) = temp_store().await;
    let r = run("a", RunStatus::Queued);
    store.insert_run(&r).await.unwrap();
    // Insert the same id again (primary key violation) together with a good run.
    let good = run("a", RunStatus::Queued);
    let (dup, ok) = tokio::join!(store.insert_run(&r), store.insert_run(&good));
    assert!(dup.is_err());
    ok.unwrap();
    assert_eq!(store.get_run(&good.id).await.unwrap().id, good.id);
    std::fs::remove_dir_all(dir).unwrap();
}
