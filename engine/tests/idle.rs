//! An idle source's watermark follows the wall clock once its idle timeout passes — unless the
//! reader says it is behind its source (`SourceReader::caught_up`): then records still wait,
//! and moving the watermark would make them late. A source reads one record, says `Idle` for
//! ten idle timeouts, then reads a second one; the stamp the second gets (its source's
//! watermark when read) tells which happened.

use std::time::{Duration, Instant};

use eddy_engine::testing::CollectSink;
use eddy_engine::{
    wall_clock_ms, ConnectorError, Partition, Pipeline, ReadStatus, Record, RecordError, Runtime,
    Source, SourceReader, WatermarkConfig,
};

const IDLE_TIMEOUT: Duration = Duration::from_millis(30);

/// Two records, at event times 1 000 and 2 000, with an idle stretch between them; its reader
/// reports `caught_up` as the source says.
#[derive(Clone)]
struct Stalling {
    caught_up: bool,
}

impl Source<u64> for Stalling {
    fn describe(&self) -> String {
        "stalling (test)".into()
    }

    fn open(&self, p: Partition) -> Result<Box<dyn SourceReader<u64>>, ConnectorError> {
        Ok(Box::new(StallingReader {
            caught_up: self.caught_up,
            // Only worker 0 reads; the test runs one worker.
            left: if p.index == 0 { vec![2, 1] } else { Vec::new() },
            stalled_since: None,
        }))
    }
}

struct StallingReader {
    caught_up: bool,
    /// The records left, in thousands of ms, last first.
    left: Vec<u64>,
    stalled_since: Option<Instant>,
}

impl SourceReader<u64> for StallingReader {
    fn poll(
        &mut self,
        out: &mut Vec<Record<u64>>,
        _max: usize,
        _rejected: &mut Vec<RecordError>,
    ) -> Result<ReadStatus, ConnectorError> {
        let Some(&next) = self.left.last() else {
            return Ok(ReadStatus::Done);
        };
        if next == 2 {
            let since = *self.stalled_since.get_or_insert_with(Instant::now);
            if since.elapsed() < IDLE_TIMEOUT * 10 {
                return Ok(ReadStatus::Idle);
            }
        }
        self.left.pop();
        out.push((next * 1_000, next));
        Ok(ReadStatus::Ready)
    }

    fn caught_up(&self) -> bool {
        self.caught_up
    }
}

/// Whether the record at event time 2 000, read after the stall, was on time: stamped below
/// its event time. Otherwise it must have been stamped by the wall clock.
fn on_time_after_stall(caught_up: bool) -> bool {
    let pipeline = Pipeline::new("stall");
    let out = CollectSink::new();
    let watermarks = WatermarkConfig {
        max_disorder: Duration::from_millis(100),
        idle_timeout: Some(IDLE_TIMEOUT),
    };
    pipeline
        .source("stalling", Stalling { caught_up }, watermarks)
        .sink("out", out.clone());
    let started = wall_clock_ms();
    Runtime::new(1).run(&pipeline).unwrap();
    assert_eq!(out.sorted(), vec![(1_000, 1), (2_000, 2)]);
    let second = (2_000, 2);
    let on_time = out.by_watermark(2_000).contains(&second);
    let by_wall_clock = !out.by_watermark(started - 100).contains(&second);
    assert!(
        on_time != by_wall_clock,
        "stamped neither on time nor by the wall clock"
    );
    on_time
}

#[test]
fn a_reader_behind_its_source_keeps_its_watermark_through_a_stall() {
    assert!(on_time_after_stall(false), "the stall made the record late");
}

#[test]
fn a_caught_up_reader_that_stays_idle_follows_the_wall_clock() {
    assert!(
        !on_time_after_stall(true),
        "an idle source's watermark did not follow the wall clock"
    );
}
