//! Property tests over the decoders and parsers that take outside bytes: JSON lines, CSV, and
//! endpoint URIs with every connector's options (the webhook's bodies and write-ahead log are
//! tested in their modules). Each test is named `fuzz_*`; `PROPTEST_CASES` sets how many cases
//! each runs (256 by default, 10^6 in `scripts/fuzz-long.sh`). See docs/reliability.md.

use std::io::Cursor;
use std::path::Path;

use eddy_engine::{Partition, ReadStatus, Record, RecordError, Source};
use proptest::collection::vec;
use proptest::prelude::*;
use serde_json::Value;

use crate::csv_records::{CsvRecords, Next};
use crate::endpoints::EndpointOptions;
use crate::event_time::EventTimeOf;
use crate::jsonl::Offset;
use crate::lines::without_break;
use crate::uri::Endpoint;
use crate::{CsvSource, JsonLinesSource};

/// Everything a source reads, to its end.
fn read_all(source: &dyn Source<Value>) -> (Vec<Record<Value>>, Vec<RecordError>) {
    let mut reader = source.open(Partition { index: 0, count: 1 }).unwrap();
    let (mut out, mut rejected) = (Vec::new(), Vec::new());
    while reader.poll(&mut out, 7, &mut rejected).unwrap() != ReadStatus::Done {}
    (out, rejected)
}

/// A line's bytes: random ones (no line break), JSON objects, or blanks.
fn line() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        vec(
            // Mapped, not filtered: a filter's rejections add up past proptest's limit in a
            // long run.
            any::<u8>().prop_map(|b| if b == b'\n' { b' ' } else { b }),
            0..120
        ),
        (any::<i64>(), "\\PC{0,40}", any::<bool>()).prop_map(|(n, s, b)| {
            serde_json::to_vec(&serde_json::json!({"n": n, "s": s, "b": b})).unwrap()
        }),
        Just(b"  \t".to_vec()),
        Just(b"{\"deep\": [[[[[[]]]]]], \"x\": 18446744073709551615}".to_vec()),
    ]
}

/// `lines` joined by `\n` or `\r\n`, with or without a break after the last.
fn joined(lines: &[Vec<u8>], crlf: bool, last_break: bool) -> Vec<u8> {
    let mut text = Vec::new();
    for (i, line) in lines.iter().enumerate() {
        text.extend_from_slice(line);
        if i + 1 < lines.len() || last_break {
            text.extend_from_slice(if crlf { b"\r\n" } else { b"\n" });
        }
    }
    text
}

/// CSV fields: letters, delimiters, quotes, line breaks and non-ASCII text (no digits, so a
/// dynamic record keeps them as strings).
fn field() -> impl Strategy<Value = String> {
    "[a-z ,\"\r\né]{0,8}"
}

/// How a generated CSV row is written.
#[derive(Clone, Debug)]
enum Row {
    /// One field per column: read back as it was.
    Good(Vec<String>),
    /// One field too many or too few: rejected.
    Ragged(Vec<String>),
    /// A field longer than the limit: rejected.
    Oversized(Vec<String>),
}

fn row(columns: usize, max: usize) -> impl Strategy<Value = Row> {
    let fields = move |n: usize| vec(field(), n..=n);
    // Fewer fields, but at least one (no fields would be a blank line).
    let fewer = if columns > 1 {
        columns - 1
    } else {
        columns + 2
    };
    prop_oneof![
        4 => fields(columns).prop_map(Row::Good),
        1 => fields(columns + 1).prop_map(Row::Ragged),
        1 => fields(fewer).prop_map(Row::Ragged),
        // On one line: the rest of a line over the limit is skipped, and a quoted line break
        // in it would start another record.
        1 => vec("[a-z ,\"é]{0,8}", columns..=columns).prop_map(move |mut f| {
            f[columns - 1] = "x".repeat(max + 1);
            Row::Oversized(f)
        }),
    ]
}

fn csv_case() -> impl Strategy<Value = (usize, usize, Vec<Row>, bool, bool)> {
    (1usize..5, 80usize..200).prop_flat_map(|(columns, max)| {
        (
            Just(columns),
            Just(max),
            vec(row(columns, max), 0..30),
            any::<bool>(),
            any::<bool>(),
        )
    })
}

/// The host part of a generated URI: addresses that resolve without a name server.
fn host() -> impl Strategy<Value = &'static str> {
    prop::sample::select(vec![
        "127.0.0.1",
        "localhost",
        "[::1]",
        "",
        "0.0.0.0:0",
        "127.0.0.1:99999",
    ])
}

