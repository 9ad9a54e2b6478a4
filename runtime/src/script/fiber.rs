//! A script's own stack: a Rhai body runs as a coroutine inside the run's tokio task, and a
//! host function that has to wait for the engine suspends it instead of blocking a thread.
//!
//! Rhai is synchronous: its host functions must return a value, while the engine's
//! [`RunApi`](crate::runbook::api::RunApi) is async. The body therefore runs on a separate,
//! small stack ([`corosensei`]). [`Fiber`] is the future the run's task awaits: each poll
//! resumes the body where it stopped; a host function polls its engine future in place
//! ([`Suspender::wait`]) and, while that future is pending, suspends the body, so the poll
//! returns `Pending` and the worker thread goes on with other tasks. A run therefore costs no
//! thread and no cross-thread wake-up: no hop to a blocking thread at its start, none for each
//! plugin call, and a thousand sleeping runs are a thousand suspended stacks, not a thousand
//! threads. A body that computes for long gives its thread up every [`TIME_SLICE`]
//! (`Suspender::yield_if_due`, from the operation hook), as a well-behaved task does.
//!
//! # Why the coroutine may move between threads
//!
//! `corosensei` does not make coroutines `Send`: it cannot know what the code on the stack
//! holds while suspended. Here, that code is ours and Rhai's: Rhai is built with its `sync`
//! feature (all its values are `Send + Sync`) and keeps nothing in thread-locals; the host
//! functions hold the run's context (`Send + Sync`) and the engine's futures (`Send`), and
//! touch the tokio runtime's thread-locals only inside a poll, never across a suspension. A
//! tokio worker may therefore resume the body on another thread, as it may poll any `Send`
//! future there: that is what the `unsafe impl Send` below relies on, and why nothing
//! running on a script stack may keep a reference to a thread-local across a host call.

// A dropped run's body is unwound off its stack; with `panic = "abort"` that would abort the
// whole process instead.
#[cfg(panic = "abort")]
compile_error!("script fibers need `panic = \"unwind\"`: a dropped run is unwound");

use std::cell::UnsafeCell;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::ptr;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use corosensei::stack::{DefaultStack, Stack};
use corosensei::{Coroutine, CoroutineResult, Yielder};
use nix::sys::mman::{MmapAdvise, madvise};

/// Size of a script's stack: the size of the tokio blocking thread's stack that Rhai bodies
/// ran on before, which the nesting limits in `sandbox` are measured against. Address space
/// only: the pages a body never touches are never backed by memory.
const STACK_SIZE: usize = 2 << 20;

/// Finished bodies' stacks kept for the next runs, as many as a busy node runs at once: a
/// reused stack has its pages already faulted in, while a new one costs `mmap`, `mprotect`,
/// a page fault per page it touches and `munmap` (with a TLB shootdown) when it goes.
const SPARE_STACKS: usize = 128;

/// The top of a spare stack that stays in memory. A body that went deeper has the rest given
/// back when it ends, so a spare holds about this much whatever ran on it. Deeper means: its
/// lowest stack address seen (at each operation of the script and each wait) was below this
/// top, or it overwrote the [`CANARY`] just below it (a frame that spans the canary without
/// writing it, or pages touched between two marks, could escape either check alone). A run
/// of the shipped runbooks uses less (its plugin calls run on wasmtime's own stacks).
const KEEP_RESIDENT: usize = 256 << 10;

/// Written just below a stack's [`KEEP_RESIDENT`] top; found overwritten when a body ends,
/// it says the body went deeper.
const CANARY: u64 = 0x5255_4e4c_4f4f_4d21;

/// How long a body may compute before it gives its worker thread up for other tasks (it is
/// polled again at once). The operation hook looks at the clock about every 50 µs.
const TIME_SLICE: Duration = Duration::from_micros(200);

static STACKS: Mutex<Vec<DefaultStack>> = Mutex::new(Vec::new());

/// The handle a body's host functions (and its operation hook) wait and yield through.
///
/// Only the body's coroutine and the [`Fiber`] driving it touch it, and never at the same
/// time: the driver writes before it resumes the body and after the body suspends; the body
/// reads in between.
pub(super) struct Suspender {
    state: UnsafeCell<State>,
}

struct State {
    /// The coroutine's parent link; set when the body starts, null before.
    yielder: *const Yielder<(), ()>,
    /// The waker context of the poll now running the body; null while it is suspended.
    context: *mut Context<'static>,
    /// When the current poll resumed the body.
    resumed_at: Instant,
    /// The lowest stack address the body was seen at ([`Suspender::mark_depth`]).
    lowest: usize,
}

