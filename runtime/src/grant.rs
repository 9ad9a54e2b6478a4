//! Grants: the capabilities an operator gives a plugin (outbound hosts, directories, commands,
//! secrets), their parsing from `runloom.toml` and CLI flags, and the checks the plugin host
//! applies on every use.
//!
//! Invariant: nothing is granted by default. An empty [`Grants`] denies everything, and every
//! check here answers "is this exact use covered by a grant?", never "is it forbidden?".
//! Pure: no I/O.

use serde::{Deserialize, Deserializer};
use std::fmt;
use std::path::{Component, Path, PathBuf};
use std::str::FromStr;

/// Everything granted to one plugin.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Grants {
    /// Outbound `host:port` pairs for HTTP and TCP, e.g. `"api.example.org:443"`,
    /// `"*.example.org:443"`, `"127.0.0.1:*"`.
    #[serde(default)]
    pub hosts: Vec<HostPattern>,
    /// Host directories visible to the plugin.
    #[serde(default)]
    pub dirs: Vec<DirGrant>,
    /// Programs the plugin may run, with optional argument patterns.
    #[serde(default)]
    pub commands: Vec<CommandGrant>,
    /// Names of secrets the plugin may read.
    #[serde(default)]
    pub secrets: Vec<String>,
    /// Host facts the plugin may read: `memory`, `load`, `processes`.
    #[serde(default)]
    pub system: Vec<SystemFact>,
}

/// A host fact WASI cannot reach, granted by name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SystemFact {
    /// Memory and swap figures.
    Memory,
    /// Load averages.
    Load,
    /// The process list (names, pids, memory; no command lines).
    Processes,
}

impl SystemFact {
    /// The name used in grants and denials.
    pub fn name(self) -> &'static str {
        match self {
            SystemFact::Memory => "memory",
            SystemFact::Load => "load",
            SystemFact::Processes => "processes",
        }
    }
}

impl FromStr for SystemFact {
    type Err = GrantParseError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "memory" => Ok(SystemFact::Memory),
            "load" => Ok(SystemFact::Load),
            "processes" => Ok(SystemFact::Processes),
            _ => Err(parse_error(
                "system",
                s,
                "expected `memory`, `load` or `processes`",
            )),
        }
    }
}

/// A capability use that no grant covers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Denial {
    /// What was attempted: `connect to`, `read`, `write`, `run`, `read secret`.
    pub capability: String,
    /// What it was attempted on: `example.org:443`, `/etc/shadow`.
    pub target: String,
}

impl Denial {
    /// A denial of `capability` on `target`.
    pub fn new(capability: impl Into<String>, target: impl Into<String>) -> Self {
        Self {
            capability: capability.into(),
            target: target.into(),
        }
    }

    /// The message operators see, naming the plugin.
    pub fn render(&self, plugin: &str) -> String {
        format!(
            "plugin `{plugin}` may not {} `{}`: not granted",
            self.capability, self.target
        )
    }
}

/// A grant string that does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid {kind} grant `{input}`: {reason}")]
pub struct GrantParseError {
    kind: &'static str,
    input: String,
    reason: String,
}

fn parse_error(kind: &'static str, input: &str, reason: impl Into<String>) -> GrantParseError {
    GrantParseError {
        kind,
        input: input.to_string(),
        reason: reason.into(),
    }
}

macro_rules! deserialize_from_str {
    ($ty:ty) => {
        impl<'de> Deserialize<'de> for $ty {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = String::deserialize(d)?;
                s.parse().map_err(serde::de::Error::custom)
            }
        }
    };
}

// ---------------------------------------------------------------------------------------------
// Hosts

/// Which hosts a [`HostPattern`] matches.
#[derive(Debug, Clone, PartialEq, Eq)]
enum HostMatch {
    /// Any host (`*`).
    Any,
    /// Exactly this host (lowercase; IPv6 in brackets).
    Exact(String),
    /// Any subdomain of this domain (`*.example.org` stores `example.org`); not the domain itself.
    Subdomains(String),
}

/// An outbound `host:port` grant. The port is required; `*` stands for any host or any port,
/// and `*.example.org` for any subdomain of `example.org`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostPattern {
    host: HostMatch,
    /// `None` means any port.
    port: Option<u16>,
}

