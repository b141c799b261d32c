//! Test support for opsbook.
//!
//! - [`sshd`]: a [`sshd::Fleet`] of real OpenSSH servers on loopback addresses
//!   (127.0.0.2, 127.0.0.3, ...) for integration tests and benchmarks of the SSH plugin.

pub mod sshd;
