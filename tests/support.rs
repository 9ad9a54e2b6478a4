//! Helpers shared by the end-to-end tests.

use runloom::plugin::{HostConfig, Plugin, PluginHost};
use std::path::PathBuf;

/// The compiled-plugin cache shared by every test in this binary (compiling is slow; caching
/// is itself under test in `plugin_host`).
pub(crate) fn cache_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("plugin-cache")
}

/// A plugin host with a small pool and the shared cache.
pub(crate) fn host() -> PluginHost {
    host_with_cache(cache_dir())
}

/// A plugin host with a small pool caching compiled plugins in `dir`.
pub(crate) fn host_with_cache(dir: PathBuf) -> PluginHost {
    PluginHost::new(HostConfig {
        cache_dir: Some(dir),
        max_concurrent_calls: 16,
        ..HostConfig::default()
    })
    .expect("plugin host")
}

/// The file of a test fixture component, by behaviour name (`sleep-forever`).
pub(crate) fn fixture_path(name: &str) -> PathBuf {
    PathBuf::from(env!("RUNLOOM_FIXTURE_DIR"))
        .join(format!("fixture_{}.wasm", name.replace('-', "_")))
}

/// The bytes of a test fixture component.
pub(crate) fn fixture_bytes(name: &str) -> Vec<u8> {
    let path = fixture_path(name);
    std::fs::read(&path).unwrap_or_else(|e| panic!("fixture {}: {e}", path.display()))
}

/// Load a test fixture.
pub(crate) async fn fixture(host: &PluginHost, name: &str) -> Plugin {
    host.load(&format!("fixture:{name}"), fixture_bytes(name))
        .await
        .unwrap_or_else(|e| panic!("loading fixture `{name}`: {e}"))
}

/// The bytes of a standard plugin embedded in the runtime (`hello`, `http-check`).
pub(crate) fn builtin_bytes(name: &str) -> Vec<u8> {
    runloom::builtin::standard_plugins()
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, b)| b.to_vec())
        .unwrap_or_else(|| panic!("no standard plugin `{name}`"))
}

/// Load a standard plugin.
pub(crate) async fn builtin(host: &PluginHost, name: &str) -> Plugin {
    host.load(&format!("builtin:{name}"), builtin_bytes(name))
        .await
        .unwrap_or_else(|e| panic!("loading `{name}`: {e}"))
}

/// An engine in a scratch directory: `runloom.toml`, a plugin directory holding the chosen
/// fixtures, a real SQLite store, and an executor. Dropped with its directory.
pub(crate) struct Harness {
    pub(crate) dir: PathBuf,
    pub(crate) config: std::sync::Arc<runloom::config::Config>,
    pub(crate) host: PluginHost,
    pub(crate) registry: std::sync::Arc<runloom::plugin::Registry>,
    pub(crate) store: runloom::store::Store,
    pub(crate) executor: runloom::executor::Executor,
}

