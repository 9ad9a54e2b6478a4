//! Builds the standard plugins (every crate under `plugins/` except the SDK) for
//! `wasm32-wasip2` and embeds them in the `runloom` binary, so `cargo run`, `cargo test` and
//! `cargo install` always ship plugins built from this checkout. Nothing to run by hand.
//!
//! The guests are built by a nested `cargo build` into their own target directory (next to
//! the host's), with the `guest` profile from the workspace `Cargo.toml`.

include!("build/guests.rs");

fn main() {
    let workspace = workspace_root();
    let plugins_dir = workspace.join("plugins");
    println!("cargo:rerun-if-changed={}", plugins_dir.display());
    println!("cargo:rerun-if-changed={}", workspace.join("wit").display());
    println!("cargo:rerun-if-changed=build/guests.rs");

    let packages = guest_packages(&plugins_dir, "plugin-", &["sdk"]);
    let built = build_guests(&workspace, &packages);

    let mut table = String::from(
        "/// The standard plugins, built from `plugins/` by `build.rs`: (file name, component).\n\
         pub(crate) const STANDARD_PLUGINS: &[(&str, &[u8])] = &[\n",
    );
    for (package, wasm) in &built {
        let name = package.trim_start_matches("plugin-");
        table.push_str(&format!(
            "    ({name:?}, include_bytes!({:?})),\n",
            wasm.display().to_string()
        ));
    }
    table.push_str("];\n");
    let out = std::path::PathBuf::from(std::env::var("OUT_DIR").expect("cargo sets OUT_DIR"));
    std::fs::write(out.join("standard_plugins.rs"), table).expect("write standard_plugins.rs");
    // The directory of built components, for tests and benches that want files.
    if let Some((_, first)) = built.first()
        && let Some(dir) = first.parent()
    {
        println!("cargo:rustc-env=RUNLOOM_GUEST_DIR={}", dir.display());
    }
}
