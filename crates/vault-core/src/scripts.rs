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
    ("age", include_str!("../../../lua/rules/age.lua")),
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
    ("pipeline", include_str!("../../../lua/rules/pipeline.lua")),
    ("session", include_str!("../../../lua/rules/session.lua")),
    (
        "idempotency",
        include_str!("../../../lua/rules/idempotency.lua"),
    ),
    ("acquire", include_str!("../../../lua/rules/acquire.lua")),
    ("outcomes", include_str!("../../../lua/rules/outcomes.lua")),
];

/// One argument of a function: how Rust sends it and how the function's Lua reads it.
pub trait Arg {
    /// The Lua expression reading `ARGV[{n}]` as this type (`{n}` is replaced by the argument's
    /// first position, `{n+1}`... by the next ones of a wider argument).
    const LUA: &'static str;
    /// How many positions of `ARGV` it takes.
    const WIDTH: usize = 1;
    /// A list of every argument from here on (only last).
    const REST: bool = false;
    fn add_to(&self, argv: &mut Vec<Vec<u8>>);
}

/// How a transition's argument is read in Lua (see [`Arg`]).
struct ArgSpec {
    name: &'static str,
    lua: &'static str,
    width: usize,
    rest: bool,
}

impl Arg for String {
    const LUA: &'static str = "ARGV[{n}]";
    fn add_to(&self, argv: &mut Vec<Vec<u8>>) {
        argv.push(self.clone().into_bytes());
    }
}
impl Arg for u64 {
    const LUA: &'static str = "tonumber(ARGV[{n}])";
    fn add_to(&self, argv: &mut Vec<Vec<u8>>) {
        argv.push(self.to_string().into_bytes());
    }
}
impl Arg for i64 {
    const LUA: &'static str = "tonumber(ARGV[{n}])";
    fn add_to(&self, argv: &mut Vec<Vec<u8>>) {
        argv.push(self.to_string().into_bytes());
    }
}
/// A number, `nil` in Lua when absent.
macro_rules! optional_number {
    ($($t:ty),*) => {$(
        impl Arg for Option<$t> {
            const LUA: &'static str = "tonumber(ARGV[{n}])";
            fn add_to(&self, argv: &mut Vec<Vec<u8>>) {
                argv.push(self.map(|v| v.to_string()).unwrap_or_default().into_bytes());
            }
        }
    )*};
}
optional_number!(u64, i64);
impl Arg for bool {
    const LUA: &'static str = "ARGV[{n}] == '1'";
    fn add_to(&self, argv: &mut Vec<Vec<u8>>) {
        argv.push(if *self { b"1" } else { b"0" }.to_vec());
    }
}
/// A worker's report, as release and rotate receive it: in Lua one table, the shape
/// `do_release` (lua/rules/outcomes.lua) reads.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ReportArgs {
    /// None: every reserved unit.
    pub used: Option<u64>,
    pub outcome: String,
    pub retry_ms: Option<i64>,
    /// The target's remaining count (of the `default` quota).
    pub remaining: Option<u64>,
    /// When the target's window resets, unix ms.
    pub reset_at: Option<i64>,
    /// What the call cost, by dimension other than requests (JSON object; "" = none: each
    /// dimension counts what the lease reserved).
    pub costs: String,
    /// What the target said of named quotas: JSON `{name: {remaining?, reset_at? (ms)}}`, or "".
    pub quotas: String,
    /// What the target's headers said, by header family: JSON as `quotas`, or "".
    pub rate_limit: String,
}

impl Arg for ReportArgs {
    const LUA: &'static str = "{ used = tonumber(ARGV[{n}]), outcome = ARGV[{n+1}], \
        retry_after_ms = tonumber(ARGV[{n+2}]), remaining = tonumber(ARGV[{n+3}]), \
        reset_at = tonumber(ARGV[{n+4}]), costs = json_arg(ARGV[{n+5}]), \
        quotas = json_arg(ARGV[{n+6}]), rate_limit = json_arg(ARGV[{n+7}]) }";
    const WIDTH: usize = 8;
    fn add_to(&self, argv: &mut Vec<Vec<u8>>) {
        self.used.add_to(argv);
        self.outcome.add_to(argv);
        self.retry_ms.add_to(argv);
        self.remaining.add_to(argv);
        self.reset_at.add_to(argv);
        self.costs.add_to(argv);
        self.quotas.add_to(argv);
        self.rate_limit.add_to(argv);
    }
}

