//! The test kit's streaming-versus-batch check on the stateful operators: over input with
//! watermarks in between (none of it late), each operator gives the same results streaming and
//! over the whole input at once, on 1 and 2 workers — and `by_watermark` shows what had fired
//! when.

use eddy_engine::testing::{
    assert_same_records, assert_streaming_matches_batch, CollectSink, Script,
};
use eddy_engine::{Pipeline, Runtime, WatermarkConfig};
use eddy_operators::prelude::*;
use eddy_operators::WindowSpec;

/// `(key, value)` records, shuffled within steps of 100 ms, a watermark after each step: no
/// record is late.
fn script() -> Script<(u64, u64)> {
    let mut script = Script::new();
    for step in 0..20u64 {
        let base = step * 100;
        let records: Vec<_> = (0..30u64)
            .map(|i| {
                let t = base + (i * 37 + step * 11) % 100;
                (t, (i % 7, i * step % 13))
            })
            .collect();
        script = script.records(records).watermark(base + 100);
    }
    script
}

#[test]
fn session_windows_agree_streaming_and_batch() {
    let rows = assert_streaming_matches_batch(&script(), |s| {
        s.key_by("by_key", |kv: &(u64, u64)| kv.0)
            .session_window("sessions", 30, Count)
    });
    assert!(!rows.is_empty());
}

#[test]
fn count_windows_agree_streaming_and_batch() {
    let rows = assert_streaming_matches_batch(&script(), |s| {
        s.key_by("by_key", |kv: &(u64, u64)| kv.0)
            .count_window("fives", 5, Count)
    });
    assert_eq!(
        rows.len(),
        600 / 5,
        "keys 0 and 1 have 100 records, the others 80: all in full windows of 5"
    );
}

#[test]
fn dedup_and_hopping_windows_agree_streaming_and_batch() {
    assert_streaming_matches_batch(&script(), |s| {
        s.key_by("by_key", |kv: &(u64, u64)| kv.0)
            .dedup_window("first", WindowSpec::hopping(200, 100))
    });
    assert_streaming_matches_batch(&script(), |s| {
        s.key_by("by_key", |kv: &(u64, u64)| kv.0).window(
            "counts",
            WindowSpec::hopping(200, 100),
            Count,
        )
    });
}

#[test]
fn window_joins_agree_streaming_and_batch() {
    assert_streaming_matches_batch(&script(), |s| {
        let left = s
            .clone()
            .filter("even", |kv: &(u64, u64)| kv.1.is_multiple_of(2));
        let right = s.filter("odd", |kv: &(u64, u64)| kv.1 % 2 == 1);
        left.key_by("left_key", |kv: &(u64, u64)| kv.0).window_join(
            "join",
            right.key_by("right_key", |kv: &(u64, u64)| kv.0),
            WindowSpec::tumbling(100),
        )
    });
}

#[test]
fn a_window_is_emitted_by_the_watermark_at_its_end() {
    let pipeline = Pipeline::new("by-watermark");
    let out = CollectSink::new();
    pipeline
        .source("events", script(), WatermarkConfig::default())
        .key_by("by_key", |kv: &(u64, u64)| kv.0)
        .window("counts", WindowSpec::tumbling(100), Count)
        .map("rows", |w| (w.key, w.start, w.value))
        .sink("out", out.clone());
    Runtime::new(2).run(&pipeline).unwrap();
    // By watermark 200 the windows [0, 100) and [100, 200) have fired, nothing later.
    let early = out.by_watermark(200);
    assert!(early
        .iter()
        .all(|(t, (_, start, _))| *t < 200 && *start < 200));
    let expected: Vec<_> = out
        .sorted()
        .into_iter()
        .filter(|(_, (_, start, _))| *start < 200)
        .collect();
    assert_same_records("windows by watermark 200", &early, &expected);
    assert_eq!(early.iter().map(|(_, (_, _, n))| n).sum::<u64>(), 60);
}
