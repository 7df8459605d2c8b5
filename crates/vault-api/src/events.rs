//! Events to workers: `GET /v1/events?pools=a,b` (server-sent events).
//!
//! Producers (any replica, the refresher, the janitor) append each event to the capped stream
//! `tv:events` and publish it on the channel of the same name in one script. Every replica
//! subscribes once and fans out to its own SSE clients through a broadcast channel; after a
//! lost subscription it catches up from the stream, so its clients miss nothing. A client that
//! reconnects with `Last-Event-ID` gets what it missed from the stream, then live events, with
//! no gap and no duplicate (it subscribes before reading the replay and skips ids it has seen).

use std::collections::HashSet;
use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::Extension;
use futures::{Stream, StreamExt};
use serde::Deserialize;
use tokio::sync::broadcast;
use vault_core::auth::Principal;
use vault_core::model::{check_pool_name, VaultEvent};

use crate::error::ApiError;
use crate::extract::Query;
use crate::AppState;

/// One server-sent event as the stream carries it (the SSE fields; `data` holds the event in
/// JSON). Documentation only.
pub struct EventStreamItem;

impl utoipa::PartialSchema for EventStreamItem {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        serde_json::from_value(serde_json::json!({
            "type": "object",
            "required": ["event", "data"],
            "description": "One server-sent event.",
            "properties": {
                "event": {"type": "string", "description": "The event's `type`."},
                "id": {"type": "string", "description": "Its stream id (`<ms>-<seq>`): send it as `Last-Event-ID` to resume after it. Absent on `events.lost`, which must not move the resume point."},
                "data": {
                    "type": "string",
                    "contentMediaType": "application/json",
                    "contentSchema": {"$ref": "#/components/schemas/Event"},
                    "description": "The event, in JSON.",
                },
            },
        }))
        .expect("a valid schema")
    }
}

impl utoipa::ToSchema for EventStreamItem {}

/// `<ms>-<seq>` stream ids, comparable.
fn parse_id(id: &str) -> Option<(u64, u64)> {
    let (ms, seq) = id.split_once('-')?;
    Some((ms.parse().ok()?, seq.parse().ok()?))
}

fn newer(id: &str, than: &str) -> bool {
    match (parse_id(id), parse_id(than)) {
        (Some(a), Some(b)) => a > b,
        _ => true,
    }
}

/// One event as every stream of the replica sends it: encoded once, not once per subscriber
/// (at 1,000 subscribers the per-subscriber work is what a revocation's fan-out costs).
pub(crate) struct Delivery {
    pub(crate) event: VaultEvent,
    /// The event as SSE's `data:` (compact JSON: no line breaks).
    json: String,
}

impl Delivery {
    fn new(event: VaultEvent) -> Arc<Delivery> {
        let json = serde_json::to_string(&event).unwrap_or_default();
        Arc::new(Delivery { event, json })
    }
}

/// An event of the live feed, with its stream id.
struct LiveEvent {
    id: String,
    delivery: Arc<Delivery>,
}

/// The replica's fan-out of events.
pub struct EventHub {
    tx: broadcast::Sender<Arc<LiveEvent>>,
    /// The newest event this replica has fanned out (to catch up after a lost subscription).
    last_id: Mutex<Option<String>>,
    /// Set once the Redis subscription is live: until then the replica is not ready.
    pub subscribed: std::sync::atomic::AtomicBool,
    /// Flipped at shutdown: event streams never finish on their own, so they end here and
    /// their clients reconnect (with `Last-Event-ID`) to another replica.
    closing: tokio::sync::watch::Sender<bool>,
}

impl Default for EventHub {
    fn default() -> Self {
        Self {
            tx: broadcast::channel(4096).0,
            last_id: Mutex::new(None),
            subscribed: Default::default(),
            closing: tokio::sync::watch::channel(false).0,
        }
    }
}

impl EventHub {
    /// End every event stream of this replica (shutdown).
    pub fn close(&self) {
        self.closing.send_replace(true);
    }

