//! A server in its own process: `runloom serve`, or a baseline receiver. Either prints a line
//! with its address (`… http://127.0.0.1:PORT …`) on stdout once it listens; it is ready when
//! `GET /healthz` answers 200.

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use tokio::sync::oneshot;

/// Longest a server may take to start, or to stop after SIGTERM.
const PATIENCE: Duration = Duration::from_secs(300);

/// A server process, killed when dropped.
pub(crate) struct Server {
    child: Child,
    address: Option<oneshot::Receiver<String>>,
    base: String,
    spawned: Instant,
}

impl Server {
    /// Spawn `command`, reading its stdout for the address it listens on.
    pub(crate) fn spawn(mut command: Command) -> Server {
        command.stdin(Stdio::null()).stdout(Stdio::piped());
        let spawned = Instant::now();
        let mut child = command
            .spawn()
            .unwrap_or_else(|e| panic!("spawning {command:?}: {e}"));
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = oneshot::channel();
        // Reads until the process exits, so it never blocks on a full pipe.
        std::thread::spawn(move || {
            let mut tx = Some(tx);
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some(at) = line.find("http://")
                    && let Some(tx) = tx.take()
                {
                    let address = line[at..].split_whitespace().next().unwrap_or_default();
                    let _ = tx.send(address.trim_end_matches('/').to_string());
                }
            }
        });
        Server {
            child,
            address: Some(rx),
            base: String::new(),
            spawned,
        }
    }

    /// `runloom serve --config CONFIG` on an ephemeral port of 127.0.0.1, its log in `stderr`.
    pub(crate) fn runloom(config: &Path, stderr: &Path) -> Server {
        let mut command = Command::new(env!("CARGO_BIN_EXE_runloom"));
        command
            .args(["serve", "--listen", "127.0.0.1:0", "--config"])
            .arg(config)
            .env_remove("RUNLOOM_CONFIG")
            .env_remove("RUNLOOM_DATA_DIR")
            .env_remove("RUNLOOM_STORE")
            .env_remove("RUST_LOG")
            .stderr(std::fs::File::create(stderr).unwrap());
        Server::spawn(command)
    }

    /// Wait until `GET /healthz` answers 200; returns the time from spawn to then.
    pub(crate) async fn ready(&mut self, http: &reqwest::Client) -> Duration {
        if let Some(address) = self.address.take() {
            self.base = tokio::time::timeout(PATIENCE, address)
                .await
                .expect("the server printed its address in time")
                .unwrap_or_else(|_| panic!("the server exited: {:?}", self.child.try_wait()));
        }
        loop {
            if let Ok(r) = http.get(format!("{}/healthz", self.base)).send().await
                && r.status().is_success()
            {
                return self.spawned.elapsed();
            }
            assert!(
                self.child.try_wait().unwrap().is_none(),
                "the server exited"
            );
            assert!(self.spawned.elapsed() < PATIENCE, "/healthz never answered");
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }

    /// `http://127.0.0.1:PORT`, once [`Server::ready`].
    pub(crate) fn base(&self) -> &str {
        &self.base
    }

    /// The process id.
    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGTERM, then wait for the process to exit (SIGKILL if it takes too long).
    pub(crate) async fn terminate(mut self) {
        let _ = kill(Pid::from_raw(self.pid() as i32), Signal::SIGTERM);
        let deadline = Instant::now() + PATIENCE;
        while self.child.try_wait().unwrap().is_none() {
            if Instant::now() > deadline {
                let _ = self.child.kill();
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let _ = self.child.wait();
    }
}

/// `GET url` as JSON; panics unless it answers 2xx.
pub(crate) async fn get_json(http: &reqwest::Client, url: &str) -> serde_json::Value {
    let answer = http.get(url).send().await.unwrap();
    assert!(
        answer.status().is_success(),
        "GET {url}: {}",
        answer.status()
    );
    answer.json().await.unwrap()
}

impl Drop for Server {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}
