//! `tls-check`: how many days the certificates of one or more TLS endpoints have left, and
//! whether clients will accept them (trusted chain, name covered).
//!
//! The engine runs the handshake (`tls.peer-certificate`), so the certificate arrives even
//! when it is expired or untrusted. An endpoint that cannot be reached is a `critical` result
//! for that endpoint, not an error; an endpoint whose `host:port` is not granted (`hosts`)
//! fails the whole call as `denied`.

use runloom_sdk::check::{CheckResult, Status, Thresholds};
use runloom_sdk::tls::{self, Handshake, TlsError};
use runloom_sdk::{Actions, CallContext, Error, Plugin, export_plugin};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use std::net::IpAddr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

const SECONDS_PER_DAY: f64 = 86_400.0;

/// Input of `check`: one endpoint (`host`, `port`, `server_name`) or several (`endpoints`).
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CheckInput {
    /// Host of the one endpoint to check (a name or an IP address). Use this or `endpoints`.
    pub host: Option<String>,
    /// Port of the one endpoint (default 443).
    pub port: Option<u16>,
    /// Name to ask for (SNI) and to expect in the certificate; default: `host`.
    pub server_name: Option<String>,
    /// Several endpoints, checked one after another. Use this or `host`.
    #[serde(default)]
    pub endpoints: Vec<Endpoint>,
    /// Days left at or below which an endpoint is `warning` (`null` to disable).
    #[serde(default = "default_warning_days")]
    pub warning_days: Option<f64>,
    /// Days left at or below which an endpoint is `critical` (`null` to disable). An expired
    /// certificate is always `critical`.
    #[serde(default = "default_critical_days")]
    pub critical_days: Option<f64>,
    /// Judge an untrusted chain (self-signed, unknown issuer) by its dates alone instead of
    /// calling it `critical`. For internal endpoints with a private CA.
    #[serde(default)]
    pub allow_untrusted: bool,
    /// Give up on an endpoint after this many milliseconds (connection and handshake).
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
}

/// One TLS endpoint.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Endpoint {
    /// Host name or IP address to connect to.
    pub host: String,
    /// Port to connect to.
    #[serde(default = "default_port")]
    pub port: u16,
    /// Name to ask for (SNI) and to expect in the certificate; default: `host`.
    pub server_name: Option<String>,
}

fn default_warning_days() -> Option<f64> {
    Some(30.0)
}

fn default_critical_days() -> Option<f64> {
    Some(7.0)
}

fn default_timeout_ms() -> u64 {
    10_000
}

fn default_port() -> u16 {
    443
}

/// Facts `check` reports besides its status: one entry per endpoint, in input order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct TlsFacts {
    /// Each endpoint's certificate and verdict.
    pub endpoints: Vec<EndpointFacts>,
}

/// What one endpoint presented and how it was judged. Certificate fields are absent when no
/// certificate arrived.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct EndpointFacts {
    /// Host connected to.
    pub host: String,
    /// Port connected to.
    pub port: u16,
    /// Name asked for and expected.
    pub server_name: String,
    /// This endpoint's status.
    pub status: Status,
    /// One sentence about this endpoint.
    pub detail: String,
    /// Days until the certificate expires (negative once expired).
    pub days_left: Option<f64>,
    /// End of validity, seconds since the Unix epoch.
    pub not_after: Option<i64>,
    /// Start of validity, seconds since the Unix epoch.
    pub not_before: Option<i64>,
    /// Subject distinguished name.
    pub subject: Option<String>,
    /// Issuer distinguished name.
    pub issuer: Option<String>,
    /// DNS names the certificate covers.
    pub dns_names: Vec<String>,
    /// Whether the chain verifies against the engine host's trusted roots.
    pub trusted: Option<bool>,
    /// Why it does not verify.
    pub verify_error: Option<String>,
    /// Whether `dns_names` cover `server_name`; absent for IP addresses, which certificates
    /// name elsewhere (the verifier still checks them).
    pub hostname_matches: Option<bool>,
}

struct TlsCheck;

impl Plugin for TlsCheck {
    const NAME: &'static str = "tls-check";
    const DESCRIPTION: &'static str = "TLS certificate checks: days until expiry, trusted chain and \
         hostname coverage for one or more endpoints.";

    fn actions() -> Actions {
        Actions::new().read(
            "check",
            "Read each endpoint's certificate and judge days to expiry, trust and hostname.",
            check,
        )
    }
}

