//! Test support for opsbook.
//!
//! - [`sshd`]: a [`sshd::Fleet`] of real OpenSSH servers on loopback addresses
//!   (127.0.0.2, 127.0.0.3, ...) for integration tests and benchmarks of the SSH plugin.
//! - [`prometheus`]: a real [`prometheus::Pushgateway`] and [`prometheus::Prometheus`]
//!   (Debian's packages) on 127.0.0.1, for tests that push metrics and query them back.
//! - [`tls`]: [`tls::Certs`], a CA with a server and a client certificate signed by it, as
//!   PEM files for TLS and mutual-TLS tests.
//! - [`terraform`]: the `terraform` binary and [`terraform::Offline`], a CLI config and
//!   filesystem mirror that let `terraform init` install the real `hashicorp/null` provider
//!   without the registry.

pub mod prometheus;
pub mod sshd;
pub mod terraform;
pub mod tls;
