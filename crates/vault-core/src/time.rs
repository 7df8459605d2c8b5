//! Time in the API: RFC 3339 strings out, RFC 3339 or unix milliseconds in.

use serde::{Deserialize, Deserializer};
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

/// Unix milliseconds as RFC 3339 (UTC, millisecond precision).
pub fn rfc3339(ms: i64) -> String {
    let dt = OffsetDateTime::from_unix_timestamp_nanos(ms as i128 * 1_000_000)
        .unwrap_or(OffsetDateTime::UNIX_EPOCH);
    dt.format(&Rfc3339).unwrap_or_default()
}

/// `Some(rfc3339)` for a positive timestamp, `None` for 0 (= not set).
pub fn rfc3339_opt(ms: i64) -> Option<String> {
    (ms > 0).then(|| rfc3339(ms))
}

/// The local wall clock in unix ms, only for values sent to Redis as data (never compared there).
pub fn now_ms() -> i64 {
    (OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000) as i64
}

/// A time accepted in requests: RFC 3339 string or integer unix milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimeInput(pub i64);

impl<'de> Deserialize<'de> for TimeInput {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Ms(i64),
            Text(String),
        }
        match Raw::deserialize(d).map_err(|_| {
            serde::de::Error::custom("expected an RFC 3339 time or integer unix milliseconds")
        })? {
            Raw::Ms(ms) if ms >= 0 => Ok(TimeInput(ms)),
            Raw::Ms(_) => Err(serde::de::Error::custom("a time must not be negative")),
            Raw::Text(s) => OffsetDateTime::parse(&s, &Rfc3339)
                .map(|t| TimeInput((t.unix_timestamp_nanos() / 1_000_000) as i64))
                .map_err(|_| serde::de::Error::custom(format!("`{s}` is not an RFC 3339 time"))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_time_forms_parse() {
        let a: TimeInput = serde_json::from_str("1700000000000").unwrap();
        let b: TimeInput = serde_json::from_str("\"2023-11-14T22:13:20Z\"").unwrap();
        assert_eq!(a, b);
        assert_eq!(rfc3339(a.0), "2023-11-14T22:13:20Z");
        assert!(serde_json::from_str::<TimeInput>("\"yesterday\"").is_err());
        assert!(serde_json::from_str::<TimeInput>("-5").is_err());
    }
}
