//! What a run shares between its steps: plugin state kept for the whole run (SSH master
//! connections, API clients), the inventory given on the command line, and the inventory of the
//! runbook being run.
//!
//! The engine does not know what a plugin keeps: a plugin asks for its state by type with
//! [`RunResources::state`], builds it on first use, and the engine closes everything once, when
//! the run ends ([`RunResources::close`]).

use std::any::{Any, TypeId};
use std::collections::HashMap;
use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::{Arc, Mutex};

use serde_json::Value;

/// State a plugin keeps for a run. `close` is called once when the run ends (after `finally`);
/// it should release what the state holds (close connections, stop helper processes).
pub trait RunState: Any + Send + Sync {
    /// Releases what the state holds. The default does nothing.
    fn close(&self) -> Pin<Box<dyn Future<Output = ()> + Send + '_>> {
        Box::pin(async {})
    }
}

type Entry = (Arc<dyn Any + Send + Sync>, Arc<dyn RunState>);

/// Shared by every step of a run (and of the runbooks it runs as steps).
#[derive(Default)]
pub struct RunResources {
    states: Mutex<HashMap<TypeId, Entry>>,
    /// `--inventory`: replaces the runbook's own `inventory:`.
    pub inventory_override: Option<PathBuf>,
}

impl RunResources {
    /// Resources with an inventory given on the command line.
    pub fn with_inventory(path: Option<PathBuf>) -> Self {
        RunResources {
            inventory_override: path,
            ..Default::default()
        }
    }

    /// The run's state of type `T`, made by `init` on first use.
    pub fn state<T: RunState>(&self, init: impl FnOnce() -> T) -> Arc<T> {
        let mut states = match self.states.lock() {
            Ok(s) => s,
            Err(poisoned) => poisoned.into_inner(),
        };
        let id = TypeId::of::<T>();
        if let Some(state) = states
            .get(&id)
            .and_then(|(any, _)| any.clone().downcast::<T>().ok())
        {
            return state;
        }
        let state = Arc::new(init());
        states.insert(id, (state.clone(), state.clone()));
        state
    }

    /// Closes every state (once each); later `state` calls start afresh.
    pub async fn close(&self) {
        let states: Vec<Arc<dyn RunState>> = match self.states.lock() {
            Ok(mut s) => s.drain().map(|(_, (_, state))| state).collect(),
            Err(poisoned) => poisoned
                .into_inner()
                .drain()
                .map(|(_, (_, state))| state)
                .collect(),
        };
        for state in states {
            state.close().await;
        }
    }
}

/// The inventory of the runbook a step belongs to, as the runbook (or `--inventory`) gives it.
#[derive(Debug, Clone, PartialEq)]
pub enum InventorySource {
    /// A file (Ansible YAML or INI), path resolved against the runbook's folder.
    File(PathBuf),
    /// An inline inventory in Ansible's YAML layout.
    Inline(Value),
}
