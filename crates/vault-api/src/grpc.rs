//! The worker's side of the vault over gRPC (`proto/tokenvault/v1/vault.proto`), on a listener
//! of its own (`TV_GRPC_LISTEN_ADDR`). Every call authenticates like REST (the same client
//! tokens, scopes by the same table, pool and pipeline limits, failed-auth limiter) and runs the
//! same function as its REST route (`routes::leases`), so the two cannot answer differently.

use std::collections::HashMap;
use std::time::Duration;

use axum::http::Method;
use tonic::{Code, Request, Response, Status};
use vault_core::auth::Principal;
use vault_core::model::{AcquireInput, RenewInput, Report};
use vault_core::time::TimeInput;
use vault_wire::grpc::opt;

use crate::error::ApiError;
use crate::routes::leases;
use crate::AppState;

/// The code generated from `proto/` (in `vault-wire`, shared with the SDK).
pub use vault_wire::grpc::pb;

use pb::vault_server::{Vault, VaultServer};

/// Largest message a client may send (REST's body limit).
pub const MAX_MESSAGE_BYTES: usize = 1024 * 1024;

pub struct VaultService {
    state: AppState,
}

/// The REST answer of an error as a gRPC status: the code by the table in the API docs, the
/// problem `code` as an `ErrorInfo` reason (domain `tokenvault`, with REST's status as
/// metadata `http_status`), `Retry-After` as `RetryInfo`.
pub fn status_of(e: ApiError) -> Status {
    let code = match (e.status.as_u16(), e.code) {
        (_, "pool_exhausted") | (429, _) => Code::ResourceExhausted,
        (400 | 413 | 422, _) => Code::InvalidArgument,
        (401, _) => Code::Unauthenticated,
        (403, _) => Code::PermissionDenied,
        (404 | 410, _) => Code::NotFound,
        (409 | 423, _) => Code::FailedPrecondition,
        (503, _) => Code::Unavailable,
        _ => Code::Internal,
    };
    let problem = vault_wire::grpc::Problem {
        http_status: e.status.as_u16(),
        code: e.code.to_string(),
        retry_after: e.retry_after_s.map(Duration::from_secs),
    };
    problem.into_status(code, e.detail)
}

impl VaultService {
    pub fn server(state: AppState) -> VaultServer<Self> {
        VaultServer::new(VaultService { state })
            .max_decoding_message_size(MAX_MESSAGE_BYTES)
            .max_encoding_message_size(4 * MAX_MESSAGE_BYTES)
    }

    /// The caller, authenticated and allowed to call what `route` names on `pool`, as the REST
    /// middleware decides it (`auth::allowed_scopes`).
    fn caller<T>(&self, req: &Request<T>, route: &str, pool: &str) -> Result<Principal, Status> {
        self.caller_at(req, &Method::POST, route, pool)
    }

    /// As [`VaultService::caller`], for `method` `route`.
    fn caller_at<T>(
        &self,
        req: &Request<T>,
        method: &Method,
        route: &str,
        pool: &str,
    ) -> Result<Principal, Status> {
        let principal = self.caller_of(req, method, route)?;
        if !principal.may_use_pool(pool) {
            return Err(status_of(ApiError::forbidden(
                "this client token is not allowed on this pool",
            )));
        }
        Ok(principal)
    }

    /// The caller, authenticated and holding a scope that may call `method` `route`.
    fn caller_of<T>(
        &self,
        req: &Request<T>,
        method: &Method,
        route: &str,
    ) -> Result<Principal, Status> {
        let header = req.metadata().get("authorization").map(|v| {
            v.to_str()
                .map_err(|_| vault_core::auth::AuthError::Malformed)
        });
        let principal = crate::auth::caller(&self.state, req.remote_addr().map(|a| a.ip()), header)
            .map_err(status_of)?;
        let scopes = crate::auth::allowed_scopes(method, route).unwrap_or(&[]);
        if !scopes.iter().any(|s| principal.has(*s)) {
            return Err(status_of(ApiError::forbidden(
                "this call needs scope lease",
            )));
        }
        Ok(principal)
    }
}

/// A report as REST reads it (the same checks apply).
fn report_of(r: Option<pb::Report>) -> Result<Report, Status> {
    let r = r.unwrap_or_default();
    let outcome = if r.outcome.is_empty() {
        "ok".to_string()
    } else {
        r.outcome
    };
    let outcome =
        serde_json::from_value(serde_json::Value::String(outcome.clone())).map_err(|_| {
            status_of(ApiError::invalid(format!(
                "outcome {outcome}: use ok, unauthorized, rate_limited, forbidden, suspect"
            )))
        })?;
    Ok(Report {
        used: r.used,
        outcome,
        retry_after_s: r.retry_after_s,
        remaining: r.remaining,
        reset_at: r.reset_at_ms.map(TimeInput),
        detail: opt(r.detail),
        costs: r.costs.into_iter().collect(),
        quotas: families(r.quotas),
        rate_limit: families(r.rate_limit),
    })
}

