//! `backup`: archive a directory as a compressed tar with a SHA-256 manifest; verify, list,
//! restore and prune those archives.
//!
//! Everything streams: archives are never held in memory, so a call fits the default 64 MiB
//! whatever the size of the tree. The work is done by plain `std::fs` code in the modules
//! (unit-tested natively on real temporary directories); the actions here check grants,
//! take the time and log, at the edges.

use chrono::{DateTime, Timelike, Utc};
use runloom_sdk::{Actions, CallContext, Error, Plugin, export_plugin, fs, log};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::time::{Instant, SystemTime};

pub mod catalog;
pub mod manifest;
pub mod name;
pub mod pack;
pub mod retention;
pub mod safety;
pub mod stream;
mod sys;
pub mod unpack;
pub mod verify;

use name::{Compression, MANIFEST_SUFFIX, rfc3339};

/// Input of `create`.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateInput {
    /// Directory to archive (a granted guest path, `ro` is enough).
    pub source: String,
    /// Directory the archive and its manifest go into (granted `rw`; created if missing).
    /// When it lies inside `source`, it is left out of the archive.
    pub destination: String,
    /// Backup set name, the start of the file name: letters, digits, `.`, `_`, `-`.
    pub name: String,
    /// `zstd` (default, `.tar.zst`) or `gzip` (`.tar.gz`).
    #[serde(default)]
    pub compression: Compression,
}

/// Output of `create`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct CreateOutput {
    /// Path of the archive.
    pub archive: String,
    /// Path of its manifest.
    pub manifest: String,
    /// SHA-256 of the archive file.
    pub sha256: String,
    /// The compression used.
    pub compression: Compression,
    /// The archive's timestamp (UTC, in its name).
    pub timestamp: String,
    /// Bytes of file content read.
    pub bytes_in: u64,
    /// Size of the archive file.
    pub bytes_out: u64,
    /// Regular files archived.
    pub files: u64,
    /// Directories archived.
    pub directories: u64,
    /// Symbolic links archived as links.
    pub symlinks: u64,
    /// Entries left out: sockets, FIFOs, devices, files that vanished meanwhile.
    pub skipped: u64,
    /// Things to know about the archive (links restore will refuse, files that shrank).
    pub warnings: Vec<String>,
    /// Wall-clock time of the whole action in milliseconds.
    pub duration_ms: u64,
}

/// Input of `verify`.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct VerifyInput {
    /// Path of the archive.
    pub archive: String,
    /// Path of its manifest; default: the archive's path plus `.manifest.jsonl`.
    pub manifest: Option<String>,
}

/// The verdict of `verify`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Verdict {
    /// The archive and every entry match the manifest.
    Ok,
    /// Something differs; see `mismatches`.
    Corrupt,
}

/// Output of `verify`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct VerifyOutput {
    /// `ok` or `corrupt`.
    pub status: Verdict,
    /// Path of the archive.
    pub archive: String,
    /// Path of the manifest.
    pub manifest: String,
    /// SHA-256 of the archive file as it is now.
    pub archive_sha256: String,
    /// SHA-256 the manifest records.
    pub expected_sha256: String,
    /// Size of the archive file.
    pub archive_bytes: u64,
    /// Entries the manifest lists.
    pub entries_expected: u64,
    /// Entries found in both and compared.
    pub entries_checked: u64,
    /// The first 100 differences.
    pub mismatches: Vec<verify::Mismatch>,
    /// All differences, listed or not.
    pub mismatches_total: u64,
    /// Wall-clock time in milliseconds.
    pub duration_ms: u64,
}

/// Input of `list`.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ListInput {
    /// Directory holding the archives.
    pub destination: String,
    /// Only archives of this backup set; default: all.
    pub name: Option<String>,
}

/// One archive in a listing.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct ArchiveInfo {
    /// Path of the archive.
    pub archive: String,
    /// Backup set name.
    pub name: String,
    /// When it was created (UTC).
    pub timestamp: String,
    /// Its compression.
    pub compression: Compression,
    /// Size in bytes.
    pub bytes: u64,
    /// Path of the manifest, or null when it is missing (such an archive cannot be verified).
    pub manifest: Option<String>,
}

impl From<&catalog::Listed> for ArchiveInfo {
    fn from(l: &catalog::Listed) -> Self {
        Self {
            archive: l.path.display().to_string(),
            name: l.name.name.clone(),
            timestamp: rfc3339(l.name.timestamp),
            compression: l.name.compression,
            bytes: l.bytes,
            manifest: l.manifest.as_ref().map(|m| m.display().to_string()),
        }
    }
}

/// Output of `list`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct ListOutput {
    /// Archives, newest first.
    pub archives: Vec<ArchiveInfo>,
    /// Their total size in bytes.
    pub total_bytes: u64,
}

