//! The `backup` plugin in the engine, on real temporary directories granted to it: create,
//! verify, corruption, restore, list, retention, and the grants it needs.

use crate::scratch::ScratchDir;
use crate::support::{builtin, host};
use runloom::grant::Grants;
use runloom::plugin::{CallError, CallRequest};
use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

/// `dir` granted at `guest` with `mode` (`ro` or `rw`), as `runloom.toml` writes it.
fn grant(dir: &ScratchDir, guest: &str, mode: &str) -> String {
    format!("{}:{guest}:{mode}", dir.path().display())
}

fn grants(dirs: &[String]) -> Grants {
    Grants {
        dirs: dirs.iter().map(|d| d.parse().unwrap()).collect(),
        ..Grants::default()
    }
}

async fn call(action: &str, input: Value, grants: &Grants) -> Result<Value, CallError> {
    call_with(action, input, grants, |_| {}).await
}

async fn call_with(
    action: &str,
    input: Value,
    grants: &Grants,
    adjust: impl FnOnce(&mut CallRequest),
) -> Result<Value, CallError> {
    let host = host();
    let plugin = builtin(&host, "backup").await;
    let mut req = CallRequest::new(action, input.to_string());
    req.grants = Arc::new(grants.clone());
    adjust(&mut req);
    host.call(&plugin, req).await.map(|o| o.output)
}

fn write(root: &Path, rel: &str, bytes: &[u8]) {
    let path = root.join(rel);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, bytes).unwrap();
}

/// A small service directory: config, data, an empty directory and a relative link.
fn sample_tree(root: &Path) {
    write(root, "conf/app.toml", b"port = 8080\n");
    write(root, "data/state.db", &noise(300_000, 1));
    write(root, "data/empty.log", b"");
    std::fs::create_dir_all(root.join("spool")).unwrap();
    std::os::unix::fs::symlink("../conf/app.toml", root.join("data/config")).unwrap();
}

/// Incompressible bytes, different per seed.
fn noise(len: usize, seed: u32) -> Vec<u8> {
    let mut x = 0x9e37_79b9u32 ^ seed.wrapping_mul(0x85eb_ca6b);
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            (x >> 24) as u8
        })
        .collect()
}

/// Source granted read-only at `/src`, backups read-write at `/backups`.
struct Setup {
    source: ScratchDir,
    backups: ScratchDir,
    grants: Grants,
}

fn setup() -> Setup {
    let (source, backups) = (ScratchDir::new("src"), ScratchDir::new("dst"));
    sample_tree(source.path());
    let grants = grants(&[
        grant(&source, "/src", "ro"),
        grant(&backups, "/backups", "rw"),
    ]);
    Setup {
        source,
        backups,
        grants,
    }
}

async fn create(s: &Setup, compression: &str) -> Value {
    call(
        "create",
        json!({"source": "/src", "destination": "/backups", "name": "svc", "compression": compression}),
        &s.grants,
    )
    .await
    .unwrap()
}

/// The host path of a guest path under `/backups`.
fn on_host(s: &Setup, guest: &Value) -> PathBuf {
    let guest = guest.as_str().unwrap();
    s.backups.join(guest.strip_prefix("/backups/").unwrap())
}

#[tokio::test]
async fn create_writes_a_timestamped_archive_and_manifest() {
    let s = setup();
    let out = create(&s, "zstd").await;
    let archive = out["archive"].as_str().unwrap();
    let file = archive.strip_prefix("/backups/svc-").unwrap();
    // svc-YYYYMMDDTHHMMSSZ.tar.zst
    assert_eq!(file.len(), "20250102T030405Z.tar.zst".len(), "{out}");
    assert!(file.ends_with("Z.tar.zst"), "{out}");
    assert_eq!(out["manifest"], format!("{archive}.manifest.jsonl"));
    assert_eq!(out["files"], 3);
    assert_eq!(out["directories"], 3);
    assert_eq!(out["symlinks"], 1);
    assert_eq!(out["bytes_in"], 12 + 300_000);
    let on_disk = std::fs::read(on_host(&s, &out["archive"])).unwrap();
    assert_eq!(out["bytes_out"], on_disk.len());
    assert_eq!(out["sha256"], sha256_hex(&on_disk));
    // Nothing else is left behind: no temporary files.
    let mut names: Vec<String> = std::fs::read_dir(s.backups.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    assert_eq!(names.len(), 2, "{names:?}");
    // The manifest's trailer carries the archive's own hash.
    let manifest = std::fs::read_to_string(on_host(&s, &out["manifest"])).unwrap();
    let trailer: Value = serde_json::from_str(manifest.lines().last().unwrap()).unwrap();
    assert_eq!(trailer["archive_sha256"], out["sha256"]);
}

fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::{Digest, Sha256};
    hex::encode(Sha256::digest(bytes))
}