impl Harness {
    /// `config` is the body of runloom.toml after `version = 1`; `{dir}` in it is replaced by
    /// the scratch directory. `fixtures` are copied into the plugin directory.
    pub(crate) async fn new(config: &str, fixtures: &[&str]) -> Harness {
        let dir = std::env::temp_dir().join(format!(
            "runloom-harness-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, std::sync::atomic::Ordering::SeqCst)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("data/plugins")).unwrap();
        for f in fixtures {
            std::fs::copy(
                fixture_path(f),
                dir.join("data/plugins").join(format!("{f}.wasm")),
            )
            .unwrap();
        }
        let text = format!(
            "version = 1\ndata_dir = \"data\"\nrunbook_dir = \"runbooks\"\n{}",
            config.replace("{dir}", &dir.display().to_string())
        );
        std::fs::write(dir.join("runloom.toml"), &text).unwrap();
        let config = runloom::config::Config::parse(&text, &dir.join("runloom.toml")).unwrap();
        let host = host();
        let registry =
            std::sync::Arc::new(runloom::plugin::Registry::load(&host, &config.plugin_dir).await);
        assert!(registry.problems().is_empty(), "{:?}", registry.problems());
        let store = runloom::store::Store::open(&config.store_url(), config.durability)
            .await
            .unwrap();
        let config = std::sync::Arc::new(config);
        let executor = runloom::executor::Executor::new(
            host.clone(),
            registry.clone(),
            config.clone(),
            store.clone(),
        );
        Harness {
            dir,
            config,
            host,
            registry,
            store,
            executor,
        }
    }

    /// Write `runbooks/<name>/runbook.toml` and `main.rhai`, and load it.
    pub(crate) async fn runbook(
        &self,
        name: &str,
        toml: &str,
        rhai: &str,
    ) -> std::sync::Arc<runloom::catalog::Prepared> {
        let rb = self.dir.join("runbooks").join(name);
        std::fs::create_dir_all(&rb).unwrap();
        std::fs::write(rb.join("runbook.toml"), toml).unwrap();
        std::fs::write(rb.join("main.rhai"), rhai).unwrap();
        let names = self
            .registry
            .plugins()
            .map(|p| p.name().to_string())
            .collect();
        let ctx = runloom::runbook::LoadContext {
            config: &self.config,
            plugins: &names,
        };
        match runloom::catalog::prepare(&rb, &ctx, &self.host).await {
            Ok(p) => std::sync::Arc::new(p),
            Err(errors) => panic!("runbook `{name}`: {errors:?}"),
        }
    }

    /// Enqueue and execute a run to its end.
    pub(crate) async fn run(
        &self,
        runbook: &std::sync::Arc<runloom::catalog::Prepared>,
        params: serde_json::Value,
        dry_run: bool,
    ) -> runloom::run::RunRecord {
        let request = runloom::executor::RunRequest::manual(
            params.as_object().cloned().unwrap_or_default(),
            dry_run,
        );
        let run = self.executor.enqueue(runbook, request).await.unwrap();
        self.executor
            .execute(
                runbook.clone(),
                run,
                tokio_util::sync::CancellationToken::new(),
                None,
            )
            .await
            .unwrap()
    }
}

impl Drop for Harness {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);

/// A scratch directory for a node: `runloom.toml` (with `extra` appended; `{dir}` replaced),
/// `runbooks/<name>/{runbook.toml,main.rhai}`, and `fixtures` copied into the plugin directory.
/// Removed when dropped.
pub(crate) fn node_dir(
    extra: &str,
    runbooks: &[(&str, &str, &str)],
    fixtures: &[&str],
) -> crate::scratch::ScratchDir {
    let dir = crate::scratch::ScratchDir::new("runloom-node");
    std::fs::create_dir_all(dir.join("data/plugins")).unwrap();
    for f in fixtures {
        std::fs::copy(
            fixture_path(f),
            dir.join("data/plugins").join(format!("{f}.wasm")),
        )
        .unwrap();
    }
    for (name, toml, rhai) in runbooks {
        let rb = dir.join("runbooks").join(name);
        std::fs::create_dir_all(&rb).unwrap();
        std::fs::write(rb.join("runbook.toml"), toml).unwrap();
        std::fs::write(rb.join("main.rhai"), rhai).unwrap();
    }
    let text = format!(
        "version = 1\ndata_dir = \"data\"\nrunbook_dir = \"runbooks\"\n{}",
        extra.replace("{dir}", &dir.display().to_string())
    );
    std::fs::write(dir.join("runloom.toml"), text).unwrap();
    // Share compiled plugins with the rest of the suite (the link must not dangle, or every
    // node compiles every plugin again).
    std::fs::create_dir_all(cache_dir()).unwrap();
    let _ = std::os::unix::fs::symlink(cache_dir(), dir.join("data/cache"));
    dir
}

/// Start a node on `dir` (see [`node_dir`]) with `workers` workers and no scheduler.
pub(crate) async fn start_node(
    dir: &std::path::Path,
    workers: usize,
    grace: std::time::Duration,
) -> std::sync::Arc<runloom::node::Node> {
    let config = runloom::config::Config::load(Some(&dir.join("runloom.toml"))).unwrap();
    let options = runloom::node::NodeOptions {
        name: "test-node".into(),
        workers,
        poll: std::time::Duration::from_millis(50),
        shutdown_grace: grace,
        schedule: false,
        ..runloom::node::NodeOptions::default()
    };
    let node = runloom::node::Node::start(config, options).await.unwrap();
    assert!(
        node.catalog.errors().is_empty(),
        "{:?}",
        node.catalog.errors()
    );
    node
}

/// Poll `check` every 20 ms until it returns `Some`, for at most `limit`.
pub(crate) async fn wait_for<T, F, Fut>(limit: std::time::Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = std::time::Instant::now() + limit;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "condition not met within {limit:?}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

/// The URL of a fresh, empty PostgreSQL database named after `purpose`, or `None` (with the
/// reason printed) when `RUNLOOM_TEST_POSTGRES_URL` is unset or its server is down.
pub(crate) async fn fresh_postgres(purpose: &str) -> Option<String> {
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
        "runloom_{purpose}_{}_{:08x}",
        std::process::id(),
        rand::random::<u32>()
    );
    conn.execute(format!("CREATE DATABASE {name}").as_str())
        .await
        .unwrap();
    let (prefix, _) = base.rsplit_once('/').unwrap();
    Some(format!("{prefix}/{name}"))
}
