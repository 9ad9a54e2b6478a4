//! PagerDuty Events API v2: the event document, validated against the API's rules before it is
//! sent, so a bad event is an input error naming the field rather than a 400 from PagerDuty.
//! Pure.

use crate::retry::Retry;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

/// The Events API v2 endpoint.
pub const ENDPOINT: &str = "https://events.pagerduty.com/v2/enqueue";

/// What the event does to the alert its `dedup_key` names.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum EventAction {
    /// Open an alert (or add to the open one with the same `dedup_key`).
    #[default]
    Trigger,
    /// Acknowledge the open alert.
    Acknowledge,
    /// Resolve the open alert.
    Resolve,
}

/// How bad the problem is, in PagerDuty's terms.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// Critical.
    Critical,
    /// Error.
    Error,
    /// Warning.
    Warning,
    /// Info.
    Info,
}

/// A link shown on the alert.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Link {
    /// Where it points.
    pub href: String,
    /// Its text.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
}

/// An image shown on the alert.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Image {
    /// The image, over HTTPS.
    pub src: String,
    /// Where clicking it leads.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub href: Option<String>,
    /// Alternative text.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub alt: Option<String>,
}

/// Input of `pagerduty`: where to send, and the event's fields as a runbook gives them.
#[derive(Debug, Clone, PartialEq, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PagerDutyInput {
    /// Name of the secret holding the integration's routing key (grant it in `secrets`).
    #[serde(default = "default_routing_key_secret")]
    pub routing_key_secret: String,
    /// The Events API endpoint; override it for a proxy or a test receiver.
    #[serde(default = "default_endpoint")]
    pub endpoint: String,
    /// Retry settings.
    #[serde(default)]
    pub retry: Retry,
    /// `trigger` (default), `acknowledge` or `resolve`.
    #[serde(default)]
    pub event_action: EventAction,
    /// Identifies the alert (at most 255 characters). Defaults to the step's idempotency key,
    /// so a retried step never opens a second alert; `acknowledge` and `resolve` from another
    /// run must pass the key the trigger used (or returned).
    pub dedup_key: Option<String>,
    /// One line on what is wrong (at most 1,024 characters). Required to trigger.
    pub summary: Option<String>,
    /// The affected system (`db1.example.org`). Required to trigger.
    pub source: Option<String>,
    /// `critical`, `error`, `warning` or `info`. Required to trigger.
    pub severity: Option<Severity>,
    /// When the problem was detected, RFC 3339 (`2024-05-14T09:12:33Z`).
    pub timestamp: Option<String>,
    /// The part of the source that is affected (`postgres`).
    pub component: Option<String>,
    /// A cluster or grouping of sources (`prod-db`).
    pub group: Option<String>,
    /// The kind of problem (`disk full`).
    pub class: Option<String>,
    /// Anything else worth showing on the alert.
    pub custom_details: Option<Map<String, Value>>,
    /// Links shown on the alert.
    #[serde(default)]
    pub links: Vec<Link>,
    /// Images shown on the alert.
    #[serde(default)]
    pub images: Vec<Image>,
    /// Name of the sending tool, shown on the alert.
    pub client: Option<String>,
    /// Link back to the sending tool (the run's page).
    pub client_url: Option<String>,
}

fn default_routing_key_secret() -> String {
    "pagerduty-routing-key".into()
}

fn default_endpoint() -> String {
    ENDPOINT.into()
}

impl Default for PagerDutyInput {
    fn default() -> Self {
        Self {
            routing_key_secret: default_routing_key_secret(),
            endpoint: default_endpoint(),
            retry: Retry::default(),
            event_action: EventAction::default(),
            dedup_key: None,
            summary: None,
            source: None,
            severity: None,
            timestamp: None,
            component: None,
            group: None,
            class: None,
            custom_details: None,
            links: Vec::new(),
            images: Vec::new(),
            client: None,
            client_url: None,
        }
    }
}

const MAX_SUMMARY_CHARS: usize = 1024;
const MAX_DEDUP_KEY_CHARS: usize = 255;