fn check(input: CheckInput, _ctx: &CallContext) -> Result<CheckResult<TlsFacts>, Error> {
    let endpoints = endpoints(&input)?;
    let timeout = Duration::from_millis(input.timeout_ms.max(1));
    let mut observed = Vec::with_capacity(endpoints.len());
    for endpoint in endpoints {
        let server_name = endpoint.server_name.as_deref().unwrap_or(&endpoint.host);
        let handshake =
            match tls::peer_certificate(&endpoint.host, endpoint.port, server_name, timeout) {
                Ok(handshake) => Ok(handshake),
                Err(TlsError::Failed(message)) => Err(message),
                Err(denied @ TlsError::Denied(_)) => return Err(denied.into()),
            };
        observed.push((endpoint, handshake));
    }
    Ok(judge(&input, observed, now()))
}

fn now() -> i64 {
    // A clock before 1970 is not a state this check can say anything useful in.
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

/// The endpoints to check, from either form of the input.
pub fn endpoints(input: &CheckInput) -> Result<Vec<Endpoint>, Error> {
    if let (Some(w), Some(c)) = (input.warning_days, input.critical_days)
        && w < c
    {
        return Err(Error::invalid_input(format!(
            "`warning_days` ({w}) is below `critical_days` ({c}): fewer days left is worse"
        )));
    }
    let list = match (&input.host, input.endpoints.is_empty()) {
        (Some(host), true) => vec![Endpoint {
            host: host.clone(),
            port: input.port.unwrap_or_else(default_port),
            server_name: input.server_name.clone(),
        }],
        (None, false) if input.port.is_none() && input.server_name.is_none() => {
            input.endpoints.clone()
        }
        (None, false) => {
            return Err(Error::invalid_input(
                "`port` and `server_name` belong to `host`; give each of `endpoints` its own",
            ));
        }
        (Some(_), false) => {
            return Err(Error::invalid_input(
                "give either `host` or `endpoints`, not both",
            ));
        }
        (None, true) => {
            return Err(Error::invalid_input(
                "nothing to check: give `host` or `endpoints`",
            ));
        }
    };
    if let Some(empty) = list.iter().position(|e| e.host.is_empty()) {
        return Err(Error::invalid_input(format!(
            "endpoint {} has an empty `host`",
            empty + 1
        )));
    }
    Ok(list)
}

/// Judge what each endpoint presented (or why it presented nothing) at time `now` (seconds
/// since the Unix epoch). Pure, so it is unit-tested natively.
pub fn judge(
    input: &CheckInput,
    observed: Vec<(Endpoint, Result<Handshake, String>)>,
    now: i64,
) -> CheckResult<TlsFacts> {
    let thresholds = Thresholds {
        warning: input.warning_days,
        critical: input.critical_days,
    };
    let endpoints: Vec<EndpointFacts> = observed
        .into_iter()
        .map(|(endpoint, handshake)| judge_endpoint(input, &thresholds, endpoint, handshake, now))
        .collect();
    let status = endpoints
        .iter()
        .map(|e| e.status)
        .max()
        .unwrap_or(Status::Unknown);
    let soonest = endpoints
        .iter()
        .filter_map(|e| e.days_left.map(|d| (d, e)))
        .min_by(|a, b| a.0.total_cmp(&b.0));
    let detail = match endpoints.as_slice() {
        [one] => one.detail.clone(),
        all => {
            let bad: Vec<&str> = all
                .iter()
                .filter(|e| e.status != Status::Ok)
                .map(|e| e.detail.as_str())
                .collect();
            if bad.is_empty() {
                let first = soonest.map_or(String::new(), |(days, e)| {
                    format!(
                        "; the first to expire is {}:{}'s, in {days} days",
                        e.host, e.port
                    )
                });
                format!("all {} endpoints are ok{first}", all.len())
            } else {
                format!(
                    "{} of {} endpoints are not ok: {}",
                    bad.len(),
                    all.len(),
                    bad.join("; ")
                )
            }
        }
    };
    CheckResult {
        status,
        value: soonest.map(|(days, _)| days),
        unit: "days".into(),
        thresholds,
        detail,
        facts: TlsFacts { endpoints },
    }
}

fn judge_endpoint(
    input: &CheckInput,
    thresholds: &Thresholds,
    endpoint: Endpoint,
    handshake: Result<Handshake, String>,
    now: i64,
) -> EndpointFacts {
    let server_name = endpoint
        .server_name
        .clone()
        .unwrap_or_else(|| endpoint.host.clone());
    let target = format!("{}:{}", endpoint.host, endpoint.port);
    let mut facts = EndpointFacts {
        host: endpoint.host,
        port: endpoint.port,
        server_name,
        status: Status::Critical,
        detail: String::new(),
        days_left: None,
        not_after: None,
        not_before: None,
        subject: None,
        issuer: None,
        dns_names: Vec::new(),
        trusted: None,
        verify_error: None,
        hostname_matches: None,
    };
    let handshake = match handshake {
        Ok(handshake) => handshake,
        Err(message) => {
            facts.detail = format!("{target}: no certificate: {message}");
            return facts;
        }
    };
    let leaf = handshake.leaf;
    let days_left = ((leaf.not_after - now) as f64 / SECONDS_PER_DAY * 10.0).round() / 10.0;
    let hostname_matches = if facts.server_name.parse::<IpAddr>().is_ok() {
        None
    } else {
        Some(
            leaf.dns_names
                .iter()
                .any(|pattern| name_matches(pattern, &facts.server_name)),
        )
    };

    // Every reason this certificate would fail a client, worst first; then the days left.
    let mut problems = Vec::new();
    if leaf.not_after <= now {
        problems.push(format!(
            "expired {} days ago, on {}",
            -days_left,
            utc_date(leaf.not_after)
        ));
    }
    if leaf.not_before > now {
        problems.push(format!("not valid until {}", utc_date(leaf.not_before)));
    }
    if hostname_matches == Some(false) {
        problems.push(if leaf.dns_names.is_empty() {
            format!(
                "does not cover `{}`: it names no DNS names",
                facts.server_name
            )
        } else {
            format!(
                "does not cover `{}` (it covers {})",
                facts.server_name,
                leaf.dns_names.join(", ")
            )
        });
    }
    if !handshake.trusted && !input.allow_untrusted {
        problems.push(format!(
            "is not trusted: {}",
            handshake
                .verify_error
                .as_deref()
                .unwrap_or("the chain does not verify")
        ));
    }
    let subject = format!("{target}: the certificate for `{}`", facts.server_name);
    let (status, detail) = if problems.is_empty() {
        let status = thresholds.judge_low(days_left);
        let mut detail = format!(
            "{subject} expires in {days_left} days, on {}",
            utc_date(leaf.not_after)
        );
        match status {
            Status::Critical => detail.push_str(&format!(
                ", at or below the critical threshold of {} days",
                thresholds.critical.unwrap_or_default()
            )),
            Status::Warning => detail.push_str(&format!(
                ", at or below the warning threshold of {} days",
                thresholds.warning.unwrap_or_default()
            )),
            Status::Ok | Status::Unknown => {}
        }
        (status, detail)
    } else {
        (
            Status::Critical,
            format!("{subject} {}", problems.join(", and ")),
        )
    };
    facts.status = status;
    facts.detail = detail;
    facts.days_left = Some(days_left);
    facts.not_after = Some(leaf.not_after);
    facts.not_before = Some(leaf.not_before);
    facts.subject = Some(leaf.subject);
    facts.issuer = Some(leaf.issuer);
    facts.dns_names = leaf.dns_names;
    facts.trusted = Some(handshake.trusted);
    facts.verify_error = handshake.verify_error;
    facts.hostname_matches = hostname_matches;
    facts
}

/// Whether a certificate DNS name (`example.org`, `*.example.org`) covers `name`, as clients
/// judge it (RFC 6125): case-insensitive, a trailing dot ignored, and a wildcard only as the
/// whole left-most label, standing for exactly one label.
pub fn name_matches(pattern: &str, name: &str) -> bool {
    let pattern = pattern.trim_end_matches('.').to_ascii_lowercase();
    let name = name.trim_end_matches('.').to_ascii_lowercase();
    match pattern.strip_prefix("*.") {
        Some(parent) => name
            .split_once('.')
            .is_some_and(|(label, rest)| !label.is_empty() && rest == parent),
        None => pattern == name,
    }
}

/// `2026-12-14 10:30 UTC` for seconds since the Unix epoch.
pub fn utc_date(seconds: i64) -> String {
    let days = seconds.div_euclid(86_400);
    let secs = seconds.rem_euclid(86_400);
    // Howard Hinnant's civil-from-days: days since 1970-01-01 to a proleptic Gregorian date.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02} UTC",
        secs / 3600,
        secs % 3600 / 60
    )
}

