"""The caller's trace context reaches the vault (the client's ``otel`` extra): a lease made
inside a span comes back with that span's trace id, over REST and over gRPC, and names its
credential by fingerprint."""

from __future__ import annotations

import pytest

from tokenvault import Vault

pytest.importorskip("opentelemetry.sdk.trace")  # installed by scripts/setup.sh
from opentelemetry.sdk.trace import TracerProvider  # noqa: E402


@pytest.mark.parametrize("over", ["rest", "grpc"])
def test_a_lease_joins_the_callers_trace(vault_server, pool, over):
    tracer = TracerProvider().get_tracer("tokenvault-test")
    grpc = vault_server.grpc if over == "grpc" else None
    with Vault(vault_server.url, vault_server.admin, grpc=grpc) as vault:
        vault.put_pool(pool)
        vault.deposit(pool, [{"id": "t1", "secret": f"traced-{over}"}])
        with tracer.start_as_current_span("crawl") as span:
            lease = vault.lease(pool)
        want = format(span.get_span_context().trace_id, "032x")
        assert lease.trace_id == want
        assert lease.fingerprint.startswith("sha256:")
        lease.release()
        # Outside a span the vault starts its own trace.
        other = vault.lease(pool)
        assert other.trace_id and other.trace_id != want
        other.release()
