"""Lease-bound HTTP clients (requests and httpx) against a real vault, a real target that
enforces its tokens, and a real forward proxy."""

from __future__ import annotations

import pytest

from tokenvault import AsyncVault, Vault


@pytest.fixture
def vault(vault_server):
    with Vault(vault_server.url, vault_server.admin) as v:
        yield v


def token_state(vault, pool, token_id):
    return vault._call("GET", f"/v1/pools/{pool}/tokens/{token_id}")


@pytest.mark.parametrize("kind", ["requests", "httpx"])
def test_requests_go_through_the_bound_proxy_with_the_lease_headers(vault, pool, target, proxy,
                                                                    kind):
    vault.put_pool(pool)
    vault.deposit(pool, [{"id": "t1", "secret": "via-proxy", "binding": {"proxy": proxy.url}}])
    target.valid.add("via-proxy")
    with vault.lease(pool) as lease:
        http = lease.session() if kind == "requests" else lease.client()
        r = http.get(target.url + "/through")
        assert r.status_code == 200
        # The target's rate-limit headers are kept for the report.
        assert lease.remaining == target.quota - 1 and lease.reset_at is not None
    assert proxy.forwarded == [(target.url + "/through", "Bearer via-proxy")]
    t = token_state(vault, pool, "t1")
    assert t["quota"]["used"] == 1, t


@pytest.mark.parametrize("kind", ["requests", "httpx"])
def test_a_401_rotates_once_and_sends_again_with_another_token(vault, pool, target, kind):
    # `pack` hands out tokens in deposit order: the dead one comes first.
    vault.put_pool(pool, strategy="pack")
    vault.deposit(pool, [{"id": "dead", "secret": "dead-token"}])
    vault.deposit(pool, [{"id": "live", "secret": "live-token"}])
    target.valid.update({"dead-token", "live-token"})
    target.revoked.add("dead-token")
    with vault.lease(pool) as lease:
        assert lease.token_id == "dead"
        http = lease.session() if kind == "requests" else lease.client()
        r = http.get(target.url + "/a")
        assert r.status_code == 200
        assert lease.token_id == "live"
    assert token_state(vault, pool, "dead")["state"] != "active"
    statuses = [(tok, st) for _, tok, st, _ in target.seen]
    assert statuses == [("dead-token", 401), ("live-token", 200)]


@pytest.mark.parametrize("kind", ["requests", "httpx"])
def test_a_429_cools_the_token_for_the_targets_retry_after_and_takes_another(vault, pool, target,
                                                                             kind):
    target.quota = 0  # every token is over the target's own quota...
    vault.put_pool(pool, strategy="pack")
    vault.deposit(pool, [{"id": "a", "secret": "tok-a"}])
    vault.deposit(pool, [{"id": "b", "secret": "tok-b"}])
    target.valid.update({"tok-a", "tok-b"})
    with vault.lease(pool) as lease:
        http = lease.session() if kind == "requests" else lease.client()
        r = http.get(target.url + "/limited")
        # ...so after one retry with another token the 429 is the caller's.
        assert r.status_code == 429
        assert lease.token_id == "b"
    a = token_state(vault, pool, "a")
    assert a["state"] == "cooling", a
    assert [st for _, _, st, _ in target.seen] == [429, 429]


@pytest.mark.anyio
async def test_the_async_client_leases_and_sends(vault_server, pool, target, proxy):
    async with AsyncVault(vault_server.url, vault_server.admin) as vault:
        await vault.put_pool(pool)
        await vault.deposit(pool, [{"id": "t1", "secret": "async-tok",
                                    "binding": {"proxy": proxy.url}}])
        target.valid.add("async-tok")
        async with vault.lease(pool) as lease:
            async with lease.client() as http:
                r = await http.get(target.url + "/async")
            assert r.status_code == 200
        assert (await vault.pool_status(pool))["leases_active"] == 0
        lease = await vault.lease(pool)
        await lease.release()
        assert proxy.forwarded == [(target.url + "/async", "Bearer async-tok")]
