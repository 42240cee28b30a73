//! A sink that counts rows and discards them, for benchmarks.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use eddy_engine::{ConnectorError, Partition, Record, Sink, SinkReport, SinkWriter};

/// Counts the rows it receives and drops them. Works for any record type. Clones share one
/// running total, readable with [`CountSink::total`] during and after a run.
#[derive(Clone, Debug, Default)]
pub struct CountSink {
    total: Arc<AtomicU64>,
}

impl CountSink {
    /// A sink with a total of zero.
    pub fn new() -> Self {
        Self::default()
    }

    /// Rows received so far by all writers of this sink (and of its clones).
    pub fn total(&self) -> u64 {
        self.total.load(Ordering::Relaxed)
    }
}

impl<T: 'static> Sink<T> for CountSink {
    fn describe(&self) -> String {
        "count".to_string()
    }

    fn open(&self, _partition: Partition) -> Result<Box<dyn SinkWriter<T>>, ConnectorError> {
        Ok(Box::new(CountWriter {
            rows: 0,
            total: self.total.clone(),
        }))
    }
}

struct CountWriter {
    rows: u64,
    total: Arc<AtomicU64>,
}

impl<T> SinkWriter<T> for CountWriter {
    fn write(&mut self, batch: &mut Vec<Record<T>>) -> Result<(), ConnectorError> {
        let n = batch.len() as u64;
        self.rows += n;
        self.total.fetch_add(n, Ordering::Relaxed);
        batch.clear();
        Ok(())
    }

    fn finish(&mut self) -> Result<SinkReport, ConnectorError> {
        Ok(SinkReport {
            rows: self.rows,
            files: Vec::new(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_and_discards() {
        let sink = CountSink::new();
        let mut a = Sink::<String>::open(&sink, Partition { index: 0, count: 2 }).unwrap();
        let mut b = Sink::<String>::open(&sink, Partition { index: 1, count: 2 }).unwrap();
        let mut batch = vec![(1, "x".to_string()), (2, "y".to_string())];
        a.write(&mut batch).unwrap();
        assert!(batch.is_empty());
        b.write(&mut vec![(3, "z".to_string())]).unwrap();
        assert_eq!(a.finish().unwrap().rows, 2);
        assert_eq!(b.finish().unwrap().rows, 1);
        assert_eq!(sink.total(), 3);
    }
}
