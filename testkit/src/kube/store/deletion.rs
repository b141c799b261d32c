//! Deletion: DeleteOptions (dry run, preconditions), graceful deletion of scheduled pods,
//! finalizers, propagation to dependents by ownerReference uid (Background, Foreground,
//! Orphan: the garbage collector, run synchronously), namespace drains, and the deferred
//! work the timer task runs.

use std::time::{Duration, Instant};

use serde_json::{json, Value};

use super::{EventType, Key, Store};
use crate::kube::registry::{self, Resource};
use crate::kube::status::{self, ApiResult};

/// A graceful pod deletion completes after min(grace period, this).
const MAX_GRACE: Duration = Duration::from_secs(1);

/// Now plus `secs`, RFC 3339.
fn now_plus(secs: i64) -> String {
    let t = jiff::Timestamp::now() + jiff::SignedDuration::from_secs(secs);
    t.strftime("%Y-%m-%dT%H:%M:%SZ").to_string()
}

/// What happens to an object's dependents when it is deleted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Propagation {
    Background,
    Foreground,
    Orphan,
}

/// DeleteOptions, from the body and the query.
#[derive(Clone, Debug, Default)]
pub(crate) struct DeleteOpts {
    pub grace: Option<i64>,
    pub propagation: Option<Propagation>,
    pub dry_run: bool,
    pub uid: Option<String>,
    pub resource_version: Option<String>,
}

/// Work the timer task does later.
#[derive(Clone, Debug)]
pub(crate) enum Pending {
    /// Remove a gracefully deleted pod at this instant.
    Grace { key: Key, uid: String, at: Instant },
    /// Finish deleting an object once nothing it owns (or nothing in the namespace, for a
    /// namespace) is left.
    Drain { key: Key, uid: String },
}

impl Store {
    /// Deletes an object being deleted once its finalizers are gone (and no graceful
    /// deletion or drain is still running for it).
    pub(super) fn maybe_finalize(&mut self, key: &Key) {
        let Some(obj) = self.objects.get(key) else {
            return;
        };
        if obj["metadata"]["deletionTimestamp"].is_null() {
            return;
        }
        let finalizers = obj["metadata"]["finalizers"]
            .as_array()
            .is_some_and(|f| !f.is_empty());
        let waiting = self.pending.iter().any(|p| match p {
            Pending::Grace { key: k, .. } | Pending::Drain { key: k, .. } => k == key,
        });
        if !finalizers && !waiting {
            self.remove(key, Propagation::Background);
        }
    }

