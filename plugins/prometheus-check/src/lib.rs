//! `prometheus-check`: run a PromQL instant query through Prometheus' HTTP API
//! (`GET /api/v1/query`) and judge each returned sample against thresholds.
//!
//! Statuses, from the API's answers: samples are judged one by one and the worst wins; an
//! empty result has the status the input asks for (`on_empty`, default `unknown`); a query
//! Prometheus rejects as malformed (`bad_data`) is the runbook's error (`invalid_input`);
//! other API errors (a timeout, an overloaded server) are `unknown`; a Prometheus that cannot
//! be reached is `critical`, like any unreachable target. A URL not granted (`hosts`) is
//! `denied`.

use runloom_sdk::check::{CheckResult, Status, Thresholds};
use runloom_sdk::http::{HttpError, Request};
use runloom_sdk::{Actions, CallContext, Error, Plugin, export_plugin};
use schemars::JsonSchema;
use serde::de::IgnoredAny;
use serde::{Deserialize, Serialize};
use std::cmp::Ordering;
use std::collections::BTreeMap;
use std::time::Duration;

/// Samples listed in the facts; `sample_count` covers them all.
pub const MAX_SAMPLES: usize = 100;
/// Largest API response read. A query returning more should be narrowed or aggregated.
pub const MAX_RESPONSE_BYTES: usize = 4 * 1024 * 1024;

/// Input of `query`.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct QueryInput {
    /// Base URL of the Prometheus server, e.g. `http://prometheus:9090` (with any path
    /// prefix it is served under); `/api/v1/query` is appended.
    pub url: String,
    /// PromQL expression, evaluated as an instant query at the current time. Its result must
    /// be an instant vector or a scalar.
    pub query: String,
    /// Value at which a sample is `warning` (see `direction`).
    pub warning: Option<f64>,
    /// Value at which a sample is `critical` (see `direction`).
    pub critical: Option<f64>,
    /// Whether values `above` (the default) or `below` the thresholds are bad; a value equal
    /// to a threshold trips it.
    #[serde(default)]
    pub direction: Direction,
    /// Status when the query returns no samples: `unknown` (the default), `ok` (for queries
    /// that select only problems, such as `up == 0`), `warning` or `critical`.
    #[serde(default = "default_on_empty")]
    pub on_empty: Status,
    /// Unit of the values, reported with the result (`percent`, `seconds`).
    #[serde(default)]
    pub unit: String,
    /// Name of a granted secret holding a bearer token for the API.
    pub bearer_token_secret: Option<String>,
    /// Give up after this many milliseconds (connecting, and each wait for data).
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
}

/// Which side of the thresholds is bad.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    /// Higher is worse (error rates, latency, usage).
    #[default]
    Above,
    /// Lower is worse (free space, healthy replicas, `up`).
    Below,
}

fn default_on_empty() -> Status {
    Status::Unknown
}

fn default_timeout_ms() -> u64 {
    10_000
}

/// Facts `query` reports besides its status.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct PrometheusFacts {
    /// The query as sent.
    pub query: String,
    /// `vector` or `scalar`, when the API answered with data.
    pub result_type: Option<String>,
    /// Number of samples returned.
    pub sample_count: usize,
    /// The samples, worst first (at most 100).
    pub samples: Vec<SampleFacts>,
    /// Warnings Prometheus attached to the answer (a partial response, say).
    pub warnings: Vec<String>,
}

/// One judged sample.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct SampleFacts {
    /// The series' labels, `__name__` included when the query keeps it (empty for a scalar).
    pub labels: BTreeMap<String, String>,
    /// The value as Prometheus wrote it (`0.25`, `NaN`, `+Inf`).
    pub value: String,
    /// This sample's status.
    pub status: Status,
}

/// The body of an API answer, success or error
/// (<https://prometheus.io/docs/prometheus/latest/querying/api/#format-overview>).
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct ApiResponse {
    status: String,
    data: Option<ResultData>,
    error_type: Option<String>,
    error: Option<String>,
    #[serde(default)]
    warnings: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(tag = "resultType", content = "result", rename_all = "lowercase")]
enum ResultData {
    Vector(Vec<VectorSample>),
    Scalar(SamplePair),
    // Read only to name them in the error: neither has a value to judge.
    String(IgnoredAny),
    Matrix(IgnoredAny),
}

