use super::*;
use crate::run::now_ms;
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

/// The URL of a fresh, empty PostgreSQL database, or `None` (with the reason printed) when
/// `RUNLOOM_TEST_POSTGRES_URL` is unset or its server is down.
pub(crate) async fn fresh_postgres() -> Option<String> {
    use sqlx::{Connection, Executor};
    let Ok(base) = std::env::var("RUNLOOM_TEST_POSTGRES_URL") else {
        eprintln!("skipped: RUNLOOM_TEST_POSTGRES_URL is not set (.ci/run sets it)");
        return None;
    };
    let mut conn = match sqlx::PgConnection::connect(&base).await {
        Ok(c) => c,
        Err(e) => {
            eprintln!("skipped: PostgreSQL at RUNLOOM_TEST_POSTGRES_URL is not reachable: {e}");
            return None;
        }
    };
    let name = format!(
        "runloom_test_{}_{:08x}",
        crate::run::now_ms() / 1000,
        rand::random::<u32>()
    );
    conn.execute(format!("CREATE DATABASE {name}").as_str())
        .await
        .unwrap();
    let (prefix, _) = base.rsplit_once('/').unwrap();
    Some(format!("{prefix}/{name}"))
}

/// A store on a fresh PostgreSQL database.
async fn pg_store() -> Option<Store> {
    let url = fresh_postgres().await?;
    Some(Store::open(&url, Durability::Full).await.unwrap())
}

/// Each test body runs once on SQLite and once on PostgreSQL: no feature works on one
/// backend only.
macro_rules! on_both_backends {
    ($($test:ident),* $(,)?) => {$(
        mod $test {
            #[tokio::test]
            async fn sqlite() {
                let (store, dir) = super::temp_store().await;
                super::$test(store).await;
                let _ = std::fs::remove_dir_all(dir);
            }
            #[tokio::test]
            async fn postgres() {
                if let Some(store) = super::pg_store().await {
                    super::$test(store).await;
                }
            }
        }
    )*};
}

on_both_backends!(
    a_run_round_trips_through_its_lifecycle,
    steps_and_logs_are_stored_in_order,
    runs_filter_by_runbook_and_status_newest_first,
    cancelling_a_queued_run_ends_it_and_flags_a_running_one,
    a_failing_write_fails_alone_in_its_batch,
    only_the_latest_claim_may_record_steps_and_the_result,
    heartbeats_extend_leases_and_report_runs_taken_over,
    a_step_recorded_without_waiting_is_committed_by_the_next_write_and_fenced,
    a_claimed_run_is_the_run_as_stored,
);

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

async fn a_run_round_trips_through_its_lifecycle(store: Store) {
    let r = run("disk", RunStatus::Queued);
    store.insert_run(&r).await.unwrap();
    assert!(store.start_run(&r.id, 10).await.unwrap());
    assert!(
        !store.start_run(&r.id, 11).await.unwrap(),
        "only a queued run starts"
    );
    store
        .finish_run(
            &RunEnd {
                id: r.id.clone(),
                status: RunStatus::Succeeded,
                output: Some(json!({"freed": 42})),
                reason: None,
                error_kind: None,
                blame: None,
                ended_at: 20,
            },
            0,
        )
        .await
        .unwrap();
    let got = store.get_run(&r.id).await.unwrap();
    assert_eq!(got.status, RunStatus::Succeeded);
    assert_eq!(got.output, Some(json!({"freed": 42})));
    assert_eq!(*got.params, json!({"path": "/var"}));
    assert_eq!(
        (got.started_at, got.ended_at, got.attempt),
        (Some(10), Some(20), 1)
    );
    // A unique prefix finds it.
    assert_eq!(store.get_run(&r.id[..12]).await.unwrap().id, r.id);
}

async fn steps_and_logs_are_stored_in_order(store: Store) {
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
    assert!(store.insert_step(&step, 0).await.unwrap());
    step.status = StepStatus::Succeeded;
    step.output = Some(json!({"status": "ok"}));
    step.ended_at = Some(2);
    step.plugin_hash = Some("h".into());
    assert!(store.finish_step(&step, 0).await.unwrap());
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
}

