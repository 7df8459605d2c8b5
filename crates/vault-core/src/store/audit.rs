//! The audit trail: append-only streams, per pool and vault-wide.

use super::*;

impl Store {
    /// Append an audit entry to the pool's stream (or the global one), capped at about
    /// `TV_AUDIT_MAX_ENTRIES`. Redis assigns the id, so entries are ordered by Redis time.
    pub async fn audit(&self, pool: Option<&str>, e: &AuditEntry) -> Result<()> {
        let key = match pool {
            Some(p) => self.keys.pool(p).audit(),
            None => self.keys.audit(),
        };
        let mut cmd = redis::cmd("XADD");
        cmd.arg(&key)
            .arg("MAXLEN")
            .arg("~")
            .arg(self.audit_max)
            .arg("*");
        cmd.arg("actor").arg(&e.actor).arg("action").arg(&e.action);
        let optional = [
            ("actor_jti", &e.actor_jti),
            ("pool", &e.pool),
            ("token_id", &e.token_id),
            ("lease_id", &e.lease_id),
            ("outcome", &e.outcome),
            ("detail", &e.detail),
            ("trace_id", &e.trace_id),
        ];
        for (field, v) in optional {
            if let Some(v) = v {
                cmd.arg(field).arg(v);
            }
        }
        self.cmd::<String>(cmd).await.map(drop)
    }

    /// Read up to `limit` audit entries after `after` (a stream id, exclusive) or from
    /// `since_ms`, oldest first: the first such entries, or with `newest` the latest.
    pub async fn audit_read(
        &self,
        pool: Option<&str>,
        since_ms: Option<i64>,
        after: Option<&str>,
        limit: usize,
        newest: bool,
    ) -> Result<Vec<AuditEntry>> {
        let key = match pool {
            Some(p) => self.keys.pool(p).audit(),
            None => self.keys.audit(),
        };
        let start = match (after, since_ms) {
            (Some(id), _) => format!("({id}"),
            (None, Some(ms)) => ms.to_string(),
            (None, None) => "-".to_string(),
        };
        let rows = self.xrange(&key, &start, limit, newest).await?;
        Ok(rows
            .into_iter()
            .map(|(id, mut f)| {
                let ms: i64 = id
                    .split('-')
                    .next()
                    .and_then(|m| m.parse().ok())
                    .unwrap_or(0);
                AuditEntry {
                    at: crate::time::rfc3339(ms),
                    id,
                    actor: f.remove("actor").unwrap_or_default(),
                    actor_jti: f.remove("actor_jti"),
                    action: f.remove("action").unwrap_or_default(),
                    pool: f.remove("pool"),
                    token_id: f.remove("token_id"),
                    lease_id: f.remove("lease_id"),
                    outcome: f.remove("outcome"),
                    detail: f.remove("detail"),
                    trace_id: f.remove("trace_id"),
                }
            })
            .collect())
    }
}
