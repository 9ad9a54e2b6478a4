//! Builds the guest components for `wasm32-wasip2`: the standard plugins (every crate under
//! `plugins/` except the SDK), embedded in the `runloom` binary; the runbook bodies written in
//! Rust (every `runbooks/<name>/` with a `Cargo.toml`), copied to `runbooks/<name>/main.wasm`;
//! and the test fixtures (every crate under `tests/fixtures/`), whose directory the tests find
//! in `RUNLOOM_FIXTURE_DIR`. So `cargo run`, `cargo test` and `cargo install` always use
//! components built from this checkout, with nothing to run by hand.
//!
//! The guests are built by one nested `cargo build` into their own target directory (next to
//! the host's), with the `guest` profile from the workspace `Cargo.toml`.

#![allow(
    clippy::expect_used,
    reason = "a build script reports failure by panicking"
)]

use sha2::Digest;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The workspace root: the parent of the crate being built.
fn workspace_root() -> PathBuf {
    let manifest = std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR");
    Path::new(&manifest)
        .parent()
        .expect("the crate lives one level below the workspace root")
        .to_path_buf()
}

/// The package names of the guest crates directly under `dir`, sorted, skipping `skip`.
/// Each must be named `<prefix><directory>` so build commands can select them by pattern.
fn guest_packages(dir: &Path, prefix: &str, skip: &[&str]) -> Vec<String> {
    let mut packages = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return packages;
    };
    let mut dirs: Vec<PathBuf> = entries.flatten().map(|e| e.path()).collect();
    dirs.sort();
    for path in dirs {
        let manifest = path.join("Cargo.toml");
        let dir_name = path
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default();
        if !manifest.exists() || skip.contains(&dir_name) {
            continue;
        }
        let text = std::fs::read_to_string(&manifest).expect("read guest Cargo.toml");
        let name = text
            .lines()
            .find_map(|l| l.trim().strip_prefix("name = \"")?.strip_suffix('"'))
            .unwrap_or_else(|| panic!("{}: no `name = \"…\"` line", manifest.display()));
        let expected = format!("{prefix}{dir_name}");
        assert_eq!(
            name,
            expected,
            "{}: the package must be named `{expected}` after its directory",
            manifest.display()
        );
        packages.push(name.to_string());
    }
    packages
}

/// `<host target dir>/wasm-guests`, derived from `OUT_DIR`
/// (`<target>[/<triple>]/<profile>/build/<crate>-<hash>/out`).
fn guest_target_dir() -> PathBuf {
    let out = PathBuf::from(std::env::var("OUT_DIR").expect("cargo sets OUT_DIR"));
    let profile_dir = out
        .ancestors()
        .find(|p| p.file_name().is_some_and(|n| n == "build"))
        .and_then(Path::parent)
        .expect("OUT_DIR lies under <profile>/build");
    profile_dir
        .parent()
        .expect("the profile directory has a parent")
        .join("wasm-guests")
}

/// Build `packages` for `wasm32-wasip2` with the `guest` profile and return each package with
/// the path of its component.
fn build_guests(workspace: &Path, packages: &[String]) -> Vec<(String, PathBuf)> {
    if packages.is_empty() {
        return Vec::new();
    }
    ensure_wasm_target();
    let target_dir = guest_target_dir();
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.current_dir(workspace)
        .args([
            "build",
            "--profile",
            "guest",
            "--target",
            "wasm32-wasip2",
            "--target-dir",
        ])
        .arg(&target_dir);
    for p in packages {
        cmd.args(["-p", p]);
    }
    // The outer build's flags and wrappers (clippy, coverage) are for the host, not guests.
    for var in [
        "CARGO_ENCODED_RUSTFLAGS",
        "RUSTFLAGS",
        "RUSTC_WORKSPACE_WRAPPER",
        "RUSTC_WRAPPER",
        "CARGO_TARGET_DIR",
        "CARGO_BUILD_TARGET",
        "CARGO_BUILD_RUSTFLAGS",
        "CARGO_PROFILE_RELEASE_DEBUG",
    ] {
        cmd.env_remove(var);
    }
    let status = cmd
        .status()
        .expect("run cargo to build the guest components");
    assert!(
        status.success(),
        "building the guest components failed (see above). The `wasm32-wasip2` target comes \
         from rust-toolchain.toml; if it is missing run `rustup target add wasm32-wasip2`."
    );
    let out_dir = target_dir.join("wasm32-wasip2").join("guest");
    packages
        .iter()
        .map(|p| {
            let wasm = out_dir.join(format!("{}.wasm", p.replace('-', "_")));
            assert!(wasm.exists(), "`{}` was not produced", wasm.display());
            (p.clone(), wasm)
        })
        .collect()
}

