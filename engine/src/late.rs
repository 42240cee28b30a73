//! What happens to a late record: one whose every window had already closed when it arrived.

use std::fmt;
use std::sync::Arc;

use serde::Serialize;

use crate::sink::Sink;

/// The pipeline's policy for late records.
#[derive(Clone, Default)]
pub enum LatePolicy {
    /// Drop late records and count them per stage (the default); with a dead-letter sink
    /// ([`Pipeline::dead_letters`](crate::Pipeline::dead_letters)) each is also written there.
    #[default]
    Drop,
    /// Count late records and write each, with its stage and lateness, to this sink.
    SideOutput(Arc<dyn Sink<LateRecord>>),
    /// For updating operators: keep results open for `allowed_lateness_ms` after the watermark
    /// passes them; a record that arrives within that time updates its result with a
    /// correction (a retraction of the old row and the new row). Records later than that, and
    /// late records at operators that emit final results, are dropped and counted (and written
    /// to the dead-letter sink, when there is one).
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
