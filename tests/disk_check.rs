//! `disk-check` against a real directory on this machine's disk: the figures are the ones
//! `df` reports, thresholds trip, an unreadable path is `unknown`, and only granted
//! directories may be checked.

use crate::support::{builtin, host};
use runloom::grant::Grants;
use runloom::plugin::{CallError, CallRequest};
use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// A directory on the disk the tests run on (only read, so the tests share it).
fn scratch() -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("disk-check");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn granted(dir: &Path) -> Grants {
    Grants {
        dirs: vec![format!("{}:/data:ro", dir.display()).parse().unwrap()],
        ..Grants::default()
    }
}

async fn check(input: Value, grants: Grants) -> Result<Value, CallError> {
    let host = host();
    let plugin = builtin(&host, "disk-check").await;
    let mut req = CallRequest::new("check", input.to_string());
    req.grants = Arc::new(grants);
    host.call(&plugin, req).await.map(|o| o.output)
}

/// `df`'s own figures for `path`: (percent used as df computes it, total inodes).
fn df(path: &Path) -> (f64, u64) {
    let out = std::process::Command::new("df")
        .args(["-B1", "--output=used,avail,itotal"])
        .arg(path)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let row: Vec<f64> = text
        .lines()
        .nth(1)
        .unwrap()
        .split_whitespace()
        .map(|n| n.parse().unwrap())
        .collect();
    (row[0] * 100.0 / (row[0] + row[1]), row[2] as u64)
}

#[tokio::test]
async fn the_percent_used_is_what_df_reports() {
    let dir = scratch();
    let out = check(
        json!({"path": "/data", "warning_percent": null, "critical_percent": null,
               "inodes_warning_percent": null, "inodes_critical_percent": null}),
        granted(&dir),
    )
    .await
    .unwrap();
    assert_eq!(out["status"], "ok", "{out}");
    assert_eq!(out["unit"], "percent");
    let (percent, inodes) = df(&dir);
    let value = out["value"].as_f64().unwrap();
    // Other tests write to the same disk between the two reads; a point either way is plenty.
    assert!((value - percent).abs() < 1.0, "{value} vs df {percent}");
    assert!(value > 0.0 && value < 100.0, "{out}");
    assert_eq!(out["facts"]["path"], "/data");
    assert_eq!(out["facts"]["total_inodes"], inodes);
    assert!(
        out["facts"]["available_bytes"].as_u64().unwrap() > 0,
        "{out}"
    );
}

#[tokio::test]
async fn space_thresholds_trip_at_the_measured_figure() {
    let dir = scratch();
    // Any disk in use is at or above 0%: a zero threshold must trip.
    let out = check(
        json!({"path": "/data", "warning_percent": 0, "critical_percent": null,
               "inodes_warning_percent": null, "inodes_critical_percent": null}),
        granted(&dir),
    )
    .await
    .unwrap();
    assert_eq!(out["status"], "warning", "{out}");
    assert!(
        out["detail"]
            .as_str()
            .unwrap()
            .contains("at or above the warning threshold of 0%"),
        "{out}"
    );
    let out = check(
        json!({"path": "/data", "warning_percent": 0, "critical_percent": 0}),
        granted(&dir),
    )
    .await
    .unwrap();
    assert_eq!(out["status"], "critical", "{out}");
    assert_eq!(out["thresholds"], json!({"warning": 0.0, "critical": 0.0}));
}

#[tokio::test]
async fn inode_thresholds_trip_on_their_own() {
    let dir = scratch();
    let (_, inodes) = df(&dir);
    if inodes == 0 {
        // A filesystem without inode counts (btrfs) cannot show this; the unit tests do.
        return;
    }
    let out = check(
        json!({"path": "/data", "warning_percent": null, "critical_percent": null,
               "inodes_warning_percent": null, "inodes_critical_percent": 0}),
        granted(&dir),
    )
    .await
    .unwrap();
    assert_eq!(out["status"], "critical", "{out}");
    assert!(
        out["detail"]
            .as_str()
            .unwrap()
            .contains("of inodes used, at or above the critical threshold of 0%"),
        "{out}"
    );
}

#[tokio::test]
async fn a_missing_path_in_a_granted_directory_is_unknown() {
    let dir = scratch();
    let out = check(json!({"path": "/data/not-there"}), granted(&dir))
        .await
        .unwrap();
    assert_eq!(out["status"], "unknown", "{out}");
    assert_eq!(out["value"], Value::Null);
    assert!(
        out["detail"]
            .as_str()
            .unwrap()
            .starts_with("cannot read the disk usage of `/data/not-there`"),
        "{out}"
    );
}

#[tokio::test]
async fn paths_outside_the_granted_directories_are_denied() {
    let dir = scratch();
    let err = check(json!({"path": "/etc"}), granted(&dir))
        .await
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "plugin `disk-check` may not read disk usage of `/etc`: not granted"
    );
    let err = check(json!({"path": "/data"}), Grants::default())
        .await
        .unwrap_err();
    assert!(matches!(err, CallError::Denied { .. }), "{err}");
}

#[tokio::test]
async fn thresholds_in_the_wrong_order_are_invalid_input() {
    let dir = scratch();
    let err = check(
        json!({"path": "/data", "warning_percent": 95, "critical_percent": 90}),
        granted(&dir),
    )
    .await
    .unwrap_err();
    assert!(matches!(err, CallError::InvalidInput(_)), "{err}");
}
