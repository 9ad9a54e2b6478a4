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

/// The embedded component whose hex SHA-256 is `hash`.
pub fn standard_plugin_with_hash(hash: &str) -> Option<&'static [u8]> {
    STANDARD_PLUGIN_HASHES
        .iter()
        .position(|h| *h == hash)
        .and_then(|i| STANDARD_PLUGINS.get(i))
        .map(|(_, bytes)| *bytes)
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
        let (_, bytes) = super::standard_plugins()[0];
        let hash = crate::plugin::content_hash(bytes);
        assert_eq!(super::standard_plugin_with_hash(&hash), Some(bytes));
        assert_eq!(super::standard_plugin_with_hash("00"), None);
    }
}
