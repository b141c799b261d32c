//! The SSH plugin. This first part reads inventories: Ansible's YAML and INI formats, with
//! groups, children, group and host vars, `ansible_host`/`ansible_port`/`ansible_user`/
//! `ansible_ssh_private_key_file`, numeric host ranges (`web[01:20]`), and host patterns
//! (`web`, `web:&prod`, `all:!db`, `web*`). The `ssh.run`, `ssh.copy` and `ssh.fetch` actions
//! build on it.

pub mod inventory;
mod pattern;

pub use inventory::{Host, Inventory, InventoryError};