/// `[<unix time>, "<value>"]`.
#[derive(Debug, Deserialize)]
struct SamplePair(IgnoredAny, String);

#[derive(Debug, Deserialize)]
struct VectorSample {
    #[serde(default)]
    metric: BTreeMap<String, String>,
    /// Absent for native histogram samples, which carry `histogram` instead.
    value: Option<SamplePair>,
}

struct PrometheusCheck;

impl Plugin for PrometheusCheck {
    const NAME: &'static str = "prometheus-check";
    const DESCRIPTION: &'static str =
        "Prometheus checks: a PromQL instant query whose samples are judged against thresholds.";

    fn actions() -> Actions {
        Actions::new().read(
            "query",
            "Run a PromQL instant query and judge each sample against the thresholds.",
            query,
        )
    }
}

fn query(input: QueryInput, _ctx: &CallContext) -> Result<CheckResult<PrometheusFacts>, Error> {
    validate(&input)?;
    let url = query_url(&input.url, &input.query);
    let mut request = Request::get(&url)
        .header("accept", "application/json")
        .timeout(Duration::from_millis(input.timeout_ms.max(1)))
        .max_body_bytes(MAX_RESPONSE_BYTES);
    if let Some(name) = &input.bearer_token_secret {
        let token = runloom_sdk::secret(name)?;
        request = request.header("authorization", format!("Bearer {token}"));
    }
    match request.send() {
        Ok(response) if response.body_truncated => Ok(unknown(
            &input,
            format!(
                "the answer to `{}` is larger than {} MiB; aggregate or narrow the query",
                input.query,
                MAX_RESPONSE_BYTES / (1024 * 1024)
            ),
        )),
        Ok(response) => judge(&input, response.status, &response.body),
        Err(e @ (HttpError::Denied(_) | HttpError::InvalidUrl(_))) => Err(e.into()),
        Err(e) => Ok(unreachable(&input, &e)),
    }
}

/// Reject inputs that cannot be judged.
pub fn validate(input: &QueryInput) -> Result<(), Error> {
    if input.query.trim().is_empty() {
        return Err(Error::invalid_input("`query` is empty"));
    }
    if let (Some(w), Some(c)) = (input.warning, input.critical) {
        let wrong = match input.direction {
            Direction::Above => w > c,
            Direction::Below => w < c,
        };
        if wrong {
            let side = match input.direction {
                Direction::Above => "above",
                Direction::Below => "below",
            };
            return Err(Error::invalid_input(format!(
                "`warning` ({w}) is {side} `critical` ({c}); with `direction` `{side}`, \
                 `critical` must be the more extreme"
            )));
        }
    }
    Ok(())
}

/// `<base>/api/v1/query?query=<percent-encoded PromQL>`.
pub fn query_url(base: &str, query: &str) -> String {
    format!(
        "{}/api/v1/query?query={}",
        base.trim_end_matches('/'),
        percent_encode(query)
    )
}

/// Percent-encode everything but RFC 3986's unreserved characters, so any PromQL (braces,
/// quotes, `=~`, spaces) survives as one query parameter.
pub fn percent_encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len() * 3);
    for byte in text.bytes() {
        match byte {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                out.push(char::from(byte));
            }
            _ => out.push_str(&format!("%{byte:02X}")),
        }
    }
    out
}

fn thresholds(input: &QueryInput) -> Thresholds {
    Thresholds {
        warning: input.warning,
        critical: input.critical,
    }
}

fn empty_facts(input: &QueryInput) -> PrometheusFacts {
    PrometheusFacts {
        query: input.query.clone(),
        result_type: None,
        sample_count: 0,
        samples: Vec::new(),
        warnings: Vec::new(),
    }
}

fn unknown(input: &QueryInput, detail: String) -> CheckResult<PrometheusFacts> {
    CheckResult {
        status: Status::Unknown,
        value: None,
        unit: input.unit.clone(),
        thresholds: thresholds(input),
        detail,
        facts: empty_facts(input),
    }
}

