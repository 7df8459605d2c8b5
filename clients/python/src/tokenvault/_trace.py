"""The caller's trace context on the vault's calls. With OpenTelemetry installed (the ``otel``
extra), each call carries the current span's W3C ``traceparent``, written by the propagator the
application configured, so the vault's spans, audit entries and lease answers join the caller's
trace. Without it, nothing is added. A leaf module: it imports nothing of the package."""

from __future__ import annotations

from typing import Any, Callable, Dict, Optional

_inject: Optional[Callable[..., Any]]
try:
    from opentelemetry.propagate import inject as _inject
except ImportError:  # the `otel` extra is not installed
    _inject = None


def headers() -> Dict[str, str]:
    """The current trace context as headers (``traceparent``, ``tracestate``); empty without
    OpenTelemetry or outside a span."""
    if _inject is None:
        return {}
    carrier: Dict[str, str] = {}
    _inject(carrier)
    return carrier
