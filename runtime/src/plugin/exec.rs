//! Running a granted program for a plugin: no shell, a clean environment, a timeout that kills
//! the whole process group, and capped output.

use std::process::Stdio;
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::process::Command;

/// Timeout when the plugin asks for none.
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);
/// Output kept per stream when the plugin asks for no particular cap.
const DEFAULT_MAX_OUTPUT: usize = 1024 * 1024;
/// Largest output cap a plugin may ask for, per stream.
const MAX_OUTPUT: usize = 16 * 1024 * 1024;
/// The only environment a program sees.
const PATH: &str = "/usr/sbin:/usr/bin:/sbin:/bin";

pub(super) struct Request {
    pub(super) program: String,
    pub(super) args: Vec<String>,
    pub(super) stdin: Vec<u8>,
    pub(super) timeout: Option<Duration>,
    pub(super) max_output: usize,
}

impl Request {
    /// The command line as typed, for denials and logs.
    pub(super) fn display(&self) -> String {
        std::iter::once(self.program.as_str())
            .chain(self.args.iter().map(String::as_str))
            .collect::<Vec<_>>()
            .join(" ")
    }
}

pub(super) enum Status {
    Exited(i32),
    Signaled(i32),
    TimedOut,
}

pub(super) struct Output {
    pub(super) status: Status,
    pub(super) stdout: Vec<u8>,
    pub(super) stderr: Vec<u8>,
    pub(super) stdout_truncated: bool,
    pub(super) stderr_truncated: bool,
    pub(super) duration: Duration,
}

/// Run `req`, waiting at most its timeout and never longer than `budget` (what is left of the
/// plugin call). Errors only when the program cannot be started.
pub(super) async fn run(req: Request, budget: Duration) -> Result<Output, String> {
    let timeout = req.timeout.unwrap_or(DEFAULT_TIMEOUT).min(budget);
    let cap = match req.max_output {
        0 => DEFAULT_MAX_OUTPUT,
        n => n.min(MAX_OUTPUT),
    };
    let started = Instant::now();
    let mut child = Command::new(&req.program)
        .args(&req.args)
        .env_clear()
        .env("PATH", PATH)
        .env("LANG", "C.UTF-8")
        .current_dir("/")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| e.to_string())?;
    let pid = child.id();

    let stdin = child.stdin.take();
    let input = req.stdin;
    let feed = async move {
        if let Some(mut stdin) = stdin {
            // A program that exits without reading its input is not an error.
            let _ = stdin.write_all(&input).await;
        }
    };
    let stdout = read_capped(child.stdout.take(), cap);
    let stderr = read_capped(child.stderr.take(), cap);
    let wait = async {
        let (_, out, err, status) = tokio::join!(feed, stdout, stderr, child.wait());
        (out, err, status)
    };
    let (status, (stdout, stdout_truncated), (stderr, stderr_truncated)) =
        match tokio::time::timeout(timeout, wait).await {
            Ok((out, err, status)) => {
                let status = status.map_err(|e| e.to_string())?;
                (exit_status(status), out, err)
            }
            Err(_) => {
                kill_group(pid);
                (Status::TimedOut, (Vec::new(), false), (Vec::new(), false))
            }
        };
    Ok(Output {
        status,
        stdout,
        stderr,
        stdout_truncated,
        stderr_truncated,
        duration: started.elapsed(),
    })
}

fn exit_status(status: std::process::ExitStatus) -> Status {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(code), _) => Status::Exited(code),
        (None, Some(sig)) => Status::Signaled(sig),
        (None, None) => Status::Exited(-1),
    }
}

/// Kill the program and everything it started: it leads its own process group.
fn kill_group(pid: Option<u32>) {
    if let Some(pid) = pid.and_then(|p| i32::try_from(p).ok()) {
        let _ = nix::sys::signal::killpg(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGKILL,
        );
    }
}

/// Read a stream to its end, keeping at most `cap` bytes; drains the rest so the program never
/// blocks on a full pipe.
async fn read_capped(stream: Option<impl AsyncRead + Unpin>, cap: usize) -> (Vec<u8>, bool) {
    let Some(mut stream) = stream else {
        return (Vec::new(), false);
    };
    let mut kept = Vec::new();
    let mut truncated = false;
    let mut buf = [0u8; 8192];
    loop {
        match stream.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                let room = cap.saturating_sub(kept.len());
                if n > room {
                    truncated = true;
                }
                kept.extend_from_slice(&buf[..n.min(room)]);
            }
        }
    }
    (kept, truncated)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(program: &str, args: &[&str]) -> Request {
        Request {
            program: program.into(),
            args: args.iter().map(|s| s.to_string()).collect(),
            stdin: Vec::new(),
            timeout: None,
            max_output: 0,
        }
    }

    #[tokio::test]
    async fn captures_output_and_exit_code() {
        let out = run(
            req("/bin/sh", &["-c", "echo out; echo err >&2; exit 3"]),
            Duration::from_secs(5),
        )
        .await
        .unwrap();
        assert!(matches!(out.status, Status::Exited(3)));
        assert_eq!(out.stdout, b"out\n");
        assert_eq!(out.stderr, b"err\n");
    }

    #[tokio::test]
    async fn environment_is_clean() {
        // The test process has HOME, USER and more; none of them may reach the program.
        let out = run(req("/usr/bin/env", &[]), Duration::from_secs(5))
            .await
            .unwrap();
        let env = String::from_utf8(out.stdout).unwrap();
        let mut names: Vec<&str> = env.lines().filter_map(|l| l.split('=').next()).collect();
        names.sort();
        assert_eq!(names, ["LANG", "PATH"]);
    }

    #[tokio::test]
    async fn output_is_capped_and_marked_truncated() {
        let mut r = req("/bin/sh", &["-c", "head -c 100000 /dev/zero"]);
        r.max_output = 1000;
        let out = run(r, Duration::from_secs(5)).await.unwrap();
        assert_eq!(out.stdout.len(), 1000);
        assert!(out.stdout_truncated);
        assert!(matches!(out.status, Status::Exited(0)));
    }

    #[tokio::test]
    async fn timeout_kills_the_whole_process_group() {
        let marker = std::env::temp_dir().join(format!("runloom-exec-{}", std::process::id()));
        let _ = std::fs::remove_file(&marker);
        let script = format!("(sleep 1; touch {}) & sleep 30", marker.display());
        let mut r = req("/bin/sh", &["-c", &script]);
        r.timeout = Some(Duration::from_millis(200));
        let out = run(r, Duration::from_secs(5)).await.unwrap();
        assert!(matches!(out.status, Status::TimedOut));
        // The background child would create the marker after 1 s had it survived the kill.
        tokio::time::sleep(Duration::from_millis(1500)).await;
        assert!(
            !marker.exists(),
            "a process of the group outlived the timeout"
        );
    }

    #[tokio::test]
    async fn stdin_is_delivered() {
        let mut r = req("/bin/cat", &[]);
        r.stdin = b"hello".to_vec();
        let out = run(r, Duration::from_secs(5)).await.unwrap();
        assert_eq!(out.stdout, b"hello");
    }

    #[tokio::test]
    async fn missing_program_is_a_spawn_error() {
        assert!(
            run(req("/nonexistent/prog", &[]), Duration::from_secs(5))
                .await
                .is_err()
        );
    }
}