export_plugin!(TlsCheck);

#[cfg(test)]
mod tests {
    use super::*;
    use runloom_sdk::tls::Certificate;

    const NOW: i64 = 1_800_000_000; // 2027-01-15 08:00 UTC
    const DAY: i64 = 86_400;

    fn input(json: &str) -> CheckInput {
        serde_json::from_str(json).unwrap()
    }

    fn cert(names: &[&str], days_left: i64, trusted: bool) -> Result<Handshake, String> {
        Ok(Handshake {
            leaf: Certificate {
                subject: format!("CN={}", names.first().copied().unwrap_or("x")),
                issuer: "CN=Test CA".into(),
                not_before: NOW - 60 * DAY,
                not_after: NOW + days_left * DAY,
                dns_names: names.iter().map(|n| n.to_string()).collect(),
            },
            trusted,
            verify_error: (!trusted).then(|| "invalid peer certificate: UnknownIssuer".into()),
        })
    }

    /// Judge the one endpoint `json` names.
    fn one(json: &str, handshake: Result<Handshake, String>) -> CheckResult<TlsFacts> {
        let input = input(json);
        let endpoint = endpoints(&input).unwrap().remove(0);
        judge(&input, vec![(endpoint, handshake)], NOW)
    }

    #[test]
    fn a_trusted_certificate_far_from_expiry_is_ok() {
        let r = one(
            r#"{"host":"example.org"}"#,
            cert(&["example.org"], 90, true),
        );
        assert_eq!(r.status, Status::Ok);
        assert_eq!(r.value, Some(90.0));
        assert_eq!(r.unit, "days");
        assert_eq!(
            r.detail,
            "example.org:443: the certificate for `example.org` expires in 90 days, on \
             2027-04-15 08:00 UTC"
        );
        let e = &r.facts.endpoints[0];
        assert_eq!(e.hostname_matches, Some(true));
        assert_eq!(e.trusted, Some(true));
        assert_eq!(e.issuer.as_deref(), Some("CN=Test CA"));
    }

