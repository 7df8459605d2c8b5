//! Test and bench helpers: real `redis-server` processes on free ports (each in its own temp
//! dir, killed on drop) and child processes of our own binaries. No test depends on a Redis
//! someone else started.
//!
//! # Layout (one module per concern)
//! - [`RedisServer`] (`redis`): a private redis-server; restartable, pausable (SIGSTOP) for
//!   outage tests; also as a replica of another. [`shared_redis`]: one redis-server per test
//!   process, for tests that need nothing of a server but its keys.
//! - [`Sentinel`] (`sentinel`): a Redis Sentinel watching a primary.
//! - [`RedisCluster`] (`cluster`): a Redis Cluster on loopback ports.
//! - [`Haproxy`] (`haproxy`): the project's `deploy/haproxy.cfg` in front of replicas.
//! - [`DelayProxy`] (`delay_proxy`): a TCP link with a fixed delay each way that can be cut and
//!   healed (regions' latency and partitions without netem).
//! - [`Netns`] (`netns`): a network namespace joined to the test's by a veth pair: a host
//!   apart (root only).
//! - [`Child`] (`process`): a spawned process killed on drop, with its output captured to a
//!   file; [`listens`], [`bin_path`].
//! - [`Answer`] (`answer`): an HTTP answer as the tests check it (status, problem+json, JSON
//!   body), whether it came over a socket or from the router in-process.
//! - [`free_port`], [`wait_until`] (`ports`).

mod answer;
mod cluster;
mod delay_proxy;
mod haproxy;
mod netns;
mod ports;
mod process;
mod redis;
mod sentinel;

pub use answer::Answer;
pub use cluster::RedisCluster;
pub use delay_proxy::DelayProxy;
pub use haproxy::Haproxy;
pub use netns::Netns;
pub use ports::{free_port, wait_until};
pub use process::{bin_path, listens, listens_on, Child};
pub use redis::{command_stat, shared_redis, RedisServer, SharedRedis};
pub use sentinel::Sentinel;
