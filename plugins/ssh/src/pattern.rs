//! Host patterns: `web`, `web,db`, `web:db`, `web:&prod`, `all:!db`, `web*`, addresses.

use std::collections::HashSet;

use crate::inventory::{Host, Inventory, InventoryError};

fn glob(pattern: &str, name: &str) -> bool {
    // `*` matches any run of characters; nothing else is special.
    let parts: Vec<&str> = pattern.split('*').collect();
    if parts.len() == 1 {
        return pattern == name;
    }
    let mut rest = name;
    for (i, part) in parts.iter().enumerate() {
        if i == 0 {
            match rest.strip_prefix(part) {
                Some(r) => rest = r,
                None => return false,
            }
        } else if i == parts.len() - 1 {
            return rest.ends_with(part);
        } else {
            match rest.find(part) {
                Some(p) => rest = &rest[p + part.len()..],
                None => return false,
            }
        }
    }
    true
}

fn looks_like_address(term: &str) -> bool {
    term == "localhost"
        || term.contains('.')
        || term.contains(':')
        || term.parse::<std::net::IpAddr>().is_ok()
}

/// The hosts of one term: a group, a host, a glob over both, or an ad-hoc address.
fn term_hosts(
    inv: &Inventory,
    term: &str,
    adhoc: &mut Vec<String>,
) -> Result<HashSet<String>, InventoryError> {
    if term == "all" || term == "*" {
        return Ok(inv.hosts.keys().cloned().collect());
    }
    if inv.groups.contains_key(term) {
        return Ok(inv.group_hosts(term).into_iter().collect());
    }
    if inv.hosts.contains_key(term) {
        return Ok([term.to_string()].into());
    }
    if term.contains('*') {
        let mut out: HashSet<String> = inv
            .hosts
            .keys()
            .filter(|h| glob(term, h))
            .cloned()
            .collect();
        for g in inv.groups.keys().filter(|g| glob(term, g)) {
            out.extend(inv.group_hosts(g));
        }
        return Ok(out);
    }
    if looks_like_address(term) {
        adhoc.push(term.to_string());
        return Ok([term.to_string()].into());
    }
    let names = inv
        .groups
        .keys()
        .chain(inv.hosts.keys())
        .map(String::as_str);
    let help = opsbook_engine::suggest::did_you_mean(term, names)
        .map(|d| format!(": {d}"))
        .unwrap_or_default();
    Err(InventoryError(format!(
        "no host or group `{term}` in the inventory{help}"
    )))
}

pub(crate) fn select(inv: &Inventory, pattern: &str) -> Result<Vec<Host>, InventoryError> {
    let mut union: HashSet<String> = HashSet::new();
    let mut adhoc: Vec<String> = Vec::new();
    let mut intersections = Vec::new();
    let mut exclusions = Vec::new();
    for term in pattern
        .split([',', ':'])
        .map(str::trim)
        .filter(|t| !t.is_empty())
    {
        if let Some(t) = term.strip_prefix('&') {
            intersections.push(term_hosts(inv, t, &mut adhoc)?);
        } else if let Some(t) = term.strip_prefix('!') {
            exclusions.push(term_hosts(inv, t, &mut adhoc)?);
        } else {
            union.extend(term_hosts(inv, term, &mut adhoc)?);
        }
    }
    for set in &intersections {
        union.retain(|h| set.contains(h));
    }
    for set in &exclusions {
        union.retain(|h| !set.contains(h));
    }
    let mut out: Vec<Host> = inv
        .hosts
        .keys()
        .filter(|h| union.contains(*h))
        .filter_map(|h| inv.host(h))
        .collect();
    for a in adhoc {
        if union.contains(&a) && !inv.hosts.contains_key(&a) && !out.iter().any(|h| h.name == a) {
            out.push(Host {
                name: a.clone(),
                address: a,
                port: None,
                user: None,
                identity_file: None,
                vars: Default::default(),
            });
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::glob;

    #[test]
    fn globs() {
        assert!(glob("web*", "web01"));
        assert!(glob("*01", "web01"));
        assert!(glob("w*b*1", "web01"));
        assert!(!glob("db*", "web01"));
        assert!(glob("web01", "web01"));
    }
}
