"""What a target's answer headers say: its rate limits by header family, when they reset, and
its ``Retry-After``. A leaf module: it imports nothing of the package."""

from __future__ import annotations

import re
import time
from typing import Dict, Mapping, Optional


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
