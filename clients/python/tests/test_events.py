"""The events stream: revocations reach held leases, and a dropped stream resumes where it
stopped (Last-Event-ID) so nothing published meanwhile is missed."""

from __future__ import annotations

import threading

import pytest

from conftest import PATIENCE_S, wait_until
from tokenvault import AsyncVault, LeaseRevoked, Vault


@pytest.mark.parametrize("over_grpc", [False, True], ids=["sse", "grpc-watch"])
def test_a_held_lease_whose_token_is_revoked_is_dropped(vault_server, pool, target, over_grpc):
    grpc = vault_server.grpc if over_grpc else None
    with Vault(vault_server.url, vault_server.admin, grpc=grpc) as vault:
        vault.put_pool(pool)
        vault.deposit(pool, [{"id": "t1", "secret": "soon-revoked"}])
        target.valid.add("soon-revoked")
        vault.watch([pool])
        with vault.lease(pool) as lease:
            session = lease.session()
            assert session.get(target.url + "/before").status_code == 200
            vault.revoke(pool, "t1", reason="leaked")
            wait_until(PATIENCE_S, lambda: lease.revoked is not None, "the revocation event")
            with pytest.raises(LeaseRevoked):
                session.get(target.url + "/after")
        # Nothing was sent with the revoked token after the revocation.
        assert [p for _, _, _, p in target.seen] == ["/before"]


def test_the_stream_resumes_after_its_replica_dies(vault_server, pool):
    replica = vault_server.replica()
    port = replica.port
    url = f"http://127.0.0.1:{port}"
    admin = Vault(vault_server.url, vault_server.admin)
    admin.put_pool(pool)
    admin.deposit(pool, [{"id": f"t{i}", "secret": f"s{i}"} for i in range(6)])
    seen = []
    got = threading.Condition()
    listener = Vault(url, vault_server.admin, timeout=2)
    opened = threading.Event()

    def listen() -> None:
        for ev in listener.events([pool], on_open=opened.set):
            with got:
                seen.append((ev.type, ev.token_id))
                got.notify_all()

    threading.Thread(target=listen, daemon=True).start()

    def wait_for(n: int) -> None:
        with got:
            assert got.wait_for(lambda: len(seen) >= n, timeout=PATIENCE_S), seen

    assert opened.wait(PATIENCE_S)
    admin.revoke(pool, "t0", reason="before")
    wait_for(1)
    opened.clear()
    replica.stop()
    # Published while the listener's replica is down...
    for i in (1, 2, 3):
        admin.revoke(pool, f"t{i}", reason="while-down")
    replica = vault_server.replica(port)
    assert opened.wait(PATIENCE_S), "the listener did not reconnect"
    # ...and after it is back.
    admin.revoke(pool, "t4", reason="after")
    wait_for(5)
    revoked = [t for kind, t in seen if kind == "token.revoked"]
    assert revoked[-4:] == ["t1", "t2", "t3", "t4"], seen
    listener.close()
    admin.close()
    replica.stop()


@pytest.mark.anyio
@pytest.mark.parametrize("over_grpc", [False, True], ids=["sse", "grpc-watch"])
async def test_async_events_mark_held_leases(vault_server, pool, over_grpc):
    import asyncio

    from tokenvault import PoolNotFound

    grpc = vault_server.grpc if over_grpc else None
    async with AsyncVault(vault_server.url, vault_server.admin, grpc=grpc) as vault:
        await vault.put_pool(pool)
        await vault.deposit(pool, [{"id": "t1", "secret": "a1"}, {"id": "t0", "secret": "a0"}])
        # Leases, renews, rotates and errors the same way over either transport.
        first = await vault.lease(pool)
        await vault.renew(first, ttl_s=60)
        before = first.lease_id
        await vault.rotate(first, first.report("ok"))
        assert first.lease_id != before
        await vault.release(first)
        with pytest.raises(PoolNotFound):
            await vault.lease(pool + "-missing")
        await vault.revoke(pool, "t0", reason="not this one")
        lease = await vault.lease(pool)
        assert lease.token_id == "t1"
        await vault.watch([pool])
        await vault.revoke(pool, "t1", reason="async")
        for _ in range(500):
            if lease.revoked is not None:
                break
            await asyncio.sleep(0.02)
        assert lease.revoked is not None


def test_a_lease_answered_after_its_revocation_was_heard_is_marked_at_once(monkeypatch):
    """The revoke can end a lease whose answer is still on its way: the client hears the events
    first, so it remembers them and marks the lease when it arrives (not after REMEMBER_S: a
    token id deposited again later is a new token)."""
    from tokenvault import _core
    from tokenvault._models import Event, Lease

    def lease(lease_id: str, token_id: str) -> Lease:
        return Lease.from_answer({"lease_id": lease_id, "pool": "p", "token_id": token_id,
                                  "secret": "s", "lease_expires_at": "2030-01-01T00:00:00Z",
                                  "units": 1}, owner=None)

    now = [1000.0]
    monkeypatch.setattr(_core.time, "monotonic", lambda: now[0])
    held = _core.HeldLeases()
    held.apply(Event(type="token.revoked", pool="p", at=1, token_id="t1", reason="leaked"))
    held.apply(Event(type="lease.revoked", pool="p", at=1, token_id="t2", lease_id="l9"))
    late, other, by_lease = lease("l1", "t1"), lease("l2", "t3"), lease("l9", "t2")
    for x in (late, other, by_lease):
        held.add(x)
    assert (late.revoked, other.revoked, by_lease.revoked) == ("leaked", None, "lease.revoked")
    now[0] += _core.HeldLeases.REMEMBER_S + 1
    again = lease("l3", "t1")
    held.add(again)
    assert again.revoked is None
