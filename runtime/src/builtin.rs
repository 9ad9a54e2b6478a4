//! The standard plugins embedded in the binary at build time (see `runtime/build.rs`).

include!(concat!(env!("OUT_DIR"), "/standard_plugins.rs"));

/// The embedded components as (file name, bytes), in name order.
pub fn standard_plugins() -> &'static [(&'static str, &'static [u8])] {
    STANDARD_PLUGINS
}

/// The hex SHA-256 of the embedded component `name` (as [`crate::plugin::content_hash`] gives),
/// computed at build time.
pub fn standard_plugin_hash(name: &str) -> Option<&'static str> {
    STANDARD_PLUGINS
        .iter()
        .position(|(n, _)| *n == name)
        .and_then(|i| STANDARD_PLUGIN_HASHES.get(i).copied())
}

#[cfg(test)]
mod tests {
    #[test]
    fn build_time_hashes_match_the_embedded_bytes() {
        assert!(!super::standard_plugins().is_empty());
        for (name, bytes) in super::standard_plugins() {
            assert_eq!(
                super::standard_plugin_hash(name),
                Some(crate::plugin::content_hash(bytes).as_str()),
                "{name}"
            );
        }
        assert_eq!(super::standard_plugin_hash("no-such-plugin"), None);
    }
}
