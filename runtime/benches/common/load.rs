//! The load generator's own thread: alert senders and the remediation receiver run on a
//! single-threaded tokio runtime on a thread of their own, so the CPU the node under test
//! spends can be told apart from what the bench spends driving it (both share the machine's
//! cores, as before; only the accounting is separate).

use std::future::Future;
use std::time::Duration;

/// A thread named `bench-load` running a current-thread tokio runtime until dropped.
pub(crate) struct LoadThread {
    handle: tokio::runtime::Handle,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl LoadThread {
    pub(crate) fn start() -> LoadThread {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let handle = rt.handle().clone();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("bench-load".into())
            .spawn(move || {
                let _ = rt.block_on(stopped);
            })
            .unwrap();
        LoadThread {
            handle,
            stop: Some(stop),
            thread: Some(thread),
        }
    }

    /// Run `work` on the load thread and wait for its result.
    pub(crate) async fn run<F>(&self, work: F) -> F::Output
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        self.handle.spawn(work).await.unwrap()
    }

    /// CPU time the whole process and the load thread have used so far.
    pub(crate) async fn cpu(&self) -> CpuUsed {
        CpuUsed {
            process: process_cpu(),
            load: self.run(async { thread_cpu() }).await,
        }
    }
}

impl Drop for LoadThread {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// CPU time (user + system) used so far.
#[derive(Clone, Copy, Debug)]
pub(crate) struct CpuUsed {
    /// By every thread of the process.
    pub(crate) process: Duration,
    /// By the load thread alone.
    pub(crate) load: Duration,
}

impl CpuUsed {
    /// CPU used between `self` and `later`: (the node's, that is every thread but the load
    /// thread, and the load thread's).
    pub(crate) fn until(self, later: CpuUsed) -> (Duration, Duration) {
        let load = later.load.saturating_sub(self.load);
        let process = later.process.saturating_sub(self.process);
        (process.saturating_sub(load), load)
    }
}

/// CPU time of the whole process (every thread), from `getrusage(RUSAGE_SELF)`.
fn process_cpu() -> Duration {
    // SAFETY: getrusage fills the zeroed `rusage` it is given.
    let usage = unsafe {
        let mut usage: libc::rusage = std::mem::zeroed();
        libc::getrusage(libc::RUSAGE_SELF, &mut usage);
        usage
    };
    timeval(usage.ru_utime) + timeval(usage.ru_stime)
}

/// CPU time of the calling thread, in nanoseconds' resolution.
fn thread_cpu() -> Duration {
    // SAFETY: clock_gettime fills the zeroed `timespec` it is given.
    let t = unsafe {
        let mut t: libc::timespec = std::mem::zeroed();
        libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut t);
        t
    };
    Duration::new(
        u64::try_from(t.tv_sec).unwrap(),
        u32::try_from(t.tv_nsec).unwrap(),
    )
}

fn timeval(t: libc::timeval) -> Duration {
    Duration::from_secs(u64::try_from(t.tv_sec).unwrap())
        + Duration::from_micros(u64::try_from(t.tv_usec).unwrap())
}
