//! The object store: objects by (group, plural, namespace, name), a global resourceVersion
//! counter (as etcd's), the event history that watches replay, field ownership, and the
//! write paths every request goes through (create, update; deletion is in
//! `store/deletion.rs`).

use std::collections::{BTreeMap, HashMap, VecDeque};

use serde_json::{json, Map, Value};
use tokio::sync::watch;

use super::registry::{self, Resource, Sub};
use super::ssa::{self, Entry};
use super::status::{self, ApiResult};
use super::{defaults, Seen, Sim};

mod deletion;

use deletion::Pending;
pub(crate) use deletion::{DeleteOpts, Propagation};

/// (group, plural, namespace or "", name).
pub(crate) type Key = (String, String, String, String);

/// How many events the history keeps; a watch from an older resourceVersion gets 410.
const HISTORY: usize = 10_000;
/// The key of an object of `r`.
pub(crate) fn key(r: &Resource, ns: Option<&str>, name: &str) -> Key {
    (
        r.group.to_string(),
        r.plural.to_string(),
        if r.namespaced {
            ns.unwrap_or_default().to_string()
        } else {
            String::new()
        },
        name.to_string(),
    )
}

/// Now, RFC 3339 with second precision, as `metav1.Time` serialises.
pub(crate) fn now() -> String {
    jiff::Timestamp::now()
        .strftime("%Y-%m-%dT%H:%M:%SZ")
        .to_string()
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum EventType {
    Added,
    Modified,
    Deleted,
}

impl EventType {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            EventType::Added => "ADDED",
            EventType::Modified => "MODIFIED",
            EventType::Deleted => "DELETED",
        }
    }
}

/// One change, as watches replay it.
#[derive(Clone, Debug)]
pub(crate) struct Event {
    pub rv: u64,
    pub kind: EventType,
    pub key: Key,
    pub obj: Value,
    /// The object before a MODIFIED event (a watch with selectors turns an object leaving
    /// the selection into DELETED and one entering it into ADDED).
    pub prev: Option<Value>,
}

/// Who writes, and how.
#[derive(Clone, Debug)]
pub(crate) struct WriteCtx {
    pub manager: String,
    pub subresource: String,
    pub dry_run: bool,
}

impl WriteCtx {
    pub(crate) fn new(manager: &str) -> WriteCtx {
        WriteCtx {
            manager: manager.to_string(),
            subresource: String::new(),
            dry_run: false,
        }
    }
}

/// A log of one container.
#[derive(Clone, Debug, Default)]
pub(crate) struct LogText {
    /// Chunks of text, each with when it was written.
    pub chunks: Vec<(jiff::Timestamp, String)>,
    pub previous: Option<String>,
}

impl LogText {
    pub(crate) fn text(&self) -> String {
        self.chunks.iter().map(|(_, t)| t.as_str()).collect()
    }
}

/// A `deny` rule.
#[derive(Clone, Debug)]
pub(crate) struct Deny {
    pub verb: String,
    pub resource: String,
    pub ns: Option<String>,
}

/// A `fail_next` rule.
#[derive(Clone, Debug)]
pub(crate) struct Failure {
    pub method: String,
    pub prefix: String,
    pub code: u16,
    pub reason: String,
}

pub(crate) struct Store {
    objects: BTreeMap<Key, Value>,
    managed: HashMap<Key, Vec<Entry>>,
    rv: u64,
    seq: u64,
    history: VecDeque<Event>,
    /// The highest resourceVersion dropped from the history.
    dropped_upto: u64,
    pending: Vec<Pending>,
    changed: watch::Sender<u64>,
    pub logs: HashMap<(String, String, String), LogText>,
    pub denies: Vec<Deny>,
    pub failures: Vec<Failure>,
    pub requests: Vec<Seen>,
    pub sims: Vec<Sim>,
}

