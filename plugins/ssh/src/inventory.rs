//! Ansible inventories, YAML and INI.

use std::path::Path;

use indexmap::{IndexMap, IndexSet};
use serde_json::{Map, Value};

/// A problem reading an inventory.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct InventoryError(pub String);

fn err<T>(msg: impl Into<String>) -> Result<T, InventoryError> {
    Err(InventoryError(msg.into()))
}

/// A group: its own hosts, its child groups and its vars.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Group {
    /// Hosts listed in the group itself.
    pub hosts: IndexSet<String>,
    /// Child groups (their hosts belong to this group too).
    pub children: IndexSet<String>,
    /// Vars for every host of the group.
    pub vars: Map<String, Value>,
}

/// A host as a connection needs it, with its vars merged.
#[derive(Debug, Clone, PartialEq)]
pub struct Host {
    /// The inventory name.
    pub name: String,
    /// Where to connect: `ansible_host`, else the name.
    pub address: String,
    /// `ansible_port`.
    pub port: Option<u16>,
    /// `ansible_user`.
    pub user: Option<String>,
    /// `ansible_ssh_private_key_file`.
    pub identity_file: Option<String>,
    /// Every var: `all`'s, then its groups' (parents before children), then the host's own.
    pub vars: Map<String, Value>,
}

/// An inventory: groups and the vars of each host.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Inventory {
    /// Hosts in the order they first appear, with their own vars.
    pub hosts: IndexMap<String, Map<String, Value>>,
    /// Groups by name; `all` and `ungrouped` always exist.
    pub groups: IndexMap<String, Group>,
}

impl Inventory {
    fn empty() -> Self {
        let mut inv = Inventory::default();
        inv.groups.insert("all".into(), Group::default());
        inv.groups.insert("ungrouped".into(), Group::default());
        inv
    }

