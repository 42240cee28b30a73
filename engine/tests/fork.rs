//! One stream read by several stages: every reader sees every record, once, at 1 and 3 workers.

use eddy_engine::testing::{CollectSink, Script};
use eddy_engine::timely::dataflow::operators::vec::{Filter, Map};
use eddy_engine::{Pipeline, Runtime, WatermarkConfig};

type Rows = Vec<(u64, u64)>;

fn run(workers: usize) -> (Rows, Rows) {
    let pipeline = Pipeline::new("fork");
    let records: Vec<(u64, u64)> = (0..1000).map(|i| (i * 3, i)).collect();
    let numbers = pipeline.source(
        "numbers",
        Script::new().records(records).watermark(10_000),
        WatermarkConfig::default(),
    );
    let evens = numbers
        .clone()
        .stage("evens", "filter", String::new(), |s, _| {
            s.filter(|(_, x)| x % 2 == 0)
        });
    let tens = numbers
        .clone()
        .stage("times-ten", "map", String::new(), |s, _| {
            s.map(|(t, x)| (t, x * 10))
        });
    let all = CollectSink::new();
    numbers.sink("all", all.clone());
    let merged = CollectSink::new();
    evens
        .union(tens, "merged")
        .sink("merged-out", merged.clone());
    Runtime::new(workers).run(&pipeline).unwrap();
    (all.sorted(), merged.sorted())
}

#[test]
fn every_reader_of_a_cloned_stream_sees_every_record_once() {
    let mut expected_merged: Vec<(u64, u64)> = (0..1000)
        .filter(|i| i % 2 == 0)
        .map(|i| (i * 3, i))
        .chain((0..1000).map(|i| (i * 3, i * 10)))
        .collect();
    expected_merged.sort();
    let expected_all: Vec<(u64, u64)> = (0..1000).map(|i| (i * 3, i)).collect();
    for workers in [1, 3] {
        let (all, merged) = run(workers);
        assert_eq!(all, expected_all, "{workers} workers");
        assert_eq!(merged, expected_merged, "{workers} workers");
    }
}
