//! The built-in actions: `set`, `sleep`, `fail`, and the control actions `assert`, `approve`,
//! `template` and `runbook` that the executor carries out itself because they need the run's
//! scope (expressions, the terminal, nested runs).

mod control;
mod simple;

use crate::action::Registry;

/// Adds the built-in actions to a registry.
pub fn register(registry: &mut Registry) {
    registry.register(simple::Set);
    registry.register(simple::Sleep);
    registry.register(simple::Fail);
    for spec in control::specs() {
        registry.register_control(spec);
    }
}