/// Whether `text` looks like an RFC 3339 timestamp: `YYYY-MM-DDTHH:MM:SS`, optional fraction,
/// then `Z` or `±HH:MM`.
pub fn is_rfc3339(text: &str) -> bool {
    let b = text.as_bytes();
    let digits = |range: std::ops::Range<usize>| {
        b.get(range)
            .is_some_and(|s| s.iter().all(u8::is_ascii_digit))
    };
    let fixed = digits(0..4)
        && b.get(4) == Some(&b'-')
        && digits(5..7)
        && b.get(7) == Some(&b'-')
        && digits(8..10)
        && matches!(b.get(10), Some(b'T' | b't' | b' '))
        && digits(11..13)
        && b.get(13) == Some(&b':')
        && digits(14..16)
        && b.get(16) == Some(&b':')
        && digits(17..19);
    if !fixed {
        return false;
    }
    let mut rest = &b[19..];
    if let Some(fraction) = rest.strip_prefix(b".") {
        let n = fraction.iter().take_while(|c| c.is_ascii_digit()).count();
        if n == 0 {
            return false;
        }
        rest = &fraction[n..];
    }
    match rest {
        [b'Z' | b'z'] => true,
        [b'+' | b'-', h1, h2, b':', m1, m2] => [h1, h2, m1, m2].iter().all(|c| c.is_ascii_digit()),
        _ => false,
    }
}

/// The event document to send, or why it would be refused. `idempotency_key` is the step's;
/// `routing_key` the integration key from the secret.
pub fn event_body(
    event: &PagerDutyInput,
    idempotency_key: &str,
    routing_key: &str,
) -> Result<Value, String> {
    if routing_key.trim().is_empty() {
        return Err("the routing key secret is empty".into());
    }
    let dedup_key = event
        .dedup_key
        .clone()
        .or_else(|| (!idempotency_key.is_empty()).then(|| idempotency_key.to_string()));
    if let Some(key) = &dedup_key
        && (key.is_empty() || key.chars().count() > MAX_DEDUP_KEY_CHARS)
    {
        return Err(format!(
            "`dedup_key` must be 1 to {MAX_DEDUP_KEY_CHARS} characters"
        ));
    }
    let mut body = json!({
        "routing_key": routing_key,
        "event_action": event.event_action,
    });
    if let Some(key) = dedup_key {
        body["dedup_key"] = Value::String(key);
    }
    match event.event_action {
        EventAction::Trigger => {
            body["payload"] = payload(event)?;
            if !event.links.is_empty() {
                if event.links.iter().any(|l| l.href.trim().is_empty()) {
                    return Err("every link needs an `href`".into());
                }
                body["links"] = json!(event.links);
            }
            if !event.images.is_empty() {
                if let Some(bad) = event.images.iter().find(|i| !i.src.starts_with("https://")) {
                    return Err(format!(
                        "image `{}`: PagerDuty shows images only from `https://` URLs",
                        bad.src
                    ));
                }
                body["images"] = json!(event.images);
            }
            if let Some(client) = &event.client {
                body["client"] = json!(client);
            }
            if let Some(url) = &event.client_url {
                body["client_url"] = json!(url);
            }
        }
        EventAction::Acknowledge | EventAction::Resolve => {
            if body.get("dedup_key").is_none() {
                return Err(format!(
                    "`{}` needs the `dedup_key` of the alert it applies to",
                    serde_json::to_value(event.event_action)
                        .ok()
                        .and_then(|v| v.as_str().map(str::to_string))
                        .unwrap_or_default()
                ));
            }
        }
    }
    Ok(body)
}

