//! Seeing inside a running `eddy`: the metrics endpoint scraped by a real HTTP client and
//! parsed by a Prometheus text parser while q5 runs (counters increase, the watermark advances,
//! latency quantiles are there), `eddy explain` against it, the live view's log lines when
//! stderr is not a terminal, and `eddy graph` as DOT and SVG.

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use prometheus_parse::{Scrape, Value};

fn eddy() -> Command {
    Command::new(env!("CARGO_BIN_EXE_eddy"))
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Kills the run when the test ends, passed or not.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn get(url: &str) -> Result<String, ureq::Error> {
    ureq::get(url)
        .config()
        .timeout_global(Some(std::time::Duration::from_secs(5)))
        .build()
        .call()?
        .body_mut()
        .read_to_string()
}

fn scrape(port: u16) -> Scrape {
    let text = get(&format!("http://127.0.0.1:{port}/metrics")).expect("GET /metrics");
    Scrape::parse(text.lines().map(|l| Ok(l.to_string()))).expect("valid Prometheus text")
}

/// The value of `metric` for the samples whose labels include `labels`, reduced by `pick`.
fn value(
    scrape: &Scrape,
    metric: &str,
    labels: &[(&str, &str)],
    pick: fn(f64, f64) -> f64,
) -> Option<f64> {
    scrape
        .samples
        .iter()
        .filter(|s| s.metric == metric)
        .filter(|s| labels.iter().all(|(k, v)| s.labels.get(k) == Some(v)))
        .filter_map(|s| match s.value {
            Value::Counter(v) | Value::Gauge(v) | Value::Untyped(v) => Some(v),
            _ => None,
        })
        .reduce(pick)
}

#[test]
fn the_metrics_endpoint_is_scraped_during_a_real_run() {
    let port = free_port();
    let mut child = eddy()
        .args([
            "nexmark",
            "run",
            "q5",
            "--events",
            "100000000",
            "--workers",
            "2",
        ])
        .args([
            "--format",
            "count",
            "--metrics-addr",
            &format!("127.0.0.1:{port}"),
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // The live view writes log lines to stderr (not a terminal here): collect them.
    let stderr = child.stderr.take().unwrap();
    let (lines_tx, lines) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = lines_tx.send(line);
        }
    });
    let _run = Running(child);
    let url = format!("http://127.0.0.1:{port}/metrics");
    let deadline = Instant::now() + Duration::from_secs(30);
    while get(&url).is_err() {
        assert!(
            Instant::now() < deadline,
            "the endpoint never answered at {url}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let first = scrape(port);
    std::thread::sleep(Duration::from_millis(1500));
    let second = scrape(port);

    let source = [("stage", "nexmark"), ("kind", "source")];
    let read = |s: &Scrape| value(s, "eddy_records_out_total", &source, f64::max).unwrap();
    assert!(
        read(&second) > read(&first),
        "the source's counter increases"
    );
    let sink = [("stage", "sink")];
    let watermark = |s: &Scrape| value(s, "eddy_watermark_ms", &sink, f64::min).unwrap();
    assert!(
        watermark(&second) > watermark(&first),
        "the sink's watermark advances: {} then {}",
        watermark(&first),
        watermark(&second)
    );
    assert!(value(&second, "eddy_watermark_lag_seconds", &sink, f64::max).unwrap() > 0.0);
    let window = [("stage", "bid_counts")];
    assert!(value(&second, "eddy_state_entries", &window, f64::max).unwrap() > 0.0);
    assert!(value(&second, "eddy_state_bytes_estimate", &window, f64::max).unwrap() > 0.0);
    // Latency quantiles from the histogram: a summary with 0.5 and 0.99.
    let quantiles: HashMap<String, f64> = second
        .samples
        .iter()
        .filter(|s| s.metric == "eddy_latency_seconds")
        .flat_map(|s| match &s.value {
            Value::Summary(qs) => qs
                .iter()
                .map(|q| (q.quantile.to_string(), q.count))
                .collect(),
            _ => Vec::new(),
        })
        .collect();
    assert!(
        quantiles.contains_key("0.5") && quantiles.contains_key("0.99"),
        "latency quantiles: {quantiles:?}"
    );
    assert!(quantiles["0.99"] >= quantiles["0.5"] && quantiles["0.5"] > 0.0);

    // `eddy explain` asks the same run.
    let explained = eddy()
        .args(["explain", "--addr", &format!("127.0.0.1:{port}")])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&explained.stdout);
    assert!(
        explained.status.success(),
        "{}",
        String::from_utf8_lossy(&explained.stderr)
    );
    assert!(
        text.contains("sources:\n  'nexmark' worker 0: watermark"),
        "{text}"
    );
    assert!(text.contains("held back by: source 'nexmark'"), "{text}");
    assert!(text.contains("'bid_counts' (window)"), "{text}");

    // The live view: a plain log line every few seconds, with events/s and watermark lag.
    let deadline = Instant::now() + Duration::from_secs(20);
    let live = loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match lines.recv_timeout(left) {
            Ok(line) if line.contains("events/s") => break line,
            Ok(_) => continue,
            Err(_) => panic!("no live log line within 20 s"),
        }
    };
    assert!(
        live.contains("events read | ") && live.contains("watermark lag"),
        "{live}"
    );
    assert!(live.contains("nexmark: lag"), "{live}");
}

#[test]
fn explain_without_a_running_pipeline_says_so() {
    let port = free_port();
    let out = eddy()
        .args(["explain", "--addr", &format!("127.0.0.1:{port}")])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!("cannot reach http://127.0.0.1:{port}/explain: is a pipeline running with --metrics-addr")),
        "{stderr}"
    );
}

#[test]
fn a_metrics_address_in_use_is_a_clear_error() {
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let out = eddy()
        .args([
            "nexmark", "run", "q0", "--events", "1000", "--format", "count",
        ])
        .args(["--metrics-addr", &addr])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!("cannot serve metrics on {addr}"))
            && stderr.contains("choose another --metrics-addr"),
        "{stderr}"
    );
}

fn graph(args: &[&str], path: Option<&str>) -> Output {
    let mut command = eddy();
    command.arg("graph").args(args);
    if let Some(path) = path {
        command.env("PATH", path);
    }
    command.output().unwrap()
}

#[test]
fn graph_prints_dot_with_exchanges() {
    let out = graph(&["q5"], None);
    assert!(out.status.success());
    let dot = String::from_utf8_lossy(&out.stdout);
    assert!(dot.starts_with("digraph \"q5\" {"), "{dot}");
    assert!(
        dot.contains("label=\"bid_counts\\nwindow hopping 10000 ms every 2000 ms\""),
        "{dot}"
    );
    assert!(
        dot.contains("[style=dashed, label=\"exchange by key\"]"),
        "{dot}"
    );
    assert!(dot.contains("shape=house, label=\"sink"), "{dot}");
}

#[test]
fn graph_renders_svg_with_graphviz_and_says_how_to_install_it() {
    let dir = tempfile::tempdir().unwrap();
    let svg = dir.path().join("q8.svg");
    let svg = svg.to_str().unwrap();
    let out = graph(&["q8", "--svg", svg], None);
    assert!(
        out.status.success(),
        "needs Graphviz (apt-get install graphviz; .ci/run installs it): {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = std::fs::read_to_string(svg).unwrap();
    assert!(
        text.contains("<svg") && text.contains("exchange by key"),
        "{text}"
    );
    // Without `dot` on the PATH: one line saying how to install it.
    let out = graph(&["q8", "--svg", svg], Some(dir.path().to_str().unwrap()));
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("apt-get install graphviz"), "{stderr}");
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
}