async fn runs_filter_by_runbook_and_status_newest_first(store: Store) {
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
}

async fn cancelling_a_queued_run_ends_it_and_flags_a_running_one(store: Store) {
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
}

async fn a_failing_write_fails_alone_in_its_batch(store: Store) {
    let r = run("a", RunStatus::Queued);
    store.insert_run(&r).await.unwrap();
    // Insert the same id again (primary key violation) together with a good run.
    let good = run("a", RunStatus::Queued);
    let (dup, ok) = tokio::join!(store.insert_run(&r), store.insert_run(&good));
    assert!(dup.is_err());
    ok.unwrap();
    assert_eq!(store.get_run(&good.id).await.unwrap().id, good.id);
}

fn step(run_id: &str, seq: i64) -> StepRecord {
    StepRecord {
        run_id: run_id.to_string(),
        seq,
        parent: None,
        kind: "call".into(),
        name: "remediate.restart".into(),
        plugin: Some("remediate".into()),
        action: Some("restart".into()),
        action_kind: Some("mutate".into()),
        plugin_hash: None,
        status: StepStatus::Running,
        input: None,
        output: None,
        error_kind: None,
        error: None,
        blame: None,
        attempts: 1,
        call_index: Some(seq),
        started_at: 1,
        ended_at: None,
    }
}

fn end(id: &str, status: RunStatus) -> RunEnd {
    RunEnd {
        id: id.to_string(),
        status,
        output: None,
        reason: None,
        error_kind: None,
        blame: None,
        ended_at: now_ms(),
    }
}

async fn only_the_latest_claim_may_record_steps_and_the_result(store: Store) {
    let r = run("restart", RunStatus::Queued);
    store.insert_run(&r).await.unwrap();
    let first = store.claim("node-a", 4, 1_000).await.unwrap();
    assert_eq!(first.len(), 1);
    let a = &first[0];
    assert_eq!(
        (a.status, a.fence, a.node.as_deref()),
        (RunStatus::Running, 1, Some("node-a"))
    );
    assert!(store.insert_step(&step(&r.id, 1), a.fence).await.unwrap());

    // node-a stalls past its lease; anyone may put the run back, and node-b claims it.
    assert_eq!(store.requeue_expired(now_ms() + 60_000).await.unwrap(), 1);
    let requeued = store.get_run(&r.id).await.unwrap();
    assert_eq!(requeued.status, RunStatus::Queued);
    assert!(
        requeued
            .reason
            .unwrap()
            .contains("node node-a stopped renewing its lease")
    );
    let b = store.claim("node-b", 4, 60_000).await.unwrap().remove(0);
    assert_eq!((b.fence, b.attempt), (2, 2));

    // node-a wakes up: its writes are refused, node-b's are recorded.
    assert!(!store.insert_step(&step(&r.id, 2), a.fence).await.unwrap());
    assert!(!store.finish_step(&step(&r.id, 1), a.fence).await.unwrap());
    assert!(
        !store
            .finish_run(&end(&r.id, RunStatus::Failed), a.fence)
            .await
            .unwrap()
    );
    assert_eq!(
        store.get_run(&r.id).await.unwrap().status,
        RunStatus::Running
    );
    assert!(store.insert_step(&step(&r.id, 2), b.fence).await.unwrap());
    assert!(
        store
            .finish_run(&end(&r.id, RunStatus::Succeeded), b.fence)
            .await
            .unwrap()
    );
    let done = store.get_run(&r.id).await.unwrap();
    assert_eq!(
        (done.status, done.node.as_deref()),
        (RunStatus::Succeeded, Some("node-b"))
    );
    assert_eq!(store.steps(&r.id).await.unwrap().len(), 2);
    // Finished runs are never requeued, and a finished run cannot be finished again.
    assert_eq!(store.requeue_expired(now_ms() + 600_000).await.unwrap(), 0);
    assert!(
        !store
            .finish_run(&end(&r.id, RunStatus::Failed), b.fence)
            .await
            .unwrap()
    );
}