    /// Fan out one event (duplicates from a catch-up are dropped).
    pub fn deliver(&self, id: String, e: VaultEvent) {
        {
            let mut last = self.last_id.lock().expect("event hub lock");
            if last.as_deref().is_some_and(|l| !newer(&id, l)) {
                return;
            }
            *last = Some(id.clone());
        }
        if e.kind == "token.revoked" || e.kind == "lease.revoked" {
            let delay_ms = (vault_core::time::now_ms() - e.at).max(0);
            metrics::histogram!("tv_revocation_propagation_seconds")
                .record(delay_ms as f64 / 1000.0);
        }
        metrics::counter!("tv_events_total", "type" => e.kind.clone()).increment(1);
        let _ = self.tx.send(Arc::new(LiveEvent {
            id,
            delivery: Delivery::new(e),
        }));
    }

    /// After (re)subscribing: fan out whatever was published while this replica was not
    /// listening.
    pub async fn catch_up(&self, s: &AppState) {
        let known = self.last_id.lock().expect("event hub lock").clone();
        let Some(mut after) = known else {
            // First subscription: start from the newest stored event.
            match s.store.newest_event_id().await {
                Ok(newest) => *self.last_id.lock().expect("event hub lock") = newest,
                Err(err) => tracing::warn!(error = %err, "cannot read the event stream"),
            }
            return;
        };
        loop {
            match s.store.events_after(&after, 1000).await {
                Ok(batch) if batch.is_empty() => return,
                Ok(batch) => {
                    for (id, e) in batch {
                        after = id.clone();
                        self.deliver(id, e);
                    }
                }
                Err(err) => {
                    tracing::warn!(error = %err, "cannot catch up on events");
                    return;
                }
            }
        }
    }
}

#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct EventsQuery {
    /// Comma-separated pool names; all the token may see when absent or empty.
    #[param(value_type = Option<Vec<vault_core::model::Name>>, style = Form, explode = false)]
    pools: Option<String>,
}

/// One event on the wire; `id` is absent only for notices, which must not move a client's
/// resume point.
fn sse(id: Option<&str>, d: &Delivery) -> Event {
    let ev = Event::default().event(&d.event.kind).data(&d.json);
    match id {
        Some(id) => ev.id(id),
        None => ev,
    }
}

/// `events.lost`: some events after `after` are no longer kept. It carries no id, so a client's
/// `Last-Event-ID` stays at the last real event.
fn lost_event(after: &str, at: i64) -> VaultEvent {
    VaultEvent {
        kind: "events.lost".into(),
        at,
        reason: Some(format!(
            "events after {after} are no longer kept; re-check held leases (renew answers 410 for revoked ones)"
        )),
        ..Default::default()
    }
}

