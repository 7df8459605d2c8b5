"""Problem answers (RFC 9457) as typed exceptions.

Every error the vault answers carries a stable ``code``; each code the client can act on has its
own class, so ``except PoolExhausted as e: time.sleep(e.retry_after)`` reads as what it does.
"""

from __future__ import annotations

from typing import Any, Dict, Optional, Type


class VaultError(Exception):
    """An error answer of the vault (or no answer at all: ``status`` 0)."""

    def __init__(
        self,
        status: int,
        code: str,
        detail: str,
        retry_after: Optional[float] = None,
        problem: Optional[Dict[str, Any]] = None,
    ) -> None:
        super().__init__(f"{code} ({status}): {detail}" if status else f"{code}: {detail}")
        self.status = status
        self.code = code
        self.detail = detail
        #: Seconds to wait before trying again, when the vault said (``Retry-After``).
        self.retry_after = retry_after
        self.problem = problem or {}


class InvalidRequest(VaultError):
    """400/413/422: the request itself is wrong; sending it again will not help."""


class Unauthorized(VaultError):
    """401: the client token is missing, expired, revoked or not for this vault."""


class Forbidden(VaultError):
    """403: the client token lacks the scope or the pool."""


class NotFound(VaultError):
    """404: no such pool, token or job."""


class PoolNotFound(NotFound):
    pass


class TokenNotFound(NotFound):
    pass


class Conflict(VaultError):
    """409: the state does not allow it now (a pool operation runs, a token exists...)."""


class PipelineNotFound(NotFound):
    """404: no such pipeline in the pool (never created, or ended)."""


class PipelineNotReady(Conflict):
    """409: the pipeline's tokens are still being assigned; retry when it is complete."""


class InsufficientCapacity(Conflict):
    """409: the pool holds fewer eligible tokens than the pipeline needs; nothing was assigned.

    ``could`` (tokens it could have had), ``missing``, and ``next_free_at`` (RFC 3339, or None)
    say by how much and until when."""

    @property
    def capacity(self) -> Dict[str, Any]:
        c = self.problem.get("capacity")
        return c if isinstance(c, dict) else {}

    @property
    def could(self) -> int:
        return int(self.capacity.get("could", 0))

    @property
    def missing(self) -> int:
        return int(self.capacity.get("missing", 0))

    @property
    def next_free_at(self) -> Optional[str]:
        v = self.capacity.get("next_free_at")
        return str(v) if v else None


class LeaseGone(VaultError):
    """410: the lease ended (expired, released, or its token revoked)."""


class LeaseRevoked(LeaseGone):
    """The lease's token was revoked (seen on the events stream); the lease must not be used."""

    def __init__(self, lease_id: str, reason: str = "") -> None:
        super().__init__(410, "lease_revoked", f"lease {lease_id}: its token was revoked {reason}".strip())
        self.lease_id = lease_id


class PoolFrozen(VaultError):
    """423: the pool's kill switch is on: no new leases."""


class Unavailable(VaultError):
    """503 (or no answer): the vault or its Redis cannot serve now; retry after ``retry_after``."""


class PoolExhausted(Unavailable):
    """503 ``pool_exhausted``: no token is eligible now; ``retry_after`` says when one may be."""


_BY_CODE: Dict[str, Type[VaultError]] = {
    "invalid_request": InvalidRequest,
    "invalid_json": InvalidRequest,
    "payload_too_large": InvalidRequest,
    "idempotency_mismatch": InvalidRequest,
    "unauthorized": Unauthorized,
    "forbidden": Forbidden,
    "pool_not_found": PoolNotFound,
    "token_not_found": TokenNotFound,
    "not_found": NotFound,
    "conflict": Conflict,
    "pipeline_not_found": PipelineNotFound,
    "pipeline_not_ready": PipelineNotReady,
    "insufficient_capacity": InsufficientCapacity,
    "idempotency_conflict": Conflict,
    "lease_gone": LeaseGone,
    "pool_frozen": PoolFrozen,
    "pool_exhausted": PoolExhausted,
    "too_many_connections": Unavailable,
}

_BY_STATUS: Dict[int, Type[VaultError]] = {
    400: InvalidRequest,
    401: Unauthorized,
    403: Forbidden,
    404: NotFound,
    409: Conflict,
    410: LeaseGone,
    413: InvalidRequest,
    422: InvalidRequest,
    423: PoolFrozen,
    503: Unavailable,
}


def _retry_after(value: Optional[str]) -> Optional[float]:
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        return None  # an HTTP date: the vault never sends one


def error_from_answer(status: int, headers: Any, body: bytes) -> VaultError:
    """The exception for an error answer (``headers`` is any mapping with ``get``)."""
    import json

    problem: Dict[str, Any] = {}
    try:
        parsed = json.loads(body) if body else {}
        if isinstance(parsed, dict):
            problem = parsed
    except ValueError:
        pass
    code = str(problem.get("code") or f"http_{status}")
    detail = str(problem.get("detail") or problem.get("title") or f"HTTP {status}")
    cls = _BY_CODE.get(code) or _BY_STATUS.get(status) or VaultError
    return cls(status, code, detail, _retry_after(headers.get("retry-after")), problem)
