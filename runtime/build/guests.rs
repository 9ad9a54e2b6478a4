// Shared by `runtime/build.rs` (standard plugins) and `tests/build.rs` (test fixtures), both
// one directory below the workspace root. Included with `include!`, so no crate boundary.

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
        let dir_name = path.file_name().and_then(|n| n.to_str()).unwrap_or_default();
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
    let target_dir = guest_target_dir();
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.current_dir(workspace)
        .args(["build", "--profile", "guest", "--target", "wasm32-wasip2", "--target-dir"])
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
    let status = cmd.status().expect("run cargo to build the guest components");
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
