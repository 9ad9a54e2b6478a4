//! The timing harness every benchmark shares: per-operation samples, nearest-rank
//! percentiles, and one table format. Small on purpose: one `Instant` pair per operation gives
//! the tail percentiles Runloom's targets are written in, and adds no dependency.

#![allow(dead_code, reason = "each bench uses the parts it needs")]

use std::time::{Duration, Instant};

/// Sorted per-operation durations of one measurement.
pub(crate) struct Sample {
    /// What was measured.
    pub(crate) name: String,
    /// Durations, ascending.
    pub(crate) sorted: Vec<Duration>,
}

impl Sample {
    /// A sample named `name` from unsorted `times`.
    pub(crate) fn new(name: impl Into<String>, mut times: Vec<Duration>) -> Self {
        times.sort_unstable();
        Self {
            name: name.into(),
            sorted: times,
        }
    }

    /// Nearest-rank percentile.
    pub(crate) fn percentile(&self, p: f64) -> Duration {
        let rank = ((p / 100.0) * self.sorted.len() as f64).ceil() as usize;
        self.sorted[rank.clamp(1, self.sorted.len()) - 1]
    }

    /// Arithmetic mean.
    pub(crate) fn mean(&self) -> Duration {
        self.sorted.iter().sum::<Duration>() / self.sorted.len() as u32
    }
}

/// Time `op` once per iteration, after `warmup` untimed runs.
pub(crate) fn time_sync(warmup: usize, iters: usize, mut op: impl FnMut()) -> Vec<Duration> {
    for _ in 0..warmup {
        op();
    }
    (0..iters)
        .map(|_| {
            let start = Instant::now();
            op();
            start.elapsed()
        })
        .collect()
}

/// `d` in microseconds with one decimal.
pub(crate) fn micros(d: Duration) -> String {
    format!("{:.1}", d.as_secs_f64() * 1e6)
}

/// Print samples as a table; with `base`, a last column gives each p50 relative to it.
pub(crate) fn print_table(samples: &[&Sample], base: Option<Duration>) {
    let width = samples
        .iter()
        .map(|s| s.name.len())
        .max()
        .unwrap_or(9)
        .max(9);
    print!(
        "{:<width$} {:>7} {:>10} {:>10} {:>10} {:>10}",
        "operation", "n", "p50 µs", "p90 µs", "p99 µs", "mean µs"
    );
    if base.is_some() {
        print!(" {:>12}", "p50 / base");
    }
    println!();
    for s in samples {
        let p50 = s.percentile(50.0);
        print!(
            "{:<width$} {:>7} {:>10} {:>10} {:>10} {:>10}",
            s.name,
            s.sorted.len(),
            micros(p50),
            micros(s.percentile(90.0)),
            micros(s.percentile(99.0)),
            micros(s.mean()),
        );
        if let Some(base) = base {
            print!(" {:>11.1}×", p50.as_secs_f64() / base.as_secs_f64());
        }
        println!();
    }
}
