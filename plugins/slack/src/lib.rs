//! The Slack plugin: `slack.post`, a message through an incoming webhook or a bot token
//! (`chat.postMessage`), with an optional colour bar for success or failure. Slack's own
//! refusals (`ok: false`, `invalid_payload`, `channel_not_found`) fail the step with Slack's
//! words.

use std::time::Duration;

use async_trait::async_trait;
use opsbook_engine::action::{Action, ActionError, ActionSpec, LogStream, Registry, StepContext};
use opsbook_engine::model::DurationSpec;
use opsbook_http::reqwest;
use opsbook_http::send::{self, Body, Call};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};

/// Adds `slack.post`.
pub fn register(registry: &mut Registry) {
    registry.register(SlackPost);
}

/// `slack.post` inputs.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(extend("oneOf" = [{"required": ["webhook_url"]}, {"required": ["token", "channel"]}]))]
pub struct PostInput {
    /// An incoming-webhook URL (keep it in `secrets`).
    #[serde(default)]
    pub webhook_url: Option<String>,
    /// A bot token (`xoxb-…`, keep it in `secrets`) for `chat.postMessage`; needs `channel`.
    #[serde(default)]
    pub token: Option<String>,
    /// Channel id or name (`#ops`); with a webhook, its own channel is used when not given.
    #[serde(default)]
    pub channel: Option<String>,
    /// The message text (Slack mrkdwn); also the notification text when `blocks` are given.
    #[serde(default)]
    pub text: Option<String>,
    /// Block Kit blocks.
    #[serde(default)]
    pub blocks: Option<Vec<Value>>,
    /// A colour bar: `good` (green), `warning`, `danger` (red) or `#RRGGBB`; the message then
    /// goes as an attachment of that colour.
    #[serde(default)]
    #[schemars(pattern(r"^(good|warning|danger|#[0-9a-fA-F]{6})$"))]
    pub color: Option<String>,
    /// Reply in this thread (the `ts` of its first message).
    #[serde(default)]
    pub thread_ts: Option<String>,
    /// Display name (webhooks that allow it).
    #[serde(default)]
    pub username: Option<String>,
    /// Emoji icon such as `:rotating_light:`.
    #[serde(default)]
    pub icon_emoji: Option<String>,
    /// Slack's API base, for Slack-compatible servers and tests (default
    /// `https://slack.com/api`).
    #[serde(default)]
    pub api_url: Option<String>,
    /// Time limit per attempt (default 15s).
    #[serde(default)]
    pub timeout: Option<DurationSpec>,
}

/// What `slack.post` returns.
#[derive(Debug, Serialize, JsonSchema)]
pub struct PostOutput {
    /// Slack accepted the message.
    pub ok: bool,
    /// The message's timestamp (bot token only): reply in its thread with `thread_ts`.
    pub ts: Option<String>,
    /// The channel it went to (bot token only).
    pub channel: Option<String>,
    /// Under `--dry-run`: the payload that would have been sent.
    pub would_send: Option<Value>,
}

const DOC: &str = "\
Posts a message to Slack. With `webhook_url` (an incoming webhook) the payload goes to that URL \
and Slack answers `ok` or an error word (`invalid_payload`, `channel_is_archived` …). With \
`token` and `channel` it calls `chat.postMessage`; Slack's `ok: false` and its `error` fail \
the step, and the result has the message's `ts` and `channel` (to reply in a thread later with \
`thread_ts`). `text` is Slack mrkdwn; `blocks` are Block Kit blocks; `color` (`good`, \
`warning`, `danger` or `#RRGGBB`) sends the message as an attachment with a colour bar, e.g. \
`color: \"{{ 'good' if steps.check.status == 'succeeded' else 'danger' }}\"`. 429s honour \
`Retry-After`. The webhook URL and token are masked like every secret when they come from \
`secrets`. `--dry-run` sends nothing and shows the payload.";

/// The `slack.post` action.
pub struct SlackPost;

#[async_trait]
impl Action for SlackPost {
    fn spec(&self) -> ActionSpec {
        ActionSpec::new::<PostInput, PostOutput>(
            "slack.post",
            "Post a Slack message through an incoming webhook or a bot token.",
            DOC,
        )
    }