/// The result when Prometheus cannot be reached: `critical`, as for any unreachable target.
pub fn unreachable(input: &QueryInput, error: &HttpError) -> CheckResult<PrometheusFacts> {
    CheckResult {
        status: Status::Critical,
        value: None,
        unit: input.unit.clone(),
        thresholds: thresholds(input),
        detail: format!("cannot query Prometheus at {}: {error}", input.url),
        facts: empty_facts(input),
    }
}

/// Judge an API answer (HTTP status and body). Pure, so it is unit-tested natively. Errors
/// only for a query the API rejects as malformed or whose result cannot be judged.
pub fn judge(
    input: &QueryInput,
    http_status: u16,
    body: &[u8],
) -> Result<CheckResult<PrometheusFacts>, Error> {
    let response: ApiResponse = match serde_json::from_slice(body) {
        Ok(response) => response,
        Err(e) => {
            return Ok(unknown(
                input,
                format!(
                    "{} answered {http_status} without a Prometheus API response ({e})",
                    input.url
                ),
            ));
        }
    };
    if response.status != "success" {
        let kind = response.error_type.as_deref().unwrap_or("error");
        let message = response.error.as_deref().unwrap_or("no message");
        if kind == "bad_data" {
            return Err(Error::invalid_input(format!(
                "Prometheus rejected the query `{}`: {message}",
                input.query
            )));
        }
        return Ok(unknown(
            input,
            format!("Prometheus answered {http_status}, {kind}: {message}"),
        ));
    }
    let (result_type, raw): (&str, Vec<RawSample>) = match response.data {
        Some(ResultData::Vector(samples)) => (
            "vector",
            samples
                .into_iter()
                .map(|s| (s.metric, s.value.map(|v| v.1)))
                .collect(),
        ),
        Some(ResultData::Scalar(pair)) => ("scalar", vec![(BTreeMap::new(), Some(pair.1))]),
        Some(ResultData::Matrix(_)) => {
            return Err(Error::invalid_input(format!(
                "`{}` returns a range vector; an instant check needs one value per series \
                     (wrap it in a function such as `avg_over_time`)",
                input.query
            )));
        }
        Some(ResultData::String(_)) => {
            return Err(Error::invalid_input(format!(
                "`{}` returns a string, which has no value to judge",
                input.query
            )));
        }
        None => {
            return Ok(unknown(
                input,
                format!("Prometheus answered {http_status} with success but no data"),
            ));
        }
    };
    Ok(judge_samples(input, result_type, raw, response.warnings))
}

/// A series' labels and its value as Prometheus wrote it (absent for a native histogram).
type RawSample = (BTreeMap<String, String>, Option<String>);

/// A sample ready to be judged and sorted.
struct Judged {
    labels: BTreeMap<String, String>,
    text: String,
    value: Option<f64>,
    status: Status,
}

/// How bad a status is, for ordering: a sample that tripped a threshold outranks one that
/// could not be judged, which outranks one that is fine.
fn severity(status: Status) -> u8 {
    match status {
        Status::Ok => 0,
        Status::Unknown => 1,
        Status::Warning => 2,
        Status::Critical => 3,
    }
}