fn main() {
    let workspace = workspace_root();
    let plugins_dir = workspace.join("plugins");
    println!("cargo:rerun-if-changed={}", plugins_dir.display());
    println!("cargo:rerun-if-changed={}", workspace.join("wit").display());
    // The `guest` profile lives in the workspace manifest.
    println!(
        "cargo:rerun-if-changed={}",
        workspace.join("Cargo.toml").display()
    );
    let fixtures_dir = workspace.join("tests").join("fixtures");
    println!("cargo:rerun-if-changed={}", fixtures_dir.display());

    let runbooks_dir = workspace.join("runbooks");
    let runbooks = guest_packages(&runbooks_dir, "runbook-", &[]);
    // Only each runbook crate's manifest and sources: `main.wasm`, written below, lives in the
    // same directory, and watching it would rerun this script forever. A new runbook crate is
    // added to the workspace members, in the workspace manifest watched above.
    for package in &runbooks {
        let dir = runbooks_dir.join(package.trim_start_matches("runbook-"));
        println!(
            "cargo:rerun-if-changed={}",
            dir.join("Cargo.toml").display()
        );
        println!("cargo:rerun-if-changed={}", dir.join("src").display());
    }

    let plugins = guest_packages(&plugins_dir, "plugin-", &["sdk"]);
    let fixtures = guest_packages(&fixtures_dir, "fixture-", &[]);
    let all: Vec<String> = plugins
        .iter()
        .chain(&fixtures)
        .chain(&runbooks)
        .cloned()
        .collect();
    let built = build_guests(&workspace, &all);
    for (package, wasm) in &built {
        if let Some(dir) = package
            .strip_prefix("runbook-")
            .filter(|_| runbooks.contains(package))
        {
            copy_if_changed(wasm, &runbooks_dir.join(dir).join("main.wasm"));
        }
    }
    let built: Vec<_> = built
        .into_iter()
        .filter(|(package, _)| plugins.contains(package))
        .collect();

    let mut table = String::from(
        "/// The standard plugins, built from `plugins/` by `build.rs`: (file name, component).\n\
         pub(crate) const STANDARD_PLUGINS: &[(&str, &[u8])] = &[\n",
    );
    let mut hashes = String::from(
        "/// Hex SHA-256 of each standard plugin, in the order of `STANDARD_PLUGINS`, so a warm\n\
         /// start finds their compiled code without reading (or keeping resident) the bytes.\n\
         pub(crate) const STANDARD_PLUGIN_HASHES: &[&str] = &[\n",
    );
    for (package, wasm) in &built {
        let name = package.trim_start_matches("plugin-");
        table.push_str(&format!(
            "    ({name:?}, include_bytes!({:?})),\n",
            wasm.display().to_string()
        ));
        let bytes = std::fs::read(wasm).expect("read a built plugin");
        let digest: String = sha2::Sha256::digest(&bytes)
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        hashes.push_str(&format!("    {digest:?},\n"));
    }
    table.push_str("];\n");
    hashes.push_str("];\n");
    table.push_str(&hashes);
    let out = std::path::PathBuf::from(std::env::var("OUT_DIR").expect("cargo sets OUT_DIR"));
    std::fs::write(out.join("standard_plugins.rs"), table).expect("write standard_plugins.rs");
    // Tests load fixtures from files; all guests land in one directory.
    let dir = guest_target_dir().join("wasm32-wasip2").join("guest");
    println!("cargo:rustc-env=RUNLOOM_FIXTURE_DIR={}", dir.display());
}

/// Copy `from` to `to` unless `to` already holds the same bytes, so an unchanged runbook keeps
/// its file and its modification time. Written under a temporary name first, so a reader never
/// sees half a component.
fn copy_if_changed(from: &Path, to: &Path) {
    let bytes = std::fs::read(from).expect("read the built runbook component");
    if std::fs::read(to).is_ok_and(|old| old == bytes) {
        return;
    }
    let tmp = to.with_extension("wasm.tmp");
    std::fs::write(&tmp, &bytes).expect("write the runbook component");
    std::fs::rename(&tmp, to).expect("move the runbook component into place");
}

/// rust-toolchain.toml names `wasm32-wasip2`, and rustup installs it when it installs the
/// toolchain. A toolchain installed earlier without it (or with auto-install off) gets it here,
/// once, so a fresh checkout builds with nothing done by hand.
fn ensure_wasm_target() {
    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    let installed = Command::new(&rustc)
        .args(["--print", "target-libdir", "--target", "wasm32-wasip2"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| PathBuf::from(String::from_utf8_lossy(&o.stdout).trim()))
        .is_some_and(|dir| dir.exists());
    if installed {
        return;
    }
    println!("cargo:warning=installing the wasm32-wasip2 target with rustup (one time)");
    let status = Command::new("rustup")
        .args(["target", "add", "wasm32-wasip2"])
        .status();
    if !status.is_ok_and(|s| s.success()) {
        println!(
            "cargo:warning=could not install wasm32-wasip2; run `rustup target add wasm32-wasip2`"
        );
    }
}
