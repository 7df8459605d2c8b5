//! The gRPC contract (`proto/tokenvault/v1/vault.proto`, feature `grpc`): the generated client
//! and server, and the one translation between its messages and the wire types, used by the
//! server to answer and by the SDK to read, so the two transports hand out the same lease.

use crate::{Binding, Event, Lease, LeaseHeaders};

/// The code generated from `proto/`.
pub mod pb {
    tonic::include_proto!("tokenvault.v1");
    /// The descriptor set that server reflection serves.
    pub const DESCRIPTOR: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/vault_descriptor.bin"));
}

/// The `ErrorInfo` domain of the vault's errors; the reason is the problem `code`.
pub const ERROR_DOMAIN: &str = "tokenvault";
/// The `ErrorInfo` metadata key holding the HTTP status REST answers for the same error.
pub const HTTP_STATUS_KEY: &str = "http_status";

/// What the vault says in a failed call's status details, written by the server and read by the
/// SDK and the checker: REST's HTTP status and problem code, and when to retry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub http_status: u16,
    pub code: String,
    pub retry_after: Option<std::time::Duration>,
}

impl Problem {
    /// The status for this problem: gRPC `code`, `message` (the REST detail), an `ErrorInfo`
    /// (reason: the problem code; domain [`ERROR_DOMAIN`]; REST's status under
    /// [`HTTP_STATUS_KEY`]) and a `RetryInfo` when there is a retry time.
    pub fn into_status(self, code: tonic::Code, message: String) -> tonic::Status {
        use tonic_types::{ErrorDetails, StatusExt};
        let meta: std::collections::HashMap<String, String> =
            [(HTTP_STATUS_KEY.to_string(), self.http_status.to_string())].into();
        let mut details = ErrorDetails::with_error_info(self.code, ERROR_DOMAIN, meta);
        if let Some(r) = self.retry_after {
            details.set_retry_info(Some(r));
        }
        tonic::Status::with_error_details(code, message, details)
    }

    /// The vault's problem in `status`; None for a status the vault did not make (no
    /// connection, a balancer's refusal, a deadline on the client's side).
    pub fn of(status: &tonic::Status) -> Option<Problem> {
        use tonic_types::StatusExt;
        let info = status.get_details_error_info()?;
        if info.domain != ERROR_DOMAIN {
            return None;
        }
        Some(Problem {
            http_status: info
                .metadata
                .get(HTTP_STATUS_KEY)
                .and_then(|v| v.parse().ok())
                .unwrap_or(500),
            code: info.reason,
            retry_after: status.get_details_retry_info().and_then(|r| r.retry_delay),
        })
    }
}

/// An empty string as absent (proto3 has no null for strings).
pub fn opt(s: String) -> Option<String> {
    (!s.is_empty()).then_some(s)
}

impl From<Lease> for pb::Lease {
    fn from(v: Lease) -> Self {
        pb::Lease {
            lease_id: v.lease_id,
            pool: v.pool,
            token_id: v.token_id,
            token_expires_at: v.token_expires_at.unwrap_or_default(),
            lease_expires_at: v.lease_expires_at,
            units: v.units,
            costs: v.costs.into_iter().collect(),
            pipeline: v.pipeline.unwrap_or_default(),
            binding: Some(pb::Binding {
                proxy: v.binding.proxy.unwrap_or_default(),
                fingerprint: v.binding.fingerprint.unwrap_or_default(),
            }),
            authorization: v.headers.authorization,
            secret: v.secret,
            fingerprint: v.fingerprint,
            trace_id: v.trace_id.unwrap_or_default(),
        }
    }
}

impl From<pb::Lease> for Lease {
    fn from(v: pb::Lease) -> Self {
        let binding = v.binding.unwrap_or_default();
        Lease {
            lease_id: v.lease_id,
            pool: v.pool,
            token_id: v.token_id,
            secret: v.secret,
            token_expires_at: opt(v.token_expires_at),
            lease_expires_at: v.lease_expires_at,
            units: v.units,
            pipeline: opt(v.pipeline),
            costs: v.costs.into_iter().collect(),
            binding: Binding {
                proxy: opt(binding.proxy),
                fingerprint: opt(binding.fingerprint),
            },
            headers: LeaseHeaders {
                authorization: v.authorization,
            },
            fingerprint: v.fingerprint,
            trace_id: opt(v.trace_id),
        }
    }
}

/// An event with its stream id (None: a notice such as `events.lost`).
impl From<(Option<String>, Event)> for pb::Event {
    fn from((id, e): (Option<String>, Event)) -> Self {
        pb::Event {
            id: id.unwrap_or_default(),
            r#type: e.kind,
            pool: e.pool,
            token_id: e.token_id.unwrap_or_default(),
            lease_id: e.lease_id.unwrap_or_default(),
            at: e.at,
            reason: e.reason.unwrap_or_default(),
            pipeline: e.pipeline.unwrap_or_default(),
            replaced_by: e.replaced_by.unwrap_or_default(),
            trace_id: e.trace_id.unwrap_or_default(),
        }
    }
}

impl From<pb::Event> for (Option<String>, Event) {
    fn from(e: pb::Event) -> Self {
        (
            opt(e.id),
            Event {
                kind: e.r#type,
                pool: e.pool,
                token_id: opt(e.token_id),
                lease_id: opt(e.lease_id),
                at: e.at,
                reason: opt(e.reason),
                pipeline: opt(e.pipeline),
                replaced_by: opt(e.replaced_by),
                trace_id: opt(e.trace_id),
            },
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lease_and_an_event_cross_grpc_unchanged() {
        let l = Lease {
            lease_id: "l".into(),
            pool: "p".into(),
            token_id: "t".into(),
            secret: "s".into(),
            token_expires_at: Some("2030-01-01T00:00:00Z".into()),
            lease_expires_at: "2030-01-01T00:00:00Z".into(),
            units: 2,
            pipeline: Some("job".into()),
            costs: [("llm".to_string(), 5)].into(),
            binding: Binding {
                proxy: Some("http://proxy:3128".into()),
                fingerprint: None,
            },
            headers: LeaseHeaders {
                authorization: "Bearer s".into(),
            },
            fingerprint: "sha256:0123456789ab".into(),
            trace_id: Some("4bf92f3577b34da6a3ce929d0e0e4736".into()),
        };
        assert_eq!(Lease::from(pb::Lease::from(l.clone())), l);
        let e = Event {
            kind: "token.revoked".into(),
            pool: "p".into(),
            token_id: Some("t".into()),
            at: 7,
            trace_id: Some("4bf92f3577b34da6a3ce929d0e0e4736".into()),
            ..Default::default()
        };
        let back: (Option<String>, Event) = pb::Event::from((Some("1-0".into()), e.clone())).into();
        assert_eq!(back, (Some("1-0".into()), e));
    }

    #[test]
    fn a_problem_survives_its_status() {
        let p = Problem {
            http_status: 503,
            code: "pool_exhausted".into(),
            retry_after: Some(std::time::Duration::from_secs(3)),
        };
        let s = p
            .clone()
            .into_status(tonic::Code::ResourceExhausted, "none left".into());
        assert_eq!(Problem::of(&s), Some(p));
        assert_eq!(
            Problem::of(&tonic::Status::unavailable("no connection")),
            None
        );
    }
}