/// Bytes as they are (a sealed secret: nonce, ciphertext, tag), a Lua string in the function.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Blob(pub Vec<u8>);

impl Arg for Blob {
    const LUA: &'static str = "ARGV[{n}]";
    fn add_to(&self, argv: &mut Vec<Vec<u8>>) {
        argv.push(self.0.clone());
    }
}

/// A Lua list of the remaining arguments.
impl<T: Arg> Arg for Vec<T> {
    const LUA: &'static str = "";
    const REST: bool = true;
    fn add_to(&self, argv: &mut Vec<Vec<u8>>) {
        for a in self {
            a.add_to(argv);
        }
    }
}

/// A call of one transition: its arguments, by name, in the order the function reads them.
pub trait Function {
    /// The `FCALL` name.
    fn name() -> &'static str;
    /// The transition's file stem in `lua/` (`acquire`): what its trace span is named after.
    fn transition() -> &'static str;
    /// `ARGV[2..]` (`ARGV[1]` is the clock, added by the store).
    fn argv(&self) -> Vec<Vec<u8>>;
}

/// The Lua lines that make a transition's arguments locals named as the Rust fields.
fn arg_locals(args: &[ArgSpec]) -> String {
    let mut out = String::new();
    // ARGV[1] is the clock.
    let mut n = 2;
    for ArgSpec {
        name,
        lua,
        width,
        rest,
    } in args
    {
        if *rest {
            out.push_str(&format!(
                "local {name} = {{}} for i = {n}, #ARGV do {name}[#{name} + 1] = ARGV[i] end\n"
            ));
        } else {
            let mut read = lua.to_string();
            for k in 1..*width {
                read = read.replace(&format!("{{n+{k}}}"), &(n + k).to_string());
            }
            out.push_str(&format!(
                "local {name} = {}\n",
                read.replace("{n}", &n.to_string())
            ));
        }
        n += width;
    }
    out
}

