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

#[async_trait::async_trait]
impl SecretSource for Secrets {
    async fn get(&self, name: &str) -> Option<String> {
        self.sources.get(name)?.read().await
    }
}

/// Masks secret values in everything a run stores or shows. Every value handed to a plugin or
/// a runbook body is added as it is read, so it is masked from that moment on.
#[derive(Debug, Clone, Default)]
pub struct Masker {
    values: std::sync::Arc<std::sync::RwLock<Vec<String>>>,
}

/// What a masked secret looks like.
pub const MASK: &str = "********";

/// Values shorter than this are not masked: masking `a` would erase every `a` in the log and
/// protect nothing.
const MIN_MASKED_LEN: usize = 4;

impl Masker {
    /// Remember `value` as secret.
    pub fn add(&self, value: &str) {
        if value.len() < MIN_MASKED_LEN {
            return;
        }
        if let Ok(mut values) = self.values.write()
            && !values.iter().any(|v| v == value)
        {
            values.push(value.to_string());
            // Longest first, so a secret containing another is masked whole.
            values.sort_by_key(|v| std::cmp::Reverse(v.len()));
        }
    }

    /// `text` with every known secret replaced by [`MASK`].
    pub fn mask(&self, text: &str) -> String {
        let Ok(values) = self.values.read() else {
            return text.to_string();
        };
        let mut out = text.to_string();
        for v in values.iter() {
            if out.contains(v.as_str()) {
                out = out.replace(v.as_str(), MASK);
            }
        }
        out
    }

    /// A JSON value with every string masked (keys included).
    pub fn mask_json(&self, value: &serde_json::Value) -> serde_json::Value {
        use serde_json::Value;
        if self.values.read().map(|v| v.is_empty()).unwrap_or(true) {
            return value.clone();
        }
        match value {
            Value::String(s) => Value::String(self.mask(s)),
            Value::Array(a) => Value::Array(a.iter().map(|v| self.mask_json(v)).collect()),
            Value::Object(o) => Value::Object(
                o.iter()
                    .map(|(k, v)| (self.mask(k), self.mask_json(v)))
                    .collect(),
            ),
            other => other.clone(),
        }
    }
}

/// A secret source that tells a [`Masker`] about every value it hands out.
pub struct MaskingSecrets {
    /// Where values come from.
    pub inner: Secrets,
    /// Who learns about them.
    pub masker: Masker,
}

#[async_trait::async_trait]
impl SecretSource for MaskingSecrets {
    async fn get(&self, name: &str) -> Option<String> {
        let value = self.inner.get(name).await?;
        self.masker.add(&value);
        Some(value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn masks_known_values_longest_first_in_text_and_json() {
        let m = Masker::default();
        m.add("hunter2-token");
        m.add("hunter2");
        m.add("abc"); // too short to mask
        assert_eq!(
            m.mask("key=hunter2-token, pw=hunter2, x=abc"),
            "key=********, pw=********, x=abc"
        );
        let v = json!({"url": "https://h/?t=hunter2-token", "n": 1, "list": ["hunter2"], "hunter2": true});
        assert_eq!(
            m.mask_json(&v),
            json!({"url": "https://h/?t=********", "n": 1, "list": ["********"], "********": true})
        );
    }

    #[tokio::test]
    async fn masking_secrets_register_what_they_hand_out() {
        let file = std::env::temp_dir().join(format!("runloom-mask-{}", std::process::id()));
        std::fs::write(&file, "s3cr3t-value\n").unwrap();
        let mut secrets = Secrets::default();
        secrets.insert("db".into(), SecretRef::File(file.clone()));
        let masker = Masker::default();
        let source = MaskingSecrets {
            inner: secrets,
            masker: masker.clone(),
        };
        assert_eq!(
            masker.mask("s3cr3t-value"),
            "s3cr3t-value",
            "unknown until read"
        );
        assert_eq!(source.get("db").await.as_deref(), Some("s3cr3t-value"));
        assert_eq!(masker.mask("pw s3cr3t-value"), "pw ********");
        std::fs::remove_file(file).unwrap();
    }

    /// A secret file on a mount that does not answer (here a FIFO nobody writes) holds up the
    /// call that asked for it, not the runtime's thread: on this single-threaded runtime a
    /// blocking read would stop the timer below until the watchdog writes.
    #[tokio::test]
    async fn a_secret_file_that_does_not_answer_holds_up_only_its_reader() {
        use std::sync::Arc;
        use std::sync::atomic::{AtomicBool, Ordering};
        /// Removes the FIFO however the test ends.
        struct Fifo(std::path::PathBuf);
        impl Drop for Fifo {
            fn drop(&mut self) {
                let _ = std::fs::remove_file(&self.0);
            }
        }
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let fifo =
            Fifo(std::env::temp_dir().join(format!("runloom-fifo-{}-{nanos}", std::process::id())));
        nix::unistd::mkfifo(
            &fifo.0,
            nix::sys::stat::Mode::S_IRUSR | nix::sys::stat::Mode::S_IWUSR,
        )
        .unwrap();
        let answered = Arc::new(AtomicBool::new(false));
        {
            let (path, answered) = (fifo.0.clone(), Arc::clone(&answered));
            // Unblocks a reader stuck on the runtime's thread, so the test fails, not hangs.
            std::thread::spawn(move || {
                std::thread::sleep(std::time::Duration::from_secs(20));
                if !answered.swap(true, Ordering::SeqCst) {
                    let _ = std::fs::write(&path, "late\n");
                }
            });
        }
        let mut secrets = Secrets::default();
        secrets.insert("token".into(), SecretRef::File(fifo.0.clone()));
        let read = tokio::spawn(async move { secrets.get("token").await });
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        assert!(
            !read.is_finished(),
            "the read blocked the runtime's thread until the watchdog wrote"
        );
        assert!(!answered.swap(true, Ordering::SeqCst));
        let writer = fifo.0.clone();
        tokio::task::spawn_blocking(move || std::fs::write(writer, "v4lue\n"))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(read.await.unwrap().as_deref(), Some("v4lue"));
    }
}
