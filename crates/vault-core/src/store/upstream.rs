//! Where the store's connections go: one Redis (`redis://`, `rediss://`), the primary that
//! Redis Sentinel names (`redis+sentinel://[user:password@]host:port[,host:port...]/<service>[/db]`),
//! followed across failovers, or a Redis Cluster (`redis+cluster://[user:password@]host:port[,...]`,
//! any of its nodes; the cluster client routes each call by its keys' slot and follows slot
//! moves).
//!
//! Following a failover: a call that finds Redis unreachable, or a demoted primary refusing the
//! write (`READONLY`), fails with 503 as any Redis outage does (the caller retries), and makes
//! the store ask the sentinels which server is the primary now — one lookup at a time, at most
//! one every [`LOOKUP_INTERVAL`]. When the primary moved, every connection is replaced with one to
//! the new primary. The function library replicates with the data, and a primary that lacks it
//! gets it at the next call (see `Store::fcall`).

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::sentinel::{SentinelClient, SentinelNodeConnectionInfo, SentinelServerType};

use crate::error::VaultError;

/// The least time between two sentinel lookups (calls failing together share one).
const LOOKUP_INTERVAL: Duration = Duration::from_millis(250);

/// A `redis+sentinel://` URL, taken apart.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SentinelUrl {
    /// `redis://host:port` of each sentinel.
    pub(crate) sentinels: Vec<String>,
    /// The monitored master's name (`sentinel monitor <name> ...`).
    pub(crate) service: String,
    pub(crate) username: Option<String>,
    pub(crate) password: Option<String>,
    pub(crate) db: i64,
}

impl SentinelUrl {
    /// None when `url` is not a sentinel URL; an error when it is one but malformed.
    pub(crate) fn parse(url: &str) -> Option<Result<SentinelUrl, String>> {
        let rest = url.strip_prefix("redis+sentinel://")?;
        Some(Self::parse_rest(rest))
    }

    fn parse_rest(rest: &str) -> Result<SentinelUrl, String> {
        // The credentials may hold a `/`: the path starts after the hosts, past any `@`.
        let hosts_from = rest.rfind('@').map_or(0, |i| i + 1);
        let (nodes, path) = rest[hosts_from..]
            .split_once('/')
            .map(|(hosts, path)| (&rest[..hosts_from + hosts.len()], path))
            .ok_or("redis+sentinel:// needs the service name after the hosts: redis+sentinel://host:port,host:port/<service>")?;
        let mut parts = path.split('/');
        let service = parts.next().unwrap_or_default().to_string();
        if service.is_empty() {
            return Err("redis+sentinel:// needs the service name (the master's name in `sentinel monitor`)".into());
        }
        let db = match parts.next() {
            None | Some("") => 0,
            Some(d) => d
                .parse()
                .map_err(|_| format!("redis+sentinel:// database must be a number, got {d:?}"))?,
        };
        let n = Nodes::parse(nodes, 26379, "redis+sentinel://")?;
        Ok(SentinelUrl {
            sentinels: n.nodes,
            service,
            username: n.username,
            password: n.password,
            db,
        })
    }
}

/// The `[user:password@]host[:port],host[:port]...` part of a sentinel or cluster URL.
struct Nodes {
    /// `redis://host:port` of each.
    nodes: Vec<String>,
    username: Option<String>,
    password: Option<String>,
}

impl Nodes {
    fn parse(s: &str, default_port: u16, scheme: &str) -> Result<Nodes, String> {
        let (auth, hosts) = match s.rsplit_once('@') {
            Some((a, h)) => (Some(a), h),
            None => (None, s),
        };
        let nodes: Vec<String> = hosts
            .split(',')
            .filter(|h| !h.is_empty())
            .map(|h| {
                if h.contains(':') {
                    format!("redis://{h}")
                } else {
                    format!("redis://{h}:{default_port}")
                }
            })
            .collect();
        if nodes.is_empty() {
            return Err(format!("{scheme} names no host"));
        }
        let decode = |s: &str| {
            url::form_urlencoded::parse(format!("x={s}").as_bytes())
                .next()
                .map(|(_, v)| v.into_owned())
                .unwrap_or_default()
        };
        let (username, password) = match auth {
            None => (None, None),
            Some(a) => match a.split_once(':') {
                Some((u, p)) => ((!u.is_empty()).then(|| decode(u)), Some(decode(p))),
                None => (None, Some(decode(a))),
            },
        };
        Ok(Nodes {
            nodes,
            username,
            password,
        })
    }
}