async fn heartbeats_extend_leases_and_report_runs_taken_over(store: Store) {
    let (x, y) = (run("x", RunStatus::Queued), run("y", RunStatus::Queued));
    store.insert_run(&x).await.unwrap();
    store.insert_run(&y).await.unwrap();
    let claimed = store.claim("node-a", 4, 1_000).await.unwrap();
    let ids: Vec<String> = claimed.iter().map(|r| r.id.clone()).collect();
    assert_eq!(ids, [x.id.clone(), y.id.clone()], "oldest first");
    let later = now_ms() + 120_000;
    let held = store.heartbeat("node-a", &ids, later).await.unwrap();
    assert_eq!(held.len(), 2);
    // Renewed: a sweep before the new lease ends leaves them alone.
    assert_eq!(store.requeue_expired(later - 1).await.unwrap(), 0);
    // Another node's heartbeat renews nothing of node-a's.
    assert!(
        store
            .heartbeat("node-b", &ids, later)
            .await
            .unwrap()
            .is_empty()
    );
    // y is taken over after a lapse: node-a's next heartbeat no longer holds it.
    store.requeue_expired(later + 1).await.unwrap();
    let taken = store.claim("node-b", 1, 60_000).await.unwrap();
    assert_eq!(taken[0].id, x.id);
    let held = store.heartbeat("node-a", &ids, later + 2).await.unwrap();
    assert!(
        held.is_empty(),
        "both were requeued; x is node-b's now: {held:?}"
    );
}

/// Three nodes (stores) claim, run and finish 300 queued runs of a runbook limited to three
/// at a time: each run is claimed once, and no claim ever sees more than three running.
async fn three_nodes_claim_each_run_once_within_the_limit(stores: Vec<Store>) {
    let admission = server::Admission {
        rule_key: "limited".into(),
        max_concurrency: 3,
        ..server::Admission::default()
    };
    let mut ids = std::collections::HashSet::new();
    for _ in 0..300 {
        let r = run("limited", RunStatus::Queued);
        ids.insert(r.id.clone());
        stores[0]
            .admit(r, admission.clone())
            .await
            .unwrap()
            .unwrap();
    }
    let claims: Arc<std::sync::Mutex<Vec<(String, String)>>> = Arc::default();
    let mut tasks = Vec::new();
    for (n, store) in stores.into_iter().enumerate() {
        let claims = claims.clone();
        tasks.push(tokio::spawn(async move {
            let node = format!("node-{n}");
            let mut idle = 0;
            while idle < 50 {
                let got = store.claim(&node, 2, 60_000).await.unwrap();
                if got.is_empty() {
                    idle += 1;
                    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
                    continue;
                }
                idle = 0;
                let running = store
                    .list_runs(&RunFilter {
                        runbook: Some("limited".into()),
                        status: Some(RunStatus::Running),
                        limit: 100,
                    })
                    .await
                    .unwrap()
                    .len();
                assert!(running <= 3, "{running} running at once; the limit is 3");
                for r in got {
                    claims.lock().unwrap().push((r.id.clone(), node.clone()));
                    assert!(
                        store
                            .finish_run(&end(&r.id, RunStatus::Succeeded), r.fence)
                            .await
                            .unwrap()
                    );
                }
            }
            store
        }));
    }
    let mut stores = Vec::new();
    for t in tasks {
        stores.push(t.await.unwrap());
    }
    let claims = claims.lock().unwrap().clone();
    let claimed: std::collections::HashSet<String> =
        claims.iter().map(|(id, _)| id.clone()).collect();
    assert_eq!(claims.len(), 300, "every run claimed exactly once");
    assert_eq!(claimed, ids);
    let nodes: std::collections::HashSet<&str> = claims.iter().map(|(_, n)| n.as_str()).collect();
    assert!(nodes.len() >= 2, "the work was shared: {nodes:?}");
    let succeeded = stores[0]
        .list_runs(&RunFilter {
            status: Some(RunStatus::Succeeded),
            limit: 1000,
            ..RunFilter::default()
        })
        .await
        .unwrap();
    assert_eq!(succeeded.len(), 300);
}

