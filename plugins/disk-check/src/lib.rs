//! `disk-check`: how full the filesystem holding a path is, by space and by inodes.
//!
//! The path is a guest path inside a directory granted to the plugin (`dirs`); the grant is
//! what lets the engine read the filesystem's figures, so a path outside every grant is an
//! error (`denied`), not a check result. A granted path the engine cannot read (it does not
//! exist, say) is a check result with status `unknown`: the check could not tell.

use runloom_sdk::check::{CheckResult, Status, Thresholds};
use runloom_sdk::system::{self, DiskSpace};
use runloom_sdk::{Actions, CallContext, Error, Plugin, export_plugin};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Input of `check`.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CheckInput {
    /// Guest path inside a granted directory; the filesystem holding it is checked.
    pub path: String,
    /// Percent of space used at or above which the check is `warning` (`null` to disable).
    #[serde(default = "default_warning")]
    pub warning_percent: Option<f64>,
    /// Percent of space used at or above which the check is `critical` (`null` to disable).
    #[serde(default = "default_critical")]
    pub critical_percent: Option<f64>,
    /// Percent of inodes used at or above which the check is `warning` (`null` to disable).
    #[serde(default = "default_warning")]
    pub inodes_warning_percent: Option<f64>,
    /// Percent of inodes used at or above which the check is `critical` (`null` to disable).
    #[serde(default = "default_critical")]
    pub inodes_critical_percent: Option<f64>,
}

fn default_warning() -> Option<f64> {
    Some(80.0)
}

fn default_critical() -> Option<f64> {
    Some(90.0)
}

/// Facts `check` reports besides its status. The figures are absent when the filesystem
/// could not be read.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct DiskFacts {
    /// The path checked.
    pub path: String,
    /// Size of the filesystem in bytes.
    pub total_bytes: Option<u64>,
    /// Bytes in use.
    pub used_bytes: Option<u64>,
    /// Bytes available to unprivileged users.
    pub available_bytes: Option<u64>,
    /// Percent of space used, as `df` computes it: used / (used + available), so the
    /// reserve only root may use counts as unavailable.
    pub used_percent: Option<f64>,
    /// Number of inodes.
    pub total_inodes: Option<u64>,
    /// Inodes available to unprivileged users.
    pub available_inodes: Option<u64>,
    /// Percent of inodes used; absent when the filesystem does not count inodes (btrfs and
    /// some network filesystems report none).
    pub inodes_used_percent: Option<f64>,
}

struct DiskCheck;

impl Plugin for DiskCheck {
    const NAME: &'static str = "disk-check";
    const DESCRIPTION: &'static str =
        "Disk checks: percent of space and of inodes used on the filesystem holding a path.";

    fn actions() -> Actions {
        Actions::new().read(
            "check",
            "Judge how full the filesystem holding `path` is, by space and by inodes.",
            check,
        )
    }
}

fn check(input: CheckInput, _ctx: &CallContext) -> Result<CheckResult<DiskFacts>, Error> {
    validate(&input)?;
    let usage = match system::disk_usage(&input.path) {
        Ok(usage) => Ok(usage),
        Err(Error::Failed(message)) => Err(message),
        Err(e) => return Err(e),
    };
    Ok(judge(&input, usage))
}

/// Reject thresholds that can never both trip: with higher-is-worse, warning must not lie
/// above critical.
pub fn validate(input: &CheckInput) -> Result<(), Error> {
    for (what, warning, critical) in [
        ("", input.warning_percent, input.critical_percent),
        (
            "inodes_",
            input.inodes_warning_percent,
            input.inodes_critical_percent,
        ),
    ] {
        if let (Some(w), Some(c)) = (warning, critical)
            && w > c
        {
            return Err(Error::invalid_input(format!(
                "`{what}warning_percent` ({w}) is above `{what}critical_percent` ({c})"
            )));
        }
    }
    Ok(())
}

