//! The standard plugins embedded in the binary at build time (see `runtime/build.rs`).

include!(concat!(env!("OUT_DIR"), "/standard_plugins.rs"));

/// The embedded components as (file name, bytes), in name order.
pub fn standard_plugins() -> &'static [(&'static str, &'static [u8])] {
    STANDARD_PLUGINS
}
