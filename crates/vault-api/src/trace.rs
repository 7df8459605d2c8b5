//! The span of each HTTP request: its parent is the caller's W3C `traceparent` (a new trace
//! starts without one), its name the method and route template (`POST
//! /v1/pools/{pool}/leases`), and it records the status. It holds no header, query string or
//! body: client tokens and secrets never become span attributes.

use std::time::Duration;

use axum::extract::MatchedPath;
use axum::http::{Request, Response};
use tracing_opentelemetry::OpenTelemetrySpanExt as _;

/// The span of one request (`TraceLayer::make_span_with`).
pub fn request_span<B>(req: &Request<B>) -> tracing::Span {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map_or("unmatched", |m| m.as_str());
    let span = tracing::info_span!(
        "request",
        otel.name = %format!("{} {route}", req.method()),
        otel.kind = "server",
        http.request.method = %req.method(),
        http.route = route,
        http.response.status_code = tracing::field::Empty,
    );
    let _ = span.set_parent(caller_context(req.headers()));
    span
}

/// The caller's trace context from its `traceparent` and `tracestate` headers (W3C Trace
/// Context); an empty context (a new trace) when there is none or it is malformed. Parsed here
/// rather than by the SDK's propagator, which refuses trace flags other than `00` and `01` —
/// but W3C lets receivers ignore flags they do not know, and OpenTelemetry's Python SDK sends
/// `03` (sampled + random, Trace Context Level 2).
pub fn caller_context(headers: &axum::http::HeaderMap) -> opentelemetry::Context {
    use opentelemetry::trace::TraceContextExt as _;
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let Some(sc) = header("traceparent")
        .and_then(|tp| parse_traceparent(tp.trim(), header("tracestate").unwrap_or_default()))
    else {
        return opentelemetry::Context::new();
    };
    opentelemetry::Context::new().with_remote_span_context(sc)
}

/// A `traceparent` value: `version-trace_id-parent_id-flags`, lowercase hex; version `00` has
/// exactly these four fields, a later one may add more (ignored); `ff`, all-zero ids and
/// uppercase are invalid. Only the `sampled` flag is kept.
fn parse_traceparent(s: &str, tracestate: &str) -> Option<opentelemetry::trace::SpanContext> {
    use opentelemetry::trace::{SpanContext, SpanId, TraceFlags, TraceId, TraceState};
    let hex = |f: &str, len: usize| {
        f.len() == len
            && f.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    };
    let fields: Vec<&str> = s.split('-').collect();
    let [version, trace, parent, flags, ..] = fields[..] else {
        return None;
    };
    if !hex(version, 2) || version == "ff" || (version == "00" && fields.len() != 4) {
        return None;
    }
    if !hex(trace, 32) || !hex(parent, 16) || !hex(flags, 2) {
        return None;
    }
    let trace_id = TraceId::from_hex(trace)
        .ok()
        .filter(|t| *t != TraceId::INVALID)?;
    let span_id = SpanId::from_hex(parent)
        .ok()
        .filter(|p| *p != SpanId::INVALID)?;
    let sampled = u8::from_str_radix(flags, 16).ok()? & TraceFlags::SAMPLED.to_u8();
    let state = tracestate.parse::<TraceState>().unwrap_or_default();
    Some(SpanContext::new(
        trace_id,
        span_id,
        TraceFlags::new(sampled),
        true,
        state,
    ))
}

/// Record the answer's status on the request's span (`TraceLayer::on_response`).
pub fn record_status<B>(res: &Response<B>, _latency: Duration, span: &tracing::Span) {
    span.record("http.response.status_code", res.status().as_u16());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn traceparent_is_read_as_w3c_says() {
        let ok = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let sc = parse_traceparent(ok, "").expect("valid");
        assert_eq!(
            sc.trace_id().to_string(),
            "4bf92f3577b34da6a3ce929d0e0e4736"
        );
        assert!(sc.is_sampled() && sc.is_remote());
        // Flags it does not know are ignored (Level 2's random bit), not refused.
        let random = parse_traceparent(&ok.replace("-01", "-03"), "").expect("flags 03");
        assert!(random.is_sampled());
        assert!(!parse_traceparent(&ok.replace("-01", "-00"), "")
            .unwrap()
            .is_sampled());
        // A later version may carry more fields.
        assert!(parse_traceparent(&format!("{}-extra", ok.replacen("00", "01", 1)), "").is_some());
        for bad in [
            ok.replacen("00", "ff", 1),
            format!("{ok}-extra"),
            ok.to_uppercase(),
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01".into(),
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01".into(),
            "00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01".into(),
            "".into(),
        ] {
            assert!(parse_traceparent(&bad, "").is_none(), "{bad}");
        }
    }
}
