//! The AWS plugin, on the official SDK (aws-sdk-rust): EC2, S3, CloudWatch, SSM, Auto Scaling
//! and ECS actions, and the `aws_secretsmanager` / `aws_ssm` secret sources.
//!
//! Credentials and region come from the standard chain (environment, profiles, SSO, IMDS, web
//! identity; `AWS_ENDPOINT_URL` honoured), with per-step `region`, `profile` and `assume_role`;
//! one SDK config per (region, profile, role) per run is shared by every step. The SDK's HTTP
//! client is hyper on rustls with ring (see `config`), not the default aws-lc build.

mod autoscaling;
mod cloudwatch;
mod common;
mod config;
mod ec2;
mod ecs;
mod error;
mod s3;
mod secrets;
mod ssm;

use opsbook_engine::action::Registry;

/// Adds the `aws.*` actions and the AWS secret sources.
pub fn register(registry: &mut Registry) {
    ec2::register(registry);
    s3::register(registry);
    cloudwatch::register(registry);
    ssm::register(registry);
    autoscaling::register(registry);
    ecs::register(registry);
    secrets::register(registry);
}
