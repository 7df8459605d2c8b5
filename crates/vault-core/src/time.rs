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

/// An RFC 3339 time as unix milliseconds.
pub fn parse_rfc3339(s: &str) -> Option<i64> {
    OffsetDateTime::parse(s, &Rfc3339)
        .ok()
        .map(|t| (t.unix_timestamp_nanos() / 1_000_000) as i64)
}

/// `Some(rfc3339)` for a positive timestamp, `None` for 0 (= not set).
pub fn rfc3339_opt(ms: i64) -> Option<String> {
    (ms > 0).then(|| rfc3339(ms))
}

/// The local wall clock in unix ms, only for values sent to Redis as data (never compared there).
pub fn now_ms() -> i64 {
    (OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000) as i64
}

/// The latest time accepted in any request: 9999-12-31T23:59:59.999Z.
pub const MAX_MS: i64 = 253_402_300_799_999;

/// Expiries from 3000-01-01 on mean "never expires" (`9999-12-31T23:59:59Z` is a common way of
/// saying so). They are stored as 0, so that no time longer than 14 digits ever travels through
/// Lua's cjson, which writes such numbers in exponent form.
pub const NEVER_EXPIRES_FROM_MS: i64 = 32_503_680_000_000;

/// The expiry rule for every credential that enters the vault (deposit, refresh, JWT `exp`):
/// unix ms to store, 0 = never.
pub fn expiry_ms(ms: i64) -> i64 {
    if ms >= NEVER_EXPIRES_FROM_MS {
        0
    } else {
        ms.max(0)
    }
}

/// A time accepted in requests: RFC 3339 string or integer unix milliseconds, from the epoch to
/// [`MAX_MS`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimeInput(pub i64);

/// Written as the unix milliseconds it stands for (what the functions read).
impl serde::Serialize for TimeInput {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_i64(self.0)
    }
}

impl<'de> Deserialize<'de> for TimeInput {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Ms(i64),
            Text(String),
        }
        let ms = match Raw::deserialize(d).map_err(|_| {
            serde::de::Error::custom("expected an RFC 3339 time or integer unix milliseconds")
        })? {
            Raw::Ms(ms) => ms,
            Raw::Text(s) => {
                parse_rfc3339(&s).ok_or_else(|| serde::de::Error::custom("not an RFC 3339 time"))?
            }
        };
        if !(0..=MAX_MS).contains(&ms) {
            return Err(serde::de::Error::custom(
                "a time must lie between 1970-01-01 and 9999-12-31",
            ));
        }
        Ok(TimeInput(ms))
    }
}

/// RFC 3339 with a year from 1970 (what the vault takes: nothing before the epoch).
#[cfg(feature = "schema")]
pub(crate) const RFC3339_FROM_1970: &str = r"^(19[7-9][0-9]|[2-9][0-9]{3})-(0[1-9]|1[0-2])-(0[1-9]|[12][0-9]|3[01])[Tt]([01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9](\.[0-9]{1,9})?([Zz]|[+-]([01][0-9]|2[0-3]):[0-5][0-9])$";

/// Documented as what it takes: an RFC 3339 `date-time` from 1970 to 9999, or unix ms.
#[cfg(feature = "schema")]
impl utoipa::PartialSchema for TimeInput {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        use utoipa::openapi::schema::{
            KnownFormat, ObjectBuilder, OneOfBuilder, SchemaFormat, Type,
        };
        OneOfBuilder::new()
            .item(
                ObjectBuilder::new()
                    .schema_type(Type::String)
                    .format(Some(SchemaFormat::KnownFormat(KnownFormat::DateTime)))
                    .pattern(Some(RFC3339_FROM_1970))
                    .description(Some(
                        "RFC 3339, 1970-01-01T00:00:00Z to 9999-12-31T23:59:59Z",
                    )),
            )
            .item(
                ObjectBuilder::new()
                    .schema_type(Type::Integer)
                    .format(Some(SchemaFormat::KnownFormat(KnownFormat::Int64)))
                    .minimum(Some(0))
                    .maximum(Some(MAX_MS))
                    .description(Some("unix milliseconds")),
            )
            .into()
    }
}

#[cfg(feature = "schema")]
impl utoipa::ToSchema for TimeInput {}

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
        let never: TimeInput = serde_json::from_str("\"9999-12-31T23:59:59Z\"").unwrap();
        assert_eq!(expiry_ms(never.0), 0, "far future = never expires");
        assert!(serde_json::from_str::<TimeInput>("253402300800000").is_err());
        assert!(serde_json::from_str::<TimeInput>("\"+10000-01-01T00:00:00Z\"").is_err());
        assert_eq!(expiry_ms(a.0), a.0);
    }
}
