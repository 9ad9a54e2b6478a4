//! The decisions behind the actions, free of host calls so they are unit-tested natively:
//! parsing ages, sizes and signals, matching file names, which files a selection takes,
//! which processes a name matches, and the names a log rotation moves through.

use std::path::{Path, PathBuf};
use std::time::Duration;

/// Parse an age such as `30s`, `15m`, `12h`, `7d` or `2w`.
pub fn parse_age(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let number: u64 = number
        .parse()
        .map_err(|_| format!("`{text}`: expected a number followed by s, m, h, d or w"))?;
    let seconds = match unit.trim() {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        "w" => 7 * 86_400,
        _ => {
            return Err(format!("`{text}`: the unit must be s, m, h, d or w (`7d`)"));
        }
    };
    number
        .checked_mul(seconds)
        .map(Duration::from_secs)
        .ok_or_else(|| format!("`{text}` is too long"))
}

/// Parse a size such as `4096`, `500KB`, `10MiB` or `1GB` into bytes. `KB`, `MB`, `GB`, `TB`
/// are powers of 1000; `KiB`, `MiB`, `GiB`, `TiB` powers of 1024; a bare number is bytes.
pub fn parse_size(text: &str) -> Result<u64, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let number: u64 = number
        .parse()
        .map_err(|_| format!("`{text}`: expected a number of bytes, optionally with a unit"))?;
    let factor: u64 = match unit.trim() {
        "" | "B" => 1,
        "KB" => 1000,
        "MB" => 1000u64.pow(2),
        "GB" => 1000u64.pow(3),
        "TB" => 1000u64.pow(4),
        "KiB" => 1 << 10,
        "MiB" => 1 << 20,
        "GiB" => 1 << 30,
        "TiB" => 1 << 40,
        _ => {
            return Err(format!(
                "`{text}`: the unit must be B, KB, MB, GB, TB, KiB, MiB, GiB or TiB"
            ));
        }
    };
    number
        .checked_mul(factor)
        .ok_or_else(|| format!("`{text}` is too large"))
}

/// Whether `name` matches `pattern`, where `*` matches any run of characters and `?` one.
pub fn name_matches(pattern: &str, name: &str) -> bool {
    let (pattern, name): (Vec<char>, Vec<char>) =
        (pattern.chars().collect(), name.chars().collect());
    // Iterative wildcard matching, backtracking only to the last `*`.
    let (mut p, mut n) = (0, 0);
    let (mut star, mut mark) = (None, 0);
    while n < name.len() {
        match pattern.get(p) {
            Some('?') => {
                p += 1;
                n += 1;
            }
            Some('*') => {
                star = Some(p);
                mark = n;
                p += 1;
            }
            Some(&c) if c == name[n] => {
                p += 1;
                n += 1;
            }
            _ => match star {
                Some(s) => {
                    p = s + 1;
                    mark += 1;
                    n = mark;
                }
                None => return false,
            },
        }
    }
    pattern[p..].iter().all(|&c| c == '*')
}

/// Which files a `find-files` / `delete-files` input selects. Every given criterion must hold.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Criteria {
    /// Last modified longer ago than this.
    pub older_than: Option<Duration>,
    /// Larger than this many bytes.
    pub larger_than: Option<u64>,
    /// File name pattern.
    pub name: Option<String>,
}

impl Criteria {
    /// Parse the criteria of an input. A selection with no criterion would take every file,
    /// so it is refused.
    pub fn parse(
        older_than: Option<&str>,
        larger_than: Option<&str>,
        name: Option<&str>,
    ) -> Result<Criteria, String> {
        let criteria = Criteria {
            older_than: older_than.map(parse_age).transpose()?,
            larger_than: larger_than.map(parse_size).transpose()?,
            name: name.map(str::to_string),
        };
        if criteria
            == (Criteria {
                older_than: None,
                larger_than: None,
                name: None,
            })
        {
            return Err(
                "give at least one of `older_than`, `larger_than` or `name`: a selection without criteria would take every file"
                    .into(),
            );
        }
        Ok(criteria)
    }

    /// Whether a regular file with this name, size and age is selected.
    pub fn selects(&self, name: &str, size: u64, age: Duration) -> bool {
        self.older_than.is_none_or(|min| age > min)
            && self.larger_than.is_none_or(|min| size > min)
            && self.name.as_deref().is_none_or(|p| name_matches(p, name))
    }
}

/// The signal names `stop-process` sends, as `kill -s` takes them.
const SIGNALS: &[(&str, u8)] = &[
    ("HUP", 1),
    ("INT", 2),
    ("QUIT", 3),
    ("KILL", 9),
    ("USR1", 10),
    ("USR2", 12),
    ("TERM", 15),
];

/// Normalise a signal given as `TERM`, `SIGTERM`, `term` or `15`.
pub fn parse_signal(text: &str) -> Result<&'static str, String> {
    let upper = text.trim().to_ascii_uppercase();
    let bare = upper.strip_prefix("SIG").unwrap_or(&upper);
    SIGNALS
        .iter()
        .find(|(name, number)| *name == bare || number.to_string() == bare)
        .map(|(name, _)| *name)
        .ok_or_else(|| {
            let names: Vec<&str> = SIGNALS.iter().map(|(n, _)| *n).collect();
            format!("signal `{text}`: expected one of {}", names.join(", "))
        })
}

/// The kernel keeps at most this many bytes of a process name (`comm`).
const COMM_LEN: usize = 15;

/// Whether a process named `comm` (as the kernel reports it) is the process called `name`.
/// The kernel cuts names to 15 bytes, so a longer `name` is compared on its first 15.
pub fn process_name_matches(name: &str, comm: &str) -> bool {
    if name.len() <= COMM_LEN {
        return comm == name;
    }
    let mut cut = COMM_LEN;
    while !name.is_char_boundary(cut) {
        cut -= 1;
    }
    comm == &name[..cut]
}