#[tokio::test]
async fn a_fresh_archive_verifies_and_a_flipped_byte_is_detected() {
    for compression in ["zstd", "gzip"] {
        let s = setup();
        let created = create(&s, compression).await;
        let input = json!({"archive": created["archive"]});
        let ok = call("verify", input.clone(), &s.grants).await.unwrap();
        assert_eq!(ok["status"], "ok", "{ok}");
        assert_eq!(ok["entries_checked"], 7);
        assert_eq!(ok["mismatches"], json!([]));

        let path = on_host(&s, &created["archive"]);
        let mut bytes = std::fs::read(&path).unwrap();
        let middle = bytes.len() / 2;
        bytes[middle] ^= 0x01;
        std::fs::write(&path, bytes).unwrap();

        let bad = call("verify", input, &s.grants).await.unwrap();
        assert_eq!(bad["status"], "corrupt", "{bad}");
        let first = &bad["mismatches"][0];
        assert!(
            first["problem"]
                .as_str()
                .unwrap()
                .starts_with("archive sha256 is "),
            "{bad}"
        );
        assert_ne!(bad["archive_sha256"], bad["expected_sha256"]);
    }
}

#[tokio::test]
async fn restore_brings_back_the_same_files_and_links() {
    for compression in ["zstd", "gzip"] {
        let s = setup();
        let target = ScratchDir::new("restore");
        let created = create(&s, compression).await;
        let mut g = s.grants.clone();
        g.dirs
            .push(grant(&target, "/restore", "rw").parse().unwrap());
        let out = call(
            "restore",
            json!({"archive": created["archive"], "target": "/restore/svc"}),
            &g,
        )
        .await
        .unwrap();
        assert_eq!(out["files"], 3, "{out}");
        assert_eq!(out["symlinks"], 1);
        assert_eq!(out["archive_sha256"], created["sha256"]);
        let restored = target.join("svc");
        for rel in ["conf/app.toml", "data/state.db", "data/empty.log"] {
            assert_eq!(
                std::fs::read(restored.join(rel)).unwrap(),
                std::fs::read(s.source.join(rel)).unwrap(),
                "{rel}"
            );
        }
        assert!(restored.join("spool").is_dir());
        let mtime = |p: &Path| std::fs::metadata(p).unwrap().modified().unwrap();
        assert_eq!(
            mtime(&restored.join("data/state.db")),
            mtime(&s.source.join("data/state.db"))
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| std::time::UNIX_EPOCH + std::time::Duration::from_secs(d.as_secs()))
                .unwrap(),
            "modification times come back, to the second"
        );
        assert_eq!(
            std::fs::read_link(restored.join("data/config")).unwrap(),
            Path::new("../conf/app.toml")
        );
    }
}

