"""The blocking client (httpx)."""

from __future__ import annotations

import threading
import time
from typing import Any, Callable, Dict, Iterable, Iterator, List, Optional

import httpx
import httpx_sse

from . import _core, _http, _trace
from ._errors import LeaseGone, Unavailable, VaultError
from ._models import Event, Lease, Report


class Vault:
    """A tokenvault client: ``Vault("http://vault:8080", client_token)``.

    With ``grpc="host:port"`` (the vault's ``TV_GRPC_LISTEN_ADDR``; ``grpc_secure`` for TLS), the
    worker's calls (lease, renew, release, rotate, events) go over gRPC, with the same answers and
    exceptions; the rest stays on REST. It needs ``pip install 'tokenvault[grpc]'``.

    Thread-safe (one ``httpx.Client`` underneath). Use as a context manager or call ``close``.
    """

    is_async = False

    def __init__(self, url: str, token: str, *, timeout: float = 10.0,
                 worker: Optional[str] = None, transport: Optional[httpx.BaseTransport] = None,
                 verify: Any = True, grpc: Optional[str] = None,
                 grpc_secure: bool = False) -> None:
        self.url = url.rstrip("/")
        self.worker = worker
        self._timeout = timeout
        self._http = httpx.Client(
            base_url=self.url,
            headers={"Authorization": f"Bearer {token}", "User-Agent": _core.USER_AGENT},
            timeout=timeout,
            transport=transport,
            verify=verify,
            # The vault is reached directly; a proxy is for the target (see Lease.binding).
            trust_env=False,
        )
        self._grpc = None
        if grpc:
            from ._grpc import GrpcCalls
            self._grpc = GrpcCalls(grpc, token, timeout, secure=grpc_secure)
        self.held = _core.HeldLeases()
        self._watchers: List[threading.Thread] = []
        self._closed = threading.Event()

    # -- plumbing -------------------------------------------------------------------------
    def _call(self, method: str, path: str, *, json: Any = None, params: Any = None,
              headers: Optional[Dict[str, str]] = None, timeout: Optional[float] = None) -> Any:
        headers = {**_trace.headers(), **(headers or {})}
        try:
            r = self._http.request(method, path, json=json, params=params, headers=headers,
                                   timeout=timeout if timeout is not None else self._timeout)
        except httpx.TransportError as e:
            raise _core.unreachable(e) from None
        _core.raise_for_answer(r.status_code, r.headers, r.content)
        if r.status_code == 204 or not r.content:
            return None
        return r.json()

    def _work(self, kind: str, pool: str, lease_id: str, body: Dict[str, Any],
              key: Optional[str] = None, timeout: Optional[float] = None) -> Dict[str, Any]:
        """A worker's call (``lease``, ``renew``, ``release``, ``rotate``), over gRPC when the
        client has it, else REST."""
        if self._grpc is not None:
            return self._grpc.call(kind, pool, lease_id, body, key, timeout)
        path = (_core.pool_path(pool, "leases") if kind == "lease"
                else _core.pool_path(pool, "leases", lease_id, kind))
        headers = {"Idempotency-Key": key} if key else None
        return _core.as_dict(self._call("POST", path, json=body, headers=headers,
                                        timeout=timeout) or {})

    def _leasing(self, kind: str, pool: str, lease_id: str, body: Dict[str, Any], key: str,
                 timeout: Optional[float] = None) -> Dict[str, Any]:
        """A call that creates a lease: a lost answer is asked again once, with the same
        Idempotency-Key (the vault answers the same lease, never a second one)."""
        try:
            return self._work(kind, pool, lease_id, body, key, timeout)
        except VaultError as e:
            if not _core.answer_lost(e):
                raise
            time.sleep(_core.LOST_ANSWER_RETRY_S)
            return self._work(kind, pool, lease_id, body, key, timeout)

    def session_for(self, lease: Lease, **kw: Any) -> Any:
        """A ``requests.Session`` bound to ``lease`` (``lease.session()``)."""
        return _http.LeaseSession(lease, **kw)

    def client_for(self, lease: Lease, **kw: Any) -> _http.LeaseClient:
        """An ``httpx.Client`` bound to ``lease`` (``lease.client()``)."""
        return _http.LeaseClient(lease, **kw)

    def _held_lease(self, answer: Dict[str, Any]) -> Lease:
        lease = Lease.from_answer(answer, self)
        self.held.add(lease)
        return lease

    # -- leases ---------------------------------------------------------------------------
    def lease(self, pool: str, *, worker: Optional[str] = None, units: Optional[int] = None,
              ttl_s: Optional[int] = None, min_token_ttl_s: Optional[int] = None,
              session: Optional[str] = None, wait_ms: Optional[int] = None,
              idempotency_key: Optional[str] = None,
              costs: Optional[Dict[str, int]] = None,
              pipeline: Optional[str] = None) -> Lease:
        """Lease a token of ``pool``. Raises PoolExhausted (with ``retry_after``), PoolFrozen...

        ``costs`` is what the call is expected to cost by cost dimension (a pool whose quotas
        count, say, ``llm_tokens``); report what it really cost in ``Report.costs``."""
        body = _core.lease_body(worker or self.worker, units, ttl_s, min_token_ttl_s, session,
                                wait_ms, costs, pipeline)
        timeout = self._timeout + (wait_ms or 0) / 1000
        answer = self._leasing("lease", pool, "", body,
                               idempotency_key or _core.new_idempotency_key(), timeout)
        return self._held_lease(answer)

    def renew(self, lease: Lease, *, ttl_s: Optional[int] = None,
              units: Optional[int] = None) -> Lease:
        body = {k: v for k, v in (("ttl_s", ttl_s), ("units", units)) if v is not None}
        answer = self._work("renew", lease.pool, lease.lease_id, body)
        lease.lease_expires_at = answer["lease_expires_at"]
        lease.units = int(answer["units"])
        lease.token_expires_at = answer.get("token_expires_at")
        return lease

    def release(self, lease: Lease, report: Optional[Report] = None) -> None:
        report = report or lease.report("ok")
        try:
            self._work("release", lease.pool, lease.lease_id, report.body())
        finally:
            lease._ended = True
            self.held.drop(lease.lease_id)

    def rotate(self, lease: Lease, report: Optional[Report] = None) -> Lease:
        """Report on ``lease`` and take another token in the same call (the 401-mid-job path).
        ``lease`` becomes the new lease. If no token is eligible, the old lease has still ended."""
        report = report or lease.report("unauthorized")
        old = lease.lease_id
        try:
            answer = self._leasing("rotate", lease.pool, old, report.body(),
                                   _core.new_idempotency_key())
        except VaultError:
            lease._ended = True
            self.held.drop(old)
            raise
        self.held.drop(old)
        lease._become(Lease.from_answer(answer, self))
        self.held.add(lease)
        return lease

    def _end_on_exit(self, lease: Lease, exc: Optional[BaseException]) -> None:
        if lease._ended:
            return
        try:
            self.release(lease, _core.report_for_exception(lease, exc))
        except LeaseGone:
            # Revoked or past its deadline: there is nothing left to release. Raised only when
            # the block succeeded and the lease was not revoked (it outlived its deadline).
            if exc is None and lease.revoked is None:
                raise
        except VaultError:
            if exc is None:
                raise
            # The block's own exception is the one to see; the vault reclaims the lease at its
            # deadline.

    # -- events ---------------------------------------------------------------------------
    def events(self, pools: Optional[Iterable[str]] = None,
               last_event_id: Optional[str] = None,
               on_open: Optional[Callable[[], None]] = None) -> Iterator[Event]:
        """Events as they happen (``token.revoked``, ``lease.revoked``, ``pool.frozen``...).
        Reconnects by itself with ``Last-Event-ID`` (backing off), so no event is missed while the
        vault keeps it; marks held leases whose token was revoked. Ends when the client closes;
        raises on an answer that retrying cannot fix (401, 403, 400). ``on_open`` is called each
        time the stream is (re)connected: from then on, nothing published is missed."""
        pools = list(pools) if pools else None
        last = last_event_id
        backoff = _core.EVENTS_BACKOFF_S[0]
        while not self._closed.is_set():
            try:
                for event in self._stream(pools, last, on_open):
                    if event.id:
                        last = event.id
                    backoff = _core.EVENTS_BACKOFF_S[0]
                    self.held.apply(event)
                    yield event
                    if self._closed.is_set():
                        return
            except Unavailable:
                pass
            if self._closed.wait(backoff):
                return
            backoff = min(backoff * 2, _core.EVENTS_BACKOFF_S[1])

    def _stream(self, pools: Optional[List[str]], last: Optional[str],
                on_open: Optional[Callable[[], None]]) -> Iterator[Event]:
        """One event stream (gRPC ``Watch`` or SSE) until it ends or breaks; ``on_open`` once it
        is open. Raises the vault's refusals."""
        if self._grpc is not None:
            stream = self._grpc.watch(pools, last)
            if on_open is not None:
                on_open()
            yield from stream
            return
        headers = {"Last-Event-ID": last} if last else {}
        try:
            with httpx_sse.connect_sse(
                self._http, "GET", "/v1/events", params=_core.events_params(pools),
                headers=headers,
                timeout=httpx.Timeout(self._timeout, read=_core.EVENTS_READ_TIMEOUT_S),
            ) as es:
                r = es.response
                if r.status_code >= 400:
                    r.read()
                    _core.raise_for_answer(r.status_code, r.headers, r.content)
                if on_open is not None:
                    on_open()
                for sse in es.iter_sse():
                    ev = _core.event_from_sse(sse.event, sse.data, sse.id)
                    if ev is not None:
                        yield ev
        except (httpx.TransportError, httpx_sse.SSEError):
            pass

    def watch(self, pools: Optional[Iterable[str]] = None,
              timeout: float = 10.0) -> threading.Thread:
        """Follow the events stream in a daemon thread, so held leases whose token is revoked are
        marked (and refused by their session/client) within moments of the revocation. Returns
        once the stream is open (or after ``timeout``; it keeps trying in the background)."""
        opened = threading.Event()
        pools = list(pools) if pools else None

        def run() -> None:
            try:
                for _ in self.events(pools, on_open=opened.set):
                    pass
            except VaultError:
                opened.set()  # not allowed to watch: the vault still refuses revoked leases

        t = threading.Thread(target=run, name="tokenvault-events", daemon=True)
        t.start()
        opened.wait(timeout)
        self._watchers.append(t)
        return t

    # -- operators and deposit workers ----------------------------------------------------
    def put_pool(self, pool: str, **config: Any) -> Dict[str, Any]:
        return _core.as_dict(self._call("PUT", _core.pool_path(pool), json=config))

    def put_pipeline(self, pool: str, name: str, *, duration_s: int,
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
        return _core.as_dict(self._call("PUT", _core.pool_path(pool, "pipelines", name),
                                        json=body))

    def pipeline(self, pool: str, name: str) -> Dict[str, Any]:
        """Pipeline ``name``'s status (tokens, under_strength, rates, exhausts_at...)."""
        return _core.as_dict(self._call("GET", _core.pool_path(pool, "pipelines", name)))

    def end_pipeline(self, pool: str, name: str) -> int:
        """End pipeline ``name``: its tokens go back to the pool. Returns how many it held."""
        answer = self._call("DELETE", _core.pool_path(pool, "pipelines", name))
        return int(_core.as_dict(answer).get("tokens_returned", 0))

    def pool_status(self, pool: str) -> Dict[str, Any]:
        return _core.as_dict(self._call("GET", _core.pool_path(pool, "status")))

    def deposit(self, pool: str, tokens: List[Dict[str, Any]]) -> List[str]:
        answer = self._call("POST", _core.pool_path(pool, "tokens"), json={"tokens": tokens})
        return [str(i) for i in answer["ids"]]

    def revoke(self, pool: str, token_id: str, reason: str = "") -> Dict[str, Any]:
        return _core.as_dict(self._call("POST",
                                        _core.pool_path(pool, "tokens", token_id, "revoke"),
                                        json={"reason": reason}))

    # -- lifetime -------------------------------------------------------------------------
    def close(self) -> None:
        self._closed.set()
        self._http.close()
        if self._grpc is not None:
            self._grpc.close()

    def __enter__(self) -> "Vault":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
