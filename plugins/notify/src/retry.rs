//! When to try a delivery again: which answers are worth retrying, how long to wait, and when
//! to give up so the call ends before its deadline. Pure; the send loop is in `lib.rs`.

use schemars::JsonSchema;
use serde::Deserialize;
use std::time::Duration;

/// Retry settings of every notify action.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct Retry {
    /// Attempts in all, the first included.
    pub max_attempts: u32,
    /// Wait before the second attempt, in milliseconds; doubled for each later one (with
    /// jitter), at most `max_backoff_ms`.
    pub initial_backoff_ms: u64,
    /// Longest wait between attempts, in milliseconds.
    pub max_backoff_ms: u64,
    /// Give up once this many milliseconds have passed since the first attempt. Keep it below
    /// the plugin's call `timeout` (30 s by default) so the answer is a clean retryable error
    /// rather than a killed call.
    pub deadline_ms: u64,
    /// Timeout of one attempt (connecting, and each wait for response bytes), in milliseconds.
    pub attempt_timeout_ms: u64,
}

impl Default for Retry {
    fn default() -> Self {
        Self {
            max_attempts: 5,
            initial_backoff_ms: 500,
            max_backoff_ms: 8_000,
            deadline_ms: 20_000,
            attempt_timeout_ms: 10_000,
        }
    }
}

/// What an HTTP status says about a delivery.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Answer {
    /// 2xx: delivered.
    Delivered,
    /// 429 or 5xx: the receiver is busy or broken; the same request may succeed later.
    TryAgain,
    /// Anything else (400, 401, 403, 404, a redirect): the same request will fail again.
    Rejected,
}

/// Classify an HTTP status.
pub fn answer(status: u16) -> Answer {
    match status {
        200..=299 => Answer::Delivered,
        429 | 500..=599 => Answer::TryAgain,
        _ => Answer::Rejected,
    }
}

/// The wait before attempt `next` (2 for the first retry): exponential from
/// `initial_backoff_ms`, capped, with "equal jitter" (half fixed, half random, from
/// `jitter` in 0..1) so many runbooks retrying one receiver do not retry in step.
pub fn backoff(retry: &Retry, next: u32, jitter: f64) -> Duration {
    let doublings = next.saturating_sub(2).min(32);
    let base = retry
        .initial_backoff_ms
        .saturating_mul(1u64 << doublings)
        .min(retry.max_backoff_ms);
    let jitter = jitter.clamp(0.0, 1.0);
    Duration::from_millis(base / 2) + Duration::from_secs_f64(base as f64 / 2000.0 * jitter)
}

/// The `Retry-After` header as a wait, when it is a number of seconds (the HTTP-date form is
/// not worth a date parser here: receivers that rate-limit send seconds).
pub fn retry_after(header: Option<&str>) -> Option<Duration> {
    header?.trim().parse::<u64>().ok().map(Duration::from_secs)
}

/// How long to wait before attempt `next`, or `None` to give up: attempts are used up, or the
/// wait plus a moment for the attempt would pass the deadline. A `Retry-After` longer than the
/// backoff wins.
pub fn next_wait(
    retry: &Retry,
    next: u32,
    elapsed: Duration,
    server_asked: Option<Duration>,
    jitter: f64,
) -> Option<Duration> {
    if next > retry.max_attempts {
        return None;
    }
    let wait = backoff(retry, next, jitter).max(server_asked.unwrap_or_default());
    // Starting an attempt with almost no time left would only produce a timeout.
    let room_for_attempt = Duration::from_millis(100);
    let deadline = Duration::from_millis(retry.deadline_ms);
    (elapsed + wait + room_for_attempt <= deadline).then_some(wait)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn busy_and_broken_receivers_are_retried_rejections_are_not() {
        assert_eq!(answer(200), Answer::Delivered);
        assert_eq!(answer(202), Answer::Delivered);
        assert_eq!(answer(429), Answer::TryAgain);
        assert_eq!(answer(503), Answer::TryAgain);
        assert_eq!(answer(400), Answer::Rejected);
        assert_eq!(answer(404), Answer::Rejected);
        assert_eq!(answer(301), Answer::Rejected);
    }

    #[test]
    fn backoff_doubles_up_to_its_cap_with_bounded_jitter() {
        let r = Retry::default();
        assert_eq!(backoff(&r, 2, 0.0), Duration::from_millis(250));
        assert_eq!(backoff(&r, 2, 1.0), Duration::from_millis(500));
        assert_eq!(backoff(&r, 3, 1.0), Duration::from_millis(1000));
        assert_eq!(backoff(&r, 4, 1.0), Duration::from_millis(2000));
        assert_eq!(backoff(&r, 40, 1.0), Duration::from_millis(8000));
        assert_eq!(backoff(&r, 40, 0.0), Duration::from_millis(4000));
    }

    #[test]
    fn retries_stop_at_max_attempts_and_before_the_deadline() {
        let r = Retry {
            max_attempts: 3,
            deadline_ms: 2_000,
            ..Retry::default()
        };
        let zero = Duration::ZERO;
        assert_eq!(
            next_wait(&r, 2, zero, None, 1.0),
            Some(Duration::from_millis(500))
        );
        assert_eq!(
            next_wait(&r, 3, zero, None, 1.0),
            Some(Duration::from_millis(1000))
        );
        assert_eq!(next_wait(&r, 4, zero, None, 1.0), None);
        // 1.5 s spent: a 500 ms wait leaves no room for the attempt.
        assert_eq!(
            next_wait(&r, 2, Duration::from_millis(1_500), None, 1.0),
            None
        );
    }

    #[test]
    fn retry_after_wins_when_longer_and_fits() {
        let r = Retry::default();
        let asked = retry_after(Some("3"));
        assert_eq!(asked, Some(Duration::from_secs(3)));
        assert_eq!(
            next_wait(&r, 2, Duration::ZERO, asked, 0.0),
            Some(Duration::from_secs(3))
        );
        // PagerDuty may ask for minutes: that does not fit in the call, so give up now and
        // let the step's retry policy try later.
        assert_eq!(
            next_wait(&r, 2, Duration::ZERO, retry_after(Some("120")), 0.0),
            None
        );
        assert_eq!(retry_after(Some("Wed, 21 Oct 2015 07:28:00 GMT")), None);
        assert_eq!(retry_after(None), None);
    }
}
