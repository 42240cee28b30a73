use eddy_engine::testing::{CollectSink, Script};
use eddy_engine::{Pipeline, Runtime, WatermarkConfig};
use eddy_operators::prelude::*;

#[test]
fn hopping_window_after_an_idle_stretch_takes_only_open_windows() {
    for workers in [1, 2] {
        let pipeline = Pipeline::new("idle");
        let out = CollectSink::new();
        let script = Script::new().watermark(16).records([(12u64, (1u64, 1u64))]);
        pipeline
            .source("events", script, WatermarkConfig::default())
            .key_by("by_key", |e: &(u64, u64)| e.0)
            .window("counts", WindowSpec::hopping(10, 5), Count)
            .sink("out", out.clone());
        Runtime::new(workers).run(&pipeline).unwrap();
        assert_eq!(out.values(), vec![WindowResult { key: 1, start: 10, end: 20, value: 1 }]);
    }
}