#[tokio::test]
async fn three_nodes_claim_each_run_once_within_the_limit_on_sqlite() {
    let (store, dir) = temp_store().await;
    let url = default_url(&dir);
    let mut stores = vec![store];
    for _ in 0..2 {
        stores.push(Store::open(&url, Durability::Normal).await.unwrap());
    }
    three_nodes_claim_each_run_once_within_the_limit(stores).await;
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test]
async fn three_nodes_claim_each_run_once_within_the_limit_on_postgres() {
    let Some(url) = fresh_postgres().await else {
        return;
    };
    let mut stores = Vec::new();
    for _ in 0..3 {
        stores.push(Store::open(&url, Durability::Full).await.unwrap());
    }
    three_nodes_claim_each_run_once_within_the_limit(stores).await;
}

#[tokio::test]
async fn writes_survive_a_lost_postgres_connection() {
    use sqlx::Connection;
    let Some(url) = fresh_postgres().await else {
        return;
    };
    let store = Store::open(&url, Durability::Full).await.unwrap();
    let before = run("a", RunStatus::Queued);
    store.insert_run(&before).await.unwrap();
    // Cut every connection the store holds, as a server restart or a network cut would.
    let mut admin = sqlx::PgConnection::connect(&url).await.unwrap();
    let killed: i64 = sqlx::query_scalar(
        "SELECT COUNT(pg_terminate_backend(pid)) FROM pg_stat_activity \
         WHERE datname = current_database() AND pid <> pg_backend_pid()",
    )
    .fetch_one(&mut admin)
    .await
    .unwrap();
    assert!(killed >= 1, "the store's connections were cut");
    let after = run("a", RunStatus::Queued);
    store.insert_run(&after).await.unwrap();
    assert_eq!(
        store.get_run(&after.id).await.unwrap().status,
        RunStatus::Queued
    );
    assert_eq!(store.get_run(&before.id).await.unwrap().id, before.id);
}

#[tokio::test]
async fn a_run_whose_row_another_session_references_is_still_claimed_on_postgres() {
    use sqlx::Connection;
    let Some(url) = fresh_postgres().await else {
        return;
    };
    let store = Store::open(&url, Durability::Full).await.unwrap();
    let r = run("a", RunStatus::Queued);
    store.insert_run(&r).await.unwrap();
    // A stalled node's open transaction that inserted a log line for the run: the foreign key
    // holds a key-share lock on the run's row until that transaction ends.
    let mut stalled = sqlx::PgConnection::connect(&url).await.unwrap();
    sqlx::query("BEGIN").execute(&mut stalled).await.unwrap();
    sqlx::query(
        "INSERT INTO logs (run_id, seq, ts, level, source, message) VALUES ($1, 99, 0, 'info', 'engine', 'late')",
    )
    .bind(&r.id)
    .execute(&mut stalled)
    .await
    .unwrap();
    let claimed = store.claim("node-b", 4, 60_000).await.unwrap();
    assert_eq!(claimed.len(), 1, "the run is not hidden from claims");
    sqlx::query("ROLLBACK").execute(&mut stalled).await.unwrap();
}

async fn a_step_recorded_without_waiting_is_committed_by_the_next_write_and_fenced(store: Store) {
    let r = run("check", RunStatus::Queued);
    store.insert_run(&r).await.unwrap();
    let a = store.claim("node-a", 1, 60_000).await.unwrap().remove(0);
    store.insert_step_detached(&step(&r.id, 1), a.fence);
    // A stale claim's record is dropped, as an awaited one would be.
    store.insert_step_detached(&step(&r.id, 2), a.fence - 1);
    // The run's end, queued after them, commits them with it.
    assert!(
        store
            .finish_run(&end(&r.id, RunStatus::Succeeded), a.fence)
            .await
            .unwrap()
    );
    let steps = store.steps(&r.id).await.unwrap();
    assert_eq!(steps.iter().map(|s| s.seq).collect::<Vec<_>>(), [1]);
    assert_eq!(
        store.get_run(&r.id).await.unwrap().status,
        RunStatus::Succeeded
    );
}

/// A worker's request to claim its next run as it ends one.
fn next_for(node: &str) -> Option<ClaimNext> {
    Some(ClaimNext {
        node: node.into(),
        max: 1,
        lease_ms: 60_000,
        unless: tokio_util::sync::CancellationToken::new(),
    })
}

