//! `eddy copy`: moves and converts records between any source and any sink — a pipeline of one
//! source and one sink, built from the same connectors as every other pipeline. The quickest
//! way to export a topic to Parquet:
//!
//! ```text
//! eddy copy --from kafka://127.0.0.1:9092/clicks --to parquet:///tmp/clicks --idle-exit 5s
//! ```
//!
//! Records are dynamic (JSON values), decoded from the source's format (`--format json|csv|raw`
//! for brokers and HTTP; the scheme for files) and encoded into the sink's. The copy stops when
//! a bounded source ends (a file), after `--limit N` records, or once the source has been idle
//! for `--idle-exit`; then the sinks finish, so what was written is committed (files renamed
//! into place, publishes confirmed). Records that cannot be read or written go to
//! `--dead-letters URI` when given, else are counted and quoted in the summary.

use std::time::Duration;

use eddy_connectors::bridge::StopRule;
use eddy_connectors::endpoints::{self, EndpointOptions};
use eddy_connectors::{Endpoint, EventTimeOf, Format};
use eddy_engine::{ConnectorError, Pipeline, WatermarkConfig};

/// What to copy, from where, to where.
#[derive(Clone, Debug)]
pub struct Copy {
    /// The source.
    pub from: Endpoint,
    /// The sink.
    pub to: Endpoint,
    /// The record format of broker and HTTP endpoints (JSON unless given).
    pub format: Option<Format>,
    /// Stop after this many records.
    pub limit: Option<u64>,
    /// Stop once the source has been idle this long.
    pub idle_exit: Option<Duration>,
    /// Take each record's event time from this field (default: the broker's timestamp, or the
    /// wall clock on arrival).
    pub event_time: Option<String>,
    /// Where records that cannot be read or written go.
    pub dead_letters: Option<Endpoint>,
}

impl Copy {
    /// A copy from `from` to `to`, with defaults for the rest.
    pub fn new(from: Endpoint, to: Endpoint) -> Self {
        Copy {
            from,
            to,
            format: None,
            limit: None,
            idle_exit: None,
            event_time: None,
            dead_letters: None,
        }
    }

    /// The options the endpoints are opened with.
    pub fn options(&self) -> EndpointOptions {
        let mut stop = StopRule::never();
        if let Some(limit) = self.limit {
            stop = stop.limit(limit);
        }
        if let Some(idle) = self.idle_exit {
            stop = stop.idle_exit(idle);
        }
        EndpointOptions {
            format: self.format.clone().unwrap_or_default(),
            stop,
            event_time: match &self.event_time {
                Some(field) => EventTimeOf::field(field),
                None => EventTimeOf::Broker,
            },
        }
    }

    /// The copy as a pipeline: source `from`, sink `to`, and the dead-letter sink.
    pub fn pipeline(&self) -> Result<Pipeline, ConnectorError> {
        let options = self.options();
        let source = endpoints::source(&self.from, &options)?;
        let sink = endpoints::sink(&self.to, &options)?;
        let pipeline = Pipeline::new("copy");
        if let Some(dead) = &self.dead_letters {
            // Dead letters are JSON records whatever the copy's own format.
            let dead_options = EndpointOptions {
                format: Format::Json,
                ..options.clone()
            };
            pipeline.dead_letters(endpoints::dead_letter_sink(dead, &dead_options)?);
        }
        pipeline
            .source("from", source, WatermarkConfig::default())
            .sink("to", sink);
        Ok(pipeline)
    }
}