enum Upstream {
    Direct,
    Sentinel(Box<SentinelState>),
    Cluster(Box<ClusterState>),
}

struct ClusterState {
    client: redis::cluster::ClusterClient,
    /// For pub/sub: any node (a message published on one reaches subscribers on every node).
    pubsub: redis::Client,
}

/// One connection: to a single server, or the cluster client's (one per process, multiplexed
/// over every node).
#[derive(Clone)]
pub(super) enum Conn {
    Single(ConnectionManager),
    Cluster(redis::cluster_async::ClusterConnection),
}

impl redis::aio::ConnectionLike for Conn {
    fn req_packed_command<'a>(
        &'a mut self,
        cmd: &'a redis::Cmd,
    ) -> redis::RedisFuture<'a, redis::Value> {
        match self {
            Conn::Single(c) => c.req_packed_command(cmd),
            Conn::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a redis::Pipeline,
        offset: usize,
        count: usize,
    ) -> redis::RedisFuture<'a, Vec<redis::Value>> {
        match self {
            Conn::Single(c) => c.req_packed_commands(pipeline, offset, count),
            Conn::Cluster(c) => c.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Conn::Single(c) => c.get_db(),
            Conn::Cluster(c) => c.get_db(),
        }
    }
}

/// The nodes and credentials of a `redis+cluster://` URL; None for another kind of URL.
fn cluster_nodes(url: &str) -> Option<Result<Nodes, String>> {
    let rest = url.strip_prefix("redis+cluster://")?;
    Some(Nodes::parse(
        rest.trim_end_matches('/'),
        6379,
        "redis+cluster://",
    ))
}

struct SentinelState {
    client: tokio::sync::Mutex<SentinelClient>,
    /// The address the connections point at.
    primary: Mutex<String>,
    last_lookup: Mutex<Option<Instant>>,
    looking: AtomicBool,
}

/// Connections to one server (or the cluster).
#[derive(Clone)]
struct Set {
    /// For every call.
    normal: Arc<[Conn]>,
    /// For writes followed by `WAIT`: it blocks the connection it is sent on until replicas
    /// caught up, so it never holds up the calls on `normal`.
    waiting: Arc<[Conn]>,
}

/// How many connections carry replica-acknowledged writes (they are the rare ones).
const WAITING_CONNECTIONS: usize = 2;

/// The store's multiplexed connections, used round robin.
pub(super) struct Connections {
    upstream: Upstream,
    cfg: ConnectionManagerConfig,
    size: usize,
    /// None until the first sentinel lookup.
    conns: RwLock<Option<Set>>,
    next: AtomicUsize,
    /// Connection settings for every Redis server (protocol, credentials, database).
    redis_settings: redis::RedisConnectionInfo,
}

fn invalid(e: impl std::fmt::Display) -> VaultError {
    VaultError::RedisUnavailable(format!("invalid Redis configuration: {e}"))
}