    async fn run(&self, input: Value, cx: &StepContext) -> Result<Value, ActionError> {
        let input: PostInput = serde_json::from_value(input)
            .map_err(|e| ActionError::permanent(format!("invalid input: {e}")))?;
        let payload = payload(&input)?;
        if cx.dry_run {
            cx.log.line(
                LogStream::Stdout,
                &format!("would post to Slack: {}", payload),
            );
            return Ok(
                json!({"ok": true, "ts": null, "channel": input.channel, "would_send": payload}),
            );
        }
        let (url, bot) = match (&input.webhook_url, &input.token) {
            (Some(u), None) => (u.clone(), false),
            (None, Some(_)) => (
                format!(
                    "{}/chat.postMessage",
                    input
                        .api_url
                        .as_deref()
                        .unwrap_or("https://slack.com/api")
                        .trim_end_matches('/')
                ),
                true,
            ),
            _ => {
                return Err(ActionError::permanent(
                    "give `webhook_url`, or `token` with `channel`",
                ))
            }
        };
        let url = reqwest::Url::parse(&url)
            .map_err(|_| ActionError::permanent("the Slack URL is not a URL"))?;
        let mut headers = reqwest::header::HeaderMap::new();
        if let Some(token) = &input.token {
            let mut v = send::header_value("Authorization", &format!("Bearer {token}"))?;
            v.set_sensitive(true);
            headers.insert(reqwest::header::AUTHORIZATION, v);
        }
        let call = Call {
            client: opsbook_http::client_for(cx, &Default::default(), true)?,
            method: opsbook_http::input::Method::Post,
            url,
            headers,
            body: Body::Json(payload),
            timeout: input
                .timeout
                .map(|t| t.get())
                .unwrap_or(Duration::from_secs(15)),
            // POSTs are tried again only when Slack says it did not take them (429, 503).
            retries: 2,
            max_retry_after: Duration::from_secs(60),
            max_response: 1 << 20,
            save_to: None,
            cx,
            label: Some(if bot {
                "Slack chat.postMessage".into()
            } else {
                "the Slack webhook".into()
            }),
            idempotent: false,
        };
        let resp = send::send(&call).await?;
        if bot {
            let ok = resp
                .json
                .as_ref()
                .and_then(|j| j.get("ok"))
                .and_then(Value::as_bool)
                .unwrap_or(false);
            if !ok || !(200..300).contains(&resp.status) {
                let error = resp
                    .json
                    .as_ref()
                    .and_then(|j| j.get("error"))
                    .and_then(Value::as_str)
                    .map(str::to_string)
                    .unwrap_or_else(|| format!("status {}: {}", resp.status, resp.excerpt()));
                return Err(refused(&error, resp.status).with_details(resp.to_value()));
            }
            let j = resp.json.unwrap_or_default();
            return Ok(json!({"ok": true, "ts": j.get("ts"), "channel": j.get("channel")}));
        }
        if !(200..300).contains(&resp.status) {
            return Err(refused(&resp.excerpt(), resp.status).with_details(resp.to_value()));
        }
        Ok(json!({"ok": true, "ts": null, "channel": null}))
    }
}

/// Slack refused the message: a permanent error unless Slack is having trouble.
fn refused(error: &str, status: u16) -> ActionError {
    let hint = match error {
        "channel_not_found" => " (check the channel, and that the bot is in it)",
        "not_in_channel" => " (invite the bot to the channel)",
        "invalid_auth" | "not_authed" | "token_revoked" => " (check the token)",
        "invalid_payload" => " (the message is not valid Slack JSON)",
        "no_service" | "no_team" => " (the webhook was removed)",
        _ => "",
    };
    let message = format!("Slack refused the message: {error}{hint}");
    if status >= 500 {
        ActionError::retryable(message)
    } else {
        ActionError::permanent(message)
    }
}

/// The JSON Slack gets.
fn payload(input: &PostInput) -> Result<Value, ActionError> {
    if input.text.is_none() && input.blocks.is_none() {
        return Err(ActionError::permanent("give `text`, `blocks` or both"));
    }
    let mut p = Map::new();
    if let Some(c) = &input.channel {
        p.insert("channel".into(), json!(c));
    }
    if let Some(t) = &input.thread_ts {
        p.insert("thread_ts".into(), json!(t));
    }
    if let Some(u) = &input.username {
        p.insert("username".into(), json!(u));
    }
    if let Some(i) = &input.icon_emoji {
        p.insert("icon_emoji".into(), json!(i));
    }
    match &input.color {
        Some(color) => {
            // A colour bar is an attachment's; the text stays as the notification text.
            let mut a = Map::new();
            a.insert("color".into(), json!(color));
            // The text goes in the attachment only (Slack would show a top-level text too);
            // `fallback` is what notifications show.
            if let Some(t) = &input.text {
                a.insert("text".into(), json!(t));
                a.insert("fallback".into(), json!(t));
            }
            if let Some(b) = &input.blocks {
                a.insert("blocks".into(), json!(b));
            }
            p.insert("attachments".into(), json!([a]));
        }
        None => {
            if let Some(t) = &input.text {
                p.insert("text".into(), json!(t));
            }
            if let Some(b) = &input.blocks {
                p.insert("blocks".into(), json!(b));
            }
        }
    }
    Ok(Value::Object(p))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn input(v: Value) -> PostInput {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn a_colour_moves_the_message_into_an_attachment() {
        let p = payload(&input(
            json!({"webhook_url": "x", "text": "deploy done", "color": "good"}),
        ))
        .unwrap();
        assert!(p.get("text").is_none(), "{p}");
        assert_eq!(p["attachments"][0]["color"], "good");
        assert_eq!(p["attachments"][0]["text"], "deploy done");
        let p = payload(&input(json!({"token": "t", "channel": "#ops", "blocks": [{"type": "divider"}], "thread_ts": "1.2"}))).unwrap();
        assert_eq!(
            p,
            json!({"channel": "#ops", "thread_ts": "1.2", "blocks": [{"type": "divider"}]})
        );
        assert!(payload(&input(json!({"webhook_url": "x"}))).is_err());
    }
}
