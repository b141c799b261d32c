//! The graph as text (levels), Graphviz dot, or a Mermaid flowchart.

use std::fmt::Write as _;

use crate::model::{Phase, Runbook, Step};

use super::RunbookGraph;

/// An output format of `opsbook graph`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GraphFormat {
    /// Levels of steps that can run together, with what each needs.
    Text,
    /// Graphviz dot.
    Dot,
    /// A Mermaid flowchart.
    Mermaid,
}

/// Renders the graph of a runbook.
pub fn render(runbook: &Runbook, graph: &RunbookGraph, format: GraphFormat) -> String {
    match format {
        GraphFormat::Text => text(runbook, graph),
        GraphFormat::Dot => dot(runbook, graph),
        GraphFormat::Mermaid => mermaid(runbook, graph),
    }
}

fn phase_title(phase: Phase) -> &'static str {
    match phase {
        Phase::Main => "steps",
        Phase::OnFailure => "on_failure (when the run has failed)",
        Phase::Finally => "finally (always, last)",
    }
}

fn step_note(step: &Step) -> String {
    let mut notes = vec![step.uses.clone()];
    if step.for_each.is_some() {
        notes.push("for_each".into());
    }
    if step.when.is_some() {
        notes.push("when".into());
    }
    if let Some(r) = step.run_on {
        if r != crate::model::RunOn::Success {
            notes.push(format!(
                "run_on: {}",
                serde_json::to_value(r)
                    .ok()
                    .and_then(|v| v.as_str().map(str::to_string))
                    .unwrap_or_default()
            ));
        }
    }
    if step.rollback.is_some() {
        notes.push("rollback".into());
    }
    notes.join(", ")
}

fn text(runbook: &Runbook, graph: &RunbookGraph) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "{}", runbook.name);
    for (phase, g) in &graph.phases {
        if g.ids.is_empty() {
            continue;
        }
        let steps = runbook.phase(*phase);
        let _ = writeln!(out, "\n{}", phase_title(*phase));
        for (level, members) in g.by_level().iter().enumerate() {
            let _ = writeln!(out, "  level {level}");
            for &i in members {
                let needs: Vec<&str> = g.needs[i].iter().map(|&d| g.ids[d].as_str()).collect();
                let after = if needs.is_empty() {
                    String::new()
                } else {
                    format!("  <- {}", needs.join(", "))
                };
                let _ = writeln!(out, "    {} ({}){}", g.ids[i], step_note(&steps[i]), after);
            }
        }
    }
    out
}

fn dot_quote(s: &str) -> String {
    format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
}

fn node_key(phase: Phase, id: &str) -> String {
    match phase {
        Phase::Main => id.to_string(),
        Phase::OnFailure => format!("on_failure.{id}"),
        Phase::Finally => format!("finally.{id}"),
    }
}

fn dot(runbook: &Runbook, graph: &RunbookGraph) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "digraph {} {{", dot_quote(&runbook.name));
    let _ = writeln!(out, "  rankdir=LR;\n  node [shape=box, style=rounded];");
    for (phase, g) in &graph.phases {
        if g.ids.is_empty() {
            continue;
        }
        let steps = runbook.phase(*phase);
        let _ = writeln!(
            out,
            "  subgraph {} {{",
            dot_quote(&format!("cluster_{}", phase.key()))
        );
        let _ = writeln!(out, "    label={};", dot_quote(phase.key()));
        for (i, id) in g.ids.iter().enumerate() {
            let label = format!("{id}\\n{}", steps[i].uses);
            let _ = writeln!(
                out,
                "    {} [label={}];",
                dot_quote(&node_key(*phase, id)),
                dot_quote(&label).replace("\\\\n", "\\n")
            );
        }
        for (i, deps) in g.needs.iter().enumerate() {
            for &d in deps {
                let _ = writeln!(
                    out,
                    "    {} -> {};",
                    dot_quote(&node_key(*phase, &g.ids[d])),
                    dot_quote(&node_key(*phase, &g.ids[i]))
                );
            }
        }
        let _ = writeln!(out, "  }}");
    }
    let _ = writeln!(out, "}}");
    out
}

/// Mermaid node ids come from the phase and the step's place, never from its id: ids such as
/// `end`, or `my-step` beside `my_step`, would break or merge nodes.
fn mermaid_id(phase: Phase, index: usize) -> String {
    let p = match phase {
        Phase::Main => "s",
        Phase::OnFailure => "f",
        Phase::Finally => "z",
    };
    format!("{p}{index}")
}

fn mermaid_group(phase: Phase) -> String {
    format!("phase_{}", phase.key())
}

fn mermaid(runbook: &Runbook, graph: &RunbookGraph) -> String {
    let mut out = String::from("flowchart TD\n");
    for (phase, g) in &graph.phases {
        if g.ids.is_empty() {
            continue;
        }
        let steps = runbook.phase(*phase);
        let _ = writeln!(
            out,
            "  subgraph {}[\"{}\"]",
            mermaid_group(*phase),
            phase.key()
        );
        for (i, id) in g.ids.iter().enumerate() {
            let label = format!("{id}<br/><small>{}</small>", steps[i].uses).replace('"', "#quot;");
            let _ = writeln!(out, "    {}[\"{}\"]", mermaid_id(*phase, i), label);
        }
        for (i, deps) in g.needs.iter().enumerate() {
            for &d in deps {
                let _ = writeln!(
                    out,
                    "    {} --> {}",
                    mermaid_id(*phase, d),
                    mermaid_id(*phase, i)
                );
            }
        }
        let _ = writeln!(out, "  end");
    }
    let phases: Vec<String> = graph
        .phases
        .iter()
        .filter(|(_, g)| !g.ids.is_empty())
        .map(|(p, _)| mermaid_group(*p))
        .collect();
    for w in phases.windows(2) {
        let _ = writeln!(out, "  {} -.-> {}", w[0], w[1]);
    }
    out
}