// SAFETY: see the module documentation and `Suspender`: the state is only ever read or
// written by whichever thread is running the body's coroutine or its driver, one at a time,
// and the driver is handed between threads only by the tokio task that owns it.
unsafe impl Send for Suspender {}
// SAFETY: as above; shared references never touch the state concurrently.
unsafe impl Sync for Suspender {}

impl Suspender {
    fn new() -> Self {
        Self {
            state: UnsafeCell::new(State {
                yielder: ptr::null(),
                context: ptr::null_mut(),
                resumed_at: Instant::now(),
                lowest: usize::MAX,
            }),
        }
    }

    /// Wait for `future` from inside the body: poll it in place and, while it is pending,
    /// suspend the body until the run's task is woken and polls it again.
    ///
    /// # Panics
    ///
    /// Called outside a body running in a [`Fiber`]: a bug in the engine.
    pub(super) fn wait<F: Future>(&self, future: F) -> F::Output {
        self.mark_depth();
        let mut future = std::pin::pin!(future);
        loop {
            // SAFETY: called on the body's stack while it runs (the only caller), so the
            // driver is inside `resume` and not touching the state.
            let context = unsafe { (*self.state.get()).context };
            if !context.is_null() {
                // SAFETY: the context outlives this poll: the driver's `poll` set it and is
                // waiting in `resume` for the body to suspend or end.
                if let Poll::Ready(output) = future.as_mut().poll(unsafe { &mut *context }) {
                    return output;
                }
            }
            // Pending, or no poll is running (the fiber is being dropped, and suspending
            // unwinds the body).
            self.suspend();
        }
    }

    /// Note how deep the body's stack is here (called at every operation of the script): a
    /// body that went below the kept top of its stack has the rest given back when it ends.
    #[inline]
    pub(super) fn mark_depth(&self) {
        let here = 0u8;
        let address = ptr::from_ref(std::hint::black_box(&here)) as usize;
        // SAFETY: as in `wait`.
        let state = unsafe { &mut *self.state.get() };
        state.lowest = state.lowest.min(address);
    }

    /// The lowest stack address marked so far (`usize::MAX`: none), for tests.
    #[cfg(test)]
    pub(super) fn lowest_marked(&self) -> usize {
        // SAFETY: read by the test after the body ended or from the body itself.
        unsafe { (*self.state.get()).lowest }
    }

    /// Give the worker thread up if the body has run for its [`TIME_SLICE`] since the last
    /// poll (`now` is the time): wake the task at once and suspend, so other tasks run first.
    pub(super) fn yield_if_due(&self, now: Instant) {
        // SAFETY: as in `wait`.
        let (context, resumed_at) = unsafe {
            let state = &*self.state.get();
            (state.context, state.resumed_at)
        };
        if context.is_null() || now.duration_since(resumed_at) < TIME_SLICE {
            return;
        }
        // SAFETY: as in `wait`.
        unsafe { &*context }.waker().wake_by_ref();
        self.suspend();
    }

    /// Whether the body is being unwound because its run's future was dropped (a cancelled
    /// or timed-out run): it runs, but no poll does. The body should stop at once; any wait
    /// unwinds it further.
    pub(super) fn abandoned(&self) -> bool {
        // SAFETY: as in `wait`.
        unsafe { (*self.state.get()).context.is_null() }
    }

    fn suspend(&self) {
        // SAFETY: as in `wait`.
        let yielder = unsafe { (*self.state.get()).yielder };
        assert!(
            !yielder.is_null(),
            "a script host function waited outside the script's stack"
        );
        // SAFETY: the yielder is the parent link on the coroutine's own stack, valid for as
        // long as the body runs, and this is the body's stack.
        unsafe { &*yielder }.suspend(());
    }
}

/// A body running on its own stack: a future that resumes the body on each poll.
pub(super) struct Fiber<T> {
    coroutine: Option<Coroutine<(), (), T, DefaultStack>>,
    suspender: Arc<Suspender>,
}

// SAFETY: see the module documentation: what the body's stack holds while suspended is
// `Send`, and nothing on it depends on the thread it runs on across a suspension.
unsafe impl<T: Send> Send for Fiber<T> {}

