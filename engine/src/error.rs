//! Errors of the engine and the error type connectors report through it.

use std::error::Error as StdError;
use std::fmt;

/// Who is at fault for a connector error, which says whether a retry may help.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    /// The user's configuration or input is wrong; fix it and run again.
    User,
    /// An outside system (disk, network, broker) failed; a retry may help.
    External,
    /// A bug in Eddy; please report it.
    Internal,
}

impl fmt::Display for Fault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Fault::User => "check the configuration or the input",
            Fault::External => "an outside system failed; a retry may help",
            Fault::Internal => "this is a bug in Eddy; please report it",
        })
    }
}

/// An error from a source or a sink: what failed, where, and whose fault it is.
#[derive(Debug, thiserror::Error)]
#[error("{what} ({fault})")]
pub struct ConnectorError {
    /// What failed, naming the file, path or address involved.
    pub what: String,
    /// Whose fault it is.
    pub fault: Fault,
    /// The underlying error, if any.
    #[source]
    pub source: Option<Box<dyn StdError + Send + Sync>>,
}

impl ConnectorError {
    /// An error the user can fix (bad path, bad configuration, wrong schema).
    pub fn user(what: impl Into<String>) -> Self {
        ConnectorError {
            what: what.into(),
            fault: Fault::User,
            source: None,
        }
    }

    /// An error of an outside system (I/O, network), which a retry may fix.
    pub fn external(
        what: impl Into<String>,
        source: impl StdError + Send + Sync + 'static,
    ) -> Self {
        ConnectorError {
            what: what.into(),
            fault: Fault::External,
            source: Some(Box::new(source)),
        }
    }

    /// The error followed by its chain of causes: `what (fault): cause: cause's cause`.
    pub fn with_causes(&self) -> String {
        let mut text = self.to_string();
        let mut cause = self
            .source
            .as_deref()
            .map(|e| e as &(dyn StdError + 'static));
        while let Some(e) = cause {
            text.push_str(&format!(": {e}"));
            cause = e.source();
        }
        text
    }

    /// Attach the underlying error.
    pub fn caused_by(mut self, source: impl StdError + Send + Sync + 'static) -> Self {
        self.source = Some(Box::new(source));
        self
    }
}

/// Errors of a pipeline run.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// A source or sink failed; the stage names which one. The message carries the
    /// connector's error and its causes, so it is not repeated as this error's source.
    #[error("stage '{stage}': {}", .error.with_causes())]
    Connector {
        /// The stage's name.
        stage: String,
        /// What went wrong.
        error: ConnectorError,
    },
    /// The pipeline description is not valid.
    #[error("invalid pipeline '{pipeline}': {reason}")]
    InvalidPipeline {
        /// The pipeline's name.
        pipeline: String,
        /// What to fix.
        reason: String,
    },
    /// The runtime configuration is not valid (workers, processes, hosts).
    #[error("invalid runtime configuration: {0}")]
    InvalidRuntime(String),
    /// Timely could not start (for example, a process could not connect to its peers).
    #[error("could not start the timely workers: {0}")]
    Startup(String),
    /// A checkpoint could not be written, read or completed.
    #[error(transparent)]
    Checkpoint(#[from] crate::checkpoint::CheckpointError),
    /// A worker thread panicked: a bug in Eddy or in a user function.
    #[error("a worker thread panicked: {0}")]
    WorkerPanicked(String),
}