fn families(
    m: HashMap<String, pb::QuotaReport>,
) -> std::collections::BTreeMap<String, vault_core::model::QuotaReport> {
    m.into_iter()
        .map(|(k, q)| {
            let q = vault_core::model::QuotaReport {
                remaining: q.remaining,
                reset_at: q.reset_at_ms.map(TimeInput),
            };
            (k, q)
        })
        .collect()
}

/// Run one call, counted and timed by method and status code (`tv_grpc_requests_total`,
/// `tv_grpc_request_duration_seconds`), in a span like the REST routes'.
async fn observed<T>(
    method: &'static str,
    call: impl std::future::Future<Output = Result<T, Status>>,
) -> Result<T, Status> {
    use tracing::Instrument;
    let started = std::time::Instant::now();
    let r = call.instrument(tracing::info_span!("grpc", method)).await;
    let code = match &r {
        Ok(_) => Code::Ok,
        Err(s) => s.code(),
    };
    metrics::counter!("tv_grpc_requests_total", "method" => method, "code" => code_name(code))
        .increment(1);
    metrics::histogram!("tv_grpc_request_duration_seconds", "method" => method)
        .record(started.elapsed().as_secs_f64());
    r
}

/// A status code's name, as the metric's label (no allocation per call).
fn code_name(code: Code) -> &'static str {
    match code {
        Code::Ok => "Ok",
        Code::Cancelled => "Cancelled",
        Code::Unknown => "Unknown",
        Code::InvalidArgument => "InvalidArgument",
        Code::DeadlineExceeded => "DeadlineExceeded",
        Code::NotFound => "NotFound",
        Code::AlreadyExists => "AlreadyExists",
        Code::PermissionDenied => "PermissionDenied",
        Code::ResourceExhausted => "ResourceExhausted",
        Code::FailedPrecondition => "FailedPrecondition",
        Code::Aborted => "Aborted",
        Code::OutOfRange => "OutOfRange",
        Code::Unimplemented => "Unimplemented",
        Code::Internal => "Internal",
        Code::Unavailable => "Unavailable",
        Code::DataLoss => "DataLoss",
        Code::Unauthenticated => "Unauthenticated",
    }
}

/// Events as `Watch` sends them.
type EventStream = std::pin::Pin<Box<dyn futures::Stream<Item = Result<pb::Event, Status>> + Send>>;

#[tonic::async_trait]
impl Vault for VaultService {
    type WatchStream = EventStream;

    async fn watch(
        &self,
        req: Request<pb::WatchRequest>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        observed("Watch", async move {
            use futures::StreamExt;
            // The same route, scope and pool checks as `GET /v1/events`.
            let who = self.caller_of(&req, &Method::GET, "/events")?;
            let r = req.into_inner();
            let pools = r.pools.join(",");
            let wanted = crate::events::wanted_pools(&who, Some(&pools)).map_err(status_of)?;
            let resume = match r.last_event_id.as_str() {
                "" => None,
                id => Some(crate::events::resume_point(id).map_err(status_of)?),
            };
            let events = crate::events::feed(self.state.clone(), who, wanted, resume)
                .map(|(id, d)| Ok((id, d.event.clone()).into()));
            Ok(Response::new(Box::pin(events) as Self::WatchStream))
        })
        .await
    }

    async fn pool_status(
        &self,
        req: Request<pb::PoolStatusRequest>,
    ) -> Result<Response<pb::PoolStatusReply>, Status> {
        observed("PoolStatus", async move {
            let pool = req.get_ref().pool.clone();
            self.caller_at(&req, &Method::GET, "/pools/{pool}/status", &pool)?;
            let st = crate::routes::pools::status_of(&self.state, &pool)
                .await
                .map_err(status_of)?;
            Ok(Response::new(pb::PoolStatusReply {
                json: serde_json::to_string(&st).unwrap_or_default(),
                pool: st.pool,
                tokens: st.tokens.into_iter().collect(),
                leases_active: st.leases_active,
                utilization: st.utilization,
                quota_used_ratio: st.quota_used_ratio,
                frozen: st.frozen,
            }))
        })
        .await
    }

    async fn token_meta(
        &self,
        req: Request<pb::TokenMetaRequest>,
    ) -> Result<Response<pb::TokenMetaReply>, Status> {
        observed("TokenMeta", async move {
            let (pool, id) = (req.get_ref().pool.clone(), req.get_ref().token_id.clone());
            self.caller_at(&req, &Method::GET, "/pools/{pool}/tokens/{id}", &pool)?;
            let t = crate::routes::tokens::meta_of(&self.state, &pool, &id)
                .await
                .map_err(status_of)?;
            Ok(Response::new(pb::TokenMetaReply {
                json: serde_json::to_string(&t).unwrap_or_default(),
                token_id: t.id,
                state: t.state,
                expires_at: t.expires_at.unwrap_or_default(),
                fingerprint: t.fingerprint,
                leases: t.leases,
            }))
        })
        .await
    }

