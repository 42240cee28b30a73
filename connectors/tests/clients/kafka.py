#!/usr/bin/env python3
"""The outside Kafka client of Eddy's Kafka tests and benchmark: kafka-python 2.2.15, talking to
the Kafka-protocol broker that `bash scripts/brokers.sh up` starts (127.0.0.1:9092, or
$EDDY_KAFKA_PORT).

Subcommands (each prints one JSON object on stdout; exits non-zero on any error). There is no
`delete`: tansu 0.6.0 deletes every topic of the broker when asked to delete one.

  create TOPIC [--partitions P]       create a topic (replication 1)
  produce TOPIC N [--first F] [--malformed-every K [--broken-json-only]] [--rate R]
          [--compression gzip]
                                      publish records {"id", "ts", "value"} with ids F..F+N-1,
                                      spread round-robin over the partitions; with
                                      --malformed-every K, after every K-th record one malformed
                                      message too (alternately broken JSON and a wrong field
                                      type, or only broken JSON); --rate R paces to R records/s.
                                      --compression gzip compresses the batches. Prints the ids
                                      the broker acknowledged and the malformed payloads sent.
  publish TOPIC                       publish each line of stdin as one message, round-robin over
                                      the partitions, waiting for every acknowledgement; prints
                                      {"published": N}
  consume TOPIC N [--timeout S]       read every partition from its beginning until N messages
                                      arrived or S seconds passed with none; prints them (value
                                      as JSON when it parses, key as text)
  committed TOPIC GROUP               the consumer group's committed offsets per partition
  end-offsets TOPIC                   each partition's end offset (its next offset)
  bench-produce TOPIC N               publish N 1 KB JSON records as fast as possible
  bench-consume TOPIC N               read N records as fast as possible:
                                      {"records": N, "seconds": s}
"""

import argparse
import json
import os
import sys
import time

# This file is named like the package it uses: take its own folder off the import path, or
# `import kafka` would import this script.
_HERE = os.path.dirname(os.path.abspath(__file__))
sys.path = [p for p in sys.path if os.path.abspath(p or ".") != _HERE]

from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition  # noqa: E402
from kafka.admin import NewTopic  # noqa: E402
from kafka.errors import (  # noqa: E402
    KafkaError,
    NoBrokersAvailable,
    TopicAlreadyExistsError,
)

BOOTSTRAP = f"127.0.0.1:{os.environ.get('EDDY_KAFKA_PORT', '9092')}"


def fail(message):
    print(f"kafka.py: {message}", file=sys.stderr)
    sys.exit(1)


def admin():
    return KafkaAdminClient(bootstrap_servers=BOOTSTRAP, client_id="eddy-test-admin")


def partitions_of(client, topic, wait=10.0):
    deadline = time.time() + wait
    while True:
        if isinstance(client, KafkaProducer):
            parts = client.partitions_for(topic)
        else:
            parts = client.partitions_for_topic(topic)
        if parts:
            return sorted(parts)
        if time.time() > deadline:
            fail(f"topic {topic} has no partitions at {BOOTSTRAP} (does it exist?)")
        time.sleep(0.1)


def cmd_create(args):
    client = admin()
    try:
        client.create_topics([NewTopic(args.topic, args.partitions, 1)])
    except TopicAlreadyExistsError:
        fail(f"topic {args.topic} exists already")
    finally:
        client.close()
    print(json.dumps({"created": args.topic, "partitions": args.partitions}))


def producer(**extra):
    return KafkaProducer(
        bootstrap_servers=BOOTSTRAP,
        acks="all",
        retries=1000,
        retry_backoff_ms=200,
        reconnect_backoff_max_ms=1000,
        request_timeout_ms=5000,
        delivery_timeout_ms=120000,
        max_in_flight_requests_per_connection=1,
        **extra,
    )


def cmd_publish(args):
    out = producer()
    parts = partitions_of(out, args.topic)
    lines = [line.rstrip("\n") for line in sys.stdin if line.strip()]
    futures = [
        out.send(args.topic, line.encode(), partition=parts[i % len(parts)])
        for i, line in enumerate(lines)
    ]
    out.flush()
    for future in futures:
        future.get(timeout=30)
    out.close()
    print(json.dumps({"published": len(lines)}))


def cmd_produce(args):
    out = producer(compression_type=args.compression)
    parts = partitions_of(out, args.topic)
    acked, failed, malformed = [], [], []
    sent = 0

    def on_ok(record_id):
        return lambda _meta: acked.append(record_id)

    def on_err(record_id):
        return lambda exc: failed.append({"id": record_id, "error": str(exc)})

    start = time.time()
    for n in range(args.n):
        record_id = args.first + n
        record = {"id": record_id, "ts": int(time.time() * 1000), "value": record_id * 2}
        future = out.send(
            args.topic,
            json.dumps(record).encode(),
            partition=parts[sent % len(parts)],
        )
        sent += 1
        future.add_callback(on_ok(record_id)).add_errback(on_err(record_id))
        if args.malformed_every and (n + 1) % args.malformed_every == 0:
            if args.broken_json_only or len(malformed) % 2 == 0:
                bad = '{"id": %d, "ts": ' % record_id  # broken JSON
            else:
                bad = json.dumps({"id": f"not-a-number-{record_id}", "ts": 1, "value": 0})
            malformed.append(bad)
            out.send(args.topic, bad.encode(), partition=parts[sent % len(parts)])
            sent += 1
        if args.rate:
            ahead = (n + 1) / args.rate - (time.time() - start)
            if ahead > 0:
                time.sleep(ahead)
    out.flush(timeout=120)
    out.close()
    print(json.dumps({"acked": sorted(acked), "failed": failed, "malformed": malformed}))
    if failed:
        sys.exit(1)


