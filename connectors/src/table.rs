//! A sink printing the results as a table on stdout, for interactive runs.

use std::collections::{BTreeMap, BinaryHeap};
use std::fmt;
use std::io::Write;
use std::marker::PhantomData;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use eddy_engine::{Change, ConnectorError, Partition, Record, Sink, SinkReport, SinkWriter};
use serde::de::{Deserialize, Deserializer, MapAccess, Visitor};
use serde::Serialize;
use serde_json::Value;

/// Rows shown unless [`TableSink::max_rows`] says otherwise.
pub const DEFAULT_MAX_ROWS: usize = 20;

/// Widest a cell is shown, in characters; longer values are cut with `…`.
const MAX_CELL_WIDTH: usize = 60;

/// Prints the rows as a table on stdout when the run ends.
///
/// Each row is serialized to JSON; an object's keys are the columns (in the first row's order),
/// any other value is one column `value`. The rows of all the workers in this process are
/// gathered, and the last of them to finish prints at most [`Self::max_rows`] rows — the first
/// ones in the order of their JSON text, so the output is stable — then
/// `... and N more rows`. With several processes, each prints its own workers' rows.
///
/// For an updating result ([`TableSink::changes`]) the table shows the result as it stands at
/// the end: each row's diffs are summed and rows whose sum is zero are left out.
#[derive(Debug)]
pub struct TableSink<T> {
    max_rows: usize,
    updating: bool,
    shared: Arc<Mutex<Gathered>>,
    _marker: PhantomData<fn(T)>,
}

impl<T> Default for TableSink<T> {
    fn default() -> Self {
        TableSink {
            max_rows: DEFAULT_MAX_ROWS,
            updating: false,
            shared: Arc::default(),
            _marker: PhantomData,
        }
    }
}

impl<T> TableSink<T> {
    /// A sink showing at most [`DEFAULT_MAX_ROWS`] rows.
    pub fn new() -> Self {
        Self::default()
    }

    /// Shows at most `rows` rows.
    pub fn max_rows(mut self, rows: usize) -> Self {
        self.max_rows = rows;
        self
    }
}

impl<T> TableSink<Change<T>> {
    /// A sink showing the latest value of an updating result: the rows its change log leaves
    /// standing.
    pub fn changes() -> Self {
        TableSink {
            updating: true,
            ..Self::default()
        }
    }
}

/// What the writers of this process have gathered.
#[derive(Debug, Default)]
struct Gathered {
    /// Writers opened and not yet finished or dropped.
    open: usize,
    /// Whether a writer was dropped unfinished (the run failed: print nothing).
    failed: bool,
    /// Rows received by the finished writers.
    total: u64,
    /// The smallest rows by JSON text, at most `max_rows` of them.
    sample: BinaryHeap<String>,
    /// For an updating result: the summed diff of every row (by JSON text, without `diff`).
    counts: BTreeMap<String, i64>,
}

fn lock(shared: &Mutex<Gathered>) -> MutexGuard<'_, Gathered> {
    shared.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Keeps the `max` smallest texts in `heap` (a max-heap).
fn keep_smallest(heap: &mut BinaryHeap<String>, text: String, max: usize) {
    if heap.len() < max {
        heap.push(text);
    } else if heap.peek().is_some_and(|top| text < *top) {
        heap.pop();
        heap.push(text);
    }
}

impl<T: Serialize + 'static> Sink<T> for TableSink<T> {
    fn describe(&self) -> String {
        format!("table(max_rows={})", self.max_rows)
    }

    fn open(&self, _partition: Partition) -> Result<Box<dyn SinkWriter<T>>, ConnectorError> {
        lock(&self.shared).open += 1;
        Ok(Box::new(TableWriter {
            shared: self.shared.clone(),
            max_rows: self.max_rows,
            rows: 0,
            sample: BinaryHeap::new(),
            counts: self.updating.then(BTreeMap::new),
            updating: self.updating,
            finished: false,
            _marker: PhantomData,
        }))
    }
}

struct TableWriter<T> {
    shared: Arc<Mutex<Gathered>>,
    max_rows: usize,
    rows: u64,
    sample: BinaryHeap<String>,
    counts: Option<BTreeMap<String, i64>>,
    updating: bool,
    finished: bool,
    _marker: PhantomData<fn(T)>,
}

/// Splits a change's JSON into the row's text (without `diff`) and the diff.
fn split_change(mut change: Value) -> Option<(String, i64)> {
    let diff = change.as_object_mut()?.remove("diff")?.as_i64()?;
    Some((change.to_string(), diff))
}