/// Subscribe to events (server-sent events): revocations, freezes, refreshes, quota and
/// lease changes, optionally for some pools, resumable with `Last-Event-ID`.
#[utoipa::path(
    get,
    path = "/events",
    tag = "events",
    params(
        EventsQuery,
        ("Last-Event-ID" = Option<String>, Header, nullable = false, description = "resume after this event id (`<ms>-<seq>`, as the last event received had it; `<ms>` alone stands for `<ms>-0`)", pattern = "^[0-9]{1,19}(-[0-9]{1,19})?$"),
    ),
    responses(
        (status = 200, description = "server-sent events: each `data` is an `Event` in JSON", body = EventStreamItem, content_type = "text/event-stream"),
    )
)]
pub async fn stream(
    State(s): State<AppState>,
    Extension(who): Extension<Principal>,
    Query(q): Query<EventsQuery>,
    headers: HeaderMap,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, ApiError> {
    let wanted = wanted_pools(&who, q.pools.as_deref())?;
    let resume = match headers.get("last-event-id") {
        Some(v) => Some(resume_point(v.to_str().unwrap_or(""))?),
        None => None,
    };
    let stream = feed(s, who, wanted, resume).map(|(id, e)| Ok(sse(id.as_deref(), &e)));
    Ok(Sse::new(stream).keep_alive(KeepAlive::new().interval(Duration::from_secs(15))))
}

/// The pools a subscriber asked for (`list`, comma-separated; all it may see when absent),
/// each checked against its token.
pub(crate) fn wanted_pools(
    who: &Principal,
    list: Option<&str>,
) -> Result<Option<HashSet<String>>, ApiError> {
    match list.filter(|p| !p.is_empty()) {
        Some(list) => {
            let mut set = HashSet::new();
            for p in list.split(',') {
                check_pool_name(p)?;
                if !who.may_use_pool(p) {
                    return Err(ApiError::forbidden(format!(
                        "this client token is not allowed on pool {p}"
                    )));
                }
                set.insert(p.to_string());
            }
            Ok(Some(set))
        }
        None => Ok(who.pools.clone().map(|p| p.into_iter().collect())),
    }
}

/// A resume point (`Last-Event-ID`), checked.
/// A bare `<ms>` stands for `<ms>-0`, as in Redis stream ranges.
pub(crate) fn resume_point(id: &str) -> Result<String, ApiError> {
    let id = match id.parse::<u64>() {
        Ok(ms) => format!("{ms}-0"),
        Err(_) => id.to_string(),
    };
    if parse_id(&id).is_none() {
        return Err(ApiError::invalid(
            "Last-Event-ID must be an event id like 1732500000000-0",
        ));
    }
    Ok(id)
}

/// A subscriber's events, whatever the transport (SSE, gRPC `Watch`): those of `wanted` pools
/// after `resume` (replayed from the stream, with an `events.lost` notice, id None, when some
/// were trimmed), then live ones, with no gap and no duplicate. It ends within a second of its
/// client token's revocation or expiry, and at shutdown.
pub(crate) fn feed(
    s: AppState,
    who: Principal,
    wanted: Option<HashSet<String>>,
    resume: Option<String>,
) -> impl Stream<Item = (Option<String>, Arc<Delivery>)> {
    // Subscribe before reading the replay: nothing published in between can be missed.
    let mut rx = s.events.tx.subscribe();
    let mut closing = s.events.closing.subscribe();
    let mut auth_check = tokio::time::interval(Duration::from_secs(1));
    auth_check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    async_stream::stream! {
        let pass = |e: &VaultEvent| wanted.as_ref().is_none_or(|w| w.contains(&e.pool));
        let mut last_sent: Option<String> = resume.clone();
        let mut replay_from = resume;
        loop {
            if let Some(mut from) = replay_from.take() {
                // Events after `from` may have been trimmed by the cap (or lost with Redis data):
                // say so, once, so the client re-checks what it holds instead of trusting a
                // silent gap. Conservative: the oldest kept event is newer than `from`.
                let gap = match s.store.oldest_event_id().await {
                    Ok(Some(oldest)) => newer(&oldest, &from),
                    Ok(None) => true,
                    Err(_) => false,
                };
                if gap {
                    yield (None, Delivery::new(lost_event(&from, s.store.event_time().await)));
                }
                loop {
                    let batch = match s.store.events_after(&from, 500).await {
                        Ok(b) => b,
                        Err(err) => {
                            tracing::warn!(error = %err, "event replay failed");
                            break;
                        }
                    };
                    if batch.is_empty() {
                        break;
                    }
                    for (id, e) in batch {
                        from = id.clone();
                        if pass(&e) {
                            yield (Some(id.clone()), Delivery::new(e));
                        }
                        last_sent = Some(id);
                    }
                }
            }
            // A stream lives only as long as its client token: revoked or expired, it ends
            // (within a second), and the reconnect is refused.
            let received = tokio::select! {
                r = rx.recv() => r,
                _ = closing.wait_for(|c| *c) => break,
                _ = auth_check.tick() => {
                    if s.revocations.is_revoked(&who.jti)
                        || who.exp <= vault_core::time::now_ms() / 1000
                    {
                        break;
                    }
                    continue;
                }
            };
            match received {
                Ok(item) => {
                    let (id, d) = (&item.id, &item.delivery);
                    let e = &d.event;
                    if last_sent.as_deref().is_some_and(|l| !newer(id, l)) {
                        continue;
                    }
                    if pass(e) {
                        yield (Some(id.clone()), d.clone());
                    }
                    last_sent = Some(id.clone());
                }
                // Too slow to keep up with the live feed: fill the gap from the stream.
                Err(broadcast::error::RecvError::Lagged(_)) => replay_from = last_sent.clone(),
                Err(broadcast::error::RecvError::Closed) => break,
            }
        }
    }
}
