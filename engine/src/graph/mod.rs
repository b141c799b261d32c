//! The DAG of a runbook: the chain default, explicit `needs`, cycles with their path,
//! topological levels, and text, dot and mermaid output.
//!
//! Each phase (`steps`, `on_failure`, `finally`) is its own DAG: `needs` name steps of the same
//! phase, and the phases run one after the other.

mod render;

use std::collections::HashMap;

use petgraph::graph::{DiGraph, NodeIndex};

use crate::model::{Phase, Runbook};

pub use render::{render, GraphFormat};

/// A step as the graph sees it.
#[derive(Debug, Clone)]
pub struct NodeSpec<'a> {
    /// The step id.
    pub id: &'a str,
    /// The explicit `needs`, or `None` for the chain default.
    pub needs: Option<Vec<&'a str>>,
}

/// A problem building the graph of one phase.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GraphError {
    /// `needs` names a step that is not in this phase: (step index, need index, missing id).
    MissingNeed(usize, usize, String),
    /// A cycle: step indexes in order, the first repeated at the end.
    Cycle(Vec<usize>),
}

/// The DAG of one phase.
#[derive(Debug, Clone)]
pub struct PhaseGraph {
    /// The steps' ids, in runbook order.
    pub ids: Vec<String>,
    /// For each step, the steps it needs (indexes), in the order written.
    pub needs: Vec<Vec<usize>>,
    /// For each step, its topological level: 0 for steps that need nothing (all 0 when the
    /// graph has a cycle).
    pub levels: Vec<usize>,
    /// Whether the graph has no cycle (so `levels` are meaningful).
    pub acyclic: bool,
}

