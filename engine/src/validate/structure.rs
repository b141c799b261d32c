//! Ids, `needs`, cycles and `uses`: the shape of the DAG.

use std::collections::HashMap;

use serde_json::{Map, Value};

use super::Cx;
use crate::diag::{Code, Diagnostic};
use crate::graph::{GraphError, NodeSpec, PhaseGraph};
use crate::model::Phase;
use crate::suggest::did_you_mean;

/// A step as the checks see it: tolerant of a document that failed the schema.
pub(crate) struct StepInfo<'a> {
    pub phase: Phase,
    /// Index inside its phase.
    pub index: usize,
    /// JSON pointer of the step.
    pub ptr: String,
    pub obj: Option<&'a Map<String, Value>>,
    pub id: Option<&'a str>,
}

impl<'a> StepInfo<'a> {
    pub fn get(&self, key: &str) -> Option<&'a Value> {
        self.obj.and_then(|o| o.get(key))
    }

    /// The id, or `steps[N]` (its place in its list) for a step without one, for messages.
    pub fn label(&self) -> String {
        match self.id {
            Some(id) => id.to_string(),
            None => format!("{}[{}]", self.phase.key(), self.index),
        }
    }

    /// The names of the step's declared outputs.
    pub fn output_names(&self) -> Vec<&'a str> {
        self.get("outputs")
            .and_then(Value::as_object)
            .map(|m| m.keys().map(String::as_str).collect())
            .unwrap_or_default()
    }
}

/// All steps and the graph of each phase.
pub(crate) struct Steps<'a> {
    pub list: Vec<StepInfo<'a>>,
    /// Step id → index in `list` (first occurrence).
    pub by_id: HashMap<&'a str, usize>,
    /// One graph per phase, in `Phase::ALL` order (indexes local to the phase).
    pub graphs: Vec<PhaseGraph>,
    /// Descendants of steps that templates read, by (phase index, step), computed once each.
    descendants: std::sync::Mutex<HashMap<(usize, usize), Vec<bool>>>,
}

impl Steps<'_> {
    /// Whether step `ancestor` finishes before step `step` starts (both in `phase`). A direct
    /// need or the levels answer most questions; otherwise the ancestor's descendants are
    /// computed once and kept, so a thousand steps reading one early step stay linear.
    pub fn is_upstream(&self, phase: Phase, ancestor: usize, step: usize) -> bool {
        let g = self.graph(phase);
        if g.acyclic && g.levels.get(ancestor) >= g.levels.get(step) {
            return false;
        }
        if g.needs.get(step).is_some_and(|n| n.contains(&ancestor)) {
            return true;
        }
        let Ok(mut cache) = self.descendants.lock() else {
            return g.is_upstream(ancestor, step);
        };
        let below = cache
            .entry((Self::phase_index(phase), ancestor))
            .or_insert_with(|| g.descendants(ancestor));
        below.get(step).copied().unwrap_or(false)
    }

    pub fn phase_index(phase: Phase) -> usize {
        match phase {
            Phase::Main => 0,
            Phase::OnFailure => 1,
            Phase::Finally => 2,
        }
    }

    pub fn graph(&self, phase: Phase) -> &PhaseGraph {
        &self.graphs[Self::phase_index(phase)]
    }
}

/// Stands for a `needs` entry that is not a string.
const NOT_AN_ID: &str = "\u{0}";

fn needs_of<'a>(step: &StepInfo<'a>) -> Option<Vec<&'a str>> {
    match step.get("needs")? {
        Value::String(s) => Some(vec![s.as_str()]),
        // Entries that are not text keep their place (the schema reports them) and match no id.
        Value::Array(a) => Some(a.iter().map(|v| v.as_str().unwrap_or(NOT_AN_ID)).collect()),
        _ => None,
    }
}