impl FromStr for HostPattern {
    type Err = GrantParseError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = |why: &str| parse_error("host", s, why);
        if s.contains("://") || s.contains('/') {
            return Err(err("write `host:port` without a scheme or path"));
        }
        let (host, port) = s
            .rsplit_once(':')
            .filter(|(h, _)| !h.is_empty() && (!h.contains(':') || h.ends_with(']')))
            .ok_or_else(|| err("expected `host:port` (use `host:*` for any port)"))?;
        let port = match port {
            "*" => None,
            p => Some(
                p.parse::<u16>()
                    .ok()
                    .filter(|p| *p != 0)
                    .ok_or_else(|| err("port must be 1-65535 or `*`"))?,
            ),
        };
        let host = host.to_ascii_lowercase();
        let host = if host == "*" {
            HostMatch::Any
        } else if let Some(domain) = host.strip_prefix("*.") {
            if domain.is_empty() || domain.contains('*') {
                return Err(err(
                    "a wildcard may only replace the leftmost labels: `*.example.org`",
                ));
            }
            HostMatch::Subdomains(domain.to_string())
        } else if host.contains('*') {
            return Err(err(
                "a wildcard may only replace the leftmost labels: `*.example.org`",
            ));
        } else {
            HostMatch::Exact(host)
        };
        Ok(HostPattern { host, port })
    }
}
deserialize_from_str!(HostPattern);

impl fmt::Display for HostPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.host {
            HostMatch::Any => write!(f, "*")?,
            HostMatch::Exact(h) => write!(f, "{h}")?,
            HostMatch::Subdomains(d) => write!(f, "*.{d}")?,
        }
        match self.port {
            Some(p) => write!(f, ":{p}"),
            None => write!(f, ":*"),
        }
    }
}

impl HostPattern {
    /// Whether this pattern allows connecting to `host` on `port`. `host` is compared
    /// case-insensitively; an IPv6 address may be given with or without brackets.
    pub fn matches(&self, host: &str, port: u16) -> bool {
        if self.port.is_some_and(|p| p != port) {
            return false;
        }
        let host = normalize_host(host);
        match &self.host {
            HostMatch::Any => true,
            HostMatch::Exact(h) => *h == host,
            HostMatch::Subdomains(d) => host
                .strip_suffix(d.as_str())
                .is_some_and(|prefix| prefix.ends_with('.') && prefix.len() > 1),
        }
    }

    /// The host name when the pattern names exactly one host (no wildcard).
    pub fn exact_host(&self) -> Option<&str> {
        match &self.host {
            HostMatch::Exact(h) => Some(h),
            _ => None,
        }
    }

    /// Whether every `host:port` this pattern allows is also allowed by `outer`. Used to check
    /// that a runbook only narrows a plugin's grants.
    pub fn is_within(&self, outer: &HostPattern) -> bool {
        let port_ok = match (outer.port, self.port) {
            (None, _) => true,
            (Some(o), Some(s)) => o == s,
            (Some(_), None) => false,
        };
        let host_ok = match (&outer.host, &self.host) {
            (HostMatch::Any, _) => true,
            (HostMatch::Exact(o), HostMatch::Exact(s)) => o == s,
            (HostMatch::Subdomains(o), HostMatch::Exact(s)) => s
                .strip_suffix(o.as_str())
                .is_some_and(|p| p.ends_with('.') && p.len() > 1),
            (HostMatch::Subdomains(o), HostMatch::Subdomains(s)) => {
                s == o || s.ends_with(&format!(".{o}"))
            }
            _ => false,
        };
        port_ok && host_ok
    }
}

fn normalize_host(host: &str) -> String {
    let host = host.trim_end_matches('.').to_ascii_lowercase();
    if host.contains(':') && !host.starts_with('[') {
        format!("[{host}]")
    } else {
        host
    }
}

// ---------------------------------------------------------------------------------------------
// Directories

/// Whether a granted directory may be written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DirMode {
    /// Read only (the default).
    Ro,
    /// Read and write.
    Rw,
}

/// A host directory made visible to a plugin, at `guest` (default: the same path).
///
/// In `runloom.toml` either `"/var/log"`, `"/var/log:/logs:ro"` or
/// `{ host = "/var/log", guest = "/logs", mode = "ro" }`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirGrant {
    /// Absolute host path.
    pub host: PathBuf,
    /// Absolute path the plugin sees.
    pub guest: String,
    /// Read-only or read-write.
    pub mode: DirMode,
}

