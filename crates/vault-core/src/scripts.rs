//! The Lua script registry. Each script is `lua/prelude.lua` + its own file, embedded at build
//! time and built once (`LazyLock`), then called by SHA (`EVALSHA`, reloading on `NOSCRIPT`).
//! There is no non-atomic fallback: a Redis that refuses scripts makes the vault fail closed.

use std::sync::LazyLock;

use redis::Script;

macro_rules! scripts {
    ($($name:ident => $file:literal),* $(,)?) => {
        $(
            pub static $name: LazyLock<Script> = LazyLock::new(|| {
                Script::new(concat!(
                    include_str!("../../../lua/prelude.lua"),
                    "\n",
                    include_str!(concat!("../../../lua/", $file))
                ))
            });
        )*

        /// Every script with its file name, for loading at start-up and readiness checks.
        pub fn all() -> Vec<(&'static str, &'static Script)> {
            vec![$(($file, &*$name)),*, ("publish_event.lua", &*PUBLISH_EVENT)]
        }
    };
}

/// Not a pool transition (it touches the vault-wide event stream), so it has no prelude.
pub static PUBLISH_EVENT: LazyLock<Script> =
    LazyLock::new(|| Script::new(include_str!("../../../lua/publish_event.lua")));

scripts! {
    POOL_UPSERT => "pool_upsert.lua",
    POOL_DELETE => "pool_delete.lua",
    DEPOSIT => "deposit.lua",
    TOKEN_DELETE => "token_delete.lua",
    ACQUIRE => "acquire.lua",
    RENEW => "renew.lua",
    RELEASE => "release.lua",
    ROTATE => "rotate.lua",
    REVOKE => "revoke.lua",
    RESTORE => "restore.lua",
    DEPRECATE => "deprecate.lua",
    REFRESH_ENQUEUE => "refresh_enqueue.lua",
    FREEZE => "freeze.lua",
    UNFREEZE => "unfreeze.lua",
    REAP_LEASES => "reap_leases.lua",
    RETURN_COOLED => "return_cooled.lua",
    EXPIRE_TOKENS => "expire_tokens.lua",
    SUNSET_TOKENS => "sunset_tokens.lua",
    ENQUEUE_DUE => "enqueue_due.lua",
    JOB_CLAIM => "job_claim.lua",
    JOB_COMPLETE => "job_complete.lua",
    JOB_FAIL => "job_fail.lua",
    RESEAL => "reseal.lua",
    POOL_RESEAL => "pool_reseal.lua",
    POOL_ROTATE => "pool_rotate.lua",
    POOL_ROTATE_CANCEL => "pool_rotate_cancel.lua",
    POOL_OP => "pool_op.lua",
}
