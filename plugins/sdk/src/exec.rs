//! Run granted programs on the host.
//!
//! ```ignore
//! let out = runloom_sdk::exec::Command::new("/usr/bin/systemctl")
//!     .args(["is-active", "nginx"])
//!     .timeout(std::time::Duration::from_secs(5))
//!     .run()?;
//! if !out.success() { /* … */ }
//! ```
//!
//! Only programs granted to the plugin run, and only with argument lists that match the grant.
//! There is no shell: pass arguments one by one.

use crate::Error;
use crate::bindings::runloom::plugin::exec;
use std::time::Duration;

pub use crate::bindings::runloom::plugin::exec::ExitStatus;

/// A program to run, built up before [`Command::run`].
#[derive(Debug, Clone)]
pub struct Command {
    program: String,
    args: Vec<String>,
    stdin: Vec<u8>,
    timeout: Option<Duration>,
    max_output_bytes: u32,
}

/// What a program did.
#[derive(Debug, Clone)]
pub struct Output {
    /// How it ended.
    pub status: ExitStatus,
    /// Captured stdout (possibly truncated).
    pub stdout: Vec<u8>,
    /// Captured stderr (possibly truncated).
    pub stderr: Vec<u8>,
    /// True when stdout was cut at the output limit.
    pub stdout_truncated: bool,
    /// True when stderr was cut at the output limit.
    pub stderr_truncated: bool,
    /// Wall-clock run time.
    pub duration: Duration,
}

impl Command {
    /// Run the program at this absolute path.
    pub fn new(program: impl Into<String>) -> Self {
        Self {
            program: program.into(),
            args: Vec::new(),
            stdin: Vec::new(),
            timeout: None,
            max_output_bytes: 0,
        }
    }

    /// Add one argument.
    pub fn arg(mut self, arg: impl Into<String>) -> Self {
        self.args.push(arg.into());
        self
    }

    /// Add several arguments.
    pub fn args<I, S>(mut self, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.args.extend(args.into_iter().map(Into::into));
        self
    }

    /// Bytes to write to the program's stdin.
    pub fn stdin(mut self, bytes: impl Into<Vec<u8>>) -> Self {
        self.stdin = bytes.into();
        self
    }

    /// Kill the program after this long (the engine's default is 10 s).
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }

    /// Keep at most this many bytes of stdout and of stderr each (the default is 1 MiB).
    pub fn max_output_bytes(mut self, bytes: u32) -> Self {
        self.max_output_bytes = bytes;
        self
    }

    /// The command line as an operator would type it, for messages.
    pub fn display(&self) -> String {
        std::iter::once(self.program.as_str())
            .chain(self.args.iter().map(String::as_str))
            .collect::<Vec<_>>()
            .join(" ")
    }

    /// Run the program and wait for it. A program that runs but exits non-zero is not an
    /// error here: look at [`Output::status`]. Errors are [`Error::Denied`] for programs or
    /// arguments that are not granted and [`Error::Failed`] for programs that cannot start.
    pub fn run(&self) -> Result<Output, Error> {
        let timeout_ms = self
            .timeout
            .map(|t| u32::try_from(t.as_millis()).unwrap_or(u32::MAX).max(1))
            .unwrap_or(0);
        let out = exec::run(&exec::Command {
            program: self.program.clone(),
            args: self.args.clone(),
            stdin: self.stdin.clone(),
            timeout_ms,
            max_output_bytes: self.max_output_bytes,
        })
        .map_err(|e| match e {
            exec::ExecError::Denied(d) => Error::Denied(d),
            exec::ExecError::SpawnFailed(m) => {
                Error::failed(format!("cannot start `{}`: {m}", self.program))
            }
        })?;
        Ok(Output {
            status: out.status,
            stdout: out.stdout,
            stderr: out.stderr,
            stdout_truncated: out.stdout_truncated,
            stderr_truncated: out.stderr_truncated,
            duration: Duration::from_millis(out.duration_ms),
        })
    }
}

impl Output {
    /// True when the program exited with code 0.
    pub fn success(&self) -> bool {
        matches!(self.status, ExitStatus::Exited(0))
    }

    /// stdout as text (invalid UTF-8 replaced).
    pub fn stdout_text(&self) -> String {
        String::from_utf8_lossy(&self.stdout).into_owned()
    }

    /// stderr as text (invalid UTF-8 replaced).
    pub fn stderr_text(&self) -> String {
        String::from_utf8_lossy(&self.stderr).into_owned()
    }

    /// How the program ended, for messages: `exit code 1`, `signal 9`, `timed out`.
    pub fn status_text(&self) -> String {
        match self.status {
            ExitStatus::Exited(code) => format!("exit code {code}"),
            ExitStatus::Signaled(sig) => format!("signal {sig}"),
            ExitStatus::TimedOut => "timed out".to_string(),
        }
    }
}