fn judge_samples(
    input: &QueryInput,
    result_type: &str,
    raw: Vec<RawSample>,
    warnings: Vec<String>,
) -> CheckResult<PrometheusFacts> {
    let thresholds = thresholds(input);
    let mut judged: Vec<Judged> = raw
        .into_iter()
        .map(|(labels, text)| {
            let value = text
                .as_deref()
                .and_then(|t| t.parse::<f64>().ok())
                .filter(|v| !v.is_nan());
            let status = match value {
                None => Status::Unknown,
                Some(v) => match input.direction {
                    Direction::Above => thresholds.judge_high(v),
                    Direction::Below => thresholds.judge_low(v),
                },
            };
            Judged {
                labels,
                text: text.unwrap_or_else(|| "(native histogram)".into()),
                value,
                status,
            }
        })
        .collect();
    // Worst first: by status, then by how far the value lies on the bad side.
    let badness = |j: &Judged| match (j.value, input.direction) {
        (Some(v), Direction::Above) => v,
        (Some(v), Direction::Below) => -v,
        (None, _) => f64::NEG_INFINITY,
    };
    judged.sort_by(|a, b| {
        severity(b.status).cmp(&severity(a.status)).then_with(|| {
            badness(b)
                .partial_cmp(&badness(a))
                .unwrap_or(Ordering::Equal)
        })
    });

    let count = judged.len();
    let facts = PrometheusFacts {
        query: input.query.clone(),
        result_type: Some(result_type.to_string()),
        sample_count: count,
        samples: judged
            .iter()
            .take(MAX_SAMPLES)
            .map(|j| SampleFacts {
                labels: j.labels.clone(),
                value: j.text.clone(),
                status: j.status,
            })
            .collect(),
        warnings,
    };
    let Some(worst) = judged.first() else {
        return CheckResult {
            status: input.on_empty,
            value: None,
            unit: input.unit.clone(),
            thresholds,
            detail: format!("`{}` returned no samples", input.query),
            facts,
        };
    };
    let described = describe(worst, input, &thresholds);
    let not_ok = judged.iter().filter(|j| j.status != Status::Ok).count();
    let detail = match (count, not_ok) {
        (1, _) => described,
        (_, 0) => format!(
            "all {count} samples are ok; the {} is {described}",
            match input.direction {
                Direction::Above => "highest",
                Direction::Below => "lowest",
            }
        ),
        _ => format!("{not_ok} of {count} samples are not ok; the worst is {described}"),
    };
    CheckResult {
        status: worst.status,
        // JSON has no infinities: an infinite value is in the facts, as Prometheus wrote it.
        value: worst.value.filter(|v| v.is_finite()),
        unit: input.unit.clone(),
        thresholds,
        detail,
        facts,
    }
}

/// `node_load1{instance="a:9100"} = 7.5, at or above the critical threshold of 4`.
fn describe(sample: &Judged, input: &QueryInput, thresholds: &Thresholds) -> String {
    let series = series_name(&sample.labels);
    let mut text = if series.is_empty() {
        format!("the value {}", sample.text)
    } else {
        format!("{series} = {}", sample.text)
    };
    if !input.unit.is_empty() && sample.value.is_some() {
        text.push(' ');
        text.push_str(&input.unit);
    }
    let side = match input.direction {
        Direction::Above => "above",
        Direction::Below => "below",
    };
    match sample.status {
        Status::Critical => text.push_str(&format!(
            ", at or {side} the critical threshold of {}",
            thresholds.critical.unwrap_or_default()
        )),
        Status::Warning => text.push_str(&format!(
            ", at or {side} the warning threshold of {}",
            thresholds.warning.unwrap_or_default()
        )),
        Status::Unknown => text.push_str(", which cannot be judged"),
        Status::Ok => {}
    }
    text
}

/// A series as PromQL writes it: `name{label="value", …}`.
pub fn series_name(labels: &BTreeMap<String, String>) -> String {
    let name = labels.get("__name__").map_or("", String::as_str);
    let rest: Vec<String> = labels
        .iter()
        .filter(|(k, _)| k.as_str() != "__name__")
        .map(|(k, v)| format!("{k}={v:?}"))
        .collect();
    if rest.is_empty() {
        name.to_string()
    } else {
        format!("{name}{{{}}}", rest.join(", "))
    }
}

export_plugin!(PrometheusCheck);

#[cfg(test)]
mod tests {
    use super::*;

    fn input(json: &str) -> QueryInput {
        serde_json::from_str(json).unwrap()
    }

    const BASE: &str = r#""url":"http://prom:9090","query":"q""#;

    fn with(extra: &str) -> QueryInput {
        if extra.is_empty() {
            input(&format!("{{{BASE}}}"))
        } else {
            input(&format!("{{{BASE},{extra}}}"))
        }
    }

    fn vector(samples: &[(&str, &str)]) -> Vec<u8> {
        let result: Vec<serde_json::Value> = samples
            .iter()
            .map(|(instance, value)| {
                serde_json::json!({
                    "metric": {"__name__": "node_load1", "instance": instance},
                    "value": [1_700_000_000.123, value],
                })
            })
            .collect();
        serde_json::json!({"status": "success", "data": {"resultType": "vector", "result": result}})
            .to_string()
            .into_bytes()
    }