fn payload(event: &PagerDutyInput) -> Result<Value, String> {
    let required = |field: &Option<String>, name: &str| match field {
        Some(v) if !v.trim().is_empty() => Ok(v.clone()),
        _ => Err(format!("`{name}` is required to trigger an alert")),
    };
    let summary = required(&event.summary, "summary")?;
    if summary.chars().count() > MAX_SUMMARY_CHARS {
        return Err(format!(
            "`summary` is {} characters; PagerDuty takes at most {MAX_SUMMARY_CHARS}",
            summary.chars().count()
        ));
    }
    let source = required(&event.source, "source")?;
    let severity = event
        .severity
        .ok_or("`severity` is required to trigger an alert")?;
    let mut payload = json!({"summary": summary, "source": source, "severity": severity});
    if let Some(ts) = &event.timestamp {
        if !is_rfc3339(ts) {
            return Err(format!(
                "`timestamp` `{ts}` is not RFC 3339 (`2024-05-14T09:12:33Z`)"
            ));
        }
        payload["timestamp"] = json!(ts);
    }
    for (name, value) in [
        ("component", &event.component),
        ("group", &event.group),
        ("class", &event.class),
    ] {
        if let Some(v) = value {
            payload[name] = json!(v);
        }
    }
    if let Some(details) = &event.custom_details {
        payload["custom_details"] = Value::Object(details.clone());
    }
    Ok(payload)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn trigger() -> PagerDutyInput {
        PagerDutyInput {
            summary: Some("disk full on db1".into()),
            source: Some("db1".into()),
            severity: Some(Severity::Critical),
            ..PagerDutyInput::default()
        }
    }

    #[test]
    fn a_trigger_carries_payload_and_defaults_dedup_key_to_the_idempotency_key() {
        let mut e = trigger();
        e.component = Some("postgres".into());
        e.custom_details = Some(json!({"free": "0%"}).as_object().cloned().unwrap());
        e.links = vec![Link {
            href: "https://runbooks/x".into(),
            text: None,
        }];
        let body = event_body(&e, "run-7/step-2", "R0UT1NG").unwrap();
        assert_eq!(
            body,
            json!({
                "routing_key": "R0UT1NG",
                "event_action": "trigger",
                "dedup_key": "run-7/step-2",
                "payload": {
                    "summary": "disk full on db1",
                    "source": "db1",
                    "severity": "critical",
                    "component": "postgres",
                    "custom_details": {"free": "0%"},
                },
                "links": [{"href": "https://runbooks/x"}],
            })
        );
    }

    #[test]
    fn an_explicit_dedup_key_wins_and_none_is_sent_without_one() {
        let mut e = trigger();
        e.dedup_key = Some("alert-42".into());
        assert_eq!(
            event_body(&e, "idem", "k").unwrap()["dedup_key"],
            "alert-42"
        );
        let body = event_body(&trigger(), "", "k").unwrap();
        assert!(body.get("dedup_key").is_none());
    }

    #[test]
    fn triggers_need_summary_source_and_severity() {
        for (strip, field) in [(0, "summary"), (1, "source"), (2, "severity")] {
            let mut e = trigger();
            match strip {
                0 => e.summary = None,
                1 => e.source = Some(" ".into()),
                _ => e.severity = None,
            }
            let err = event_body(&e, "k", "k").unwrap_err();
            assert!(err.starts_with(&format!("`{field}` is required")), "{err}");
        }
    }

    #[test]
    fn limits_of_the_api_are_checked_before_sending() {
        let mut e = trigger();
        e.summary = Some("x".repeat(1025));
        assert!(
            event_body(&e, "k", "k")
                .unwrap_err()
                .contains("at most 1024")
        );
        let mut e = trigger();
        e.dedup_key = Some("d".repeat(256));
        assert!(event_body(&e, "k", "k").unwrap_err().contains("1 to 255"));
        let mut e = trigger();
        e.images = vec![Image {
            src: "http://grafana/panel.png".into(),
            href: None,
            alt: None,
        }];
        assert!(event_body(&e, "k", "k").unwrap_err().contains("https://"));
        let mut e = trigger();
        e.timestamp = Some("yesterday".into());
        assert!(event_body(&e, "k", "k").unwrap_err().contains("RFC 3339"));
        assert!(event_body(&trigger(), "k", " ").is_err());
    }

    #[test]
    fn acknowledge_and_resolve_need_a_dedup_key_and_carry_no_payload() {
        let e = PagerDutyInput {
            event_action: EventAction::Resolve,
            ..PagerDutyInput::default()
        };
        assert_eq!(
            event_body(&e, "", "k").unwrap_err(),
            "`resolve` needs the `dedup_key` of the alert it applies to"
        );
        assert_eq!(
            event_body(&e, "idem", "k").unwrap(),
            json!({"routing_key": "k", "event_action": "resolve", "dedup_key": "idem"})
        );
    }

    #[test]
    fn rfc3339_timestamps_are_recognised() {
        for ok in [
            "2024-05-14T09:12:33Z",
            "2024-05-14T09:12:33.123+02:00",
            "2024-05-14t09:12:33-05:30",
        ] {
            assert!(is_rfc3339(ok), "{ok}");
        }
        for bad in [
            "2024-05-14",
            "2024-05-14T09:12:33",
            "2024-05-14T09:12:33.Z",
            "14/05/2024 09:12",
        ] {
            assert!(!is_rfc3339(bad), "{bad}");
        }
    }
}
