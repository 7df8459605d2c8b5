"""Checks of our own for the API fuzz test (loaded through SCHEMATHESIS_HOOKS=hooks)."""

import re

import schemathesis

# Answers a schema-valid request may get besides success: they depend on state, not on the
# request (see schemathesis.toml).
STATE_DEPENDENT = {404, 409, 410, 422, 423, 503}

# Rules the document states in its descriptions but a JSON Schema property cannot carry: rules
# between fields of one body, and rules relative to the present (each is stated where the
# fields are described). A 400 naming one of these is the only 400 a schema-valid request may
# get.
CROSS_FIELD_RULES = [
    # TokenInput.expires_at: a deposit of a credential already expired
    r"token \S+ has already expired",
    # QuotaInput.name: `default` is the name of the quota_limit shorthand
    r"quota name \"default\" is the shorthand's",
    # PipelineInput.tokens
    r"give either tokens, or the demand \(rps, concurrency\), not both",
    r"a pipeline needs its demand \(rps and/or concurrency\) or a tokens count",
    # QuotaInput.buckets, QuotaInput.anchor: what only one kind of window has
    r"only a sliding window has buckets",
    r"only a clock_aligned window has an anchor",
    # PoolConfigInput.cost_estimates: a quota counting a named cost needs its estimate
    r"it counts \S+, so cost_estimates\.\S+ must say what a lease is expected to cost",
    # PoolConfigInput.cost_estimates, quotas: estimates for counted costs, names unique
    r"cost_estimates\.\S+: no quota counts",
    r"quotas\.\S+: two quotas have this name",
    # PoolConfigInput: lease_ttl_s within max_lease_ttl_s, refresh before leaving rotation
    r"lease_ttl_s must be between 1 and \d+, got \d+",
    r"refresh_margin_s \(\d+\) must be at least min_token_ttl_s",
    # QuotaInput.reserve, PoolConfigInput.quota_reserve: below the limit
    r"reserve \(\d+\) must be below (its limit|quota_limit)",
    # RefreshInput: what each grant needs (the token's own, or its pool's)
    r"refresh kind oauth2_\w+ needs token_url",
]


@schemathesis.check
def only_documented_503(ctx, response, case):
    """A 503 is an answer only when nothing in the pool is eligible; any other is an error."""
    if response.status_code == 503:
        code = response.json().get("code")
        assert code == "pool_exhausted", f"503 with code {code!r}"
    return None


@schemathesis.check
def schema_valid_requests_are_accepted(ctx, response, case):
    """A request the document calls valid is not refused as invalid: the document states
    every bound the server checks (a cross-field rule only in words, listed above)."""
    meta = case.meta
    if meta is None or not meta.generation.mode.is_positive:
        return None
    status = response.status_code
    if status < 400 or status in STATE_DEPENDENT:
        return None
    try:
        detail = response.json().get("detail", "")
    except ValueError:
        detail = response.text
    if status == 400 and any(re.search(rule, detail) for rule in CROSS_FIELD_RULES):
        return None
    raise AssertionError(f"a schema-valid request was answered {status}: {detail}")


@schemathesis.hook
def before_call(context, case, kwargs):
    """A lease may wait up to `wait_ms` (30 s) for a token, and the fuzzed pool is mostly
    exhausted: a short wait takes the same path without making the run wait minutes (every
    phase calls through here, the coverage phase's boundary values included)."""
    body = case.body
    if isinstance(body, dict) and isinstance(body.get("wait_ms"), int) and body["wait_ms"] > 50:
        body["wait_ms"] = 50
