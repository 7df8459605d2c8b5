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
    let parent = opentelemetry::global::get_text_map_propagator(|p| {
        p.extract(&opentelemetry_http::HeaderExtractor(req.headers()))
    });
    let _ = span.set_parent(parent);
    span
}

/// Record the answer's status on the request's span (`TraceLayer::on_response`).
pub fn record_status<B>(res: &Response<B>, _latency: Duration, span: &tracing::Span) {
    span.record("http.response.status_code", res.status().as_u16());
}