    #[test]
    fn fewer_days_left_give_warning_then_critical() {
        let r = one(
            r#"{"host":"a.example.org"}"#,
            cert(&["a.example.org"], 20, true),
        );
        assert_eq!(r.status, Status::Warning);
        assert!(
            r.detail
                .ends_with("at or below the warning threshold of 30 days"),
            "{}",
            r.detail
        );
        let r = one(
            r#"{"host":"a.example.org"}"#,
            cert(&["a.example.org"], 7, true),
        );
        assert_eq!(r.status, Status::Critical, "at the threshold trips it");
        let r = one(
            r#"{"host":"a.example.org","warning_days":10,"critical_days":null}"#,
            cert(&["a.example.org"], 2, true),
        );
        assert_eq!(r.status, Status::Warning);
    }

    #[test]
    fn an_expired_certificate_is_critical_whatever_the_thresholds() {
        let r = one(
            r#"{"host":"old.example.org","warning_days":null,"critical_days":null,"allow_untrusted":true}"#,
            cert(&["old.example.org"], -3, false),
        );
        assert_eq!(r.status, Status::Critical);
        assert_eq!(r.value, Some(-3.0));
        assert_eq!(
            r.detail,
            "old.example.org:443: the certificate for `old.example.org` expired 3 days ago, on \
             2027-01-12 08:00 UTC"
        );
    }