/// End run `id` of runbook `restart` with `status` under `fence`, claiming for `next`.
async fn finish(
    store: &Store,
    id: &str,
    status: RunStatus,
    fence: i64,
    next: Option<ClaimNext>,
) -> (bool, Vec<RunRecord>) {
    store
        .finish_claimed_run(&end(id, status), fence, "restart", None, next)
        .await
        .unwrap()
}

async fn status_of(store: &Store, id: &str) -> RunStatus {
    store.get_run(id).await.unwrap().status
}

/// A run queued and claimed by `node-a` (as queued, and as claimed), then a second queued.
async fn one_claimed_one_queued(store: &Store) -> (RunRecord, RunRecord, RunRecord) {
    let first = run("restart", RunStatus::Queued);
    store.insert_run(&first).await.unwrap();
    let claimed = store.claim("node-a", 1, 60_000).await.unwrap().remove(0);
    let second = run("restart", RunStatus::Queued);
    store.insert_run(&second).await.unwrap();
    (first, claimed, second)
}

#[tokio::test]
async fn the_write_that_ends_a_run_claims_the_workers_next_run_on_sqlite() {
    let (store, dir) = temp_store().await;
    let (first, a, second) = one_claimed_one_queued(&store).await;
    let third = run("restart", RunStatus::Queued);
    store.insert_run(&third).await.unwrap();

    let (recorded, claimed) = finish(
        &store,
        &first.id,
        RunStatus::Succeeded,
        a.fence,
        next_for("node-a"),
    )
    .await;
    assert!(recorded);
    assert_eq!(status_of(&store, &first.id).await, RunStatus::Succeeded);
    // The oldest queued run, claimed as the claim loop would have: running, leased, fenced.
    assert_eq!(claimed.len(), 1);
    let b = &claimed[0];
    assert_eq!(
        (b.id.as_str(), b.status, b.fence, b.node.as_deref()),
        (second.id.as_str(), RunStatus::Running, 1, Some("node-a"))
    );
    assert_eq!(status_of(&store, &second.id).await, RunStatus::Running);
    assert_eq!(status_of(&store, &third.id).await, RunStatus::Queued);

    // Without `next`, nothing more is claimed.
    let (recorded, claimed) = finish(&store, &second.id, RunStatus::Failed, b.fence, None).await;
    assert!(recorded && claimed.is_empty());
    assert_eq!(status_of(&store, &third.id).await, RunStatus::Queued);

    // Nor once the node has begun to shut down.
    let stopping = next_for("node-a").inspect(|c| c.unless.cancel());
    let (_, claimed) = finish(&store, &second.id, RunStatus::Failed, b.fence, stopping).await;
    assert!(claimed.is_empty());
    assert_eq!(status_of(&store, &third.id).await, RunStatus::Queued);

    // A stale end is refused, and the worker's free slot still takes the next run.
    let (recorded, claimed) = finish(
        &store,
        &second.id,
        RunStatus::Succeeded,
        b.fence,
        next_for("node-a"),
    )
    .await;
    assert!(!recorded);
    assert_eq!(status_of(&store, &second.id).await, RunStatus::Failed);
    assert_eq!(
        claimed.iter().map(|r| r.id.as_str()).collect::<Vec<_>>(),
        [third.id.as_str()]
    );
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test]
async fn on_postgres_the_end_of_a_run_leaves_claims_to_the_claim_loop() {
    let Some(store) = pg_store().await else {
        return;
    };
    let (first, a, second) = one_claimed_one_queued(&store).await;
    let (recorded, claimed) = finish(
        &store,
        &first.id,
        RunStatus::Succeeded,
        a.fence,
        next_for("node-a"),
    )
    .await;
    assert!(recorded && claimed.is_empty());
    assert_eq!(status_of(&store, &first.id).await, RunStatus::Succeeded);
    assert_eq!(status_of(&store, &second.id).await, RunStatus::Queued);
}

