//! Archive file names: `<name>-<UTC timestamp>.tar.zst` or `.tar.gz`, with the manifest
//! beside the archive as `<archive file name>.manifest.jsonl`.
//!
//! The name carries everything `list` and `retention` need, so neither has to open an
//! archive. Invariant: [`ArchiveName::parse`] accepts exactly what [`ArchiveName::file_name`]
//! produces.

use chrono::{DateTime, NaiveDateTime, Utc};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// The compression of an archive, chosen at `create` and read back from the file name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Compression {
    /// Zstandard (`.tar.zst`), at the speed of `zstd -1`.
    #[default]
    Zstd,
    /// gzip (`.tar.gz`), level 6.
    Gzip,
}

impl Compression {
    /// The file name suffix, including the `.tar` part.
    pub fn extension(self) -> &'static str {
        match self {
            Compression::Zstd => ".tar.zst",
            Compression::Gzip => ".tar.gz",
        }
    }
}

/// Suffix of a manifest file, appended to the archive's file name.
pub const MANIFEST_SUFFIX: &str = ".manifest.jsonl";

/// `20250102T030405Z`: ISO 8601 basic format, so names sort by time and contain no `:`.
const STAMP_FORMAT: &str = "%Y%m%dT%H%M%SZ";
const STAMP_LEN: usize = 16;

/// What an archive's file name says about it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArchiveName {
    /// The backup set, as given to `create`.
    pub name: String,
    /// When `create` started, to the second.
    pub timestamp: DateTime<Utc>,
    /// How the tar stream is compressed.
    pub compression: Compression,
}

impl ArchiveName {
    /// The archive's file name.
    pub fn file_name(&self) -> String {
        format!(
            "{}-{}{}",
            self.name,
            self.timestamp.format(STAMP_FORMAT),
            self.compression.extension()
        )
    }

    /// The manifest's file name.
    pub fn manifest_file_name(&self) -> String {
        manifest_file_name(&self.file_name())
    }

    /// Parse an archive file name; `None` for anything else (manifests, temporary files,
    /// unrelated files), so a shared destination directory is fine.
    pub fn parse(file_name: &str) -> Option<Self> {
        let (stem, compression) = [Compression::Zstd, Compression::Gzip]
            .into_iter()
            .find_map(|c| Some((file_name.strip_suffix(c.extension())?, c)))?;
        let split = stem.len().checked_sub(STAMP_LEN + 1)?;
        let (name, stamp) = (stem.get(..split)?, stem.get(split + 1..)?);
        if !stem[split..].starts_with('-') || check_name(name).is_err() {
            return None;
        }
        let timestamp = NaiveDateTime::parse_from_str(stamp, STAMP_FORMAT)
            .ok()?
            .and_utc();
        Some(Self {
            name: name.to_string(),
            timestamp,
            compression,
        })
    }
}

/// The manifest's file name for an archive's file name.
pub fn manifest_file_name(archive_file_name: &str) -> String {
    format!("{archive_file_name}{MANIFEST_SUFFIX}")
}

/// A backup set name is what goes before the timestamp: letters, digits, `.`, `_` and `-`,
/// starting with a letter or digit, at most 100 bytes. Anything else could hide a path or
/// collide with temporary files (which start with `.`).
pub fn check_name(name: &str) -> Result<(), String> {
    let first_ok = name
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_alphanumeric());
    let rest_ok = name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
    if first_ok && rest_ok && name.len() <= 100 {
        Ok(())
    } else {
        Err(format!(
            "`name` must be 1 to 100 letters, digits, `.`, `_` or `-`, starting with a letter or \
             digit; got `{name}`"
        ))
    }
}

/// A timestamp as RFC 3339 in UTC, to the second: `2025-01-02T03:04:05Z`.
pub fn rfc3339(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%dT%H:%M:%SZ").to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn at(y: i32, mo: u32, d: u32, h: u32, mi: u32, s: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(y, mo, d, h, mi, s).unwrap()
    }

    #[test]
    fn file_names_carry_name_utc_timestamp_and_compression() {
        let n = ArchiveName {
            name: "etc-nightly".into(),
            timestamp: at(2025, 1, 2, 3, 4, 5),
            compression: Compression::Zstd,
        };
        assert_eq!(n.file_name(), "etc-nightly-20250102T030405Z.tar.zst");
        assert_eq!(
            n.manifest_file_name(),
            "etc-nightly-20250102T030405Z.tar.zst.manifest.jsonl"
        );
        let gz = ArchiveName {
            compression: Compression::Gzip,
            ..n.clone()
        };
        assert_eq!(gz.file_name(), "etc-nightly-20250102T030405Z.tar.gz");
    }

    #[test]
    fn parsing_inverts_formatting() {
        for c in [Compression::Zstd, Compression::Gzip] {
            let n = ArchiveName {
                name: "db-2.main_x".into(),
                timestamp: at(1999, 12, 31, 23, 59, 58),
                compression: c,
            };
            assert_eq!(ArchiveName::parse(&n.file_name()), Some(n));
        }
    }

    #[test]
    fn other_files_are_not_archives() {
        for other in [
            "etc-20250102T030405Z.tar.zst.manifest.jsonl",
            ".etc-20250102T030405Z.tar.zst.partial",
            "etc-20250102T030405Z.tar",
            "etc-20250102T030405Z.zip",
            "etc20250102T030405Z.tar.gz",
            "-20250102T030405Z.tar.gz",
            "etc-20251302T030405Z.tar.gz",
            "etc-2025-01-02.tar.gz",
            "20250102T030405Z.tar.gz",
            "notes.txt",
        ] {
            assert_eq!(ArchiveName::parse(other), None, "{other}");
        }
    }

    #[test]
    fn names_are_restricted_to_safe_characters() {
        for ok in ["etc", "db-main", "a.b_c-1", "9lives"] {
            assert!(check_name(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            ".hidden",
            "-x",
            "a/b",
            "../x",
            "a b",
            "ü",
            &"x".repeat(101),
        ] {
            assert!(check_name(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn timestamps_render_as_rfc3339_utc() {
        assert_eq!(rfc3339(at(2025, 1, 2, 3, 4, 5)), "2025-01-02T03:04:05Z");
    }
}
