//! Builds the hostile test plugins under `tests/fixtures/` for `wasm32-wasip2` and tells the
//! tests where they are (`RUNLOOM_FIXTURE_DIR`). Shares its build logic with `runtime/build.rs`.

include!("../runtime/build/guests.rs");

fn main() {
    let workspace = workspace_root();
    let fixtures = workspace.join("tests").join("fixtures");
    println!("cargo:rerun-if-changed={}", fixtures.display());
    println!("cargo:rerun-if-changed={}", workspace.join("plugins").join("sdk").display());
    println!("cargo:rerun-if-changed={}", workspace.join("wit").display());
    println!("cargo:rerun-if-changed=../runtime/build/guests.rs");
    let packages = guest_packages(&fixtures, "fixture-", &[]);
    let built = build_guests(&workspace, &packages);
    if let Some((_, first)) = built.first()
        && let Some(dir) = first.parent()
    {
        println!("cargo:rustc-env=RUNLOOM_FIXTURE_DIR={}", dir.display());
    }
}