/// Judge the filesystem figures (or why they could not be read) against the input. Pure, so
/// it is unit-tested natively.
pub fn judge(input: &CheckInput, usage: Result<DiskSpace, String>) -> CheckResult<DiskFacts> {
    let thresholds = Thresholds {
        warning: input.warning_percent,
        critical: input.critical_percent,
    };
    let mut facts = DiskFacts {
        path: input.path.clone(),
        total_bytes: None,
        used_bytes: None,
        available_bytes: None,
        used_percent: None,
        total_inodes: None,
        available_inodes: None,
        inodes_used_percent: None,
    };
    let usage = match usage {
        Ok(usage) => usage,
        Err(message) => {
            return CheckResult {
                status: Status::Unknown,
                value: None,
                unit: "percent".into(),
                thresholds,
                detail: format!("cannot read the disk usage of `{}`: {message}", input.path),
                facts,
            };
        }
    };
    let used_percent = round1(percent(
        usage.used_bytes,
        usage.used_bytes.saturating_add(usage.available_bytes),
    ));
    let inodes_used_percent = (usage.total_inodes > 0).then(|| {
        round1(percent(
            usage.total_inodes.saturating_sub(usage.available_inodes),
            usage.total_inodes,
        ))
    });
    facts.total_bytes = Some(usage.total_bytes);
    facts.used_bytes = Some(usage.used_bytes);
    facts.available_bytes = Some(usage.available_bytes);
    facts.used_percent = Some(used_percent);
    facts.total_inodes = Some(usage.total_inodes);
    facts.available_inodes = Some(usage.available_inodes);
    facts.inodes_used_percent = inodes_used_percent;

    let space_status = thresholds.judge_high(used_percent);
    let inode_thresholds = Thresholds {
        warning: input.inodes_warning_percent,
        critical: input.inodes_critical_percent,
    };
    let inode_status = inodes_used_percent.map_or(Status::Ok, |p| inode_thresholds.judge_high(p));

    let mut detail = format!(
        "`{}` is {used_percent}% full ({} available of {})",
        input.path,
        human_bytes(usage.available_bytes),
        human_bytes(usage.total_bytes)
    );
    if space_status != Status::Ok {
        detail.push_str(&tripped(space_status, &thresholds));
    }
    match inodes_used_percent {
        Some(p) => {
            detail.push_str(&format!("; {p}% of inodes used"));
            if inode_status != Status::Ok {
                detail.push_str(&tripped(inode_status, &inode_thresholds));
            }
        }
        None => detail.push_str("; the filesystem does not count inodes"),
    }
    CheckResult {
        status: space_status.max(inode_status),
        value: Some(used_percent),
        unit: "percent".into(),
        thresholds,
        detail,
        facts,
    }
}

/// `, at or above the warning threshold of 80%`.
fn tripped(status: Status, thresholds: &Thresholds) -> String {
    let (name, value) = if status == Status::Critical {
        ("critical", thresholds.critical)
    } else {
        ("warning", thresholds.warning)
    };
    format!(
        ", at or above the {name} threshold of {}%",
        value.unwrap_or_default()
    )
}

fn percent(part: u64, whole: u64) -> f64 {
    if whole == 0 {
        0.0
    } else {
        part as f64 * 100.0 / whole as f64
    }
}

fn round1(value: f64) -> f64 {
    (value * 10.0).round() / 10.0
}

/// `1.5 GiB`: bytes in binary units, for the detail sentence.
pub fn human_bytes(bytes: u64) -> String {
    const UNITS: [&str; 6] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{:.1} {}", value, UNITS[unit])
    }
}

export_plugin!(DiskCheck);

#[cfg(test)]
mod tests {
    use super::*;

    fn input(json: &str) -> CheckInput {
        serde_json::from_str(json).unwrap()
    }

    const GIB: u64 = 1024 * 1024 * 1024;

    fn space(used: u64, available: u64, reserved: u64, inodes: u64, free_inodes: u64) -> DiskSpace {
        DiskSpace {
            total_bytes: used + available + reserved,
            available_bytes: available,
            used_bytes: used,
            total_inodes: inodes,
            available_inodes: free_inodes,
        }
    }