impl FromStr for DirGrant {
    type Err = GrantParseError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = |why: &str| parse_error("directory", s, why);
        let parts: Vec<&str> = s.split(':').collect();
        let (host, guest, mode) = match parts.as_slice() {
            [host] => (*host, *host, "ro"),
            [host, mode @ ("ro" | "rw")] => (*host, *host, *mode),
            [host, guest] => (*host, *guest, "ro"),
            [host, guest, mode] => (*host, *guest, *mode),
            _ => return Err(err("expected `HOST_PATH[:GUEST_PATH][:ro|rw]`")),
        };
        let mode = match mode {
            "ro" => DirMode::Ro,
            "rw" => DirMode::Rw,
            _ => return Err(err("mode must be `ro` or `rw`")),
        };
        DirGrant::new(host, guest, mode).map_err(|why| err(&why))
    }
}

impl<'de> Deserialize<'de> for DirGrant {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Table {
            host: String,
            guest: Option<String>,
            mode: Option<DirMode>,
        }
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Form {
            Short(String),
            Table(Table),
        }
        match Form::deserialize(d)? {
            Form::Short(s) => s.parse().map_err(serde::de::Error::custom),
            Form::Table(t) => {
                let guest = t.guest.unwrap_or_else(|| t.host.clone());
                DirGrant::new(&t.host, &guest, t.mode.unwrap_or(DirMode::Ro)).map_err(|why| {
                    serde::de::Error::custom(format!("invalid directory grant `{}`: {why}", t.host))
                })
            }
        }
    }
}

impl DirGrant {
    fn new(host: &str, guest: &str, mode: DirMode) -> Result<Self, String> {
        if !host.starts_with('/') || !guest.starts_with('/') {
            return Err("paths must be absolute".into());
        }
        if [host, guest]
            .iter()
            .any(|p| Path::new(p).components().any(|c| c == Component::ParentDir))
        {
            return Err("paths must not contain `..`".into());
        }
        Ok(DirGrant {
            host: PathBuf::from(host),
            guest: guest.to_string(),
            mode,
        })
    }

    /// Whether this grant gives no more than `outer`: the same guest path, a host path inside
    /// `outer`'s, and no write access unless `outer` has it.
    pub fn is_within(&self, outer: &DirGrant) -> bool {
        self.host.starts_with(&outer.host)
            && (outer.mode == DirMode::Rw || self.mode == DirMode::Ro)
    }
}

impl fmt::Display for DirGrant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mode = match self.mode {
            DirMode::Ro => "ro",
            DirMode::Rw => "rw",
        };
        write!(f, "{}:{}:{mode}", self.host.display(), self.guest)
    }
}

// ---------------------------------------------------------------------------------------------
// Commands

/// One argument pattern: `*` matches any run of characters, `?` one character; the pattern
/// `**` (alone, last) matches any number of remaining arguments.
#[derive(Debug, Clone, PartialEq, Eq)]
struct ArgPattern(String);

impl ArgPattern {
    fn matches(&self, arg: &str) -> bool {
        glob_match(self.0.as_bytes(), arg.as_bytes())
    }
}

fn glob_match(pattern: &[u8], text: &[u8]) -> bool {
    // Iterative wildcard matching with single-star backtracking.
    let (mut p, mut t) = (0, 0);
    let (mut star, mut mark) = (None, 0);
    while t < text.len() {
        match pattern.get(p) {
            Some(b'?') => {
                p += 1;
                t += 1;
            }
            Some(b'*') => {
                star = Some(p);
                mark = t;
                p += 1;
            }
            Some(&c) if c == text[t] => {
                p += 1;
                t += 1;
            }
            _ => match star {
                Some(s) => {
                    p = s + 1;
                    mark += 1;
                    t = mark;
                }
                None => return false,
            },
        }
    }
    pattern[p..].iter().all(|&c| c == b'*')
}

/// A program a plugin may run: an absolute path, and optionally the argument lists allowed.
///
/// In `runloom.toml` either `"/usr/bin/systemctl"` (any arguments), `"/usr/bin/systemctl
/// restart *"` (space-separated patterns) or `{ program = "/usr/bin/systemctl", args =
/// ["restart", "*"] }`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommandGrant {
    /// Absolute program path.
    pub program: PathBuf,
    /// `None`: any arguments. `Some`: one pattern per argument.
    args: Option<Vec<ArgPattern>>,
}