impl<T: 'static> Fiber<T> {
    /// Prepare `body` to run on a stack of its own; it starts at the first poll and is given
    /// the [`Suspender`] its host functions wait through.
    ///
    /// Fails only when no stack can be mapped (the address space or the kernel's map count is
    /// exhausted).
    pub(super) fn new(
        body: impl FnOnce(Arc<Suspender>) -> T + Send + 'static,
    ) -> std::io::Result<Self> {
        let stack = match STACKS.lock().ok().and_then(|mut spare| spare.pop()) {
            Some(stack) => stack,
            None => {
                let stack = DefaultStack::new(STACK_SIZE)?;
                set_canary(&stack);
                stack
            }
        };
        let suspender = Arc::new(Suspender::new());
        let own = Arc::clone(&suspender);
        let coroutine = Coroutine::with_stack(stack, move |yielder: &Yielder<(), ()>, ()| {
            // SAFETY: the driver is inside `resume`; see `Suspender`.
            unsafe { (*own.state.get()).yielder = yielder };
            body(own)
        });
        Ok(Self {
            coroutine: Some(coroutine),
            suspender,
        })
    }
}

impl<T> Future for Fiber<T> {
    /// The body's value, or the payload of a panic in it (the panic does not reach the
    /// worker thread).
    type Output = Result<T, Box<dyn std::any::Any + Send>>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = &mut *self;
        let Some(coroutine) = this.coroutine.as_mut() else {
            panic!("a finished script fiber was polled again");
        };
        {
            // SAFETY: the body is suspended (or not started): nothing else touches the state.
            let state = unsafe { &mut *this.suspender.state.get() };
            // The lifetime is erased only for the length of `resume` below: the pointer is
            // cleared before this poll returns.
            state.context = (cx as *mut Context<'_>).cast::<Context<'static>>();
            state.resumed_at = Instant::now();
        }
        let result = std::panic::catch_unwind(AssertUnwindSafe(|| coroutine.resume(())));
        // SAFETY: the body is suspended or finished.
        unsafe { (*this.suspender.state.get()).context = ptr::null_mut() };
        match result {
            Ok(CoroutineResult::Yield(())) => Poll::Pending,
            Ok(CoroutineResult::Return(value)) => {
                this.finish();
                Poll::Ready(Ok(value))
            }
            Err(panic) => {
                this.coroutine = None;
                Poll::Ready(Err(panic))
            }
        }
    }
}

impl<T> Fiber<T> {
    /// Keep a finished body's stack for the next run, trimmed to [`KEEP_RESIDENT`].
    fn finish(&mut self) {
        let Some(coroutine) = self.coroutine.take() else {
            return;
        };
        let stack = coroutine.into_stack();
        // SAFETY: the body has ended: nothing else touches the state.
        trim_if_deep(&stack, unsafe { (*self.suspender.state.get()).lowest });
        if let Ok(mut spare) = STACKS.lock()
            && spare.len() < SPARE_STACKS
        {
            spare.push(stack);
        }
    }
}

impl<T> Drop for Fiber<T> {
    /// A body dropped before it ended (its run was cancelled or dropped) is unwound here, and
    /// its stack kept for the next run.
    fn drop(&mut self) {
        let Some(coroutine) = self.coroutine.as_mut() else {
            return;
        };
        // A body that catches the unwinding and then panics on its own ends with that panic;
        // it stops here: raised from the coroutine's own drop it would abort the process.
        if std::panic::catch_unwind(AssertUnwindSafe(|| coroutine.force_unwind())).is_err() {
            tracing::warn!("a dropped script panicked while it was unwound");
        }
        if coroutine.done() {
            self.finish();
        }
    }
}

/// Where the [`CANARY`] of `stack` lives: the last word below its top [`KEEP_RESIDENT`]
/// bytes (a stack grows down from its base), well above its guard page.
fn canary_of(stack: &DefaultStack) -> *mut u64 {
    (stack.base().get() - KEEP_RESIDENT - size_of::<u64>()) as *mut u64
}

fn set_canary(stack: &DefaultStack) {
    // SAFETY: the word lies inside the stack's writable mapping, and no body runs on it.
    unsafe { canary_of(stack).write_volatile(CANARY) };
}

