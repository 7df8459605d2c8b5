"""The asyncio client (httpx.AsyncClient): the same calls as ``Vault``, awaited."""

from __future__ import annotations

import asyncio
from typing import Any, AsyncIterator, Callable, Dict, Generator, Iterable, List, Optional

import httpx
import httpx_sse

from . import _core, _http, _trace
from ._errors import LeaseGone, Unavailable, VaultError
from ._models import Event, Lease, Report


class _LeaseCall:
    """What ``AsyncVault.lease`` returns: await it for a Lease, or ``async with`` it to have the
    lease released (with the block's error reported) on exit."""

    def __init__(self, vault: "AsyncVault", pool: str, kw: Dict[str, Any]) -> None:
        self._vault, self._pool, self._kw = vault, pool, kw
        self._lease: Optional[Lease] = None

    def __await__(self) -> Generator[Any, None, Lease]:
        return self._vault._lease(self._pool, **self._kw).__await__()

    async def __aenter__(self) -> Lease:
        self._lease = await self._vault._lease(self._pool, **self._kw)
        return self._lease

    async def __aexit__(self, exc_type: Any, exc: Optional[BaseException], tb: Any) -> None:
        if self._lease is not None:
            await self._vault._end_on_exit(self._lease, exc)


class AsyncVault:
    """``async with AsyncVault(url, token) as vault: async with vault.lease("pool") as lease:``

    ``grpc="host:port"`` sends the worker's calls over gRPC, as for ``Vault``."""

    is_async = True

    def __init__(self, url: str, token: str, *, timeout: float = 10.0,
                 worker: Optional[str] = None,
                 transport: Optional[httpx.AsyncBaseTransport] = None,
                 verify: Any = True, grpc: Optional[str] = None,
                 grpc_secure: bool = False) -> None:
        self.url = url.rstrip("/")
        self.worker = worker
        self._timeout = timeout
        self._http = httpx.AsyncClient(
            base_url=self.url,
            headers={"Authorization": f"Bearer {token}", "User-Agent": _core.USER_AGENT},
            timeout=timeout, transport=transport, verify=verify, trust_env=False,
        )
        self._grpc = None
        if grpc:
            from ._grpc import AsyncGrpcCalls
            self._grpc = AsyncGrpcCalls(grpc, token, timeout, secure=grpc_secure)
        self.held = _core.HeldLeases()
        self._closed = asyncio.Event()
        self._watchers: List["asyncio.Task[None]"] = []

    async def _call(self, method: str, path: str, *, json: Any = None, params: Any = None,
                    headers: Optional[Dict[str, str]] = None,
                    timeout: Optional[float] = None) -> Any:
        headers = {**_trace.headers(), **(headers or {})}
        try:
            r = await self._http.request(method, path, json=json, params=params, headers=headers,
                                         timeout=timeout if timeout is not None else self._timeout)
        except httpx.TransportError as e:
            raise _core.unreachable(e) from None
        _core.raise_for_answer(r.status_code, r.headers, r.content)
        if r.status_code == 204 or not r.content:
            return None
        return r.json()

    async def _work(self, kind: str, pool: str, lease_id: str, body: Dict[str, Any],
                    key: Optional[str] = None,
                    timeout: Optional[float] = None) -> Dict[str, Any]:
        """A worker's call, over gRPC when the client has it, else REST (see ``Vault._work``)."""
        if self._grpc is not None:
            return await self._grpc.call(kind, pool, lease_id, body, key, timeout)
        path = (_core.pool_path(pool, "leases") if kind == "lease"
                else _core.pool_path(pool, "leases", lease_id, kind))
        headers = {"Idempotency-Key": key} if key else None
        return _core.as_dict(await self._call("POST", path, json=body, headers=headers,
                                              timeout=timeout) or {})

    async def _leasing(self, kind: str, pool: str, lease_id: str, body: Dict[str, Any],
                       key: str, timeout: Optional[float] = None) -> Dict[str, Any]:
        try:
            return await self._work(kind, pool, lease_id, body, key, timeout)
        except VaultError as e:
            if not _core.answer_lost(e):
                raise
            await asyncio.sleep(_core.LOST_ANSWER_RETRY_S)
            return await self._work(kind, pool, lease_id, body, key, timeout)

    def session_for(self, lease: Lease, **kw: Any) -> Any:
        """A ``requests.Session`` bound to ``lease`` (``lease.session()``; blocking)."""
        return _http.LeaseSession(lease, **kw)

    def client_for(self, lease: Lease, **kw: Any) -> _http.AsyncLeaseClient:
        """An ``httpx.AsyncClient`` bound to ``lease`` (``lease.client()``)."""
        return _http.AsyncLeaseClient(lease, **kw)

    def _held_lease(self, answer: Dict[str, Any]) -> Lease:
        lease = Lease.from_answer(answer, self)
        self.held.add(lease)
        return lease

    def lease(self, pool: str, **kw: Any) -> _LeaseCall:
        """Lease a token of ``pool`` (same keywords as ``Vault.lease``)."""
        return _LeaseCall(self, pool, kw)

    async def _lease(self, pool: str, *, worker: Optional[str] = None,
                     units: Optional[int] = None, ttl_s: Optional[int] = None,
                     min_token_ttl_s: Optional[int] = None, session: Optional[str] = None,
                     wait_ms: Optional[int] = None,
                     idempotency_key: Optional[str] = None,
                     costs: Optional[Dict[str, int]] = None,
                     pipeline: Optional[str] = None) -> Lease:
        body = _core.lease_body(worker or self.worker, units, ttl_s, min_token_ttl_s, session,
                                wait_ms, costs, pipeline)
        timeout = self._timeout + (wait_ms or 0) / 1000
        answer = await self._leasing("lease", pool, "", body,
                                     idempotency_key or _core.new_idempotency_key(), timeout)
        return self._held_lease(answer)

    async def renew(self, lease: Lease, *, ttl_s: Optional[int] = None,
                    units: Optional[int] = None) -> Lease:
        body = {k: v for k, v in (("ttl_s", ttl_s), ("units", units)) if v is not None}
        answer = await self._work("renew", lease.pool, lease.lease_id, body)
        lease.lease_expires_at = answer["lease_expires_at"]
        lease.units = int(answer["units"])
        lease.token_expires_at = answer.get("token_expires_at")
        return lease

    async def release(self, lease: Lease, report: Optional[Report] = None) -> None:
        report = report or lease.report("ok")
        try:
            await self._work("release", lease.pool, lease.lease_id, report.body())
        finally:
            lease._ended = True
            self.held.drop(lease.lease_id)

    async def rotate(self, lease: Lease, report: Optional[Report] = None) -> Lease:
        report = report or lease.report("unauthorized")
        old = lease.lease_id
        try:
            answer = await self._leasing("rotate", lease.pool, old, report.body(),
                                         _core.new_idempotency_key())
        except VaultError:
            lease._ended = True
            self.held.drop(old)
            raise
        self.held.drop(old)
        lease._become(Lease.from_answer(answer, self))
        self.held.add(lease)
        return lease

    async def _end_on_exit(self, lease: Lease, exc: Optional[BaseException]) -> None:
        if lease._ended:
            return
        try:
            await self.release(lease, _core.report_for_exception(lease, exc))
        except LeaseGone:
            if exc is None and lease.revoked is None:
                raise
        except VaultError:
            if exc is None:
                raise

    async def events(self, pools: Optional[Iterable[str]] = None,
                     last_event_id: Optional[str] = None,
                     on_open: Optional[Callable[[], None]] = None) -> AsyncIterator[Event]:
        """As ``Vault.events``: reconnects with ``Last-Event-ID``, marks revoked held leases."""
        pools = list(pools) if pools else None
        last = last_event_id
        backoff = _core.EVENTS_BACKOFF_S[0]
        while not self._closed.is_set():
            try:
                async for event in self._stream(pools, last, on_open):
                    if event.id:
                        last = event.id
                    backoff = _core.EVENTS_BACKOFF_S[0]
                    self.held.apply(event)
                    yield event
            except Unavailable:
                pass
            try:
                await asyncio.wait_for(self._closed.wait(), backoff)
                return
            except asyncio.TimeoutError:
                pass
            backoff = min(backoff * 2, _core.EVENTS_BACKOFF_S[1])

    async def _stream(self, pools: Optional[List[str]], last: Optional[str],
                      on_open: Optional[Callable[[], None]]) -> AsyncIterator[Event]:
        """One event stream (gRPC ``Watch`` or SSE) until it ends or breaks; ``on_open`` once it
        is open. Raises the vault's refusals."""
        if self._grpc is not None:
            stream = await self._grpc.watch(pools, last)
            if on_open is not None:
                on_open()
            async for event in stream:
                yield event
            return
        headers = {"Last-Event-ID": last} if last else {}
        try:
            async with httpx_sse.aconnect_sse(
                self._http, "GET", "/v1/events", params=_core.events_params(pools),
                headers=headers,
                timeout=httpx.Timeout(self._timeout, read=_core.EVENTS_READ_TIMEOUT_S),
            ) as es:
                r = es.response
                if r.status_code >= 400:
                    await r.aread()
                    _core.raise_for_answer(r.status_code, r.headers, r.content)
                if on_open is not None:
                    on_open()
                async for sse in es.aiter_sse():
                    ev = _core.event_from_sse(sse.event, sse.data, sse.id)
                    if ev is not None:
                        yield ev
        except (httpx.TransportError, httpx_sse.SSEError):
            pass

    async def watch(self, pools: Optional[Iterable[str]] = None,
                    timeout: float = 10.0) -> "asyncio.Task[None]":
        """Follow the events stream in a task (see ``Vault.watch``); returns once subscribed."""
        opened = asyncio.Event()

        async def run() -> None:
            try:
                async for _ in self.events(pools, on_open=opened.set):
                    pass
            except VaultError:
                opened.set()

        task = asyncio.get_running_loop().create_task(run())
        self._watchers.append(task)
        try:
            await asyncio.wait_for(opened.wait(), timeout)
        except asyncio.TimeoutError:
            pass
        return task

    async def put_pool(self, pool: str, **config: Any) -> Dict[str, Any]:
        return _core.as_dict(await self._call("PUT", _core.pool_path(pool), json=config))

    async def put_pipeline(self, pool: str, name: str, *, duration_s: int,
                     rps: Optional[float] = None, concurrency: Optional[int] = None,
                     units_per_request: Optional[int] = None,
                     min_token_ttl_s: Optional[int] = None, tokens: Optional[int] = None,
                     allow_partial: bool = False) -> Dict[str, Any]:
        """Create (or resize, restarting its deadline) pipeline ``name``: a share of ``pool``
        sized for ``rps`` x ``duration_s`` (and ``concurrency``), or ``tokens`` tokens. Its
        tokens are assigned before this returns. Raises InsufficientCapacity when the pool is
        short (unless ``allow_partial``)."""
        body = _core.pipeline_body(duration_s, rps, concurrency, units_per_request,
                                   min_token_ttl_s, tokens, allow_partial)
        return _core.as_dict(await self._call("PUT", _core.pool_path(pool, "pipelines", name),
                                              json=body))

    async def pipeline(self, pool: str, name: str) -> Dict[str, Any]:
        """Pipeline ``name``'s status (tokens, under_strength, rates, exhausts_at...)."""
        return _core.as_dict(await self._call("GET", _core.pool_path(pool, "pipelines", name)))

    async def end_pipeline(self, pool: str, name: str) -> int:
        """End pipeline ``name``: its tokens go back to the pool. Returns how many it held."""
        answer = await self._call("DELETE", _core.pool_path(pool, "pipelines", name))
        return int(_core.as_dict(answer).get("tokens_returned", 0))

    async def pool_status(self, pool: str) -> Dict[str, Any]:
        return _core.as_dict(await self._call("GET", _core.pool_path(pool, "status")))

    async def deposit(self, pool: str, tokens: List[Dict[str, Any]]) -> List[str]:
        answer = await self._call("POST", _core.pool_path(pool, "tokens"),
                                  json={"tokens": tokens})
        return [str(i) for i in answer["ids"]]

    async def revoke(self, pool: str, token_id: str, reason: str = "") -> Dict[str, Any]:
        return _core.as_dict(await self._call("POST",
                                              _core.pool_path(pool, "tokens", token_id, "revoke"),
                                              json={"reason": reason}))

    async def aclose(self) -> None:
        self._closed.set()
        for t in self._watchers:
            t.cancel()
        await self._http.aclose()
        if self._grpc is not None:
            await self._grpc.close()

    async def __aenter__(self) -> "AsyncVault":
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.aclose()
