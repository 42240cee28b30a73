//! Dead letters: records the pipeline could not process, kept with where they came from and why.
//!
//! A record becomes a dead letter when a source cannot decode it (malformed bytes, a schema it
//! does not fit, no event time), when a user function fails on it ([`StageContext::reject`]),
//! when it is late beyond the pipeline's [`LatePolicy`](crate::LatePolicy), or when a sink gives
//! up delivering it (retries exhausted). With a dead-letter sink configured
//! ([`Pipeline::dead_letters`](crate::Pipeline::dead_letters)) each one is written there as a
//! [`DeadLetter`]; without one it is counted on its stage, the first few are quoted in the run's
//! summary, and the run goes on. Either way no other record is affected.
//!
//! [`StageContext::reject`]: crate::StageContext::reject

use std::cell::RefCell;
use std::fmt;
use std::rc::Rc;
use std::sync::Arc;

use base64::Engine as _;
use serde::{Deserialize, Serialize};

use crate::error::ConnectorError;
use crate::late::LatePolicy;
use crate::operators::Writers;
use crate::sink::{Sink, SinkReport};
use crate::source::Partition;
use crate::time::wall_clock_ms;

/// Why a record became a dead letter.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DeadLetterKind {
    /// A source could not decode it into the pipeline's type.
    Decode,
    /// A user function failed on it.
    Function,
    /// It arrived after every window or result it belonged to had closed.
    Late,
    /// A sink could not deliver it (retries exhausted, refused by the receiver).
    Delivery,
}

impl DeadLetterKind {
    /// The kind as written in a dead letter's `kind` field.
    pub fn as_str(self) -> &'static str {
        match self {
            DeadLetterKind::Decode => "decode",
            DeadLetterKind::Function => "function",
            DeadLetterKind::Late => "late",
            DeadLetterKind::Delivery => "delivery",
        }
    }
}

impl fmt::Display for DeadLetterKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A record the pipeline could not process, as the dead-letter sink receives it.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct DeadLetter {
    /// Why: `decode`, `function`, `late` or `delivery`.
    pub kind: String,
    /// The stage that gave up on it.
    pub stage: String,
    /// Where it was read or sent: a file and line, a partition and offset, a queue and delivery
    /// tag, a URL; empty when the stage does not know.
    pub location: String,
    /// What went wrong.
    pub error: String,
    /// The record's bytes as they were read (for a decode error) or as the stage saw the
    /// record (its JSON), encoded as `raw_encoding` says.
    pub raw: String,
    /// `utf8` when `raw` is the bytes themselves, `base64` when they were not valid UTF-8.
    pub raw_encoding: String,
    /// The record's event time (ms), when it had one.
    pub event_time: Option<u64>,
    /// When it became a dead letter: wall-clock ms since the Unix epoch.
    pub time_ms: u64,
}

impl DeadLetter {
    /// A dead letter of `kind` from `stage`, stamped with the wall clock now.
    pub fn new(
        kind: DeadLetterKind,
        stage: &str,
        location: impl Into<String>,
        error: impl Into<String>,
        raw: &[u8],
    ) -> Self {
        let (raw, raw_encoding) = match std::str::from_utf8(raw) {
            Ok(text) => (text.to_string(), "utf8"),
            Err(_) => (
                base64::engine::general_purpose::STANDARD.encode(raw),
                "base64",
            ),
        };
        DeadLetter {
            kind: kind.as_str().to_string(),
            stage: stage.to_string(),
            location: location.into(),
            error: error.into(),
            raw,
            raw_encoding: raw_encoding.to_string(),
            event_time: None,
            time_ms: wall_clock_ms(),
        }
    }

    /// The same dead letter with the record's event time.
    pub fn with_event_time(mut self, event_time: u64) -> Self {
        self.event_time = Some(event_time);
        self
    }

    /// The record's bytes, decoded from `raw` as `raw_encoding` says.
    pub fn raw_bytes(&self) -> Vec<u8> {
        match self.raw_encoding.as_str() {
            "base64" => base64::engine::general_purpose::STANDARD
                .decode(&self.raw)
                .unwrap_or_else(|_| self.raw.clone().into_bytes()),
            _ => self.raw.clone().into_bytes(),
        }
    }
}