impl FromStr for CommandGrant {
    type Err = GrantParseError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let mut words = s.split_whitespace();
        let program = words
            .next()
            .ok_or_else(|| parse_error("command", s, "empty"))?;
        let args: Vec<String> = words.map(str::to_string).collect();
        CommandGrant::new(program, (!args.is_empty()).then_some(args))
            .map_err(|why| parse_error("command", s, why))
    }
}

impl<'de> Deserialize<'de> for CommandGrant {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Table {
            program: String,
            args: Option<Vec<String>>,
        }
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Form {
            Short(String),
            Table(Table),
        }
        match Form::deserialize(d)? {
            Form::Short(s) => s.parse().map_err(serde::de::Error::custom),
            Form::Table(t) => CommandGrant::new(&t.program, t.args).map_err(|why| {
                serde::de::Error::custom(format!("invalid command grant `{}`: {why}", t.program))
            }),
        }
    }
}

impl CommandGrant {
    fn new(program: &str, args: Option<Vec<String>>) -> Result<Self, String> {
        if !program.starts_with('/') {
            return Err("the program must be an absolute path".into());
        }
        if let Some(args) = &args
            && let Some(pos) = args.iter().position(|a| a == "**")
            && pos + 1 != args.len()
        {
            return Err("`**` may only be the last argument pattern".into());
        }
        Ok(CommandGrant {
            program: PathBuf::from(program),
            args: args.map(|a| a.into_iter().map(ArgPattern).collect()),
        })
    }

    /// Whether this grant allows running `program` with exactly `args`.
    pub fn allows(&self, program: &str, args: &[String]) -> bool {
        if Path::new(program) != self.program {
            return false;
        }
        let Some(patterns) = &self.args else {
            return true;
        };
        let mut args = args.iter();
        for pattern in patterns {
            if pattern.0 == "**" {
                return true;
            }
            match args.next() {
                Some(arg) if pattern.matches(arg) => {}
                _ => return false,
            }
        }
        args.next().is_none()
    }

    /// Whether this grant allows no more than `outer`: the same program and argument patterns
    /// that `outer` also allows (checked pattern by pattern, literally).
    pub fn is_within(&self, outer: &CommandGrant) -> bool {
        if self.program != outer.program {
            return false;
        }
        match (&outer.args, &self.args) {
            (None, _) => true,
            (Some(_), None) => false,
            (Some(o), Some(s)) => {
                let literal: Vec<String> = s.iter().map(|p| p.0.clone()).collect();
                // A narrowed pattern list is within if, read as a literal argument list, the
                // outer grant allows it and it has no wildcards the outer grant lacks.
                CommandGrant {
                    program: outer.program.clone(),
                    args: Some(o.clone()),
                }
                .allows(&outer.program.to_string_lossy(), &literal)
            }
        }
    }
}

impl fmt::Display for CommandGrant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.program.display())?;
        if let Some(args) = &self.args {
            for a in args {
                write!(f, " {}", a.0)?;
            }
        }
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------------
// Checks

impl Grants {
    /// Whether any grant allows connecting to `host:port`.
    pub fn allows_host(&self, host: &str, port: u16) -> bool {
        self.hosts.iter().any(|p| p.matches(host, port))
    }

    /// Whether any grant allows running `program` with `args`.
    pub fn allows_command(&self, program: &str, args: &[String]) -> bool {
        self.commands.iter().any(|c| c.allows(program, args))
    }

    /// Whether the secret `name` is granted.
    pub fn allows_secret(&self, name: &str) -> bool {
        self.secrets.iter().any(|s| s == name)
    }

    /// Whether the host fact is granted.
    pub fn allows_system(&self, fact: SystemFact) -> bool {
        self.system.contains(&fact)
    }

    /// The host path behind a guest path inside a granted directory, if any; the most
    /// specific grant wins. `..` is resolved lexically first, so it cannot climb out.
    pub fn host_path(&self, guest: &str) -> Option<PathBuf> {
        let guest = lexical_normalize(Path::new(guest))?;
        self.dirs
            .iter()
            .filter_map(|d| {
                let rest = guest.strip_prefix(Path::new(&d.guest)).ok()?;
                Some((d.guest.len(), d.host.join(rest)))
            })
            .max_by_key(|(len, _)| *len)
            .map(|(_, host)| host)
    }

    /// True when nothing is granted.
    pub fn is_empty(&self) -> bool {
        self.hosts.is_empty()
            && self.dirs.is_empty()
            && self.commands.is_empty()
            && self.secrets.is_empty()
            && self.system.is_empty()
    }

