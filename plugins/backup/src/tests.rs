//! The whole pipeline natively, on real temporary directories: create, verify, corrupt,
//! restore, list and prune. The same code runs in the component; `tests/backup.rs` runs it
//! there, through the engine and its grants.

use crate::manifest::{self, Entry, Header, Trailer};
use crate::name::{ArchiveName, Compression};
use crate::stream::digest;
use crate::{catalog, pack, retention, unpack, verify};
use chrono::{DateTime, TimeZone, Utc};
use runloom_sdk::Error;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};

/// A directory removed when the test ends.
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> Self {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let path = std::env::temp_dir().join(format!(
            "plugin-backup-test-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = fs::remove_dir_all(&path);
        fs::create_dir_all(&path).unwrap();
        Self(path)
    }

    fn join(&self, rel: &str) -> PathBuf {
        self.0.join(rel)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

const LONG_DIR: &str =
    "a-directory-name-long-enough-that-the-path-needs-the-gnu-long-name-extension";

/// A small tree with the awkward cases: empty files and directories, sizes that are not a
/// multiple of 512, a path over 100 bytes, a relative symbolic link.
fn sample_tree(root: &Path) {
    let write = |rel: &str, bytes: &[u8]| {
        let path = root.join(rel);
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(path, bytes).unwrap();
    };
    write("etc/app.conf", b"listen = 8080\n");
    write("etc/empty", b"");
    write("data/blob.bin", &pseudo_random(700_001));
    write("data/exact.bin", &[7u8; 1024]);
    write(&format!("{LONG_DIR}/{LONG_DIR}/deep.txt"), b"deep\n");
    fs::create_dir_all(root.join("empty-dir")).unwrap();
    std::os::unix::fs::symlink("../etc/app.conf", root.join("data/config-link")).unwrap();
}

fn pseudo_random(len: usize) -> Vec<u8> {
    let mut x: u32 = 0x1234_5678;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            (x >> 24) as u8
        })
        .collect()
}

fn at(y: i32, mo: u32, d: u32, h: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(y, mo, d, h, 0, 0).unwrap()
}

fn create(source: &Path, destination: &Path, compression: Compression) -> pack::Created {
    pack::create(&pack::Request {
        source,
        destination,
        name: "nightly",
        compression,
        started: at(2025, 1, 2, 3),
    })
    .unwrap()
}

fn manifest_of(archive: &Path) -> PathBuf {
    PathBuf::from(format!("{}.manifest.jsonl", archive.display()))
}

fn names_in(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

#[test]
fn create_writes_the_archive_and_its_manifest_under_final_names_only() {
    for compression in [Compression::Zstd, Compression::Gzip] {
        let (src, dst) = (TempDir::new(), TempDir::new());
        sample_tree(&src.0);
        let created = create(&src.0, &dst.0, compression);
        let ext = compression.extension();
        assert_eq!(
            names_in(&dst.0),
            [
                format!("nightly-20250102T030000Z{ext}"),
                format!("nightly-20250102T030000Z{ext}.manifest.jsonl"),
            ]
        );
        assert_eq!(
            created.archive,
            dst.join(&format!("nightly-20250102T030000Z{ext}"))
        );
        assert_eq!(created.files, 5);
        assert_eq!(created.directories, 5);
        assert_eq!(created.symlinks, 1);
        assert_eq!(created.bytes_in, 14 + 700_001 + 1024 + 5);
        assert_eq!(
            created.bytes_out,
            fs::metadata(&created.archive).unwrap().len()
        );
        assert_eq!(
            created.sha256,
            digest(fs::File::open(&created.archive).unwrap()).unwrap().0
        );
        assert!(created.warnings.is_empty(), "{:?}", created.warnings);
    }
}

#[test]
fn the_manifest_lists_every_entry_in_order_with_hashes() {
    let (src, dst) = (TempDir::new(), TempDir::new());
    sample_tree(&src.0);
    let created = create(&src.0, &dst.0, Compression::Zstd);
    let (header, reader) = verify::open_manifest(&created.manifest).unwrap();
    assert_eq!(header.archive, "nightly-20250102T030000Z.tar.zst");
    assert_eq!(header.created, "2025-01-02T03:00:00Z");
    let records: Vec<_> = reader.map(Result::unwrap).collect();
    let paths: Vec<&str> = records
        .iter()
        .filter_map(|r| match r {
            manifest::Record::Entry(e) => Some(e.path()),
            manifest::Record::Trailer(_) => None,
        })
        .collect();
    let long = format!("{LONG_DIR}/{LONG_DIR}");
    assert_eq!(
        paths,
        [
            LONG_DIR,
            &long,
            &format!("{long}/deep.txt"),
            "data",
            "data/blob.bin",
            "data/config-link",
            "data/exact.bin",
            "empty-dir",
            "etc",
            "etc/app.conf",
            "etc/empty",
        ]
    );
    assert!(records.contains(&manifest::Record::Entry(Entry::File {
        path: "etc/app.conf".into(),
        size: 14,
        mode: "0644".into(),
        sha256: digest(&b"listen = 8080\n"[..]).unwrap().0,
    })));
    assert!(records.contains(&manifest::Record::Entry(Entry::Symlink {
        path: "data/config-link".into(),
        target: "../etc/app.conf".into(),
    })));
    let Some(manifest::Record::Trailer(trailer)) = records.last() else {
        panic!("no trailer");
    };
    assert_eq!(trailer.archive_sha256, created.sha256);
    assert_eq!(trailer.entries, 11);
}

#[test]
fn archives_are_standard_tar_streams_that_gnu_tar_reads() {
    let (src, dst) = (TempDir::new(), TempDir::new());
    sample_tree(&src.0);
    for (compression, flag) in [(Compression::Gzip, "-z"), (Compression::Zstd, "--zstd")] {
        if compression == Compression::Zstd && Command::new("zstd").arg("-V").output().is_err() {
            continue;
        }
        let out_dir = TempDir::new();
        let archive = create(&src.0, &out_dir.0, compression).archive;
        let into = TempDir::new();
        let status = Command::new("tar")
            .args([flag, "-xf"])
            .arg(&archive)
            .arg("-C")
            .arg(&into.0)
            .status();
        let Ok(status) = status else { continue };
        assert!(
            status.success(),
            "tar {flag} failed on {}",
            archive.display()
        );
        assert_eq!(
            fs::read(into.join("data/blob.bin")).unwrap(),
            fs::read(src.join("data/blob.bin")).unwrap()
        );
        assert_eq!(
            fs::read_link(into.join("data/config-link")).unwrap(),
            Path::new("../etc/app.conf")
        );
    }
    drop(dst);
}

#[test]
fn a_fresh_archive_verifies() {
    for compression in [Compression::Zstd, Compression::Gzip] {
        let (src, dst) = (TempDir::new(), TempDir::new());
        sample_tree(&src.0);
        let created = create(&src.0, &dst.0, compression);
        let report = verify::verify(&created.archive, &created.manifest).unwrap();
        assert_eq!(report.findings.total, 0, "{:?}", report.findings);
        assert_eq!(report.findings.checked, 11);
        assert_eq!(report.entries_expected, 11);
        assert_eq!(report.archive_sha256, created.sha256);
    }
}

fn flip_byte(path: &Path, at: usize) {
    let mut bytes = fs::read(path).unwrap();
    bytes[at] ^= 0x55;
    fs::write(path, bytes).unwrap();
}

#[test]
fn one_flipped_byte_makes_the_archive_corrupt() {
    for compression in [Compression::Zstd, Compression::Gzip] {
        let (src, dst) = (TempDir::new(), TempDir::new());
        sample_tree(&src.0);
        let created = create(&src.0, &dst.0, compression);
        let len = fs::metadata(&created.archive).unwrap().len() as usize;
        flip_byte(&created.archive, len / 2);
        let report = verify::verify(&created.archive, &created.manifest).unwrap();
        assert!(report.findings.total >= 1);
        let first = &report.findings.mismatches[0];
        assert_eq!(
            first.path,
            created.archive.file_name().unwrap().to_str().unwrap()
        );
        assert!(first.problem.starts_with("archive sha256 is "), "{first:?}");
    }
}

#[test]
fn a_manifest_entry_that_disagrees_is_named() {
    let (src, dst) = (TempDir::new(), TempDir::new());
    sample_tree(&src.0);
    let created = create(&src.0, &dst.0, Compression::Zstd);
    let text = fs::read_to_string(&created.manifest).unwrap();
    let good = digest(&b"listen = 8080\n"[..]).unwrap().0;
    fs::write(&created.manifest, text.replace(&good, &"0".repeat(64))).unwrap();
    let report = verify::verify(&created.archive, &created.manifest).unwrap();
    assert_eq!(report.findings.total, 1, "{:?}", report.findings);
    let m = &report.findings.mismatches[0];
    assert_eq!(m.path, "etc/app.conf");
    assert_eq!(
        m.problem,
        format!("sha256 {good}, manifest says {}", "0".repeat(64))
    );
}

#[test]
fn verify_without_a_manifest_fails_naming_it() {
    let (src, dst) = (TempDir::new(), TempDir::new());
    sample_tree(&src.0);
    let created = create(&src.0, &dst.0, Compression::Zstd);
    fs::remove_file(&created.manifest).unwrap();
    match verify::verify(&created.archive, &created.manifest) {
        Err(Error::Failed(m)) => {
            assert_eq!(
                m,
                format!("`{}` does not exist", created.manifest.display())
            )
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn restore_gives_back_the_same_tree() {
    for compression in [Compression::Zstd, Compression::Gzip] {
        let (src, dst, into) = (TempDir::new(), TempDir::new(), TempDir::new());
        sample_tree(&src.0);
        let created = create(&src.0, &dst.0, compression);
        let target = into.join("restored");
        let restored = unpack::restore(&created.archive, &created.manifest, &target).unwrap();
        assert_eq!(restored.files, 5);
        assert_eq!(restored.directories, 5);
        assert_eq!(restored.symlinks, 1);
        assert_eq!(restored.bytes, created.bytes_in);
        for rel in [
            "etc/app.conf",
            "etc/empty",
            "data/blob.bin",
            "data/exact.bin",
            &format!("{LONG_DIR}/{LONG_DIR}/deep.txt"),
        ] {
            assert_eq!(
                fs::read(target.join(rel)).unwrap(),
                fs::read(src.join(rel)).unwrap(),
                "{rel}"
            );
        }
        assert!(target.join("empty-dir").is_dir());
        assert_eq!(
            fs::read_link(target.join("data/config-link")).unwrap(),
            Path::new("../etc/app.conf")
        );
        // Modification times come back (to the second).
        let mtime = |p: &Path| {
            fs::metadata(p)
                .unwrap()
                .modified()
                .unwrap()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_secs()
        };
        assert_eq!(
            mtime(&target.join("data/blob.bin")),
            mtime(&src.join("data/blob.bin"))
        );
    }
}

#[test]
fn restore_refuses_a_non_empty_target() {
    let (src, dst, into) = (TempDir::new(), TempDir::new(), TempDir::new());
    sample_tree(&src.0);
    let created = create(&src.0, &dst.0, Compression::Zstd);
    fs::write(into.join("precious"), b"keep me").unwrap();
    match unpack::restore(&created.archive, &created.manifest, &into.0) {
        Err(Error::Failed(m)) => assert_eq!(
            m,
            format!(
                "target `{}` is not empty (it holds `precious`); restore only into an empty \
                 directory",
                into.0.display()
            )
        ),
        other => panic!("{other:?}"),
    }
    assert_eq!(fs::read(into.join("precious")).unwrap(), b"keep me");
}

#[test]
fn restore_refuses_a_corrupt_archive_and_writes_nothing() {
    let (src, dst, into) = (TempDir::new(), TempDir::new(), TempDir::new());
    sample_tree(&src.0);
    let created = create(&src.0, &dst.0, Compression::Gzip);
    let len = fs::metadata(&created.archive).unwrap().len() as usize;
    flip_byte(&created.archive, len / 3);
    match unpack::restore(&created.archive, &created.manifest, &into.0) {
        Err(Error::Failed(m)) => {
            assert!(m.contains("does not match its manifest"), "{m}");
            assert!(m.ends_with("nothing restored"), "{m}");
        }
        other => panic!("{other:?}"),
    }
    assert!(names_in(&into.0).is_empty());
}

/// An archive built by hand, with a manifest that matches it, as an attacker who controls
/// both files would make it.
fn hostile_archive(dir: &Path, build: impl FnOnce(&mut tar::Builder<Vec<u8>>)) -> PathBuf {
    let mut builder = tar::Builder::new(Vec::new());
    build(&mut builder);
    let tar_bytes = builder.into_inner().unwrap();
    // Read the entries back as `verify` will see them, for the manifest.
    let mut entries = Vec::new();
    let mut reader = tar::Archive::new(&tar_bytes[..]);
    for entry in reader.entries().unwrap() {
        let entry = entry.unwrap();
        let path = pack::path_text(&entry.path().unwrap());
        entries.push(match entry.header().entry_type() {
            tar::EntryType::Symlink => Entry::Symlink {
                path,
                target: entry.link_name().unwrap().unwrap().display().to_string(),
            },
            _ => Entry::File {
                path,
                size: 0,
                mode: "0644".into(),
                sha256: digest(&b""[..]).unwrap().0,
            },
        });
    }
    let compressed = ruzstd::encoding::compress_to_vec(
        &tar_bytes[..],
        ruzstd::encoding::CompressionLevel::Fastest,
    );
    let name = ArchiveName {
        name: "evil".into(),
        timestamp: at(2025, 1, 1, 0),
        compression: Compression::Zstd,
    };
    let archive = dir.join(name.file_name());
    fs::write(&archive, &compressed).unwrap();
    let header = Header {
        format: manifest::FORMAT.into(),
        version: manifest::VERSION,
        archive: name.file_name(),
        compression: Compression::Zstd,
        created: "2025-01-01T00:00:00Z".into(),
        source: "/".into(),
    };
    let mut writer = manifest::Writer::new(Vec::new(), &header).unwrap();
    for e in &entries {
        writer.entry(e).unwrap();
    }
    let text = writer
        .finish(&Trailer {
            archive_sha256: digest(&compressed[..]).unwrap().0,
            archive_bytes: compressed.len() as u64,
            entries: entries.len() as u64,
            bytes_in: 0,
        })
        .unwrap();
    fs::write(manifest_of(&archive), text).unwrap();
    archive
}

fn file_header() -> tar::Header {
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(tar::EntryType::Regular);
    h.set_size(0);
    h.set_mode(0o644);
    h
}

fn assert_refused(archive: &Path, into: &TempDir, expected: &str) {
    let verdict = verify::verify(archive, &manifest_of(archive)).unwrap();
    assert_eq!(verdict.findings.total, 0, "{:?}", verdict.findings);
    match unpack::restore(archive, &manifest_of(archive), &into.0) {
        Err(Error::Failed(m)) => assert_eq!(
            m,
            format!("refusing to restore: {expected}; nothing restored")
        ),
        other => panic!("{other:?}"),
    }
    assert!(names_in(&into.0).is_empty(), "{:?}", names_in(&into.0));
}

#[test]
fn restore_refuses_entries_that_climb_out_of_the_target() {
    let (dir, into) = (TempDir::new(), TempDir::new());
    let archive = hostile_archive(&dir.0, |b| {
        // `set_path` refuses `..`, so write the name field directly, as an attacker would.
        let mut h = file_header();
        h.as_old_mut().name[..13].copy_from_slice(b"../escape.txt");
        h.set_cksum();
        b.append(&h, &b""[..]).unwrap();
        b.append_data(&mut file_header(), "fine.txt", &b""[..])
            .unwrap();
    });
    assert_refused(&archive, &into, "`../escape.txt` contains `..`");
}

#[test]
fn restore_refuses_absolute_entries() {
    let (dir, into) = (TempDir::new(), TempDir::new());
    let archive = hostile_archive(&dir.0, |b| {
        let mut h = file_header();
        h.as_old_mut().name[..13].copy_from_slice(b"/etc/cron.d/x");
        h.set_cksum();
        b.append(&h, &b""[..]).unwrap();
    });
    assert_refused(&archive, &into, "`/etc/cron.d/x` is an absolute path");
}

#[test]
fn restore_refuses_symlinks_pointing_outside() {
    for (target, why) in [
        ("/etc", "points outside the target (absolute)"),
        ("../../outside", "points outside the target"),
    ] {
        let (dir, into) = (TempDir::new(), TempDir::new());
        let archive = hostile_archive(&dir.0, |b| {
            let mut h = tar::Header::new_gnu();
            h.set_entry_type(tar::EntryType::Symlink);
            h.set_size(0);
            h.set_mode(0o777);
            b.append_link(&mut h, "sub/link", target).unwrap();
        });
        assert_refused(
            &archive,
            &into,
            &format!("symbolic link `sub/link` -> `{target}` {why}"),
        );
    }
}

#[test]
fn a_destination_inside_the_source_is_not_archived() {
    let src = TempDir::new();
    sample_tree(&src.0);
    let destination = src.join("backups");
    let first = create(&src.0, &destination, Compression::Zstd);
    let second = pack::create(&pack::Request {
        source: &src.0,
        destination: &destination,
        name: "nightly",
        compression: Compression::Zstd,
        started: at(2025, 1, 3, 3),
    })
    .unwrap();
    assert_eq!(second.files, first.files);
    let text = fs::read_to_string(&second.manifest).unwrap();
    assert!(!text.contains("\"path\":\"backups"), "{text}");
}

#[test]
fn a_missing_source_fails_naming_it_and_leaves_nothing_behind() {
    let (src, dst) = (TempDir::new(), TempDir::new());
    let missing = src.join("no-such-dir");
    match pack::create(&pack::Request {
        source: &missing,
        destination: &dst.0,
        name: "x",
        compression: Compression::Zstd,
        started: at(2025, 1, 1, 0),
    }) {
        Err(Error::Failed(m)) => {
            assert_eq!(m, format!("source `{}` does not exist", missing.display()))
        }
        other => panic!("{other:?}"),
    }
    assert!(names_in(&dst.0).is_empty());
}

#[test]
fn a_second_archive_in_the_same_second_is_retryable() {
    let (src, dst) = (TempDir::new(), TempDir::new());
    sample_tree(&src.0);
    create(&src.0, &dst.0, Compression::Zstd);
    let again = pack::create(&pack::Request {
        source: &src.0,
        destination: &dst.0,
        name: "nightly",
        compression: Compression::Zstd,
        started: at(2025, 1, 2, 3),
    });
    assert!(matches!(again, Err(Error::Retryable(_))), "{again:?}");
}

/// Empty files named like archives, with manifests, as `list` and `retention` only read names.
fn fake_archives(dir: &Path, name: &str, times: &[DateTime<Utc>]) {
    for (i, t) in times.iter().enumerate() {
        let n = ArchiveName {
            name: name.into(),
            timestamp: *t,
            compression: Compression::Zstd,
        };
        fs::write(dir.join(n.file_name()), vec![0u8; i + 1]).unwrap();
        fs::write(dir.join(n.manifest_file_name()), b"{}").unwrap();
    }
}

#[test]
fn listing_is_newest_first_and_ignores_other_files() {
    let dir = TempDir::new();
    fake_archives(
        &dir.0,
        "etc",
        &[at(2025, 1, 1, 0), at(2025, 1, 3, 0), at(2025, 1, 2, 0)],
    );
    fake_archives(&dir.0, "db", &[at(2025, 1, 4, 0)]);
    fs::write(dir.join("README"), b"").unwrap();
    fs::write(dir.join(".etc-20250105T000000Z.tar.zst.partial"), b"").unwrap();
    fs::remove_file(dir.join("etc-20250101T000000Z.tar.zst.manifest.jsonl")).unwrap();

    let all = catalog::scan(&dir.0, None).unwrap();
    let names: Vec<String> = all.iter().map(|l| l.name.file_name()).collect();
    assert_eq!(
        names,
        [
            "db-20250104T000000Z.tar.zst",
            "etc-20250103T000000Z.tar.zst",
            "etc-20250102T000000Z.tar.zst",
            "etc-20250101T000000Z.tar.zst",
        ]
    );
    assert_eq!(all[1].bytes, 2);
    assert!(all[1].manifest.is_some());
    assert_eq!(all[3].manifest, None);
    assert_eq!(catalog::scan(&dir.0, Some("etc")).unwrap().len(), 3);
}

#[test]
fn retention_deletes_exactly_what_the_plan_says_with_manifests() {
    let dir = TempDir::new();
    // Daily at 02:00 for 20 days, plus an extra run on the last day.
    let mut times: Vec<_> = (1..=20).map(|d| at(2025, 1, d, 2)).collect();
    times.push(at(2025, 1, 20, 14));
    fake_archives(&dir.0, "etc", &times);
    fake_archives(&dir.0, "db", &[at(2024, 6, 1, 0)]);
    let policy = retention::Policy {
        keep_last: 2,
        keep_daily: 3,
        keep_weekly: 2,
    };
    let plan = catalog::plan(&dir.0, "etc", &policy).unwrap();
    let kept: Vec<String> = plan.keep.iter().map(|(l, _)| l.name.file_name()).collect();
    // Last 2: 20th 14:00 and 02:00; daily: 20th, 19th, 18th; weekly: 2025-W03 (the 20th is
    // a Monday, W04) → the 19th, a Sunday, is W03's newest.
    assert_eq!(
        kept,
        [
            "etc-20250120T140000Z.tar.zst",
            "etc-20250120T020000Z.tar.zst",
            "etc-20250119T020000Z.tar.zst",
            "etc-20250118T020000Z.tar.zst",
        ]
    );
    assert_eq!(plan.delete.len(), 17);
    for archive in &plan.delete {
        catalog::delete(archive).unwrap();
    }
    let mut left = names_in(&dir.0);
    left.retain(|n| n.starts_with("etc-"));
    let mut expected: Vec<String> = kept
        .iter()
        .flat_map(|k| [k.clone(), format!("{k}.manifest.jsonl")])
        .collect();
    expected.sort();
    assert_eq!(left, expected);
    assert!(
        dir.join("db-20240601T000000Z.tar.zst").exists(),
        "other sets are untouched"
    );
}
