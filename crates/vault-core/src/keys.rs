//! The Redis key schema, built in one place. Lua scripts receive the fixed per-pool keys through
//! `KEYS` (see `lua/rules/base.lua`) plus the pool's prefix, from which they derive per-token and
//! per-lease keys; the `{pool}` hash tag keeps every key of a pool in one cluster slot.

/// Key builder for one deployment prefix (`TV_PREFIX`, default `tv`).
#[derive(Debug, Clone)]
pub struct Keys {
    prefix: String,
}

impl Keys {
    pub fn new(prefix: impl Into<String>) -> Self {
        Self {
            prefix: prefix.into(),
        }
    }

    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// `tv:pools`: the set of pool names (its own slot; never touched by a pool script).
    pub fn pools(&self) -> String {
        format!("{}:pools", self.prefix)
    }

    /// `tv:revoked`: revoked client-token ids, scored by when they may be forgotten.
    pub fn revoked_clients(&self) -> String {
        format!("{}:revoked", self.prefix)
    }

    /// `tv:revocations`: the pub/sub channel every replica listens on.
    pub fn revocation_channel(&self) -> String {
        format!("{}:revocations", self.prefix)
    }

    /// `tv:events`: the event stream (capped) and the pub/sub channel of the same name.
    pub fn events(&self) -> String {
        format!("{}:events", self.prefix)
    }

    /// `tv:client:<jti>`: the pools of a client token minted through the API ("*" = every
    /// pool), kept until it expires: who may revoke it.
    pub fn client(&self, jti: &str) -> String {
        format!("{}:client:{jti}", self.prefix)
    }

    /// `tv:janitor`: the janitors' heartbeat (`"<last sweep ms> <interval ms>"`, expiring).
    pub fn janitor(&self) -> String {
        format!("{}:janitor", self.prefix)
    }

    /// `tv:audit`: audit entries not tied to a pool (client tokens).
    pub fn audit(&self) -> String {
        format!("{}:audit", self.prefix)
    }

    pub fn pool(&self, pool: &str) -> PoolKeys {
        PoolKeys {
            base: format!("{}:{{{}}}:", self.prefix, pool),
        }
    }
}

/// The keys of one pool, all sharing the hash tag `{pool}`.
#[derive(Debug, Clone)]
pub struct PoolKeys {
    base: String,
}

impl PoolKeys {
    /// `tv:{pool}:` — every key of the pool starts with it.
    pub fn base(&self) -> &str {
        &self.base
    }
    fn k(&self, suffix: &str) -> String {
        format!("{}{}", self.base, suffix)
    }
    pub fn cfg(&self) -> String {
        self.k("cfg")
    }
    pub fn ready(&self) -> String {
        self.k("ready")
    }
    pub fn cool(&self) -> String {
        self.k("cool")
    }
    pub fn leases(&self) -> String {
        self.k("leases")
    }
    pub fn exp(&self) -> String {
        self.k("exp")
    }
    /// Every token of the pool: its id (as deposited) → its internal id `#<n>`, which the
    /// indexes hold and its keys are named after.
    pub fn ids(&self) -> String {
        self.k("tokens")
    }
    /// The set of token ids of the layout before internal ids: only `vaultctl migrate` reads it.
    pub fn old_ids(&self) -> String {
        self.k("ids")
    }
    pub fn jobs(&self) -> String {
        self.k("jobs")
    }
    /// The pool's audit stream (capped).
    pub fn audit(&self) -> String {
        self.k("audit")
    }
    pub fn stats(&self) -> String {
        self.k("stats")
    }
    /// Leases granted per minute (`<minute>:l`, `<minute>:u` fields), for the observed rate.
    pub fn rate(&self) -> String {
        self.k("rate")
    }
    /// Leases granted per token in one minute (a zset: token id → leases), for the lease-skew
    /// figures of status; each expires a few minutes after its minute.
    pub fn heat(&self, minute: i64) -> String {
        self.k(&format!("heat:{minute}"))
    }
    /// A token's hash, by its internal id (`#<n>`).
    pub fn token(&self, internal_id: &str) -> String {
        self.k(&format!("t:{internal_id}"))
    }
    /// A token's sealed secret (bytes), by its internal id.
    pub fn secret(&self, internal_id: &str) -> String {
        self.k(&format!("sec:{internal_id}"))
    }
    /// Live leases: lease id → its record (`lease_record` in `lua/rules/leases.lua`).
    pub fn lease_data(&self) -> String {
        self.k("leasedata")
    }
    /// A lease's hash in the layout before internal ids (`vaultctl migrate` reads it).
    pub fn old_lease(&self, lease_id: &str) -> String {
        self.k(&format!("l:{lease_id}"))
    }
    /// One claimed refresh job (`job_key` in `lua/rules/refresh.lua`): `token` (internal id),
    /// `token_id` (the user's), `gen`, `attempts`.
    pub fn job(&self, job_id: &str) -> String {
        self.k(&format!("job:{job_id}"))
    }
    /// Deprecated tokens by sunset time (`K.base .. 'sunset'` in `lua/rules/revocation.lua`).
    pub fn sunset(&self) -> String {
        self.k("sunset")
    }
    /// Tokens in rotation by the time their age counts from (`aged_key` in lua/rules/base.lua).
    pub fn aged(&self) -> String {
        self.k("aged")
    }
    /// Tokens being rotated on schedule now (`rotating_key` in lua/rules/base.lua).
    pub fn rotating(&self) -> String {
        self.k("rotating")
    }
    /// Refreshable tokens by the time their refresh is due (`due_key` in `lua/rules/refresh.lua`).
    pub fn due(&self) -> String {
        self.k("due")
    }
    /// The set of tokens currently in a view state (`active`, `leased`, `cooling`, ...).
    pub fn view(&self, state: &str) -> String {
        self.k(&format!("v:{state}"))
    }
    /// The live leases of one token (`tlkey`).
    pub fn token_leases(&self, id: &str) -> String {
        self.k(&format!("tl:{id}"))
    }
    /// An idempotency record (`idem_key`; the key is already scoped to its client).
    pub fn idempotency(&self, key: &str) -> String {
        self.k(&format!("idem:{key}"))
    }
    /// A sticky session (`session_key`).
    pub fn session(&self, session: &str) -> String {
        self.k(&format!("s:{session}"))
    }
    /// Token ids reserved by deposits in flight (`depositing_key` in `lua/rules/base.lua`).
    pub fn depositing(&self) -> String {
        self.k("depositing")
    }
    /// The fingerprint index: a secret's fingerprint → the internal ids holding it
    /// (`fps_key` in `lua/rules/base.lua`).
    pub fn fingerprints(&self) -> String {
        self.k("fps")
    }
    /// The other tokens holding a secret already in [`PoolKeys::fingerprints`] (a set;
    /// `fpx_key` in `lua/rules/base.lua`).
    pub fn fingerprint_more(&self, fingerprint: &str) -> String {
        self.k(&format!("fpx:{fingerprint}"))
    }
    /// Deposit order (the `pack` strategy's sequence).
    pub fn seq(&self) -> String {
        self.k("seq")
    }
    /// Refresh jobs for external login workers (`xjobs_key`).
    pub fn xjobs(&self) -> String {
        self.k("xjobs")
    }
    /// Pipelines by deadline (`pipelines_key` in `lua/rules/base.lua`).
    pub fn pipelines(&self) -> String {
        self.k("pipelines")
    }
    /// Pipelines under strength (a set of names).
    pub fn pipelines_short(&self) -> String {
        self.k("plshort")
    }
    /// Pipelines being assigned or given back (a set of names): the janitor drives them.
    pub fn pipelines_work(&self) -> String {
        self.k("plwork")
    }
    /// What happened to pipelines' shares, to announce (a list of JSON, oldest first).
    pub fn pipeline_news(&self) -> String {
        self.k("plnews")
    }
    /// A pipeline's record (`pl_key` in `lua/rules/base.lua`).
    pub fn pipeline(&self, name: &str) -> String {
        self.k(&format!("pl:{name}"))
    }
    /// A pipeline's leasable tokens (a zset, as `ready`).
    pub fn pipeline_ready(&self, name: &str) -> String {
        self.k(&format!("pr:{name}"))
    }
    /// A pipeline's candidates while it is being assigned (a zset by preference).
    pub fn pipeline_candidates(&self, name: &str) -> String {
        self.k(&format!("pc:{name}"))
    }
    /// A pipeline's tokens (a set of internal ids).
    pub fn pipeline_tokens(&self, name: &str) -> String {
        self.k(&format!("pm:{name}"))
    }

