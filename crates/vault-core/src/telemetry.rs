//! Logs and traces. Every process writes log lines (text or JSON) and keeps a W3C trace context
//! on its spans: a request's `traceparent` is its parent (vault-api), or a new trace starts. The
//! trace id is what audit entries, events and lease answers carry, so a worker's own trace, the
//! lease, the token's fingerprint and a later revocation can be tied together.
//!
//! Spans are exported over OTLP/HTTP (protobuf) only when the standard settings ask for it:
//! `OTEL_EXPORTER_OTLP_ENDPOINT` (or `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`), with the other
//! `OTEL_*` settings (headers, timeout, `OTEL_SERVICE_NAME`, `OTEL_TRACES_SAMPLER`,
//! `OTEL_BSP_*`) as the OpenTelemetry SDK reads them; `OTEL_TRACES_EXPORTER=none` turns export
//! off. Without them nothing leaves the process. `OTEL_SDK_DISABLED=true` turns tracing off
//! altogether: no spans are made and answers carry no trace id.
//!
//! What a span may hold: names, pool names, ids, fingerprints, counts and status codes. Never a
//! secret, a client token or a header value (the spans here record none; see the tracing test).

use opentelemetry::trace::TracerProvider as _;
use tracing_subscriber::prelude::*;

use crate::config::LogFormat;

/// The tracer provider, to flush what is still buffered at exit.
pub struct Telemetry {
    provider: opentelemetry_sdk::trace::SdkTracerProvider,
}

impl Telemetry {
    /// Export what is buffered and stop (bounded by the exporter's timeout).
    pub fn shutdown(&self) {
        let _ = self.provider.shutdown();
    }
}

/// Install the log subscriber (`RUST_LOG` filter, default `info`; text or JSON lines) and the
/// trace context, exporting spans when the `OTEL_*` settings ask for it. `service` is the
/// `service.name` unless `OTEL_SERVICE_NAME` says otherwise.
pub fn init_tracing(format: LogFormat, service: &'static str) -> Telemetry {
    opentelemetry::global::set_text_map_propagator(
        opentelemetry_sdk::propagation::TraceContextPropagator::new(),
    );
    let mut resource = opentelemetry_sdk::Resource::builder();
    if std::env::var_os("OTEL_SERVICE_NAME").is_none() {
        resource = resource.with_service_name(service);
    }
    let provider =
        opentelemetry_sdk::trace::SdkTracerProvider::builder().with_resource(resource.build());
    #[cfg(feature = "otlp")]
    let provider = match otlp_exporter() {
        Some(exporter) => provider.with_batch_exporter(exporter),
        None => provider,
    };
    let provider = provider.build();
    opentelemetry::global::set_tracer_provider(provider.clone());
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let logs = tracing_subscriber::fmt::layer().with_writer(std::io::stderr);
    let logs = match format {
        LogFormat::Json => logs.json().boxed(),
        LogFormat::Text => logs.boxed(),
    };
    // Spans of the vault's own crates make the trace, whatever RUST_LOG lets the logs show;
    // of their log events only warnings and errors become span events.
    let ours = |target: &str| {
        target
            .split("::")
            .next()
            .is_some_and(|root| ["vault_api", "vault_core", "refresher", "janitor"].contains(&root))
    };
    let spans = tracing_subscriber::filter::filter_fn(move |m| {
        ours(m.target())
            && if m.is_span() {
                *m.level() <= tracing::Level::INFO
            } else {
                *m.level() <= tracing::Level::WARN
            }
    });
    // What each span records is kept to its own fields: no source location, thread or busy/idle
    // timing attributes, and no activation of the OpenTelemetry context at every poll (the
    // trace id is read from the span itself). Each of these costs the lease path.
    let traces = (!sdk_disabled()).then(|| {
        tracing_opentelemetry::layer()
            .with_tracer(provider.tracer("tokenvault"))
            .with_location(false)
            .with_threads(false)
            .with_target(false)
            .with_tracked_inactivity(false)
            .with_context_activation(false)
            .with_filter(spans)
    });
    let _ = tracing_subscriber::registry()
        .with(logs.with_filter(filter))
        .with(traces)
        .try_init();
    Telemetry { provider }
}

/// `OTEL_SDK_DISABLED=true`: no spans at all.
fn sdk_disabled() -> bool {
    std::env::var("OTEL_SDK_DISABLED").is_ok_and(|v| v.trim().eq_ignore_ascii_case("true"))
}

/// The OTLP/HTTP exporter the `OTEL_*` settings ask for, if any.
#[cfg(feature = "otlp")]
fn otlp_exporter() -> Option<opentelemetry_otlp::SpanExporter> {
    let set = |k: &str| std::env::var(k).ok().filter(|v| !v.trim().is_empty());
    if sdk_disabled() || set("OTEL_TRACES_EXPORTER").is_some_and(|v| v.eq_ignore_ascii_case("none"))
    {
        return None;
    }
    set("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT").or_else(|| set("OTEL_EXPORTER_OTLP_ENDPOINT"))?;
    let protocol =
        set("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL").or_else(|| set("OTEL_EXPORTER_OTLP_PROTOCOL"));
    if protocol.as_deref().is_some_and(|p| p != "http/protobuf") {
        eprintln!("OTEL_EXPORTER_OTLP_PROTOCOL={protocol:?}: tokenvault exports over http/protobuf only; using it");
    }
    use opentelemetry_otlp::WithExportConfig as _;
    match opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_protocol(opentelemetry_otlp::Protocol::HttpBinary)
        .build()
    {
        Ok(e) => Some(e),
        Err(e) => {
            eprintln!("OTLP span export is off: {e}");
            None
        }
    }
}

/// The trace id of the current span (32 hex digits); None outside a trace.
pub fn current_trace_id() -> Option<String> {
    use opentelemetry::trace::TraceContextExt as _;
    use tracing_opentelemetry::OpenTelemetrySpanExt as _;
    let cx = tracing::Span::current().context();
    let sc = cx.span().span_context().clone();
    sc.is_valid().then(|| sc.trace_id().to_string())
}
