//! Tracing: a small OTLP/HTTP receiver (spans decoded with the published OpenTelemetry protobuf
//! definitions) behind `OTEL_EXPORTER_OTLP_ENDPOINT`. A lease made with a `traceparent` yields
//! spans under that trace — route → operation → Redis function — and its answer names the
//! trace and the credential's fingerprint; a revoke's audit entry carries its trace id; and no
//! span attribute holds a secret or a client token.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::routing::post;
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::any_value::Value as AnyValue;
use prost::Message;
use reqwest::Method;
use serde_json::json;

use crate::harness::{eventually, one};

/// A span as the receiver got it.
#[derive(Debug, Clone)]
struct Got {
    trace_id: String,
    span_id: String,
    parent: String,
    name: String,
    /// Every attribute, `key=value`.
    attributes: Vec<String>,
    service: String,
}

/// An OTLP/HTTP (protobuf) trace receiver on a free port.
async fn receiver() -> (String, Arc<Mutex<Vec<Got>>>) {
    let got: Arc<Mutex<Vec<Got>>> = Arc::default();
    let spans = got.clone();
    let app = axum::Router::new().route(
        "/v1/traces",
        post(move |body: Bytes| {
            let spans = spans.clone();
            async move {
                let req = ExportTraceServiceRequest::decode(body).expect("an OTLP trace export");
                let mut spans = spans.lock().unwrap();
                for rs in req.resource_spans {
                    let service = rs
                        .resource
                        .iter()
                        .flat_map(|r| &r.attributes)
                        .find(|a| a.key == "service.name")
                        .map(|a| text(a.value.as_ref().and_then(|v| v.value.as_ref())))
                        .unwrap_or_default();
                    for s in rs.scope_spans.into_iter().flat_map(|s| s.spans) {
                        spans.push(Got {
                            trace_id: hex(&s.trace_id),
                            span_id: hex(&s.span_id),
                            parent: hex(&s.parent_span_id),
                            name: s.name,
                            attributes: s
                                .attributes
                                .iter()
                                .map(|a| {
                                    format!(
                                        "{}={}",
                                        a.key,
                                        text(a.value.as_ref().and_then(|v| v.value.as_ref()))
                                    )
                                })
                                .collect(),
                            service: service.clone(),
                        });
                    }
                }
                (
                    [("content-type", "application/x-protobuf")],
                    ExportTraceServiceResponse::default().encode_to_vec(),
                )
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    (url, got)
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn text(v: Option<&AnyValue>) -> String {
    match v {
        Some(AnyValue::StringValue(s)) => s.clone(),
        Some(AnyValue::IntValue(i)) => i.to_string(),
        Some(AnyValue::BoolValue(b)) => b.to_string(),
        Some(AnyValue::DoubleValue(d)) => d.to_string(),
        Some(other) => format!("{other:?}"),
        None => String::new(),
    }
}

/// A random W3C trace id and span id.
fn ids() -> (String, String) {
    let u = uuid::Uuid::new_v4().simple().to_string();
    (
        u,
        uuid::Uuid::new_v4().simple().to_string()[..16].to_string(),
    )
}

#[tokio::test]
async fn a_lease_is_traced_from_route_to_redis_under_the_callers_trace() {
    let (url, got) = receiver().await;
    let t = one(&[
        ("OTEL_EXPORTER_OTLP_ENDPOINT", url.as_str()),
        ("OTEL_BSP_SCHEDULE_DELAY", "100"),
    ])
    .await;
    let secret = "tracing-secret-8d1f2c";
    t.api.put("/v1/pools/p", json!({})).await;
    t.api
        .post(
            "/v1/pools/p/tokens",
            json!({"tokens": [{"id": "t1", "secret": secret}]}),
        )
        .await;
    let (trace, parent) = ids();
    let traceparent = format!("00-{trace}-{parent}-01");
    let lease = t
        .api
        .call_with(
            Method::POST,
            "/v1/pools/p/leases",
            Some(json!({})),
            &[("traceparent", traceparent.as_str())],
        )
        .await;
    assert_eq!(lease.status, 201, "{lease:?}");
    // The answer links the worker's trace to the credential.
    assert_eq!(lease.body["trace_id"], trace.as_str());
    let fingerprint = t.api.get("/v1/pools/p/tokens/t1").await.body["fingerprint"].clone();
    assert_eq!(lease.body["fingerprint"], fingerprint);

    // route → operation → Redis function, under the caller's span.
    let chain = |spans: &[Got]| -> Option<(Got, Got, Got)> {
        let mine: Vec<&Got> = spans.iter().filter(|s| s.trace_id == trace).collect();
        let route = mine
            .iter()
            .find(|s| s.name == "POST /v1/pools/{pool}/leases" && s.parent == parent)?;
        let op = mine
            .iter()
            .find(|s| s.name == "ops.lease_token" && s.parent == route.span_id)?;
        let fcall = mine
            .iter()
            .find(|s| s.name == "FCALL acquire" && s.parent == op.span_id)?;
        Some(((*route).clone(), (*op).clone(), (*fcall).clone()))
    };
    let found = eventually(Duration::from_secs(60), async || {
        chain(&got.lock().unwrap()).is_some()
    })
    .await;
    let spans = got.lock().unwrap().clone();
    assert!(
        found,
        "no route → operation → FCALL chain under {trace}: {spans:#?}"
    );
    let (route, op, fcall) = chain(&spans).unwrap();
    assert_eq!(route.service, "tokenvault-api");
    assert!(
        route
            .attributes
            .contains(&"http.response.status_code=201".to_string()),
        "{route:?}"
    );
    assert!(op.attributes.contains(&"pool=p".to_string()), "{op:?}");
    assert!(
        fcall
            .attributes
            .contains(&"tv.function=acquire".to_string()),
        "{fcall:?}"
    );

    // A revoke made under another trace: its audit entry carries that trace's id.
    let (trace2, parent2) = ids();
    let r = t
        .api
        .call_with(
            Method::POST,
            "/v1/pools/p/tokens/t1/revoke",
            Some(json!({"reason": "traced"})),
            &[("traceparent", format!("00-{trace2}-{parent2}-01").as_str())],
        )
        .await;
    assert_eq!(r.status, 200, "{r:?}");
    let trail = t.api.get("/v1/audit?pool=p&limit=100").await.body;
    let revoke = trail["events"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["action"] == "token.revoke")
        .cloned()
        .unwrap_or_default();
    assert_eq!(revoke["trace_id"], trace2.as_str(), "{trail}");
    // So does its event.
    let mut events = vault_client::Client::new(&t.vault.base, &t.dep.admin)
        .events(&["p"], Some("0"))
        .await
        .expect("subscribed");
    loop {
        let e = tokio::time::timeout(crate::harness::PATIENCE, events.next())
            .await
            .expect("the revocation's event")
            .expect("stream open")
            .expect("readable");
        if e.kind == "token.revoked" {
            assert_eq!(e.data.trace_id.as_deref(), Some(trace2.as_str()));
            break;
        }
    }

    // Nothing secret in any span: not the credential, not a client token.
    let revoked_spans = eventually(Duration::from_secs(60), async || {
        got.lock().unwrap().iter().any(|s| s.trace_id == trace2)
    })
    .await;
    assert!(revoked_spans, "the revoke's spans never arrived");
    for s in got.lock().unwrap().iter() {
        for a in &s.attributes {
            assert!(
                !a.contains(secret) && !a.contains(&t.dep.admin) && !a.contains("Bearer"),
                "{} holds {a}",
                s.name
            );
        }
    }
}

/// The Rust SDK sends the caller's trace context: a lease made while a context is current comes
/// back with its trace id (REST and gRPC).
#[tokio::test]
async fn the_sdk_propagates_the_callers_trace_context() {
    use opentelemetry::trace::{
        SpanContext, SpanId, TraceContextExt as _, TraceFlags, TraceId, TraceState,
    };
    opentelemetry::global::set_text_map_propagator(
        opentelemetry_sdk::propagation::TraceContextPropagator::new(),
    );
    let grpc = format!("127.0.0.1:{}", testkit::free_port());
    let t = one(&[("TV_GRPC_LISTEN_ADDR", grpc.as_str())]).await;
    t.api
        .put("/v1/pools/p", json!({"max_leases_per_token": 10}))
        .await;
    t.api
        .post(
            "/v1/pools/p/tokens",
            json!({"tokens": [{"id": "t1", "secret": "sdk-traced"}]}),
        )
        .await;
    let rest = vault_client::Client::new(&t.vault.base, &t.dep.admin);
    let over_grpc =
        vault_client::Client::grpc(&format!("http://{grpc}"), &t.dep.admin).expect("a gRPC client");
    for client in [&rest, &over_grpc] {
        let (trace, parent) = ids();
        let caller = SpanContext::new(
            TraceId::from_hex(&trace).unwrap(),
            SpanId::from_hex(&parent).unwrap(),
            TraceFlags::SAMPLED,
            true,
            TraceState::default(),
        );
        let _current = opentelemetry::Context::new()
            .with_remote_span_context(caller)
            .attach();
        let lease = client.lease("p", "sdk").await.expect("a lease");
        assert_eq!(lease.trace_id.as_deref(), Some(trace.as_str()));
        assert!(lease.fingerprint.starts_with("sha256:"));
    }
}

/// The refresher's job is a trace: its call to the token endpoint carries `traceparent`, and
/// the refresh's audit entry names the same trace.
#[tokio::test]
async fn the_refreshers_token_request_carries_its_trace() {
    use crate::fakes::{Fake, Mode};
    let idp = Fake::start(Mode::Ok {
        rotate: false,
        expires_in: 3600,
    })
    .await;
    let t = one(&[]).await;
    let _refresher = t.dep.refresher(&[]);
    t.api.put("/v1/pools/p", json!({})).await;
    t.api
        .post(
            "/v1/pools/p/tokens",
            json!({"tokens": [{"id": "r", "secret": "old", "refresh": {"kind": "oauth2_refresh_token",
                "token_url": idp.url("/token"), "refresh_token": "rt"}}]}),
        )
        .await;
    t.api.post("/v1/pools/p/tokens/r/refresh", json!({})).await;
    crate::harness::wait_json(
        &t.api,
        "/v1/pools/p/tokens/r",
        crate::harness::PATIENCE,
        |m| m["generation"].as_u64() >= Some(2),
    )
    .await;
    let tp = idp.calls()[0]
        .traceparent
        .clone()
        .expect("traceparent sent to the IdP");
    let fields: Vec<&str> = tp.split('-').collect();
    assert_eq!((fields.len(), fields[0]), (4, "00"), "{tp}");
    let trail = t.api.get("/v1/audit?pool=p&limit=100").await.body;
    let refresh = trail["events"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["action"] == "token.refresh")
        .cloned()
        .unwrap_or_default();
    assert_eq!(refresh["trace_id"], fields[1], "{trail}");
}