    /// Reads an inventory file: YAML (`.yaml`, `.yml`, `.json`) or INI (anything else).
    pub fn load(path: &Path) -> Result<Self, InventoryError> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            InventoryError(format!("cannot read inventory {}: {e}", path.display()))
        })?;
        let yaml = matches!(
            path.extension().and_then(|e| e.to_str()),
            Some("yaml" | "yml" | "json")
        );
        let inv = if yaml {
            Self::from_yaml_text(&text)
        } else {
            Self::from_ini(&text)
        };
        inv.map_err(|e| InventoryError(format!("inventory {}: {}", path.display(), e.0)))
    }

    /// Reads Ansible's YAML layout from text.
    pub fn from_yaml_text(text: &str) -> Result<Self, InventoryError> {
        let v = opsbook_engine::yaml::parse_value(text).map_err(InventoryError)?;
        Self::from_yaml(&v)
    }

    /// Reads Ansible's YAML layout: top-level groups (usually `all`), each with `hosts`, `vars` and
    /// `children`.
    pub fn from_yaml(v: &Value) -> Result<Self, InventoryError> {
        let mut inv = Self::empty();
        let Some(top) = v.as_object() else {
            return if v.is_null() {
                Ok(inv)
            } else {
                err("an inventory is a mapping of groups")
            };
        };
        for (name, body) in top {
            inv.yaml_group(name, body, 0)?;
            if name != "all" {
                inv.link("all", name);
            }
        }
        inv.finish();
        Ok(inv)
    }

    fn yaml_group(&mut self, name: &str, body: &Value, depth: usize) -> Result<(), InventoryError> {
        if depth > 32 {
            return err(format!("groups nest deeper than 32 levels at `{name}`"));
        }
        self.groups.entry(name.to_string()).or_default();
        let body = match body {
            Value::Null => return Ok(()),
            Value::Object(m) => m,
            _ => {
                return err(format!(
                    "group `{name}` must be a mapping with `hosts`, `vars` or `children`"
                ))
            }
        };
        for (key, value) in body {
            match key.as_str() {
                "hosts" => match value {
                    Value::Null => {}
                    Value::Object(hosts) => {
                        for (pattern, vars) in hosts {
                            let vars = match vars {
                                Value::Null => Map::new(),
                                Value::Object(m) => m.clone(),
                                _ => return err(format!("host `{pattern}` in group `{name}`: its vars must be a mapping")),
                            };
                            for host in expand_range(pattern)? {
                                self.add_host(&host, &vars);
                                if let Some(g) = self.groups.get_mut(name) {
                                    g.hosts.insert(host);
                                }
                            }
                        }
                    }
                    _ => {
                        return err(format!(
                            "`hosts` of group `{name}` must be a mapping of host names"
                        ))
                    }
                },
                "vars" => match value {
                    Value::Null => {}
                    Value::Object(m) => {
                        if let Some(g) = self.groups.get_mut(name) {
                            g.vars.extend(m.clone());
                        }
                    }
                    _ => return err(format!("`vars` of group `{name}` must be a mapping")),
                },
                "children" => match value {
                    Value::Null => {}
                    Value::Object(children) => {
                        for (child, child_body) in children {
                            self.yaml_group(child, child_body, depth + 1)?;
                            self.link(name, child);
                        }
                    }
                    _ => {
                        return err(format!(
                            "`children` of group `{name}` must be a mapping of groups"
                        ))
                    }
                },
                other => {
                    let help =
                        opsbook_engine::suggest::did_you_mean(other, ["hosts", "vars", "children"])
                            .map(|d| format!(" ({d})"))
                            .unwrap_or_default();
                    return err(format!("group `{name}` has an unknown key `{other}`{help}"));
                }
            }
        }
        Ok(())
    }

    /// Reads Ansible's INI format: `[group]` host lines with `key=value` vars, `[group:vars]`,
    /// `[group:children]`; hosts before any section are `ungrouped`.
    pub fn from_ini(text: &str) -> Result<Self, InventoryError> {
        let mut inv = Self::empty();
        enum Section {
            Hosts(String),
            Vars(String),
            Children(String),
        }
        let mut section = Section::Hosts("ungrouped".into());
        for (n, raw) in text.lines().enumerate() {
            let line = raw.trim();
            if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
                continue;
            }
            let at = |msg: String| InventoryError(format!("line {}: {msg}", n + 1));
            if let Some(head) = line.strip_prefix('[') {
                let head = head
                    .strip_suffix(']')
                    .ok_or_else(|| at(format!("`{line}` is missing its `]`")))?
                    .trim();
                section = match head.split_once(':') {
                    Some((g, "vars")) => Section::Vars(g.to_string()),
                    Some((g, "children")) => Section::Children(g.to_string()),
                    Some((_, kind)) => {
                        return Err(at(format!(
                            "unknown section kind `:{kind}` (use `:vars` or `:children`)"
                        )))
                    }
                    None => Section::Hosts(head.to_string()),
                };
                let name = match &section {
                    Section::Hosts(g) | Section::Vars(g) | Section::Children(g) => g.clone(),
                };
                if name.is_empty() {
                    return Err(at("a section needs a group name".into()));
                }
                inv.groups.entry(name).or_default();
                continue;
            }
            match &section {
                Section::Hosts(group) => {
                    let mut words = split_words(line).map_err(&at)?.into_iter();
                    let Some(pattern) = words.next() else {
                        continue;
                    };
                    let mut vars = Map::new();
                    for w in words {
                        let (k, v) = w
                            .split_once('=')
                            .ok_or_else(|| at(format!("`{w}` is not key=value")))?;
                        vars.insert(k.to_string(), ini_value(v));
                    }
                    for host in expand_range(&pattern).map_err(|e| at(e.0))? {
                        inv.add_host(&host, &vars);
                        if let Some(g) = inv.groups.get_mut(group) {
                            g.hosts.insert(host);
                        }
                    }
                }
                Section::Vars(group) => {
                    let (k, v) = line
                        .split_once('=')
                        .ok_or_else(|| at(format!("`{line}` is not key=value")))?;
                    let value = ini_value(v.trim());
                    if let Some(g) = inv.groups.get_mut(group) {
                        g.vars.insert(k.trim().to_string(), value);
                    }
                }
                Section::Children(group) => {
                    let child = line.to_string();
                    inv.groups.entry(child.clone()).or_default();
                    let parent = group.clone();
                    inv.link(&parent, &child);
                }
            }
        }
        let names: Vec<String> = inv.groups.keys().filter(|g| *g != "all").cloned().collect();
        for g in names {
            inv.link("all", &g);
        }
        inv.finish();
        Ok(inv)
    }

    fn add_host(&mut self, name: &str, vars: &Map<String, Value>) {
        self.hosts
            .entry(name.to_string())
            .or_default()
            .extend(vars.clone());
    }

    fn link(&mut self, parent: &str, child: &str) {
        if parent != child {
            self.groups
                .entry(parent.to_string())
                .or_default()
                .children
                .insert(child.to_string());
        }
    }

    /// Hosts in no group but `all` belong to `ungrouped`.
    fn finish(&mut self) {
        let grouped: std::collections::HashSet<String> = self
            .groups
            .iter()
            .filter(|(name, _)| *name != "all" && *name != "ungrouped")
            .flat_map(|(_, g)| g.hosts.iter().cloned())
            .collect();
        let loose: Vec<String> = self
            .hosts
            .keys()
            .filter(|h| !grouped.contains(*h))
            .cloned()
            .collect();
        if let Some(u) = self.groups.get_mut("ungrouped") {
            u.hosts.extend(loose);
        }
    }

    /// Every host of a group, its children's included, in inventory order.
    pub fn group_hosts(&self, group: &str) -> IndexSet<String> {
        let mut found = std::collections::HashSet::new();
        let mut stack = vec![group.to_string()];
        let mut seen = std::collections::HashSet::new();
        while let Some(g) = stack.pop() {
            if !seen.insert(g.clone()) {
                continue;
            }
            if let Some(grp) = self.groups.get(&g) {
                found.extend(grp.hosts.iter().cloned());
                stack.extend(grp.children.iter().cloned());
            }
        }
        if group == "all" {
            found.extend(self.hosts.keys().cloned());
        }
        self.hosts
            .keys()
            .filter(|h| found.contains(*h))
            .cloned()
            .collect()
    }

    /// The groups a host belongs to, parents before children (`all` first).
    fn groups_of(&self, host: &str) -> Vec<String> {
        let mut depth: IndexMap<String, usize> = IndexMap::new();
        fn walk(
            inv: &Inventory,
            g: &str,
            d: usize,
            depth: &mut IndexMap<String, usize>,
            path: &mut Vec<String>,
        ) {
            if path.iter().any(|p| p == g) || path.len() > 64 {
                return;
            }
            let e = depth.entry(g.to_string()).or_insert(d);
            *e = (*e).max(d);
            if let Some(grp) = inv.groups.get(g) {
                path.push(g.to_string());
                for c in &grp.children {
                    walk(inv, c, d + 1, depth, path);
                }
                path.pop();
            }
        }
        walk(self, "all", 0, &mut depth, &mut Vec::new());
        let mut groups: Vec<(usize, String)> = depth
            .into_iter()
            .filter(|(g, _)| g == "all" || self.group_hosts(g).contains(host))
            .map(|(g, d)| (d, g))
            .collect();
        groups.sort();
        groups.into_iter().map(|(_, g)| g).collect()
    }

    /// A host with its vars merged and its connection settings read.
    pub fn host(&self, name: &str) -> Option<Host> {
        let own = self.hosts.get(name)?;
        let mut vars = Map::new();
        for g in self.groups_of(name) {
            if let Some(grp) = self.groups.get(&g) {
                vars.extend(grp.vars.clone());
            }
        }
        vars.extend(own.clone());
        let text = |k: &str| {
            vars.get(k).map(|v| {
                v.as_str()
                    .map(str::to_string)
                    .unwrap_or_else(|| v.to_string())
            })
        };
        let port = vars
            .get("ansible_port")
            .and_then(|v| v.as_u64().or_else(|| v.as_str()?.parse().ok()))
            .and_then(|p| u16::try_from(p).ok());
        Some(Host {
            name: name.to_string(),
            address: text("ansible_host").unwrap_or_else(|| name.to_string()),
            port,
            user: text("ansible_user"),
            identity_file: text("ansible_ssh_private_key_file"),
            vars,
        })
    }

    /// The hosts a pattern selects (`web`, `web:&prod`, `all:!db`, `web*`, `10.0.0.5`), in
    /// inventory order. A term that names no host or group but looks like an address is an ad-hoc
    /// host; any other unknown term is an error with a suggestion.
    pub fn select(&self, pattern: &str) -> Result<Vec<Host>, InventoryError> {
        crate::pattern::select(self, pattern)
    }
}

