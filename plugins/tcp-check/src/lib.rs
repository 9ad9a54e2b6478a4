//! `tcp-check`: connect to `host:port`, judge the time it took, and optionally read what the
//! server says first (its banner, or its reply to `send`) and match it.
//!
//! A port that refuses, a host that does not answer or does not resolve, a banner that does
//! not match: all are check results with status `critical`, not errors. Only a `host:port`
//! the plugin was not granted (`hosts` in `runloom.toml`) or bad input is an error.

use runloom_sdk::check::{CheckResult, Status, Thresholds};
use runloom_sdk::net::{self, NetError, TcpStream};
use runloom_sdk::{Actions, CallContext, Error, Plugin, export_plugin};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use std::time::{Duration, Instant};

/// Most banner bytes read; a banner is a line or a few, not a download.
pub const MAX_BANNER_BYTES: usize = 4096;

/// Input of `check`.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CheckInput {
    /// Host name or IP address to connect to.
    pub host: String,
    /// TCP port.
    pub port: u16,
    /// Give up after this many milliseconds: connecting (name lookup included), and reading
    /// the banner.
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
    /// Connect time in milliseconds at or above which the check is `warning`.
    pub latency_warning_ms: Option<f64>,
    /// Connect time in milliseconds at or above which the check is `critical`.
    pub latency_critical_ms: Option<f64>,
    /// Text to send once connected (e.g. `PING\r\n`); the reply is read as the banner.
    pub send: Option<String>,
    /// Read and report the banner even without `expect_contains` or `expect_regex`. Reading
    /// stops at the first line break; with an expectation, once it is met. Either way it
    /// stops when the server closes, after 4096 bytes, or at the timeout.
    #[serde(default)]
    pub read_banner: bool,
    /// Text the banner must contain.
    pub expect_contains: Option<String>,
    /// Regular expression the banner must match.
    pub expect_regex: Option<String>,
}

fn default_timeout_ms() -> u64 {
    10_000
}

impl CheckInput {
    /// Whether the check reads what the server sends.
    pub fn reads_banner(&self) -> bool {
        self.read_banner
            || self.send.is_some()
            || self.expect_contains.is_some()
            || self.expect_regex.is_some()
    }
}

/// Facts `check` reports besides its status.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct TcpFacts {
    /// Host asked for.
    pub host: String,
    /// Port asked for.
    pub port: u16,
    /// The address connected to (`127.0.0.1:22`), once connected.
    pub address: Option<String>,
    /// Time to connect in milliseconds, name lookup included, once connected.
    pub latency_ms: Option<f64>,
    /// What the server sent (text, invalid UTF-8 replaced, trailing line breaks removed, at
    /// most 4096 bytes), when the check read it.
    pub banner: Option<String>,
}

/// What reading the banner produced.
#[derive(Debug, Clone, PartialEq)]
pub struct Banner {
    /// The bytes received, as text.
    pub text: String,
    /// Why reading stopped before the banner was complete (a timeout, a reset), if it did.
    pub cut_short: Option<String>,
}

/// What the connection produced, before judging.
#[derive(Debug)]
pub enum Outcome {
    /// Connected.
    Connected {
        /// The address connected to.
        address: String,
        /// Time to connect.
        elapsed: Duration,
        /// The banner, when the check reads one.
        banner: Option<Banner>,
    },
    /// No connection.
    Unreachable(NetError),
}

struct TcpCheck;

impl Plugin for TcpCheck {
    const NAME: &'static str = "tcp-check";
    const DESCRIPTION: &'static str =
        "TCP checks: connect to host:port, judge the connect time, match the banner.";

    fn actions() -> Actions {
        Actions::new().read(
            "check",
            "Connect to `host:port` and judge the connect time and, optionally, the banner.",
            check,
        )
    }
}

fn check(input: CheckInput, _ctx: &CallContext) -> Result<CheckResult<TcpFacts>, Error> {
    let regex = validate(&input)?;
    let timeout = Duration::from_millis(input.timeout_ms.max(1));
    let started = Instant::now();
    let outcome = match net::connect(&input.host, input.port, timeout) {
        Ok(stream) => {
            let elapsed = started.elapsed();
            let banner = input
                .reads_banner()
                .then(|| read_banner(&stream, &input, regex.as_ref(), timeout));
            Outcome::Connected {
                address: stream.peer_addr().to_string(),
                elapsed,
                banner,
            }
        }
        Err(denied @ NetError::Denied(_)) => return Err(denied.into()),
        Err(e) => Outcome::Unreachable(e),
    };
    Ok(judge(&input, regex.as_ref(), outcome))
}

