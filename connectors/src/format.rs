//! Record formats: how a record is encoded in a broker message, a request body or a line of a
//! file — JSON, CSV or raw bytes — and how it is decoded into the pipeline's Rust type through
//! serde.
//!
//! A record that does not decode (malformed JSON, a CSV row of the wrong shape, a field of the
//! wrong type, bytes that are not UTF-8 where a string is wanted) is an error for that record
//! only: sources reject it, with its bytes, to the dead-letter sink, and the run goes on.

use std::any::TypeId;
use std::fmt;
use std::str::FromStr;

use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::Value;

/// How records are encoded as bytes.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum Format {
    /// One JSON value per message or line (the default).
    #[default]
    Json,
    /// One CSV row per message or line, decoded by position into the type's fields in order,
    /// or, for dynamic records ([`serde_json::Value`]), into an object keyed by
    /// [`CsvOptions::columns`].
    Csv(CsvOptions),
    /// The bytes as they are: decoded into a `String` (when UTF-8), `serde_bytes::ByteBuf`, or,
    /// for dynamic records, an object `{"data": "<the bytes as text>"}`.
    Raw,
}

/// Options of the CSV format.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CsvOptions {
    /// The field delimiter (default `,`).
    pub delimiter: u8,
    /// Column names for dynamic records, in order; a file's header row provides them when
    /// empty (files only), otherwise columns are named `c0`, `c1`, ...
    pub columns: Vec<String>,
}

impl Default for CsvOptions {
    fn default() -> Self {
        CsvOptions {
            delimiter: b',',
            columns: Vec::new(),
        }
    }
}

impl fmt::Display for Format {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Format::Json => "json",
            Format::Csv(_) => "csv",
            Format::Raw => "raw",
        })
    }
}

impl FromStr for Format {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "json" | "jsonl" | "ndjson" => Ok(Format::Json),
            "csv" => Ok(Format::Csv(CsvOptions::default())),
            "raw" | "bytes" => Ok(Format::Raw),
            other => Err(format!("unknown format '{other}': use json, csv or raw")),
        }
    }
}

/// The field dynamic records hold raw bytes in.
pub const RAW_FIELD: &str = "data";

impl Format {
    /// Decodes one record of type `T` from `bytes`; the error says what does not fit.
    pub fn decode<T: DeserializeOwned + 'static>(&self, bytes: &[u8]) -> Result<T, String> {
        match self {
            Format::Json => serde_json::from_slice(bytes)
                .map_err(|e| format!("not valid JSON for this record: {e}")),
            Format::Csv(options) => decode_csv(options, bytes),
            Format::Raw => decode_raw(bytes),
        }
    }

    /// Encodes one record, appending its bytes to `out` (no line terminator).
    pub fn encode<T: Serialize + 'static>(
        &self,
        value: &T,
        out: &mut Vec<u8>,
    ) -> Result<(), String> {
        match self {
            Format::Json => serde_json::to_writer(&mut *out, value).map_err(|e| e.to_string()),
            Format::Csv(options) => encode_csv(options, value, out),
            Format::Raw => encode_raw(value, out),
        }
    }
}

fn csv_reader<'a>(options: &CsvOptions, bytes: &'a [u8]) -> csv::Reader<&'a [u8]> {
    csv::ReaderBuilder::new()
        .has_headers(false)
        .delimiter(options.delimiter)
        .from_reader(bytes)
}

fn decode_csv<T: DeserializeOwned + 'static>(
    options: &CsvOptions,
    bytes: &[u8],
) -> Result<T, String> {
    let mut reader = csv_reader(options, bytes);
    let mut record = csv::StringRecord::new();
    match reader.read_record(&mut record) {
        Ok(true) => {}
        Ok(false) => return Err("an empty CSV record".to_string()),
        Err(e) => return Err(format!("not valid CSV: {e}")),
    }
    if reader
        .read_record(&mut csv::StringRecord::new())
        .unwrap_or(false)
    {
        return Err("more than one CSV row in one record".to_string());
    }
    csv_row::<T>(&options.columns, &record)
}

/// Whether `T` is a dynamic record: a JSON value, which takes whatever fields come.
pub(crate) fn is_dynamic<T: 'static>() -> bool {
    TypeId::of::<T>() == TypeId::of::<Value>()
}

/// Deserializes one CSV row: by position into `T`'s fields, or, when `T` is a dynamic record,
/// into an object of `columns` (or `c0`, `c1`, ...) holding each field as a number when it
/// reads as one, else as a string.
pub(crate) fn csv_row<T: DeserializeOwned + 'static>(
    columns: &[String],
    record: &csv::StringRecord,
) -> Result<T, String> {
    if !is_dynamic::<T>() {
        return record
            .deserialize::<T>(None)
            .map_err(|e| format!("this CSV row does not fit the record: {e}"));
    }
    let object: serde_json::Map<String, Value> = record
        .iter()
        .enumerate()
        .map(|(i, field)| {
            let name = columns.get(i).cloned().unwrap_or_else(|| format!("c{i}"));
            (name, csv_field(field))
        })
        .collect();
    serde_json::from_value(Value::Object(object)).map_err(|e| e.to_string())
}

fn csv_field(field: &str) -> Value {
    if let Ok(n) = field.parse::<i64>() {
        Value::from(n)
    } else if let Some(x) = field.parse::<f64>().ok().filter(|x| x.is_finite()) {
        Value::from(x)
    } else {
        Value::from(field)
    }
}

