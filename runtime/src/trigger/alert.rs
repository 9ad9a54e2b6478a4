//! Prometheus Alertmanager webhook intake (payload version 4): validation, and matching each
//! alert against the runbooks' alert triggers to build the runs it starts.
//!
//! Identity of an alert episode is `(fingerprint, startsAt)`: Alertmanager resends firing
//! alerts every `repeat_interval` and HA replicas send duplicates, all with the same pair; a
//! new episode after resolution has a new `startsAt`.

use crate::catalog::Catalog;
use crate::executor::{EnqueueError, Executor, RunRequest};
use crate::run::RunRecord;
use crate::runbook::{ParamSource, Trigger};
use crate::store::{Admission, AlertRecord, PlannedRuns};
use serde::Deserialize;
use serde_json::{Map, Value, json};
use std::collections::BTreeMap;

/// An Alertmanager webhook body, as sent (extra fields are ignored).
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Payload {
    /// Must be `"4"`.
    pub version: String,
    /// Identifies the alert group.
    #[serde(default)]
    pub group_key: String,
    /// Alerts dropped by `max_alerts`.
    #[serde(default)]
    pub truncated_alerts: u64,
    /// `firing` if any alert in the group fires.
    pub status: String,
    /// The Alertmanager receiver.
    #[serde(default)]
    pub receiver: String,
    /// Labels common to the group.
    #[serde(default)]
    pub group_labels: BTreeMap<String, String>,
    /// Labels common to every alert.
    #[serde(default)]
    pub common_labels: BTreeMap<String, String>,
    /// Annotations common to every alert.
    #[serde(default)]
    pub common_annotations: BTreeMap<String, String>,
    /// Link back to Alertmanager.
    #[serde(default, rename = "externalURL")]
    pub external_url: String,
    /// The alerts, each handled on its own.
    pub alerts: Vec<Alert>,
}

/// One alert of a notification.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Alert {
    /// `firing` or `resolved`.
    pub status: String,
    /// Labels.
    pub labels: BTreeMap<String, String>,
    /// Annotations.
    #[serde(default)]
    pub annotations: BTreeMap<String, String>,
    /// RFC 3339 start of the episode.
    pub starts_at: String,
    /// RFC 3339 end; `0001-01-01T00:00:00Z` while firing.
    #[serde(default)]
    pub ends_at: String,
    /// Link to the expression that fired.
    #[serde(default, rename = "generatorURL")]
    pub generator_url: String,
    /// Hash of the label set.
    pub fingerprint: String,
}

/// Parse and validate a body. The error names the field, for a 400 response.
pub fn parse(body: &[u8]) -> Result<Payload, String> {
    let payload: Payload = serde_json::from_slice(body)
        .map_err(|e| format!("not an Alertmanager webhook payload: {e}"))?;
    if payload.version != "4" {
        return Err(format!(
            "`version` is \"{}\"; this endpoint takes Alertmanager webhook payload version \"4\"",
            payload.version
        ));
    }
    check_status("status", &payload.status)?;
    for (i, a) in payload.alerts.iter().enumerate() {
        let at = |field: &str| format!("alerts[{i}].{field}");
        check_status(&at("status"), &a.status)?;
        if a.fingerprint.trim().is_empty() {
            return Err(format!("`{}` is empty", at("fingerprint")));
        }
        chrono::DateTime::parse_from_rfc3339(&a.starts_at)
            .map_err(|e| format!("`{}` is not an RFC 3339 time: {e}", at("startsAt")))?;
        if !a.ends_at.is_empty() {
            chrono::DateTime::parse_from_rfc3339(&a.ends_at)
                .map_err(|e| format!("`{}` is not an RFC 3339 time: {e}", at("endsAt")))?;
        }
    }
    Ok(payload)
}

fn check_status(field: &str, value: &str) -> Result<(), String> {
    match value {
        "firing" | "resolved" => Ok(()),
        other => Err(format!(
            "`{field}` is \"{other}\"; expected \"firing\" or \"resolved\""
        )),
    }
}