#[tokio::test]
async fn claims_read_the_queue_from_covering_indexes_on_sqlite() {
    use sqlx::Row;
    let (store, dir) = temp_store().await;
    for (sql, index) in [
        (super::server::OLDEST_QUEUED, "runs_queued"),
        (super::server::RUNNING_COUNTS, "runs_running"),
    ] {
        let plan: Vec<String> =
            sqlx::query(&format!("EXPLAIN QUERY PLAN {}", sql.replace("$1", "8")))
                .fetch_all(&store.inner.read)
                .await
                .unwrap()
                .iter()
                .map(|r| r.try_get::<String, _>(3).unwrap())
                .collect();
        // No visit of the table, no sort: every claim (and on SQLite every run's end) pays it.
        assert_eq!(
            plan,
            [format!(
                "SEARCH runs USING COVERING INDEX {index} (status=?)"
            )],
            "{sql}"
        );
    }
    let _ = std::fs::remove_dir_all(dir);
}

/// On SQLite a claim hands over the run its writer admitted instead of reading it back: what
/// it hands over must be what reading it back gives, on a first claim and on a later one.
async fn a_claimed_run_is_the_run_as_stored(store: Store) {
    let mut r = RunRecord::queued(
        "restart",
        "abc",
        "alert",
        json!({"kind": "alert", "alert": {"labels": {"host": "web-1"}, "startsAt": "x"}}),
        // Floats whose shortest text a parser must read exactly to get them back.
        json!({"host": "web-1", "n": 3, "ratio": 988.4638242514507, "sum": 0.30000000000000004}),
        false,
    );
    // The keys stored are the admission's, whatever the record says.
    r.trigger_id = None;
    let admission = Admission {
        trigger_id: Some("alert:0".into()),
        lock_key: Some("web-1".into()),
        rule_key: "web-1".into(),
        max_concurrency: 4,
        alert_key: Some("fp@x".into()),
        ..Admission::default()
    };
    let admitted = store.admit(r, admission).await.unwrap().unwrap();
    let claimed = store.claim("node-a", 1, 1_000).await.unwrap().remove(0);
    assert_eq!(claimed, store.get_run(&admitted.id).await.unwrap());
    assert_eq!(
        (claimed.trigger_id.as_deref(), claimed.lock_key.as_deref()),
        (Some("alert:0"), Some("web-1"))
    );
    assert_eq!(
        (claimed.status, claimed.attempt, claimed.fence),
        (RunStatus::Running, 1, 1)
    );

    // Put back (its lease lapsed) and claimed again: the reason it was put back comes along.
    assert_eq!(store.requeue_expired(now_ms() + 60_000).await.unwrap(), 1);
    let again = store.claim("node-b", 1, 60_000).await.unwrap().remove(0);
    assert_eq!(again, store.get_run(&admitted.id).await.unwrap());
    assert_eq!((again.attempt, again.node.as_deref()), (2, Some("node-b")));
    assert!(again.reason.unwrap().contains("stopped renewing its lease"));
}

#[test]
fn the_writer_keeps_a_bounded_number_of_admitted_runs_and_ages_out_the_unclaimed() {
    use super::db::Admitted;
    let queued_at = |ms: i64| {
        let mut r = run("disk", RunStatus::Queued);
        r.queued_at = ms;
        r
    };
    let mut admitted = Admitted::default();
    let first = queued_at(0);
    admitted.insert(first.clone());
    for _ in 1..Admitted::CAPACITY {
        admitted.insert(queued_at(1));
    }
    // Full of runs still fresh: a new one is not kept (its claim reads it back).
    let fresh = queued_at(Admitted::STALE_MS);
    admitted.insert(fresh.clone());
    assert_eq!(admitted.take(&fresh.id), None);
    // Once the oldest is stale, it makes room.
    let later = queued_at(Admitted::STALE_MS + 1);
    admitted.insert(later.clone());
    assert_eq!(admitted.take(&first.id), None);
    assert_eq!(admitted.take(&later.id), Some(later.clone()));
    assert_eq!(admitted.take(&later.id), None, "handed out once");
    // Whatever nobody claimed goes once a run admitted a minute later arrives.
    let quiet = queued_at(10 * Admitted::STALE_MS);
    admitted.insert(quiet.clone());
    assert_eq!(admitted.take(&fresh.id), None);
    assert_eq!(admitted.take(&quiet.id), Some(quiet));
}