/// Collects the steps, and reports duplicate ids, bad `needs`, cycles and unknown actions.
pub(crate) fn check<'a>(cx: &mut Cx<'a>) -> Steps<'a> {
    let mut list = Vec::new();
    let mut offsets = [0; 3];
    for (pi, phase) in Phase::ALL.into_iter().enumerate() {
        offsets[pi] = list.len();
        let items = cx.root.get(phase.key()).and_then(Value::as_array);
        for (index, item) in items.into_iter().flatten().enumerate() {
            let obj = item.as_object();
            list.push(StepInfo {
                phase,
                index,
                ptr: format!("/{}/{index}", phase.key()),
                obj,
                id: obj.and_then(|o| o.get("id")).and_then(Value::as_str),
            });
        }
    }

    // Duplicate ids, across all phases.
    let mut by_id: HashMap<&'a str, usize> = HashMap::with_capacity(list.len());
    for (gi, s) in list.iter().enumerate() {
        let Some(id) = s.id else { continue };
        match by_id.get(id) {
            Some(&first) => {
                let first_line = cx
                    .doc
                    .value_span(&format!("{}/id", list[first].ptr))
                    .map(|s| s.line)
                    .unwrap_or(0);
                cx.push(
                    Diagnostic::new(Code::DuplicateId, cx.source, cx.doc.value_span(&format!("{}/id", s.ptr)), format!("duplicate step id `{id}`"))
                        .help(format!("step ids are unique in a runbook; `{id}` is first used on line {first_line}"))
                        .label("used again here"),
                );
            }
            None => {
                by_id.insert(id, gi);
            }
        }
    }

    // The graph of each phase.
    let mut graphs = Vec::with_capacity(3);
    for (pi, phase) in Phase::ALL.into_iter().enumerate() {
        let end = offsets.get(pi + 1).copied().unwrap_or(list.len());
        let members = &list[offsets[pi]..end];
        let placeholder: Vec<String> = members
            .iter()
            .map(|s| format!("\u{0}{}", s.index))
            .collect();
        let nodes: Vec<NodeSpec> = members
            .iter()
            .zip(&placeholder)
            .map(|(s, p)| NodeSpec {
                id: s.id.unwrap_or(p),
                needs: needs_of(s),
            })
            .collect();
        let (graph, errors) = PhaseGraph::build_lenient(&nodes);
        for e in errors {
            match e {
                GraphError::MissingNeed(_, _, missing) if missing == NOT_AN_ID => {}
                GraphError::MissingNeed(i, j, missing) => {
                    let s = &members[i];
                    let ptr = match s.get("needs") {
                        Some(Value::Array(_)) => format!("{}/needs/{j}", s.ptr),
                        _ => format!("{}/needs", s.ptr),
                    };
                    let span = cx.doc.value_span(&ptr);
                    let mut d = Diagnostic::new(
                        Code::MissingNeed,
                        cx.source,
                        span,
                        format!(
                            "step `{}` needs `{missing}`, which is not a step of `{}`",
                            s.label(),
                            phase.key()
                        ),
                    );
                    d = match by_id.get(missing.as_str()).map(|&g| list[g].phase) {
                        Some(other) => d.help(format!("`{missing}` is in `{}`; `needs` may only name steps of the same list (the lists run one after the other)", other.key())),
                        None => {
                            let ids = members.iter().filter_map(|m| m.id);
                            d.maybe_help(did_you_mean(&missing, ids))
                        }
                    };
                    cx.push(d.label("no such step"));
                }
                GraphError::Cycle(path) => report_cycle(cx, members, &path),
            }
        }
        graphs.push(graph);
    }

    // Actions.
    for s in &list {
        check_uses(cx, &s.ptr, s.get("uses"));
        if let Some(rb) = s.get("rollback").and_then(Value::as_object) {
            check_uses(cx, &format!("{}/rollback", s.ptr), rb.get("uses"));
        }
    }

    Steps {
        list,
        by_id,
        graphs,
        descendants: Default::default(),
    }
}

/// The entry of `step`'s `needs` that names `target`, or its whole `needs`.
fn needs_entry_ptr(step: &StepInfo<'_>, target: &str) -> String {
    match step.get("needs") {
        Some(Value::Array(items)) => match items.iter().position(|v| v.as_str() == Some(target)) {
            Some(j) => format!("{}/needs/{j}", step.ptr),
            None => format!("{}/needs", step.ptr),
        },
        _ => format!("{}/needs", step.ptr),
    }
}

fn report_cycle(cx: &mut Cx<'_>, members: &[StepInfo<'_>], path: &[usize]) {
    let first = &members[path[0]];
    let second = &members[path[1]];
    let span = cx
        .doc
        .value_span(&needs_entry_ptr(first, &second.label()))
        .or_else(|| cx.doc.value_span(&first.ptr));
    if path.len() == 2 {
        cx.push(
            Diagnostic::new(
                Code::Cycle,
                cx.source,
                span,
                format!("step `{}` needs itself", first.label()),
            )
            .help("remove it from its own `needs`")
            .label("here"),
        );
        return;
    }
    let names: Vec<String> = path.iter().map(|&i| members[i].label()).collect();
    let implicit: Vec<String> = path
        .windows(2)
        .filter(|w| members[w[0]].get("needs").is_none())
        .map(|w| {
            format!(
                "`{}` needs `{}` only because it comes right after it",
                members[w[0]].label(),
                members[w[1]].label()
            )
        })
        .collect();
    let help = if implicit.is_empty() {
        "each step needs the next one: remove one of these needs".to_string()
    } else {
        format!(
            "each step needs the next one; {}: give such a step its own `needs` (`needs: []` to start at once)",
            implicit.join("; ")
        )
    };
    cx.push(
        Diagnostic::new(
            Code::Cycle,
            cx.source,
            span,
            format!("the steps form a cycle: {}", names.join(" -> ")),
        )
        .help(help)
        .label("cycle starts here"),
    );
}

fn check_uses(cx: &mut Cx<'_>, ptr: &str, uses: Option<&Value>) {
    let Some(name) = uses.and_then(Value::as_str) else {
        return;
    };
    if name.is_empty() || cx.v.registry.get(name).is_some() {
        return;
    }
    let help = did_you_mean(name, cx.v.registry.names())
        .unwrap_or_else(|| "`opsbook actions` lists the actions this build has".to_string());
    cx.push(
        Diagnostic::new(
            Code::UnknownAction,
            cx.source,
            cx.doc.value_span(&format!("{ptr}/uses")),
            format!("unknown action `{name}`"),
        )
        .help(help)
        .label("no such action"),
    );
}
