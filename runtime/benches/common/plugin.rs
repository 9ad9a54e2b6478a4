//! Warm plugin calls: the standard `hello` plugin's `greet` action through
//! [`PluginHost::call`] — a fresh `Store`, instantiation, the call, JSON in and out — with the
//! default host configuration (pooling allocator) and default limits.

use super::{Sample, micros};
use runloom::plugin::{CallRequest, HostConfig, PluginHost};
use std::time::{Duration, Instant};

/// Untimed calls first, then timed ones: enough for a stable p99 in about a second.
pub(crate) const WARMUP: usize = 2_000;
pub(crate) const ITERS: usize = 30_000;

/// The target's bound on every call (PRODUCT.md: "never above 50 µs").
pub(crate) const NEVER_ABOVE: Duration = Duration::from_micros(50);

/// The embedded bytes of the standard plugin `name`.
pub(crate) fn standard_plugin(name: &str) -> &'static [u8] {
    runloom::builtin::standard_plugins()
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, bytes)| *bytes)
        .unwrap_or_else(|| panic!("no standard plugin `{name}`"))
}

/// One timed call and what the calling thread went through during it.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Call {
    /// Call → result.
    pub(crate) took: Duration,
    /// The calling thread's CPU time meanwhile (`CLOCK_THREAD_CPUTIME_ID`), or `None` when
    /// the call went on on another thread. It leaves out the time the kernel knows the thread
    /// was not running (preempted, or steal time the hypervisor reports) and counts any
    /// interrupt handled on its CPU (kernels without `CONFIG_IRQ_TIME_ACCOUNTING` charge that
    /// to the running thread), and any stall of the vCPU the hypervisor does not report.
    pub(crate) cpu: Option<Duration>,
    /// What the operating system did to the calling thread meanwhile.
    pub(crate) disturbed: Disturbance,
}

/// What the kernel did to the calling thread during a call, read with
/// `getrusage(RUSAGE_THREAD)` before and after it (outside the timed window).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Disturbance {
    /// Nothing the counters show.
    None,
    /// The task went on on another worker thread.
    Moved,
    /// The scheduler took the CPU away (an involuntary context switch).
    Preempted,
    /// The thread slept (a voluntary context switch): the call waited for something.
    Slept,
    /// The thread took page faults.
    Faulted,
}

impl Disturbance {
    /// How a reader names it.
    pub(crate) fn describe(self) -> &'static str {
        match self {
            Disturbance::None => "with none of these",
            Disturbance::Moved => "moved to another thread",
            Disturbance::Preempted => "preempted by the OS scheduler",
            Disturbance::Slept => "slept (waited for something)",
            Disturbance::Faulted => "took page faults",
        }
    }
}

/// The calling thread's counters that say why a short operation took long.
#[derive(Clone, Copy, PartialEq, Eq)]
struct ThreadCounters {
    tid: i64,
    preempted: i64,
    slept: i64,
    faults: i64,
}

impl ThreadCounters {
    fn now() -> ThreadCounters {
        // SAFETY: getrusage writes one `rusage` for the calling thread into the zeroed
        // value it is given; gettid has no arguments.
        let (usage, tid) = unsafe {
            let mut usage: libc::rusage = std::mem::zeroed();
            libc::getrusage(libc::RUSAGE_THREAD, &mut usage);
            (usage, libc::gettid())
        };
        ThreadCounters {
            tid: i64::from(tid),
            preempted: usage.ru_nivcsw,
            slept: usage.ru_nvcsw,
            faults: usage.ru_minflt + usage.ru_majflt,
        }
    }

    /// What changed between `self` and `after`, the most telling first.
    fn since(self, after: ThreadCounters) -> Disturbance {
        if after.tid != self.tid {
            Disturbance::Moved
        } else if after.preempted != self.preempted {
            Disturbance::Preempted
        } else if after.slept != self.slept {
            Disturbance::Slept
        } else if after.faults != self.faults {
            Disturbance::Faulted
        } else {
            Disturbance::None
        }
    }
}

/// The calling thread's CPU clock.
fn thread_cpu_time() -> Duration {
    let mut now = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes one `timespec` into the value it is given.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut now) };
    assert_eq!(rc, 0, "clock_gettime(CLOCK_THREAD_CPUTIME_ID)");
    Duration::new(
        u64::try_from(now.tv_sec).unwrap_or(0),
        u32::try_from(now.tv_nsec).unwrap_or(0),
    )
}

/// Run `op`, timing it and reading what the calling thread went through meanwhile (the
/// counters are read outside the timed window).
async fn observed<T>(op: impl std::future::Future<Output = T>) -> (Call, T) {
    let before = ThreadCounters::now();
    let cpu_before = thread_cpu_time();
    let start = Instant::now();
    let out = op.await;
    let took = start.elapsed();
    let cpu = thread_cpu_time().saturating_sub(cpu_before);
    let disturbed = before.since(ThreadCounters::now());
    let cpu = (disturbed != Disturbance::Moved).then_some(cpu);
    (
        Call {
            took,
            cpu,
            disturbed,
        },
        out,
    )
}

/// A CPU-only loop of `rounds` xorshift steps: no memory beyond registers, no system call.
#[inline(never)]
fn spin(rounds: u64) -> u64 {
    let mut x = 0x9E37_79B9_7F4A_7C15_u64;
    for _ in 0..std::hint::black_box(rounds) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
    }
    x
}