def reader(topic, group=None):
    consumer = KafkaConsumer(
        bootstrap_servers=BOOTSTRAP,
        group_id=group,
        enable_auto_commit=False,
        consumer_timeout_ms=1000,
    )
    tps = [TopicPartition(topic, p) for p in partitions_of(consumer, topic)]
    consumer.assign(tps)
    consumer.seek_to_beginning(*tps)
    return consumer, tps


def cmd_consume(args):
    consumer, _ = reader(args.topic)
    records = []
    last = time.time()
    while len(records) < args.n and time.time() - last < args.timeout:
        batch = consumer.poll(timeout_ms=200, max_records=args.n - len(records))
        for messages in batch.values():
            for m in messages:
                try:
                    value = json.loads(m.value)
                except ValueError:
                    value = m.value.decode(errors="replace")
                records.append(
                    {
                        "partition": m.partition,
                        "offset": m.offset,
                        "key": None if m.key is None else m.key.decode(errors="replace"),
                        "value": value,
                    }
                )
            last = time.time()
    consumer.close()
    print(json.dumps({"records": records}))


def cmd_committed(args):
    consumer = KafkaConsumer(bootstrap_servers=BOOTSTRAP, group_id=args.group)
    parts = partitions_of(consumer, args.topic)
    offsets = {str(p): consumer.committed(TopicPartition(args.topic, p)) for p in parts}
    consumer.close()
    print(json.dumps(offsets))


def cmd_end_offsets(args):
    consumer = KafkaConsumer(bootstrap_servers=BOOTSTRAP)
    tps = [TopicPartition(args.topic, p) for p in partitions_of(consumer, args.topic)]
    ends = consumer.end_offsets(tps)
    consumer.close()
    print(json.dumps({str(tp.partition): offset for tp, offset in ends.items()}))


def cmd_bench_produce(args):
    out = producer(linger_ms=5, batch_size=256 * 1024)
    parts = partitions_of(out, args.topic)
    start = time.time()
    for i in range(args.n):
        record = {"id": i, "ts": int(time.time() * 1000), "pad": ""}
        record["pad"] = "x" * max(0, 1024 - len(json.dumps(record)))
        out.send(args.topic, json.dumps(record).encode(), partition=parts[i % len(parts)])
    out.flush(timeout=300)
    out.close()
    print(json.dumps({"records": args.n, "seconds": time.time() - start}))


def cmd_bench_consume(args):
    consumer, _ = reader(args.topic)
    seen = 0
    start = time.time()
    last = start
    while seen < args.n and time.time() - last < 10:
        for messages in consumer.poll(timeout_ms=200, max_records=10000).values():
            seen += len(messages)
            last = time.time()
    seconds = time.time() - start
    consumer.close()
    print(json.dumps({"records": seen, "seconds": seconds}))
    if seen < args.n:
        fail(f"read only {seen} of {args.n} records from {args.topic}")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("create")
    p.add_argument("topic")
    p.add_argument("--partitions", type=int, default=2)
    p.set_defaults(run=cmd_create)
    p = sub.add_parser("produce")
    p.add_argument("topic")
    p.add_argument("n", type=int)
    p.add_argument("--first", type=int, default=0)
    p.add_argument("--malformed-every", type=int, default=0)
    p.add_argument("--broken-json-only", action="store_true")
    p.add_argument("--compression", choices=["gzip"], default=None)
    p.add_argument("--rate", type=float, default=0)
    p.set_defaults(run=cmd_produce)
    p = sub.add_parser("publish")
    p.add_argument("topic")
    p.set_defaults(run=cmd_publish)
    p = sub.add_parser("consume")
    p.add_argument("topic")
    p.add_argument("n", type=int)
    p.add_argument("--timeout", type=float, default=10)
    p.set_defaults(run=cmd_consume)
    p = sub.add_parser("committed")
    p.add_argument("topic")
    p.add_argument("group")
    p.set_defaults(run=cmd_committed)
    p = sub.add_parser("end-offsets")
    p.add_argument("topic")
    p.set_defaults(run=cmd_end_offsets)
    for name, run in (("bench-produce", cmd_bench_produce), ("bench-consume", cmd_bench_consume)):
        p = sub.add_parser(name)
        p.add_argument("topic")
        p.add_argument("n", type=int)
        p.set_defaults(run=run)
    args = parser.parse_args()
    try:
        args.run(args)
    except NoBrokersAvailable:
        fail(f"cannot reach Kafka at {BOOTSTRAP}: is it running? (bash scripts/brokers.sh up)")
    except KafkaError as e:
        fail(f"{args.command} against Kafka at {BOOTSTRAP} failed: {e!r}")


if __name__ == "__main__":
    main()
