//! Ansible inventories (YAML and INI) and host patterns.

use opsbook_ssh::Inventory;
use serde_json::json;

const YAML: &str = r#"
all:
  vars:
    ansible_user: ops
    tier: base
  hosts:
    bastion: {ansible_host: 10.0.0.1}
  children:
    web:
      vars: {tier: web, http_port: 80}
      hosts:
        web[01:03]:
        web04: {ansible_port: 2222, http_port: 8080}
    db:
      hosts:
        db1: {ansible_host: 10.0.1.10, ansible_ssh_private_key_file: ~/.ssh/db}
    prod:
      children:
        web:
      hosts:
        db1:
"#;

const INI: &str = r#"
# loose host
bastion ansible_host=10.0.0.1

[web]
web[01:03]
web04 ansible_port=2222 http_port=8080 note="two words"

[db]
db1 ansible_host=10.0.1.10 ansible_ssh_private_key_file=~/.ssh/db

[web:vars]
tier=web
http_port=80

[all:vars]
ansible_user=ops
tier=base

[prod:children]
web

[prod]
db1
"#;

fn names(inv: &Inventory, pattern: &str) -> Vec<String> {
    inv.select(pattern)
        .unwrap()
        .into_iter()
        .map(|h| h.name)
        .collect()
}

fn check(inv: &Inventory) {
    assert_eq!(
        names(inv, "all"),
        ["bastion", "web01", "web02", "web03", "web04", "db1"]
    );
    assert_eq!(names(inv, "web"), ["web01", "web02", "web03", "web04"]);
    assert_eq!(
        names(inv, "prod"),
        ["web01", "web02", "web03", "web04", "db1"]
    );
    assert_eq!(names(inv, "prod:!db"), ["web01", "web02", "web03", "web04"]);
    assert_eq!(
        names(inv, "all:&prod:!web01"),
        ["web02", "web03", "web04", "db1"]
    );
    assert_eq!(
        names(inv, "web*:&prod"),
        ["web01", "web02", "web03", "web04"]
    );
    assert_eq!(names(inv, "db,bastion"), ["bastion", "db1"]);
    assert_eq!(names(inv, "ungrouped"), ["bastion"]);
    assert_eq!(
        names(inv, "db:10.9.9.9"),
        ["db1", "10.9.9.9"],
        "an address is an ad-hoc host"
    );
    let e = inv.select("wbe").unwrap_err().to_string();
    assert!(
        e.contains("no host or group `wbe`") && e.contains("did you mean `web`?"),
        "{e}"
    );

    let w4 = inv.host("web04").unwrap();
    assert_eq!(w4.address, "web04");
    assert_eq!(w4.port, Some(2222));
    assert_eq!(w4.user.as_deref(), Some("ops"));
    assert_eq!(
        w4.vars["tier"],
        json!("web"),
        "a group's vars win over all's"
    );
    assert_eq!(
        w4.vars["http_port"],
        json!(8080),
        "a host's vars win over its groups'"
    );
    let w1 = inv.host("web01").unwrap();
    assert_eq!(w1.vars["http_port"], json!(80));
    let db = inv.host("db1").unwrap();
    assert_eq!(db.address, "10.0.1.10");
    assert_eq!(db.identity_file.as_deref(), Some("~/.ssh/db"));
    assert_eq!(db.vars["tier"], json!("base"));
    assert_eq!(inv.host("bastion").unwrap().address, "10.0.0.1");
}

#[test]
fn yaml_inventory() {
    check(&Inventory::from_yaml_text(YAML).unwrap());
}

#[test]
fn ini_inventory() {
    let inv = Inventory::from_ini(INI).unwrap();
    check(&inv);
    assert_eq!(inv.host("web04").unwrap().vars["note"], json!("two words"));
}

#[test]
fn files_by_extension() {
    let dir = std::env::temp_dir().join(format!("opsbook-inv-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("hosts.yaml"), YAML).unwrap();
    std::fs::write(dir.join("hosts"), INI).unwrap();
    check(&Inventory::load(&dir.join("hosts.yaml")).unwrap());
    check(&Inventory::load(&dir.join("hosts")).unwrap());
    let e = Inventory::load(&dir.join("missing"))
        .unwrap_err()
        .to_string();
    assert!(e.contains("cannot read inventory"), "{e}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn ranges_and_errors() {
    use opsbook_ssh::inventory::expand_range;
    assert_eq!(
        expand_range("web[08:10].example").unwrap(),
        ["web08.example", "web09.example", "web10.example"]
    );
    assert_eq!(expand_range("db[a:c]").unwrap(), ["dba", "dbb", "dbc"]);
    assert_eq!(
        expand_range("h[1:2]-[a:b]").unwrap(),
        ["h1-a", "h1-b", "h2-a", "h2-b"]
    );
    assert!(expand_range("web[3:1]").is_err());
    assert!(expand_range("web[1:x]").is_err());
    let e = Inventory::from_yaml_text("all:\n  host: {a: 1}\n")
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("unknown key `host`") && e.contains("did you mean `hosts`?"),
        "{e}"
    );
    let e = Inventory::from_ini("[web\nh1\n").unwrap_err().to_string();
    assert!(e.contains("line 1") && e.contains("missing its `]`"), "{e}");
    let e = Inventory::from_ini("[web]\nh1 port\n")
        .unwrap_err()
        .to_string();
    assert!(e.contains("line 2") && e.contains("not key=value"), "{e}");
}

#[test]
fn group_cycles_do_not_hang() {
    let inv = Inventory::from_ini("[a:children]\nb\n[b:children]\na\n[a]\nh1\n").unwrap();
    assert_eq!(names(&inv, "b"), ["h1"]);
    assert!(inv.host("h1").is_some());
}