impl Store {
    /// A store with the namespaces `default`, `kube-system`, `kube-public` and
    /// `kube-node-lease` and one Ready node, `fake-node`.
    pub(crate) fn new(changed: watch::Sender<u64>) -> Store {
        let mut s = Store {
            objects: BTreeMap::new(),
            managed: HashMap::new(),
            rv: 100,
            seq: 0,
            history: VecDeque::new(),
            dropped_upto: 0,
            pending: Vec::new(),
            changed,
            logs: HashMap::new(),
            denies: Vec::new(),
            failures: Vec::new(),
            requests: Vec::new(),
            sims: Vec::new(),
        };
        for ns in ["default", "kube-system", "kube-public", "kube-node-lease"] {
            s.put(json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns, "labels": {"kubernetes.io/metadata.name": ns}}, "spec": {"finalizers": ["kubernetes"]}, "status": {"phase": "Active"}}));
        }
        s.put(json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": "fake-node", "labels": {"kubernetes.io/hostname": "fake-node", "kubernetes.io/os": "linux"}},
            "spec": {}, "status": {"conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady", "message": "kubelet is posting ready status"}],
            "addresses": [{"type": "InternalIP", "address": "10.0.0.10"}, {"type": "Hostname", "address": "fake-node"}],
            "capacity": {"cpu": "4", "memory": "8Gi", "pods": "110"}, "allocatable": {"cpu": "4", "memory": "8Gi", "pods": "110"},
            "nodeInfo": {"architecture": "amd64", "bootID": "00000000-0000-4000-8000-000000000001", "containerRuntimeVersion": "containerd://1.7.0",
                "kernelVersion": "6.1.0", "kubeProxyVersion": super::GIT_VERSION, "kubeletVersion": super::GIT_VERSION,
                "machineID": "fakenode", "operatingSystem": "linux", "osImage": "Debian GNU/Linux 12 (bookworm)",
                "systemUUID": "00000000-0000-4000-8000-000000000002"}}}));
        s
    }

    /// The current resourceVersion.
    pub(crate) fn rv(&self) -> u64 {
        self.rv
    }

    /// A counter for names and addresses.
    pub(crate) fn next_seq(&mut self) -> u64 {
        self.seq += 1;
        self.seq
    }

    fn next_uid(&mut self) -> String {
        let n = self.next_seq();
        let h = registry::fnv32(&n.to_le_bytes());
        format!("{h:08x}-0000-4000-8000-{n:012x}")
    }

    /// Five characters from the alphabet of generated names.
    pub(crate) fn random_suffix(&mut self, len: usize) -> String {
        const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
        let n = self.next_seq();
        let mut h = registry::fnv32(format!("suffix-{n}").as_bytes());
        (0..len)
            .map(|_| {
                let c = ALPHABET[(h % 27) as usize] as char;
                h = h / 27 + 0x2545_f491;
                c
            })
            .collect()
    }

    pub(crate) fn get(&self, key: &Key) -> Option<&Value> {
        self.objects.get(key)
    }

    /// The objects of a resource, in one namespace or all, in key order.
    pub(crate) fn list<'a>(
        &'a self,
        r: &'a Resource,
        ns: Option<&'a str>,
    ) -> impl Iterator<Item = (&'a Key, &'a Value)> + 'a {
        self.objects.iter().filter(move |(k, _)| {
            k.0 == r.group && k.1 == r.plural && ns.is_none_or(|ns| k.2 == ns)
        })
    }

    /// The history from just after `rv`; `Err(oldest)` when events after `rv` were dropped.
    pub(crate) fn events_after(&self, rv: u64) -> Result<Vec<Event>, u64> {
        if rv < self.dropped_upto {
            return Err(self.history.front().map_or(self.rv, |e| e.rv));
        }
        Ok(self.history.iter().filter(|e| e.rv > rv).cloned().collect())
    }

    /// Notifies watches, followed logs and controllers of a change.
    pub(crate) fn notify(&self) {
        self.changed.send_replace(self.rv);
    }

    fn record(&mut self, kind: EventType, key: &Key, obj: &Value, prev: Option<Value>) {
        self.history.push_back(Event {
            rv: self.rv,
            kind,
            key: key.clone(),
            obj: obj.clone(),
            prev,
        });
        if self.history.len() > HISTORY {
            if let Some(e) = self.history.pop_front() {
                self.dropped_upto = e.rv;
            }
        }
        self.notify();
    }

    fn render_managed(&self, key: &Key, obj: &mut Value) {
        match self.managed.get(key) {
            Some(m) if !m.is_empty() => obj["metadata"]["managedFields"] = ssa::render(m),
            _ => {
                if let Some(md) = obj["metadata"].as_object_mut() {
                    md.remove("managedFields");
                }
            }
        }
    }

    /// Seeds or replaces an object as it is (status kept), filling uid, resourceVersion,
    /// generation and creationTimestamp; emits ADDED or MODIFIED. Panics on an unknown kind.
    pub(crate) fn put(&mut self, mut obj: Value) -> Value {
        let r = registry::of_object(&obj).unwrap_or_else(|| {
            panic!(
                "FakeKube::put: apiVersion {} kind {} is not served by the fake",
                obj["apiVersion"], obj["kind"]
            )
        });
        let name = obj["metadata"]["name"]
            .as_str()
            .unwrap_or_else(|| panic!("FakeKube::put: metadata.name is missing in {obj}"))
            .to_string();
        let ns = obj["metadata"]["namespace"].as_str().map(str::to_string);
        let ns = if r.namespaced {
            Some(ns.unwrap_or_else(|| "default".into()))
        } else {
            None
        };
        let key = key(r, ns.as_deref(), &name);
        let old = self.objects.get(&key).cloned();
        if let Some(ns) = &ns {
            obj["metadata"]["namespace"] = json!(ns);
        }
        match &old {
            Some(o) => {
                for f in ["uid", "creationTimestamp"] {
                    if obj["metadata"][f].is_null() {
                        obj["metadata"][f] = o["metadata"][f].clone();
                    }
                }
            }
            None => {
                if obj["metadata"]["uid"].is_null() {
                    obj["metadata"]["uid"] = json!(self.next_uid());
                }
                if obj["metadata"]["creationTimestamp"].is_null() {
                    obj["metadata"]["creationTimestamp"] = json!(now());
                }
                if r.kind == "Job" {
                    let uid = obj["metadata"]["uid"]
                        .as_str()
                        .unwrap_or_default()
                        .to_string();
                    let seq = self.next_seq();
                    let status = obj.get("status").cloned();
                    defaults::on_create(r, &mut obj, &uid, seq);
                    match status {
                        Some(s) => obj["status"] = s,
                        None => {
                            if let Some(m) = obj.as_object_mut() {
                                m.remove("status");
                            }
                        }
                    }
                }
            }
        }
        if obj["metadata"]["generation"].is_null() && r.tracks_generation() {
            let gen = match &old {
                Some(o) => {
                    let g = o["metadata"]["generation"].as_i64().unwrap_or(1);
                    if spec_part(o) != spec_part(&obj) {
                        g + 1
                    } else {
                        g
                    }
                }
                None => 1,
            };
            obj["metadata"]["generation"] = json!(gen);
        }
        defaults::apply(r, &mut obj);
        self.rv += 1;
        obj["metadata"]["resourceVersion"] = json!(self.rv.to_string());
        self.render_managed(&key, &mut obj);
        reorder_metadata(&mut obj);
        self.objects.insert(key.clone(), obj.clone());
        let kind = if old.is_some() {
            EventType::Modified
        } else {
            EventType::Added
        };
        self.record(kind, &key, &obj, old);
        obj
    }

    /// Creates an object (POST, apply of a missing object, controllers). `managed` replaces
    /// the field ownership that a plain create records (used by apply).
    pub(crate) fn create(
        &mut self,
        r: &Resource,
        ns: Option<&str>,
        mut obj: Value,
        ctx: &WriteCtx,
        managed: Option<Vec<Entry>>,
    ) -> ApiResult<Value> {
        if !obj.is_object() {
            return Err(status::bad_request(
                "the body of the request must be a JSON object",
            ));
        }
        if !obj["metadata"].is_object() {
            obj["metadata"] = json!({});
        }
        let md_ns = obj["metadata"]["namespace"].as_str().map(str::to_string);
        if r.namespaced {
            if let (Some(body_ns), Some(ns)) = (&md_ns, ns) {
                if body_ns != ns && !body_ns.is_empty() {
                    return Err(status::bad_request(
                        "the namespace of the provided object does not match the namespace sent on the request",
                    ));
                }
            }
            obj["metadata"]["namespace"] = json!(ns.unwrap_or("default"));
        } else if let Some(md) = obj["metadata"].as_object_mut() {
            md.remove("namespace");
        }
        let mut name = obj["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        if name.is_empty() {
            if let Some(prefix) = obj["metadata"]["generateName"].as_str() {
                let prefix = prefix.to_string();
                name = format!("{prefix}{}", self.random_suffix(5));
                obj["metadata"]["name"] = json!(name);
            }
        }
        obj["apiVersion"] = json!(r.api_version());
        obj["kind"] = json!(r.kind);
        let key = key(r, ns, &name);
        if !name.is_empty() && self.objects.contains_key(&key) {
            return Err(status::already_exists(r, &name));
        }
        let uid = self.next_uid();
        let seq = self.next_seq();
        {
            let md = obj["metadata"].as_object_mut().expect("metadata is a map");
            for f in [
                "deletionTimestamp",
                "deletionGracePeriodSeconds",
                "resourceVersion",
                "managedFields",
                "selfLink",
            ] {
                md.remove(f);
            }
            md.insert("uid".into(), json!(uid));
            md.remove("generation");
            if r.tracks_generation() {
                md.insert("generation".into(), json!(1));
            }
            md.insert("creationTimestamp".into(), json!(now()));
        }
        defaults::on_create(r, &mut obj, &uid, seq);
        defaults::apply(r, &mut obj);
        defaults::validate(r, &obj)?;
        let mut managed = managed.unwrap_or_default();
        if managed.is_empty() {
            ssa::record_update(
                None,
                &obj,
                &mut managed,
                &ctx.manager,
                "",
                &r.api_version(),
                &now(),
            );
        }
        let managed_json = ssa::render(&managed);
        if managed.is_empty() {
            obj["metadata"]
                .as_object_mut()
                .map(|m| m.remove("managedFields"));
        } else {
            obj["metadata"]["managedFields"] = managed_json;
        }
        reorder_metadata(&mut obj);
        if ctx.dry_run {
            return Ok(obj);
        }
        self.rv += 1;
        obj["metadata"]["resourceVersion"] = json!(self.rv.to_string());
        reorder_metadata(&mut obj);
        self.managed.insert(key.clone(), managed);
        self.objects.insert(key.clone(), obj.clone());
        self.record(EventType::Added, &key, &obj, None);
        Ok(obj)
    }

    /// The field ownership of an object (for apply).
    pub(crate) fn managed_of(&self, key: &Key) -> Vec<Entry> {
        self.managed.get(key).cloned().unwrap_or_default()
    }

    /// Replaces an existing object with `new` (PATCH, PUT, apply, status and scale writes,
    /// controllers). The server-owned metadata is kept; `.status` is kept for a main-resource
    /// write and is the only thing taken for a `status` write; the generation goes up when
    /// anything outside metadata and status changes. A write that changes nothing keeps the
    /// resourceVersion and emits no event.
    pub(crate) fn update(
        &mut self,
        r: &Resource,
        key: &Key,
        new: Value,
        ctx: &WriteCtx,
        managed: Option<Vec<Entry>>,
    ) -> ApiResult<Value> {
        let Some(old) = self.objects.get(key).cloned() else {
            return Err(status::not_found(r, &key.3));
        };
        if !new.is_object() {
            return Err(status::bad_request(
                "the body of the request must be a JSON object",
            ));
        }
        if let Some(rv) = new["metadata"]["resourceVersion"].as_str() {
            if !rv.is_empty() && Some(rv) != old["metadata"]["resourceVersion"].as_str() {
                return Err(status::conflict(r, &key.3));
            }
        }
        if let Some(uid) = new["metadata"]["uid"].as_str() {
            if !uid.is_empty() && Some(uid) != old["metadata"]["uid"].as_str() {
                return Err(status::conflict_msg(
                    r,
                    &key.3,
                    &format!(
                        "Precondition failed: UID in precondition: {uid}, UID in object meta: {}",
                        old["metadata"]["uid"].as_str().unwrap_or_default()
                    ),
                ));
            }
        }
        let mut obj = if ctx.subresource == "status" {
            let mut o = old.clone();
            o["status"] = new.get("status").cloned().unwrap_or(json!({}));
            o
        } else {
            let mut o = new;
            if !o["metadata"].is_object() {
                o["metadata"] = json!({});
            }
            if r.has(Sub::Status) {
                match old.get("status") {
                    Some(s) => o["status"] = s.clone(),
                    None => {
                        o.as_object_mut().map(|m| m.remove("status"));
                    }
                }
            }
            o
        };
        obj["apiVersion"] = json!(r.api_version());
        obj["kind"] = json!(r.kind);
        for f in [
            "name",
            "namespace",
            "uid",
            "creationTimestamp",
            "deletionTimestamp",
            "deletionGracePeriodSeconds",
            "generation",
        ] {
            match old["metadata"].get(f) {
                Some(v) => obj["metadata"][f] = v.clone(),
                None => {
                    obj["metadata"].as_object_mut().map(|m| m.remove(f));
                }
            }
        }
        defaults::apply(r, &mut obj);
        if r.tracks_generation() && spec_part(&old) != spec_part(&obj) {
            let gen = old["metadata"]["generation"].as_i64().unwrap_or(1) + 1;
            obj["metadata"]["generation"] = json!(gen);
        }
        if ctx.subresource.is_empty() {
            defaults::validate(r, &obj)?;
        }
        let mut managed = match managed {
            Some(m) => m,
            None => {
                let mut m = self.managed_of(key);
                ssa::record_update(
                    Some(&old),
                    &obj,
                    &mut m,
                    &ctx.manager,
                    &ctx.subresource,
                    &r.api_version(),
                    &now(),
                );
                m
            }
        };
        managed.retain(|e| !e.fields.is_empty());
        obj["metadata"]["resourceVersion"] = old["metadata"]["resourceVersion"].clone();
        if managed.is_empty() {
            obj["metadata"]
                .as_object_mut()
                .map(|m| m.remove("managedFields"));
        } else {
            obj["metadata"]["managedFields"] = ssa::render(&managed);
        }
        reorder_metadata(&mut obj);
        if without_volatile(&obj) == without_volatile(&old) {
            if !ctx.dry_run {
                self.managed.insert(key.clone(), managed);
            }
            return Ok(old);
        }
        if ctx.dry_run {
            return Ok(obj);
        }
        self.rv += 1;
        obj["metadata"]["resourceVersion"] = json!(self.rv.to_string());
        self.managed.insert(key.clone(), managed);
        self.objects.insert(key.clone(), obj.clone());
        self.record(EventType::Modified, key, &obj, Some(old));
        self.maybe_finalize(key);
        Ok(self.objects.get(key).cloned().unwrap_or(obj))
    }
}

