//! A tiny run of the benchmark runner, so it cannot rot: every query through the engine at 1 and
//! 2 workers and through its hand loop, which must agree on the number of result rows, and the
//! report must name every query and target; the latency path at a tiny rate, the charts, and the
//! runner binary with every option (end to end, two processes). Timings are not checked.

use eddy_benches::runner::{engine, hand_loop, report, rows_agree};
use eddy_connectors::nexmark::NexmarkConfig;
use eddy_queries::nexmark::Query;

#[test]
fn every_query_runs_and_agrees_with_its_hand_loop() {
    let config = NexmarkConfig::with_events(30_000);
    let mut measurements = Vec::new();
    for query in Query::ALL {
        let hand = hand_loop(query, &config);
        assert!(
            hand.rows > 0,
            "{query}: the hand loop produced nothing, the comparison proves nothing"
        );
        for workers in [1, 2] {
            let m = engine(query, &config, workers, 1024).unwrap();
            assert_eq!(m.events, 30_000, "{query}, {workers} workers");
            assert!(
                rows_agree(&m, &hand),
                "{query}, {workers} workers: engine ({}) and hand loop ({}) disagree",
                m.rows,
                hand.rows
            );
            measurements.push(m);
        }
        measurements.push(hand);
    }
    let md = report(&measurements, "test", "test machine", "today");
    for query in Query::ALL {
        assert!(md.contains(&format!("| {query} | hand loop |")), "{md}");
    }
    assert!(md.contains("q5, 2 workers: ≥ 1.7× one worker"), "{md}");
}

/// The latency path at a tiny offered rate, and both charts drawn to a temporary directory.
#[test]
fn latency_runs_at_a_tiny_rate_and_charts_are_drawn() {
    use eddy_benches::charts::{latency_chart, throughput_chart};
    use eddy_benches::latency::{latency, latency_report};

    let config = NexmarkConfig::with_events(4_000);
    let mut measurements = Vec::new();
    let mut latencies = Vec::new();
    for query in [Query::Q0, Query::Q5] {
        measurements.push(hand_loop(query, &config));
        for workers in [1, 2] {
            measurements.push(engine(query, &config, workers, 256).unwrap());
            // 20 000 events/s: 4 000 events take about 0.2 s.
            let l = latency(query, &config, workers, 256, 20_000.0).unwrap();
            assert_eq!(l.events, 4_000, "{query}, {workers} workers");
            assert!(
                l.achieved < 40_000.0,
                "{query}, {workers} workers: the source was not paced ({} events/s)",
                l.achieved
            );
            latencies.push(l);
        }
    }
    let q0 = &latencies[0];
    let (p50, p99, p999, max) = (
        q0.p50.unwrap(),
        q0.p99.unwrap(),
        q0.p999.unwrap(),
        q0.max.unwrap(),
    );
    assert!(p50 <= p99 && p99 <= p999 && p999 <= max, "{q0:?}");
    let md = latency_report(&latencies, 0.5);
    assert!(
        md.contains("| q0 | 1 |") && md.contains("| q5 | 2 |"),
        "{md}"
    );
    assert!(md.contains("p99 ≤ 10 ms"), "{md}");

    let dir = tempfile::tempdir().unwrap();
    let (throughput, latency_svg) = (
        dir.path().join("bench-throughput.svg"),
        dir.path().join("bench-latency.svg"),
    );
    throughput_chart(&measurements, &throughput).unwrap();
    latency_chart(&latencies, &latency_svg).unwrap();
    for path in [throughput, latency_svg] {
        let svg = std::fs::read_to_string(&path).unwrap();
        assert!(svg.contains("<svg"), "{}: {svg}", path.display());
        assert!(
            svg.contains("q5"),
            "{}: the queries are labelled",
            path.display()
        );
    }
}