    /// The answer to a DELETE, and the deletion itself (graceful for scheduled pods,
    /// waiting for finalizers, Foreground waiting for dependents).
    pub(crate) fn delete(
        &mut self,
        r: &Resource,
        key: &Key,
        opts: &DeleteOpts,
    ) -> ApiResult<Value> {
        let Some(obj) = self.objects.get(key).cloned() else {
            return Err(status::not_found(r, &key.3));
        };
        let uid = obj["metadata"]["uid"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        if let Some(want) = &opts.uid {
            if *want != uid {
                return Err(status::conflict_msg(
                    r,
                    &key.3,
                    &format!(
                    "Precondition failed: UID in precondition: {want}, UID in object meta: {uid}"
                ),
                ));
            }
        }
        let rv = obj["metadata"]["resourceVersion"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        if let Some(want) = &opts.resource_version {
            if *want != rv {
                return Err(status::conflict_msg(r, &key.3, &format!(
                    "Precondition failed: ResourceVersion in precondition: {want}, ResourceVersion in object meta: {rv}"
                )));
            }
        }
        // Batch Jobs (and only they, here) orphan their pods unless told otherwise.
        let default_policy = if r.group == "batch" {
            Propagation::Orphan
        } else {
            Propagation::Background
        };
        let policy = opts.propagation.unwrap_or(default_policy);
        let deleted_answer = |obj: &Value| -> Value {
            if r.returns_deleted {
                obj.clone()
            } else {
                json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success",
                       "details": {"name": key.3, "group": r.group, "kind": r.plural, "uid": uid}})
            }
        };
        let details_fix = |mut v: Value| {
            if r.group.is_empty() {
                if let Some(d) = v.get_mut("details").and_then(Value::as_object_mut) {
                    d.remove("group");
                }
            }
            v
        };
        // Graceful deletion of a scheduled, running pod.
        let grace = if r.kind == "Pod" {
            let phase = obj["status"]["phase"].as_str().unwrap_or_default();
            let scheduled = obj["spec"]["nodeName"]
                .as_str()
                .is_some_and(|n| !n.is_empty());
            let terminal = phase == "Succeeded" || phase == "Failed";
            let g = opts
                .grace
                .or_else(|| obj["spec"]["terminationGracePeriodSeconds"].as_i64())
                .unwrap_or(30);
            if scheduled && !terminal {
                g.max(0)
            } else {
                0
            }
        } else {
            0
        };
        let already = !obj["metadata"]["deletionTimestamp"].is_null();
        let finalizers = obj["metadata"]["finalizers"]
            .as_array()
            .is_some_and(|f| !f.is_empty());
        let drain = policy == Propagation::Foreground || r.kind == "Namespace";
        if opts.dry_run {
            if grace > 0 || finalizers || drain {
                let mut o = obj.clone();
                o["metadata"]["deletionTimestamp"] = json!(now_plus(grace));
                return Ok(o);
            }
            return Ok(details_fix(deleted_answer(&obj)));
        }
        if already {
            if grace == 0 && opts.grace == Some(0) && !finalizers {
                self.pending
                    .retain(|p| !matches!(p, Pending::Grace { key: k, .. } if k == key));
                let gone = self.remove(key, policy);
                return Ok(details_fix(deleted_answer(&gone.unwrap_or(obj))));
            }
            return Ok(obj);
        }
        if grace > 0 || finalizers || drain {
            let mut o = obj.clone();
            o["metadata"]["deletionTimestamp"] = json!(now_plus(grace));
            if grace > 0 {
                o["metadata"]["deletionGracePeriodSeconds"] = json!(grace);
                let wait = Duration::from_secs(grace as u64).min(MAX_GRACE);
                self.pending.push(Pending::Grace {
                    key: key.clone(),
                    uid: uid.clone(),
                    at: Instant::now() + wait,
                });
            }
            if drain {
                if policy == Propagation::Foreground {
                    let mut f: Vec<Value> = o["metadata"]["finalizers"]
                        .as_array()
                        .cloned()
                        .unwrap_or_default();
                    if !f.contains(&json!("foregroundDeletion")) {
                        f.push(json!("foregroundDeletion"));
                    }
                    o["metadata"]["finalizers"] = json!(f);
                }
                if r.kind == "Namespace" {
                    o["status"]["phase"] = json!("Terminating");
                }
                self.pending.push(Pending::Drain {
                    key: key.clone(),
                    uid: uid.clone(),
                });
            }
            self.rv += 1;
            o["metadata"]["resourceVersion"] = json!(self.rv.to_string());
            self.objects.insert(key.clone(), o.clone());
            self.record(EventType::Modified, key, &o, Some(obj));
            if drain {
                if r.kind == "Namespace" {
                    let inside: Vec<Key> = self
                        .objects
                        .keys()
                        .filter(|k| k.2 == key.3 && !k.2.is_empty())
                        .cloned()
                        .collect();
                    for k in inside {
                        self.delete_key(&k, Propagation::Background);
                    }
                } else {
                    for k in self.dependents(&uid) {
                        self.delete_key(&k, Propagation::Foreground);
                    }
                }
            }
            self.run_due();
            return Ok(self.objects.get(key).cloned().unwrap_or(o));
        }
        let gone = self.remove(key, policy).unwrap_or(obj);
        Ok(details_fix(deleted_answer(&gone)))
    }

    /// Deletes an object by key with default options (garbage collection, namespaces).
    fn delete_key(&mut self, key: &Key, policy: Propagation) {
        let Some(r) = registry::RESOURCES
            .iter()
            .find(|r| r.group == key.0 && r.plural == key.1)
        else {
            return;
        };
        let opts = DeleteOpts {
            propagation: Some(policy),
            ..DeleteOpts::default()
        };
        let _ = self.delete(r, key, &opts);
    }

    /// The keys of the objects with an ownerReference to `uid`.
    pub(crate) fn dependents(&self, uid: &str) -> Vec<Key> {
        self.objects
            .iter()
            .filter(|(_, o)| {
                o["metadata"]["ownerReferences"]
                    .as_array()
                    .is_some_and(|refs| refs.iter().any(|r| r["uid"] == uid))
            })
            .map(|(k, _)| k.clone())
            .collect()
    }