impl Connections {
    pub(super) fn new(
        url: &str,
        size: usize,
        cfg: ConnectionManagerConfig,
        budget: Duration,
    ) -> Result<Self, VaultError> {
        let size = size.max(1);
        if let Some(parsed) = cluster_nodes(url) {
            let n = parsed.map_err(invalid)?;
            let info = redis::IntoConnectionInfo::into_connection_info(n.nodes[0].as_str())
                .map_err(invalid)?;
            let mut pubsub = info.redis_settings().clone();
            // The one budget bounds every call (`Store::timed`); nothing below it may cut one.
            let mut b = redis::cluster::ClusterClientBuilder::new(n.nodes)
                .use_protocol(redis::ProtocolVersion::RESP3)
                .connection_timeout(budget)
                .response_timeout(Duration::from_secs(3600))
                // While a pool's slot migrates its functions are refused with TRYAGAIN (see
                // ARCHITECTURE, "Resharding"); the migration of one slot takes milliseconds, so
                // retry soon and often, within the call's budget, rather than after the
                // crate's default of over a second.
                .retries(12)
                .min_retry_wait(5)
                .max_retry_wait(250)
                .retry_wait_formula(10, 2);
            if let Some(u) = n.username {
                pubsub = pubsub.set_username(&u);
                b = b.username(u);
            }
            if let Some(p) = n.password {
                pubsub = pubsub.set_password(&p);
                b = b.password(p);
            }
            let state = ClusterState {
                client: b.build().map_err(invalid)?,
                pubsub: redis::Client::open(info.set_redis_settings(pubsub)).map_err(invalid)?,
            };
            return Ok(Connections {
                upstream: Upstream::Cluster(Box::new(state)),
                cfg,
                size,
                conns: RwLock::new(None),
                next: AtomicUsize::new(0),
                redis_settings: redis::RedisConnectionInfo::default(),
            });
        }
        if let Some(parsed) = SentinelUrl::parse(url) {
            let s = parsed.map_err(invalid)?;
            let mut settings = redis::RedisConnectionInfo::default()
                .set_protocol(redis::ProtocolVersion::RESP3)
                .set_db(s.db);
            if let Some(u) = &s.username {
                settings = settings.set_username(u);
            }
            if let Some(p) = &s.password {
                settings = settings.set_password(p);
            }
            let client = SentinelClient::build(
                s.sentinels.clone(),
                s.service.clone(),
                Some(
                    SentinelNodeConnectionInfo::default()
                        .set_redis_connection_info(settings.clone()),
                ),
                SentinelServerType::Master,
            )
            .map_err(invalid)?;
            return Ok(Connections {
                upstream: Upstream::Sentinel(Box::new(SentinelState {
                    client: tokio::sync::Mutex::new(client),
                    primary: Mutex::new(String::new()),
                    last_lookup: Mutex::new(None),
                    looking: AtomicBool::new(false),
                })),
                cfg,
                size,
                conns: RwLock::new(None),
                next: AtomicUsize::new(0),
                redis_settings: settings,
            });
        }
        // RESP3: a connection that closes (a Redis restart) tells its manager at once through a
        // disconnection notice, so it is replaced before the next call instead of failing it.
        let info = redis::IntoConnectionInfo::into_connection_info(url).map_err(invalid)?;
        let settings = info
            .redis_settings()
            .clone()
            .set_protocol(redis::ProtocolVersion::RESP3);
        let client =
            redis::Client::open(info.set_redis_settings(settings.clone())).map_err(invalid)?;
        let conns = Self::set(&client, size, &cfg)?;
        Ok(Connections {
            upstream: Upstream::Direct,
            cfg,
            size,
            conns: RwLock::new(Some(conns)),
            next: AtomicUsize::new(0),
            redis_settings: settings,
        })
    }

    fn set(
        client: &redis::Client,
        size: usize,
        cfg: &ConnectionManagerConfig,
    ) -> Result<Set, VaultError> {
        let managers = |n: usize| {
            (0..n)
                .map(|_| {
                    ConnectionManager::new_lazy_with_config(client.clone(), cfg.clone())
                        .map(Conn::Single)
                })
                .collect::<Result<Vec<_>, _>>()
                .map(Arc::from)
                .map_err(invalid)
        };
        Ok(Set {
            normal: managers(size)?,
            waiting: managers(WAITING_CONNECTIONS)?,
        })
    }

    /// The next connection (round robin); `waiting` for a write followed by `WAIT`. Behind
    /// Sentinel, the first call looks the primary up.
    pub(super) async fn next(&self, waiting: bool) -> Result<Conn, VaultError> {
        let set = self.conns.read().expect("connections lock").clone();
        let Some(set) = set else {
            match &self.upstream {
                Upstream::Cluster(st) => self.connect_cluster(&st.client).await?,
                _ => self.follow_primary().await?,
            }
            return Box::pin(self.next(waiting)).await;
        };
        let conns = if waiting { &set.waiting } else { &set.normal };
        let i = self.next.fetch_add(1, Ordering::Relaxed) % conns.len();
        Ok(conns[i].clone())
    }

    /// The cluster client's connection (it keeps one per node, and follows slot moves), made at
    /// the first call.
    async fn connect_cluster(
        &self,
        client: &redis::cluster::ClusterClient,
    ) -> Result<(), VaultError> {
        let c = client
            .get_async_connection()
            .await
            .map_err(|e| VaultError::RedisUnavailable(format!("cannot reach the cluster: {e}")))?;
        let conns: Arc<[Conn]> = Arc::from(vec![Conn::Cluster(c)]);
        let mut set = self.conns.write().expect("connections lock");
        if set.is_none() {
            *set = Some(Set {
                normal: conns.clone(),
                waiting: conns,
            });
        }
        Ok(())
    }

    /// Whether this is a cluster (some settings do not apply to one).
    pub(super) fn is_cluster(&self) -> bool {
        matches!(self.upstream, Upstream::Cluster(_))
    }