impl<T: Serialize> SinkWriter<T> for TableWriter<T> {
    fn write(&mut self, batch: &mut Vec<Record<T>>) -> Result<(), ConnectorError> {
        for (_, row) in batch.iter() {
            let value = serde_json::to_value(row).map_err(|e| {
                ConnectorError::user(format!(
                    "a {} cannot be shown in a table: {e}",
                    std::any::type_name::<T>()
                ))
                .caused_by(e)
            })?;
            match self.counts.as_mut() {
                Some(counts) => {
                    let (text, diff) = split_change(value).ok_or_else(|| {
                        ConnectorError::user(format!(
                            "a {} is not a change row (a struct with a 'diff' field)",
                            std::any::type_name::<T>()
                        ))
                    })?;
                    *counts.entry(text).or_insert(0) += diff;
                }
                None => keep_smallest(&mut self.sample, value.to_string(), self.max_rows),
            }
        }
        self.rows += batch.len() as u64;
        batch.clear();
        Ok(())
    }

    /// The table is printed only when the run ends (it shows the result as it stands then),
    /// so there is nothing of this writer's own to make durable; this flushes stdout, so that
    /// nothing printed so far waits in its buffer.
    fn commit(&mut self) -> Result<(), ConnectorError> {
        std::io::stdout()
            .lock()
            .flush()
            .map_err(|e| ConnectorError::external("could not flush stdout", e))
    }

    fn finish(&mut self) -> Result<SinkReport, ConnectorError> {
        let report = SinkReport {
            rows: self.rows,
            files: Vec::new(),
        };
        if self.finished {
            return Ok(report);
        }
        self.finished = true;
        let printable = {
            let mut gathered = lock(&self.shared);
            gathered.total += self.rows;
            for text in std::mem::take(&mut self.sample) {
                keep_smallest(&mut gathered.sample, text, self.max_rows);
            }
            for (text, diff) in self.counts.take().into_iter().flatten() {
                *gathered.counts.entry(text).or_insert(0) += diff;
            }
            gathered.open = gathered.open.saturating_sub(1);
            if gathered.open > 0 {
                None
            } else {
                let mut done = std::mem::take(&mut *gathered);
                if self.updating {
                    done.stand(self.max_rows);
                }
                (!done.failed).then_some(done)
            }
        };
        if let Some(done) = printable {
            let table = render(done.sample.into_sorted_vec(), done.total);
            let mut stdout = std::io::stdout().lock();
            stdout
                .write_all(table.as_bytes())
                .and_then(|()| stdout.flush())
                .map_err(|e| ConnectorError::external("could not print the table to stdout", e))?;
        }
        Ok(report)
    }
}

impl Gathered {
    /// Replaces the change log by the rows it leaves standing: the sample and the total.
    fn stand(&mut self, max_rows: usize) {
        self.total = 0;
        for (text, count) in std::mem::take(&mut self.counts) {
            for _ in 0..count.max(0) {
                self.total += 1;
                keep_smallest(&mut self.sample, text.clone(), max_rows);
            }
        }
    }
}

impl<T> Drop for TableWriter<T> {
    fn drop(&mut self) {
        if !self.finished {
            let mut gathered = lock(&self.shared);
            gathered.failed = true;
            gathered.open = gathered.open.saturating_sub(1);
            if gathered.open == 0 {
                *gathered = Gathered::default();
            }
        }
    }
}

/// A JSON object's entries in their order in the text.
struct Ordered(Vec<(String, Value)>);

impl<'de> Deserialize<'de> for Ordered {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Entries;
        impl<'de> Visitor<'de> for Entries {
            type Value = Ordered;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Ordered, A::Error> {
                let mut entries = Vec::new();
                while let Some(entry) = map.next_entry::<String, Value>()? {
                    entries.push(entry);
                }
                Ok(Ordered(entries))
            }
        }
        deserializer.deserialize_map(Entries)
    }
}

/// A cell's text and whether it is right-aligned (numbers).
fn cell(value: &Value) -> (String, bool) {
    let (text, right) = match value {
        Value::Null => (String::new(), false),
        Value::String(s) => (s.clone(), false),
        Value::Number(n) => (n.to_string(), true),
        other => (other.to_string(), false),
    };
    let text: String = text
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    if text.chars().count() > MAX_CELL_WIDTH {
        let cut: String = text.chars().take(MAX_CELL_WIDTH - 1).collect();
        (format!("{cut}…"), right)
    } else {
        (text, right)
    }
}

