//! Dead letters: records a source cannot decode, records a user function fails on and late
//! records reach the pipeline's dead-letter sink with their bytes, stage, location and error;
//! every good record still arrives, and each stage counts what it rejected. At 1 and 2 workers.

use eddy_engine::testing::{CollectSink, Script};
use eddy_engine::{
    ConnectorError, DeadLetter, Partition, Pipeline, ReadStatus, Record, RecordError, Runtime,
    Source, SourceReader, WatermarkConfig,
};
use eddy_operators::prelude::*;
use eddy_operators::WindowSpec;

/// Lines of text, some of them not numbers: each worker reads every `count`-th line and
/// rejects the ones that do not parse, with their line number and bytes.
struct Lines(Vec<&'static str>);

struct LinesReader {
    lines: Vec<(usize, &'static str)>,
}

impl Source<u64> for Lines {
    fn describe(&self) -> String {
        "lines".into()
    }

    fn open(&self, p: Partition) -> Result<Box<dyn SourceReader<u64>>, ConnectorError> {
        let lines = self.0.iter().copied().enumerate();
        Ok(Box::new(LinesReader {
            lines: lines.filter(|(i, _)| i % p.count == p.index).collect(),
        }))
    }
}

impl SourceReader<u64> for LinesReader {
    fn poll(
        &mut self,
        out: &mut Vec<Record<u64>>,
        _max: usize,
        rejected: &mut Vec<RecordError>,
    ) -> Result<ReadStatus, ConnectorError> {
        if self.lines.is_empty() {
            return Ok(ReadStatus::Done);
        }
        for (i, line) in self.lines.drain(..) {
            match line.parse::<u64>() {
                Ok(n) => out.push((n, n)),
                Err(e) => rejected.push(
                    RecordError::new(format!("line {}", i + 1), e.to_string()).with_raw(line),
                ),
            }
        }
        Ok(ReadStatus::Ready)
    }
}

fn by_location(mut letters: Vec<DeadLetter>) -> Vec<DeadLetter> {
    letters.sort_by(|a, b| (&a.kind, &a.location, &a.raw).cmp(&(&b.kind, &b.location, &b.raw)));
    letters
}

#[test]
fn undecodable_records_and_failed_functions_become_dead_letters() {
    for workers in [1, 2] {
        let pipeline = Pipeline::new("dead-letters");
        let out = CollectSink::new();
        let dead = CollectSink::new();
        pipeline.dead_letters(dead.clone());
        let lines = vec!["1", "2", "x3", "4", "{5}", "14", "21", "8"];
        pipeline
            .source("lines", Lines(lines), WatermarkConfig::default())
            .try_map("not_multiple_of_7", |n: &u64| {
                if n.is_multiple_of(7) {
                    Err(format!("{n} is a multiple of 7"))
                } else {
                    Ok(n * 10)
                }
            })
            .sink("out", out.clone());
        let summary = Runtime::new(workers).run(&pipeline).unwrap();
        let mut good = out.values();
        good.sort();
        assert_eq!(good, vec![10, 20, 40, 80], "{workers} workers");

        let letters = by_location(dead.values());
        let brief: Vec<_> = letters
            .iter()
            .map(|d| {
                (
                    d.kind.as_str(),
                    d.stage.as_str(),
                    d.location.as_str(),
                    d.raw.as_str(),
                )
            })
            .collect();
        assert_eq!(
            brief,
            vec![
                ("decode", "lines", "line 3", "x3"),
                ("decode", "lines", "line 5", "{5}"),
                ("function", "not_multiple_of_7", "", "14"),
                ("function", "not_multiple_of_7", "", "21"),
            ],
            "{workers} workers"
        );
        assert!(
            letters[0].error.contains("invalid digit"),
            "{:?}",
            letters[0]
        );
        assert_eq!(letters[2].error, "14 is a multiple of 7");
        assert_eq!(letters[2].event_time, Some(14));
        assert!(letters.iter().all(|d| d.time_ms > 1_600_000_000_000));

        let stage = |name: &str| summary.stages.iter().find(|s| s.name == name).unwrap();
        assert_eq!(
            (stage("lines").rejected, stage("lines").dead_lettered),
            (2, 2)
        );
        let f = stage("not_multiple_of_7");
        assert_eq!((f.records_in, f.records_out, f.rejected), (6, 4, 2));
        assert_eq!(summary.dead_lettered(), 4);
        assert_eq!(summary.rejected(), 4);
    }
}

#[test]
fn without_a_dead_letter_sink_rejected_records_are_counted_and_skipped() {
    let pipeline = Pipeline::new("no-dead-letters");
    let out = CollectSink::new();
    pipeline
        .source(
            "lines",
            Lines(vec!["1", "oops", "3"]),
            WatermarkConfig::default(),
        )
        .sink("out", out.clone());
    let summary = Runtime::new(2).run(&pipeline).unwrap();
    let mut good = out.values();
    good.sort();
    assert_eq!(good, vec![1, 3]);
    assert_eq!((summary.rejected(), summary.dead_lettered()), (1, 0));
    assert!(
        summary.to_string().contains("line 2"),
        "the summary quotes the rejected record:\n{summary}"
    );
}

#[test]
fn late_records_go_to_the_dead_letter_sink_under_the_drop_policy() {
    for workers in [1, 2] {
        let pipeline = Pipeline::new("late-dead-letters");
        let out = CollectSink::new();
        let dead = CollectSink::new();
        pipeline.dead_letters(dead.clone());
        let script = Script::new()
            .records([(1_000, 1u64), (2_000, 2), (12_000, 3)])
            .watermark(15_000)
            // [0, 10 000) has closed: these two are late; 14 000 is still in an open window.
            .records([(3_000, 4), (9_999, 5), (14_000, 6)]);
        pipeline
            .source("events", script, WatermarkConfig::default())
            .key_by("all", |_| 0u64)
            .window("counts", WindowSpec::tumbling(10_000), Count)
            .sink("out", out.clone());
        let summary = Runtime::new(workers).run(&pipeline).unwrap();
        assert_eq!(summary.late(), 2, "{workers} workers");
        let letters = by_location(dead.values());
        let mut times: Vec<_> = letters.iter().map(|d| d.event_time).collect();
        times.sort();
        assert_eq!(times, vec![Some(3_000), Some(9_999)]);
        assert!(letters
            .iter()
            .all(|d| d.kind == "late" && d.stage == "counts"));
        assert!(
            letters[0].error.contains("watermark 15000"),
            "{}",
            letters[0].error
        );
        let counts: u64 = out.values().iter().map(|r| r.value).sum();
        assert_eq!(counts, 4, "every record that was not late is counted once");
    }
}