    /// `KEYS` for every script, in the order `lua/rules/base.lua` names them. The last, the
    /// pool's prefix, never exists as a key: while the pool's slot migrates between cluster
    /// nodes, Redis refuses every call (TRYAGAIN) rather than run one on a half-moved pool.
    pub fn script_keys(&self) -> [String; 8] {
        [
            self.cfg(),
            self.ready(),
            self.cool(),
            self.leases(),
            self.exp(),
            self.ids(),
            self.jobs(),
            self.base.clone(),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pool_keys_share_one_hash_tag() {
        let k = Keys::new("tv").pool("scrape.a");
        assert_eq!(k.cfg(), "tv:{scrape.a}:cfg");
        assert_eq!(k.token("#1"), "tv:{scrape.a}:t:#1");
        for key in k.script_keys() {
            assert!(key.starts_with("tv:{scrape.a}:"), "{key}");
        }
    }

    /// Key suffixes are spelled in two languages; every one the function library builds from
    /// the pool's prefix must be one this builder knows, so the two cannot drift apart.
    #[test]
    fn every_key_the_functions_build_is_mirrored_here() {
        let k = Keys::new("tv").pool("p");
        let known: Vec<String> = [
            k.cfg(),
            k.ready(),
            k.cool(),
            k.leases(),
            k.exp(),
            k.ids(),
            k.jobs(),
            k.audit(),
            k.stats(),
            k.rate(),
            k.sunset(),
            k.due(),
            k.seq(),
            k.depositing(),
            k.fingerprints(),
            k.fingerprint_more(""),
            k.xjobs(),
            k.token(""),
            k.secret(""),
            k.lease_data(),
            k.old_ids(),
            k.old_lease(""),
            k.job(""),
            k.view(""),
            k.token_leases(""),
            k.idempotency(""),
            k.session(""),
            k.pipelines(),
            k.pipelines_short(),
            k.pipelines_work(),
            k.pipeline_news(),
            k.pipeline(""),
            k.pipeline_tokens(""),
            k.pipeline_ready(""),
            k.pipeline_candidates(""),
            k.aged(),
            k.rotating(),
            k.heat(0).trim_end_matches('0').to_string(),
        ]
        .iter()
        .map(|key| key.strip_prefix(k.base()).unwrap().to_string())
        .collect();
        let code = &crate::scripts::LIBRARY.code;
        let used: Vec<&str> = code
            .split("K.base .. '")
            .skip(1)
            .map(|rest| &rest[..rest.find('\'').unwrap()])
            .collect();
        assert!(used.len() >= 10, "{used:?}");
        for suffix in used {
            assert!(
                known.iter().any(|k| k == suffix),
                "lua builds `{suffix}` keys.rs does not know"
            );
        }
    }
}