/// Renders `rows` (JSON texts, in the order shown) of `total` rows received.
fn render(rows: Vec<String>, total: u64) -> String {
    if total == 0 {
        return "(no rows)\n".to_string();
    }
    let parsed: Vec<Vec<(String, Value)>> = rows
        .iter()
        .map(|text| match serde_json::from_str::<Ordered>(text) {
            Ok(Ordered(entries)) => entries,
            Err(_) => vec![(
                "value".to_string(),
                serde_json::from_str(text).unwrap_or(Value::Null),
            )],
        })
        .collect();
    let mut columns: Vec<String> = Vec::new();
    for row in &parsed {
        for (key, _) in row {
            if !columns.contains(key) {
                columns.push(key.clone());
            }
        }
    }
    let cells: Vec<Vec<(String, bool)>> = parsed
        .iter()
        .map(|row| {
            columns
                .iter()
                .map(|c| {
                    row.iter()
                        .find(|(k, _)| k == c)
                        .map_or((String::new(), false), |(_, v)| cell(v))
                })
                .collect()
        })
        .collect();
    let widths: Vec<usize> = columns
        .iter()
        .enumerate()
        .map(|(i, c)| {
            cells
                .iter()
                .map(|row| row[i].0.chars().count())
                .chain([c.chars().count()])
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut out = String::new();
    let line = |out: &mut String, texts: Vec<(&str, bool)>| {
        out.push('|');
        for ((text, right), width) in texts.into_iter().zip(&widths) {
            let pad = " ".repeat(width - text.chars().count());
            if right {
                out.push_str(&format!(" {pad}{text} |"));
            } else {
                out.push_str(&format!(" {text}{pad} |"));
            }
        }
        out.push('\n');
    };
    line(
        &mut out,
        columns.iter().map(|c| (c.as_str(), false)).collect(),
    );
    out.push('|');
    for width in &widths {
        out.push_str(&"-".repeat(width + 2));
        out.push('|');
    }
    out.push('\n');
    for row in &cells {
        line(
            &mut out,
            row.iter().map(|(t, r)| (t.as_str(), *r)).collect(),
        );
    }
    let more = total.saturating_sub(rows.len() as u64);
    if more > 0 {
        out.push_str(&format!("... and {more} more rows\n"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Serialize)]
    struct Row {
        zeta: &'static str,
        alpha: u64,
    }

    #[test]
    fn renders_columns_in_field_order_with_a_tail_line() {
        let rows = vec![
            serde_json::to_string(&Row {
                zeta: "a",
                alpha: 1,
            })
            .unwrap(),
            serde_json::to_string(&Row {
                zeta: "bbb",
                alpha: 200,
            })
            .unwrap(),
        ];
        let table = render(rows, 5);
        assert_eq!(
            table,
            "| zeta | alpha |\n\
             |------|-------|\n\
             | a    |     1 |\n\
             | bbb  |   200 |\n\
             ... and 3 more rows\n"
        );
        assert_eq!(
            render(vec!["7".to_string()], 1),
            "| value |\n|-------|\n|     7 |\n"
        );
        assert_eq!(render(Vec::new(), 0), "(no rows)\n");
    }

    #[test]
    fn writers_gather_a_bounded_sorted_sample() {
        let sink = TableSink::<u64>::new().max_rows(2);
        let mut a = sink.open(Partition { index: 0, count: 2 }).unwrap();
        let mut b = sink.open(Partition { index: 1, count: 2 }).unwrap();
        a.write(&mut vec![(0, 5), (0, 3), (0, 9)]).unwrap();
        b.write(&mut vec![(0, 1)]).unwrap();
        assert_eq!(a.finish().unwrap().rows, 3);
        {
            let gathered = lock(&sink.shared);
            assert_eq!(gathered.open, 1);
            assert_eq!(gathered.total, 3);
            assert_eq!(gathered.sample.clone().into_sorted_vec(), vec!["3", "5"]);
        }
        assert_eq!(b.finish().unwrap().rows, 1);
        let gathered = lock(&sink.shared);
        assert_eq!(gathered.open, 0, "the last writer printed and reset");
        assert_eq!(gathered.total, 0);
    }

    #[test]
    fn an_updating_table_shows_the_rows_the_change_log_leaves_standing() {
        #[derive(Serialize)]
        struct N {
            n: u64,
        }
        let sink = TableSink::<Change<N>>::changes().max_rows(10);
        let mut a = sink.open(Partition { index: 0, count: 2 }).unwrap();
        let b = sink.open(Partition { index: 1, count: 2 }).unwrap();
        let mut log = vec![
            (0, Change::insert(N { n: 1 })),
            (0, Change::insert(N { n: 2 })),
            (1, Change::retract(N { n: 1 })),
            (1, Change::insert(N { n: 3 })),
            (2, Change::insert(N { n: 3 })),
        ];
        a.write(&mut log).unwrap();
        a.finish().unwrap();
        let mut gathered = std::mem::take(&mut *lock(&sink.shared));
        gathered.stand(10);
        assert_eq!(gathered.total, 3);
        assert_eq!(
            gathered.sample.into_sorted_vec(),
            vec![r#"{"n":2}"#, r#"{"n":3}"#, r#"{"n":3}"#]
        );
        drop(b);
    }
}