fn encode_csv<T: Serialize + 'static>(
    options: &CsvOptions,
    value: &T,
    out: &mut Vec<u8>,
) -> Result<(), String> {
    let any: &dyn std::any::Any = value;
    let bytes = csv_bytes(options.delimiter, |writer| {
        match any.downcast_ref::<Value>() {
            // A dynamic record: its fields' values in order.
            Some(Value::Object(object)) => writer.write_record(object.values().map(csv_text)),
            _ => writer.serialize(value),
        }
    })
    .map_err(|e| format!("cannot write this record as CSV: {e}"))?;
    out.extend_from_slice(&bytes);
    Ok(())
}

/// One CSV row as `write` writes it with `delimiter`, without its line terminator.
pub(crate) fn csv_bytes(
    delimiter: u8,
    write: impl FnOnce(&mut csv::Writer<Vec<u8>>) -> csv::Result<()>,
) -> Result<Vec<u8>, String> {
    let mut writer = csv::WriterBuilder::new()
        .has_headers(false)
        .delimiter(delimiter)
        .terminator(csv::Terminator::Any(b'\n'))
        .from_writer(Vec::new());
    write(&mut writer).map_err(|e| e.to_string())?;
    let mut bytes = writer.into_inner().map_err(|e| e.to_string())?;
    if bytes.last() == Some(&b'\n') {
        bytes.pop();
    }
    Ok(bytes)
}

fn csv_text(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

fn decode_raw<T: DeserializeOwned + 'static>(bytes: &[u8]) -> Result<T, String> {
    use serde::de::value::{BytesDeserializer, Error};
    if is_dynamic::<T>() {
        let text = String::from_utf8_lossy(bytes).into_owned();
        return serde_json::from_value(serde_json::json!({ RAW_FIELD: text }))
            .map_err(|e| e.to_string());
    }
    T::deserialize(BytesDeserializer::<Error>::new(bytes))
        .map_err(|e| format!("raw bytes do not fit the record: {e}"))
}

fn encode_raw<T: Serialize>(value: &T, out: &mut Vec<u8>) -> Result<(), String> {
    match serde_json::to_value(value).map_err(|e| e.to_string())? {
        Value::String(s) => out.extend_from_slice(s.as_bytes()),
        Value::Object(mut object) if object.len() == 1 && object.contains_key(RAW_FIELD) => {
            match object.remove(RAW_FIELD) {
                Some(Value::String(s)) => out.extend_from_slice(s.as_bytes()),
                Some(other) => out.extend_from_slice(other.to_string().as_bytes()),
                None => {}
            }
        }
        Value::Array(items) if items.iter().all(|v| v.as_u64().is_some_and(|b| b < 256)) => {
            out.extend(items.iter().filter_map(Value::as_u64).map(|b| b as u8));
        }
        other => out.extend_from_slice(other.to_string().as_bytes()),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use serde::Deserialize;

    use super::*;

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct Order {
        id: u64,
        customer: String,
        total: f64,
    }

    fn order() -> Order {
        Order {
            id: 7,
            customer: "ada".into(),
            total: 12.5,
        }
    }

    #[test]
    fn json_round_trips_and_names_what_does_not_fit() {
        let mut bytes = Vec::new();
        Format::Json.encode(&order(), &mut bytes).unwrap();
        assert_eq!(Format::Json.decode::<Order>(&bytes).unwrap(), order());
        let err = Format::Json
            .decode::<Order>(br#"{"id": "seven", "customer": "ada", "total": 1}"#)
            .unwrap_err();
        assert!(err.contains("invalid type"), "{err}");
        assert!(Format::Json.decode::<Order>(b"{not json").is_err());
    }

    #[test]
    fn csv_decodes_by_position_and_dynamic_records_by_column() {
        let csv = Format::Csv(CsvOptions::default());
        assert_eq!(csv.decode::<Order>(b"7,ada,12.5").unwrap(), order());
        let mut bytes = Vec::new();
        csv.encode(&order(), &mut bytes).unwrap();
        assert_eq!(bytes, b"7,ada,12.5");
        assert!(csv.decode::<Order>(b"7,ada").is_err(), "too few fields");
        assert!(csv.decode::<Order>(b"x,ada,1").is_err(), "wrong type");
        let named = Format::Csv(CsvOptions {
            columns: vec!["id".into(), "name".into()],
            ..CsvOptions::default()
        });
        let row: Value = named.decode(b"3,\"b, c\"").unwrap();
        assert_eq!(row, serde_json::json!({"id": 3, "name": "b, c"}));
        let row: Value = csv.decode(b"1.5,x").unwrap();
        assert_eq!(row, serde_json::json!({"c0": 1.5, "c1": "x"}));
    }

    #[test]
    fn raw_keeps_the_bytes() {
        let text: String = Format::Raw.decode(b"hello").unwrap();
        assert_eq!(text, "hello");
        let row: Value = Format::Raw.decode(b"hi there").unwrap();
        assert_eq!(row, serde_json::json!({"data": "hi there"}));
        let mut out = Vec::new();
        Format::Raw.encode(&row, &mut out).unwrap();
        assert_eq!(out, b"hi there");
        assert!(Format::Raw.decode::<String>(&[0xff, 0xfe]).is_err());
        assert!("yaml".parse::<Format>().is_err());
        assert_eq!("CSV".parse::<Format>().unwrap().to_string(), "csv");
    }
}
