//! `notify`: tell people and systems what a run did — a JSON webhook, a Slack-compatible
//! incoming webhook, a PagerDuty Events v2 event.
//!
//! Every action retries 429 and 5xx answers, timeouts and refused connections with exponential
//! backoff inside a deadline shorter than the call's ([`retry`]); any other 4xx fails at once,
//! because the same request would fail again. Secret values (bearer tokens, the Slack URL,
//! the routing key) go only into the request: outputs, log lines and error messages never
//! carry them, even when a receiver echoes them back. Event building and retry decisions are
//! pure and unit-tested natively; the send loop is the only host edge.

pub mod pagerduty;
pub mod retry;

use pagerduty::{EventAction, PagerDutyInput};
use retry::{Answer, Retry};
use runloom_sdk::http::{HttpError, Request};
use runloom_sdk::{Actions, CallContext, Error, Plugin, export_plugin, log};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

struct Notify;

impl Plugin for Notify {
    const NAME: &'static str = "notify";
    const DESCRIPTION: &'static str = "Notifications: JSON webhooks, Slack incoming webhooks and PagerDuty events, retried within the call.";

    fn actions() -> Actions {
        Actions::new()
            .mutate(
                "webhook",
                "POST a JSON document to a URL, optionally with a bearer token from a secret.",
                webhook,
            )
            .mutate(
                "slack",
                "Post a message to a Slack-compatible incoming webhook whose URL is a secret.",
                slack,
            )
            .mutate(
                "pagerduty",
                "Trigger, acknowledge or resolve a PagerDuty alert (Events API v2).",
                pagerduty,
            )
    }
}

/// Longest part of a receiver's answer kept in outputs and messages.
const SNIPPET_CHARS: usize = 1024;

/// `text` with every secret value replaced, cut to [`SNIPPET_CHARS`].
pub fn redact(text: &str, secrets: &[String]) -> String {
    let mut text = text.to_string();
    for secret in secrets.iter().filter(|s| !s.is_empty()) {
        text = text.replace(secret.as_str(), "[redacted]");
    }
    match text.char_indices().nth(SNIPPET_CHARS) {
        Some((cut, _)) => format!("{}…", &text[..cut]),
        None => text,
    }
}

/// One request to deliver, and how to speak of it without leaking secrets.
struct Delivery<'a> {
    /// How messages name the receiver (`the Slack webhook`), never a secret.
    receiver: String,
    url: &'a str,
    headers: Vec<(String, String)>,
    body: Value,
    /// Values to keep out of everything but the request.
    secrets: Vec<String>,
}

/// What the receiver finally said.
struct Delivered {
    status: u16,
    attempts: u32,
    body: String,
}

/// A number in 0..1 from the host's random source, for backoff jitter.
fn jitter() -> f64 {
    let bits = runloom_sdk::bindings::wasi::random::random::get_random_u64() >> 11;
    bits as f64 / (1u64 << 53) as f64
}

fn deliver(d: &Delivery<'_>, retry: &Retry) -> Result<Delivered, Error> {
    let started = Instant::now();
    let body = d.body.to_string();
    let mut attempts = 0;
    loop {
        attempts += 1;
        let left = Duration::from_millis(retry.deadline_ms).saturating_sub(started.elapsed());
        let timeout = Duration::from_millis(retry.attempt_timeout_ms)
            .min(left)
            .max(Duration::from_millis(1));
        let mut request = Request::post(d.url)
            .header("content-type", "application/json")
            .body(body.clone())
            .timeout(timeout);
        for (name, value) in &d.headers {
            request = request.header(name, value);
        }
        let (problem, asked) = match request.send() {
            Ok(response) => {
                let text = redact(&response.text(), &d.secrets);
                match retry::answer(response.status) {
                    Answer::Delivered => {
                        log::info(
                            "delivered",
                            &[
                                ("to", &d.receiver),
                                ("status", &response.status.to_string()),
                                ("attempts", &attempts.to_string()),
                            ],
                        );
                        return Ok(Delivered {
                            status: response.status,
                            attempts,
                            body: text,
                        });
                    }
                    Answer::Rejected => {
                        return Err(Error::failed(format!(
                            "{} refused the request with HTTP {}: {text}",
                            d.receiver, response.status
                        )));
                    }
                    Answer::TryAgain => (
                        format!("HTTP {}: {text}", response.status),
                        retry::retry_after(response.header("retry-after")),
                    ),
                }
            }
            Err(HttpError::Denied(denial)) => return Err(Error::Denied(denial)),
            Err(e @ HttpError::InvalidUrl(_)) => {
                return Err(Error::invalid_input(format!(
                    "{}: {}",
                    d.receiver,
                    redact(&e.to_string(), &d.secrets)
                )));
            }
            // Like the SDK's own mapping, a broken exchange is not retried: the request may
            // have been taken. It is also how a denied POST surfaces (the host drops the body
            // stream, so the SDK reports `sending body` before it sees the denial); the engine
            // then reports the denial it recorded instead of this failure.
            Err(e @ HttpError::Protocol(_)) => {
                return Err(Error::failed(format!(
                    "{}: {}",
                    d.receiver,
                    redact(&e.to_string(), &d.secrets)
                )));
            }
            Err(e) => (redact(&e.to_string(), &d.secrets), None),
        };
        let Some(wait) = retry::next_wait(retry, attempts + 1, started.elapsed(), asked, jitter())
        else {
            return Err(Error::retryable(format!(
                "{} did not take the request in {attempts} attempts over {} ms; last: {problem}",
                d.receiver,
                started.elapsed().as_millis()
            )));
        };
        log::warn(
            "delivery failed; retrying",
            &[
                ("to", &d.receiver),
                ("attempt", &attempts.to_string()),
                ("problem", &problem),
                ("wait_ms", &wait.as_millis().to_string()),
            ],
        );
        std::thread::sleep(wait);
    }
}