#[tokio::test]
async fn restore_refuses_a_corrupt_archive_and_writes_nothing() {
    let s = setup();
    let target = ScratchDir::new("restore");
    let created = create(&s, "zstd").await;
    let path = on_host(&s, &created["archive"]);
    let mut bytes = std::fs::read(&path).unwrap();
    let last = bytes.len() - 10;
    bytes[last] ^= 0xff;
    std::fs::write(&path, bytes).unwrap();
    let mut g = s.grants.clone();
    g.dirs
        .push(grant(&target, "/restore", "rw").parse().unwrap());
    let err = call(
        "restore",
        json!({"archive": created["archive"], "target": "/restore"}),
        &g,
    )
    .await
    .unwrap_err();
    assert!(matches!(err, CallError::Failed(_)), "{err}");
    let message = err.to_string();
    assert!(message.contains("does not match its manifest"), "{message}");
    assert!(message.ends_with("nothing restored"), "{message}");
    assert_eq!(std::fs::read_dir(target.path()).unwrap().count(), 0);
}

/// Empty files named like archives (and manifests): `list` and retention read names only.
fn fake_archives(dir: &Path, name: &str, stamps: &[&str]) {
    for stamp in stamps {
        let archive = format!("{name}-{stamp}.tar.zst");
        std::fs::write(dir.join(&archive), stamp.as_bytes()).unwrap();
        std::fs::write(dir.join(format!("{archive}.manifest.jsonl")), b"{}").unwrap();
    }
}

fn archive_names(list: &Value) -> Vec<String> {
    list.as_array()
        .unwrap()
        .iter()
        .map(|a| {
            let path = a["archive"].as_str().unwrap();
            path.rsplit('/').next().unwrap().to_string()
        })
        .collect()
}

#[tokio::test]
async fn list_shows_archives_newest_first_with_sizes() {
    let backups = ScratchDir::new("list");
    fake_archives(
        backups.path(),
        "etc",
        &["20250101T020000Z", "20250103T020000Z", "20250102T020000Z"],
    );
    fake_archives(backups.path(), "db", &["20250104T020000Z"]);
    std::fs::write(backups.join("notes.txt"), b"not an archive").unwrap();
    let g = grants(&[grant(&backups, "/backups", "ro")]);
    let out = call("list", json!({"destination": "/backups"}), &g)
        .await
        .unwrap();
    assert_eq!(
        archive_names(&out["archives"]),
        [
            "db-20250104T020000Z.tar.zst",
            "etc-20250103T020000Z.tar.zst",
            "etc-20250102T020000Z.tar.zst",
            "etc-20250101T020000Z.tar.zst",
        ]
    );
    assert_eq!(out["archives"][1]["timestamp"], "2025-01-03T02:00:00Z");
    assert_eq!(out["archives"][1]["bytes"], 16);
    assert_eq!(out["archives"][1]["name"], "etc");
    assert_eq!(
        out["archives"][1]["manifest"],
        "/backups/etc-20250103T020000Z.tar.zst.manifest.jsonl"
    );
    assert_eq!(out["total_bytes"], 4 * 16);
    let etc = call(
        "list",
        json!({"destination": "/backups", "name": "etc"}),
        &g,
    )
    .await
    .unwrap();
    assert_eq!(etc["archives"].as_array().unwrap().len(), 3);
}

