//! The names templates read while a run goes on. `steps` is a live view: each step's entry is
//! converted once, when it finishes, so rendering a step costs the same whatever the run's size.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use minijinja::value::{Enumerator, Object, Value};

/// `steps.<id>` for every step of the run.
#[derive(Debug, Default)]
pub struct StepsView {
    entries: RwLock<HashMap<String, Value>>,
}

impl StepsView {
    /// Sets (or replaces) the entry of one step.
    pub fn set(&self, id: &str, entry: &serde_json::Value) {
        let v = crate::template::to_template_value(entry);
        if let Ok(mut m) = self.entries.write() {
            m.insert(id.to_string(), v);
        }
    }
}

impl Object for StepsView {
    fn get_value(self: &Arc<Self>, key: &Value) -> Option<Value> {
        let k = key.as_str()?;
        self.entries.read().ok()?.get(k).cloned()
    }

    fn enumerate(self: &Arc<Self>) -> Enumerator {
        let keys = self
            .entries
            .read()
            .map(|m| m.keys().map(|k| Value::from(k.as_str())).collect())
            .unwrap_or_default();
        Enumerator::Values(keys)
    }
}