impl Alert {
    /// The alert as a runbook body sees it (`trigger.alert`, and `alert` in Rhai).
    pub fn to_json(&self) -> Value {
        json!({
            "status": self.status,
            "labels": self.labels,
            "annotations": self.annotations,
            "startsAt": self.starts_at,
            "endsAt": self.ends_at,
            "generatorURL": self.generator_url,
            "fingerprint": self.fingerprint,
        })
    }

    /// The record the store keeps.
    pub fn record(&self, payload: &Payload) -> AlertRecord {
        AlertRecord {
            fingerprint: self.fingerprint.clone(),
            starts_at: self.starts_at.clone(),
            status: self.status.clone(),
            labels: json!(self.labels),
            annotations: json!(self.annotations),
            ends_at: (!self.ends_at.is_empty()).then(|| self.ends_at.clone()),
            generator_url: (!self.generator_url.is_empty()).then(|| self.generator_url.clone()),
            receiver: (!payload.receiver.is_empty()).then(|| payload.receiver.clone()),
            group_key: (!payload.group_key.is_empty()).then(|| payload.group_key.clone()),
        }
    }
}

/// The runs one alert starts: for a new episode (`first`) and for a resend (`repeat`, only
/// triggers with `repeat = true`). A trigger whose parameters cannot be built from the alert
/// still records a run, skipped with the reason, so nothing is dropped silently.
pub fn plan(
    catalog: &Catalog,
    executor: &Executor,
    payload: &Payload,
    alert: &Alert,
) -> (PlannedRuns, PlannedRuns) {
    let mut first = Vec::new();
    let mut repeat = Vec::new();
    if alert.status != "firing" {
        return (first, repeat);
    }
    let alert_json = alert.to_json();
    for prepared in catalog.runbooks() {
        for (index, trigger) in prepared.runbook.triggers.iter().enumerate() {
            let Trigger::Alert(t) = trigger else { continue };
            if !t.matchers.iter().all(|m| m.matches(&alert.labels)) {
                continue;
            }
            // Built again only when the parameters are refused: the trigger holds the whole
            // alert, and copying it for every run would cost more than the rest of planning.
            let request = || RunRequest {
                params: render_params(&prepared.runbook, &t.parameters, &alert_json),
                trigger_kind: "alert".into(),
                trigger_id: Some(format!("alert:{index}")),
                trigger: alert_trigger(&alert_json, payload),
                dry_run: false,
                alert_key: Some(format!("{}@{}", alert.fingerprint, alert.starts_at)),
                schedule: None,
            };
            let planned = match executor.prepare_run(prepared, request()) {
                Ok(p) => p,
                Err(EnqueueError::Parameters(problems)) => {
                    // Record the trigger firing, skipped with why, instead of losing it.
                    let request = request();
                    let rb = &prepared.runbook;
                    let mut record = RunRecord::queued(
                        &rb.name,
                        &rb.content_hash,
                        "alert",
                        request.trigger,
                        Value::Object(request.params),
                        false,
                    );
                    record.status = crate::run::RunStatus::Skipped;
                    record.reason = Some(format!(
                        "parameters from the alert are invalid: {}",
                        problems.join("; ")
                    ));
                    record.error_kind = Some("parameters".into());
                    record.ended_at = Some(record.queued_at);
                    record.trigger_id = request.trigger_id.clone();
                    record.alert_key = request.alert_key.clone();
                    let admission = Admission {
                        trigger_id: request.trigger_id.clone(),
                        rule_key: rb.name.clone(),
                        max_concurrency: i64::from(rb.policy.concurrency),
                        alert_key: request.alert_key.clone(),
                        ..Admission::default()
                    };
                    (record, admission)
                }
                Err(EnqueueError::Store(_)) => continue,
            };
            if t.repeat {
                repeat.push(planned.clone());
            }
            first.push(planned);
        }
    }
    (first, repeat)
}

