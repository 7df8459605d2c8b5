"""What the sync and async clients share: request shapes, answers, and the rules a lease-bound
HTTP client follows (one home each, so the two clients cannot drift apart)."""

from __future__ import annotations

import json
import threading
import time
import uuid
import weakref
from typing import Any, Dict, Iterable, List, Mapping, Optional, Tuple
from urllib.parse import quote

from ._errors import Unavailable, VaultError, error_from_answer
from ._headers import retry_after_s
from ._models import Event, Lease, Report

USER_AGENT = "tokenvault-python/0.1.0"

#: How long a worker waits before retrying a lease call whose answer was lost (the retry uses
#: the same Idempotency-Key, so it can never hand out a second lease).
LOST_ANSWER_RETRY_S = 0.2

#: Reconnect backoff of the events stream: doubles from the first value up to the second, and
#: starts over after an event arrives.
EVENTS_BACKOFF_S = (0.5, 30.0)
#: The vault sends a keep-alive every 15 s: a stream silent for longer is dead.
EVENTS_READ_TIMEOUT_S = 45.0


def pool_path(pool: str, *rest: str) -> str:
    parts = [quote(pool, safe="")] + [quote(r, safe="") for r in rest]
    return "/v1/pools/" + "/".join(parts)


def lease_body(worker: Optional[str], units: Optional[int], ttl_s: Optional[int],
               min_token_ttl_s: Optional[int], session: Optional[str],
               wait_ms: Optional[int], costs: Optional[Dict[str, int]] = None,
               pipeline: Optional[str] = None) -> Dict[str, Any]:
    body: Dict[str, Any] = {}
    for name, value in (("worker", worker), ("units", units), ("costs", costs or None),
                        ("ttl_s", ttl_s), ("min_token_ttl_s", min_token_ttl_s),
                        ("session", session), ("wait_ms", wait_ms), ("pipeline", pipeline)):
        if value is not None:
            body[name] = value
    return body


def pipeline_body(duration_s: int, rps: Optional[float], concurrency: Optional[int],
                  units_per_request: Optional[int], min_token_ttl_s: Optional[int],
                  tokens: Optional[int], allow_partial: bool) -> Dict[str, Any]:
    """A pipeline's demand as ``PUT /v1/pools/{pool}/pipelines/{name}`` takes it."""
    body: Dict[str, Any] = {"duration_s": duration_s}
    for name, value in (("rps", rps), ("concurrency", concurrency),
                        ("units_per_request", units_per_request),
                        ("min_token_ttl_s", min_token_ttl_s), ("tokens", tokens)):
        if value is not None:
            body[name] = value
    if allow_partial:
        body["allow_partial"] = True
    return body


def new_idempotency_key() -> str:
    return str(uuid.uuid4())


def as_dict(answer: Any) -> Dict[str, Any]:
    """A JSON object answer (typed as such for the caller)."""
    if not isinstance(answer, dict):
        raise Unavailable(0, "unexpected_answer", "the vault answered something that is not an object")
    return answer


def raise_for_answer(status: int, headers: Any, content: bytes) -> None:
    if status >= 400:
        raise error_from_answer(status, headers, content)


def unreachable(exc: BaseException) -> Unavailable:
    # The exception's text may name the URL but never a secret; keep only its kind.
    return Unavailable(0, "vault_unreachable", f"no answer from the vault ({type(exc).__name__})")


def answer_lost(err: VaultError) -> bool:
    """A lease call that may have happened without us hearing the answer: retry it once with the
    same Idempotency-Key. A `pool_exhausted` 503 is an answer, not a lost one."""
    return isinstance(err, Unavailable) and err.code in ("vault_unreachable", "redis_unavailable",
                                                         "redis_busy")


def report_for_exception(lease: Lease, exc: Optional[BaseException]) -> Report:
    """The report a lease's context manager sends on exit.

    An exception carrying a target's HTTP answer (requests' HTTPError, httpx's HTTPStatusError,
    TargetError) is reported by its status: 401 unauthorized, 403 forbidden, 429 rate_limited
    with the target's Retry-After. Any other exception says nothing about the token (a bug, the
    target down): it is reported with outcome ``ok`` and its type in ``detail``, so the units
    count against the quota and no token is struck for a worker's error.
    """
    if exc is None:
        return lease.report("ok")
    response = getattr(exc, "response", None)
    status = getattr(response, "status_code", None)
    headers: Mapping[str, str] = getattr(response, "headers", None) or {}
    if isinstance(status, int):
        report = after_target_answer(lease, status, headers)
        if report is not None:
            return report
        if status == 403:
            return lease.report("forbidden")
    return lease.report("ok", detail=f"worker error: {type(exc).__name__}")