/// Input of `retention` and `retention-plan`. Rules add up; at least one must be non-zero.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RetentionInput {
    /// Directory holding the archives.
    pub destination: String,
    /// Backup set whose archives are pruned; other sets are never touched.
    pub name: String,
    /// Keep the N newest archives.
    #[serde(default)]
    pub keep_last: u32,
    /// Keep the newest archive of each of the D most recent days that have archives (UTC).
    #[serde(default)]
    pub keep_daily: u32,
    /// Keep the newest archive of each of the W most recent ISO weeks that have archives.
    #[serde(default)]
    pub keep_weekly: u32,
}

/// An archive retention keeps.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct Kept {
    /// The archive.
    #[serde(flatten)]
    pub archive: ArchiveInfo,
    /// The rules keeping it: `last`, `daily 2025-01-31`, `weekly 2025-W05`.
    pub reasons: Vec<String>,
}

/// Output of `retention` and `retention-plan`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct RetentionOutput {
    /// True when the deletions were carried out (`retention`), false for a plan.
    pub applied: bool,
    /// Archives kept, newest first.
    pub keep: Vec<Kept>,
    /// Archives deleted (or to delete), newest first, each with its manifest.
    pub delete: Vec<ArchiveInfo>,
    /// Bytes of archives deleted (or to delete).
    pub delete_bytes: u64,
}

/// Input of `restore`.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RestoreInput {
    /// Path of the archive.
    pub archive: String,
    /// Path of its manifest; default: the archive's path plus `.manifest.jsonl`.
    pub manifest: Option<String>,
    /// Directory to restore into (granted `rw`); must be empty or absent.
    pub target: String,
}

/// Output of `restore`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct RestoreOutput {
    /// Directory restored into.
    pub target: String,
    /// Regular files written.
    pub files: u64,
    /// Directories created.
    pub directories: u64,
    /// Symbolic links created.
    pub symlinks: u64,
    /// Bytes of file content written.
    pub bytes: u64,
    /// SHA-256 of the archive, verified against the manifest before restoring.
    pub archive_sha256: String,
    /// Wall-clock time in milliseconds, verification included.
    pub duration_ms: u64,
}

struct Backup;

impl Plugin for Backup {
    const NAME: &'static str = "backup";
    const DESCRIPTION: &'static str = "Compressed tar backups of granted directories with SHA-256 manifests: create, verify, \
         list, restore, retention.";

    fn actions() -> Actions {
        Actions::new()
            .mutate(
                "create",
                "Archive a directory as `<name>-<UTC timestamp>.tar.zst` (or `.tar.gz`) with a \
                 SHA-256 manifest, written atomically.",
                create,
            )
            .read(
                "verify",
                "Check an archive against its manifest: the archive's hash, then every entry's \
                 hash and size.",
                verify,
            )
            .read(
                "list",
                "List the archives in a directory with timestamps and sizes, newest first.",
                list,
            )
            .read(
                "retention-plan",
                "Show which archives a retention policy keeps and deletes, deleting nothing.",
                retention_plan,
            )
            .mutate(
                "retention",
                "Delete the archives (with manifests) a retention policy does not keep.",
                retention,
            )
            .mutate(
                "restore",
                "Verify an archive, then extract it into an empty directory, refusing entries \
                 that would land outside it.",
                restore,
            )
    }
}

fn millis(started: Instant) -> u64 {
    u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX)
}

fn create(input: CreateInput, _ctx: &CallContext) -> Result<CreateOutput, Error> {
    let started = Instant::now();
    name::check_name(&input.name).map_err(Error::invalid_input)?;
    let source = Path::new(&input.source);
    let destination = Path::new(&input.destination);
    fs::check(source, "read")?;
    fs::check(destination, "write")?;
    let now = DateTime::<Utc>::from(SystemTime::now());
    let timestamp = now.with_nanosecond(0).unwrap_or(now);
    let created = pack::create(&pack::Request {
        source,
        destination,
        name: &input.name,
        compression: input.compression,
        started: timestamp,
    })?;
    for warning in &created.warnings {
        log::warn(warning, &[("source", &input.source)]);
    }
    let output = CreateOutput {
        archive: created.archive.display().to_string(),
        manifest: created.manifest.display().to_string(),
        sha256: created.sha256,
        compression: input.compression,
        timestamp: rfc3339(timestamp),
        bytes_in: created.bytes_in,
        bytes_out: created.bytes_out,
        files: created.files,
        directories: created.directories,
        symlinks: created.symlinks,
        skipped: created.skipped,
        warnings: created.warnings,
        duration_ms: millis(started),
    };
    log::info(
        "archive created",
        &[
            ("archive", &output.archive),
            ("files", &output.files.to_string()),
            ("bytes_in", &output.bytes_in.to_string()),
            ("bytes_out", &output.bytes_out.to_string()),
            ("duration_ms", &output.duration_ms.to_string()),
        ],
    );
    Ok(output)
}

