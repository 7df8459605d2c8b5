"""HTTP clients bound to a lease: they send the lease's headers through its bound proxy, and on
401 rotate the token (once) and send again; on 429 report the target's Retry-After and send
again with another token (once); the target's rate-limit headers go into the lease's report.

The rules are ``_core.after_target_answer``; these classes only carry them to each library.
A request whose body is a stream cannot be sent twice: send those with ``retries=0``.
"""

from __future__ import annotations

from typing import Any, Awaitable, Callable, Dict, Generic, Optional, TypeVar

import httpx

from . import _core
from ._errors import LeaseRevoked
from ._models import Lease


def _check(lease: Lease) -> None:
    if lease.revoked is not None:
        raise LeaseRevoked(lease.lease_id, lease.revoked)


def _headers(lease: Lease, given: Any) -> Dict[str, str]:
    h = dict(given or {})
    h.update(lease.headers)
    return h


try:
    import requests
except ImportError:  # pragma: no cover - requests is an optional extra
    requests = None  # type: ignore[assignment]


if requests is not None:

    class LeaseSession(requests.Session):
        """A ``requests.Session`` bound to a lease (``lease.session()``)."""

        def __init__(self, lease: Lease, *, retries: int = 1) -> None:
            super().__init__()
            self.lease = lease
            self.retries = retries

        def request(self, method: str, url: str, **kw: Any) -> "requests.Response":  # type: ignore[override]
            rotations = 0
            given = kw.pop("headers", None)
            while True:
                _check(self.lease)
                proxy = _core.proxies_for(self.lease)
                if proxy:
                    kw["proxies"] = {"http": proxy, "https": proxy}
                resp = super().request(method, url, headers=_headers(self.lease, given), **kw)
                report = _core.after_target_answer(self.lease, resp.status_code, resp.headers)
                if report is None or rotations >= self.retries:
                    return resp
                resp.close()
                rotations += 1
                self.lease._owner.rotate(self.lease, report)

else:  # pragma: no cover

    class LeaseSession:  # type: ignore[no-redef]
        def __init__(self, *a: Any, **kw: Any) -> None:
            raise ImportError("lease.session() needs requests: pip install 'tokenvault[requests]'")


C = TypeVar("C")
R = TypeVar("R")


class _Bound(Generic[C, R]):
    """What the sync and async httpx clients share: one httpx client per proxy the lease has been
    bound to, and the verbs. ``R`` is what ``request`` returns (an awaitable when async)."""

    _make: Callable[..., C]

    def __init__(self, lease: Lease, *, retries: int = 1, **client_kw: Any) -> None:
        self.lease = lease
        self.retries = retries
        self._kw = client_kw
        self._clients: Dict[Optional[str], C] = {}

    def _client(self) -> C:
        proxy = _core.proxies_for(self.lease)
        if proxy not in self._clients:
            self._clients[proxy] = self._make(proxy=proxy, **self._kw)
        return self._clients[proxy]

    def request(self, method: str, url: str, **kw: Any) -> R:
        raise NotImplementedError

    def get(self, url: str, **kw: Any) -> R:
        return self.request("GET", url, **kw)

    def post(self, url: str, **kw: Any) -> R:
        return self.request("POST", url, **kw)

    def put(self, url: str, **kw: Any) -> R:
        return self.request("PUT", url, **kw)

    def delete(self, url: str, **kw: Any) -> R:
        return self.request("DELETE", url, **kw)


class LeaseClient(_Bound[httpx.Client, httpx.Response]):
    """An ``httpx.Client`` bound to a lease (``lease.client()``): ``get``, ``post``... and
    ``request``; keyword arguments go to ``httpx.Client`` (one per proxy the lease is bound to)."""

    _make = httpx.Client

    def request(self, method: str, url: str, **kw: Any) -> httpx.Response:
        rotations = 0
        given = kw.pop("headers", None)
        while True:
            _check(self.lease)
            resp = self._client().request(method, url, headers=_headers(self.lease, given), **kw)
            report = _core.after_target_answer(self.lease, resp.status_code, resp.headers)
            if report is None or rotations >= self.retries:
                return resp
            resp.close()
            rotations += 1
            self.lease._owner.rotate(self.lease, report)

    def close(self) -> None:
        for c in self._clients.values():
            c.close()

    def __enter__(self) -> "LeaseClient":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


class AsyncLeaseClient(_Bound[httpx.AsyncClient, Awaitable[httpx.Response]]):
    """``LeaseClient`` for an ``AsyncVault`` lease (``httpx.AsyncClient`` underneath)."""

    _make = httpx.AsyncClient

    async def request(self, method: str, url: str, **kw: Any) -> httpx.Response:
        rotations = 0
        given = kw.pop("headers", None)
        while True:
            _check(self.lease)
            resp = await self._client().request(method, url, headers=_headers(self.lease, given),
                                                **kw)
            report = _core.after_target_answer(self.lease, resp.status_code, resp.headers)
            if report is None or rotations >= self.retries:
                return resp
            await resp.aclose()
            rotations += 1
            await self.lease._owner.rotate(self.lease, report)

    async def aclose(self) -> None:
        for c in self._clients.values():
            await c.aclose()

    async def __aenter__(self) -> "AsyncLeaseClient":
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.aclose()
