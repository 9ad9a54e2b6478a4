//! Secret values: where they come from (`[secrets.NAME]` in `runloom.toml`, or `--secret` on
//! the command line), read at the moment a granted plugin asks.
//!
//! Invariant: a value is only read for a name the plugin host has already checked against the
//! plugin's grants; nothing here decides who may read what.

use crate::config::SecretRef;
use crate::plugin::SecretSource;
use std::collections::BTreeMap;

/// Secret sources by name.
#[derive(Debug, Clone, Default)]
pub struct Secrets {
    sources: BTreeMap<String, SecretRef>,
}

impl Secrets {
    /// Secrets from these sources.
    pub fn new(sources: BTreeMap<String, SecretRef>) -> Self {
        Self { sources }
    }

    /// Add or replace one source.
    pub fn insert(&mut self, name: String, source: SecretRef) {
        self.sources.insert(name, source);
    }
}

impl SecretSource for Secrets {
    fn get(&self, name: &str) -> Option<String> {
        self.sources.get(name).and_then(SecretRef::read)
    }
}