    #[test]
    fn an_untrusted_chain_is_critical_unless_allowed() {
        let r = one(r#"{"host":"internal"}"#, cert(&["internal"], 200, false));
        assert_eq!(r.status, Status::Critical);
        assert!(
            r.detail
                .ends_with("is not trusted: invalid peer certificate: UnknownIssuer"),
            "{}",
            r.detail
        );
        assert_eq!(r.value, Some(200.0), "days are reported even so");
        let r = one(
            r#"{"host":"internal","allow_untrusted":true}"#,
            cert(&["internal"], 200, false),
        );
        assert_eq!(r.status, Status::Ok);
        assert_eq!(r.facts.endpoints[0].trusted, Some(false));
    }

    #[test]
    fn a_certificate_for_another_name_is_critical() {
        let r = one(
            r#"{"host":"10.0.0.5","server_name":"api.example.org","allow_untrusted":true}"#,
            cert(&["www.example.org", "example.org"], 200, true),
        );
        assert_eq!(r.status, Status::Critical);
        assert_eq!(
            r.detail,
            "10.0.0.5:443: the certificate for `api.example.org` does not cover \
             `api.example.org` (it covers www.example.org, example.org)"
        );
        assert_eq!(r.facts.endpoints[0].hostname_matches, Some(false));
        // An IP address is judged by the verifier, not by DNS names.
        let r = one(
            r#"{"host":"10.0.0.5"}"#,
            cert(&["www.example.org"], 200, true),
        );
        assert_eq!(r.status, Status::Ok);
        assert_eq!(r.facts.endpoints[0].hostname_matches, None);
    }

    #[test]
    fn wildcards_cover_exactly_one_label() {
        assert!(name_matches("*.example.org", "api.example.org"));
        assert!(name_matches("*.Example.org.", "API.example.org"));
        assert!(!name_matches("*.example.org", "example.org"));
        assert!(!name_matches("*.example.org", "a.b.example.org"));
        assert!(!name_matches("*.example.org", ".example.org"));
        assert!(name_matches("example.org", "example.org."));
        assert!(!name_matches("example.org", "www.example.org"));
    }

    #[test]
    fn an_unreachable_endpoint_is_critical_not_an_error() {
        let r = one(
            r#"{"host":"down.example.org"}"#,
            Err("cannot connect to down.example.org:443: Connection refused".into()),
        );
        assert_eq!(r.status, Status::Critical);
        assert_eq!(r.value, None);
        assert_eq!(
            r.detail,
            "down.example.org:443: no certificate: cannot connect to down.example.org:443: \
             Connection refused"
        );
    }

    #[test]
    fn several_endpoints_report_the_worst_status_and_the_soonest_expiry() {
        let i = input(r#"{"endpoints":[{"host":"a"},{"host":"b","port":8443},{"host":"c"}]}"#);
        let list = endpoints(&i).unwrap();
        assert_eq!(list[1].port, 8443);
        let observed = vec![
            (list[0].clone(), cert(&["a"], 100, true)),
            (list[1].clone(), cert(&["b"], 12, true)),
            (list[2].clone(), cert(&["c"], 60, true)),
        ];
        let r = judge(&i, observed.clone(), NOW);
        assert_eq!(r.status, Status::Warning);
        assert_eq!(r.value, Some(12.0));
        assert_eq!(r.facts.endpoints.len(), 3);
        assert_eq!(
            r.detail,
            "1 of 3 endpoints are not ok: b:8443: the certificate for `b` expires in 12 days, \
             on 2027-01-27 08:00 UTC, at or below the warning threshold of 30 days"
        );
        let ok = input(r#"{"endpoints":[{"host":"a"},{"host":"c"}]}"#);
        let r = judge(&ok, vec![observed[0].clone(), observed[2].clone()], NOW);
        assert_eq!(
            r.detail,
            "all 2 endpoints are ok; the first to expire is c:443's, in 60 days"
        );
    }

    #[test]
    fn the_input_names_one_endpoint_or_a_list() {
        let bad = |json: &str| matches!(endpoints(&input(json)), Err(Error::InvalidInput(_)));
        assert!(bad("{}"));
        assert!(bad(r#"{"host":"a","endpoints":[{"host":"b"}]}"#));
        assert!(bad(r#"{"port":443,"endpoints":[{"host":"b"}]}"#));
        assert!(bad(r#"{"host":""}"#));
        assert!(bad(r#"{"host":"a","warning_days":5,"critical_days":10}"#));
        let list = endpoints(&input(r#"{"host":"a","server_name":"b"}"#)).unwrap();
        assert_eq!(
            (list[0].port, list[0].server_name.as_deref()),
            (443, Some("b"))
        );
    }

    #[test]
    fn dates_are_rendered_in_utc() {
        assert_eq!(utc_date(0), "1970-01-01 00:00 UTC");
        assert_eq!(utc_date(NOW), "2027-01-15 08:00 UTC");
        assert_eq!(utc_date(951_782_400), "2000-02-29 00:00 UTC");
        assert_eq!(utc_date(-86_400), "1969-12-31 00:00 UTC");
    }
}
