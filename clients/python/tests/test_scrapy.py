"""A real Scrapy crawl of a local target site that enforces its tokens (401 once revoked, 429
past its own quota), through the middleware and a real vault."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from conftest import PATIENCE_S, wait_until
from tokenvault import Vault

HERE = Path(__file__).parent
QUOTA = 12


def crawl(vault_server, pool, target, tmp_path, pages, per_slot=False, wait_ms=30000,
          extra_env=None):
    """Run crawl.py against ``target`` through the vault. A request waits up to ``wait_ms`` (the
    API's longest) for a token: on a busy machine the leases ahead of it are slow to come back,
    and a wait cut short drops a page, which these tests count."""
    out = tmp_path / "crawl.json"
    env = {**os.environ, "TOKENVAULT_URL": vault_server.url, "TOKENVAULT_TOKEN": vault_server.admin,
           "TOKENVAULT_POOL": pool, "CRAWL_TARGET": target.url, "CRAWL_PAGES": str(pages),
           "TOKENVAULT_PER_SLOT": "1" if per_slot else "0", "TOKENVAULT_WAIT_MS": str(wait_ms),
           **(extra_env or {})}
    run = subprocess.run([sys.executable, str(HERE / "crawl.py"), str(out)], env=env,
                         capture_output=True, text=True, timeout=240)
    assert run.returncode == 0, run.stdout + run.stderr
    (tmp_path / "crawl.log").write_text(run.stderr)
    return json.loads(out.read_text()), run.stderr


def make_pool(vault, pool, target, n):
    vault.put_pool(pool, quota_limit=QUOTA, quota_window_s=3600, max_leases_per_token=2)
    target.quota = QUOTA
    secrets = {f"t{i}": f"crawl-{pool}-{i}" for i in range(n)}
    vault.deposit(pool, [{"id": k, "secret": v} for k, v in secrets.items()])
    target.valid.update(secrets.values())
    return secrets


def test_a_crawl_finishes_without_a_revoked_token_or_going_past_quota(vault_server, pool,
                                                                      tmp_path):
    from conftest import Target

    target = Target(delay_s=0.02)
    vault = Vault(vault_server.url, vault_server.admin)
    secrets = make_pool(vault, pool, target, 6)
    revoked = {}

    def revoke_mid_crawl() -> None:
        # Once 10 requests reached the target, revoke the token of the latest one (the vault
        # first, then the target starts refusing it, as a real provider would).
        wait_until(PATIENCE_S, lambda: len(target.seen) >= 10, "10 requests at the target")
        secret = target.seen[-1][1]
        tid = next(k for k, v in secrets.items() if v == secret)
        vault.revoke(pool, tid, reason="leaked")
        target.revoked.add(secret)
        revoked["id"] = tid

    t = threading.Thread(target=revoke_mid_crawl, daemon=True)
    t.start()
    try:
        result, log = crawl(vault_server, pool, target, tmp_path, pages=40)
    finally:
        target.stop()
    t.join(5)
    assert "id" in revoked, "the crawl ended before the revocation"
    rows = result["rows"]
    # The crawl finished: every page answered 200.
    assert sorted(r["url"] for r in rows if r["status"] == 200) == sorted(
        f"{target.url}/page/{i}" for i in range(40)), (rows, log)
    # No request left with the revoked token after the middleware heard of the revocation.
    rid = revoked["id"]
    assert rid in result["revoked_at"], result
    assert result["last_attached"].get(rid, 0) <= result["revoked_at"][rid]
    # It did serve requests before (the revocation hit a token in use).
    assert any(tok == secrets[rid] for _, tok, _, _ in target.seen)
    # No token went past the target's quota: the vault never handed one out beyond it.
    assert all(st != 429 for _, _, st, _ in target.seen)
    per_token = {}
    for _, tok, st, _ in target.seen:
        if st == 200:
            per_token[tok] = per_token.get(tok, 0) + 1
    assert max(per_token.values()) <= QUOTA and len(per_token) >= 4, per_token
    assert vault.pool_status(pool)["leases_active"] == 0
    vault.close()


def test_a_crawl_through_a_pipeline_sized_from_its_settings(vault_server, pool, tmp_path):
    """The middleware creates the crawl's pipeline at open from its rate and duration settings
    (4 requests/s for 30 s at 12 requests per token: 10 tokens of the pool's 14), leases only
    from it, keeps every token under the target's quota, and ends it at close."""
    from conftest import Target
    from tokenvault import PipelineNotFound

    target = Target()
    vault = Vault(vault_server.url, vault_server.admin)
    make_pool(vault, pool, target, 14)
    env = {"TOKENVAULT_PIPELINE": "crawl", "TOKENVAULT_PIPELINE_RPS": "4",
           "TOKENVAULT_PIPELINE_DURATION_S": "30"}
    try:
        result, log = crawl(vault_server, pool, target, tmp_path, pages=60, extra_env=env)
    finally:
        target.stop()
    assert sum(1 for r in result["rows"] if r["status"] == 200) == 60, (result, log)
    assert all(st == 200 for _, _, st, _ in target.seen), target.seen
    per_token = {}
    for _, tok, _, _ in target.seen:
        per_token[tok] = per_token.get(tok, 0) + 1
    # Only the pipeline's ten tokens served, none past its quota.
    assert len(per_token) <= 10 and max(per_token.values()) <= QUOTA, per_token
    with pytest.raises(PipelineNotFound):
        vault.pipeline(pool, "crawl")
    actions = [e["action"] for e in vault._call("GET", "/v1/audit", params={"pool": pool})["events"]]
    assert "pipeline.create" in actions and "pipeline.end" in actions, actions
    vault.close()


def test_per_slot_leases_count_every_request_against_the_quota(vault_server, pool, tmp_path):
    from conftest import Target

    target = Target()
    vault = Vault(vault_server.url, vault_server.admin)
    make_pool(vault, pool, target, 5)
    try:
        result, log = crawl(vault_server, pool, target, tmp_path, pages=30, per_slot=True)
    finally:
        target.stop()
    assert sum(1 for r in result["rows"] if r["status"] == 200) == 30, (result, log)
    assert all(st == 200 for _, _, st, _ in target.seen)
    # The vault counted every request the target saw (units leased per slot, reported as sent).
    # It may count more, never less: a report's X-RateLimit-Remaining includes calls of other
    # leases of the token still out, which their own reports count again (the safe direction).
    used = sum(vault._call("GET", f"/v1/pools/{pool}/tokens/t{i}")["quota"]["used"]
               for i in range(5))
    assert len(target.seen) <= used <= 5 * QUOTA, (used, len(target.seen), log)
    assert vault.pool_status(pool)["leases_active"] == 0
    vault.close()


def test_requests_wait_out_an_exhausted_pool_instead_of_being_dropped(vault_server, pool,
                                                                     tmp_path):
    """One token, one lease at a time, eight requests at once, and lease calls that do not wait:
    most asks find the pool exhausted, sleep its Retry-After and ask again; every page arrives."""
    from conftest import Target

    target = Target(delay_s=0.05)
    vault = Vault(vault_server.url, vault_server.admin)
    vault.put_pool(pool, max_leases_per_token=1)
    vault.deposit(pool, [{"id": "only", "secret": f"only-{pool}"}])
    target.valid.add(f"only-{pool}")
    try:
        result, log = crawl(vault_server, pool, target, tmp_path, pages=6, wait_ms=0)
    finally:
        target.stop()
    assert sum(1 for r in result["rows"] if r["status"] == 200) == 6, (result, log)
    assert result["stats"].get("tokenvault/exhausted", 0) > 0, result["stats"]
    assert vault.pool_status(pool)["leases_active"] == 0
    vault.close()


def test_requests_wait_out_a_vault_that_cannot_answer(vault_server, pool, tmp_path):
    """The crawl starts while its vault replica is down: lease calls get no answer, and the
    requests wait, backing off, instead of being dropped; once the replica is up every page
    arrives."""
    import queue

    from conftest import Target, free_port

    target = Target()
    vault = Vault(vault_server.url, vault_server.admin)
    make_pool(vault, pool, target, 2)
    port = free_port()
    out = tmp_path / "crawl.json"
    env = {**os.environ, "TOKENVAULT_URL": f"http://127.0.0.1:{port}",
           "TOKENVAULT_TOKEN": vault_server.admin, "TOKENVAULT_POOL": pool,
           "CRAWL_TARGET": target.url, "CRAWL_PAGES": "6", "CRAWL_LOG_LEVEL": "INFO"}
    run = subprocess.Popen([sys.executable, str(HERE / "crawl.py"), str(out)], env=env,
                           stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    lines: "queue.Queue[str]" = queue.Queue()
    log = []
    threading.Thread(target=lambda: [lines.put(line) for line in run.stderr], daemon=True).start()
    replica = None
    try:
        # The replica comes up once a request has been told the vault cannot lease.
        while not any("cannot lease now" in line for line in log):
            try:
                log.append(lines.get(timeout=60))
            except queue.Empty:
                raise AssertionError("no request waited for the vault:\n" + "".join(log))
        replica = vault_server.replica(port)
        assert run.wait(timeout=120) == 0, "".join(log)
    finally:
        run.kill()
        if replica is not None:
            replica.stop()
        target.stop()
    result = json.loads(out.read_text())
    assert sorted(r["url"] for r in result["rows"] if r["status"] == 200) == sorted(
        f"{target.url}/page/{i}" for i in range(6)), result
    assert result["stats"].get("tokenvault/unavailable", 0) > 0, result["stats"]
    assert vault.pool_status(pool)["leases_active"] == 0
    vault.close()


def test_a_crawl_of_an_llm_style_api_stays_under_its_per_minute_limits(vault_server, pool,
                                                                       tmp_path):
    """Three keys, each allowed 15 requests and 900 tokens a minute by the target (60 a call),
    40 pages at once, and a pool that fills one key before the next (`pack`): the vault's two
    quotas per key hold both limits, and the middleware feeds the target's OpenAI-style headers
    back, so not one call gets 429."""
    from conftest import LlmTarget

    target = LlmTarget(rpm=15, tpm=900, cost=60)
    vault = Vault(vault_server.url, vault_server.admin)
    vault.put_pool(pool, max_leases_per_token=2, strategy="pack",
                   cost_estimates={"llm_tokens": 60}, quotas=[
        {"name": "rpm", "limit": 15, "window_s": 60, "kind": "sliding", "sync": "requests"},
        {"name": "tpm", "limit": 900, "window_s": 60, "cost": "llm_tokens", "sync": "tokens"},
    ])
    keys = {f"k{i}": f"llm-{pool}-{i}" for i in range(3)}
    vault.deposit(pool, [{"id": k, "secret": v} for k, v in keys.items()])
    target.valid.update(keys.values())
    try:
        result, log = crawl(vault_server, pool, target, tmp_path, pages=40)
    finally:
        target.stop()
    assert sum(1 for r in result["rows"] if r["status"] == 200) == 40, (result, log)
    assert [s for _, _, s, _ in target.seen if s != 200] == [], target.seen
    for k in keys:
        meta = vault._call("GET", f"/v1/pools/{pool}/tokens/{k}")
        quotas = {q["name"]: q for q in meta["quotas"]}
        assert quotas["rpm"]["used"] <= 15 and quotas["tpm"]["used"] <= 900, meta
    assert vault.pool_status(pool)["leases_active"] == 0
    vault.close()