    /// Every grant as one line (`host api.example.org:443`), for `plugin inspect` and logs.
    pub fn describe(&self) -> Vec<String> {
        let mut out = Vec::new();
        out.extend(self.hosts.iter().map(|h| format!("host {h}")));
        out.extend(self.dirs.iter().map(|d| format!("dir {d}")));
        out.extend(self.commands.iter().map(|c| format!("command {c}")));
        out.extend(self.secrets.iter().map(|s| format!("secret {s}")));
        out.extend(self.system.iter().map(|s| format!("system {}", s.name())));
        out
    }
}

/// An absolute path with `.` and `..` resolved without touching the filesystem; `None` for a
/// relative path.
fn lexical_normalize(path: &Path) -> Option<PathBuf> {
    if !path.is_absolute() {
        return None;
    }
    let mut out = PathBuf::from("/");
    for part in path.components() {
        match part {
            Component::ParentDir => {
                out.pop();
            }
            Component::Normal(p) => out.push(p),
            Component::RootDir | Component::CurDir | Component::Prefix(_) => {}
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn host(s: &str) -> HostPattern {
        s.parse().unwrap()
    }

    #[test]
    fn host_patterns_match_host_and_port() {
        assert!(host("example.org:443").matches("Example.ORG", 443));
        assert!(!host("example.org:443").matches("example.org", 80));
        assert!(!host("example.org:443").matches("evil-example.org", 443));
        assert!(host("example.org:*").matches("example.org", 8443));
        assert!(host("*.example.org:443").matches("api.example.org", 443));
        assert!(host("*.example.org:443").matches("a.b.example.org", 443));
        assert!(!host("*.example.org:443").matches("example.org", 443));
        assert!(!host("*.example.org:443").matches("badexample.org", 443));
        assert!(host("*:*").matches("anything", 1));
        assert!(host("127.0.0.1:*").matches("127.0.0.1", 5432));
        assert!(host("[::1]:8080").matches("::1", 8080));
        assert!(host("[::1]:8080").matches("[::1]", 8080));
    }

    #[test]
    fn host_patterns_reject_bad_syntax() {
        for bad in [
            "example.org",
            "https://example.org:443",
            "example.org:0",
            "example.org:x",
            "api.*.org:443",
            ":443",
            "::1:80",
        ] {
            let err = bad.parse::<HostPattern>().unwrap_err().to_string();
            assert!(
                err.starts_with(&format!("invalid host grant `{bad}`")),
                "{err}"
            );
        }
    }

    #[test]
    fn host_narrowing() {
        assert!(host("api.example.org:443").is_within(&host("*.example.org:443")));
        assert!(host("*.a.example.org:443").is_within(&host("*.example.org:*")));
        assert!(!host("example.org:443").is_within(&host("*.example.org:443")));
        assert!(!host("api.example.org:*").is_within(&host("api.example.org:443")));
        assert!(host("x:1").is_within(&host("*:*")));
    }

    #[test]
    fn dir_grants_parse_short_and_long_forms() {
        let d: DirGrant = "/var/log".parse().unwrap();
        assert_eq!((d.guest.as_str(), d.mode), ("/var/log", DirMode::Ro));
        let d: DirGrant = "/srv/data:/data:rw".parse().unwrap();
        assert_eq!(
            (d.host.to_str().unwrap(), d.guest.as_str(), d.mode),
            ("/srv/data", "/data", DirMode::Rw)
        );
        let d: DirGrant = "/tmp:rw".parse().unwrap();
        assert_eq!((d.guest.as_str(), d.mode), ("/tmp", DirMode::Rw));
        assert!("relative:/x".parse::<DirGrant>().is_err());
        assert!("/a/../b".parse::<DirGrant>().is_err());
        assert!("/a:/b:rx".parse::<DirGrant>().is_err());
    }

    #[test]
    fn dir_narrowing_keeps_paths_inside_and_never_adds_write() {
        let outer: DirGrant = "/srv:/srv:ro".parse().unwrap();
        assert!(
            "/srv/a:/a:ro"
                .parse::<DirGrant>()
                .unwrap()
                .is_within(&outer)
        );
        assert!(
            !"/srv/a:/a:rw"
                .parse::<DirGrant>()
                .unwrap()
                .is_within(&outer)
        );
        assert!(
            !"/etc:/etc:ro"
                .parse::<DirGrant>()
                .unwrap()
                .is_within(&outer)
        );
    }

    #[test]
    fn command_grants_match_program_and_argument_patterns() {
        let any: CommandGrant = "/usr/bin/df".parse().unwrap();
        assert!(any.allows("/usr/bin/df", &["-P".into(), "/".into()]));
        assert!(!any.allows("/bin/df", &[]));
        let restart: CommandGrant = "/usr/bin/systemctl restart *.service".parse().unwrap();
        assert!(restart.allows(
            "/usr/bin/systemctl",
            &["restart".into(), "nginx.service".into()]
        ));
        assert!(!restart.allows(
            "/usr/bin/systemctl",
            &["stop".into(), "nginx.service".into()]
        ));
        assert!(!restart.allows("/usr/bin/systemctl", &["restart".into()]));
        assert!(!restart.allows(
            "/usr/bin/systemctl",
            &["restart".into(), "a.service".into(), "b.service".into()]
        ));
        let rest: CommandGrant = "/usr/bin/apt-get -s **".parse().unwrap();
        assert!(rest.allows("/usr/bin/apt-get", &["-s".into()]));
        assert!(rest.allows(
            "/usr/bin/apt-get",
            &["-s".into(), "upgrade".into(), "-y".into()]
        ));
        assert!(!rest.allows("/usr/bin/apt-get", &["upgrade".into()]));
        assert!("systemctl".parse::<CommandGrant>().is_err());
        assert!("/bin/x ** a".parse::<CommandGrant>().is_err());
    }

    #[test]
    fn glob_matching() {
        assert!(glob_match(b"a*c", b"abbbc"));
        assert!(glob_match(b"*", b""));
        assert!(glob_match(b"a?c", b"abc"));
        assert!(!glob_match(b"a?c", b"ac"));
        assert!(glob_match(b"*.log", b"x.y.log"));
        assert!(!glob_match(b"*.log", b"x.log.gz"));
    }

    #[test]
    fn grants_deserialize_from_toml() {
        let g: Grants = toml::from_str(
            r#"
            hosts = ["api.example.org:443"]
            dirs = ["/var/log:/logs:ro", { host = "/srv", mode = "rw" }]
            commands = ["/usr/bin/df", { program = "/usr/bin/systemctl", args = ["restart", "*"] }]
            secrets = ["slack-webhook"]
            "#,
        )
        .unwrap();
        assert!(g.allows_host("api.example.org", 443));
        assert_eq!(g.dirs[1].guest, "/srv");
        assert!(g.allows_command("/usr/bin/systemctl", &["restart".into(), "x".into()]));
        assert!(g.allows_secret("slack-webhook"));
        assert!(!g.allows_secret("other"));
        assert!(Grants::default().is_empty());
        let err = toml::from_str::<Grants>(r#"hosts = ["example.org"]"#)
            .unwrap_err()
            .to_string();
        assert!(err.contains("invalid host grant `example.org`"), "{err}");
    }

    #[test]
    fn guest_paths_map_to_host_paths_only_inside_grants() {
        let g = Grants {
            dirs: vec![
                "/srv:/data:ro".parse().unwrap(),
                "/mnt/big:/data/big:rw".parse().unwrap(),
            ],
            ..Grants::default()
        };
        assert_eq!(g.host_path("/data/x"), Some(PathBuf::from("/srv/x")));
        assert_eq!(g.host_path("/data"), Some(PathBuf::from("/srv")));
        assert_eq!(
            g.host_path("/data/big/y"),
            Some(PathBuf::from("/mnt/big/y"))
        );
        assert_eq!(g.host_path("/data/../etc/shadow"), None);
        assert_eq!(g.host_path("/database"), None);
        assert_eq!(g.host_path("relative"), None);
    }

    #[test]
    fn system_facts_parse_by_name() {
        let g: Grants = toml::from_str(r#"system = ["memory", "load"]"#).unwrap();
        assert!(g.allows_system(SystemFact::Memory));
        assert!(!g.allows_system(SystemFact::Processes));
        assert!(toml::from_str::<Grants>(r#"system = ["cpu"]"#).is_err());
    }

    #[test]
    fn denial_renders_the_documented_message() {
        assert_eq!(
            Denial::new("connect to", "example.org:443").render("http-check"),
            "plugin `http-check` may not connect to `example.org:443`: not granted"
        );
    }
}