/// How many [`spin`] rounds last about `target` on this thread.
fn calibrate(target: Duration) -> u64 {
    const PROBE: u64 = 1_000_000;
    let fastest = (0..5)
        .map(|_| {
            let start = Instant::now();
            std::hint::black_box(spin(PROBE));
            start.elapsed()
        })
        .min()
        .unwrap_or(Duration::from_millis(1));
    (target.as_secs_f64() / fastest.as_secs_f64() * PROBE as f64).max(1.0) as u64
}

/// Timed plugin calls and, interleaved with them, their control.
pub(crate) struct WarmCalls {
    /// The calls of `hello.greet`.
    pub(crate) calls: Vec<Call>,
    /// The control for the calls' tail: a fixed CPU-only loop ([`spin`]) calibrated to last
    /// as long as the warm-up calls' median, timed right after each call in the same way, on
    /// the same thread, with the plugin host (and its epoch thread) alive. It does the same
    /// work every time, so whatever makes one take longer is the machine's (interrupts, the
    /// scheduler, the hypervisor), not the code's.
    pub(crate) control: Vec<Call>,
}

/// `iters` timed calls of `hello.greet` after `warmup` untimed ones, one at a time inside a
/// task on `rt` (so they run on a worker thread, as a server's request handler would), each
/// followed by one timed run of the control.
pub(crate) fn warm_calls(rt: &tokio::runtime::Runtime, warmup: usize, iters: usize) -> WarmCalls {
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
            let mut warm = Vec::with_capacity(warmup);
            for _ in 0..warmup {
                let start = Instant::now();
                call().await.expect("greet");
                warm.push(start.elapsed());
            }
            warm.sort_unstable();
            let rounds = calibrate(warm.get(warm.len() / 2).copied().unwrap_or_default());
            let mut calls = Vec::with_capacity(iters);
            let mut control = Vec::with_capacity(iters);
            for _ in 0..iters {
                let (timed, out) = observed(call()).await;
                calls.push(timed);
                out.expect("greet");
                let (timed, out) = observed(async { spin(rounds) }).await;
                control.push(timed);
                std::hint::black_box(out);
            }
            WarmCalls { calls, control }
        })
        .await
        .expect("benchmark task")
    })
}

/// Of `calls`, how many took longer than `limit`, by what disturbed them, most first.
pub(crate) fn slower_than(calls: &[Call], limit: Duration) -> Vec<(Disturbance, usize)> {
    let mut counts: Vec<(Disturbance, usize)> = Vec::new();
    for call in calls.iter().filter(|c| c.took > limit) {
        match counts.iter_mut().find(|(d, _)| *d == call.disturbed) {
            Some((_, n)) => *n += 1,
            None => counts.push((call.disturbed, 1)),
        }
    }
    counts.sort_by_key(|(_, n)| std::cmp::Reverse(*n));
    counts
}

/// How many of `runs` took longer than `limit`.
pub(crate) fn count_above(runs: &[Call], limit: Duration) -> usize {
    runs.iter().filter(|c| c.took > limit).count()
}

/// Of the calls slower than `limit` (wall clock), how many also spent more than `limit` of
/// the calling thread's CPU time.
pub(crate) fn own_cpu(calls: &[Call], limit: Duration) -> usize {
    calls
        .iter()
        .filter(|c| c.took > limit && c.cpu.is_some_and(|cpu| cpu > limit))
        .count()
}

/// Each call slower than `limit`, one line: its wall time, its CPU time, what disturbed it.
pub(crate) fn describe_slow(calls: &[Call], limit: Duration) -> Vec<String> {
    calls
        .iter()
        .filter(|c| c.took > limit)
        .map(|c| {
            let cpu = c.cpu.map_or_else(
                || "its CPU clock not comparable".to_string(),
                |cpu| format!("{} µs on its CPU", micros(cpu)),
            );
            format!("{} µs, {cpu}, {}", micros(c.took), c.disturbed.describe())
        })
        .collect()
}

/// One line on `runs`: wall-clock p50, p99, p99.9 and maximum, how many went above `limit`
/// and what disturbed those, and the calling thread's CPU time (p50, maximum).
pub(crate) fn summary(runs: &[Call], limit: Duration) -> String {
    let us = |d: Duration| format!("{} µs", micros(d));
    let wall = Sample::new("wall", runs.iter().map(|c| c.took).collect());
    let why: Vec<String> = slower_than(runs, limit)
        .iter()
        .map(|(d, n)| format!("{n} {}", d.describe()))
        .collect();
    let cpu: Vec<Duration> = runs.iter().filter_map(|c| c.cpu).collect();
    let cpu = if cpu.is_empty() {
        "no CPU time comparable".to_string()
    } else {
        let cpu = Sample::new("cpu", cpu);
        format!(
            "CPU time p50 {}, max {}",
            us(cpu.percentile(50.0)),
            us(cpu.percentile(100.0))
        )
    };
    format!(
        "{} timed: p50 {}, p99 {}, p99.9 {}, max {}; {} above {}{}; {cpu}",
        runs.len(),
        us(wall.percentile(50.0)),
        us(wall.percentile(99.0)),
        us(wall.percentile(99.9)),
        us(wall.percentile(100.0)),
        count_above(runs, limit),
        us(limit),
        if why.is_empty() {
            String::new()
        } else {
            format!(" ({})", why.join(", "))
        },
    )
}