/// A generated endpoint URI: a known scheme, a path, and options, mostly known ones, with
/// random values.
fn uri() -> impl Strategy<Value = String> {
    let scheme = prop::sample::select(vec![
        "kafka", "amqp", "nats", "mqtt", "http", "https", "jsonl", "csv", "parquet", "ftp",
    ]);
    let name = prop::sample::select(vec![
        "group",
        "start",
        "capacity",
        "stream",
        "durable",
        "key",
        "partitions",
        "delimiter",
        "header",
        "max_record_size",
        "row_group_size",
        "prefix",
        "max_body",
        "buffer",
        "retry_after",
        "wal",
        "batch",
        "retries",
        "backoff",
        "timeout",
        "keep_alive",
        "connect_timeout",
        "max_packet_size",
        "prefetch",
        "exchange",
        "qos",
        "topic_field",
        "in_flight",
        "deliver",
        "ack_wait",
        "rdkafka.linger.ms",
        "nope",
    ]);
    let value = prop_oneof![
        "[0-9]{1,25}",
        "[0-9]{1,4}(ms|s|m|h|KiB|MiB|M|k)",
        "\\PC{0,12}",
        Just("1e300".to_string()),
        Just("-1".to_string()),
    ];
    (scheme, host(), "[a-z/._%-]{0,20}", vec((name, value), 0..5)).prop_map(
        |(scheme, host, path, options)| {
            let query: Vec<String> = options
                .iter()
                .map(|(k, v)| {
                    let v: String = url::form_urlencoded::byte_serialize(v.as_bytes()).collect();
                    format!("{k}={v}")
                })
                .collect();
            format!("{scheme}://{host}/{path}?{}", query.join("&"))
        },
    )
}

/// Parses `text` as an endpoint and every connector's configuration from it: an error or a
/// value, never a panic. Nothing connects or binds.
fn parse_everything(text: &str) {
    let Ok(e) = text.parse::<Endpoint>() else {
        return;
    };
    let _ = e.to_string();
    let _ = e.address(1);
    let _ = e.name("topic");
    for name in [
        "max_record_size",
        "max_body",
        "buffer",
        "retry_after",
        "timeout",
    ] {
        let _ = e.parse_param::<u64>(name);
        let _ = e.size_param(name);
        let _ = e.duration_param(name);
    }
    let options = EndpointOptions::default();
    if matches!(e.scheme.as_str(), "jsonl" | "csv" | "parquet") {
        let _ = crate::files::endpoint_source(&e, &options);
        let _ = crate::files::endpoint_sink(&e, &options);
    }
    #[cfg(feature = "kafka")]
    {
        let _ = crate::kafka::KafkaSourceConfig::from_endpoint(&e);
        let _ = crate::kafka::KafkaSinkConfig::from_endpoint(&e);
    }
    #[cfg(feature = "amqp")]
    {
        let _ = crate::amqp::AmqpConfig::from_source_endpoint(&e);
        let _ = crate::amqp::AmqpConfig::from_sink_endpoint(&e);
    }
    #[cfg(feature = "nats")]
    let _ = crate::nats::NatsConfig::from_endpoint(&e);
    #[cfg(feature = "mqtt")]
    {
        let _ = crate::mqtt::MqttSourceConfig::from_endpoint(&e);
        let _ = crate::mqtt::MqttSinkConfig::from_endpoint(&e);
    }
    #[cfg(feature = "http")]
    {
        let _ = crate::http_sink::HttpSinkConfig::from_endpoint(&e);
        // Only an address: a name would be looked up in the DNS.
        let ip = e.host.trim_start_matches('[').trim_end_matches(']');
        if ip.parse::<std::net::IpAddr>().is_ok() {
            let _ = crate::webhook::WebhookConfig::from_endpoint(&e);
        }
    }
}