    /// Removes an object now (DELETED event) and handles its dependents.
    pub(crate) fn remove(&mut self, key: &Key, policy: Propagation) -> Option<Value> {
        let mut obj = self.objects.remove(key)?;
        self.managed.remove(key);
        self.pending.retain(|p| match p {
            Pending::Grace { key: k, .. } | Pending::Drain { key: k, .. } => k != key,
        });
        self.rv += 1;
        obj["metadata"]["resourceVersion"] = json!(self.rv.to_string());
        self.record(EventType::Deleted, key, &obj, None);
        if key.0.is_empty() && key.1 == "pods" {
            self.logs
                .retain(|(ns, pod, _), _| !(*ns == key.2 && *pod == key.3));
        }
        let uid = obj["metadata"]["uid"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        for dep in self.dependents(&uid) {
            match policy {
                Propagation::Orphan => {
                    if let Some(d) = self.objects.get(&dep).cloned() {
                        let mut n = d.clone();
                        if let Some(refs) = n["metadata"]["ownerReferences"].as_array_mut() {
                            refs.retain(|r| r["uid"] != uid.as_str());
                        }
                        if n["metadata"]["ownerReferences"]
                            .as_array()
                            .is_some_and(Vec::is_empty)
                        {
                            n["metadata"]
                                .as_object_mut()
                                .map(|m| m.remove("ownerReferences"));
                        }
                        self.raw_replace(&dep, n);
                    }
                }
                _ => self.delete_key(&dep, Propagation::Background),
            }
        }
        Some(obj)
    }

    /// Replaces an object without any checks (garbage collector, controllers' bookkeeping).
    fn raw_replace(&mut self, key: &Key, mut obj: Value) {
        let old = self.objects.get(key).cloned();
        self.rv += 1;
        obj["metadata"]["resourceVersion"] = json!(self.rv.to_string());
        self.objects.insert(key.clone(), obj.clone());
        self.record(EventType::Modified, key, &obj, old);
    }

    /// Does the deferred work that is due: graceful deletions whose time has come, drains
    /// whose dependents are gone. Returns when the next graceful deletion is due.
    pub(crate) fn run_due(&mut self) -> Option<Instant> {
        let now = Instant::now();
        loop {
            let due = self.pending.iter().position(|p| match p {
                Pending::Grace { at, .. } => *at <= now,
                Pending::Drain { key, uid } => {
                    if key.1 == "namespaces" && key.0.is_empty() {
                        !self.objects.keys().any(|k| k.2 == key.3 && !k.2.is_empty())
                    } else {
                        self.dependents(uid).is_empty()
                    }
                }
            });
            let Some(i) = due else { break };
            let p = self.pending.remove(i);
            match p {
                Pending::Grace { key, uid, .. } => {
                    if self
                        .objects
                        .get(&key)
                        .is_some_and(|o| o["metadata"]["uid"] == uid.as_str())
                    {
                        let finalizers = self.objects[&key]["metadata"]["finalizers"]
                            .as_array()
                            .is_some_and(|f| !f.is_empty());
                        if !finalizers {
                            self.remove(&key, Propagation::Background);
                        }
                    }
                }
                Pending::Drain { key, uid } => {
                    if let Some(o) = self.objects.get(&key).cloned() {
                        if o["metadata"]["uid"] == uid.as_str() {
                            let mut n = o.clone();
                            if let Some(f) = n["metadata"]["finalizers"].as_array_mut() {
                                f.retain(|f| f != "foregroundDeletion" && f != "kubernetes");
                            }
                            if n["metadata"]["finalizers"]
                                .as_array()
                                .is_some_and(Vec::is_empty)
                            {
                                n["metadata"]
                                    .as_object_mut()
                                    .map(|m| m.remove("finalizers"));
                            }
                            if key.1 == "namespaces" {
                                if let Some(f) = n["spec"]["finalizers"].as_array_mut() {
                                    f.clear();
                                }
                            }
                            self.raw_replace(&key, n);
                            self.maybe_finalize(&key);
                        }
                    }
                }
            }
        }
        self.pending
            .iter()
            .filter_map(|p| match p {
                Pending::Grace { at, .. } => Some(*at),
                Pending::Drain { .. } => None,
            })
            .min()
    }
}
