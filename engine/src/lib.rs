//! The opsbook engine: everything that is not one plugin.
//!
//! One data flow: a runbook file is [`yaml`]-parsed with a source map, checked by [`validate`]
//! (schema, DAG, actions, templates, params), turned into the [`model`] and planned as a
//! [`graph`]. Actions reach the engine only through the [`action`] trait and [`action::Registry`].

pub mod action;
pub mod builtins;
pub mod diag;
pub mod exec;
pub mod graph;
pub mod model;
pub mod render;
pub mod report;
pub mod resources;
pub mod schema;
pub mod secrets;
pub mod source;
pub mod suggest;
pub mod template;
pub mod validate;
pub mod yaml;

pub use action::{Action, ActionError, ActionSpec, Registry, StepContext, TargetCase};
pub use diag::{Code, Diagnostic};
pub use model::Runbook;
pub use resources::{InventorySource, RunResources, RunState};
pub use source::{Source, Span};
pub use validate::{Checked, Validator};