/// Every transition: its file in `lua/`, its `FCALL` name, and its arguments as a struct (the
/// one place they are named: the function's Lua reads them as locals of the same names).
macro_rules! transitions {
    ($(
        $(#[$doc:meta])*
        $name:ident, $args:ident => $file:literal { $( $(#[$fdoc:meta])* $field:ident : $ty:ty ),* $(,)? }
    )*) => {
        /// Each transition's Lua source by file stem, with its arguments.
        const TRANSITIONS: &[(&str, &str, &[ArgSpec])] = &[
            $(($file, include_str!(concat!("../../../lua/", $file, ".lua")),
               &[$(ArgSpec {
                   name: stringify!($field),
                   lua: <$ty as Arg>::LUA,
                   width: <$ty as Arg>::WIDTH,
                   rest: <$ty as Arg>::REST,
               }),*])),*
        ];
        $(
            #[doc = concat!("`FCALL` name of `lua/", $file, ".lua`.")]
            pub static $name: LazyLock<String> = LazyLock::new(|| LIBRARY.function($file));

            $(#[$doc])*
            #[derive(Debug, Clone, Default)]
            pub struct $args { $( $(#[$fdoc])* pub $field: $ty ),* }

            impl Function for $args {
                fn name() -> &'static str {
                    $name.as_str()
                }
                fn transition() -> &'static str {
                    $file
                }
                #[allow(unused_mut)]
                fn argv(&self) -> Vec<Vec<u8>> {
                    let mut argv = Vec::new();
                    $( Arg::add_to(&self.$field, &mut argv); )*
                    argv
                }
            }
        )*
    };
}

transitions! {
    /// Create or replace a pool's config (`frozen` kept).
    POOL_UPSERT, PoolUpsert => "pool_upsert" {
        /// JSON object field → string value: the complete, validated config.
        fields: String,
    }
    /// Complete a pool written by an older vault: settings it lacks, this version's layout.
    POOL_COMPLETE, PoolComplete => "pool_complete" {
        /// JSON object field → string value: settings only (no refresh record).
        fields: String,
    }
    /// Start deleting a pool (its keys go in batches by `pool_op`).
    POOL_DELETE, PoolDelete => "pool_delete" {
        /// Delete even while it holds tokens.
        force: bool,
    }
    /// A deposit's first step: check a batch of tokens and reserve their ids.
    DEPOSIT_RESERVE, DepositReserve => "deposit_reserve" {
        /// JSON array of `{id, expires_at, quota_limit}`.
        tokens: String,
        /// The reservations' deadline, unix ms.
        reserved_until: i64,
    }
    /// A deposit's second step: write a batch of tokens reserved until `reserved_until`.
    DEPOSIT, Deposit => "deposit" {
        /// JSON array of sealed tokens without their secrets.
        tokens: String,
        reserved_until: i64,
        /// The tokens' sealed secrets, in the same order.
        secrets: Vec<Blob>,
    }
    /// Give back the reservations of a deposit that stopped.
    DEPOSIT_RELEASE, DepositRelease => "deposit_release" {
        reserved_until: i64,
        ids: Vec<String>,
    }
    /// Remove a token and everything that refers to it.
    TOKEN_DELETE, TokenDelete => "token_delete" { token_id: String }
    /// Lease one token of the pool.
    ACQUIRE, Acquire => "acquire" {
        lease_id: String,
        worker: String,
        /// At least 1.
        units: u64,
        /// Estimated cost by dimension other than requests (JSON object); "": the pool's
        /// `cost_estimates`.
        costs: String,
        /// None: the pool's `lease_ttl_s`.
        ttl_ms: Option<u64>,
        /// None: the pool's `min_token_ttl_s`.
        min_token_ttl_ms: Option<u64>,
        /// "": no sticky session.
        session: String,
        /// "": no idempotency key; else scoped to the client.
        idem: String,
        /// Fingerprint of the request: a reused key must come with the same request.
        idem_fp: String,
        /// "": the free part of the pool; else only that pipeline's tokens.
        pipeline: String,
    }
    /// Extend a live lease, optionally changing its units.
    RENEW, Renew => "renew" {
        lease_id: String,
        /// None: the lease's own ttl.
        ttl_ms: Option<u64>,
        /// None: unchanged.
        units: Option<u64>,
    }
    /// End a lease with the worker's report.
    RELEASE, Release => "release" { lease_id: String, report: ReportArgs }
    /// Release a lease with its report and lease a different token in one step.
    ROTATE, Rotate => "rotate" { lease_id: String, report: ReportArgs, new_lease_id: String }
    /// Revoke a token at once.
    REVOKE, Revoke => "revoke" { token_id: String, reason: String }
    /// Revoke every token of the pool holding the secret of this fingerprint.
    REVOKE_FINGERPRINT, RevokeFingerprint => "revoke_fingerprint" { fingerprint: String, reason: String, batch: u64 }
    /// Put a quarantined or cooling token back into rotation.
    RESTORE, Restore => "restore" { token_id: String }
    /// Staged rotation of one token.
    DEPRECATE, Deprecate => "deprecate" {
        token_id: String,
        /// None: no sunset.
        sunset_at: Option<i64>,
    }
    /// Take a token out of rotation and queue its refresh now.
    REFRESH_ENQUEUE, RefreshEnqueue => "refresh_enqueue" { token_id: String }
    /// The pool's kill switch.
    FREEZE, Freeze => "freeze" {
        /// End live leases too.
        end_leases: bool,
        reason: String,
        /// Leases ended per call at most.
        batch: u64,
    }
    /// Lift the kill switch.
    UNFREEZE, Unfreeze => "unfreeze" {}
    /// End leases whose deadline passed.
    REAP_LEASES, ReapLeases => "reap_leases" { batch: u64 }
    /// Put tokens whose cooldown ended back in rotation.
    RETURN_COOLED, ReturnCooled => "return_cooled" { batch: u64 }
    /// Move tokens about to expire out of rotation.
    EXPIRE_TOKENS, ExpireTokens => "expire_tokens" { batch: u64 }
    /// Revoke deprecated tokens whose sunset came.
    SUNSET_TOKENS, SunsetTokens => "sunset_tokens" { batch: u64 }
    /// Start the scheduled rotation of tokens past the pool's maximum age.
    ROTATE_AGED, RotateAged => "rotate_aged" { batch: u64 }
    /// How many tokens reach the pool's maximum age, by day.
    ROTATION_CALENDAR, RotationCalendar => "rotation_calendar" {
        /// The first day's midnight (UTC), unix ms.
        from_ms: i64,
        days: u64,
    }
    /// Queue the refresh of tokens whose preemptive refresh is due.
    ENQUEUE_DUE, EnqueueDue => "enqueue_due" { batch: u64 }
    /// Claim the next visible refresh job.
    JOB_CLAIM, JobClaim => "job_claim" {
        /// The external login workers' queue, not the refresher's.
        external: bool,
        job_id: String,
        visibility_ms: u64,
        /// None: no limit of jobs in flight for the pool.
        in_flight_limit: Option<u64>,
    }
    /// Store a refreshed credential, checked against the claim.
    JOB_COMPLETE, JobComplete => "job_complete" {
        job_id: String,
        secret: Blob,
        key_id: String,
        fingerprint: String,
        /// Unix ms, 0 = never.
        expires_at: i64,
        /// "": keep the current one.
        refresh_ct: String,
        refresh_key_id: String,
        /// For a credential too short-lived to enter rotation: when to try again, and the
        /// attempts allowed.
        retry_in_ms: u64,
        max_attempts: u64,
    }
    /// Record a failed refresh attempt.
    JOB_FAIL, JobFail => "job_fail" {
        job_id: String,
        /// Never a secret.
        error_text: String,
        /// None: a permanent failure.
        retry_in_ms: Option<u64>,
        max_attempts: u64,
    }
    /// Replace a token's ciphertexts with ones under the current master key (compare-and-set).
    RESEAL, Reseal => "reseal" {
        token_id: String,
        secret_read: Blob,
        secret: Blob,
        key_id: String,
        refresh_ct_read: String,
        /// "": leave it.
        refresh_ct: String,
        refresh_key_id: String,
        proxy_ct_read: String,
        /// "": leave it.
        proxy_ct: String,
        proxy_key_id: String,
    }
    /// Reseal the pool's default refresh settings (compare-and-set).
    POOL_RESEAL, PoolReseal => "pool_reseal" {
        refresh_read: String,
        refresh_ct_read: String,
        refresh: String,
        refresh_ct: String,
        refresh_key_id: String,
    }
    /// Start an emergency rotation.
    POOL_ROTATE, PoolRotate => "pool_rotate" {
        sunset_at: i64,
        reason: String,
        rotation_id: String,
    }
    /// Start rolling an emergency rotation back.
    POOL_ROTATE_CANCEL, PoolRotateCancel => "pool_rotate_cancel" {}
    /// One batch of the pool's running whole-pool operation.
    POOL_OP, PoolOp => "pool_op" {
        batch: u64,
        /// "": whichever runs.
        op_id: String,
    }
    /// Convert one batch of a pool written in an older layout (`vaultctl migrate`).
    MIGRATE_LAYOUT, MigrateLayout => "migrate_layout" { batch: u64 }
    /// Create or resize a pipeline, or start a dry run (the tokens move in `pipeline_step`).
    PIPELINE_PUT, PipelinePut => "pipeline_put" {
        name: String,
        /// Tokens it should hold (a dry run: tokens to find beyond those it holds).
        want: u64,
        /// Units one request takes (what a token must have room for).
        units: u64,
        /// Life a token must have left, ms.
        min_life_ms: u64,
        allow_partial: bool,
        /// The demand it was sized from (JSON, kept for status).
        demand: String,
        /// Who asks (audit name).
        actor: String,
        duration_ms: u64,
        dry: bool,
        /// Pipelines a pool may have.
        max_pipelines: u64,
    }
    /// One batch of whatever a pipeline needs now (assign, give back, top up, end).
    PIPELINE_STEP, PipelineStep => "pipeline_step" { name: String, batch: u64 }
    /// End a pipeline: its tokens go back in batches.
    PIPELINE_END, PipelineEnd => "pipeline_end" { name: String }
    /// Take what happened to the pool's pipelines, to announce it.
    PIPELINE_NEWS, PipelineNews => "pipeline_news" { max: u64 }
    /// Pipelines with their shares, sampled.
    PIPELINE_VIEW, PipelineView => "pipeline_view" {
        /// Tokens read per pipeline at most.
        sample: u64,
        /// None: every pipeline of the pool.
        names: Vec<String>,
    }
    /// Read tokens' fields and their quota as the rule sees it now.
    TOKEN_ROWS, TokenRows => "token_rows" {
        /// JSON list of field names.
        fields: String,
        ids: Vec<String>,
    }
}

/// Functions that only read: registered `no-writes` and called with `FCALL_RO`, which Redis
/// may also serve from a replica and never counts as a write.
pub const READ_ONLY: &[&str] = &["token_rows", "pipeline_view", "rotation_calendar"];

/// The `FCALL` names of [`READ_ONLY`], made once (asked on every call).
static READ_ONLY_NAMES: LazyLock<Vec<String>> =
    LazyLock::new(|| READ_ONLY.iter().map(|f| LIBRARY.function(f)).collect());

/// Whether the function called `name` (its `FCALL` name) only reads.
pub fn read_only(name: &str) -> bool {
    READ_ONLY_NAMES.iter().any(|f| f == name)
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
    // Each transition body becomes a function of the table `T` (its top-level `return` returns
    // from it): fields, not locals, because Lua allows a chunk 200 locals and the rules use
    // most of them.
    code.push_str("local T = {}\n");
    for (file, src, args) in TRANSITIONS {
        code.push_str(&format!(
            "T.{file} = function()\n{}{src}\nend\n",
            arg_locals(args)
        ));
    }
    code.push_str(&format!(
        "T.publish_event = function()\n{}\nend\n",
        include_str!("../../../lua/publish_event.lua")
    ));
    for (file, _, _) in TRANSITIONS {
        let flags = if READ_ONLY.contains(file) {
            "'no-writes'"
        } else {
            ""
        };
        code.push_str(&format!(
            "redis.register_function{{function_name = 'tv_{VER}_{file}', callback = function(keys, args) begin(keys, args) return T.{file}() end, flags = {{{flags}}}}}\n"
        ));
    }
    code.push_str(&format!(
        "redis.register_function('tv_{VER}_publish_event', function(keys, args) KEYS, ARGV = keys, args return T.publish_event() end)\n\
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

    fn words(src: &str) -> impl Iterator<Item = &str> {
        src.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
    }

    /// The layout version is written twice (Lua writes it, Rust checks it at start-up): held
    /// equal here.
    #[test]
    fn rust_and_lua_agree_on_the_layout_version() {
        let lua = format!("local LAYOUT_VERSION = '{}'", crate::store::LAYOUT_VERSION);
        assert!(LIBRARY.code.contains(&lua), "lua/rules/base.lua: {lua}");
    }

    /// The view states and the in-rotation rule's states are written in Lua (which keeps the
    /// sets) and in Rust (which counts them): held equal here.
    #[test]
    fn rust_and_lua_agree_on_the_view_states_and_the_rotation_states() {
        let quoted = |xs: &[&str]| {
            xs.iter()
                .map(|v| format!("'{v}'"))
                .collect::<Vec<_>>()
                .join(", ")
        };
        let views = format!(
            "local VIEW_STATES = {{ {} }}",
            quoted(&crate::model::VIEW_STATES)
        );
        assert!(
            LIBRARY.code.contains(&views),
            "lua/rules/placement.lua: {views}"
        );
        let rotation = crate::model::ROTATION_STATES
            .iter()
            .map(|s| format!("t.state == '{s}'"))
            .collect::<Vec<_>>()
            .join(" or ");
        let rule = format!("local function in_rotation(t) return {rotation} end");
        assert!(
            LIBRARY.code.contains(&rule),
            "lua/rules/placement.lua: {rule}"
        );
        let refinements = crate::model::ACTIVE_REFINEMENTS;
        let sub = format!(
            "local from_sub = from == '{}' or from == '{}'",
            refinements[0], refinements[1]
        );
        assert!(
            LIBRARY.code.contains(&sub),
            "lua/rules/placement.lua: {sub}"
        );
    }

    /// A transition's arguments are named once, in its struct: its Lua reads them only as the
    /// locals of those names (never `ARGV[n]`), uses every one, and none hides a rule.
    #[test]
    fn each_transition_reads_exactly_its_named_arguments() {
        let rules: Vec<&str> = RULES
            .iter()
            .flat_map(|(_, src)| src.lines())
            .filter_map(|l| l.strip_prefix("local function "))
            .filter_map(|l| l.split('(').next())
            .collect();
        assert!(
            rules.contains(&"min_ttl_ms") && rules.len() > 50,
            "{rules:?}"
        );
        for (file, src, args) in TRANSITIONS {
            let code: String = src
                .lines()
                .filter(|l| !l.trim_start().starts_with("--"))
                .collect::<Vec<_>>()
                .join("\n");
            assert!(!code.contains("ARGV"), "{file}.lua reads ARGV by position");
            for (i, ArgSpec { name, rest, .. }) in args.iter().enumerate() {
                assert!(
                    words(&code).any(|w| w == *name),
                    "{file}.lua never reads its argument `{name}`"
                );
                assert!(
                    !rules.contains(name),
                    "{file}: argument `{name}` would hide the rule function of that name"
                );
                assert!(
                    !rest || i == args.len() - 1,
                    "{file}: `{name}` must be last"
                );
            }
        }
    }

    #[test]
    fn arguments_go_in_declared_order_and_read_back_as_their_types() {
        let report = ReportArgs {
            used: None,
            outcome: "ok".into(),
            retry_ms: Some(1500),
            remaining: Some(0),
            reset_at: None,
            costs: r#"{"llm_tokens":7}"#.into(),
            quotas: String::new(),
            rate_limit: String::new(),
        };
        let call = Rotate {
            lease_id: "l1".into(),
            report,
            new_lease_id: "l2".into(),
        };
        let text = |argv: Vec<Vec<u8>>| -> Vec<String> {
            argv.into_iter()
                .map(|a| String::from_utf8(a).unwrap())
                .collect()
        };
        assert_eq!(
            text(call.argv()),
            [
                "l1",
                "",
                "ok",
                "1500",
                "0",
                "",
                r#"{"llm_tokens":7}"#,
                "",
                "",
                "l2"
            ]
        );
        assert_eq!(Rotate::name(), ROTATE.as_str());
        let rows = TokenRows {
            fields: "[]".into(),
            ids: vec!["a".into(), "b".into()],
        };
        assert_eq!(text(rows.argv()), ["[]", "a", "b"]);
        assert_eq!(text(PoolDelete { force: true }.argv()), ["1"]);
        let secret = JobComplete {
            secret: Blob(vec![0, 255, 10]),
            ..Default::default()
        };
        assert_eq!(secret.argv()[1], [0, 255, 10], "bytes go as they are");
        let spec = |name, lua, width, rest| ArgSpec {
            name,
            lua,
            width,
            rest,
        };
        let locals = arg_locals(&[
            spec("lease_id", String::LUA, 1, false),
            spec("units", <Option<u64>>::LUA, 1, false),
            spec("force", bool::LUA, 1, false),
            spec("report", ReportArgs::LUA, ReportArgs::WIDTH, false),
            spec("ids", <Vec<String>>::LUA, 1, true),
        ]);
        assert_eq!(
            locals,
            "local lease_id = ARGV[2]\nlocal units = tonumber(ARGV[3])\nlocal force = ARGV[4] == '1'\n\
             local report = { used = tonumber(ARGV[5]), outcome = ARGV[6], \
             retry_after_ms = tonumber(ARGV[7]), remaining = tonumber(ARGV[8]), \
             reset_at = tonumber(ARGV[9]), costs = json_arg(ARGV[10]), \
             quotas = json_arg(ARGV[11]), rate_limit = json_arg(ARGV[12]) }\n\
             local ids = {} for i = 13, #ARGV do ids[#ids + 1] = ARGV[i] end\n"
        );
    }

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
            lib.code.matches("redis.register_function").count(),
            TRANSITIONS.len() + 2
        );
    }

    /// The lease path reads a token with one HMGET of `TOKEN_HOT` (lua/rules/base.lua). Every
    /// field the rules and the lease transitions read of a token (`t.<field>`, `ct.<field>`) must
    /// be in that list, and every field in it must be read, so that a rule that starts reading a
    /// new field cannot be silently slowed (or a list entry outlive its last reader).
    #[test]
    fn the_lease_path_reads_every_token_field_it_uses() {
        // Read only by the refresh-job path, which loads whole tokens (`load_claim`,
        // `refresh_attempt_failed`, `renewable`; `by_login_workers` reads `rotation` only of a
        // token without a grant, which the lease path never queues); `err` is `fail`'s own
        // table, not a token.
        const ELSEWHERE: [&str; 5] = [
            "job_id",
            "generation",
            "refresh_attempts",
            "rotation",
            "err",
        ];
        let base = RULES[0].1;
        let hot_start = base
            .find("local TOKEN_HOT = {")
            .expect("TOKEN_HOT in base.lua");
        let hot_end = hot_start + base[hot_start..].find('}').unwrap();
        let hot: Vec<&str> = base[hot_start..hot_end]
            .split('\'')
            .skip(1)
            .step_by(2)
            .collect();
        assert!(hot.contains(&"state") && hot.contains(&"key_id"), "{hot:?}");
        let lease_path = ["acquire", "release", "renew", "rotate"];
        let code: String = RULES
            .iter()
            .map(|(_, src)| *src)
            .chain(
                TRANSITIONS
                    .iter()
                    .filter(|(f, _, _)| lease_path.contains(f))
                    .map(|(_, src, _)| *src),
            )
            .flat_map(str::lines)
            .filter(|l| !l.trim_start().starts_with("--"))
            .collect::<Vec<_>>()
            .join("\n");
        let mut read = std::collections::BTreeSet::new();
        for var in ["t.", "ct."] {
            for (at, _) in code.match_indices(var) {
                let before = code[..at].chars().next_back().unwrap_or(' ');
                if before.is_ascii_alphanumeric() || before == '_' || before == '.' {
                    continue;
                }
                let field: String = code[at + var.len()..]
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                    .collect();
                if !field.starts_with('_') && !ELSEWHERE.contains(&field.as_str()) {
                    read.insert(field);
                }
            }
        }
        // The quota rule reads its counters by name (`t[q.fu]`): the `default` quota's names
        // are the literals of `fu = '...'` and its kin in quotas_of (the other quotas' fields
        // are added to the read per pool, `use_quota_fields`).
        for var in ["fu = '", "fr = '", "fw = '"] {
            for (at, _) in code.match_indices(var) {
                let name: String = code[at + var.len()..]
                    .chars()
                    .take_while(|c| *c != '\'')
                    .collect();
                // `'u:' .. q.name`: another quota's, not a field of its own.
                if !name.ends_with(':') {
                    read.insert(name);
                }
            }
        }
        for field in &read {
            assert!(
                hot.contains(&field.as_str()),
                "the lease path reads token field `{field}`: add it to TOKEN_HOT"
            );
        }
        for field in &hot {
            assert!(
                read.contains(*field),
                "TOKEN_HOT lists `{field}`, which nothing on the lease path reads"
            );
        }
    }
}