#[tokio::test]
async fn retention_keeps_the_right_set_and_the_plan_deletes_nothing() {
    let backups = ScratchDir::new("retention");
    // Nightly at 02:00 from Monday 2025-01-06 to Sunday 2025-01-26 (three ISO weeks), plus
    // a manual run on the last evening.
    let mut stamps: Vec<String> = (6..=26).map(|d| format!("202501{d:02}T020000Z")).collect();
    stamps.push("20250126T200000Z".into());
    let stamps: Vec<&str> = stamps.iter().map(String::as_str).collect();
    fake_archives(backups.path(), "etc", &stamps);
    fake_archives(backups.path(), "db", &["20240101T000000Z"]);
    let input = json!({
        "destination": "/backups", "name": "etc",
        "keep_last": 2, "keep_daily": 4, "keep_weekly": 3,
    });
    let expected_keep = [
        "etc-20250126T200000Z.tar.zst", // last, daily 26th, weekly W04
        "etc-20250126T020000Z.tar.zst", // last
        "etc-20250125T020000Z.tar.zst", // daily
        "etc-20250124T020000Z.tar.zst", // daily
        "etc-20250123T020000Z.tar.zst", // daily
        "etc-20250119T020000Z.tar.zst", // weekly W03 (Sunday)
        "etc-20250112T020000Z.tar.zst", // weekly W02 (Sunday)
    ];

    // The plan is a read action: it needs only a read-only grant and deletes nothing.
    let ro = grants(&[grant(&backups, "/backups", "ro")]);
    let plan = call("retention-plan", input.clone(), &ro).await.unwrap();
    assert_eq!(plan["applied"], false);
    assert_eq!(archive_names(&plan["keep"]), expected_keep);
    assert_eq!(
        plan["keep"][0]["reasons"],
        json!(["last", "daily 2025-01-26", "weekly 2025-W04"])
    );
    assert_eq!(plan["delete"].as_array().unwrap().len(), 22 - 7);
    assert_eq!(std::fs::read_dir(backups.path()).unwrap().count(), 2 * 23);

    let rw = grants(&[grant(&backups, "/backups", "rw")]);
    let done = call("retention", input, &rw).await.unwrap();
    assert_eq!(done["applied"], true);
    assert_eq!(archive_names(&done["keep"]), expected_keep);
    let mut left: Vec<String> = std::fs::read_dir(backups.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    left.sort();
    let mut expected: Vec<String> = expected_keep
        .iter()
        .flat_map(|a| [a.to_string(), format!("{a}.manifest.jsonl")])
        .chain([
            "db-20240101T000000Z.tar.zst".to_string(),
            "db-20240101T000000Z.tar.zst.manifest.jsonl".to_string(),
        ])
        .collect();
    expected.sort();
    assert_eq!(left, expected);
}

#[tokio::test]
async fn retention_refuses_a_policy_that_keeps_nothing() {
    let backups = ScratchDir::new("retention-zero");
    fake_archives(backups.path(), "etc", &["20250101T000000Z"]);
    let rw = grants(&[grant(&backups, "/backups", "rw")]);
    let err = call(
        "retention",
        json!({"destination": "/backups", "name": "etc"}),
        &rw,
    )
    .await
    .unwrap_err();
    assert!(matches!(err, CallError::InvalidInput(_)), "{err}");
    assert_eq!(std::fs::read_dir(backups.path()).unwrap().count(), 2);
}

#[tokio::test]
async fn a_destination_not_granted_read_write_is_denied() {
    let s = setup();
    let input = json!({"source": "/src", "destination": "/backups", "name": "svc"});
    // Granted read-only.
    let ro = grants(&[
        grant(&s.source, "/src", "ro"),
        grant(&s.backups, "/backups", "ro"),
    ]);
    let err = call("create", input.clone(), &ro).await.unwrap_err();
    assert!(matches!(err, CallError::Denied { .. }), "{err}");
    assert_eq!(
        err.to_string(),
        "plugin `backup` may not write `/backups`: not granted"
    );
    assert_eq!(std::fs::read_dir(s.backups.path()).unwrap().count(), 0);
    // Not granted at all.
    let none = grants(&[grant(&s.source, "/src", "ro")]);
    let err = call("create", input, &none).await.unwrap_err();
    assert_eq!(
        err.to_string(),
        "plugin `backup` may not write `/backups`: not granted"
    );
    // A source outside the grants.
    let err = call(
        "create",
        json!({"source": "/etc", "destination": "/backups", "name": "svc"}),
        &s.grants,
    )
    .await
    .unwrap_err();
    assert_eq!(
        err.to_string(),
        "plugin `backup` may not read `/etc`: not granted"
    );
}

#[tokio::test]
async fn retention_and_restore_need_read_write_grants() {
    let s = setup();
    let created = create(&s, "zstd").await;
    let target = ScratchDir::new("restore-ro");
    let ro = grants(&[
        grant(&s.backups, "/backups", "ro"),
        grant(&target, "/restore", "ro"),
    ]);
    let err = call(
        "retention",
        json!({"destination": "/backups", "name": "svc", "keep_last": 0, "keep_daily": 0, "keep_weekly": 1}),
        &ro,
    )
    .await;
    // The only archive is kept, so nothing is deleted: a read-only grant suffices.
    assert_eq!(err.unwrap()["delete"], json!([]));
    fake_archives(s.backups.path(), "svc", &["20200101T000000Z"]);
    let err = call(
        "retention",
        json!({"destination": "/backups", "name": "svc", "keep_last": 1}),
        &ro,
    )
    .await
    .unwrap_err();
    assert!(matches!(err, CallError::Denied { .. }), "{err}");
    assert!(s.backups.join("svc-20200101T000000Z.tar.zst").exists());
    let err = call(
        "restore",
        json!({"archive": created["archive"], "target": "/restore"}),
        &ro,
    )
    .await
    .unwrap_err();
    assert!(matches!(err, CallError::Denied { .. }), "{err}");
}

#[tokio::test]
async fn a_missing_source_fails_naming_it() {
    let s = setup();
    let err = call(
        "create",
        json!({"source": "/src/gone", "destination": "/backups", "name": "svc"}),
        &s.grants,
    )
    .await
    .unwrap_err();
    assert!(matches!(err, CallError::Failed(_)), "{err}");
    assert_eq!(err.to_string(), "source `/src/gone` does not exist");
}

/// About 50 MB in 200 files: half incompressible, half text-like.
fn fifty_megabytes(root: &Path) -> u64 {
    let mut total = 0u64;
    for i in 0..100u32 {
        let random = noise(256 * 1024, i);
        write(root, &format!("blobs/{:02}/b{i:03}.bin", i % 10), &random);
        let text: Vec<u8> = (0..256 * 1024)
            .map(|j| b"0123456789 log line ok\n"[(j + i as usize) % 23])
            .collect();
        write(root, &format!("logs/{:02}/l{i:03}.log", i % 10), &text);
        total += (random.len() + text.len()) as u64;
    }
    total
}

/// Streaming pinned down: 50 MB archived, verified and restored with an eighth of the
/// default memory limit (8 of 64 MiB) and the default 30 s deadline. Prints the timings for
/// BENCHMARKS.md; they are not asserted, as timings belong in benchmarks.
#[tokio::test]
async fn fifty_megabytes_create_verify_and_restore_in_an_eighth_of_the_memory_limit() {
    let (source, backups, target) = (
        ScratchDir::new("big-src"),
        ScratchDir::new("big-dst"),
        ScratchDir::new("big-restore"),
    );
    let bytes = fifty_megabytes(source.path());
    let g = grants(&[
        grant(&source, "/src", "ro"),
        grant(&backups, "/backups", "rw"),
        grant(&target, "/restore", "rw"),
    ]);
    let lean = |req: &mut CallRequest| req.limits.memory = 8 * 1024 * 1024;
    for compression in ["zstd", "gzip"] {
        let started = Instant::now();
        let created = call_with(
            "create",
            json!({"source": "/src", "destination": "/backups", "name": compression, "compression": compression}),
            &g,
            lean,
        )
        .await
        .unwrap_or_else(|e| panic!("create {compression}: {e}"));
        let create_took = started.elapsed();
        assert_eq!(created["bytes_in"], bytes);

        let started = Instant::now();
        let verified = call_with("verify", json!({"archive": created["archive"]}), &g, lean)
            .await
            .unwrap_or_else(|e| panic!("verify {compression}: {e}"));
        let verify_took = started.elapsed();
        assert_eq!(verified["status"], "ok");

        let started = Instant::now();
        let restored = call_with(
            "restore",
            json!({"archive": created["archive"], "target": format!("/restore/{compression}")}),
            &g,
            lean,
        )
        .await
        .unwrap_or_else(|e| panic!("restore {compression}: {e}"));
        let restore_took = started.elapsed();
        assert_eq!(restored["bytes"], bytes);
        eprintln!(
            "backup {compression}: {bytes} bytes in, {} out; create {create_took:.2?}, \
             verify {verify_took:.2?}, restore (verify included) {restore_took:.2?}",
            created["bytes_out"]
        );
    }
}