/// Check the input and compile `expect_regex`.
pub fn validate(input: &CheckInput) -> Result<Option<regex_lite::Regex>, Error> {
    if input.host.is_empty() {
        return Err(Error::invalid_input("`host` is empty"));
    }
    if input.port == 0 {
        return Err(Error::invalid_input("`port` must be 1-65535"));
    }
    input
        .expect_regex
        .as_deref()
        .map(regex_lite::Regex::new)
        .transpose()
        .map_err(|e| Error::invalid_input(format!("`expect_regex`: {e}")))
}

/// Send `send`, then read until the banner is complete, the server closes, 4096 bytes have
/// arrived or `timeout` passes.
fn read_banner(
    stream: &TcpStream,
    input: &CheckInput,
    regex: Option<&regex_lite::Regex>,
    timeout: Duration,
) -> Banner {
    let deadline = Instant::now() + timeout;
    let mut bytes = Vec::new();
    let mut cut_short = None;
    if let Some(send) = &input.send
        && let Err(e) = stream.write_all(send.as_bytes(), timeout)
    {
        return Banner {
            text: String::new(),
            cut_short: Some(format!("sending failed: {e}")),
        };
    }
    while bytes.len() < MAX_BANNER_BYTES {
        let left = deadline.saturating_duration_since(Instant::now());
        match stream.read(MAX_BANNER_BYTES - bytes.len(), left) {
            Ok(chunk) if chunk.is_empty() => break,
            Ok(chunk) => {
                bytes.extend_from_slice(&chunk);
                if banner_complete(&String::from_utf8_lossy(&bytes), input, regex) {
                    break;
                }
            }
            Err(e) => {
                cut_short = Some(e.to_string());
                break;
            }
        }
    }
    Banner {
        text: String::from_utf8_lossy(&bytes).into_owned(),
        cut_short,
    }
}

/// Whether enough has arrived to judge: what the input expects is there, or (with no
/// expectation) a first whole line.
pub fn banner_complete(text: &str, input: &CheckInput, regex: Option<&regex_lite::Regex>) -> bool {
    if input.expect_contains.is_none() && regex.is_none() {
        return text.contains('\n');
    }
    let contains = input
        .expect_contains
        .as_deref()
        .is_none_or(|needle| text.contains(needle));
    contains && regex.is_none_or(|re| re.is_match(text))
}

