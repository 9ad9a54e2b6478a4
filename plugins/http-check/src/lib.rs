//! `http-check`: request a URL and judge the answer by status code, latency and body.
//!
//! Network failures (refused, timed out, DNS, TLS) are check results with status `critical`,
//! not errors: an unreachable endpoint is exactly what a check is for. Only a URL the plugin
//! was not granted (`hosts` in `runloom.toml`) or bad input is an error.

use runloom_sdk::check::{CheckResult, Status, Thresholds};
use runloom_sdk::http::{HttpError, Request};
use runloom_sdk::{Actions, CallContext, Error, Plugin, export_plugin};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// Input of `check`.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CheckInput {
    /// URL to request, `http://` or `https://`.
    pub url: String,
    /// HTTP method.
    #[serde(default = "default_method")]
    pub method: String,
    /// Status codes that count as up. Empty (the default) accepts any 2xx or 3xx.
    #[serde(default)]
    pub expect_status: Vec<u16>,
    /// Latency in milliseconds at or above which the check is `warning`.
    pub latency_warning_ms: Option<f64>,
    /// Latency in milliseconds at or above which the check is `critical`.
    pub latency_critical_ms: Option<f64>,
    /// Text the response body must contain.
    pub body_contains: Option<String>,
    /// Regular expression the response body must match.
    pub body_regex: Option<String>,
    /// Request headers.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// Give up after this many milliseconds (connecting, and each wait for data).
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
}

fn default_method() -> String {
    "GET".into()
}

fn default_timeout_ms() -> u64 {
    10_000
}

/// Facts `check` reports besides its status.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct HttpFacts {
    /// The URL requested.
    pub url: String,
    /// The response status code, when a response arrived.
    pub http_status: Option<u16>,
    /// Time to the whole response in milliseconds, when a response arrived.
    pub latency_ms: Option<f64>,
    /// Body size in bytes (up to the 1 MiB read limit).
    pub body_bytes: Option<usize>,
}

/// What the request produced, before judging.
pub enum Outcome {
    /// A response: status code and body.
    Response {
        /// Status code.
        status: u16,
        /// Body.
        body: Vec<u8>,
    },
    /// No response.
    Unreachable(HttpError),
}

struct HttpCheck;

impl Plugin for HttpCheck {
    const NAME: &'static str = "http-check";
    const DESCRIPTION: &'static str =
        "HTTP endpoint checks: status code, latency thresholds, body content.";

    fn actions() -> Actions {
        Actions::new().read(
            "check",
            "Request a URL and judge the response by status, latency and body.",
            check,
        )
    }
}

fn check(input: CheckInput, _ctx: &CallContext) -> Result<CheckResult<HttpFacts>, Error> {
    let regex = compile_regex(&input)?;
    let mut request = Request::new(&input.method, &input.url)
        .timeout(Duration::from_millis(input.timeout_ms.max(1)));
    for (name, value) in &input.headers {
        request = request.header(name, value);
    }
    let started = Instant::now();
    let outcome = match request.send() {
        Ok(response) => Outcome::Response {
            status: response.status,
            body: response.body,
        },
        Err(e @ (HttpError::Denied(_) | HttpError::InvalidUrl(_))) => return Err(e.into()),
        Err(e) => Outcome::Unreachable(e),
    };
    Ok(judge(&input, regex.as_ref(), outcome, started.elapsed()))
}

fn compile_regex(input: &CheckInput) -> Result<Option<regex_lite::Regex>, Error> {
    input
        .body_regex
        .as_deref()
        .map(regex_lite::Regex::new)
        .transpose()
        .map_err(|e| Error::invalid_input(format!("`body_regex`: {e}")))
}

/// Judge an outcome against the input. Pure, so it is unit-tested natively.
pub fn judge(
    input: &CheckInput,
    regex: Option<&regex_lite::Regex>,
    outcome: Outcome,
    elapsed: Duration,
) -> CheckResult<HttpFacts> {
    let thresholds = Thresholds {
        warning: input.latency_warning_ms,
        critical: input.latency_critical_ms,
    };
    let what = format!("{} {}", input.method.to_ascii_uppercase(), input.url);
    let mut facts = HttpFacts {
        url: input.url.clone(),
        http_status: None,
        latency_ms: None,
        body_bytes: None,
    };
    let (status, body) = match outcome {
        Outcome::Unreachable(e) => {
            return CheckResult {
                status: Status::Critical,
                value: None,
                unit: "ms".into(),
                thresholds,
                detail: format!("{what} failed: {e}"),
                facts,
            };
        }
        Outcome::Response { status, body } => (status, body),
    };
    let latency = (elapsed.as_secs_f64() * 1000.0 * 10.0).round() / 10.0;
    facts.http_status = Some(status);
    facts.latency_ms = Some(latency);
    facts.body_bytes = Some(body.len());
    let result = |status: Status, detail: String, facts: HttpFacts| CheckResult {
        status,
        value: Some(latency),
        unit: "ms".into(),
        thresholds,
        detail,
        facts,
    };

    let status_ok = if input.expect_status.is_empty() {
        (200..400).contains(&status)
    } else {
        input.expect_status.contains(&status)
    };
    if !status_ok {
        let expected = if input.expect_status.is_empty() {
            "2xx or 3xx".to_string()
        } else {
            input
                .expect_status
                .iter()
                .map(u16::to_string)
                .collect::<Vec<_>>()
                .join(" or ")
        };
        let detail = format!("{what} returned {status}, expected {expected}");
        return result(Status::Critical, detail, facts);
    }
    let text = String::from_utf8_lossy(&body);
    if let Some(needle) = &input.body_contains
        && !text.contains(needle.as_str())
    {
        let detail = format!("{what} returned {status} but the body does not contain `{needle}`");
        return result(Status::Critical, detail, facts);
    }
    if let Some(re) = regex
        && !re.is_match(&text)
    {
        let detail = format!(
            "{what} returned {status} but the body does not match `{}`",
            re.as_str()
        );
        return result(Status::Critical, detail, facts);
    }
    let judged = thresholds.judge_high(latency);
    let detail = match judged {
        Status::Ok => format!("{what} returned {status} in {latency} ms"),
        _ => format!(
            "{what} returned {status} in {latency} ms, slower than the {} threshold of {} ms",
            if judged == Status::Critical {
                "critical"
            } else {
                "warning"
            },
            if judged == Status::Critical {
                thresholds.critical
            } else {
                thresholds.warning
            }
            .unwrap_or_default()
        ),
    };
    result(judged, detail, facts)
}

