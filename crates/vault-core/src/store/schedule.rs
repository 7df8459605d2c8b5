//! Scheduled rotation (`lua/rules/age.lua`): starting the rotation of tokens past their
//! maximum age, and the calendar of what is due when.

use super::*;

/// A token whose scheduled rotation started.
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
pub struct RotationStart {
    pub token_id: String,
    /// When its age counted from (its deposit or last refresh), unix ms.
    pub aged_from: i64,
    /// When it is revoked unless replaced, unix ms.
    pub sunset_at: i64,
    /// Its replacement is made by the external login workers (no grant of its own, or an
    /// `external` one), not the refresher.
    pub login_workers: bool,
}

impl Store {
    /// Start the scheduled rotation of up to `max` tokens of `pool` past their maximum age
    /// (within the pool's `max_in_flight`). Returns those started and how many are in flight.
    pub(crate) async fn rotate_aged(
        &self,
        pool: &str,
        max: usize,
    ) -> Result<(Vec<RotationStart>, u64)> {
        let v: reply::RotationsStarted = self
            .call(pool, &scripts::RotateAged { batch: max as u64 })
            .await?;
        Ok((v.started, v.in_flight))
    }

    /// When `pool`'s tokens reach their maximum age: past it now, and on each of `days` days
    /// (UTC) from today.
    pub async fn rotation_calendar(
        &self,
        pool: &str,
        days: u64,
    ) -> Result<crate::model::RotationCalendar> {
        let view = self.pool_get(pool).await?;
        let now = self.now_ms().await?;
        self.calendar_of(pool, view.config.rotation, days, now)
            .await
    }

    /// [`Store::rotation_calendar`] of a pool whose schedule the caller read, at `now` (unix
    /// ms, by the one clock).
    pub(super) async fn calendar_of(
        &self,
        pool: &str,
        schedule: Option<crate::model::RotationSchedule>,
        days: u64,
        now: i64,
    ) -> Result<crate::model::RotationCalendar> {
        let today = now.div_euclid(86_400_000) * 86_400_000;
        let days = days.clamp(1, crate::model::MAX_CALENDAR_DAYS);
        let v: reply::Calendar = self
            .call(
                pool,
                &scripts::RotationCalendar {
                    from_ms: today,
                    days,
                },
            )
            .await?;
        let schedule = schedule.filter(|_| v.scheduled);
        Ok(crate::model::RotationCalendar {
            pool: pool.to_string(),
            in_flight: v.in_flight,
            overdue: v.overdue,
            next_due_at: (schedule.is_some() && v.next_due_ms > 0)
                .then(|| crate::time::rfc3339(v.next_due_ms)),
            days: v
                .days
                .iter()
                .enumerate()
                .map(|(d, due)| crate::model::RotationDay {
                    date: crate::time::rfc3339(today + d as i64 * 86_400_000)[..10].to_string(),
                    due: *due,
                })
                .collect(),
            schedule,
        })
    }
}
