//! The engine's epoch clock: a thread that advances the epoch every tick while guest code may
//! run, and sleeps while none has run for a while.
//!
//! Epoch interruption is how a guest that computes past its deadline is stopped and how a
//! long guest gives its tokio worker up ([`super::arm_epochs`]). A clock ticking forever
//! would wake an idle server a hundred times a second for nothing, so every store that runs
//! guest code holds an [`Awake`] for its lifetime: the clock ticks while any is held, or one
//! was taken within the last [`IDLE_AFTER`] ticks (steady traffic of short calls never puts
//! it to sleep, so no call pays for waking it), and otherwise parks until the next one is
//! taken.

use std::sync::Arc;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::Thread;
use std::time::Duration;
use wasmtime::Engine;

/// How often the epoch advances while guests may run: the granularity of call deadlines.
pub(super) const EPOCH_TICK: Duration = Duration::from_millis(10);

/// Ticks without any guest before the clock sleeps (one second).
pub(super) const IDLE_AFTER: u32 = 100;

/// What the clock's thread and the stores running guests share.
#[derive(Default)]
struct Shared {
    /// Stores that have taken an [`Awake`], ever.
    entered: AtomicU64,
    /// Of those, the ones dropped since.
    left: AtomicU64,
    /// The clock is parked, or about to park: whoever enters must unpark it.
    asleep: AtomicBool,
    /// The clock's owner is gone: its thread ends.
    stopped: AtomicBool,
    /// The clock's thread, set before it first parks.
    thread: OnceLock<Thread>,
}

impl Shared {
    fn wake(&self) {
        if let Some(thread) = self.thread.get() {
            thread.unpark();
        }
    }
}

/// The clock of one engine; dropping it ends its thread.
pub(super) struct EpochClock {
    shared: Arc<Shared>,
}

/// Held by a store while it may run guest code: the clock ticks meanwhile.
pub(super) struct Awake {
    shared: Arc<Shared>,
}

impl Drop for Awake {
    fn drop(&mut self) {
        self.shared.left.fetch_add(1, Ordering::SeqCst);
    }
}

impl EpochClock {
    /// Start the clock of `engine`: every `tick` while guests may run, asleep after
    /// `idle_after` ticks without any. It also ends when the engine is dropped.
    pub(super) fn start(engine: &Engine, tick: Duration, idle_after: u32) -> EpochClock {
        let shared = Arc::new(Shared::default());
        let weak = engine.weak();
        let clock = shared.clone();
        let spawned = std::thread::Builder::new()
            .name("runloom-epoch".into())
            .spawn(move || {
                let _ = clock.thread.set(std::thread::current());
                let mut seen = clock.entered.load(Ordering::SeqCst);
                let mut idle = 0;
                while !clock.stopped.load(Ordering::SeqCst) {
                    let Some(engine) = weak.upgrade() else { return };
                    engine.increment_epoch();
                    drop(engine);
                    std::thread::sleep(tick);
                    // `left` first: a store still held when `entered` is read keeps the two
                    // apart, whatever entered and left in between.
                    let left = clock.left.load(Ordering::SeqCst);
                    let entered = clock.entered.load(Ordering::SeqCst);
                    if entered != seen || entered != left {
                        seen = entered;
                        idle = 0;
                        continue;
                    }
                    idle += 1;
                    if idle < idle_after {
                        continue;
                    }
                    clock.asleep.store(true, Ordering::SeqCst);
                    // A store that entered before `asleep` was set is seen here; one after
                    // it sees `asleep` and unparks (an unpark before the park still counts).
                    if clock.entered.load(Ordering::SeqCst) == seen
                        && !clock.stopped.load(Ordering::SeqCst)
                    {
                        std::thread::park();
                    }
                    clock.asleep.store(false, Ordering::SeqCst);
                }
            });
        if let Err(e) = spawned {
            tracing::error!(error = %e, "cannot start the epoch thread; plugin deadlines will not fire");
        }
        EpochClock { shared }
    }

    /// Keep the clock ticking until the returned value is dropped.
    pub(super) fn awake(&self) -> Awake {
        self.shared.entered.fetch_add(1, Ordering::SeqCst);
        if self.shared.asleep.load(Ordering::SeqCst) {
            self.shared.wake();
        }
        Awake {
            shared: self.shared.clone(),
        }
    }

    /// The clock is parked (or about to park) for want of guests.
    #[cfg(test)]
    fn asleep(&self) -> bool {
        self.shared.asleep.load(Ordering::SeqCst)
    }
}

impl Drop for EpochClock {
    fn drop(&mut self) {
        self.shared.stopped.store(true, Ordering::SeqCst);
        self.shared.wake();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    const TICK: Duration = Duration::from_millis(2);

    fn until(what: &str, mut done: impl FnMut() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !done() {
            assert!(Instant::now() < deadline, "timed out waiting until {what}");
            std::thread::sleep(TICK);
        }
    }

    /// An engine whose stores are interrupted at every epoch tick.
    fn engine() -> Engine {
        let mut config = wasmtime::Config::new();
        config.epoch_interruption(true);
        Engine::new(&config).unwrap()
    }

    #[test]
    fn the_clock_sleeps_without_guests_and_wakes_for_one() {
        let engine = engine();
        let clock = EpochClock::start(&engine, TICK, 5);
        until("the idle clock sleeps", || clock.asleep());

        let awake = clock.awake();
        until("a guest wakes the clock", || !clock.asleep());
        // Held for many idle periods, it keeps the clock ticking.
        std::thread::sleep(TICK * 50);
        assert!(!clock.asleep(), "the clock slept while a guest could run");

        drop(awake);
        until("the clock sleeps again", || clock.asleep());
    }

    #[test]
    fn short_guests_one_after_another_keep_the_clock_awake() {
        let engine = engine();
        let idle_after = 50;
        let clock = EpochClock::start(&engine, TICK, idle_after);
        until("the idle clock sleeps", || clock.asleep());
        let first = clock.awake();
        until("a guest wakes the clock", || !clock.asleep());
        drop(first);
        // Only a gap this long between two guests may let it park (a stalled test thread).
        let gap = TICK * (idle_after - 1);
        let mut last = Instant::now();
        let steady = last + TICK * 200;
        while Instant::now() < steady {
            drop(clock.awake());
            let since = last.elapsed();
            last = Instant::now();
            if since < gap {
                assert!(!clock.asleep(), "the clock slept under steady traffic");
            }
            std::thread::sleep(TICK / 4);
        }
    }

    #[test]
    fn dropping_the_clock_ends_its_thread_even_asleep() {
        let engine = engine();
        let clock = EpochClock::start(&engine, TICK, 1);
        until("the idle clock sleeps", || clock.asleep());
        let thread = clock.shared.clone();
        drop(clock);
        // The thread holds the last other reference to the shared state.
        until("the clock's thread ends", || {
            Arc::strong_count(&thread) == 1
        });
    }
}