/// If the body that ran on `stack` went below its top [`KEEP_RESIDENT`] bytes (its `lowest`
/// address seen, or the canary), give those pages back (pages never touched cost nothing)
/// and set the canary again.
fn trim_if_deep(stack: &DefaultStack, lowest: usize) {
    let low = stack.limit().get();
    let keep_from = stack.base().get() - KEEP_RESIDENT;
    // SAFETY: as in `set_canary`.
    if lowest >= keep_from && unsafe { canary_of(stack).read_volatile() } == CANARY {
        return;
    }
    if let Some(start) = ptr::NonNull::new(low as *mut std::ffi::c_void) {
        // SAFETY: the range lies inside the stack's own mapping (guard page included), and no
        // body runs on it: its contents are not needed, and pages read back zero-filled.
        // Failing leaves the pages as they were, which is harmless.
        let _ = unsafe { madvise(start, keep_from - low, MmapAdvise::MADV_DONTNEED) };
    }
    set_canary(stack);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A run dropped while its body waits is unwound; a body that catches the unwinding and
    /// then panics on its own must not abort the process (corosensei aborts on a panic out
    /// of its own drop).
    #[test]
    fn a_dropped_body_that_panics_while_unwound_does_not_abort() {
        let unwound = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let seen = Arc::clone(&unwound);
        let fiber = Fiber::new(move |suspender: Arc<Suspender>| {
            let waited = std::panic::catch_unwind(AssertUnwindSafe(|| {
                suspender.wait(std::future::pending::<()>());
            }));
            seen.store(waited.is_err(), std::sync::atomic::Ordering::SeqCst);
            panic!("the body's own panic, raised while it is dropped");
        })
        .unwrap();
        let mut fiber = Box::pin(fiber);
        let mut cx = Context::from_waker(std::task::Waker::noop());
        assert!(fiber.as_mut().poll(&mut cx).is_pending());
        drop(fiber);
        assert!(
            unwound.load(std::sync::atomic::Ordering::SeqCst),
            "the waiting body was unwound"
        );
    }

    /// The lowest stack address a body marks is where it went (what `finish` trims by): the
    /// body here recurses 400 KiB deep and marks the depth only at the bottom.
    #[test]
    fn a_body_s_marked_depth_is_the_lowest_it_went() {
        #[inline(never)]
        fn descend(suspender: &Suspender, levels: usize) -> u8 {
            let frame = std::hint::black_box([levels as u8; 1024]);
            if levels == 0 {
                suspender.mark_depth();
                return frame[0];
            }
            descend(suspender, levels - 1).wrapping_add(frame[1])
        }
        let kept = Arc::new(Mutex::new(None));
        let seen = Arc::clone(&kept);
        let fiber = Fiber::new(move |suspender: Arc<Suspender>| {
            let top = 0u8;
            let top = ptr::from_ref(std::hint::black_box(&top)) as usize;
            descend(&suspender, 400);
            *seen.lock().unwrap() = Some((top, Arc::clone(&suspender)));
        })
        .unwrap();
        let mut fiber = Box::pin(fiber);
        let mut cx = Context::from_waker(std::task::Waker::noop());
        assert!(fiber.as_mut().poll(&mut cx).is_ready());
        let (top, suspender) = kept.lock().unwrap().take().unwrap();
        let lowest = suspender.lowest_marked();
        assert!(
            top - lowest >= 400 * 1024,
            "marked {} KiB below the top",
            (top - lowest) / 1024
        );
    }

    /// A spare stack keeps its top; what a deep body wrote below it is given back, and the
    /// canary is set again for the next body.
    #[test]
    fn a_deep_body_s_pages_below_the_kept_top_are_given_back() {
        let stack = DefaultStack::new(STACK_SIZE).unwrap();
        set_canary(&stack);
        let top = (stack.base().get() - 64) as *mut u64;
        let deep = (stack.base().get() - KEEP_RESIDENT - 64 * 1024) as *mut u64;
        // SAFETY: both words lie inside the stack's writable mapping; nothing runs on it.
        unsafe {
            top.write_volatile(7);
            trim_if_deep(&stack, top as usize);
            assert_eq!(
                top.read_volatile(),
                7,
                "a shallow body's stack is left alone"
            );
            deep.write_volatile(9);
            canary_of(&stack).write_volatile(0);
            trim_if_deep(&stack, top as usize);
            assert_eq!(deep.read_volatile(), 0, "the deep page was given back");
            assert_eq!(top.read_volatile(), 7, "the top stays");
            assert_eq!(canary_of(&stack).read_volatile(), CANARY);

            // A body seen that deep, its canary intact (a frame spanned it unwritten).
            deep.write_volatile(9);
            trim_if_deep(&stack, deep as usize);
            assert_eq!(deep.read_volatile(), 0, "the deep page was given back");
            assert_eq!(top.read_volatile(), 7, "the top stays");
        }
    }
}
