"""What the vault answers and what a worker reports, as plain dataclasses."""

from __future__ import annotations

import re
import time
from dataclasses import dataclass, field
from typing import Any, Dict, Mapping, Optional

OUTCOMES = ("ok", "unauthorized", "rate_limited", "forbidden", "suspect")


@dataclass
class Binding:
    """The proxy and fingerprint a token must be used with (its sticky identity)."""

    proxy: Optional[str] = None
    fingerprint: Optional[str] = None


@dataclass
class Report:
    """How a call with a leased token went (``POST .../release`` and ``.../rotate``)."""

    outcome: str = "ok"
    #: Units used; ``None`` = every unit the lease reserved.
    used: Optional[int] = None
    retry_after_s: Optional[float] = None
    #: What the target said is left of the token's quota, and when it resets (unix ms).
    remaining: Optional[int] = None
    reset_at: Optional[int] = None
    detail: Optional[str] = None
    #: What the call really cost, by cost dimension (``{"llm_tokens": 1234}``); a dimension left
    #: out counts what the lease reserved for it.
    costs: Optional[Dict[str, int]] = None
    #: What the target said of the pool's named quotas: ``{name: {"remaining", "reset_at"}}``.
    quotas: Optional[Dict[str, Dict[str, int]]] = None
    #: What the target's rate-limit headers said, by header family (``rate_limit_families``).
    rate_limit: Optional[Dict[str, Dict[str, int]]] = None

    def __post_init__(self) -> None:
        if self.outcome not in OUTCOMES:
            raise ValueError(f"outcome must be one of {', '.join(OUTCOMES)}, not {self.outcome!r}")

    def body(self) -> Dict[str, Any]:
        b: Dict[str, Any] = {"outcome": self.outcome}
        if self.used is not None:
            b["used"] = self.used
        if self.retry_after_s is not None:
            # The API takes whole seconds; round up so the cooldown is never shorter than asked.
            b["retry_after_s"] = max(0, int(-(-self.retry_after_s // 1)))
        if self.remaining is not None:
            b["remaining"] = self.remaining
        if self.reset_at is not None:
            b["reset_at"] = self.reset_at
        if self.detail:
            b["detail"] = self.detail[:500]
        for name in ("costs", "quotas", "rate_limit"):
            value = getattr(self, name)
            if value:
                b[name] = value
        return b


@dataclass(repr=False)
class Lease:
    """A leased token. ``secret`` and ``headers`` carry the credential: ``repr`` leaves them out.

    A lease is also a context manager (``with vault.lease("pool") as lease:``): it is released on
    exit, with the error reported when the block raised. After a rotate (401 mid-job, or a 429
    handled by ``session()``/``client()``) the same object holds the new lease.
    """

    lease_id: str
    pool: str
    token_id: str
    secret: str
    token_expires_at: Optional[str]
    lease_expires_at: str
    units: int
    binding: Binding
    headers: Dict[str, str]
    #: What the lease reserved by cost dimension (pools whose quotas count costs).
    costs: Dict[str, int] = field(default_factory=dict)
    #: The pipeline it was leased through, if any.
    pipeline: Optional[str] = None
    #: Set when the events stream said this lease's token (or the lease) was revoked.
    revoked: Optional[str] = None
    #: What the target's rate-limit headers said last (reported on release).
    remaining: Optional[int] = None
    reset_at: Optional[int] = None
    rate_limit: Dict[str, Dict[str, int]] = field(default_factory=dict)
    _owner: Any = field(default=None, compare=False)
    _ended: bool = field(default=False, compare=False)

    @classmethod
    def from_answer(cls, body: Mapping[str, Any], owner: Any) -> "Lease":
        b = body.get("binding") or {}
        return cls(
            lease_id=body["lease_id"],
            pool=body["pool"],
            token_id=body["token_id"],
            secret=body["secret"],
            token_expires_at=body.get("token_expires_at"),
            lease_expires_at=body["lease_expires_at"],
            units=int(body["units"]),
            binding=Binding(proxy=b.get("proxy"), fingerprint=b.get("fingerprint")),
            headers=dict(body.get("headers") or {}),
            costs={k: int(v) for k, v in (body.get("costs") or {}).items()},
            pipeline=body.get("pipeline"),
            _owner=owner,
        )

    def _become(self, other: "Lease") -> None:
        """Take over ``other``'s identity (after a rotate gave a new lease)."""
        for name in ("lease_id", "token_id", "secret", "token_expires_at", "lease_expires_at",
                     "units", "costs", "pipeline", "binding", "headers"):
            setattr(self, name, getattr(other, name))
        self.revoked = None
        self.remaining = None
        self.reset_at = None
        self.rate_limit = {}
        self._ended = False

    def read_rate_limit(self, headers: Mapping[str, str]) -> None:
        """Keep what the target's rate-limit headers said, for the report: every header family
        (``rate_limit_families``), and ``X-RateLimit-Remaining`` / ``X-RateLimit-Reset`` (or the
        IETF ``RateLimit-Remaining`` / ``-Reset``) as the ``default`` quota's."""
        families = rate_limit_families(headers)
        self.rate_limit.update(families)
        seen = families.get("x-ratelimit") or families.get("ratelimit") or {}
        if "remaining" in seen:
            self.remaining = seen["remaining"]
        if "reset_at" in seen:
            self.reset_at = seen["reset_at"]

    def report(self, outcome: str = "ok", **kw: Any) -> Report:
        """A report for this lease carrying the rate-limit headers seen last."""
        kw.setdefault("remaining", self.remaining)
        kw.setdefault("reset_at", self.reset_at)
        kw.setdefault("rate_limit", dict(self.rate_limit) or None)
        return Report(outcome=outcome, **kw)

    def __repr__(self) -> str:
        return (f"Lease(lease_id={self.lease_id!r}, pool={self.pool!r}, token_id={self.token_id!r}, "
                f"lease_expires_at={self.lease_expires_at!r}, units={self.units}, "
                f"binding={self.binding!r}, secret=[redacted])")

    # -- sync use -------------------------------------------------------------------------
    def __enter__(self) -> "Lease":
        return self

    def __exit__(self, exc_type: Any, exc: Optional[BaseException], tb: Any) -> None:
        self._owner._end_on_exit(self, exc)

    def renew(self, ttl_s: Optional[int] = None) -> Any:
        return self._owner.renew(self, ttl_s=ttl_s)

    def release(self, report: Optional[Report] = None) -> Any:
        """Release with ``report`` (default ``ok``). For an AsyncVault lease, await it."""
        return self._owner.release(self, report)

    def rotate(self, report: Optional[Report] = None) -> Any:
        return self._owner.rotate(self, report)

    def session(self, **kw: Any) -> Any:
        """A ``requests.Session`` that sends this lease's headers through its bound proxy."""
        from ._http import LeaseSession

        return LeaseSession(self, **kw)

    def client(self, **kw: Any) -> Any:
        """An ``httpx.Client`` (``httpx.AsyncClient`` for an ``AsyncVault`` lease) bound likewise."""
        if getattr(self._owner, "is_async", False):
            from ._http import AsyncLeaseClient

            return AsyncLeaseClient(self, **kw)
        from ._http import LeaseClient

        return LeaseClient(self, **kw)

    # -- async use (leases of an AsyncVault) ----------------------------------------------
    async def __aenter__(self) -> "Lease":
        return self

    async def __aexit__(self, exc_type: Any, exc: Optional[BaseException], tb: Any) -> None:
        await self._owner._end_on_exit(self, exc)


@dataclass
class Event:
    """One event of ``GET /v1/events``."""

    type: str
    pool: str
    at: int
    token_id: Optional[str] = None
    lease_id: Optional[str] = None
    reason: Optional[str] = None
    #: The stream position (``Last-Event-ID``); None for notices such as ``events.lost``.
    id: Optional[str] = None


def _header(headers: Mapping[str, str], *names: str) -> Optional[str]:
    for n in names:
        v = headers.get(n)
        if v is None and hasattr(headers, "items"):
            v = next((val for k, val in headers.items() if k.lower() == n), None)
        if v is not None:
            return v
    return None


def _count(value: Optional[str]) -> Optional[int]:
    if value is None:
        return None
    try:
        return max(0, int(float(value)))
    except ValueError:
        return None


_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h)")


def duration_s(value: str) -> Optional[float]:
    """A reset given as a duration, as OpenAI-style APIs send it (``6m0s``, ``1.5s``, ``20ms``),
    or as plain seconds; in seconds."""
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    parts = _DURATION.findall(value)
    if not parts or "".join(n + u for n, u in parts) != value:
        return None
    scale = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}
    return sum(float(n) * scale[u] for n, u in parts)


def _family(remaining: Optional[str], reset_ms: Optional[int]) -> Dict[str, int]:
    f: Dict[str, int] = {}
    r = _count(remaining)
    if r is not None:
        f["remaining"] = r
    if reset_ms is not None:
        f["reset_at"] = reset_ms
    return f


def _in_s(seconds: Optional[float]) -> Optional[int]:
    return None if seconds is None else int(time.time() * 1000 + seconds * 1000)


# One item of the IETF structured `RateLimit` field: "policy";r=50;t=30
_IETF_ITEM = re.compile(r'^\s*"?([A-Za-z0-9_.-]+)"?((?:\s*;\s*[a-z]+=[^;,]*)*)\s*$')


def rate_limit_families(headers: Mapping[str, str]) -> Dict[str, Dict[str, int]]:
    """What a target's answer says of its rate limits, by header family (a pool's quota follows
    one with ``sync``): ``{family: {"remaining", "reset_at" (unix ms)}}``.

    - ``x-ratelimit``: ``X-RateLimit-Remaining`` / ``X-RateLimit-Reset`` (GitHub and most APIs;
      the reset in epoch seconds, or seconds from now when small);
    - ``requests`` and ``tokens``: ``x-ratelimit-remaining-requests`` / ``x-ratelimit-reset-requests``
      and the ``-tokens`` pair (OpenAI-style; resets as durations like ``6m0s``);
    - ``ratelimit``: the IETF draft's ``RateLimit-Remaining`` / ``RateLimit-Reset`` (seconds);
    - ``ratelimit:<policy>``: each item of the IETF ``RateLimit`` field, ``"<policy>";r=..;t=..``.
    """
    out: Dict[str, Dict[str, int]] = {}

    def put(key: str, f: Dict[str, int]) -> None:
        if f:
            out[key] = f

    reset = _header(headers, "x-ratelimit-reset")
    put("x-ratelimit", _family(_header(headers, "x-ratelimit-remaining"),
                               reset_at_ms(reset) if reset is not None else None))
    for kind in ("requests", "tokens"):
        reset = _header(headers, f"x-ratelimit-reset-{kind}")
        put(kind, _family(_header(headers, f"x-ratelimit-remaining-{kind}"),
                          _in_s(duration_s(reset)) if reset is not None else None))
    reset = _header(headers, "ratelimit-reset")
    put("ratelimit", _family(_header(headers, "ratelimit-remaining"),
                             _in_s(_count(reset)) if reset is not None else None))
    field_value = _header(headers, "ratelimit")
    if field_value is not None:
        for item in field_value.split(","):
            m = _IETF_ITEM.match(item)
            if not m:
                continue
            params = dict(p.strip().split("=", 1) for p in m.group(2).split(";") if "=" in p)
            t = _count(params.get("t"))
            put("ratelimit:" + m.group(1).lower(),
                _family(params.get("r"), _in_s(t) if t is not None else None))
    return out


def reset_at_ms(value: str) -> Optional[int]:
    """A rate-limit reset header as unix ms: epoch seconds when it looks like one (GitHub and
    most APIs), otherwise seconds from now (the IETF ``RateLimit-Reset`` draft)."""
    try:
        n = float(value)
    except ValueError:
        return None
    if n < 0:
        return None
    if n >= 1_000_000_000:
        return int(n * 1000)
    return int(time.time() * 1000 + n * 1000)


def retry_after_s(headers: Mapping[str, str]) -> Optional[float]:
    """A target's ``Retry-After`` in seconds (delta seconds or an HTTP date)."""
    v = _header(headers, "retry-after")
    if v is None:
        return None
    try:
        return max(0.0, float(v))
    except ValueError:
        from email.utils import parsedate_to_datetime

        try:
            return max(0.0, parsedate_to_datetime(v).timestamp() - time.time())
        except (TypeError, ValueError):
            return None
