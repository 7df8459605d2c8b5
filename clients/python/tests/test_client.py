"""The blocking client against a real vault: leases, reports, context manager, typed errors; each
test over REST and again with the worker's calls over gRPC (``Vault(..., grpc=...)``)."""

from __future__ import annotations

import threading

import pytest

from tokenvault import (InvalidRequest, LeaseGone, PoolExhausted, PoolFrozen, PoolNotFound,
                        Report, Unauthorized, Unavailable, Vault)


@pytest.fixture(params=["rest", "grpc"])
def transport(request):
    return request.param


@pytest.fixture
def vault(vault_server, transport):
    grpc = vault_server.grpc if transport == "grpc" else None
    with Vault(vault_server.url, vault_server.admin, worker="pytest", grpc=grpc) as v:
        yield v


def test_lease_renew_release_and_the_secret_stays_out_of_repr(vault, pool):
    vault.put_pool(pool, lease_ttl_s=30)
    vault.deposit(pool, [{"id": "t1", "secret": "s3cr3t-one"}])
    lease = vault.lease(pool)
    assert (lease.pool, lease.token_id, lease.secret) == (pool, "t1", "s3cr3t-one")
    assert lease.headers["Authorization"] == "Bearer s3cr3t-one"
    assert "s3cr3t" not in repr(lease)
    before = lease.lease_expires_at
    vault.renew(lease, ttl_s=60)
    assert lease.lease_expires_at > before
    with pytest.raises(PoolExhausted) as e:
        vault.lease(pool)
    assert e.value.status == 503 and e.value.retry_after is not None
    vault.release(lease, Report(outcome="ok", used=1))
    assert vault.pool_status(pool)["leases_active"] == 0
    with pytest.raises(LeaseGone):
        vault.release(lease)


def test_the_context_manager_releases_and_reports_a_target_error(vault, pool, target):
    import requests

    vault.put_pool(pool)
    vault.deposit(pool, [{"id": "t1", "secret": "tok-a"}])
    target.valid.add("tok-a")
    with vault.lease(pool) as lease:
        assert lease.session().get(target.url + "/x").status_code == 200
    assert vault.pool_status(pool)["leases_active"] == 0

    # A block that raises a target's 401 reports `unauthorized`: the token leaves rotation.
    target.revoked.add("tok-a")
    with pytest.raises(requests.HTTPError):
        with vault.lease(pool) as lease:
            r = requests.get(target.url + "/y", headers=lease.headers)
            r.raise_for_status()
    st = vault.pool_status(pool)
    assert st["leases_active"] == 0
    assert st["tokens"]["active"] == 0, st["tokens"]


def test_a_worker_bug_is_reported_without_striking_the_token(vault, pool):
    vault.put_pool(pool, quarantine_after_strikes=1)
    vault.deposit(pool, [{"id": "t1", "secret": "tok-b"}])
    for _ in range(3):
        with pytest.raises(KeyError):
            with vault.lease(pool):
                raise KeyError("oops")
    st = vault.pool_status(pool)
    assert st["tokens"]["active"] == 1 and st["tokens"]["quarantined"] == 0, st


def test_problems_are_typed(vault, pool, vault_server, transport):
    with pytest.raises(PoolNotFound) as e:
        vault.lease("no-such-pool")
    assert e.value.status == 404 and e.value.code == "pool_not_found"
    vault.put_pool(pool)
    with pytest.raises(InvalidRequest):
        vault.lease(pool, units=0)
    vault._call("POST", f"/v1/pools/{pool}/freeze", json={"reason": "test"})
    with pytest.raises(PoolFrozen):
        vault.lease(pool)
    over_grpc = transport == "grpc"
    with Vault(vault_server.url, "not-a-token",
               grpc=vault_server.grpc if over_grpc else None) as stranger:
        with pytest.raises(Unauthorized):
            stranger.lease(pool)
    with Vault("http://127.0.0.1:9", "x", timeout=1,
               grpc="127.0.0.1:9" if over_grpc else None) as nowhere:
        with pytest.raises(Unavailable) as e:
            nowhere.lease(pool)
        assert e.value.code == "vault_unreachable"


def test_rotate_gives_the_same_object_a_new_token(vault, pool):
    vault.put_pool(pool)
    vault.deposit(pool, [{"id": "t1", "secret": "one"}, {"id": "t2", "secret": "two"}])
    lease = vault.lease(pool)
    first, first_token = lease.lease_id, lease.token_id
    vault.rotate(lease, Report(outcome="unauthorized"))
    assert lease.lease_id != first and lease.token_id != first_token
    vault.release(lease)


def test_many_threads_never_share_a_token(vault, pool):
    """Concurrency limit 1: no two threads hold the same token at once. Four threads hold their
    first lease together (a barrier), so every token is busy at once while the others ask."""
    vault.put_pool(pool, max_leases_per_token=1)
    vault.deposit(pool, [{"id": f"t{i}", "secret": f"s{i}"} for i in range(4)])
    holding = set()
    lock = threading.Lock()
    errors = []
    peak = [0]
    together = threading.Barrier(4, timeout=120)
    granted = [0]

    def work(n: int) -> None:
        for i in range(15):
            try:
                # Far: a busy machine is slow, not wrong; an exhausted pool is a failure here.
                with vault.lease(pool, wait_ms=30000) as lease:
                    with lock:
                        if lease.token_id in holding:
                            errors.append(f"{lease.token_id} held twice")
                        holding.add(lease.token_id)
                        peak[0] = max(peak[0], len(holding))
                        granted[0] += 1
                    if n < 4 and i == 0:
                        together.wait()
                    with lock:
                        holding.discard(lease.token_id)
            except Exception as e:  # noqa: BLE001 - every failure is the test's
                errors.append(repr(e))

    threads = [threading.Thread(target=work, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(300)
    assert not errors, errors
    assert granted[0] == 8 * 15
    assert peak[0] == 4
    assert vault.pool_status(pool)["leases_active"] == 0


def test_a_pipeline_holds_its_share_and_a_short_pool_says_by_how_much(vault, pool):
    from tokenvault import InsufficientCapacity, PipelineNotFound

    vault.put_pool(pool)
    vault.deposit(pool, [{"id": f"t{i}", "secret": f"s{i}"} for i in range(3)])
    st = vault.put_pipeline(pool, "job", tokens=2, duration_s=600)
    assert (st["tokens"], st["phase"]) == (2, "live"), st
    lease = vault.lease(pool, pipeline="job")
    assert lease.pipeline == "job"
    # The free part of the pool is the one token left.
    free = vault.lease(pool)
    assert free.pipeline is None and free.token_id != lease.token_id
    with pytest.raises(PoolExhausted):
        vault.lease(pool)
    vault.release(free)
    with pytest.raises(InsufficientCapacity) as e:
        vault.put_pipeline(pool, "big", tokens=3, duration_s=600)
    assert (e.value.could, e.value.missing) == (1, 2), e.value.problem
    assert vault.end_pipeline(pool, "job") == 2
    with pytest.raises(PipelineNotFound):
        vault.lease(pool, pipeline="job")
    vault.release(lease)
