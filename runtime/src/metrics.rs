//! Prometheus metrics of a node, rendered in the text exposition format at `GET /metrics`.
//!
//! Invariant: counting never fails and never blocks a run; label values are runbook, plugin,
//! action and status names only (never parameters, which may be unbounded or sensitive).

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use std::sync::atomic::AtomicI64;
use std::time::Duration;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RunLabels {
    runbook: String,
    status: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RunbookLabel {
    runbook: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CallLabels {
    plugin: String,
    action: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StatusLabel {
    status: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RuleLabel {
    rule: String,
}

fn duration_histogram() -> Histogram {
    // 1 ms to about 9 minutes.
    Histogram::new(exponential_buckets(0.001, 2.0, 20))
}

/// A node's counters, gauges and histograms.
pub struct Metrics {
    registry: Registry,
    runs: Family<RunLabels, Counter>,
    run_duration: Family<RunbookLabel, Histogram, fn() -> Histogram>,
    call_duration: Family<CallLabels, Histogram, fn() -> Histogram>,
    alerts_received: Family<StatusLabel, Counter>,
    alerts_deduplicated: Counter,
    alerts_suppressed: Family<RuleLabel, Counter>,
    queue_depth: Gauge<i64, AtomicI64>,
    running: Gauge<i64, AtomicI64>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Register every metric.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("runloom");
        let runs = Family::<RunLabels, Counter>::default();
        registry.register(
            "runs",
            "Runs that reached a final status, by runbook and status",
            runs.clone(),
        );
        let run_duration =
            Family::<RunbookLabel, Histogram, fn() -> Histogram>::new_with_constructor(
                duration_histogram as fn() -> Histogram,
            );
        registry.register(
            "run_duration_seconds",
            "Run duration from start to end",
            run_duration.clone(),
        );
        let call_duration =
            Family::<CallLabels, Histogram, fn() -> Histogram>::new_with_constructor(
                duration_histogram as fn() -> Histogram,
            );
        registry.register(
            "plugin_call_duration_seconds",
            "Plugin call duration, retries included",
            call_duration.clone(),
        );
        let alerts_received = Family::<StatusLabel, Counter>::default();
        registry.register(
            "alerts_received",
            "Alerts received, by status",
            alerts_received.clone(),
        );
        let alerts_deduplicated = Counter::default();
        registry.register(
            "alerts_deduplicated",
            "Alert notifications for an episode already seen (resends, HA duplicates)",
            alerts_deduplicated.clone(),
        );
        let alerts_suppressed = Family::<RuleLabel, Counter>::default();
        registry.register(
            "alerts_throttled",
            "Alert-triggered runs suppressed by the safety kernel, by rule",
            alerts_suppressed.clone(),
        );
        let queue_depth = Gauge::<i64, AtomicI64>::default();
        registry.register(
            "queue_depth",
            "Runs waiting in the queue",
            queue_depth.clone(),
        );
        let running = Gauge::<i64, AtomicI64>::default();
        registry.register(
            "runs_running",
            "Runs executing on this node",
            running.clone(),
        );
        Self {
            registry,
            runs,
            run_duration,
            call_duration,
            alerts_received,
            alerts_deduplicated,
            alerts_suppressed,
            queue_depth,
            running,
        }
    }

    /// A run reached `status` after `duration` (none for runs that never started).
    pub fn run_finished(&self, runbook: &str, status: &str, duration: Option<Duration>) {
        self.runs
            .get_or_create(&RunLabels {
                runbook: runbook.into(),
                status: status.into(),
            })
            .inc();
        if let Some(d) = duration {
            self.run_duration
                .get_or_create(&RunbookLabel {
                    runbook: runbook.into(),
                })
                .observe(d.as_secs_f64());
        }
    }

    /// A plugin call (with its retries) took `duration`.
    pub fn plugin_call(&self, plugin: &str, action: &str, duration: Duration) {
        self.call_duration
            .get_or_create(&CallLabels {
                plugin: plugin.into(),
                action: action.into(),
            })
            .observe(duration.as_secs_f64());
    }

    /// An alert arrived with `status` (`firing` or `resolved`).
    pub fn alert_received(&self, status: &str) {
        self.alerts_received
            .get_or_create(&StatusLabel {
                status: status.into(),
            })
            .inc();
    }

    /// An alert notification repeated an episode already seen.
    pub fn alert_deduplicated(&self) {
        self.alerts_deduplicated.inc();
    }

    /// An alert-triggered run was suppressed by `rule`.
    pub fn alert_throttled(&self, rule: &str) {
        self.alerts_suppressed
            .get_or_create(&RuleLabel { rule: rule.into() })
            .inc();
    }

    /// Runs executing on this node.
    pub fn set_running(&self, n: i64) {
        self.running.set(n);
    }

    /// The text exposition format, with the current queue depth.
    pub fn render(&self, queue_depth: i64) -> String {
        self.queue_depth.set(queue_depth);
        let mut out = String::new();
        if prometheus_client::encoding::text::encode(&mut out, &self.registry).is_err() {
            out.push_str("# metrics could not be encoded\n");
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counters_and_histograms_in_text_format() {
        let m = Metrics::new();
        m.run_finished("disk", "succeeded", Some(Duration::from_millis(40)));
        m.run_finished("disk", "skipped", None);
        m.plugin_call("disk-check", "check", Duration::from_millis(3));
        m.alert_received("firing");
        m.alert_deduplicated();
        m.alert_throttled("cooldown");
        let text = m.render(7);
        for expected in [
            "runloom_runs_total{runbook=\"disk\",status=\"succeeded\"} 1",
            "runloom_runs_total{runbook=\"disk\",status=\"skipped\"} 1",
            "runloom_run_duration_seconds_count{runbook=\"disk\"} 1",
            "runloom_plugin_call_duration_seconds_count{plugin=\"disk-check\",action=\"check\"} 1",
            "runloom_alerts_received_total{status=\"firing\"} 1",
            "runloom_alerts_deduplicated_total 1",
            "runloom_alerts_throttled_total{rule=\"cooldown\"} 1",
            "runloom_queue_depth 7",
        ] {
            assert!(text.contains(expected), "missing `{expected}` in\n{text}");
        }
    }
}
