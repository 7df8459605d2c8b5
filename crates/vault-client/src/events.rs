//! The vault's events: one server-sent-events (or gRPC `Watch`) stream, and a feed that reopens
//! it with `Last-Event-ID` whenever it ends.

use std::time::Duration;

use eventsource_stream::Eventsource;
use futures_util::StreamExt;

use crate::*;

/// One event of the vault: its id (the resume point; empty for notices such as `events.lost`),
/// its kind (`token.revoked`, `lease.revoked`, `pool.frozen`, ...), and what the vault sent, as
/// the server wrote it (`vault_wire::Event`: pool, token or lease id, time, reason, ...).
#[derive(Debug, Clone)]
pub struct Event {
    pub id: String,
    pub kind: String,
    pub data: vault_wire::Event,
}

type SseStream = std::pin::Pin<
    Box<
        dyn futures_util::Stream<
                Item = std::result::Result<
                    eventsource_stream::Event,
                    eventsource_stream::EventStreamError<reqwest::Error>,
                >,
            > + Send,
    >,
>;

/// A live event stream: server-sent events parsed by `eventsource-stream` (every line ending
/// the standard allows, multi-line `data`, characters split across chunks), or a gRPC `Watch`.
pub struct EventStream {
    pub(crate) inner: Inner,
}

pub(crate) enum Inner {
    Sse(SseStream),
    #[cfg(feature = "grpc")]
    Grpc(Box<tonic::Streaming<vault_wire::grpc::pb::Event>>),
}

impl EventStream {
    pub(crate) fn over<B: AsRef<[u8]>>(
        bytes: impl futures_util::Stream<Item = std::result::Result<B, reqwest::Error>> + Send + 'static,
    ) -> Self {
        EventStream {
            inner: Inner::Sse(Box::pin(bytes.eventsource())),
        }
    }

    /// The next event; `None` when the server closed the stream. Keep-alive comments and
    /// events without a type are skipped.
    pub async fn next(&mut self) -> Option<Result<Event>> {
        // Without the `grpc` feature the match has one arm; it stays a match so that feature
        // only adds one.
        #[allow(clippy::infallible_destructuring_match)]
        let sse = match &mut self.inner {
            Inner::Sse(s) => s,
            #[cfg(feature = "grpc")]
            Inner::Grpc(s) => return grpc::next_event(s).await,
        };
        loop {
            let ev = match sse.next().await? {
                Ok(ev) => ev,
                Err(eventsource_stream::EventStreamError::Transport(e)) => {
                    return Some(Err(e.into()))
                }
                Err(e) => return Some(Err(Error::Stream(e.to_string()))),
            };
            if ev.event.is_empty() || ev.event == "message" {
                continue;
            }
            // An event this client cannot read is an error, not an empty one: a worker must
            // not miss a revocation because its payload changed shape.
            let data = match serde_json::from_str::<vault_wire::Event>(&ev.data) {
                Ok(d) => d,
                Err(e) => {
                    return Some(Err(Error::Stream(format!(
                        "event {} ({}) not understood: {e}",
                        ev.id, ev.event
                    ))))
                }
            };
            return Some(Ok(Event {
                id: ev.id,
                kind: ev.event,
                data,
            }));
        }
    }
}

/// Events for as long as the caller reads them: [`Client::follow`]. When the stream ends or
/// breaks, it is opened again with `Last-Event-ID` (backing off from 200 ms up to 30 s), so
/// nothing the vault still keeps is missed. Notices such as `events.lost` carry no id: the
/// resume point stays at the last real event.
pub struct EventFeed {
    client: Client,
    pools: Vec<String>,
    stream: Option<EventStream>,
    last_id: Option<String>,
    backoff: Duration,
    reconnects: u64,
    /// A stream was opened once: opening another is a reconnection, after the backoff.
    opened: bool,
}

const FEED_BACKOFF: (Duration, Duration) = (Duration::from_millis(200), Duration::from_secs(30));

impl Client {
    /// Subscribe to events of `pools` (all the token may see when empty) and keep following
    /// them. The first subscription is made here: from the moment this returns, nothing published
    /// is missed.
    pub async fn follow(&self, pools: &[&str]) -> Result<EventFeed> {
        let mut feed = self.feed(pools);
        feed.stream = Some(self.events(pools, None).await?);
        feed.opened = true;
        Ok(feed)
    }

    /// As [`Client::follow`], but subscribing at the first [`EventFeed::next`], where an
    /// unreachable vault is retried like a lost stream.
    pub fn feed(&self, pools: &[&str]) -> EventFeed {
        EventFeed {
            client: self.clone(),
            pools: pools.iter().map(|p| p.to_string()).collect(),
            stream: None,
            last_id: None,
            backoff: FEED_BACKOFF.0,
            reconnects: 0,
            opened: false,
        }
    }
}

impl EventFeed {
    /// The next event. An error is a reconnection the vault refused (a 4xx: the client token is
    /// revoked, expired or not allowed); calling again tries again, after the backoff.
    pub async fn next(&mut self) -> Result<Event> {
        loop {
            if let Some(stream) = self.stream.as_mut() {
                if let Some(Ok(e)) = stream.next().await {
                    if !e.id.is_empty() {
                        self.last_id = Some(e.id.clone());
                    }
                    return Ok(e);
                }
                self.stream = None;
            }
            if self.opened {
                tokio::time::sleep(self.backoff).await;
                self.backoff = (self.backoff * 2).min(FEED_BACKOFF.1);
                self.reconnects += 1;
            }
            self.opened = true;
            let pools: Vec<&str> = self.pools.iter().map(String::as_str).collect();
            match self.client.events(&pools, self.last_id.as_deref()).await {
                Ok(s) => {
                    self.stream = Some(s);
                    self.backoff = FEED_BACKOFF.0;
                }
                Err(e @ Error::Api { status, .. }) if (400..500).contains(&status) => {
                    return Err(e)
                }
                Err(e) => tracing::warn!(error = %e, "event stream lost; retrying"),
            }
        }
    }

    /// How often the stream had to be opened again.
    pub fn reconnects(&self) -> u64 {
        self.reconnects
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What the hand-written parser got wrong: a character split across chunks, `\r\n` line
    /// endings, multi-line `data`, comments.
    #[tokio::test]
    async fn events_are_parsed_by_the_standard() {
        let text = ": keep-alive\r\n\r\nid: 1-0\r\nevent: token.revoked\r\ndata: {\"type\":\"token.revoked\",\"pool\":\"p\",\"at\":1,\"reason\":\r\ndata: \"caf\u{e9}\"}\r\n\r\nid: 2-0\nevent: pool.frozen\ndata: {\"type\":\"pool.frozen\",\"pool\":\"p\",\"at\":2}\n\n";
        let bytes = text.as_bytes();
        // Split inside the two bytes of "é".
        let cut = text.find('\u{e9}').unwrap() + 1;
        let chunks: Vec<std::result::Result<Vec<u8>, reqwest::Error>> =
            vec![Ok(bytes[..cut].to_vec()), Ok(bytes[cut..].to_vec())];
        let mut s = EventStream::over(futures_util::stream::iter(chunks));
        let e = s.next().await.unwrap().unwrap();
        assert_eq!((e.id.as_str(), e.kind.as_str()), ("1-0", "token.revoked"));
        assert_eq!(e.data.reason.as_deref(), Some("caf\u{e9}"));
        let e = s.next().await.unwrap().unwrap();
        assert_eq!((e.id.as_str(), e.kind.as_str()), ("2-0", "pool.frozen"));
        assert!(s.next().await.is_none());
    }
}
