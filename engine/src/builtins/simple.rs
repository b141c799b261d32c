//! `set`, `sleep` and `fail`: actions that need nothing but their input.

use async_trait::async_trait;
use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::{json, Value};

use crate::action::{Action, ActionError, ActionSpec, StepContext};
use crate::model::DurationSpec;

/// `set`: the rendered `with:` mapping becomes the result.
pub struct Set;

/// Any mapping; each key becomes a key of `result`.
#[derive(JsonSchema)]
#[allow(dead_code)]
struct SetInput(serde_json::Map<String, Value>);

#[async_trait]
impl Action for Set {
    fn spec(&self) -> ActionSpec {
        ActionSpec::new::<SetInput, SetInput>(
            "set",
            "Compute values: the rendered `with:` mapping becomes `result`.",
            "`with: {x: 1, hosts: \"{{ steps.find.outputs.hosts }}\"}` gives `result.x` and \
             `result.hosts`. Useful to name intermediate values and to shape outputs. Makes no \
             change, so `--dry-run` runs it as usual.",
        )
        .runs_in_dry_run()
    }
    async fn run(&self, input: Value, _: &StepContext) -> Result<Value, ActionError> {
        Ok(input)
    }
}

/// `sleep`: wait, honouring cancellation.
pub struct Sleep;

/// Input of `sleep`.
#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct SleepInput {
    /// How long: `500ms`, `30s`, `5m`, `1h30m`.
    duration: DurationSpec,
}

/// Output of `sleep`.
#[derive(JsonSchema)]
#[allow(dead_code)]
struct SleepOutput {
    /// The time slept, in milliseconds.
    slept_ms: u64,
}

#[async_trait]
impl Action for Sleep {
    fn spec(&self) -> ActionSpec {
        ActionSpec::new::<SleepInput, SleepOutput>(
            "sleep",
            "Wait for a duration.",
            "Waits for `duration`; cancellation (Ctrl-C, a timeout) ends the wait at once. In \
             `--dry-run` it does not wait.",
        )
    }
    async fn run(&self, input: Value, cx: &StepContext) -> Result<Value, ActionError> {
        let input: SleepInput = serde_json::from_value(input)
            .map_err(|e| ActionError::permanent(format!("invalid input: {e}")))?;
        if cx.dry_run {
            return Ok(json!({"slept_ms": 0}));
        }
        let d = input.duration.get();
        tokio::select! {
            _ = tokio::time::sleep(d) => Ok(json!({"slept_ms": d.as_millis() as u64})),
            _ = cx.cancel.cancelled() => Err(ActionError::cancelled()),
        }
    }
}

/// `fail`: fail the step with a message.
pub struct Fail;

/// Input of `fail`.
#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct FailInput {
    /// Why the run must stop; shown in progress, the report and the exit message.
    message: String,
}

#[async_trait]
impl Action for Fail {
    fn spec(&self) -> ActionSpec {
        ActionSpec::new::<FailInput, ()>(
            "fail",
            "Fail the step with a message.",
            "Use with `when:` to stop a run on a condition: `when: steps.check.outputs.errors > \
             0`. Never retried.",
        )
        .runs_in_dry_run()
    }
    async fn run(&self, input: Value, _: &StepContext) -> Result<Value, ActionError> {
        let input: FailInput = serde_json::from_value(input)
            .map_err(|e| ActionError::permanent(format!("invalid input: {e}")))?;
        Err(ActionError::permanent(input.message))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn set_returns_its_input() {
        let out = Set
            .run(json!({"x": 1}), &StepContext::detached("t"))
            .await
            .unwrap();
        assert_eq!(out, json!({"x": 1}));
    }

    #[tokio::test]
    async fn fail_fails_with_the_message() {
        let e = Fail
            .run(json!({"message": "disk full"}), &StepContext::detached("t"))
            .await
            .unwrap_err();
        assert_eq!(e.message, "disk full");
    }

    #[tokio::test]
    async fn sleep_stops_when_cancelled() {
        let cx = StepContext::detached("t");
        cx.cancel.cancel();
        let e = Sleep.run(json!({"duration": "1h"}), &cx).await.unwrap_err();
        assert_eq!(e.kind, crate::action::ErrorKind::Cancelled);
    }
}