/// The runner binary end to end with every option: throughput, latency, end to end, two
/// processes on loopback, report and charts.
#[test]
fn the_runner_binary_runs_every_mode() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("bench.md");
    let run = std::process::Command::new(env!("CARGO_BIN_EXE_eddy-benches"))
        .args(["--events", "4000", "--queries", "q0,q7", "--repeat", "1"])
        .args(["--latency", "--latency-seconds", "0.2", "--end-to-end"])
        .args(["--processes", "2", "--out"])
        .arg(&out)
        .output()
        .unwrap();
    assert!(
        run.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&run.stdout),
        String::from_utf8_lossy(&run.stderr)
    );
    let md = std::fs::read_to_string(&out).unwrap();
    for section in [
        "## Latency at a fixed offered rate",
        "## End to end and across processes",
        "| q0 | generator | 2 × 1 | 4000 |",
        "| q7 | prepared | 2 × 1 | 4000 |",
        "| q7 | generator | 1 × 2 | 4000 |",
        "bench-throughput.svg",
        "bench-latency.svg",
    ] {
        assert!(md.contains(section), "missing {section:?}:\n{md}");
    }
    for chart in ["bench-throughput.svg", "bench-latency.svg"] {
        let svg = std::fs::read_to_string(dir.path().join(chart)).unwrap();
        assert!(svg.contains("<svg"), "{chart}");
    }
}

/// The like-for-like Flink comparison's Eddy side: every query over the events read back from
/// the CSV files Flink reads gives the same rows as over the generated events, at 1 worker and
/// at 2 workers reading the files split in two as Flink's runner splits them.
#[test]
fn every_query_from_the_csv_files_agrees_with_the_in_memory_run() {
    use eddy_benches::{flink, runner};
    use eddy_connectors::NexmarkCsvSource;

    let config = NexmarkConfig::with_events(10_000);
    let dir = tempfile::tempdir().unwrap();
    assert_eq!(flink::export_csv(&config, dir.path()).unwrap(), 10_000);
    for table in ["person", "auction", "bid"] {
        let lines: Vec<String> = std::fs::read_to_string(dir.path().join(format!("{table}.csv")))
            .unwrap()
            .lines()
            .map(str::to_string)
            .collect();
        let parts = dir.path().join("split2").join(table);
        std::fs::create_dir_all(&parts).unwrap();
        for part in 0..2 {
            let mine: Vec<&str> = lines
                .iter()
                .skip(part)
                .step_by(2)
                .map(String::as_str)
                .collect();
            std::fs::write(
                parts.join(format!("part-{part}.csv")),
                mine.join("\n") + "\n",
            )
            .unwrap();
        }
    }
    for query in Query::ALL.into_iter().filter(|q| *q != Query::Q12) {
        let memory = engine(query, &config, 1, 1024).unwrap();
        // Each reads only the tables the query names: equal rows say `Query::tables` is right.
        let one = runner::from_csv(query, NexmarkCsvSource::new(dir.path()), 10_000, 1, 1024);
        let two = runner::from_csv(
            query,
            NexmarkCsvSource::split(dir.path(), 2),
            10_000,
            2,
            1024,
        );
        let (one, two) = (one.unwrap(), two.unwrap());
        for (m, what) in [(&one, "1 worker"), (&two, "2 workers, split files")] {
            assert_eq!(
                m.rows, memory.rows,
                "{query}, {what}: rows differ from the in-memory run"
            );
        }
    }
}

/// The connector benchmark against the real brokers (`bash scripts/brokers.sh up`): every
/// broker's records are read by Eddy and by its Python client, and the report has their rows.
#[test]
fn the_connector_benchmark_reads_every_broker() {
    use eddy_benches::connectors::{report, run_all};

    let runs = run_all(300).expect("the brokers are up (bash scripts/brokers.sh up)");
    assert_eq!(runs.len(), 4);
    for run in &runs {
        assert_eq!(run.records, 300, "{run:?}");
        assert!(
            run.eddy_seconds > 0.0 && run.client_seconds > 0.0,
            "{run:?}"
        );
    }
    let md = report(&runs, "test");
    for broker in ["RabbitMQ", "Kafka", "NATS JetStream", "MQTT"] {
        assert!(md.contains(&format!("| {broker}")), "{md}");
    }
}
