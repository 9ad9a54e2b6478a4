//! `runloom validate`: every error in every runbook, with file, line and field, compared with
//! golden files (`BLESS=1 cargo test` rewrites them after a deliberate change).

use std::path::Path;
use std::process::Command;

/// Run `runloom validate` from the workspace root so paths in the output are relative.
fn validate(config: Option<&str>, path: &str) -> (i32, String) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let data = std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("validate-data");
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_runloom"));
    cmd.current_dir(root)
        .env_remove("RUNLOOM_CONFIG")
        .arg("--data-dir")
        .arg(&data);
    if let Some(c) = config {
        cmd.args(["--config", c]);
    }
    let out = cmd.args(["validate", path]).output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code().unwrap_or(-1), text)
}

fn golden(path: &str, actual: &str) {
    let file = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .join(path);
    if std::env::var_os("BLESS").is_some() {
        std::fs::write(&file, actual).unwrap();
        return;
    }
    let expected = std::fs::read_to_string(&file).unwrap_or_default();
    assert_eq!(
        actual,
        expected,
        "{} differs; rerun with BLESS=1 to accept",
        file.display()
    );
}

#[test]
fn every_error_in_every_runbook_is_reported_with_file_line_and_field() {
    let (code, out) = validate(
        Some("tests/cases/validate/broken/runloom.toml"),
        "tests/cases/validate/broken",
    );
    assert_eq!(code, 6, "{out}");
    golden("tests/cases/validate/broken/expected.txt", &out);
}

#[test]
fn one_runbook_directory_can_be_validated_alone() {
    let (code, out) = validate(
        Some("tests/cases/validate/broken/runloom.toml"),
        "tests/cases/validate/broken/no-body",
    );
    assert_eq!(code, 6, "{out}");
    assert_eq!(
        out,
        "tests/cases/validate/broken/no-body/runbook.toml: `body`: no body: add `main.rhai` or `main.wasm` \
         to the runbook directory, or set `body`\n1 problems (0 of 1 runbooks valid, 11 plugins loaded)\n"
    );
}

#[test]
fn the_published_runbook_schema_matches_the_format() {
    let out = Command::new(env!("CARGO_BIN_EXE_runloom"))
        .arg("schema")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
    let text = String::from_utf8(out.stdout).unwrap();
    let schema: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(schema["title"], "runbook.toml");
    assert!(
        schema["properties"]["trigger"]["items"]["$ref"].is_string(),
        "{schema}"
    );
    assert_eq!(
        schema["additionalProperties"], false,
        "unknown fields are errors for editors too"
    );
    golden("runbooks/runbook.schema.json", &text);
}

#[test]
fn every_runbook_in_the_repository_is_valid() {
    let (code, out) = validate(Some("runbooks/runloom.toml"), "runbooks");
    assert_eq!(code, 0, "{out}");
    assert!(out.starts_with("ok: "), "{out}");
}