/// The manifest's path: as given, or beside the archive.
fn manifest_for(archive: &str, manifest: Option<String>) -> PathBuf {
    PathBuf::from(manifest.unwrap_or_else(|| format!("{archive}{MANIFEST_SUFFIX}")))
}

fn verify(input: VerifyInput, _ctx: &CallContext) -> Result<VerifyOutput, Error> {
    let started = Instant::now();
    let archive = PathBuf::from(&input.archive);
    let manifest = manifest_for(&input.archive, input.manifest);
    fs::check(&archive, "read")?;
    fs::check(&manifest, "read")?;
    let report = verify::verify(&archive, &manifest)?;
    let status = if report.findings.total == 0 {
        Verdict::Ok
    } else {
        Verdict::Corrupt
    };
    if status == Verdict::Corrupt {
        log::warn(
            "archive does not match its manifest",
            &[
                ("archive", &input.archive),
                ("mismatches", &report.findings.total.to_string()),
            ],
        );
    }
    Ok(VerifyOutput {
        status,
        archive: input.archive,
        manifest: manifest.display().to_string(),
        archive_sha256: report.archive_sha256,
        expected_sha256: report.expected_sha256,
        archive_bytes: report.archive_bytes,
        entries_expected: report.entries_expected,
        entries_checked: report.findings.checked,
        mismatches: report.findings.mismatches,
        mismatches_total: report.findings.total,
        duration_ms: millis(started),
    })
}

fn list(input: ListInput, _ctx: &CallContext) -> Result<ListOutput, Error> {
    if let Some(name) = &input.name {
        name::check_name(name).map_err(Error::invalid_input)?;
    }
    let destination = Path::new(&input.destination);
    fs::check(destination, "read")?;
    let archives: Vec<ArchiveInfo> = catalog::scan(destination, input.name.as_deref())?
        .iter()
        .map(ArchiveInfo::from)
        .collect();
    Ok(ListOutput {
        total_bytes: archives.iter().map(|a| a.bytes).sum(),
        archives,
    })
}

fn policy_of(input: &RetentionInput) -> Result<retention::Policy, Error> {
    name::check_name(&input.name).map_err(Error::invalid_input)?;
    let policy = retention::Policy {
        keep_last: input.keep_last,
        keep_daily: input.keep_daily,
        keep_weekly: input.keep_weekly,
    };
    if policy.keeps_nothing() {
        return Err(Error::invalid_input(
            "`keep_last`, `keep_daily` and `keep_weekly` are all 0, which would delete every \
             archive; set at least one",
        ));
    }
    Ok(policy)
}

fn plan_output(plan: &catalog::Plan, applied: bool) -> RetentionOutput {
    RetentionOutput {
        applied,
        keep: plan
            .keep
            .iter()
            .map(|(archive, reasons)| Kept {
                archive: archive.into(),
                reasons: reasons.clone(),
            })
            .collect(),
        delete: plan.delete.iter().map(ArchiveInfo::from).collect(),
        delete_bytes: plan.delete.iter().map(|a| a.bytes).sum(),
    }
}

fn retention_plan(input: RetentionInput, _ctx: &CallContext) -> Result<RetentionOutput, Error> {
    let policy = policy_of(&input)?;
    let destination = Path::new(&input.destination);
    fs::check(destination, "read")?;
    let plan = catalog::plan(destination, &input.name, &policy)?;
    Ok(plan_output(&plan, false))
}

fn retention(input: RetentionInput, _ctx: &CallContext) -> Result<RetentionOutput, Error> {
    let policy = policy_of(&input)?;
    let destination = Path::new(&input.destination);
    fs::check(destination, "write")?;
    let plan = catalog::plan(destination, &input.name, &policy)?;
    for archive in &plan.delete {
        catalog::delete(archive)?;
        log::info(
            "archive deleted by retention",
            &[("archive", &archive.path.display().to_string())],
        );
    }
    Ok(plan_output(&plan, true))
}

fn restore(input: RestoreInput, _ctx: &CallContext) -> Result<RestoreOutput, Error> {
    let started = Instant::now();
    let archive = PathBuf::from(&input.archive);
    let manifest = manifest_for(&input.archive, input.manifest);
    let target = PathBuf::from(&input.target);
    fs::check(&archive, "read")?;
    fs::check(&manifest, "read")?;
    fs::check(&target, "write")?;
    let restored = unpack::restore(&archive, &manifest, &target)?;
    let output = RestoreOutput {
        target: input.target,
        files: restored.files,
        directories: restored.directories,
        symlinks: restored.symlinks,
        bytes: restored.bytes,
        archive_sha256: restored.archive_sha256,
        duration_ms: millis(started),
    };
    log::info(
        "archive restored",
        &[
            ("archive", &input.archive),
            ("target", &output.target),
            ("files", &output.files.to_string()),
        ],
    );
    Ok(output)
}

export_plugin!(Backup);

#[cfg(test)]
mod tests;