proptest! {
    #[test]
    fn fuzz_json_lines_every_line_is_one_record_or_one_rejection(
        lines in vec(line(), 0..40),
        max in 8usize..160,
        crlf in any::<bool>(),
        last_break in any::<bool>(),
    ) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("in.jsonl");
        std::fs::write(&path, joined(&lines, crlf, last_break)).unwrap();
        let source = JsonLinesSource::with_event_time([&path], EventTimeOf::Arrival)
            .max_record_size(max);
        let (out, rejected) = read_all(&source);
        // Each line, as the reader sees it: without its break; blank ones are no record.
        let mut expected = Vec::new();
        for (i, line) in lines.iter().enumerate() {
            let mut with_break = line.clone();
            with_break.push(b'\n');
            let content = without_break(&with_break);
            if content.len() > max || !content.trim_ascii().is_empty() {
                expected.push((i + 1, content.to_vec()));
            }
        }
        prop_assert_eq!(out.len() + rejected.len(), expected.len());
        let mut out = out.into_iter();
        let mut rejected = rejected.into_iter().peekable();
        let shown = path.display().to_string();
        for (number, content) in expected {
            let here = format!("{shown}:{number}");
            if rejected.peek().is_some_and(|r| r.location == here) {
                let r = rejected.next().unwrap();
                prop_assert!(r.raw.len() <= content.len().max(max + 2));
                continue;
            }
            let (_, record) = out.next().unwrap();
            let parsed: Value = serde_json::from_slice(content.trim_ascii()).unwrap();
            prop_assert!(content.len() <= max);
            prop_assert_eq!(record, parsed);
        }
        prop_assert!(rejected.next().is_none(), "rejections in line order");
    }

    #[test]
    fn fuzz_csv_splitting_accounts_for_every_byte_and_line(
        bytes in vec(prop::sample::select(b"ab,\"\r\n\xff ".to_vec()), 0..400),
        max in 1usize..64,
    ) {
        let mut records = CsvRecords::new(
            Box::new(Cursor::new(bytes.clone())),
            b',',
            max,
            Offset::default(),
        );
        let mut fields = csv::ByteRecord::new();
        let mut last = 0;
        loop {
            match records.next_record(&mut fields).unwrap() {
                Next::End => break,
                Next::Record { .. } => {
                    prop_assert!(records.raw().len() <= max);
                }
                Next::Rejected { .. } => {}
            }
            let at = records.next_offset().byte;
            prop_assert!(at > last, "every record moves on");
            last = at;
        }
        let lines = bytes.iter().filter(|b| **b == b'\n').count()
            + usize::from(bytes.last().is_some_and(|b| *b != b'\n'));
        prop_assert_eq!(records.next_offset().byte, bytes.len() as u64);
        prop_assert_eq!(records.next_offset().line, lines as u64);
    }

    #[test]
    fn fuzz_csv_rows_are_read_back_or_rejected_one_for_one(
        (columns, max, rows, crlf, unterminated) in csv_case(),
    ) {
        let mut writer = csv::WriterBuilder::new()
            .flexible(true)
            .terminator(if crlf { csv::Terminator::CRLF } else { csv::Terminator::Any(b'\n') })
            .from_writer(Vec::new());
        let header: Vec<String> = (0..columns).map(|i| format!("c{i}")).collect();
        writer.write_record(&header).unwrap();
        for row in &rows {
            match row {
                Row::Good(f) | Row::Ragged(f) | Row::Oversized(f) => writer.write_record(f).unwrap(),
            }
        }
        let mut text = writer.into_inner().unwrap();
        if unterminated {
            text.extend_from_slice(b"\"an open quote, never closed");
        }
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("in.csv");
        std::fs::write(&path, &text).unwrap();
        let source = CsvSource::<Value>::new([&path], EventTimeOf::Arrival).max_record_size(max);
        let (out, rejected) = read_all(&source);
        let good: Vec<Value> = rows
            .iter()
            .filter_map(|row| match row {
                Row::Good(f) => Some(Value::Object(
                    header.iter().cloned().zip(f.iter().map(|v| Value::from(v.as_str()))).collect(),
                )),
                _ => None,
            })
            .collect();
        let got: Vec<Value> = out.into_iter().map(|(_, v)| v).collect();
        prop_assert_eq!(got, good);
        let bad = rows.iter().filter(|r| !matches!(r, Row::Good(_))).count() + usize::from(unterminated);
        prop_assert_eq!(rejected.len(), bad, "{:?}", rejected);
    }

    #[test]
    fn fuzz_endpoint_uris_parse_or_fail_cleanly(text in "\\PC{0,80}", generated in uri()) {
        parse_everything(&text);
        parse_everything(&generated);
        parse_everything(&format!("jsonl:///{text}"));
    }
}

#[test]
fn the_generated_cases_reach_the_paths_they_aim_at() {
    // A rejected line over the limit and an accepted one, so that the properties above test
    // both sides.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("x.jsonl");
    std::fs::write(&path, "{\"a\": 1}\n{\"a\": 22222222}\n").unwrap();
    let source = JsonLinesSource::with_event_time([&path], EventTimeOf::Arrival).max_record_size(9);
    let (out, rejected) = read_all(&source);
    assert_eq!((out.len(), rejected.len()), (1, 1));
    assert!(Path::new(&rejected[0].location).ends_with("x.jsonl:2"));
}