/// Judge an outcome against the input. Pure, so it is unit-tested natively.
pub fn judge(
    input: &CheckInput,
    regex: Option<&regex_lite::Regex>,
    outcome: Outcome,
) -> CheckResult<TcpFacts> {
    let thresholds = Thresholds {
        warning: input.latency_warning_ms,
        critical: input.latency_critical_ms,
    };
    let target = format!("{}:{}", input.host, input.port);
    let mut facts = TcpFacts {
        host: input.host.clone(),
        port: input.port,
        address: None,
        latency_ms: None,
        banner: None,
    };
    let (address, elapsed, banner) = match outcome {
        Outcome::Unreachable(e) => {
            return CheckResult {
                status: Status::Critical,
                value: None,
                unit: "ms".into(),
                thresholds,
                detail: format!("cannot connect to {target}: {e}"),
                facts,
            };
        }
        Outcome::Connected {
            address,
            elapsed,
            banner,
        } => (address, elapsed, banner),
    };
    let latency = (elapsed.as_secs_f64() * 1000.0 * 10.0).round() / 10.0;
    let via = if address == target {
        String::new()
    } else {
        format!(" ({address})")
    };
    let connected = format!("connected to {target}{via} in {latency} ms");
    facts.address = Some(address);
    facts.latency_ms = Some(latency);
    facts.banner = banner
        .as_ref()
        .map(|b| b.text.trim_end_matches(['\r', '\n']).to_string());
    let result = |status: Status, detail: String, facts: TcpFacts| CheckResult {
        status,
        value: Some(latency),
        unit: "ms".into(),
        thresholds,
        detail,
        facts,
    };

    let expects = input.expect_contains.is_some() || regex.is_some();
    if let Some(banner) = &banner {
        let shown = shorten(banner.text.trim_end_matches(['\r', '\n']));
        if expects && banner.text.is_empty() {
            let why = match &banner.cut_short {
                Some(e) => format!("no banner arrived ({e})"),
                None => "the server closed the connection without a banner".to_string(),
            };
            return result(Status::Critical, format!("{connected} but {why}"), facts);
        }
        if let Some(needle) = &input.expect_contains
            && !banner.text.contains(needle.as_str())
        {
            let detail =
                format!("{connected} but the banner `{shown}` does not contain `{needle}`");
            return result(Status::Critical, detail, facts);
        }
        if let Some(re) = regex
            && !re.is_match(&banner.text)
        {
            let detail = format!(
                "{connected} but the banner `{shown}` does not match `{}`",
                re.as_str()
            );
            return result(Status::Critical, detail, facts);
        }
    }
    let judged = thresholds.judge_high(latency);
    let mut detail = connected;
    match judged {
        Status::Critical => detail.push_str(&format!(
            ", slower than the critical threshold of {} ms",
            thresholds.critical.unwrap_or_default()
        )),
        Status::Warning => detail.push_str(&format!(
            ", slower than the warning threshold of {} ms",
            thresholds.warning.unwrap_or_default()
        )),
        Status::Ok | Status::Unknown => {}
    }
    match &banner {
        Some(b) if !b.text.is_empty() => {
            detail.push_str(&format!(
                "; banner `{}`",
                shorten(b.text.trim_end_matches(['\r', '\n']))
            ));
        }
        Some(b) => detail.push_str(&match &b.cut_short {
            Some(e) => format!("; no banner ({e})"),
            None => "; no banner".to_string(),
        }),
        None => {}
    }
    result(judged, detail, facts)
}

/// The first line of a banner, at most 200 characters, for the detail sentence (the whole
/// banner is in the facts).
fn shorten(text: &str) -> String {
    let first = text.lines().next().unwrap_or("");
    let mut short: String = first.chars().take(200).collect();
    if short.len() < text.len() {
        short.push('…');
    }
    short
}

export_plugin!(TcpCheck);

#[cfg(test)]
mod tests {
    use super::*;

    fn input(json: &str) -> CheckInput {
        serde_json::from_str(json).unwrap()
    }

    fn connected(ms: u64, banner: Option<&str>) -> Outcome {
        Outcome::Connected {
            address: "10.0.0.7:22".into(),
            elapsed: Duration::from_millis(ms),
            banner: banner.map(|b| Banner {
                text: b.into(),
                cut_short: None,
            }),
        }
    }