/// One worker's handle to where rejected records go: the late-record side output of
/// [`LatePolicy::SideOutput`] and the pipeline's dead-letter sink, each when configured. Both
/// are opened before any source reads (a destination that cannot be written fails the run at
/// its start) and committed before the sinks commit what they go with.
#[derive(Clone, Default)]
pub(crate) struct Rejects {
    pub(crate) late: Option<Rc<RefCell<Writers<crate::LateRecord>>>>,
    dead: Option<Rc<RefCell<Writers<DeadLetter>>>>,
    pub(crate) allowed_lateness_ms: u64,
}

impl Rejects {
    pub(crate) fn open(
        policy: &LatePolicy,
        dead_letters: Option<&Arc<dyn Sink<DeadLetter>>>,
        partition: Partition,
        commit_cycle: bool,
    ) -> Result<Self, ConnectorError> {
        let late = match policy {
            LatePolicy::SideOutput(sink) => Some(Rc::new(RefCell::new(Writers::open(
                sink,
                partition,
                None,
                commit_cycle,
            )?))),
            LatePolicy::Drop | LatePolicy::Correct { .. } => None,
        };
        let dead = match dead_letters {
            Some(sink) => Some(Rc::new(RefCell::new(Writers::open(
                sink,
                partition,
                None,
                commit_cycle,
            )?))),
            None => None,
        };
        Ok(Rejects {
            late,
            dead,
            allowed_lateness_ms: policy.allowed_lateness_ms(),
        })
    }

    /// Whether dead letters are written anywhere (if not, rendering them is wasted work).
    pub(crate) fn has_dead_letters(&self) -> bool {
        self.dead.is_some()
    }

    /// Writes one dead letter, if a dead-letter sink is configured.
    pub(crate) fn dead_letter(&self, letter: DeadLetter) -> Result<(), ConnectorError> {
        if let Some(writer) = &self.dead {
            let time = letter.event_time.unwrap_or(letter.time_ms);
            writer
                .borrow_mut()
                .write_at(time, &mut vec![(time, letter)])?;
        }
        Ok(())
    }

    /// Writes late records to the side output, if there is one.
    pub(crate) fn write_late(&self, late: crate::LateRecord) -> Result<(), ConnectorError> {
        if let Some(writer) = &self.late {
            let time = late.event_time;
            writer
                .borrow_mut()
                .write_at(time, &mut vec![(time, late)])?;
        }
        Ok(())
    }

    /// Makes what the side outputs hold durable ([`SinkWriter::commit`]).
    pub(crate) fn commit(&self) -> Result<(), ConnectorError> {
        if let Some(writer) = &self.late {
            writer.borrow_mut().commit()?;
        }
        if let Some(writer) = &self.dead {
            writer.borrow_mut().commit()?;
        }
        Ok(())
    }

    /// Finishes the side outputs: the late-record sink's report, then the dead-letter sink's.
    pub(crate) fn finish(&self) -> Vec<(&'static str, Result<SinkReport, ConnectorError>)> {
        let mut reports = Vec::new();
        if let Some(writer) = &self.late {
            reports.push(("late-records", writer.borrow_mut().finish()));
        }
        if let Some(writer) = &self.dead {
            reports.push(("dead-letters", writer.borrow_mut().finish()));
        }
        reports
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn raw_bytes_round_trip_as_text_or_base64() {
        let text = DeadLetter::new(DeadLetterKind::Decode, "src", "p0@1", "bad", b"{oops");
        assert_eq!(
            (text.raw.as_str(), text.raw_encoding.as_str()),
            ("{oops", "utf8")
        );
        assert_eq!(text.raw_bytes(), b"{oops");
        let binary = DeadLetter::new(DeadLetterKind::Decode, "src", "p0@2", "bad", &[0xff, 0, 7]);
        assert_eq!(binary.raw_encoding, "base64");
        assert_eq!(binary.raw_bytes(), vec![0xff, 0, 7]);
        assert_eq!(binary.kind, "decode");
    }
}
