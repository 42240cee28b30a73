//! What happens to a late record: one whose every window had already closed when it arrived.

use std::cell::RefCell;
use std::fmt;
use std::rc::Rc;
use std::sync::Arc;

use serde::Serialize;

use crate::error::ConnectorError;
use crate::sink::{Sink, SinkReport, SinkWriter};
use crate::source::Partition;

/// The pipeline's policy for late records.
#[derive(Clone, Default)]
pub enum LatePolicy {
    /// Drop late records and count them per stage (the default).
    #[default]
    Drop,
    /// Count late records and write each, with its stage and lateness, to this sink.
    SideOutput(Arc<dyn Sink<LateRecord>>),
    /// For updating operators: keep results open for `allowed_lateness_ms` after the watermark
    /// passes them; a record that arrives within that time updates its result with a
    /// correction (a retraction of the old row and the new row). Records later than that, and
    /// late records at operators that emit final results, are dropped and counted.
    Correct {
        /// How long after the watermark passes a result it can still be corrected (ms).
        allowed_lateness_ms: u64,
    },
}

impl LatePolicy {
    /// Route late records to `sink` (a dead-letter sink).
    pub fn side_output(sink: impl Sink<LateRecord>) -> Self {
        LatePolicy::SideOutput(Arc::new(sink))
    }

    /// Correct updating results for records up to `allowed_lateness_ms` late.
    pub fn correct(allowed_lateness_ms: u64) -> Self {
        LatePolicy::Correct {
            allowed_lateness_ms,
        }
    }

    /// How long updating operators keep results open for corrections (0 unless
    /// [`LatePolicy::Correct`]).
    pub fn allowed_lateness_ms(&self) -> u64 {
        match self {
            LatePolicy::Correct {
                allowed_lateness_ms,
            } => *allowed_lateness_ms,
            _ => 0,
        }
    }
}

impl fmt::Debug for LatePolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LatePolicy::Drop => f.write_str("drop"),
            LatePolicy::SideOutput(sink) => write!(f, "side-output to {}", sink.describe()),
            LatePolicy::Correct {
                allowed_lateness_ms,
            } => write!(f, "correct within {allowed_lateness_ms} ms"),
        }
    }
}

/// A late record as the side output receives it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct LateRecord {
    /// The stage that found it late.
    pub stage: String,
    /// The record's event time (ms).
    pub event_time: u64,
    /// The watermark it arrived at (its timestamp, ms).
    pub watermark: u64,
    /// How far behind the last window it belonged to it was: `watermark - window end` (ms).
    pub lateness_ms: u64,
    /// The record, as JSON.
    pub record: String,
}

/// One worker's handle to the late-record side output.
#[derive(Clone, Default)]
pub(crate) struct LateOutput {
    writer: Option<Rc<RefCell<Box<dyn SinkWriter<LateRecord>>>>>,
    pub(crate) allowed_lateness_ms: u64,
}

impl LateOutput {
    pub(crate) fn open(policy: &LatePolicy, partition: Partition) -> Result<Self, ConnectorError> {
        Ok(match policy {
            LatePolicy::Drop | LatePolicy::Correct { .. } => LateOutput {
                writer: None,
                allowed_lateness_ms: policy.allowed_lateness_ms(),
            },
            LatePolicy::SideOutput(sink) => LateOutput {
                writer: Some(Rc::new(RefCell::new(sink.open(partition)?))),
                allowed_lateness_ms: 0,
            },
        })
    }

    /// Whether late records are written anywhere (if not, rendering them is wasted work).
    pub(crate) fn is_routed(&self) -> bool {
        self.writer.is_some()
    }

    pub(crate) fn write(&self, late: LateRecord) -> Result<(), ConnectorError> {
        if let Some(writer) = &self.writer {
            let mut batch = vec![(late.event_time, late)];
            writer.borrow_mut().write(&mut batch)?;
        }
        Ok(())
    }

    pub(crate) fn finish(&self) -> Result<Option<SinkReport>, ConnectorError> {
        match &self.writer {
            Some(writer) => writer.borrow_mut().finish().map(Some),
            None => Ok(None),
        }
    }
}
