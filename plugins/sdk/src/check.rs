//! The result shape every check action returns, so runbooks, reports and history treat all
//! checks alike: a status, the measured value, the thresholds it was judged against, and a
//! sentence for humans. Plugin-specific facts go in `facts`.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// How a check came out, in the usual monitoring order.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, JsonSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// Within thresholds.
    Ok,
    /// Past the warning threshold.
    Warning,
    /// Past the critical threshold, or the target is down.
    Critical,
    /// The check could not tell (bad data, the probe itself failed).
    Unknown,
}

/// Thresholds a value was judged against. A value at or past a threshold trips it; whether
/// "past" means above or below depends on the check and is said in `detail`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Thresholds {
    /// Warning threshold.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub warning: Option<f64>,
    /// Critical threshold.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub critical: Option<f64>,
}

impl Thresholds {
    /// The status of `value` when higher is worse.
    pub fn judge_high(&self, value: f64) -> Status {
        match (self.warning, self.critical) {
            (_, Some(c)) if value >= c => Status::Critical,
            (Some(w), _) if value >= w => Status::Warning,
            _ => Status::Ok,
        }
    }

    /// The status of `value` when lower is worse (free space, days to expiry).
    pub fn judge_low(&self, value: f64) -> Status {
        match (self.warning, self.critical) {
            (_, Some(c)) if value <= c => Status::Critical,
            (Some(w), _) if value <= w => Status::Warning,
            _ => Status::Ok,
        }
    }
}

/// The result of a check action.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct CheckResult<F> {
    /// ok, warning, critical or unknown.
    pub status: Status,
    /// The measured value (latency in ms, percent used, days left), when there is one.
    pub value: Option<f64>,
    /// Unit of `value` (`ms`, `percent`, `days`).
    pub unit: String,
    /// Thresholds `value` was judged against.
    pub thresholds: Thresholds,
    /// One sentence for humans: what was measured and why it has this status.
    pub detail: String,
    /// Check-specific facts (HTTP status, bytes free, the certificate's subject).
    pub facts: F,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thresholds_judge_in_both_directions() {
        let t = Thresholds {
            warning: Some(80.0),
            critical: Some(90.0),
        };
        assert_eq!(t.judge_high(50.0), Status::Ok);
        assert_eq!(t.judge_high(80.0), Status::Warning);
        assert_eq!(t.judge_high(95.0), Status::Critical);
        let days = Thresholds {
            warning: Some(30.0),
            critical: Some(7.0),
        };
        assert_eq!(days.judge_low(60.0), Status::Ok);
        assert_eq!(days.judge_low(20.0), Status::Warning);
        assert_eq!(days.judge_low(3.0), Status::Critical);
        assert_eq!(Thresholds::default().judge_high(1e9), Status::Ok);
    }
}