/// The `trigger` of an alert-triggered run: the alert and where the notification came from.
fn alert_trigger(alert: &Value, payload: &Payload) -> Value {
    let mut trigger = Map::new();
    trigger.insert("kind".into(), "alert".into());
    trigger.insert("alert".into(), alert.clone());
    trigger.insert("receiver".into(), payload.receiver.clone().into());
    trigger.insert("groupKey".into(), payload.group_key.clone().into());
    trigger.insert("externalURL".into(), payload.external_url.clone().into());
    Value::Object(trigger)
}

/// Parameter values from the trigger: fixed ones as they are, templates rendered against the
/// alert and read as the parameter's type (`"42"` for an int); the run's preparation then
/// checks every value.
fn render_params(
    runbook: &crate::runbook::Runbook,
    sources: &BTreeMap<String, ParamSource>,
    alert: &Value,
) -> Map<String, Value> {
    sources
        .iter()
        .map(|(name, source)| {
            let value = match source {
                ParamSource::Fixed(v) => v.clone(),
                ParamSource::Template(t) => {
                    let text = t.render(alert);
                    runbook
                        .parameter(name)
                        .and_then(|p| p.kind.parse_cli(&text).ok())
                        .unwrap_or(Value::String(text))
                }
            };
            (name.clone(), value)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const FIRING: &str = include_str!("../../../tests/cases/alertmanager/firing.json");

    #[test]
    fn the_real_alertmanager_body_parses() {
        let p = parse(FIRING.as_bytes()).unwrap();
        assert_eq!(p.alerts.len(), 1);
        let a = &p.alerts[0];
        assert_eq!(a.fingerprint, "66c85521d92ab7bb");
        assert_eq!(a.labels["exported_instance"], "web-1");
        assert_eq!(a.ends_at, "0001-01-01T00:00:00Z");
        assert_eq!(a.to_json()["labels"]["mountpoint"], "/var");
    }

    #[test]
    fn a_run_trigger_carries_the_alert_and_where_it_came_from() {
        let p = parse(FIRING.as_bytes()).unwrap();
        let alert = p.alerts[0].to_json();
        let trigger = alert_trigger(&alert, &p);
        assert_eq!(trigger["kind"], "alert");
        assert_eq!(trigger["alert"], alert);
        assert_eq!(trigger["receiver"], p.receiver.as_str());
        assert_eq!(trigger["groupKey"], p.group_key.as_str());
        assert_eq!(trigger["externalURL"], p.external_url.as_str());
        assert!(!p.receiver.is_empty() && !p.external_url.is_empty());
        assert_eq!(trigger.as_object().unwrap().len(), 5);
    }

    #[test]
    fn malformed_bodies_name_the_field() {
        assert!(
            parse(b"{")
                .unwrap_err()
                .starts_with("not an Alertmanager webhook payload")
        );
        let v3 = FIRING.replace("\"version\": \"4\"", "\"version\": \"3\"");
        assert!(
            parse(v3.as_bytes())
                .unwrap_err()
                .contains("`version` is \"3\"")
        );
        let bad = FIRING.replace(
            "\"status\": \"firing\",\n      \"labels\"",
            "\"status\": \"burning\",\n      \"labels\"",
        );
        assert_eq!(
            parse(bad.as_bytes()).unwrap_err(),
            "`alerts[0].status` is \"burning\"; expected \"firing\" or \"resolved\""
        );
        let when = FIRING.replace("2026-11-23T20:12:54.442Z", "yesterday");
        assert!(
            parse(when.as_bytes())
                .unwrap_err()
                .starts_with("`alerts[0].startsAt` is not an RFC 3339 time")
        );
        let nofp = FIRING.replace(
            "\"fingerprint\": \"66c85521d92ab7bb\"",
            "\"fingerprint\": \"\"",
        );
        assert_eq!(
            parse(nofp.as_bytes()).unwrap_err(),
            "`alerts[0].fingerprint` is empty"
        );
        let missing = FIRING.replace("\"alerts\"", "\"alertz\"");
        assert!(
            parse(missing.as_bytes())
                .unwrap_err()
                .contains("missing field `alerts`")
        );
    }
}
