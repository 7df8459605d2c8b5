"""Scrapy downloader middleware: every request goes out with a leased token.

    DOWNLOADER_MIDDLEWARES = {"tokenvault.scrapy.TokenVaultMiddleware": 610}
    TOKENVAULT_URL = "http://vault:8080"
    TOKENVAULT_TOKEN = "<client token with the lease scope>"
    TOKENVAULT_POOL = "github"

Settings (all optional but the three above):

- ``TOKENVAULT_PER_SLOT`` (False): lease one token per download slot and reuse it for up to
  ``TOKENVAULT_SLOT_UNITS`` (10) requests (each request is a unit of quota); by default each
  request leases its own token and releases it with the response.
- ``TOKENVAULT_WAIT_MS`` (5000): how long one lease call waits for a token when the pool is
  exhausted (the vault holds the call).
- ``TOKENVAULT_EXHAUSTED_TIMEOUT`` (300): seconds a request keeps asking for a token while the
  pool stays exhausted or the vault cannot answer (a 503: Redis down, failing over or moving the
  pool's slot; or no answer at all), backing off from 0.25 s up to 10 s or the vault's
  ``Retry-After``, before it is dropped with a warning; other requests go on meanwhile.
- ``TOKENVAULT_MAX_RETRIES`` (3): how often one request is rescheduled after a 401 or 429.
- ``TOKENVAULT_PIPELINE``: lease only from a pipeline of this name, a share of the pool reserved
  for this crawl: created when the spider opens, sized by the vault for
  ``TOKENVAULT_PIPELINE_RPS`` requests per second for ``TOKENVAULT_PIPELINE_DURATION_S``
  seconds (default: ``CLOSESPIDER_TIMEOUT``, else 3600) with ``CONCURRENT_REQUESTS`` held at
  once (or ``TOKENVAULT_PIPELINE_TOKENS`` tokens), and ended when it closes. A pool too short
  for it stops the crawl at open (``TOKENVAULT_PIPELINE_PARTIAL`` = True takes what is there).

A 401 reports the token ``unauthorized`` (the vault refreshes it) and reschedules the request
with another token; a 429 reports ``rate_limited`` with the target's ``Retry-After`` (the token
cools down) and reschedules. The target's ``X-RateLimit-Remaining`` / ``Reset`` go into each
report. Revocations arrive over the events stream: a revoked token is never attached to another
request. Leases still held are released when the spider closes.

Needs Scrapy's asyncio reactor (the default since Scrapy 2.13).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Any, Dict, Optional

import logging

from scrapy import signals
from scrapy.exceptions import IgnoreRequest, NotConfigured

from . import _core
from ._async import AsyncVault
from ._errors import LeaseGone, PoolExhausted, Unavailable, VaultError
from ._models import Lease

logger = logging.getLogger(__name__)

META_LEASE = "tokenvault_lease_id"
META_TOKEN = "tokenvault_token_id"
META_ATTACHED = "tokenvault_attached_at"
META_RETRIES = "tokenvault_retries"
META_SKIP = "tokenvault_skip"


def _pipeline_demand(s: Any) -> Dict[str, Any]:
    """The demand a crawl's pipeline is created with, from its settings."""
    duration = s.getint("TOKENVAULT_PIPELINE_DURATION_S", 0) or s.getint("CLOSESPIDER_TIMEOUT", 0) \
        or 3600
    demand: Dict[str, Any] = {"duration_s": duration,
                              "allow_partial": s.getbool("TOKENVAULT_PIPELINE_PARTIAL", False)}
    tokens = s.getint("TOKENVAULT_PIPELINE_TOKENS", 0)
    if tokens:
        demand["tokens"] = tokens
    else:
        rps = s.getfloat("TOKENVAULT_PIPELINE_RPS", 0.0)
        if rps > 0:
            demand["rps"] = rps
        demand["concurrency"] = s.getint("CONCURRENT_REQUESTS", 16)
    return demand


class _Held:
    """A lease and how many of its units the requests sent with it used."""

    def __init__(self, lease: Lease) -> None:
        self.lease = lease
        self.sent = 0
        self.open = 0