impl PhaseGraph {
    /// Builds the graph of one phase and fails on the first kind of problem: a `needs` naming a
    /// step not in the phase, or a cycle.
    pub fn build(nodes: &[NodeSpec<'_>]) -> Result<PhaseGraph, Vec<GraphError>> {
        let (graph, errors) = Self::build_lenient(nodes);
        if errors.is_empty() {
            Ok(graph)
        } else {
            Err(errors)
        }
    }

    /// Builds the graph of one phase as far as it can, with every problem found: `needs` that name
    /// no step of the phase are left out, and with a cycle every level is 0. Duplicate ids keep
    /// their first occurrence.
    pub fn build_lenient(nodes: &[NodeSpec<'_>]) -> (PhaseGraph, Vec<GraphError>) {
        let mut index: HashMap<&str, usize> = HashMap::with_capacity(nodes.len());
        for (i, n) in nodes.iter().enumerate() {
            index.entry(n.id).or_insert(i);
        }
        let mut errors = Vec::new();
        let mut needs = Vec::with_capacity(nodes.len());
        for (i, n) in nodes.iter().enumerate() {
            let deps = match &n.needs {
                None if i == 0 => vec![],
                None => vec![i - 1],
                Some(list) => {
                    let mut deps = Vec::with_capacity(list.len());
                    for (j, id) in list.iter().enumerate() {
                        match index.get(id) {
                            Some(&d) => {
                                if !deps.contains(&d) {
                                    deps.push(d)
                                }
                            }
                            None => errors.push(GraphError::MissingNeed(i, j, id.to_string())),
                        }
                    }
                    deps
                }
            };
            needs.push(deps);
        }
        let mut graph: DiGraph<(), ()> = DiGraph::with_capacity(nodes.len(), nodes.len());
        for _ in nodes {
            graph.add_node(());
        }
        for (i, deps) in needs.iter().enumerate() {
            for &d in deps {
                graph.add_edge(NodeIndex::new(d), NodeIndex::new(i), ());
            }
        }
        let mut levels = vec![0usize; nodes.len()];
        let acyclic = match petgraph::algo::toposort(&graph, None) {
            Ok(order) => {
                for n in order {
                    let i = n.index();
                    levels[i] = needs[i].iter().map(|&d| levels[d] + 1).max().unwrap_or(0);
                }
                true
            }
            Err(_) => {
                errors.extend(find_cycles(&graph).into_iter().map(GraphError::Cycle));
                false
            }
        };
        let graph = PhaseGraph {
            ids: nodes.iter().map(|n| n.id.to_string()).collect(),
            needs,
            levels,
            acyclic,
        };
        (graph, errors)
    }

    /// The steps grouped by level: every step of a level can run once the levels above it are
    /// done.
    pub fn by_level(&self) -> Vec<Vec<usize>> {
        let depth = self.levels.iter().copied().max().map_or(0, |m| m + 1);
        let mut out = vec![Vec::new(); depth];
        for (i, &l) in self.levels.iter().enumerate() {
            out[l].push(i);
        }
        out
    }

    /// Whether `ancestor` must finish before `step` starts (directly or through other steps).
    pub fn is_upstream(&self, ancestor: usize, step: usize) -> bool {
        self.upstream_among(step, &[ancestor])[0]
    }

    /// Every step that (directly or not) needs `step`, as a flag per step.
    pub fn descendants(&self, step: usize) -> Vec<bool> {
        let mut dependents: Vec<Vec<usize>> = vec![Vec::new(); self.ids.len()];
        for (i, needs) in self.needs.iter().enumerate() {
            for &d in needs {
                dependents[d].push(i);
            }
        }
        let mut below = vec![false; self.ids.len()];
        let mut stack = dependents.get(step).cloned().unwrap_or_default();
        while let Some(n) = stack.pop() {
            if !std::mem::replace(&mut below[n], true) {
                stack.extend(dependents[n].iter().copied().filter(|&m| !below[m]));
            }
        }
        below
    }

    /// For each of `targets`, whether it is upstream of `step`. One walk for all targets that
    /// stops once every target is found. In an acyclic graph a step's ancestors all have lower
    /// levels, so targets not below the step are ruled out at once, and the walk does not go
    /// below the lowest target left.
    pub fn upstream_among(&self, step: usize, targets: &[usize]) -> Vec<bool> {
        let level = |i: usize| self.levels.get(i).copied().unwrap_or(0);
        let mut found = vec![false; targets.len()];
        let candidate = |t: usize| !self.acyclic || level(t) < level(step);
        let mut left = targets.iter().filter(|&&t| candidate(t)).count();
        if left == 0 {
            return found;
        }
        let floor = if self.acyclic {
            targets
                .iter()
                .copied()
                .filter(|&t| candidate(t))
                .map(level)
                .min()
                .unwrap_or(0)
        } else {
            0
        };
        let mut seen = std::collections::HashSet::new();
        let mut queue: std::collections::VecDeque<usize> =
            self.needs.get(step).cloned().unwrap_or_default().into();
        while let Some(n) = queue.pop_front() {
            if !seen.insert(n) {
                continue;
            }
            for (k, &t) in targets.iter().enumerate() {
                if t == n && !found[k] {
                    found[k] = true;
                    left -= 1;
                }
            }
            if left == 0 {
                break;
            }
            if level(n) > floor || !self.acyclic {
                queue.extend(self.needs[n].iter().copied().filter(|m| !seen.contains(m)));
            }
        }
        found
    }
}

/// Every elementary cycle worth reporting: one per strongly connected component with a cycle,
/// each as a path of node indexes that starts and ends at the component's first step.
fn find_cycles(graph: &DiGraph<(), ()>) -> Vec<Vec<usize>> {
    let mut cycles = Vec::new();
    for scc in petgraph::algo::tarjan_scc(graph) {
        let in_scc: std::collections::HashSet<usize> = scc.iter().map(|n| n.index()).collect();
        let Some(&start) = in_scc.iter().min() else {
            continue;
        };
        let self_loop = graph.contains_edge(NodeIndex::new(start), NodeIndex::new(start));
        if scc.len() == 1 && !self_loop {
            continue;
        }
        // Breadth-first search for the shortest way back to `start` inside the component,
        // following edges the way `needs` reads: a step -> a step it needs.
        let mut prev: HashMap<usize, usize> = HashMap::new();
        let mut queue = std::collections::VecDeque::from([start]);
        let mut closing = None;
        'bfs: while let Some(n) = queue.pop_front() {
            for d in graph.neighbors_directed(NodeIndex::new(n), petgraph::Direction::Incoming) {
                let d = d.index();
                if !in_scc.contains(&d) {
                    continue;
                }
                if d == start {
                    closing = Some(n);
                    break 'bfs;
                }
                if let std::collections::hash_map::Entry::Vacant(e) = prev.entry(d) {
                    e.insert(n);
                    queue.push_back(d);
                }
            }
        }
        let Some(mut n) = closing else { continue };
        let mut path = vec![n];
        while n != start {
            n = prev[&n];
            path.push(n);
        }
        path.reverse();
        path.push(start);
        cycles.push(path);
    }
    cycles.sort();
    cycles
}

/// The graphs of all three phases of a valid runbook.
#[derive(Debug, Clone)]
pub struct RunbookGraph {
    /// One graph per phase, in [`Phase::ALL`] order.
    pub phases: Vec<(Phase, PhaseGraph)>,
}

impl RunbookGraph {
    /// Builds the graphs of a runbook that passed validation.
    pub fn of(runbook: &Runbook) -> Result<RunbookGraph, Vec<GraphError>> {
        let mut phases = Vec::new();
        for phase in Phase::ALL {
            let nodes: Vec<NodeSpec> = runbook
                .phase(phase)
                .iter()
                .map(|s| NodeSpec {
                    id: &s.id,
                    needs: s.needs.as_ref().map(|n| n.ids()),
                })
                .collect();
            phases.push((phase, PhaseGraph::build(&nodes)?));
        }
        Ok(RunbookGraph { phases })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn n<'a>(id: &'a str, needs: Option<Vec<&'a str>>) -> NodeSpec<'a> {
        NodeSpec { id, needs }
    }

    #[test]
    fn chain_default_and_explicit_needs() {
        let g = PhaseGraph::build(&[
            n("a", None),
            n("b", None),
            n("c", Some(vec![])),
            n("d", Some(vec!["b", "c"])),
        ])
        .unwrap();
        assert_eq!(g.needs, vec![vec![], vec![0], vec![], vec![1, 2]]);
        assert_eq!(g.levels, vec![0, 1, 0, 2]);
        assert_eq!(g.by_level(), vec![vec![0, 2], vec![1], vec![3]]);
        assert!(g.is_upstream(0, 3));
        assert!(!g.is_upstream(3, 0));
        assert!(!g.is_upstream(2, 1));
    }

    #[test]
    fn upstream_through_long_and_short_paths() {
        // d needs a directly and b through c; e is beside them.
        let g = PhaseGraph::build(&[
            n("a", Some(vec![])),
            n("b", None),
            n("c", None),
            n("d", Some(vec!["a", "c"])),
            n("e", Some(vec!["a"])),
        ])
        .unwrap();
        assert_eq!(
            g.upstream_among(3, &[1, 0, 4, 3]),
            vec![true, true, false, false]
        );
        assert!(!g.is_upstream(1, 4));
        assert!(g.is_upstream(0, 4));
    }

    #[test]
    fn cycles_come_with_their_path() {
        let err = PhaseGraph::build(&[
            n("a", Some(vec!["c"])),
            n("b", Some(vec!["a"])),
            n("c", Some(vec!["b"])),
            n("d", Some(vec!["d"])),
        ])
        .unwrap_err();
        assert_eq!(
            err,
            vec![
                GraphError::Cycle(vec![0, 2, 1, 0]),
                GraphError::Cycle(vec![3, 3])
            ]
        );
    }

    #[test]
    fn missing_needs_are_reported() {
        let err = PhaseGraph::build(&[n("a", None), n("b", Some(vec!["x"]))]).unwrap_err();
        assert_eq!(err, vec![GraphError::MissingNeed(1, 0, "x".into())]);
    }
}
