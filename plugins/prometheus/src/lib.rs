//! The Prometheus plugin: `prometheus.push` (gauges and counters with labels to a Pushgateway:
//! replace, add or delete a group) and `prometheus.query` (instant and range PromQL queries with
//! thresholds, the numbers in the result).

mod exposition;
mod query;

use opsbook_engine::action::{ActionError, Registry};
use serde_json::Value;

pub use exposition::{render, Metric, MetricType};

/// Adds `prometheus.push` and `prometheus.query`.
pub fn register(registry: &mut Registry) {
    registry.register(exposition::PrometheusPush);
    registry.register(query::PrometheusQuery);
}

fn parse<T: serde::de::DeserializeOwned>(v: Value) -> Result<T, ActionError> {
    serde_json::from_value(v).map_err(|e| ActionError::permanent(format!("invalid input: {e}")))
}
