"""What the vault answers and what a worker reports, as plain dataclasses."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, Mapping, Optional

from ._headers import rate_limit_families

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
    #: The credential's ``sha256:`` fingerprint: how the audit trail and revocations name it.
    fingerprint: str = ""
    #: The trace id of the lease call (the caller's, with the ``otel`` extra; else the vault's).
    trace_id: Optional[str] = None
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
            fingerprint=body.get("fingerprint") or "",
            trace_id=body.get("trace_id"),
            _owner=owner,
        )

    def _become(self, other: "Lease") -> None:
        """Take over ``other``'s identity (after a rotate gave a new lease)."""
        for name in ("lease_id", "token_id", "secret", "token_expires_at", "lease_expires_at",
                     "units", "costs", "pipeline", "binding", "headers", "fingerprint", "trace_id"):
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
        """A ``requests.Session`` that sends this lease's headers through its bound proxy (made
        by the client that leased it)."""
        return self._owner.session_for(self, **kw)

    def client(self, **kw: Any) -> Any:
        """An ``httpx.Client`` (``httpx.AsyncClient`` for an ``AsyncVault`` lease) bound likewise."""
        return self._owner.client_for(self, **kw)

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
