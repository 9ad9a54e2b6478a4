//! Warm plugin calls: the standard `hello` plugin's `greet` action through
//! [`PluginHost::call`] — a fresh `Store`, instantiation, the call, JSON in and out — with the
//! default host configuration (pooling allocator) and default limits.

use runloom::plugin::{CallRequest, HostConfig, PluginHost};
use std::time::{Duration, Instant};

/// Untimed calls first, then timed ones: enough for a stable p99 in about a second.
pub(crate) const WARMUP: usize = 2_000;
pub(crate) const ITERS: usize = 30_000;

/// The embedded bytes of the standard plugin `name`.
pub(crate) fn standard_plugin(name: &str) -> &'static [u8] {
    runloom::builtin::standard_plugins()
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, bytes)| *bytes)
        .unwrap_or_else(|| panic!("no standard plugin `{name}`"))
}

/// `iters` timed calls of `hello.greet` after `warmup` untimed ones, one at a time inside a
/// task on `rt` (so they run on a worker thread, as a server's request handler would).
pub(crate) fn warm_calls(
    rt: &tokio::runtime::Runtime,
    warmup: usize,
    iters: usize,
) -> Vec<Duration> {
    rt.block_on(async {
        // Default host configuration, as a server gets it; no cache directory, so the
        // component is compiled once here, outside the timed loop.
        let host = PluginHost::new(HostConfig::default()).expect("plugin host");
        assert!(host.is_pooling(), "expected the pooling allocator");
        let hello = host
            .load("builtin:hello", standard_plugin("hello").to_vec())
            .await
            .expect("load hello");
        tokio::spawn(async move {
            let call = || host.call(&hello, CallRequest::new("greet", r#"{"name":"bench"}"#));
            let first = call().await.expect("greet");
            assert_eq!(first.output["greeting"], "hello, bench");
            for _ in 0..warmup {
                call().await.expect("greet");
            }
            let mut times = Vec::with_capacity(iters);
            for _ in 0..iters {
                let start = Instant::now();
                let out = call().await;
                times.push(start.elapsed());
                out.expect("greet");
            }
            times
        })
        .await
        .expect("benchmark task")
    })
}
