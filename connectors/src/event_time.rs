//! Where a source takes each record's event time from: the record itself (a field, or a
//! function of the record), the broker's timestamp on the message, or the wall clock when the
//! record was read.
//!
//! Event times are milliseconds since the Unix epoch. A field may hold an integer of
//! milliseconds or an RFC 3339 string (`2026-12-01T06:41:16.250Z`); a record whose field is
//! missing or of another shape is rejected (dead-lettered) with that reason.

use std::fmt;
use std::sync::Arc;

use serde::Serialize;
use serde_json::Value;

use crate::format::is_dynamic;

/// How a source finds each record's event time.
pub enum EventTimeOf<T> {
    /// The wall clock when the record was read (processing time).
    Arrival,
    /// The message's timestamp as the broker gives it (Kafka's message timestamp, JetStream's
    /// publish time, AMQP's `timestamp` property, MQTT has none); the wall clock when it has
    /// none.
    Broker,
    /// A top-level field of the record: integer milliseconds or an RFC 3339 string.
    Field(String),
    /// A function of the record.
    Extract(TimeFn<T>),
}

/// A function giving a record's event time.
pub type TimeFn<T> = Arc<dyn Fn(&T) -> Option<u64> + Send + Sync>;

impl<T> Clone for EventTimeOf<T> {
    fn clone(&self) -> Self {
        match self {
            EventTimeOf::Arrival => EventTimeOf::Arrival,
            EventTimeOf::Broker => EventTimeOf::Broker,
            EventTimeOf::Field(name) => EventTimeOf::Field(name.clone()),
            EventTimeOf::Extract(f) => EventTimeOf::Extract(Arc::clone(f)),
        }
    }
}

impl<T> fmt::Debug for EventTimeOf<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EventTimeOf::Arrival => f.write_str("arrival"),
            EventTimeOf::Broker => f.write_str("broker"),
            EventTimeOf::Field(name) => write!(f, "field '{name}'"),
            EventTimeOf::Extract(_) => f.write_str("function"),
        }
    }
}

impl<T: Serialize + 'static> EventTimeOf<T> {
    /// Event time from the field `name`.
    pub fn field(name: &str) -> Self {
        EventTimeOf::Field(name.to_string())
    }

    /// Event time computed from the record by `f` (`None`: the record has none, and is
    /// rejected).
    pub fn extract(f: impl Fn(&T) -> Option<u64> + Send + Sync + 'static) -> Self {
        EventTimeOf::Extract(Arc::new(f))
    }

    /// The event time of `record`, read at wall-clock `arrival` ms, whose message carried the
    /// broker timestamp `broker` (if any).
    pub fn of(&self, record: &T, broker: Option<u64>, arrival: u64) -> Result<u64, String> {
        match self {
            EventTimeOf::Arrival => Ok(arrival),
            EventTimeOf::Broker => Ok(broker.unwrap_or(arrival)),
            EventTimeOf::Extract(f) => {
                f(record).ok_or_else(|| "the record has no event time".to_string())
            }
            EventTimeOf::Field(name) => field_time(record, name),
        }
    }
}

/// Reads the event time from the top-level field `name` of `record`.
fn field_time<T: Serialize + 'static>(record: &T, name: &str) -> Result<u64, String> {
    let owned;
    let value = if is_dynamic::<T>() {
        // A JSON value already: no conversion needed.
        let any: &dyn std::any::Any = record;
        any.downcast_ref::<Value>()
            .expect("is_dynamic checked the type")
    } else {
        owned = serde_json::to_value(record).map_err(|e| e.to_string())?;
        &owned
    };
    match value.get(name) {
        Some(field) => time_value(field).ok_or_else(|| {
            format!(
                "the event-time field '{name}' is {field}: it must be integer milliseconds since the \
                 Unix epoch or an RFC 3339 string"
            )
        }),
        None => Err(format!("the record has no event-time field '{name}'")),
    }
}

/// A JSON value as milliseconds since the Unix epoch: a non-negative integer, or an RFC 3339
/// string.
pub fn time_value(value: &Value) -> Option<u64> {
    match value {
        Value::Number(n) => n.as_u64(),
        Value::String(s) => parse_rfc3339_ms(s),
        _ => None,
    }
}

/// An RFC 3339 time (`2026-12-01T06:41:16Z`, with optional fractional seconds) as milliseconds
/// since the Unix epoch.
pub fn parse_rfc3339_ms(text: &str) -> Option<u64> {
    let time = humantime::parse_rfc3339_weak(text.trim()).ok()?;
    let since = time.duration_since(std::time::UNIX_EPOCH).ok()?;
    u64::try_from(since.as_millis()).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Serialize)]
    struct Click {
        ts: u64,
        page: String,
    }

    #[test]
    fn event_time_from_a_field_a_function_the_broker_or_arrival() {
        let click = Click {
            ts: 1_700_000_000_123,
            page: "/".into(),
        };
        assert_eq!(
            EventTimeOf::field("ts").of(&click, None, 5),
            Ok(1_700_000_000_123)
        );
        let err = EventTimeOf::field("time").of(&click, None, 5).unwrap_err();
        assert!(err.contains("no event-time field 'time'"), "{err}");
        let err = EventTimeOf::field("page").of(&click, None, 5).unwrap_err();
        assert!(err.contains("RFC 3339"), "{err}");
        assert_eq!(
            EventTimeOf::extract(|c: &Click| Some(c.ts / 1000)).of(&click, None, 5),
            Ok(1_700_000_000)
        );
        assert_eq!(EventTimeOf::<Click>::Broker.of(&click, Some(42), 5), Ok(42));
        assert_eq!(EventTimeOf::<Click>::Broker.of(&click, None, 5), Ok(5));
        assert_eq!(EventTimeOf::<Click>::Arrival.of(&click, Some(42), 5), Ok(5));
        let row = serde_json::json!({"at": "2023-11-14T22:13:20.5Z"});
        assert_eq!(
            EventTimeOf::field("at").of(&row, None, 0),
            Ok(1_700_000_000_500)
        );
    }
}
