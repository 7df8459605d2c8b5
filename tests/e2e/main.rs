//! End-to-end tests: real redis-server processes on free ports, the real `vault-api` and
//! `janitor` binaries, HTTP in between. One test binary so the workspace links once.

mod audit;
mod auth;
mod client;
mod concurrency;
mod deployment;
mod dev;
mod events;
mod fakes;
mod fuzz;
mod grpc;
mod hardening;
mod harness;
mod http;
mod keys;
mod migration;
mod monitoring;
mod outage;
mod pipelines;
mod python;
mod quotas;
mod refresh;
mod regions;
mod rotation;
mod secrets;
mod sizing;
mod slow_redis;
mod traces;
mod vaultctl;