    #[test]
    fn the_query_is_percent_encoded_under_the_api_path() {
        assert_eq!(
            query_url(
                "http://prom:9090/",
                r#"sum(rate(http_requests_total{code=~"5.."}[5m])) > 0"#
            ),
            "http://prom:9090/api/v1/query?query=sum%28rate%28http_requests_total%7Bcode%3D~%225..%22%7D%5B5m%5D%29%29%20%3E%200"
        );
        assert_eq!(percent_encode("é+&"), "%C3%A9%2B%26");
    }

    #[test]
    fn one_sample_within_thresholds_is_ok() {
        let r = judge(
            &with(r#""warning":4,"critical":8"#),
            200,
            &vector(&[("a:9100", "1.5")]),
        )
        .unwrap();
        assert_eq!(r.status, Status::Ok);
        assert_eq!(r.value, Some(1.5));
        assert_eq!(r.detail, r#"node_load1{instance="a:9100"} = 1.5"#);
        assert_eq!(r.facts.result_type.as_deref(), Some("vector"));
        assert_eq!(r.facts.samples[0].labels["instance"], "a:9100");
    }

    #[test]
    fn the_worst_sample_decides_and_comes_first() {
        let body = vector(&[("a", "1"), ("b", "9.5"), ("c", "5"), ("d", "8")]);
        let r = judge(
            &with(r#""warning":4,"critical":8,"unit":"load""#),
            200,
            &body,
        )
        .unwrap();
        assert_eq!(r.status, Status::Critical);
        assert_eq!(r.value, Some(9.5));
        assert_eq!(r.unit, "load");
        assert_eq!(
            r.detail,
            r#"3 of 4 samples are not ok; the worst is node_load1{instance="b"} = 9.5 load, at or above the critical threshold of 8"#
        );
        let order: Vec<&str> = r
            .facts
            .samples
            .iter()
            .map(|s| s.labels["instance"].as_str())
            .collect();
        assert_eq!(order, ["b", "d", "c", "a"]);
        assert_eq!(r.facts.sample_count, 4);
    }

    #[test]
    fn below_means_lower_is_worse() {
        let body = vector(&[("a", "3"), ("b", "1"), ("c", "0")]);
        let i = with(r#""warning":2,"critical":0,"direction":"below""#);
        let r = judge(&i, 200, &body).unwrap();
        assert_eq!(r.status, Status::Critical);
        assert_eq!(r.value, Some(0.0));
        assert!(
            r.detail.ends_with(
                r#"node_load1{instance="c"} = 0, at or below the critical threshold of 0"#
            ),
            "{}",
            r.detail
        );
        let r = judge(&i, 200, &vector(&[("a", "3"), ("b", "5")])).unwrap();
        assert_eq!(r.status, Status::Ok);
        assert_eq!(
            r.detail,
            r#"all 2 samples are ok; the lowest is node_load1{instance="a"} = 3"#
        );
    }

    #[test]
    fn a_scalar_result_is_one_sample_without_labels() {
        let body =
            br#"{"status":"success","data":{"resultType":"scalar","result":[1700000000,"42"]}}"#;
        let r = judge(&with(r#""warning":40"#), 200, body).unwrap();
        assert_eq!(r.status, Status::Warning);
        assert_eq!(r.value, Some(42.0));
        assert_eq!(
            r.detail,
            "the value 42, at or above the warning threshold of 40"
        );
        assert_eq!(r.facts.result_type.as_deref(), Some("scalar"));
        assert!(r.facts.samples[0].labels.is_empty());
    }

    #[test]
    fn an_empty_result_has_the_status_asked_for() {
        let body = br#"{"status":"success","data":{"resultType":"vector","result":[]}}"#;
        let r = judge(&with(""), 200, body).unwrap();
        assert_eq!(r.status, Status::Unknown);
        assert_eq!(r.detail, "`q` returned no samples");
        assert_eq!(r.value, None);
        let r = judge(&with(r#""on_empty":"critical""#), 200, body).unwrap();
        assert_eq!(r.status, Status::Critical);
        let r = judge(&with(r#""on_empty":"ok""#), 200, body).unwrap();
        assert_eq!(r.status, Status::Ok);
    }

    #[test]
    fn nan_cannot_be_judged_but_does_not_hide_a_tripped_sample() {
        let r = judge(&with(r#""critical":5"#), 200, &vector(&[("a", "NaN")])).unwrap();
        assert_eq!(r.status, Status::Unknown);
        assert_eq!(r.value, None);
        assert!(
            r.detail.ends_with("= NaN, which cannot be judged"),
            "{}",
            r.detail
        );
        let r = judge(
            &with(r#""critical":5"#),
            200,
            &vector(&[("a", "NaN"), ("b", "7"), ("c", "1")]),
        )
        .unwrap();
        assert_eq!(r.status, Status::Critical);
        let r = judge(
            &with(r#""critical":5"#),
            200,
            &vector(&[("a", "NaN"), ("c", "1")]),
        )
        .unwrap();
        assert_eq!(r.status, Status::Unknown, "unknown outranks ok");
    }

    #[test]
    fn infinity_trips_thresholds_but_is_not_a_json_value() {
        let r = judge(&with(r#""critical":5"#), 200, &vector(&[("a", "+Inf")])).unwrap();
        assert_eq!(r.status, Status::Critical);
        assert_eq!(r.value, None);
        assert_eq!(r.facts.samples[0].value, "+Inf");
    }

    #[test]
    fn a_malformed_query_is_invalid_input() {
        let body = br#"{"status":"error","errorType":"bad_data","error":"invalid parameter \"query\": 1:5: parse error: unexpected end of input"}"#;
        match judge(&with(""), 400, body) {
            Err(Error::InvalidInput(m)) => assert!(
                m.starts_with("Prometheus rejected the query `q`: invalid parameter"),
                "{m}"
            ),
            other => panic!("expected invalid input, got {other:?}"),
        }
    }

    #[test]
    fn other_api_errors_are_unknown() {
        let body = br#"{"status":"error","errorType":"timeout","error":"query timed out in expression evaluation"}"#;
        let r = judge(&with(""), 503, body).unwrap();
        assert_eq!(r.status, Status::Unknown);
        assert_eq!(
            r.detail,
            "Prometheus answered 503, timeout: query timed out in expression evaluation"
        );
        let r = judge(&with(""), 502, b"<html>Bad Gateway</html>").unwrap();
        assert_eq!(r.status, Status::Unknown);
        assert!(
            r.detail
                .starts_with("http://prom:9090 answered 502 without a Prometheus API response"),
            "{}",
            r.detail
        );
    }

    #[test]
    fn range_vectors_and_strings_cannot_be_judged() {
        let matrix = br#"{"status":"success","data":{"resultType":"matrix","result":[{"metric":{},"values":[[1,"1"]]}]}}"#;
        assert!(matches!(
            judge(&with(""), 200, matrix),
            Err(Error::InvalidInput(m)) if m.contains("range vector")
        ));
        let string = br#"{"status":"success","data":{"resultType":"string","result":[1,"hello"]}}"#;
        assert!(matches!(
            judge(&with(""), 200, string),
            Err(Error::InvalidInput(_))
        ));
    }

    #[test]
    fn warnings_from_prometheus_are_kept() {
        let body = br#"{"status":"success","data":{"resultType":"vector","result":[]},"warnings":["partial response"]}"#;
        let r = judge(&with(""), 200, body).unwrap();
        assert_eq!(r.facts.warnings, ["partial response"]);
    }

    #[test]
    fn thresholds_must_be_ordered_for_the_direction() {
        assert!(validate(&with(r#""warning":10,"critical":5"#)).is_err());
        assert!(validate(&with(r#""warning":10,"critical":5,"direction":"below""#)).is_ok());
        assert!(validate(&with(r#""warning":1,"critical":5,"direction":"below""#)).is_err());
        assert!(validate(&input(r#"{"url":"http://p","query":" "}"#)).is_err());
    }

    #[test]
    fn unreachable_prometheus_is_critical() {
        let r = unreachable(&with(""), &HttpError::Connect("connection refused".into()));
        assert_eq!(r.status, Status::Critical);
        assert_eq!(
            r.detail,
            "cannot query Prometheus at http://prom:9090: cannot connect: connection refused"
        );
    }

    #[test]
    fn series_are_written_as_promql_writes_them() {
        let labels: BTreeMap<String, String> = [("__name__", "up"), ("job", "node")]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        assert_eq!(series_name(&labels), r#"up{job="node"}"#);
        assert_eq!(series_name(&BTreeMap::new()), "");
    }
}