// ---------------------------------------------------------------------------------------------
// webhook

/// Input of `webhook`.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct WebhookInput {
    /// URL to POST to, `http://` or `https://`; its `host:port` must be granted.
    pub url: String,
    /// The JSON document to send.
    pub body: Value,
    /// Extra request headers. `idempotency-key` defaults to the step's idempotency key so a
    /// receiver can drop a retried delivery.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// Name of a secret sent as `Authorization: Bearer <value>`.
    pub bearer_secret: Option<String>,
    /// Retry settings.
    #[serde(default)]
    pub retry: Retry,
}

/// Output of `webhook`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct WebhookOutput {
    /// The URL posted to.
    pub url: String,
    /// The receiver's final status code.
    pub status: u16,
    /// Attempts made, the successful one included.
    pub attempts: u32,
    /// The start of the receiver's answer (secrets removed).
    pub response: String,
}

/// The request headers of a webhook: the input's, the step's idempotency key unless the input
/// sets one, and the bearer token. An `authorization` header next to `bearer_secret` would be
/// ambiguous, so it is refused.
pub fn webhook_headers(
    input: &WebhookInput,
    idempotency_key: &str,
    bearer: Option<&str>,
) -> Result<Vec<(String, String)>, Error> {
    let has = |name: &str| input.headers.keys().any(|k| k.eq_ignore_ascii_case(name));
    if bearer.is_some() && has("authorization") {
        return Err(Error::invalid_input(
            "give either an `authorization` header or `bearer_secret`, not both",
        ));
    }
    let mut headers: Vec<(String, String)> = input
        .headers
        .iter()
        .filter(|(k, _)| !k.eq_ignore_ascii_case("content-type"))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    if !idempotency_key.is_empty() && !has("idempotency-key") {
        headers.push(("idempotency-key".into(), idempotency_key.into()));
    }
    if let Some(token) = bearer {
        headers.push(("authorization".into(), format!("Bearer {token}")));
    }
    Ok(headers)
}

fn webhook(input: WebhookInput, ctx: &CallContext) -> Result<WebhookOutput, Error> {
    let token = input
        .bearer_secret
        .as_deref()
        .map(runloom_sdk::secret)
        .transpose()?;
    let headers = webhook_headers(&input, &ctx.idempotency_key, token.as_deref())?;
    let delivery = Delivery {
        receiver: format!("webhook `{}`", input.url),
        url: &input.url,
        headers,
        body: input.body.clone(),
        secrets: token.into_iter().collect(),
    };
    let done = deliver(&delivery, &input.retry)?;
    Ok(WebhookOutput {
        url: input.url,
        status: done.status,
        attempts: done.attempts,
        response: done.body,
    })
}

// ---------------------------------------------------------------------------------------------
// slack

/// Input of `slack`.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SlackInput {
    /// Name of the secret holding the incoming-webhook URL; grant the secret, and its host
    /// (`hooks.slack.com:443`) in `hosts`.
    #[serde(default = "default_slack_secret")]
    pub webhook_secret: String,
    /// The message, in Slack's `mrkdwn`; with `blocks`, the text of the notification.
    pub text: String,
    /// Block Kit blocks, sent as given.
    pub blocks: Option<Vec<Value>>,
    /// Retry settings.
    #[serde(default)]
    pub retry: Retry,
}

fn default_slack_secret() -> String {
    "slack-webhook".into()
}

/// Output of `slack`. The webhook URL is a secret, so it is not repeated here.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct SlackOutput {
    /// Slack's final status code.
    pub status: u16,
    /// Attempts made, the successful one included.
    pub attempts: u32,
}

/// The message document of a Slack incoming webhook.
pub fn slack_body(input: &SlackInput) -> Result<Value, Error> {
    if input.text.trim().is_empty() {
        return Err(Error::invalid_input("`text` must not be empty"));
    }
    let mut body = json!({"text": input.text});
    if let Some(blocks) = &input.blocks {
        body["blocks"] = Value::Array(blocks.clone());
    }
    Ok(body)
}