    #[test]
    fn defaults_are_80_and_90_percent_for_space_and_inodes() {
        let i = input(r#"{"path":"/data"}"#);
        assert_eq!(
            (i.warning_percent, i.critical_percent),
            (Some(80.0), Some(90.0))
        );
        assert_eq!(
            (i.inodes_warning_percent, i.inodes_critical_percent),
            (Some(80.0), Some(90.0))
        );
        let i = input(r#"{"path":"/data","warning_percent":null}"#);
        assert_eq!(i.warning_percent, None);
    }

    #[test]
    fn a_half_full_disk_is_ok_and_says_how_much_is_left() {
        let r = judge(
            &input(r#"{"path":"/data"}"#),
            Ok(space(50 * GIB, 50 * GIB, 0, 1000, 900)),
        );
        assert_eq!(r.status, Status::Ok);
        assert_eq!(r.value, Some(50.0));
        assert_eq!(r.unit, "percent");
        assert_eq!(
            r.detail,
            "`/data` is 50% full (50.0 GiB available of 100.0 GiB); 10% of inodes used"
        );
        assert_eq!(r.facts.inodes_used_percent, Some(10.0));
        assert_eq!(r.facts.available_bytes, Some(50 * GIB));
    }

    #[test]
    fn percent_used_leaves_roots_reserve_out_as_df_does() {
        // 45 used + 45 available + 10 reserved: df says 50%, not 45%.
        let r = judge(
            &input(r#"{"path":"/"}"#),
            Ok(space(45 * GIB, 45 * GIB, 10 * GIB, 10, 10)),
        );
        assert_eq!(r.value, Some(50.0));
    }

    #[test]
    fn space_thresholds_give_warning_then_critical() {
        let i = input(r#"{"path":"/data"}"#);
        let warn = judge(&i, Ok(space(85, 15, 0, 100, 100)));
        assert_eq!(warn.status, Status::Warning);
        assert_eq!(
            warn.detail,
            "`/data` is 85% full (15 B available of 100 B), at or above the warning threshold \
             of 80%; 0% of inodes used"
        );
        let crit = judge(&i, Ok(space(95, 5, 0, 100, 100)));
        assert_eq!(crit.status, Status::Critical);
        assert!(
            crit.detail.contains("critical threshold of 90%"),
            "{crit:?}"
        );
    }

    #[test]
    fn running_out_of_inodes_is_critical_even_with_space_left() {
        let r = judge(
            &input(r#"{"path":"/var/spool"}"#),
            Ok(space(GIB, 99 * GIB, 0, 1000, 20)),
        );
        assert_eq!(r.status, Status::Critical);
        assert_eq!(r.value, Some(1.0), "the value stays the space used");
        assert!(
            r.detail
                .ends_with("98% of inodes used, at or above the critical threshold of 90%"),
            "{}",
            r.detail
        );
    }

    #[test]
    fn filesystems_without_inodes_are_judged_by_space_alone() {
        let r = judge(&input(r#"{"path":"/btrfs"}"#), Ok(space(10, 90, 0, 0, 0)));
        assert_eq!(r.status, Status::Ok);
        assert_eq!(r.facts.inodes_used_percent, None);
        assert!(r.detail.ends_with("the filesystem does not count inodes"));
    }

    #[test]
    fn an_unreadable_path_is_unknown_not_an_error() {
        let r = judge(
            &input(r#"{"path":"/data/gone"}"#),
            Err("`/data/gone`: ENOENT: No such file or directory".into()),
        );
        assert_eq!(r.status, Status::Unknown);
        assert_eq!(r.value, None);
        assert_eq!(r.facts.used_percent, None);
        assert!(
            r.detail
                .starts_with("cannot read the disk usage of `/data/gone`")
        );
    }

    #[test]
    fn warning_above_critical_is_invalid_input() {
        let i = input(r#"{"path":"/","warning_percent":95,"critical_percent":90}"#);
        assert!(
            matches!(validate(&i), Err(Error::InvalidInput(m)) if m.contains("`warning_percent` (95)"))
        );
        let i = input(r#"{"path":"/","inodes_warning_percent":95}"#);
        assert!(
            matches!(validate(&i), Err(Error::InvalidInput(m)) if m.contains("`inodes_warning_percent`"))
        );
        assert!(validate(&input(r#"{"path":"/","critical_percent":null}"#)).is_ok());
    }

    #[test]
    fn bytes_read_in_binary_units() {
        assert_eq!(human_bytes(512), "512 B");
        assert_eq!(human_bytes(1536), "1.5 KiB");
        assert_eq!(human_bytes(3 * GIB), "3.0 GiB");
    }
}
