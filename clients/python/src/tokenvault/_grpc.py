"""A worker's calls over gRPC (``Vault(url, token, grpc="host:port")``): lease, renew, release,
rotate and the event stream (``Watch``) travel on one HTTP/2 connection; everything else stays on
REST. Answers are read back into the shapes REST gives, and errors into the same exceptions (the
vault puts the problem ``code`` and REST's status in each error's ``ErrorInfo``).

The stubs (``tokenvault.v1``) are generated from ``proto/`` by grpcio-tools when the package is
built; ``pip install 'tokenvault[grpc]'`` brings the runtime (grpcio, grpcio-status)."""

from __future__ import annotations

import json
from typing import Any, AsyncIterator, Dict, Iterable, Iterator, Optional, Tuple

try:
    import grpc
    import grpc.aio
    from google.rpc import error_details_pb2, status_pb2

    from .v1 import vault_pb2, vault_pb2_grpc
except ImportError as e:  # pragma: no cover - the grpc extra is optional
    raise ImportError(f"gRPC needs the grpc extra: pip install 'tokenvault[grpc]' ({e})") from None

from . import _core, _trace
from ._errors import VaultError, error_from_answer
from ._models import Event

#: The ``ErrorInfo`` domain of the vault's errors, and the key of REST's status in its metadata.
ERROR_DOMAIN = "tokenvault"
HTTP_STATUS_KEY = "http_status"


def _status_details(e: Any) -> Any:
    """The ``google.rpc.Status`` in an error's trailing metadata (sync or asyncio call)."""
    for key, value in e.trailing_metadata() or ():
        if key == "grpc-status-details-bin":
            return status_pb2.Status.FromString(value)
    return None


def _error(e: Any) -> VaultError:
    """The exception REST would have raised; an error that is not the vault's (no connection,
    a balancer's refusal, a deadline) is ``vault_unreachable``."""
    status = _status_details(e)
    info, retry = None, None
    for d in status.details if status is not None else []:
        if d.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            d.Unpack(info)
        elif d.Is(error_details_pb2.RetryInfo.DESCRIPTOR):
            retry = error_details_pb2.RetryInfo()
            d.Unpack(retry)
    if info is None or info.domain != ERROR_DOMAIN:
        return _core.unreachable(e)
    http = int(info.metadata.get(HTTP_STATUS_KEY, "500"))
    headers = {"retry-after": str(retry.retry_delay.seconds)} if retry is not None else {}
    body = json.dumps({"code": info.reason, "detail": e.details() or "", "status": http})
    return error_from_answer(http, headers, body.encode())


def _lease(lease: Any) -> Dict[str, Any]:
    """A lease as REST answers it."""
    return {
        "lease_id": lease.lease_id, "pool": lease.pool, "token_id": lease.token_id,
        "secret": lease.secret, "token_expires_at": lease.token_expires_at or None,
        "lease_expires_at": lease.lease_expires_at, "units": lease.units,
        "costs": dict(lease.costs), "pipeline": lease.pipeline or None,
        "binding": {"proxy": lease.binding.proxy or None,
                    "fingerprint": lease.binding.fingerprint or None},
        "headers": {"Authorization": lease.authorization},
        "fingerprint": lease.fingerprint, "trace_id": lease.trace_id or None,
    }


def _families(m: Optional[Dict[str, Dict[str, int]]]) -> Dict[str, Any]:
    return {k: vault_pb2.QuotaReport(remaining=f.get("remaining"), reset_at_ms=f.get("reset_at"))
            for k, f in (m or {}).items()}


def _report(body: Dict[str, Any]) -> Any:
    """A report's REST body as the proto's ``Report`` (``reset_at`` is unix ms there)."""
    b = dict(body)
    reset_at = b.pop("reset_at", None)
    quotas, rate_limit = _families(b.pop("quotas", None)), _families(b.pop("rate_limit", None))
    return vault_pb2.Report(reset_at_ms=reset_at, quotas=quotas, rate_limit=rate_limit, **b)


#: The stub method each worker call uses.
_METHODS = {"lease": "Lease", "renew": "Renew", "release": "Release", "rotate": "Rotate"}


def _request(kind: str, pool: str, lease_id: str, body: Dict[str, Any],
             idempotency_key: Optional[str]) -> Any:
    """The message for worker call ``kind`` made with REST's body ``body``."""
    if kind == "lease":
        return vault_pb2.LeaseRequest(pool=pool, idempotency_key=idempotency_key or "", **body)
    if kind == "renew":
        return vault_pb2.RenewRequest(pool=pool, lease_id=lease_id, **body)
    return vault_pb2.ReleaseRequest(pool=pool, lease_id=lease_id, report=_report(body))