    async fn lease(
        &self,
        req: Request<pb::LeaseRequest>,
    ) -> Result<Response<pb::LeaseReply>, Status> {
        observed("Lease", async move {
            let who = self.caller(&req, "/pools/{pool}/leases", &req.get_ref().pool)?;
            let r = req.into_inner();
            let input = AcquireInput {
                worker: opt(r.worker),
                units: r.units,
                costs: r.costs.into_iter().collect(),
                ttl_s: r.ttl_s,
                min_token_ttl_s: r.min_token_ttl_s,
                session: opt(r.session),
                wait_ms: r.wait_ms,
                pipeline: opt(r.pipeline),
            };
            let key = opt(r.idempotency_key);
            let (replayed, lease) =
                leases::lease(&self.state, &who, &r.pool, input, key.as_deref())
                    .await
                    .map_err(status_of)?;
            Ok(Response::new(pb::LeaseReply {
                lease: Some(lease.into()),
                replayed,
            }))
        })
        .await
    }

    async fn renew(
        &self,
        req: Request<pb::RenewRequest>,
    ) -> Result<Response<pb::LeaseReply>, Status> {
        observed("Renew", async move {
            self.caller(
                &req,
                "/pools/{pool}/leases/{lease}/renew",
                &req.get_ref().pool,
            )?;
            let r = req.into_inner();
            let input = RenewInput {
                ttl_s: r.ttl_s,
                units: r.units,
            };
            let lease = leases::renew_lease(&self.state, &r.pool, &r.lease_id, input)
                .await
                .map_err(status_of)?;
            Ok(Response::new(pb::LeaseReply {
                lease: Some(lease.into()),
                replayed: false,
            }))
        })
        .await
    }

    async fn release(
        &self,
        req: Request<pb::ReleaseRequest>,
    ) -> Result<Response<pb::ReleaseReply>, Status> {
        observed("Release", async move {
            let who = self.caller(
                &req,
                "/pools/{pool}/leases/{lease}/release",
                &req.get_ref().pool,
            )?;
            let r = req.into_inner();
            let report = report_of(r.report)?;
            let done = leases::release_lease(&self.state, &who, &r.pool, &r.lease_id, &report)
                .await
                .map_err(status_of)?;
            Ok(Response::new(pb::ReleaseReply {
                token_id: done.token_id,
                state: done.token_state,
            }))
        })
        .await
    }

    async fn rotate(
        &self,
        req: Request<pb::ReleaseRequest>,
    ) -> Result<Response<pb::RotateReply>, Status> {
        observed("Rotate", async move {
            let who = self.caller(
                &req,
                "/pools/{pool}/leases/{lease}/rotate",
                &req.get_ref().pool,
            )?;
            let r = req.into_inner();
            let report = report_of(r.report)?;
            let (released, next) =
                leases::rotate_lease(&self.state, &who, &r.pool, &r.lease_id, &report)
                    .await
                    .map_err(status_of)?;
            let lease = next.map_err(status_of)?;
            Ok(Response::new(pb::RotateReply {
                released: Some(pb::ReleaseReply {
                    token_id: released.token_id,
                    state: released.state,
                }),
                lease: Some(lease.into()),
            }))
        })
        .await
    }
}

/// The gRPC services, as one router the replica's accept loop serves on the gRPC listener (with
/// REST's connection caps and timeouts, see `server::serve`): the vault's service,
/// `grpc.health.v1.Health` (SERVING while `/readyz` would answer 200, for load balancers) and
/// server reflection.
pub fn app(state: AppState) -> anyhow::Result<axum::Router> {
    let (reporter, health) = tonic_health::server::health_reporter();
    let reflection = || {
        tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(pb::DESCRIPTOR)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
    };
    // Both versions of the reflection service: grpcurl asks v1, many clients still v1alpha.
    let (reflection_v1, reflection_v1alpha) =
        (reflection().build_v1()?, reflection().build_v1alpha()?);
    // Health follows readiness (Redis, the function library, the event subscription, drain).
    let watched = state.clone();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        loop {
            tick.tick().await;
            let ready = crate::routes::health::readyz(axum::extract::State(watched.clone()))
                .await
                .is_ok();
            let status = if ready {
                tonic_health::ServingStatus::Serving
            } else {
                tonic_health::ServingStatus::NotServing
            };
            reporter
                .set_service_status("tokenvault.v1.Vault", status)
                .await;
            reporter.set_service_status("", status).await;
        }
    });
    Ok(tonic::service::Routes::new(health)
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha)
        .add_service(VaultService::server(state))
        .into_axum_router()
        // A call's span, its parent the caller's `traceparent` metadata, as over REST.
        .layer(
            tower_http::trace::TraceLayer::new_for_grpc()
                .make_span_with(crate::trace::request_span)
                .on_response(crate::trace::record_status)
                .on_failure(()),
        ))
}