/// Splits an INI host line into words, keeping quoted values together.
pub(crate) fn split_words(line: &str) -> Result<Vec<String>, String> {
    let mut words = Vec::new();
    let mut cur = String::new();
    let mut quote: Option<char> = None;
    for c in line.chars() {
        match (quote, c) {
            (Some(q), c) if c == q => quote = None,
            (Some(_), c) => cur.push(c),
            (None, '"' | '\'') => quote = Some(c),
            (None, '#') if cur.is_empty() => break,
            (None, c) if c.is_whitespace() => {
                if !cur.is_empty() {
                    words.push(std::mem::take(&mut cur));
                }
            }
            (None, c) => cur.push(c),
        }
    }
    if quote.is_some() {
        return Err(format!("an unclosed quote in `{line}`"));
    }
    if !cur.is_empty() {
        words.push(cur);
    }
    Ok(words)
}

/// An INI value: numbers and booleans are typed, the rest is text.
fn ini_value(v: &str) -> Value {
    let v = v.trim();
    let unquoted = v
        .strip_prefix('"')
        .and_then(|s| s.strip_suffix('"'))
        .or_else(|| v.strip_prefix('\'').and_then(|s| s.strip_suffix('\'')));
    if let Some(s) = unquoted {
        return Value::String(s.to_string());
    }
    match v {
        "true" | "True" | "yes" => return Value::Bool(true),
        "false" | "False" | "no" => return Value::Bool(false),
        _ => {}
    }
    if let Ok(i) = v.parse::<i64>() {
        return Value::Number(i.into());
    }
    Value::String(v.to_string())
}