def _answer(kind: str, reply: Any) -> Dict[str, Any]:
    """The reply to worker call ``kind`` as REST answers it."""
    if kind == "release":
        return {"token_id": reply.token_id, "token_state": reply.state}
    return _lease(reply.lease)


def _event(e: Any) -> Event:
    return Event(type=e.type, pool=e.pool, at=int(e.at), token_id=e.token_id or None,
                 lease_id=e.lease_id or None, reason=e.reason or None, id=e.id or None)


def _options() -> Any:
    # Dead connections are found (and replaced) between calls, not by the next call.
    return [("grpc.keepalive_time_ms", 20_000), ("grpc.keepalive_timeout_ms", 10_000),
            ("grpc.primary_user_agent", _core.USER_AGENT)]


class GrpcCalls:
    """The worker's calls on one channel to ``target`` (``host:port``; TLS with ``secure``)."""

    def __init__(self, target: str, token: str, timeout: float, secure: bool = False) -> None:
        self._channel = (grpc.secure_channel(target, grpc.ssl_channel_credentials(), _options())
                         if secure else grpc.insecure_channel(target, _options()))
        self._stub = vault_pb2_grpc.VaultStub(self._channel)  # type: ignore[no-untyped-call]
        self._metadata: Tuple[Tuple[str, str], ...] = (("authorization", f"Bearer {token}"),)
        self._timeout = timeout

    def call(self, kind: str, pool: str, lease_id: str, body: Dict[str, Any],
             idempotency_key: Optional[str] = None,
             timeout: Optional[float] = None) -> Dict[str, Any]:
        """``kind`` (``lease``, ``renew``, ``release``, ``rotate``) with the REST body ``body``;
        the answer as REST gives it."""
        method = getattr(self._stub, _METHODS[kind])
        try:
            reply = method(_request(kind, pool, lease_id, body, idempotency_key),
                           metadata=self._metadata + tuple(_trace.headers().items()),
                           timeout=timeout if timeout is not None else self._timeout)
        except grpc.RpcError as e:
            raise _error(e) from None
        return _answer(kind, reply)

    def watch(self, pools: Optional[Iterable[str]], last_event_id: Optional[str]) -> Iterator[Event]:
        """``Watch``, open once this returns (the vault subscribes before its answer's headers):
        events until the vault ends the stream. Raises the vault's refusals, and
        ``vault_unreachable`` when the connection is lost."""
        req = vault_pb2.WatchRequest(pools=list(pools or []), last_event_id=last_event_id or "")
        call = self._stub.Watch(req, metadata=self._metadata)
        try:
            call.initial_metadata()
        except grpc.RpcError as e:
            raise _error(e) from None
        return self._events(call)

    @staticmethod
    def _events(call: Any) -> Iterator[Event]:
        try:
            for e in call:
                yield _event(e)
        except grpc.RpcError as e:
            raise _error(e) from None

    def close(self) -> None:
        self._channel.close()


class AsyncGrpcCalls:
    """``GrpcCalls`` for ``AsyncVault``, on an asyncio channel (``grpc.aio``)."""

    def __init__(self, target: str, token: str, timeout: float, secure: bool = False) -> None:
        self._channel = (grpc.aio.secure_channel(target, grpc.ssl_channel_credentials(),
                                                 _options())
                         if secure else grpc.aio.insecure_channel(target, _options()))
        self._stub = vault_pb2_grpc.VaultStub(self._channel)  # type: ignore[no-untyped-call]
        self._metadata: Tuple[Tuple[str, str], ...] = (("authorization", f"Bearer {token}"),)
        self._timeout = timeout

    async def call(self, kind: str, pool: str, lease_id: str, body: Dict[str, Any],
                   idempotency_key: Optional[str] = None,
                   timeout: Optional[float] = None) -> Dict[str, Any]:
        method = getattr(self._stub, _METHODS[kind])
        try:
            reply = await method(_request(kind, pool, lease_id, body, idempotency_key),
                                 metadata=self._metadata + tuple(_trace.headers().items()),
                                 timeout=timeout if timeout is not None else self._timeout)
        except grpc.RpcError as e:
            raise _error(e) from None
        return _answer(kind, reply)

    async def watch(self, pools: Optional[Iterable[str]],
                    last_event_id: Optional[str]) -> AsyncIterator[Event]:
        """As ``GrpcCalls.watch``: open once this returns."""
        req = vault_pb2.WatchRequest(pools=list(pools or []), last_event_id=last_event_id or "")
        call = self._stub.Watch(req, metadata=self._metadata)
        try:
            await call.initial_metadata()
        except grpc.RpcError as e:
            raise _error(e) from None
        return self._events(call)

    @staticmethod
    async def _events(call: Any) -> AsyncIterator[Event]:
        try:
            async for e in call:
                yield _event(e)
        except grpc.RpcError as e:
            raise _error(e) from None

    async def close(self) -> None:
        await self._channel.close()
