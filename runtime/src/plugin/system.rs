//! The `system` and `tls` imports: host facts WASI cannot reach, each checked against a grant.

use super::bindings::{system, tls, types};
use super::host::{HostState, record};
use crate::grant::{Denial, SystemFact};
use std::time::Duration;

impl HostState {
    /// Record and return a denial for the plugin.
    fn deny(&self, capability: &str, target: impl Into<String>) -> types::Denial {
        let denial = Denial::new(capability, target);
        record(&self.env.denials, denial.clone());
        types::Denial {
            capability: denial.capability,
            target: denial.target,
        }
    }

    fn require(&self, fact: SystemFact) -> Result<(), system::SystemError> {
        if self.env.grants.allows_system(fact) {
            Ok(())
        } else {
            Err(system::SystemError::Denied(
                self.deny("read system facts", fact.name()),
            ))
        }
    }
}

impl system::Host for HostState {
    async fn disk_usage(
        &mut self,
        path: String,
    ) -> wasmtime::Result<Result<system::DiskSpace, system::SystemError>> {
        let Some(host_path) = self.env.grants.host_path(&path) else {
            return Ok(Err(system::SystemError::Denied(
                self.deny("read disk usage of", path),
            )));
        };
        let stat = tokio::task::spawn_blocking(move || nix::sys::statvfs::statvfs(&host_path))
            .await
            .map_err(wasmtime::Error::new)?;
        Ok(match stat {
            Ok(s) => {
                let block = s.fragment_size();
                let total = s.blocks().saturating_mul(block);
                let free = s.blocks_free().saturating_mul(block);
                Ok(system::DiskSpace {
                    total_bytes: total,
                    available_bytes: s.blocks_available().saturating_mul(block),
                    used_bytes: total.saturating_sub(free),
                    total_inodes: s.files(),
                    available_inodes: s.files_available(),
                })
            }
            Err(e) => Err(system::SystemError::Failed(format!("`{path}`: {e}"))),
        })
    }

    async fn memory(
        &mut self,
    ) -> wasmtime::Result<Result<system::MemoryInfo, system::SystemError>> {
        if let Err(e) = self.require(SystemFact::Memory) {
            return Ok(Err(e));
        }
        let text = match tokio::fs::read_to_string("/proc/meminfo").await {
            Ok(t) => t,
            Err(e) => {
                return Ok(Err(system::SystemError::Failed(format!(
                    "/proc/meminfo: {e}"
                ))));
            }
        };
        let kib = |key: &str| meminfo_kib(&text, key).saturating_mul(1024);
        Ok(Ok(system::MemoryInfo {
            total_bytes: kib("MemTotal"),
            available_bytes: kib("MemAvailable"),
            swap_total_bytes: kib("SwapTotal"),
            swap_free_bytes: kib("SwapFree"),
        }))
    }

    async fn load_average(
        &mut self,
    ) -> wasmtime::Result<Result<system::Load, system::SystemError>> {
        if let Err(e) = self.require(SystemFact::Load) {
            return Ok(Err(e));
        }
        let text = match tokio::fs::read_to_string("/proc/loadavg").await {
            Ok(t) => t,
            Err(e) => {
                return Ok(Err(system::SystemError::Failed(format!(
                    "/proc/loadavg: {e}"
                ))));
            }
        };
        let mut parts = text
            .split_whitespace()
            .map(|p| p.parse::<f64>().unwrap_or(0.0));
        let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
        Ok(Ok(system::Load {
            one: parts.next().unwrap_or(0.0),
            five: parts.next().unwrap_or(0.0),
            fifteen: parts.next().unwrap_or(0.0),
            cpus: u32::try_from(cpus).unwrap_or(u32::MAX),
        }))
    }

    async fn processes(
        &mut self,
    ) -> wasmtime::Result<Result<Vec<system::Process>, system::SystemError>> {
        if let Err(e) = self.require(SystemFact::Processes) {
            return Ok(Err(e));
        }
        let list = tokio::task::spawn_blocking(list_processes)
            .await
            .map_err(wasmtime::Error::new)?;
        Ok(Ok(list))
    }
}

/// A value in kB from `/proc/meminfo` text, 0 when absent.
fn meminfo_kib(text: &str, key: &str) -> u64 {
    text.lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix(':'))
        .and_then(|rest| rest.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

fn list_processes() -> Vec<system::Process> {
    use std::os::unix::fs::MetadataExt;
    let page = 4096u64;
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for entry in entries.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        let dir = entry.path();
        // A process may exit between listing and reading: skip it.
        let Ok(name) = std::fs::read_to_string(dir.join("comm")) else {
            continue;
        };
        let rss_pages = std::fs::read_to_string(dir.join("statm"))
            .ok()
            .and_then(|s| s.split_whitespace().nth(1)?.parse::<u64>().ok())
            .unwrap_or(0);
        let uid = std::fs::metadata(&dir).map_or(0, |m| m.uid());
        out.push(system::Process {
            pid,
            name: name.trim_end().to_string(),
            rss_bytes: rss_pages.saturating_mul(page),
            uid,
        });
    }
    out.sort_by_key(|p| p.pid);
    out
}

impl tls::Host for HostState {
    async fn peer_certificate(
        &mut self,
        host: String,
        port: u16,
        server_name: String,
        timeout_ms: u32,
    ) -> wasmtime::Result<Result<tls::Handshake, tls::TlsError>> {
        if !self.env.grants.allows_host(&host, port) {
            return Ok(Err(tls::TlsError::Denied(
                self.deny("connect to", format!("{host}:{port}")),
            )));
        }
        let budget = self.env.remaining();
        let timeout = match timeout_ms {
            0 => Duration::from_secs(10),
            ms => Duration::from_millis(ms.into()),
        }
        .min(budget);
        Ok(
            super::tls::peer_certificate(&host, port, &server_name, timeout)
                .await
                .map(|h| tls::Handshake {
                    leaf: tls::Certificate {
                        subject: h.subject,
                        issuer: h.issuer,
                        not_before: h.not_before,
                        not_after: h.not_after,
                        dns_names: h.dns_names,
                    },
                    trusted: h.verify_error.is_none(),
                    verify_error: h.verify_error,
                })
                .map_err(tls::TlsError::Failed),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn meminfo_values_are_read_by_key() {
        let text = "MemTotal:       16314236 kB\nMemFree:  1 kB\nMemAvailable:   8000000 kB\n";
        assert_eq!(meminfo_kib(text, "MemTotal"), 16_314_236);
        assert_eq!(meminfo_kib(text, "MemAvailable"), 8_000_000);
        assert_eq!(meminfo_kib(text, "SwapTotal"), 0);
    }

    #[test]
    fn the_process_list_includes_this_process() {
        let me = std::process::id();
        let list = list_processes();
        let this = list.iter().find(|p| p.pid == me).expect("own pid listed");
        assert!(!this.name.is_empty());
        assert!(this.rss_bytes > 0);
    }
}
