//! Scheduled rotation: a pool's `rotation` setting, the rule that says when a token is due, and
//! the calendar of what is due when (`GET /v1/pools/{pool}/rotations`).

use super::*;

/// The longest `max_age_s`: ten years.
pub const MAX_ROTATION_AGE_S: u64 = 315_360_000;
/// The longest `overlap_s`: 31 days.
pub const MAX_ROTATION_OVERLAP_S: u64 = 2_678_400;
/// The most `days` a calendar covers.
pub const MAX_CALENDAR_DAYS: u64 = 366;

/// A pool's `rotation`: each token is rotated in stages when its age (since its deposit or its
/// last refresh) reaches `max_age_s` — deprecated (leased only when nothing else is), replaced
/// through its grant or by the external login workers, and revoked `overlap_s` later unless it
/// was replaced first.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct RotationSchedule {
    /// A token is rotated when this long has passed since its deposit or last refresh,
    /// seconds (1 s to 10 years).
    #[cfg_attr(feature = "schema", schema(minimum = 1, maximum = 315_360_000))]
    pub max_age_s: u64,
    /// How long a token being rotated stays leasable (`deprecated`) while its replacement is
    /// made, seconds (1 s to 31 days); it is revoked then unless it was replaced. Default 3600.
    #[serde(default = "default_overlap_s")]
    #[cfg_attr(feature = "schema", schema(minimum = 1, maximum = 2_678_400))]
    pub overlap_s: u64,
    /// Tokens of the pool being rotated at once at most (1-10,000): the rest wait their turn,
    /// so rotation never takes more of the pool than this. Default 10.
    #[serde(default = "default_max_in_flight")]
    #[cfg_attr(feature = "schema", schema(minimum = 1, maximum = 10_000))]
    pub max_in_flight: u32,
}

fn default_overlap_s() -> u64 {
    3600
}

fn default_max_in_flight() -> u32 {
    10
}

impl RotationSchedule {
    /// Checked against its bounds.
    pub fn validate(self) -> Result<Self, VaultError> {
        in_range("rotation.max_age_s", self.max_age_s, 1, MAX_ROTATION_AGE_S)?;
        in_range(
            "rotation.overlap_s",
            self.overlap_s,
            1,
            MAX_ROTATION_OVERLAP_S,
        )?;
        in_range(
            "rotation.max_in_flight",
            self.max_in_flight.into(),
            1,
            10_000,
        )?;
        Ok(self)
    }

    /// The config fields the functions read (`rotation_schedule` in lua/rules/age.lua); all ""
    /// without a schedule.
    pub fn fields(s: Option<&Self>) -> [(&'static str, String); 3] {
        let f = |v: Option<u64>| v.map(|v| v.to_string()).unwrap_or_default();
        [
            ("scheduled_max_age_s", f(s.map(|s| s.max_age_s))),
            ("scheduled_overlap_s", f(s.map(|s| s.overlap_s))),
            (
                "scheduled_max_in_flight",
                f(s.map(|s| s.max_in_flight.into())),
            ),
        ]
    }

    /// Read back from the config fields (None: no schedule).
    pub fn from_fields(f: &HashMap<String, String>) -> Option<Self> {
        let num = |k: &str| f.get(k).and_then(|v| v.parse::<u64>().ok());
        let max_age_s = num("scheduled_max_age_s").filter(|a| *a > 0)?;
        Some(RotationSchedule {
            max_age_s,
            overlap_s: num("scheduled_overlap_s").unwrap_or_else(default_overlap_s),
            max_in_flight: num("scheduled_max_in_flight")
                .map_or_else(default_max_in_flight, |n| n as u32),
        })
    }

    /// The scheduled-rotation rule, as the functions apply it (`lua/rules/age.lua`): a token
    /// whose age counts from `aged_from_ms` (its deposit or last refresh) is due then.
    pub fn rotation_due_at(&self, aged_from_ms: i64) -> i64 {
        aged_from_ms.saturating_add((self.max_age_s as i64).saturating_mul(1000))
    }
}

/// `GET /v1/pools/{pool}/rotations`: when the pool's tokens reach their maximum age.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(utoipa::ToSchema))]
pub struct RotationCalendar {
    /// The pool's name.
    pub pool: String,
    /// The pool's `rotation` setting; null when it rotates nothing on schedule (the rest is
    /// then empty).
    pub schedule: Option<RotationSchedule>,
    /// Tokens being rotated now (deprecated, waiting for their replacement or their sunset).
    pub in_flight: u64,
    /// Tokens past their maximum age that wait for their turn (at most `max_in_flight` are
    /// rotated at once).
    pub overdue: u64,
    /// When the next token reaches its maximum age (RFC 3339); null when none is indexed.
    pub next_due_at: Option<String>,
    /// Tokens reaching their maximum age on each day (UTC), from today.
    pub days: Vec<RotationDay>,
}

/// One day of a rotation calendar.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(utoipa::ToSchema))]
pub struct RotationDay {
    /// The day (UTC), `YYYY-MM-DD`.
    pub date: String,
    /// Tokens reaching their maximum age that day (not counting those already past it).
    pub due: u64,
}