class TokenVaultMiddleware:
    def __init__(self, url: str, token: str, pool: str, *, per_slot: bool, slot_units: int,
                 wait_ms: int, max_retries: int, exhausted_timeout_s: float = 300.0,
                 stats: Any = None, pipeline: Optional[str] = None,
                 pipeline_demand: Optional[Dict[str, Any]] = None) -> None:
        self.vault = AsyncVault(url, token, worker="scrapy")
        self.pool = pool
        #: The pipeline leases come from (None: the free part of the pool), and the demand it
        #: is created with when the spider opens.
        self.pipeline = pipeline
        self.pipeline_demand = pipeline_demand or {}
        self.per_slot = per_slot
        self.slot_units = max(1, slot_units)
        self.wait_ms = wait_ms
        self.max_retries = max_retries
        self.exhausted_timeout_s = exhausted_timeout_s
        self.stats = stats
        self._by_lease: Dict[str, _Held] = {}
        self._by_slot: Dict[str, _Held] = {}
        self._follow: Optional["asyncio.Task[None]"] = None
        #: token id -> when the events stream said it was revoked (time.time()), and when a
        #: request last went out with it: together they show no request left with a token
        #: after its revocation was known.
        self.revoked_at: Dict[str, float] = {}
        self.last_attached: Dict[str, float] = {}

    @classmethod
    def from_crawler(cls, crawler: Any) -> "TokenVaultMiddleware":
        s = crawler.settings
        url, token, pool = (s.get("TOKENVAULT_URL"), s.get("TOKENVAULT_TOKEN"),
                            s.get("TOKENVAULT_POOL"))
        if not (url and token and pool):
            raise NotConfigured("TOKENVAULT_URL, TOKENVAULT_TOKEN and TOKENVAULT_POOL are needed")
        from scrapy.utils.reactor import is_asyncio_reactor_installed

        if not is_asyncio_reactor_installed():
            raise NotConfigured("tokenvault's middleware needs TWISTED_REACTOR = "
                                "'twisted.internet.asyncioreactor.AsyncioSelectorReactor'")
        mw = cls(url, token, pool, per_slot=s.getbool("TOKENVAULT_PER_SLOT", False),
                 slot_units=s.getint("TOKENVAULT_SLOT_UNITS", 10),
                 wait_ms=s.getint("TOKENVAULT_WAIT_MS", 5000),
                 max_retries=s.getint("TOKENVAULT_MAX_RETRIES", 3),
                 exhausted_timeout_s=s.getfloat("TOKENVAULT_EXHAUSTED_TIMEOUT", 300.0),
                 stats=crawler.stats, pipeline=s.get("TOKENVAULT_PIPELINE") or None,
                 pipeline_demand=_pipeline_demand(s))
        crawler.signals.connect(mw.spider_opened, signal=signals.spider_opened)
        crawler.signals.connect(mw.spider_closed, signal=signals.spider_closed)
        return mw

    def _inc(self, key: str) -> None:
        if self.stats is not None:
            self.stats.inc_value(f"tokenvault/{key}")

    async def spider_opened(self, spider: Any) -> None:
        if self.pipeline:
            # Before anything leases: a share too small fails here, not mid-crawl.
            st = await self.vault.put_pipeline(self.pool, self.pipeline, **self.pipeline_demand)
            logger.info("tokenvault: pipeline %s holds %s of %s tokens until %s", self.pipeline,
                        st.get("tokens"), st.get("tokens_wanted"), st.get("deadline"))
        opened = asyncio.Event()

        async def follow() -> None:
            try:
                async for ev in self.vault.events([self.pool], on_open=opened.set):
                    if ev.type == "token.revoked" and ev.token_id:
                        self.revoked_at.setdefault(ev.token_id, time.time())
            except VaultError:
                opened.set()  # not allowed to follow events: the vault still refuses revoked leases

        self._follow = asyncio.get_running_loop().create_task(follow())
        try:
            await asyncio.wait_for(opened.wait(), 10)
        except asyncio.TimeoutError:
            pass

    async def spider_closed(self, spider: Any) -> None:
        for held in list(self._by_lease.values()):
            await self._end(held, None)
        if self.pipeline:
            with contextlib.suppress(VaultError):
                await self.vault.end_pipeline(self.pool, self.pipeline)
        await self.vault.aclose()
        if self._follow is not None:
            self._follow.cancel()

    # -- which lease a request goes out with -------------------------------------------------
    async def _take(self) -> _Held:
        lease = None
        if self.per_slot and self.slot_units > 1:
            # A slot's many units are asked for without waiting: tokens may have less quota left
            # than that but still some, and a one-unit lease (waited for) uses it.
            with contextlib.suppress(PoolExhausted):
                lease = await self.vault.lease(self.pool, units=self.slot_units, wait_ms=0,
                                               pipeline=self.pipeline)
        if lease is None:
            try:
                lease = await self.vault.lease(self.pool, units=1, wait_ms=self.wait_ms,
                                               pipeline=self.pipeline)
            except PoolExhausted:
                self._inc("exhausted")
                raise
            except Unavailable:
                self._inc("unavailable")
                raise
        held = _Held(lease)
        logger.debug("tokenvault: leased %s of token %s (%d units)", lease.lease_id, lease.token_id,
                     lease.units)
        self._by_lease[lease.lease_id] = held
        self._inc("leases")
        return held

    async def _lease_for(self, request: Any) -> _Held:
        if not self.per_slot:
            return await self._take()
        slot = request.meta.get("download_slot") or _core.slot_of(request.url)
        held = self._by_slot.get(slot)
        if held is None or held.lease.revoked is not None or held.sent >= held.lease.units \
                or held.lease._ended:
            if held is not None and held.open == 0:
                await self._end(held, None)
            held = await self._take()
            self._by_slot[slot] = held
        return held

    async def _end(self, held: _Held, report: Any) -> None:
        lease = held.lease
        self._by_lease.pop(lease.lease_id, None)
        for slot, h in list(self._by_slot.items()):
            if h is held:
                del self._by_slot[slot]
        if lease._ended:
            return
        if report is None:
            report = lease.report("ok", used=max(held.sent, 1) if self.per_slot else None)
        logger.debug("tokenvault: releasing lease %s of token %s (%d sent, %d open): %s",
                     lease.lease_id, lease.token_id, held.sent, held.open, report.body())
        try:
            await self.vault.release(lease, report)
        except LeaseGone:
            pass

    # -- Scrapy's hooks ----------------------------------------------------------------------
    async def process_request(self, request: Any, spider: Any = None) -> None:
        if request.meta.get(META_SKIP):
            return None
        give_up = time.monotonic() + self.exhausted_timeout_s
        backoff = 0.25
        while True:
            try:
                held = await self._lease_for(request)
            except Unavailable as e:
                # The pool exhausted, or the vault not able to answer now (503, or no answer):
                # both pass, so the request waits rather than being lost.
                left = give_up - time.monotonic()
                what = "exhausted" if isinstance(e, PoolExhausted) else "unavailable"
                if left <= 0:
                    logger.warning("tokenvault: pool %s stayed %s for %.0f s; dropping %s",
                                   self.pool, what, self.exhausted_timeout_s, request.url)
                    raise IgnoreRequest(f"tokenvault: pool {self.pool} {what} ({e.detail})")
                if what == "unavailable":
                    logger.info("tokenvault: the vault cannot lease now (%s); %s waits",
                                e.code, request.url)
                # The vault's Retry-After is when a token is sure to be back (a held lease's
                # deadline, a cooldown's end); leases usually end sooner, so ask again after a
                # backoff that doubles up to it (and up to 10 s).
                await asyncio.sleep(min(left, backoff, max(0.25, e.retry_after or backoff)))
                backoff = min(backoff * 2, 10.0)
                continue
            except VaultError as e:
                logger.warning("tokenvault: no lease for %s: %s", request.url, e)
                raise IgnoreRequest(f"tokenvault: {e}")
            if held.lease.revoked is None:
                break
            self._note_revoked(held.lease)
            await self._end(held, None)
        lease = held.lease
        held.sent += 1
        held.open += 1
        for k, v in lease.headers.items():
            request.headers[k] = v
        if lease.binding.proxy:
            request.meta["proxy"] = lease.binding.proxy
        request.meta[META_LEASE] = lease.lease_id
        request.meta[META_TOKEN] = lease.token_id
        request.meta[META_ATTACHED] = self.last_attached[lease.token_id] = time.time()
        return None

    def _held_of(self, request: Any) -> Optional[_Held]:
        return self._by_lease.get(request.meta.get(META_LEASE, ""))

    def _note_revoked(self, lease: Lease) -> None:
        self._inc("revoked_dropped")

    async def process_response(self, request: Any, response: Any, spider: Any = None) -> Any:
        held = self._held_of(request)
        if held is None:
            return response
        held.open -= 1
        lease = held.lease
        report = _core.after_target_answer(lease, response.status, _headers(response))
        if report is None:
            if not self.per_slot:
                await self._end(held, lease.report("ok"))
            elif held.open == 0 and held not in self._by_slot.values():
                await self._end(held, None)  # replaced in its slot: nothing else will use it
            return response
        self._inc(f"status_{response.status}")
        if self.per_slot:
            report.used = max(held.sent, 1)
        await self._end(held, report)
        return self._again(request, response)

    async def process_exception(self, request: Any, exception: BaseException,
                                spider: Any = None) -> None:
        held = self._held_of(request)
        if held is None:
            return None
        held.open -= 1
        if not self.per_slot:
            await self._end(held, _core.report_for_exception(held.lease, exception))
        return None

    def _again(self, request: Any, response: Any) -> Any:
        tries = request.meta.get(META_RETRIES, 0)
        if tries >= self.max_retries:
            return response
        r = request.replace(dont_filter=True)
        r.meta[META_RETRIES] = tries + 1
        for k in (META_LEASE, META_TOKEN, META_ATTACHED):
            r.meta.pop(k, None)
        r.headers.pop("Authorization", None)
        return r


def _headers(response: Any) -> Dict[str, str]:
    out: Dict[str, str] = {}
    for k, vs in response.headers.items():
        key = k.decode("latin-1") if isinstance(k, bytes) else str(k)
        v = vs[-1] if isinstance(vs, list) and vs else vs
        out[key.lower()] = v.decode("latin-1") if isinstance(v, bytes) else str(v)
    return out
