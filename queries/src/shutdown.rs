//! Graceful shutdown of a running pipeline on SIGTERM and SIGINT, as services are stopped
//! (Kubernetes, systemd, Ctrl-C).
//!
//! The first signal stops the run gracefully ([`RunHandle::stop`](eddy_engine::RunHandle::stop)):
//! the sources read nothing more, what was read drains into the sinks, the sinks commit, the
//! sources acknowledge what the sinks hold, and the run ends with its summary and exit status 0.
//! A second signal, or the shutdown timeout passing first, aborts at once: the process exits
//! with status 130 and says what was not committed (the broker delivers it again; files left
//! half-written are removed by the next run).
//!
//! A pipeline binary of your own gets the same handling as `eddy`'s commands:
//!
//! ```no_run
//! use std::time::Duration;
//!
//! use eddy_queries::shutdown::Shutdown;
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! # let pipeline = eddy_engine::Pipeline::new("mine");
//! let run = eddy_engine::Runtime::new(2).start(&pipeline)?;
//! let _signals = Shutdown::install(run.stopper(), Duration::from_secs(30))?;
//! let summary = run.join()?;
//! println!("{summary}");
//! # Ok(())
//! # }
//! ```

use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::Duration;

use signal_hook::consts::{SIGINT, SIGTERM};
use signal_hook::iterator::{Handle, Signals};

/// The exit status of an aborted stop (as a shell reports a process ended by SIGINT).
pub const ABORTED: i32 = 130;

/// Signal handling for the length of one run: dropped, it stops listening.
pub struct Shutdown {
    handle: Handle,
    thread: Option<JoinHandle<()>>,
}

impl Shutdown {
    /// Listens for SIGTERM and SIGINT: the first calls `stop`; a second, or `timeout` after
    /// the first, aborts the process.
    pub fn install(stop: impl Fn() + Send + 'static, timeout: Duration) -> std::io::Result<Self> {
        let mut signals = Signals::new([SIGTERM, SIGINT])?;
        let handle = signals.handle();
        let thread = std::thread::Builder::new()
            .name("eddy-signals".into())
            .spawn(move || {
                let mut stopping: Option<mpsc::Sender<()>> = None;
                for signal in signals.forever() {
                    let name = if signal == SIGINT {
                        "SIGINT"
                    } else {
                        "SIGTERM"
                    };
                    if stopping.is_some() {
                        abort(&format!("a second {name}"));
                    }
                    eprintln!(
                        "eddy: {name}: stopping — the sources read nothing more, what was read \
                         is committed and acknowledged (send it again, or wait {}, to abort)",
                        humantime::format_duration(timeout)
                    );
                    stop();
                    stopping = Some(abort_after(timeout));
                }
            })?;
        Ok(Shutdown {
            handle,
            thread: Some(thread),
        })
    }
}

/// Aborts the process `timeout` from now unless the returned sender is dropped first.
fn abort_after(timeout: Duration) -> mpsc::Sender<()> {
    let (tx, rx) = mpsc::channel::<()>();
    std::thread::spawn(move || {
        if let Err(mpsc::RecvTimeoutError::Timeout) = rx.recv_timeout(timeout) {
            abort(&format!(
                "the shutdown timeout ({}) passed",
                humantime::format_duration(timeout)
            ));
        }
    });
    tx
}

fn abort(why: &str) -> ! {
    eprintln!(
        "eddy: {why}: aborted before the sinks committed. Records read since the last commit \
         were not acknowledged: the broker delivers them again to the next run (sources without \
         acknowledgements are read again from the start, or from the last checkpoint). Files \
         being written were left as hidden .tmp files, which the next run removes."
    );
    std::process::exit(ABORTED);
}

impl Drop for Shutdown {
    fn drop(&mut self) {
        self.handle.close();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}