export_plugin!(HttpCheck);

#[cfg(test)]
mod tests {
    use super::*;

    fn input(json: &str) -> CheckInput {
        serde_json::from_str(json).unwrap()
    }

    fn response(status: u16, body: &str) -> Outcome {
        Outcome::Response {
            status,
            body: body.as_bytes().to_vec(),
        }
    }

    const MS: fn(u64) -> Duration = Duration::from_millis;

    #[test]
    fn a_fast_2xx_is_ok() {
        let r = judge(
            &input(r#"{"url":"http://x/"}"#),
            None,
            response(204, ""),
            MS(12),
        );
        assert_eq!(r.status, Status::Ok);
        assert_eq!(r.value, Some(12.0));
        assert_eq!(r.detail, "GET http://x/ returned 204 in 12 ms");
        assert_eq!(r.facts.http_status, Some(204));
    }

    #[test]
    fn an_unexpected_status_is_critical() {
        let r = judge(
            &input(r#"{"url":"http://x/"}"#),
            None,
            response(503, ""),
            MS(5),
        );
        assert_eq!(r.status, Status::Critical);
        assert_eq!(r.detail, "GET http://x/ returned 503, expected 2xx or 3xx");
        let r = judge(
            &input(r#"{"url":"http://x/","expect_status":[401,403]}"#),
            None,
            response(200, ""),
            MS(5),
        );
        assert_eq!(r.detail, "GET http://x/ returned 200, expected 401 or 403");
    }

    #[test]
    fn latency_thresholds_give_warning_then_critical() {
        let i = input(r#"{"url":"http://x/","latency_warning_ms":100,"latency_critical_ms":500}"#);
        assert_eq!(
            judge(&i, None, response(200, ""), MS(50)).status,
            Status::Ok
        );
        let warn = judge(&i, None, response(200, ""), MS(150));
        assert_eq!(warn.status, Status::Warning);
        assert_eq!(
            warn.detail,
            "GET http://x/ returned 200 in 150 ms, slower than the warning threshold of 100 ms"
        );
        assert_eq!(
            judge(&i, None, response(200, ""), MS(600)).status,
            Status::Critical
        );
    }

    #[test]
    fn body_text_and_regex_must_match() {
        let i = input(r#"{"url":"http://x/","body_contains":"ready"}"#);
        assert_eq!(
            judge(&i, None, response(200, "all ready"), MS(1)).status,
            Status::Ok
        );
        let r = judge(&i, None, response(200, "starting"), MS(1));
        assert_eq!(r.status, Status::Critical);
        assert!(r.detail.ends_with("the body does not contain `ready`"));
        let i = input(r#"{"url":"http://x/","body_regex":"version=\\d+"}"#);
        let re = compile_regex(&i).unwrap();
        assert_eq!(
            judge(&i, re.as_ref(), response(200, "version=42"), MS(1)).status,
            Status::Ok
        );
        assert_eq!(
            judge(&i, re.as_ref(), response(200, "version=x"), MS(1)).status,
            Status::Critical
        );
    }

    #[test]
    fn unreachable_is_critical_not_an_error() {
        let r = judge(
            &input(r#"{"url":"http://x/"}"#),
            None,
            Outcome::Unreachable(HttpError::Connect("connection refused".into())),
            MS(1),
        );
        assert_eq!(r.status, Status::Critical);
        assert_eq!(
            r.detail,
            "GET http://x/ failed: cannot connect: connection refused"
        );
        assert_eq!(r.value, None);
    }

    #[test]
    fn a_bad_regex_is_invalid_input() {
        let i = input(r#"{"url":"http://x/","body_regex":"("}"#);
        assert!(matches!(compile_regex(&i), Err(Error::InvalidInput(_))));
    }
}