/// Whether a systemd unit name is safe to pass as one argument: no option-like leading `-`,
/// and only the characters unit names use.
pub fn valid_unit(unit: &str) -> bool {
    !unit.is_empty()
        && !unit.starts_with('-')
        && unit
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || ":-_.@\\".contains(c))
}

/// `argv` with every `{unit}` replaced by `unit`.
pub fn substitute_unit(argv: &[String], unit: &str) -> Vec<String> {
    argv.iter().map(|a| a.replace("{unit}", unit)).collect()
}

/// The name of the `n`th rotated copy of `log` (`app.log.1`).
pub fn rotated(log: &Path, n: u32) -> PathBuf {
    let mut name = log.as_os_str().to_os_string();
    name.push(format!(".{n}"));
    PathBuf::from(name)
}

/// The renames that make room for a new `.1` copy when `keep` copies are kept, oldest first:
/// `.keep-1 → .keep`, …, `.1 → .2`. (`.keep` itself is removed before them.)
pub fn shift_renames(log: &Path, keep: u32) -> Vec<(PathBuf, PathBuf)> {
    (1..keep)
        .rev()
        .map(|n| (rotated(log, n), rotated(log, n + 1)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ages_take_a_unit() {
        assert_eq!(parse_age("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_age("15m"), Ok(Duration::from_secs(900)));
        assert_eq!(parse_age("7d"), Ok(Duration::from_secs(7 * 86_400)));
        assert_eq!(parse_age("2w"), Ok(Duration::from_secs(14 * 86_400)));
        assert!(parse_age("7").is_err());
        assert!(parse_age("d").is_err());
        assert!(parse_age("7y").is_err());
        assert!(parse_age("99999999999999999999d").is_err());
    }

    #[test]
    fn sizes_distinguish_decimal_and_binary_units() {
        assert_eq!(parse_size("4096"), Ok(4096));
        assert_eq!(parse_size("500KB"), Ok(500_000));
        assert_eq!(parse_size("10MiB"), Ok(10 * 1024 * 1024));
        assert_eq!(parse_size("1GB"), Ok(1_000_000_000));
        assert!(parse_size("1gb").is_err());
        assert!(parse_size("lots").is_err());
        assert!(parse_size("99999999TiB").is_err());
    }

    #[test]
    fn name_patterns_match_whole_names() {
        assert!(name_matches("*.log", "app.log"));
        assert!(name_matches("*.log.*", "app.log.3"));
        assert!(name_matches("core.?", "core.7"));
        assert!(!name_matches("*.log", "app.log.1"));
        assert!(!name_matches("core.?", "core.17"));
        assert!(name_matches("*", ""));
    }

    #[test]
    fn every_given_criterion_must_hold() {
        let day = Duration::from_secs(86_400);
        let c = Criteria::parse(Some("7d"), Some("1KB"), Some("*.log")).unwrap();
        assert!(c.selects("a.log", 2000, day * 8));
        assert!(!c.selects("a.log", 2000, day * 6));
        assert!(!c.selects("a.log", 1000, day * 8));
        assert!(!c.selects("a.txt", 2000, day * 8));
        let only_age = Criteria::parse(Some("1h"), None, None).unwrap();
        assert!(only_age.selects("anything", 0, day));
    }

    #[test]
    fn a_selection_without_criteria_is_refused() {
        let err = Criteria::parse(None, None, None).unwrap_err();
        assert!(err.contains("would take every file"), "{err}");
        assert!(Criteria::parse(Some("soon"), None, None).is_err());
    }

    #[test]
    fn signals_are_accepted_by_name_or_number() {
        assert_eq!(parse_signal("TERM"), Ok("TERM"));
        assert_eq!(parse_signal("sigkill"), Ok("KILL"));
        assert_eq!(parse_signal("1"), Ok("HUP"));
        let err = parse_signal("STOP").unwrap_err();
        assert_eq!(
            err,
            "signal `STOP`: expected one of HUP, INT, QUIT, KILL, USR1, USR2, TERM"
        );
    }

    #[test]
    fn long_process_names_compare_on_the_kernels_15_bytes() {
        assert!(process_name_matches("nginx", "nginx"));
        assert!(!process_name_matches("nginx", "nginx-debug"));
        assert!(process_name_matches("postgres-exporter", "postgres-export"));
        assert!(!process_name_matches("postgres-exporter", "postgres"));
    }

    #[test]
    fn unit_names_cannot_smuggle_options() {
        assert!(valid_unit("nginx.service"));
        assert!(valid_unit("getty@tty1.service"));
        assert!(valid_unit("dev-disk-by\\x2duuid.device"));
        assert!(!valid_unit("--no-block"));
        assert!(!valid_unit("a b"));
        assert!(!valid_unit(""));
    }

    #[test]
    fn commands_may_name_the_unit() {
        let argv = vec![
            "/usr/sbin/service".to_string(),
            "{unit}".into(),
            "restart".into(),
        ];
        assert_eq!(
            substitute_unit(&argv, "nginx"),
            ["/usr/sbin/service", "nginx", "restart"]
        );
    }

    #[test]
    fn rotation_shifts_copies_oldest_first() {
        let log = Path::new("/logs/app.log");
        assert_eq!(rotated(log, 1), Path::new("/logs/app.log.1"));
        assert_eq!(
            shift_renames(log, 3),
            [
                (rotated(log, 2), rotated(log, 3)),
                (rotated(log, 1), rotated(log, 2)),
            ]
        );
        assert!(shift_renames(log, 1).is_empty());
        assert!(shift_renames(log, 0).is_empty());
    }
}