def after_target_answer(lease: Lease, status: int, headers: Mapping[str, str]) -> Optional[Report]:
    """What a lease-bound HTTP client does with a target's answer: reads its rate-limit headers
    into the lease, and returns the report to rotate with (401: the token is refreshed and
    another one taken; 429: the token cools down for the target's Retry-After and another one is
    taken), or None to hand the answer to the caller."""
    lease.read_rate_limit(headers)
    if status == 401:
        return lease.report("unauthorized")
    if status == 429:
        return lease.report("rate_limited", retry_after_s=retry_after_s(headers))
    return None


def proxies_for(lease: Lease) -> Optional[str]:
    return lease.binding.proxy or None


class HeldLeases:
    """The leases a client holds, so the events stream can mark the ones whose token is revoked
    (``lease.revoked``); a lease-bound HTTP client refuses to send with a revoked lease.

    A lease granted just before its token was revoked can reach the client after the events that
    revoke it: the revocations heard in the last ``REMEMBER_S`` seconds are kept, and a lease
    added meanwhile for a token or lease among them is marked at once. (Not longer: a token id
    deleted and deposited again later is a new token.)"""

    REMEMBER_S = 30.0

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._leases: "weakref.WeakValueDictionary[str, Lease]" = weakref.WeakValueDictionary()
        # (pool, "token"|"lease", id) -> (when it was heard, the reason), oldest first.
        self._revoked: "Dict[Tuple[str, str, str], Tuple[float, str]]" = {}

    def _forget_old(self, now: float) -> None:
        while self._revoked:
            first = next(iter(self._revoked))
            if now - self._revoked[first][0] <= self.REMEMBER_S:
                return
            del self._revoked[first]

    def _revocation_of(self, lease: Lease) -> Optional[str]:
        self._forget_old(time.monotonic())
        for key in ((lease.pool, "token", lease.token_id), (lease.pool, "lease", lease.lease_id)):
            if key in self._revoked:
                return self._revoked[key][1]
        return None

    def add(self, lease: Lease) -> None:
        with self._lock:
            self._leases[lease.lease_id] = lease
            reason = self._revocation_of(lease)
        if reason is not None:
            lease.revoked = reason

    def drop(self, lease_id: str) -> None:
        with self._lock:
            self._leases.pop(lease_id, None)

    def apply(self, ev: Event) -> List[Lease]:
        """Mark the leases ``ev`` revokes; returns them."""
        if ev.type not in ("token.revoked", "lease.revoked"):
            return []
        reason = ev.reason or ev.type
        with self._lock:
            kind = "token" if ev.type == "token.revoked" else "lease"
            ident = ev.token_id if kind == "token" else ev.lease_id
            if ident:
                now = time.monotonic()
                self._forget_old(now)
                self._revoked.pop((ev.pool, kind, ident), None)
                self._revoked[(ev.pool, kind, ident)] = (now, reason)
            held = list(self._leases.values())
        hit = [
            lease for lease in held
            if lease.pool == ev.pool
            and ((ev.type == "token.revoked" and lease.token_id == ev.token_id)
                 or (ev.type == "lease.revoked" and lease.lease_id == ev.lease_id))
        ]
        for lease in hit:
            lease.revoked = reason
        return hit


def events_params(pools: Optional[Iterable[str]]) -> Dict[str, str]:
    return {"pools": ",".join(pools)} if pools else {}


def event_from_sse(kind: str, data: str, sse_id: str) -> Optional[Event]:
    if not data:
        return None
    body = json.loads(data)
    return Event(
        type=body.get("type") or kind,
        pool=body.get("pool", ""),
        at=int(body.get("at", 0)),
        token_id=body.get("token_id"),
        lease_id=body.get("lease_id"),
        reason=body.get("reason"),
        id=sse_id or None,
    )


def slot_of(url: str) -> str:
    """Scrapy's default download slot for a URL: its host."""
    from urllib.parse import urlsplit

    return urlsplit(url).hostname or ""