/// The part of an object whose change bumps `metadata.generation`.
fn spec_part(obj: &Value) -> Value {
    let mut o = obj.clone();
    if let Some(m) = o.as_object_mut() {
        for f in ["metadata", "status", "apiVersion", "kind"] {
            m.remove(f);
        }
    }
    super::patch::without_nulls(&o)
}

/// An object without the fields every write changes (to detect no-op writes).
fn without_volatile(obj: &Value) -> Value {
    let mut o = obj.clone();
    if let Some(md) = o["metadata"].as_object_mut() {
        md.remove("resourceVersion");
        if let Some(Value::Array(entries)) = md.get_mut("managedFields") {
            for e in entries {
                if let Some(e) = e.as_object_mut() {
                    e.remove("time");
                }
            }
        }
    }
    o
}

/// Puts `apiVersion`, `kind`, `metadata` first and `status` last, and orders the well-known metadata fields as
/// a real server prints them (name, generateName, namespace, uid, resourceVersion, ...).
pub(crate) fn reorder_metadata(obj: &mut Value) {
    const ORDER: &[&str] = &[
        "name",
        "generateName",
        "namespace",
        "uid",
        "resourceVersion",
        "generation",
        "creationTimestamp",
        "deletionTimestamp",
        "deletionGracePeriodSeconds",
        "labels",
        "annotations",
        "ownerReferences",
        "finalizers",
        "managedFields",
    ];
    let Value::Object(m) = obj else { return };
    let mut out = Map::new();
    for f in ["apiVersion", "kind", "metadata"] {
        if let Some(v) = m.remove(f) {
            out.insert(f.to_string(), v);
        }
    }
    let status = m.remove("status");
    out.append(m);
    if let Some(s) = status {
        out.insert("status".into(), s);
    }
    if let Some(Value::Object(md)) = out.get_mut("metadata") {
        let mut ordered = Map::new();
        for f in ORDER {
            if let Some(v) = md.remove(*f) {
                ordered.insert(f.to_string(), v);
            }
        }
        ordered.append(md);
        *md = ordered;
    }
    *m = out;
}
