"""What the SDK reads from a target's rate-limit headers (every family the vault's quotas can
follow), and a pool whose quotas follow them: the vault's counts match the target's."""

from __future__ import annotations

import time

from tokenvault import Vault
from tokenvault._headers import duration_s, rate_limit_families


def test_every_header_family_is_read():
    now_ms = time.time() * 1000
    seen = rate_limit_families({
        "X-RateLimit-Remaining": "4999", "X-RateLimit-Reset": "1900000000",
        "x-ratelimit-remaining-requests": "59", "x-ratelimit-reset-requests": "1s",
        "x-ratelimit-remaining-tokens": "89000", "x-ratelimit-reset-tokens": "6m0s",
        "RateLimit-Remaining": "3", "RateLimit-Reset": "12",
        "RateLimit": '"burst";r=5;t=30, "daily";r=900;t=3600',
    })
    assert seen["x-ratelimit"] == {"remaining": 4999, "reset_at": 1_900_000_000_000}
    assert seen["requests"]["remaining"] == 59
    assert abs(seen["tokens"]["reset_at"] - (now_ms + 360_000)) < 5_000
    assert seen["ratelimit"]["remaining"] == 3
    assert seen["ratelimit:burst"]["remaining"] == 5
    assert abs(seen["ratelimit:daily"]["reset_at"] - (now_ms + 3_600_000)) < 5_000
    assert rate_limit_families({"x-ratelimit-remaining-tokens": "lots"}) == {}


def test_durations_read_as_providers_write_them():
    assert duration_s("6m0s") == 360
    assert duration_s("1.5s") == 1.5
    assert duration_s("20ms") == 0.02
    assert duration_s("1h2m") == 3720
    assert duration_s("7") == 7
    assert duration_s("soon") is None
    assert duration_s("5s and more") is None


def test_a_pools_quotas_follow_the_targets_headers(vault_server, pool):
    from conftest import LlmTarget, running

    vault = Vault(vault_server.url, vault_server.admin)
    vault.put_pool(pool, max_leases_per_token=1, cost_estimates={"llm_tokens": 100}, quotas=[
        {"name": "rpm", "limit": 10, "window_s": 60, "sync": "requests"},
        {"name": "tpm", "limit": 1000, "window_s": 60, "cost": "llm_tokens", "sync": "tokens"},
    ])
    vault.deposit(pool, [{"id": "k1", "secret": f"key-{pool}"}])
    for target in running(LlmTarget(rpm=10, tpm=1000, cost=250)):
        target.valid.add(f"key-{pool}")
        # The vault reserves 100 tokens a call; the target counts 250: after each call the
        # report carries the target's count, so the vault stops the key before the target would.
        calls = 0
        while True:
            try:
                lease = vault.lease(pool)
            except Exception as e:  # PoolExhausted once the key's minute is spent
                assert type(e).__name__ == "PoolExhausted", e
                break
            with lease:
                assert lease.costs == {"llm_tokens": 100}
                assert lease.session().get(target.url + f"/call/{calls}").status_code == 200
            calls += 1
            assert calls <= 4
        assert calls == 4 and all(st == 200 for _, _, st, _ in target.seen), target.seen
        meta = vault._call("GET", f"/v1/pools/{pool}/tokens/k1")
        tpm = next(q for q in meta["quotas"] if q["name"] == "tpm")
        assert tpm["used"] == 1000, meta
    vault.close()
