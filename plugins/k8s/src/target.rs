//! The object(s) a step points at: its connection, resolved kind and namespace.

use std::sync::Arc;

use kube::api::DynamicObject;
use kube::Api;
use opsbook_engine::action::{ActionError, StepContext};
use serde_json::Value;

use crate::client::{conn, Conn, ConnInput};
use crate::discovery::{resolve, Kind};

/// A kind in a namespace of a cluster.
pub struct Target {
    /// The connection.
    pub conn: Arc<Conn>,
    /// The resolved kind.
    pub kind: Kind,
    /// The namespace (the step's or the context's; unused for cluster-scoped kinds).
    pub ns: String,
}

impl Target {
    /// Resolves the connection, the kind and the namespace of a step.
    pub async fn new(
        cx: &StepContext,
        input: ConnInput<'_>,
        namespace: &Option<String>,
        api_version: Option<&str>,
        kind: &str,
    ) -> Result<Target, ActionError> {
        let conn = conn(cx, input).await?;
        let kind = resolve(&conn, cx, api_version, kind).await?;
        let ns = conn.ns(namespace);
        Ok(Target { conn, kind, ns })
    }

    /// The API for this kind in the namespace.
    pub fn api(&self) -> Api<DynamicObject> {
        self.kind.api(&self.conn.client, &self.ns)
    }

    /// The namespace, `None` for cluster-scoped kinds.
    pub fn ns(&self) -> Option<&str> {
        self.kind.ns(&self.ns)
    }

    /// `Deployment default/web`, for messages.
    pub fn shown(&self, name: &str) -> String {
        crate::common::shown(&self.kind.ar.kind, self.ns(), name)
    }

    /// An object of this kind as results show it.
    pub fn present(&self, obj: DynamicObject) -> Value {
        crate::common::present(to_value(obj), &self.kind.ar.api_version, &self.kind.ar.kind)
    }
}

/// An object as JSON.
pub fn to_value(obj: DynamicObject) -> Value {
    serde_json::to_value(obj).unwrap_or(Value::Null)
}
