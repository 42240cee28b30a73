//! Bounded side inputs: a key-value table read once from a CSV or JSON-lines file, for lookup
//! joins (see `eddy_operators::lookup`).
//!
//! - **CSV**: one `key,value` pair per line; the value is the rest of the line after the first
//!   comma, and may be wrapped in double quotes (`""` inside is one quote). Blank lines are
//!   skipped, and so is a first line `key,value` (a header).
//! - **JSON lines**: one object `{"key": ..., "value": ...}` per line; blank lines are skipped.
//!
//! A missing or unreadable file, a line that does not parse and a key given twice are user
//! errors naming the file (and line).

use std::collections::HashMap;
use std::hash::Hash;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use eddy_engine::ConnectorError;
use serde::de::DeserializeOwned;
use serde::Deserialize;

use crate::staged::io_error;

/// The format of a side-input file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SideFormat {
    /// `key,value` lines.
    Csv,
    /// `{"key": ..., "value": ...}` lines.
    JsonLines,
}

/// A key-value table in a file, read whole by [`SideInputFile::load`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SideInputFile {
    path: PathBuf,
    format: SideFormat,
}

#[derive(Deserialize)]
struct KeyValue<K, V> {
    key: K,
    value: V,
}

impl SideInputFile {
    /// A CSV file of `key,value` lines.
    pub fn csv(path: impl Into<PathBuf>) -> Self {
        SideInputFile {
            path: path.into(),
            format: SideFormat::Csv,
        }
    }

    /// A JSON-lines file of `{"key": ..., "value": ...}` objects.
    pub fn json_lines(path: impl Into<PathBuf>) -> Self {
        SideInputFile {
            path: path.into(),
            format: SideFormat::JsonLines,
        }
    }

    /// The format from the file's extension: `.jsonl`, `.ndjson` and `.json` are JSON lines,
    /// anything else is CSV.
    pub fn from_extension(path: impl Into<PathBuf>) -> Self {
        let path = path.into();
        match path.extension().and_then(|e| e.to_str()) {
            Some("jsonl" | "ndjson" | "json") => Self::json_lines(path),
            _ => Self::csv(path),
        }
    }

    /// The file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// A one-line description, e.g. `csv(side.csv)`.
    pub fn describe(&self) -> String {
        let format = match self.format {
            SideFormat::Csv => "csv",
            SideFormat::JsonLines => "jsonl",
        };
        format!("{format}({})", self.path.display())
    }

    /// Reads the whole table.
    pub fn load<K, V>(&self) -> Result<HashMap<K, V>, ConnectorError>
    where
        K: FromStr + DeserializeOwned + Hash + Eq,
        V: FromStr + DeserializeOwned,
        <K as FromStr>::Err: std::fmt::Display,
        <V as FromStr>::Err: std::fmt::Display,
    {
        let path = self.path.display();
        let text = std::fs::read_to_string(&self.path)
            .map_err(|e| io_error(format!("could not read the side input {path}"), e))?;
        let mut table = HashMap::new();
        for (i, line) in text.lines().enumerate() {
            let line = line.trim_end_matches('\r');
            if line.trim().is_empty()
                || (i == 0 && self.format == SideFormat::Csv && line.trim() == "key,value")
            {
                continue;
            }
            let bad = |why: String| {
                ConnectorError::user(format!("side input {path}, line {}: {why}", i + 1))
            };
            let (key, value) = match self.format {
                SideFormat::Csv => parse_csv_line::<K, V>(line).map_err(bad)?,
                SideFormat::JsonLines => {
                    let kv: KeyValue<K, V> = serde_json::from_str(line).map_err(|e| {
                        bad(format!(
                            "not a JSON object {{\"key\": ..., \"value\": ...}} of the right \
                             types: {e}"
                        ))
                    })?;
                    (kv.key, kv.value)
                }
            };
            if table.insert(key, value).is_some() {
                return Err(bad("this key was given before; keys must be unique".into()));
            }
        }
        Ok(table)
    }
}

fn parse_csv_line<K, V>(line: &str) -> Result<(K, V), String>
where
    K: FromStr,
    V: FromStr,
    <K as FromStr>::Err: std::fmt::Display,
    <V as FromStr>::Err: std::fmt::Display,
{
    let Some((key, value)) = line.split_once(',') else {
        return Err(format!("expected 'key,value', found '{line}'"));
    };
    let key = key.trim();
    let key = key
        .parse::<K>()
        .map_err(|e| format!("bad key '{key}': {e}"))?;
    let value = match value.strip_prefix('"').and_then(|v| v.strip_suffix('"')) {
        Some(quoted) => quoted.replace("\"\"", "\""),
        None => value.to_string(),
    };
    let value = value
        .parse::<V>()
        .map_err(|e| format!("bad value '{value}': {e}"))?;
    Ok((key, value))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_and_json_lines_load() {
        let dir = tempfile::tempdir().unwrap();
        let csv = dir.path().join("side.csv");
        std::fs::write(&csv, "key,value\n1,one\n2,\"two, \"\"2\"\"\"\n\n3,3\n").unwrap();
        let table: HashMap<u64, String> = SideInputFile::from_extension(&csv).load().unwrap();
        assert_eq!(table.len(), 3);
        assert_eq!(table[&2], "two, \"2\"");
        let jsonl = dir.path().join("side.jsonl");
        std::fs::write(&jsonl, "{\"key\": 1, \"value\": \"one\"}\n").unwrap();
        let table: HashMap<u64, String> = SideInputFile::from_extension(&jsonl).load().unwrap();
        assert_eq!(table[&1], "one");
    }

    #[test]
    fn errors_name_the_file_and_line() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("missing.csv");
        let err = SideInputFile::csv(&missing)
            .load::<u64, String>()
            .unwrap_err();
        assert!(err.what.contains("missing.csv"), "{err}");
        let bad = dir.path().join("bad.csv");
        std::fs::write(&bad, "1,a\nx,b\n").unwrap();
        let err = SideInputFile::csv(&bad).load::<u64, String>().unwrap_err();
        assert!(
            err.what.contains("bad.csv, line 2") && err.what.contains("bad key 'x'"),
            "{err}"
        );
        std::fs::write(&bad, "1,a\n1,b\n").unwrap();
        let err = SideInputFile::csv(&bad).load::<u64, String>().unwrap_err();
        assert!(err.what.contains("line 2"), "{err}");
        std::fs::write(&bad, "{\"key\": \"a\"}\n").unwrap();
        let err = SideInputFile::json_lines(&bad)
            .load::<u64, String>()
            .unwrap_err();
        assert!(err.what.contains("line 1"), "{err}");
    }
}