/// `web[01:03].example` → `web01.example`, `web02.example`, `web03.example` (zero padding kept);
/// `db[a:c]` → `dba`, `dbb`, `dbc`. A name without brackets is itself.
pub fn expand_range(pattern: &str) -> Result<Vec<String>, InventoryError> {
    let (Some(open), Some(close)) = (pattern.find('['), pattern.find(']')) else {
        return Ok(vec![pattern.to_string()]);
    };
    if close < open {
        return err(format!("bad host range `{pattern}`"));
    }
    let (prefix, inner, suffix) = (
        &pattern[..open],
        &pattern[open + 1..close],
        &pattern[close + 1..],
    );
    let (from, to) = inner
        .split_once(':')
        .ok_or_else(|| InventoryError(format!("host range `{pattern}` needs `[start:end]`")))?;
    let mut out = Vec::new();
    if let (Ok(a), Ok(b)) = (from.parse::<u64>(), to.parse::<u64>()) {
        if b < a || b - a > 100_000 {
            return err(format!("host range `{pattern}` is empty or too large"));
        }
        let width = if from.starts_with('0') && from.len() > 1 {
            from.len()
        } else {
            0
        };
        for n in a..=b {
            for rest in expand_range(suffix)? {
                out.push(format!("{prefix}{n:0width$}{rest}"));
            }
        }
        return Ok(out);
    }
    let (mut a, mut b) = (from.chars(), to.chars());
    match (a.next(), a.next(), b.next(), b.next()) {
        (Some(x), None, Some(y), None)
            if x.is_ascii_alphabetic() && y.is_ascii_alphabetic() && x <= y =>
        {
            for c in x..=y {
                for rest in expand_range(suffix)? {
                    out.push(format!("{prefix}{c}{rest}"));
                }
            }
            Ok(out)
        }
        _ => err(format!(
            "host range `{pattern}` must be numbers (`[01:10]`) or letters (`[a:f]`)"
        )),
    }
}
