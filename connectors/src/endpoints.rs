//! Sources and sinks of dynamic records (JSON values) opened from endpoint URIs: what `eddy
//! copy --from URI --to URI` is built from. See [`crate::uri`] for the URI forms.
//!
//! A broker connector left out of the build (`--no-default-features`) is an error naming the
//! cargo feature that brings it back.

use std::marker::PhantomData;
use std::path::Path;

use eddy_engine::{
    ConnectorError, DeadLetter, FileOutput, Partition, Record, RecordError, Sink, SinkReport,
    SinkWriter, Source,
};
use serde::Serialize;
use serde_json::Value;

use crate::bridge::{BrokerSource, StopRule};
use crate::event_time::EventTimeOf;
use crate::format::Format;
use crate::lines::DEFAULT_MAX_RECORD_SIZE;
use crate::uri::Endpoint;

/// A source of dynamic records.
pub type DynSource = Box<dyn Source<Value>>;
/// A sink of dynamic records.
pub type DynSink = Box<dyn Sink<Value>>;

/// What an endpoint needs besides its URI.
#[derive(Clone, Debug)]
pub struct EndpointOptions {
    /// How records are encoded in messages, bodies and lines (JSON unless the URI's file
    /// extension or `--format` says otherwise).
    pub format: Format,
    /// When sources stop (`--limit`, `--idle-exit`).
    pub stop: StopRule,
    /// Where source records take their event time from (arrival unless `--event-time FIELD`).
    pub event_time: EventTimeOf<Value>,
}

impl Default for EndpointOptions {
    fn default() -> Self {
        EndpointOptions {
            format: Format::Json,
            stop: StopRule::never(),
            event_time: EventTimeOf::Arrival,
        }
    }
}

/// The schemes this build can read from, for error messages.
const SCHEMES: &str = "kafka, amqp, amqps, nats, tls (NATS over TLS), mqtt, mqtts, http, https, \
                       jsonl, csv (sources); the same and parquet (sinks)";

/// Opens the source `endpoint` names.
pub fn source(endpoint: &Endpoint, options: &EndpointOptions) -> Result<DynSource, ConnectorError> {
    match endpoint.scheme.as_str() {
        "jsonl" | "csv" => crate::files::endpoint_source(endpoint, options),
        #[cfg(feature = "kafka")]
        "kafka" => crate::kafka::endpoint_source(endpoint, options),
        #[cfg(not(feature = "kafka"))]
        "kafka" => Err(built_without(endpoint, "kafka")),
        #[cfg(feature = "amqp")]
        "amqp" | "amqps" => crate::amqp::endpoint_source(endpoint, options),
        #[cfg(not(feature = "amqp"))]
        "amqp" | "amqps" => Err(built_without(endpoint, "amqp")),
        #[cfg(feature = "nats")]
        "nats" | "tls" => crate::nats::endpoint_source(endpoint, options),
        #[cfg(not(feature = "nats"))]
        "nats" | "tls" => Err(built_without(endpoint, "nats")),
        #[cfg(feature = "mqtt")]
        "mqtt" | "mqtts" => crate::mqtt::endpoint_source(endpoint, options),
        #[cfg(not(feature = "mqtt"))]
        "mqtt" | "mqtts" => Err(built_without(endpoint, "mqtt")),
        #[cfg(feature = "http")]
        "http" | "https" => crate::webhook::endpoint_source(endpoint, options),
        #[cfg(not(feature = "http"))]
        "http" | "https" => Err(built_without(endpoint, "http")),
        "parquet" => Err(ConnectorError::user(format!(
            "{endpoint}: Parquet is a sink only here; read it with DuckDB or pyarrow"
        ))),
        // Broker and HTTP schemes: one arm each, added by their modules.
        other => Err(unknown(endpoint, other)),
    }
}

/// Opens the sink `endpoint` names.
pub fn sink(endpoint: &Endpoint, options: &EndpointOptions) -> Result<DynSink, ConnectorError> {
    match endpoint.scheme.as_str() {
        "jsonl" | "csv" | "parquet" => crate::files::endpoint_sink(endpoint, options),
        #[cfg(feature = "kafka")]
        "kafka" => crate::kafka::endpoint_sink(endpoint, options),
        #[cfg(not(feature = "kafka"))]
        "kafka" => Err(built_without(endpoint, "kafka")),
        #[cfg(feature = "http")]
        "http" | "https" => crate::http_sink::endpoint_sink(endpoint, options),
        #[cfg(not(feature = "http"))]
        "http" | "https" => Err(built_without(endpoint, "http")),
        #[cfg(feature = "amqp")]
        "amqp" | "amqps" => crate::amqp::endpoint_sink(endpoint, options),
        #[cfg(not(feature = "amqp"))]
        "amqp" | "amqps" => Err(built_without(endpoint, "amqp")),
        #[cfg(feature = "nats")]
        "nats" | "tls" => crate::nats::endpoint_sink(endpoint, options),
        #[cfg(not(feature = "nats"))]
        "nats" | "tls" => Err(built_without(endpoint, "nats")),
        #[cfg(feature = "mqtt")]
        "mqtt" | "mqtts" => crate::mqtt::endpoint_sink(endpoint, options),
        #[cfg(not(feature = "mqtt"))]
        "mqtt" | "mqtts" => Err(built_without(endpoint, "mqtt")),
        // Broker and HTTP schemes: one arm each, added by their modules.
        other => Err(unknown(endpoint, other)),
    }
}

