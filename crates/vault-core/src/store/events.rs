//! The event stream: published once, read back for replay.

use super::*;

impl Store {
    /// Append `events` to the event stream and publish each, in order, [`EVENT_BATCH`] per
    /// call.
    pub(crate) async fn publish_events(&self, events: &[VaultEvent]) -> Result<()> {
        let key = self.keys.events();
        for batch in events.chunks(EVENT_BATCH) {
            let mut cmd = redis::cmd("FCALL");
            cmd.arg(&*scripts::PUBLISH_EVENT)
                .arg(2)
                .arg(&key)
                .arg(&key)
                .arg(self.events_max);
            for e in batch {
                cmd.arg(serde_json::to_string(e).expect("events serialize"));
            }
            let _last_id: String = self.fcall(&cmd).await?;
        }
        Ok(())
    }

    /// The id of the newest event, if any.
    pub async fn newest_event_id(&self) -> Result<Option<String>> {
        let rows: Vec<(String, HashMap<String, String>)> = self
            .cmd(
                redis::cmd("XREVRANGE")
                    .arg(self.keys.events())
                    .arg("+")
                    .arg("-")
                    .arg("COUNT")
                    .arg(1)
                    .clone(),
            )
            .await?;
        Ok(rows.into_iter().next().map(|(id, _)| id))
    }

    /// The id of the oldest event still kept (older ones were trimmed by the cap).
    pub async fn oldest_event_id(&self) -> Result<Option<String>> {
        let rows = self.xrange(&self.keys.events(), "-", 1, false).await?;
        Ok(rows.into_iter().next().map(|(id, _)| id))
    }

    /// Events after `after` (exclusive), oldest first.
    pub async fn events_after(
        &self,
        after: &str,
        limit: usize,
    ) -> Result<Vec<(String, VaultEvent)>> {
        let rows = self
            .xrange(&self.keys.events(), &format!("({after}"), limit, false)
            .await?;
        Ok(rows
            .into_iter()
            .filter_map(|(id, f)| serde_json::from_str(f.get("data")?).ok().map(|e| (id, e)))
            .collect())
    }
}
