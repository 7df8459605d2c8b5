//! The Lua function library. `lua/rules/` (one file per rule, in dependency order: [`RULES`])
//! and one file per transition in `lua/` are assembled at build time into one Redis Functions
//! library (`FUNCTION LOAD` once, `FCALL` per call): the rules are defined once per server, not
//! re-created on every call as a prelude prepended to each `EVALSHA` script was.
//!
//! The library and its functions are named after a hash of the code (`tokenvault_<v>`,
//! `tv_<v>_acquire`), so during a rolling deploy old and new replicas each call their own.
//! There is no non-atomic fallback: a Redis that refuses functions makes the vault fail closed.

use std::sync::LazyLock;

use sha2::{Digest, Sha256};

/// Placeholder for the version in the assembled code (replaced by the hash of the code).
const VER: &str = "__TV_VERSION__";

/// The oldest Redis with Functions (Valkey reports a compatible `redis_version`).
pub const MIN_REDIS: (u32, u32) = (7, 0);

/// The assembled library.
pub struct Library {
    /// `tokenvault_<version>`.
    pub name: String,
    /// The first 12 hex digits of the SHA-256 of the code.
    pub version: String,
    /// What `FUNCTION LOAD` receives.
    pub code: String,
}

impl Library {
    /// The `FCALL` name of the transition from `lua/<file>.lua`.
    pub fn function(&self, file: &str) -> String {
        format!("tv_{}_{file}", self.version)
    }
}

/// The rules, each defined before the rules and transitions that use it.
pub const RULES: &[(&str, &str)] = &[
    ("base", include_str!("../../../lua/rules/base.lua")),
    (
        "concurrency",
        include_str!("../../../lua/rules/concurrency.lua"),
    ),
    ("quota", include_str!("../../../lua/rules/quota.lua")),
    ("ttl", include_str!("../../../lua/rules/ttl.lua")),
    (
        "placement",
        include_str!("../../../lua/rules/placement.lua"),
    ),
    ("refresh", include_str!("../../../lua/rules/refresh.lua")),
    (
        "quarantine",
        include_str!("../../../lua/rules/quarantine.lua"),
    ),
    ("leases", include_str!("../../../lua/rules/leases.lua")),
    (
        "revocation",
        include_str!("../../../lua/rules/revocation.lua"),
    ),
    ("freeze", include_str!("../../../lua/rules/freeze.lua")),
    (
        "eligibility",
        include_str!("../../../lua/rules/eligibility.lua"),
    ),
    ("session", include_str!("../../../lua/rules/session.lua")),
    (
        "idempotency",
        include_str!("../../../lua/rules/idempotency.lua"),
    ),
    ("acquire", include_str!("../../../lua/rules/acquire.lua")),
    ("outcomes", include_str!("../../../lua/rules/outcomes.lua")),
];

macro_rules! transitions {
    ($($name:ident => $file:literal),* $(,)?) => {
        /// Each transition's Lua source by file stem.
        const TRANSITIONS: &[(&str, &str)] = &[
            $(($file, include_str!(concat!("../../../lua/", $file, ".lua")))),*
        ];
        $(
            #[doc = concat!("`FCALL` name of `lua/", $file, ".lua`.")]
            pub static $name: LazyLock<String> = LazyLock::new(|| LIBRARY.function($file));
        )*
    };
}

transitions! {
    POOL_UPSERT => "pool_upsert",
    POOL_DELETE => "pool_delete",
    DEPOSIT => "deposit",
    TOKEN_DELETE => "token_delete",
    ACQUIRE => "acquire",
    RENEW => "renew",
    RELEASE => "release",
    ROTATE => "rotate",
    REVOKE => "revoke",
    RESTORE => "restore",
    DEPRECATE => "deprecate",
    REFRESH_ENQUEUE => "refresh_enqueue",
    FREEZE => "freeze",
    UNFREEZE => "unfreeze",
    REAP_LEASES => "reap_leases",
    RETURN_COOLED => "return_cooled",
    EXPIRE_TOKENS => "expire_tokens",
    SUNSET_TOKENS => "sunset_tokens",
    ENQUEUE_DUE => "enqueue_due",
    JOB_CLAIM => "job_claim",
    JOB_COMPLETE => "job_complete",
    JOB_FAIL => "job_fail",
    RESEAL => "reseal",
    POOL_RESEAL => "pool_reseal",
    POOL_ROTATE => "pool_rotate",
    POOL_ROTATE_CANCEL => "pool_rotate_cancel",
    POOL_OP => "pool_op",
    TOKEN_ROWS => "token_rows",
}

/// Not a pool transition (it touches the vault-wide event stream, with its own keys).
pub static PUBLISH_EVENT: LazyLock<String> = LazyLock::new(|| LIBRARY.function("publish_event"));
/// Answers `ok`: readiness checks that `FCALL` is allowed.
pub static PING: LazyLock<String> = LazyLock::new(|| LIBRARY.function("ping"));

pub static LIBRARY: LazyLock<Library> = LazyLock::new(|| {
    let mut code = format!("#!lua name=tokenvault_{VER}\n");
    for (_, src) in RULES {
        code.push_str(src);
        code.push('\n');
    }
    // Each transition body becomes a local function (its top-level `return` returns from it).
    for (file, src) in TRANSITIONS {
        code.push_str(&format!("local function t_{file}()\n{src}\nend\n"));
    }
    code.push_str(&format!(
        "local function t_publish_event()\n{}\nend\n",
        include_str!("../../../lua/publish_event.lua")
    ));
    for (file, _) in TRANSITIONS {
        code.push_str(&format!(
            "redis.register_function('tv_{VER}_{file}', function(keys, args) begin(keys, args) return t_{file}() end)\n"
        ));
    }
    code.push_str(&format!(
        "redis.register_function('tv_{VER}_publish_event', function(keys, args) KEYS, ARGV = keys, args return t_publish_event() end)\n\
         redis.register_function('tv_{VER}_ping', function() return 'ok' end)\n"
    ));
    let version = hex::encode(Sha256::digest(code.as_bytes()))[..12].to_string();
    Library {
        name: format!("tokenvault_{version}"),
        code: code.replace(VER, &version),
        version,
    }
});

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_library_names_carry_its_version() {
        let lib = &*LIBRARY;
        assert_eq!(lib.version.len(), 12);
        assert!(lib
            .code
            .starts_with(&format!("#!lua name=tokenvault_{}\n", lib.version)));
        assert_eq!(*ACQUIRE, format!("tv_{}_acquire", lib.version));
        assert!(!lib.code.contains(VER));
        assert_eq!(
            lib.code.matches("redis.register_function(").count(),
            TRANSITIONS.len() + 2
        );
    }
}