    /// A client for a connection of its own (pub/sub), to the current primary (in a cluster, the
    /// first node named).
    pub(super) async fn client(&self, url: &str) -> Result<redis::Client, VaultError> {
        match &self.upstream {
            Upstream::Direct => redis::Client::open(url).map_err(invalid),
            Upstream::Cluster(st) => Ok(st.pubsub.clone()),
            Upstream::Sentinel(st) => {
                let client = &st.client;
                let c = client.lock().await.async_get_client().await.map_err(|e| {
                    VaultError::RedisUnavailable(format!("no primary from the sentinels: {e}"))
                })?;
                Ok(c)
            }
        }
    }

    /// A call found Redis unreachable or read-only: behind Sentinel, look the primary up in the
    /// background (the call itself has failed already; the next one goes to the new primary).
    pub(super) fn suspect(self: &Arc<Self>) {
        let Upstream::Sentinel(st) = &self.upstream else {
            return;
        };
        let (looking, last_lookup) = (&st.looking, &st.last_lookup);
        if last_lookup
            .lock()
            .expect("lookup lock")
            .is_some_and(|t| t.elapsed() < LOOKUP_INTERVAL)
            || looking.swap(true, Ordering::SeqCst)
        {
            return;
        }
        let me = self.clone();
        tokio::spawn(async move {
            if let Err(e) = me.follow_primary().await {
                tracing::warn!(error = %e, "sentinel lookup failed; trying again at the next failure");
            }
            if let Upstream::Sentinel(st) = &me.upstream {
                st.looking.store(false, Ordering::SeqCst);
            }
        });
    }

    /// Ask the sentinels for the primary; when it is not the one the connections point at,
    /// replace every connection.
    async fn follow_primary(&self) -> Result<(), VaultError> {
        let Upstream::Sentinel(st) = &self.upstream else {
            return Ok(());
        };
        let (client, primary, last_lookup) = (&st.client, &st.primary, &st.last_lookup);
        let mut sentinel = client.lock().await;
        *last_lookup.lock().expect("lookup lock") = Some(Instant::now());
        // Another caller may have moved the connections while this one waited for the lock.
        let found = sentinel.async_get_client().await.map_err(|e| {
            VaultError::RedisUnavailable(format!("no primary from the sentinels: {e}"))
        })?;
        let addr = found.get_connection_info().addr().to_string();
        let mut current = primary.lock().expect("primary lock");
        let empty = self.conns.read().expect("connections lock").is_none();
        if *current == addr && !empty {
            return Ok(());
        }
        let info = found
            .get_connection_info()
            .clone()
            .set_redis_settings(self.redis_settings.clone());
        let client = redis::Client::open(info).map_err(invalid)?;
        let conns = Self::set(&client, self.size, &self.cfg)?;
        if current.is_empty() {
            tracing::info!(primary = %addr, "sentinel names the primary");
        } else {
            tracing::warn!(from = %current, to = %addr, "the primary moved (failover): following it");
        }
        *current = addr;
        *self.conns.write().expect("connections lock") = Some(conns);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sentinel_urls() {
        assert_eq!(SentinelUrl::parse("redis://h:6379"), None);
        let s = SentinelUrl::parse("redis+sentinel://:p/%40ss@a:26379,b:26380,c/mymaster/2")
            .unwrap()
            .unwrap();
        assert_eq!(
            s.sentinels,
            ["redis://a:26379", "redis://b:26380", "redis://c:26379"]
        );
        assert_eq!(s.service, "mymaster");
        assert_eq!(s.password.as_deref(), Some("p/@ss"));
        assert_eq!(s.username, None);
        assert_eq!(s.db, 2);
        assert!(SentinelUrl::parse("redis+sentinel://a:1,b:2")
            .unwrap()
            .is_err());
        assert!(SentinelUrl::parse("redis+sentinel://a:1/")
            .unwrap()
            .is_err());
        assert!(SentinelUrl::parse("redis+sentinel:///svc")
            .unwrap()
            .is_err());
        assert!(SentinelUrl::parse("redis+sentinel://a:1/svc/x")
            .unwrap()
            .is_err());
    }

    #[test]
    fn cluster_urls() {
        assert!(cluster_nodes("redis+sentinel://a:1/svc").is_none());
        let n = cluster_nodes("redis+cluster://u:pw@a:7000,b/")
            .unwrap()
            .unwrap();
        assert_eq!(n.nodes, ["redis://a:7000", "redis://b:6379"]);
        assert_eq!(
            (n.username.as_deref(), n.password.as_deref()),
            (Some("u"), Some("pw"))
        );
        assert!(cluster_nodes("redis+cluster://").unwrap().is_err());
    }
}
