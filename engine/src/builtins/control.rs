//! Specs of the control actions that the executor carries out itself.

use indexmap::IndexMap;
use schemars::JsonSchema;
use serde_json::Value;

use crate::action::ActionSpec;
use crate::model::DurationSpec;

/// Input of `assert`.
#[derive(JsonSchema)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
struct AssertInput {
    /// One bare expression or a list of them; every one must be true.
    that: OneOrMany,
    /// Shown when an expression is false (a template).
    message: Option<String>,
}

/// One expression or a list of expressions.
#[derive(JsonSchema)]
#[serde(untagged)]
#[allow(dead_code)]
enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

/// Output of `assert`.
#[derive(JsonSchema)]
#[allow(dead_code)]
struct AssertOutput {
    /// How many expressions were checked.
    checked: u32,
}

/// Input of `approve`.
#[derive(JsonSchema)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
struct ApproveInput {
    /// What the person is asked to approve.
    message: String,
    /// Give up (fail) when nobody answers within this time.
    timeout: Option<DurationSpec>,
}

/// Output of `approve`.
#[derive(JsonSchema)]
#[allow(dead_code)]
struct ApproveOutput {
    /// Who approved: the user at the terminal, or `--yes` / `--approve`.
    approved_by: String,
}

/// Input of `template`: exactly one of `template` and `src`.
#[derive(JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(extend("oneOf" = [{"required": ["template"]}, {"required": ["src"]}]))]
#[allow(dead_code)]
struct TemplateInput {
    /// The template text (Jinja; the run's scope is available).
    template: Option<String>,
    /// A template file, relative to the runbook.
    src: Option<String>,
    /// Write the rendered text to this file (relative to the runbook); folders are created.
    dest: Option<String>,
}

/// Output of `template`.
#[derive(JsonSchema)]
#[allow(dead_code)]
struct TemplateOutput {
    /// The rendered text.
    content: String,
    /// The file written, if any.
    dest: Option<String>,
}

/// Input of `runbook`.
#[derive(JsonSchema)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
struct RunbookInput {
    /// The runbook file, relative to this one.
    path: String,
    /// Params for the nested run.
    params: Option<IndexMap<String, Value>>,
}

/// Output of `runbook`.
#[derive(JsonSchema)]
#[allow(dead_code)]
struct RunbookOutput {
    /// The nested run's status.
    status: String,
    /// The nested run's outputs.
    outputs: IndexMap<String, Value>,
}

/// The specs of `assert`, `approve`, `template` and `runbook`.
pub fn specs() -> Vec<ActionSpec> {
    vec![
        ActionSpec::new::<AssertInput, AssertOutput>(
            "assert",
            "Check conditions; fail the step when one is false.",
            "`that:` holds bare expressions over the run's scope (`steps`, `params`, `vars` …): \
             `that: [\"steps.health.result.status == 200\"]`. The step fails with `message` (or \
             the first false expression) when any is false. Runs in `--dry-run` too.",
        )
        .runs_in_dry_run(),
        ActionSpec::new::<ApproveInput, ApproveOutput>(
            "approve",
            "Ask a person to confirm before the run goes on.",
            "On a terminal the person types `yes`. `opsbook run --yes` approves every step and \
             `--approve STEP` one step. With no terminal and no approval the step fails and \
             says how to approve.",
        ),
        ActionSpec::new::<TemplateInput, TemplateOutput>(
            "template",
            "Render a Jinja template, optionally to a file.",
            "Renders `template` (inline) or `src` (a file) with the run's scope; writes the \
             result to `dest` when given. Use it for reports and config files. In `--dry-run` \
             it renders but does not write.",
        ),
        ActionSpec::new::<RunbookInput, RunbookOutput>(
            "runbook",
            "Run another runbook as a step.",
            "Runs `path` with `params`; its steps appear nested in the report, and its outputs \
             become this step's `result.outputs`. In `--dry-run` the nested run is a dry run too.",
        )
        .runs_in_dry_run(),
    ]
}