/// A broker source decoding, timing and stopping as `options` say, boxed.
#[allow(dead_code)] // used only by the broker connectors, which features may leave out
pub(crate) fn configured<S>(
    source: S,
    endpoint: &Endpoint,
    options: &EndpointOptions,
) -> Result<DynSource, ConnectorError>
where
    S: BrokerSource<Value> + Source<Value>,
{
    Ok(Box::new(
        source
            .format(options.format.clone())
            .event_time(options.event_time.clone())
            .stop(options.stop.clone())
            .max_record_size(max_record_size(endpoint)?),
    ))
}

/// The URI option `max_record_size` of a source (files, broker payloads): a size such as `4MiB`,
/// at least 1 byte; [`DEFAULT_MAX_RECORD_SIZE`] when not given.
pub(crate) fn max_record_size(e: &Endpoint) -> Result<usize, ConnectorError> {
    match e.size_param("max_record_size")? {
        Some(0) => Err(ConnectorError::user(format!(
            "{e}: option max_record_size=0 takes no record: give at least 1 byte (e.g. 4MiB)"
        ))),
        size => Ok(size.unwrap_or(DEFAULT_MAX_RECORD_SIZE)),
    }
}

/// Opens the sink `endpoint` names as a dead-letter sink: each [`DeadLetter`] is written as a
/// JSON record with its fields (kind, stage, location, error, raw, ...).
pub fn dead_letter_sink(
    endpoint: &Endpoint,
    options: &EndpointOptions,
) -> Result<AsJson<DeadLetter>, ConnectorError> {
    Ok(AsJson {
        inner: sink(endpoint, options)?,
        _marker: PhantomData,
    })
}

/// A sink of any serializable record, writing each as a JSON value to a sink of dynamic
/// records.
pub struct AsJson<T> {
    inner: DynSink,
    _marker: PhantomData<fn(T)>,
}

impl<T: Serialize + 'static> Sink<T> for AsJson<T> {
    fn describe(&self) -> String {
        self.inner.describe()
    }

    fn open(&self, partition: Partition) -> Result<Box<dyn SinkWriter<T>>, ConnectorError> {
        Ok(Self::wrap(self.inner.open(partition)?))
    }

    /// The inner sink's files: a file sink stays one as JSON (rolled by commits, published by
    /// checkpoints).
    fn files(&self) -> Option<FileOutput> {
        self.inner.files()
    }

    fn open_file(
        &self,
        partition: Partition,
        dir: &Path,
        name: &str,
    ) -> Result<Box<dyn SinkWriter<T>>, ConnectorError> {
        Ok(Self::wrap(self.inner.open_file(partition, dir, name)?))
    }
}

impl<T: Serialize + 'static> AsJson<T> {
    fn wrap(inner: Box<dyn SinkWriter<Value>>) -> Box<dyn SinkWriter<T>> {
        Box::new(AsJsonWriter {
            inner,
            batch: Vec::new(),
            _marker: PhantomData,
        })
    }
}

struct AsJsonWriter<T> {
    inner: Box<dyn SinkWriter<Value>>,
    batch: Vec<Record<Value>>,
    _marker: PhantomData<fn(T)>,
}

impl<T: Serialize> SinkWriter<T> for AsJsonWriter<T> {
    fn write(&mut self, batch: &mut Vec<Record<T>>) -> Result<(), ConnectorError> {
        for (time, record) in batch.drain(..) {
            let value = serde_json::to_value(&record).map_err(|e| {
                ConnectorError::user(format!("a record cannot be written as JSON: {e}"))
            })?;
            self.batch.push((time, value));
        }
        self.inner.write(&mut self.batch)
    }

    fn on_watermark(&mut self, watermark: u64) -> Result<(), ConnectorError> {
        self.inner.on_watermark(watermark)
    }

    fn commit(&mut self) -> Result<(), ConnectorError> {
        self.inner.commit()
    }

    fn finish(&mut self) -> Result<SinkReport, ConnectorError> {
        self.inner.finish()
    }

    fn undeliverable(&mut self) -> Vec<RecordError> {
        self.inner.undeliverable()
    }
}

fn unknown(endpoint: &Endpoint, scheme: &str) -> ConnectorError {
    ConnectorError::user(format!(
        "{endpoint}: unknown scheme '{scheme}'; the schemes are {SCHEMES}"
    ))
}

/// The error for a connector this build left out.
#[allow(dead_code)] // used only when a connector feature is off
pub(crate) fn built_without(endpoint: &Endpoint, feature: &str) -> ConnectorError {
    ConnectorError::user(format!(
        "{endpoint}: this build of Eddy has no {feature} connector; rebuild with the cargo \
         feature '{feature}' (on by default)"
    ))
}