    #[test]
    fn a_quick_connection_is_ok_with_its_latency() {
        let r = judge(
            &input(r#"{"host":"bastion","port":22}"#),
            None,
            connected(12, None),
        );
        assert_eq!(r.status, Status::Ok);
        assert_eq!(r.value, Some(12.0));
        assert_eq!(r.unit, "ms");
        assert_eq!(r.detail, "connected to bastion:22 (10.0.0.7:22) in 12 ms");
        assert_eq!(r.facts.address.as_deref(), Some("10.0.0.7:22"));
        assert_eq!(r.facts.banner, None);
    }

    #[test]
    fn latency_thresholds_give_warning_then_critical() {
        let i = input(
            r#"{"host":"10.0.0.7","port":22,"latency_warning_ms":100,"latency_critical_ms":500}"#,
        );
        let r = judge(&i, None, connected(150, None));
        assert_eq!(r.status, Status::Warning);
        assert_eq!(
            r.detail,
            "connected to 10.0.0.7:22 in 150 ms, slower than the warning threshold of 100 ms"
        );
        assert_eq!(
            judge(&i, None, connected(700, None)).status,
            Status::Critical
        );
    }

    #[test]
    fn the_banner_must_contain_and_match_what_is_expected() {
        let i = input(
            r#"{"host":"bastion","port":22,"expect_contains":"OpenSSH","expect_regex":"^SSH-2\\.0-"}"#,
        );
        let re = validate(&i).unwrap();
        let r = judge(
            &i,
            re.as_ref(),
            connected(3, Some("SSH-2.0-OpenSSH_9.6\r\n")),
        );
        assert_eq!(r.status, Status::Ok);
        assert_eq!(r.facts.banner.as_deref(), Some("SSH-2.0-OpenSSH_9.6"));
        assert!(
            r.detail.ends_with("; banner `SSH-2.0-OpenSSH_9.6`"),
            "{}",
            r.detail
        );
        let r = judge(&i, re.as_ref(), connected(3, Some("SSH-2.0-dropbear\r\n")));
        assert_eq!(r.status, Status::Critical);
        assert_eq!(
            r.detail,
            "connected to bastion:22 (10.0.0.7:22) in 3 ms but the banner `SSH-2.0-dropbear` \
             does not contain `OpenSSH`"
        );
        let r = judge(
            &i,
            re.as_ref(),
            connected(3, Some("220 OpenSSH? no, SMTP\r\n")),
        );
        assert_eq!(r.status, Status::Critical);
        assert!(
            r.detail.ends_with("does not match `^SSH-2\\.0-`"),
            "{}",
            r.detail
        );
    }

    #[test]
    fn a_missing_banner_is_critical_only_when_one_is_expected() {
        let silent = || Outcome::Connected {
            address: "10.0.0.7:6379".into(),
            elapsed: Duration::from_millis(1),
            banner: Some(Banner {
                text: String::new(),
                cut_short: Some("timed out".into()),
            }),
        };
        let i = input(r#"{"host":"10.0.0.7","port":6379,"expect_contains":"PONG"}"#);
        let r = judge(&i, None, silent());
        assert_eq!(r.status, Status::Critical);
        assert_eq!(
            r.detail,
            "connected to 10.0.0.7:6379 in 1 ms but no banner arrived (timed out)"
        );
        let i = input(r#"{"host":"10.0.0.7","port":6379,"read_banner":true}"#);
        let r = judge(&i, None, silent());
        assert_eq!(r.status, Status::Ok);
        assert!(
            r.detail.ends_with("; no banner (timed out)"),
            "{}",
            r.detail
        );
    }

    #[test]
    fn unreachable_is_critical_not_an_error() {
        let i = input(r#"{"host":"db","port":5432}"#);
        let r = judge(&i, None, Outcome::Unreachable(NetError::Refused));
        assert_eq!(r.status, Status::Critical);
        assert_eq!(r.value, None);
        assert_eq!(r.detail, "cannot connect to db:5432: connection refused");
        let r = judge(&i, None, Outcome::Unreachable(NetError::Timeout));
        assert_eq!(r.detail, "cannot connect to db:5432: timed out");
    }

    #[test]
    fn reading_stops_at_a_line_or_once_the_expectation_is_met() {
        let plain = input(r#"{"host":"h","port":1,"read_banner":true}"#);
        assert!(!banner_complete("220 mail.exa", &plain, None));
        assert!(banner_complete(
            "220 mail.example.org ESMTP\r\n",
            &plain,
            None
        ));
        let i = input(r#"{"host":"h","port":1,"expect_contains":"ESMTP"}"#);
        // A multi-line greeting: keep reading past the first line until the text appears.
        assert!(!banner_complete("220-mail.example.org\r\n", &i, None));
        assert!(banner_complete(
            "220-mail.example.org\r\n220 ESMTP ready",
            &i,
            None
        ));
        let i = input(r#"{"host":"h","port":1,"expect_regex":"^\\+PONG"}"#);
        let re = validate(&i).unwrap();
        assert!(banner_complete("+PONG\r\n", &i, re.as_ref()));
    }

    #[test]
    fn bad_input_is_invalid_input() {
        assert!(matches!(
            validate(&input(r#"{"host":"h","port":22,"expect_regex":"("}"#)),
            Err(Error::InvalidInput(m)) if m.starts_with("`expect_regex`: ")
        ));
        assert!(validate(&input(r#"{"host":"","port":22}"#)).is_err());
        assert!(validate(&input(r#"{"host":"h","port":0}"#)).is_err());
        assert!(serde_json::from_str::<CheckInput>(r#"{"host":"h","port":70000}"#).is_err());
    }

    #[test]
    fn long_banners_are_shortened_in_the_detail_only() {
        let long = "x".repeat(300);
        assert_eq!(shorten(&long).chars().count(), 201);
        assert_eq!(shorten("one\ntwo"), "one…");
        assert_eq!(shorten("one"), "one");
    }
}