fn slack(input: SlackInput, _ctx: &CallContext) -> Result<SlackOutput, Error> {
    let body = slack_body(&input)?;
    let url = runloom_sdk::secret(&input.webhook_secret)?;
    let delivery = Delivery {
        receiver: format!("the Slack webhook in secret `{}`", input.webhook_secret),
        url: &url,
        headers: Vec::new(),
        body,
        secrets: vec![url.clone()],
    };
    let done = deliver(&delivery, &input.retry)?;
    Ok(SlackOutput {
        status: done.status,
        attempts: done.attempts,
    })
}

// ---------------------------------------------------------------------------------------------
// pagerduty

/// Output of `pagerduty`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct PagerDutyOutput {
    /// What was sent: `trigger`, `acknowledge` or `resolve`.
    pub event_action: EventAction,
    /// The alert's key: pass it to `acknowledge` and `resolve`.
    pub dedup_key: Option<String>,
    /// PagerDuty's `status` (`success`).
    pub status: String,
    /// PagerDuty's `message` (`Event processed`).
    pub message: String,
    /// The final HTTP status (202).
    pub http_status: u16,
    /// Attempts made, the successful one included.
    pub attempts: u32,
}

fn pagerduty(input: PagerDutyInput, ctx: &CallContext) -> Result<PagerDutyOutput, Error> {
    let routing_key = runloom_sdk::secret(&input.routing_key_secret)?;
    let body = pagerduty::event_body(&input, &ctx.idempotency_key, &routing_key)
        .map_err(Error::invalid_input)?;
    let sent_key = body["dedup_key"].as_str().map(str::to_string);
    let delivery = Delivery {
        receiver: format!("PagerDuty at `{}`", input.endpoint),
        url: &input.endpoint,
        headers: Vec::new(),
        body,
        secrets: vec![routing_key],
    };
    let done = deliver(&delivery, &input.retry)?;
    // The answer is `{"status": "success", "message": "Event processed", "dedup_key": "…"}`;
    // a receiver that answers 2xx with something else still took the event.
    let answer: Value = serde_json::from_str(&done.body).unwrap_or(Value::Null);
    let field = |name: &str| answer[name].as_str().map(str::to_string);
    Ok(PagerDutyOutput {
        event_action: input.event_action,
        dedup_key: field("dedup_key").or(sent_key),
        status: field("status").unwrap_or_else(|| "success".into()),
        message: field("message").unwrap_or_default(),
        http_status: done.status,
        attempts: done.attempts,
    })
}

export_plugin!(Notify);

#[cfg(test)]
mod tests {
    use super::*;

    fn webhook_input(json: Value) -> WebhookInput {
        serde_json::from_value(json).unwrap()
    }

    #[test]
    fn secrets_are_redacted_and_long_answers_cut() {
        let secrets = vec!["s3cr3t".to_string(), String::new()];
        assert_eq!(
            redact("token s3cr3t echoed: s3cr3t", &secrets),
            "token [redacted] echoed: [redacted]"
        );
        let long = "é".repeat(SNIPPET_CHARS + 10);
        assert_eq!(redact(&long, &[]).chars().count(), SNIPPET_CHARS + 1);
    }

    #[test]
    fn webhook_headers_carry_idempotency_key_and_bearer_token() {
        let input =
            webhook_input(json!({"url": "http://x/", "body": {}, "headers": {"x-team": "ops"}}));
        let headers = webhook_headers(&input, "run-1/step-1", Some("tok")).unwrap();
        assert_eq!(
            headers,
            [
                ("x-team".to_string(), "ops".to_string()),
                ("idempotency-key".into(), "run-1/step-1".into()),
                ("authorization".into(), "Bearer tok".into()),
            ]
        );
        let input = webhook_input(
            json!({"url": "http://x/", "body": {}, "headers": {"Idempotency-Key": "mine"}}),
        );
        assert_eq!(
            webhook_headers(&input, "run-1/step-1", None).unwrap(),
            [("Idempotency-Key".to_string(), "mine".to_string())]
        );
    }

    #[test]
    fn an_authorization_header_and_a_bearer_secret_together_are_refused() {
        let input = webhook_input(
            json!({"url": "http://x/", "body": {}, "headers": {"Authorization": "Basic x"}}),
        );
        assert!(matches!(
            webhook_headers(&input, "", Some("tok")),
            Err(Error::InvalidInput(_))
        ));
    }

    #[test]
    fn slack_messages_are_text_with_optional_blocks() {
        let input: SlackInput =
            serde_json::from_value(json!({"text": "disk cleaned on db1"})).unwrap();
        assert_eq!(
            slack_body(&input).unwrap(),
            json!({"text": "disk cleaned on db1"})
        );
        assert_eq!(input.webhook_secret, "slack-webhook");
        let input: SlackInput = serde_json::from_value(
            json!({"text": "t", "blocks": [{"type": "section", "text": {"type": "mrkdwn", "text": "*t*"}}]}),
        )
        .unwrap();
        assert_eq!(slack_body(&input).unwrap()["blocks"][0]["type"], "section");
        let input: SlackInput = serde_json::from_value(json!({"text": " "})).unwrap();
        assert!(slack_body(&input).is_err());
    }
}
