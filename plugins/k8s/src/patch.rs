//! `k8s.patch`: strategic merge, JSON merge or JSON patch of one object (or its `status`).

use async_trait::async_trait;
use kube::api::{Patch, PatchParams};
use opsbook_engine::action::{Action, ActionError, ActionSpec, LogStream, Registry, StepContext};
use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::{json, Value};

use crate::common::{comparable, k8s_input, parse, FIELD_MANAGER};
use crate::target::{to_value, Target};

pub(crate) fn register(r: &mut Registry) {
    r.register(PatchAction);
}

/// The kind of patch.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum PatchType {
    /// Strategic merge patch (kubectl's default; lists of containers, env … merge by name).
    /// Built-in kinds only.
    #[default]
    Strategic,
    /// JSON merge patch (RFC 7386): mappings merge, lists are replaced, `null` removes.
    Merge,
    /// JSON patch (RFC 6902): a list of `{op, path, value}` operations.
    Json,
}

k8s_input! {
    /// Input of `k8s.patch`.
    pub struct PatchInput {
        /// The kind: `Deployment`, or its plural or short name.
        pub kind: String,
        /// The API version (`apps/v1`); needed for kinds outside the built-in table.
        #[serde(default)]
        pub api_version: Option<String>,
        /// The object's name.
        pub name: String,
        /// `strategic` (default), `merge` or `json`.
        #[serde(default, rename = "type")]
        pub patch_type: PatchType,
        /// The patch: a mapping (strategic, merge) or a list of operations (json).
        pub patch: Value,
        /// Patch a subresource instead (`status`, `scale`).
        #[serde(default)]
        pub subresource: Option<String>,
    }
}

const DOC: &str = "Patches one object with a strategic merge patch (`type: strategic`, the \
default, as kubectl; built-in kinds only), a JSON merge patch (`type: merge`: custom resources \
take this) or a JSON patch (`type: json`: a list of `{op, path, value}`), as field manager \
`opsbook`; `subresource: status` patches the status. A `metadata.resourceVersion` in the patch \
makes it conditional (a 409 Conflict when the object changed meanwhile). Result: `object` (the \
object after the patch) and `changed` (whether anything but bookkeeping changed). `--dry-run`: \
the server applies the patch without storing it (`dryRun=All`) and the result shows what the \
object would become.";

/// `k8s.patch`.
pub struct PatchAction;

#[async_trait]
impl Action for PatchAction {
    fn spec(&self) -> ActionSpec {
        ActionSpec::new::<PatchInput, Value>(
            "k8s.patch",
            "Patch a Kubernetes object: strategic merge, JSON merge or JSON patch.",
            DOC,
        )
        .with_check()
    }

    async fn run(&self, input: Value, cx: &StepContext) -> Result<Value, ActionError> {
        let input: PatchInput = parse(input)?;
        let t = Target::new(
            cx,
            input.conn(),
            &input.namespace,
            input.api_version.as_deref(),
            &input.kind,
        )
        .await?;
        let api = t.api();
        let name = input.name.as_str();
        let label = t.shown(name);
        let ops: Option<json_patch::Patch> = match input.patch_type {
            PatchType::Json => Some(serde_json::from_value(input.patch.clone()).map_err(|e| {
                ActionError::permanent(format!(
                    "`patch` is not a JSON patch (a list of {{op, path, value}}): {e}"
                ))
            })?),
            _ if !input.patch.is_object() => {
                return Err(ActionError::permanent(
                    "`patch` must be a mapping for `type: strategic` and `type: merge`",
                ))
            }
            _ => None,
        };
        let patch: Patch<&Value> = match (input.patch_type, ops) {
            (PatchType::Strategic, _) => Patch::Strategic(&input.patch),
            (PatchType::Merge, _) => Patch::Merge(&input.patch),
            (PatchType::Json, Some(ops)) => Patch::Json(ops),
            (PatchType::Json, None) => unreachable!("parsed above"),
        };
        let before = crate::retry::read(cx, &format!("get {label}"), || api.get_opt(name)).await?;
        let pp = PatchParams {
            field_manager: Some(FIELD_MANAGER.into()),
            dry_run: cx.dry_run,
            ..Default::default()
        };
        let what = format!("patch {label}");
        let after = match &input.subresource {
            Some(sub) => {
                crate::retry::write(cx, &what, || api.patch_subresource(sub, name, &pp, &patch))
                    .await?
            }
            None => crate::retry::write(cx, &what, || api.patch(name, &pp, &patch)).await?,
        };
        let after = t.present(after);
        // A patched Secret's values never reach the report.
        crate::read::mask_secret(cx, &after);
        let changed = match before {
            Some(b) => {
                let b = to_value(b);
                let strip = |v: &Value| {
                    if input.subresource.is_some() {
                        // A status patch changes only what comparable() leaves out.
                        let mut v = v.clone();
                        if let Some(m) = v.get_mut("metadata").and_then(Value::as_object_mut) {
                            m.remove("resourceVersion");
                            m.remove("managedFields");
                        }
                        v
                    } else {
                        comparable(v)
                    }
                };
                strip(&b) != strip(&after)
            }
            None => true,
        };
        cx.log.line(
            LogStream::Stdout,
            &match (cx.dry_run, changed) {
                (true, true) => format!("dry run (checked by the server): {label} would change"),
                (true, false) => {
                    format!("dry run (checked by the server): {label} would not change")
                }
                (false, true) => format!("patched {label}"),
                (false, false) => format!("{label} unchanged"),
            },
        );
        Ok(json!({"object": after, "changed": changed}))
    }
}
