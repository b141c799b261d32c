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
//! - [`moto`]: [`moto::Moto`], a real moto server (a mock of the AWS APIs: EC2, S3, ...) on
//!   127.0.0.1, with the environment that points AWS clients at it.
//! - [`kube`]: [`kube::FakeKube`], a fake Kubernetes API server on 127.0.0.1 that speaks
//!   the real REST wire format (checked with kubectl), with opt-in simulated controllers.

pub mod kube;
pub mod moto;
pub mod prometheus;
pub mod sshd;
pub mod terraform;
pub mod tls;
