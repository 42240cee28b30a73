#!/usr/bin/env python3
"""A RabbitMQ client outside Eddy (pika) for the AMQP connector's tests and benchmarks.

Every subcommand prints one JSON document on stdout and exits non-zero on an error.

  produce QUEUE N [--start K] [--timestamp T] [--rate R]
        declare QUEUE durable and publish records {"id", "customer", "total"} with ids K..K+N
        as persistent messages with publisher confirms; with --timestamp T message i carries
        the AMQP timestamp T + i (seconds); with --rate, about R messages a second. A publish
        the broker does not confirm (the connection dropped, a broker restart) is retried on a
        new connection until it is confirmed, for up to 90 s. Prints {"published": N}.
  publish QUEUE         publish each line of stdin as one persistent message (confirmed).
  consume QUEUE N [--timeout S]
        read up to N messages (waiting at most S seconds, default 10, for the next one),
        acknowledging them; prints {"messages": [{"body", "delivery_mode", "timestamp",
        "content_type", "message_id"}]}.
  count QUEUE           {"ready": messages ready in the queue, "consumers": consumers}.
  delete QUEUE...       delete the queues (missing ones are fine).
  bench-produce QUEUE N publish N 1 KB JSON records (persistent, confirmed at the end).
  bench-consume QUEUE N read N records as fast as pika can (prefetch 2000, acknowledged in
                        batches); prints {"records": N, "seconds": s}.

The broker is 127.0.0.1:5672 (guest/guest) unless EDDY_AMQP_HOST / EDDY_AMQP_PORT say
otherwise.
"""

import argparse
import json
import os
import sys
import time

import pika
import pika.exceptions

HOST = os.environ.get("EDDY_AMQP_HOST", "127.0.0.1")
PORT = int(os.environ.get("EDDY_AMQP_PORT", "5672"))
RETRY_FOR = 90.0


def connect():
    params = pika.ConnectionParameters(
        host=HOST,
        port=PORT,
        credentials=pika.PlainCredentials("guest", "guest"),
        connection_attempts=1,
        socket_timeout=5,
        blocked_connection_timeout=30,
    )
    try:
        return pika.BlockingConnection(params)
    except pika.exceptions.AMQPConnectionError as e:
        raise SystemExit(
            f"cannot connect to RabbitMQ at {HOST}:{PORT}: {e!r}; "
            "is it running? (bash scripts/brokers.sh up)"
        )


class Publisher:
    """Publishes persistent messages with confirms, reconnecting and retrying what was not
    confirmed."""

    def __init__(self, queue):
        self.queue = queue
        self.connection = None
        self.channel = None

    def open(self):
        self.connection = connect()
        self.channel = self.connection.channel()
        self.channel.queue_declare(queue=self.queue, durable=True)
        self.channel.confirm_delivery()

    def publish(self, body, properties):
        deadline = time.monotonic() + RETRY_FOR
        while True:
            try:
                if self.channel is None:
                    self.open()
                self.channel.basic_publish(
                    exchange="",
                    routing_key=self.queue,
                    body=body,
                    properties=properties,
                    mandatory=True,
                )
                return
            except (
                pika.exceptions.AMQPError,
                SystemExit,
                ConnectionError,
                OSError,
            ) as e:
                self.drop()
                if time.monotonic() > deadline:
                    raise SystemExit(f"could not publish to {self.queue} for {RETRY_FOR}s: {e!r}")
                time.sleep(0.25)

    def drop(self):
        try:
            if self.connection is not None and self.connection.is_open:
                self.connection.close()
        except Exception:
            pass
        self.connection = None
        self.channel = None

    def close(self):
        if self.connection is not None:
            self.connection.close()


def persistent(**extra):
    return pika.BasicProperties(delivery_mode=2, content_type="application/json", **extra)


def produce(args):
    publisher = Publisher(args.queue)
    interval = 1.0 / args.rate if args.rate else 0.0
    started = time.monotonic()
    for n, i in enumerate(range(args.start, args.start + args.n)):
        record = {"id": i, "customer": f"c{i % 97}", "total": round(i * 1.25, 2)}
        extra = {}
        if args.timestamp is not None:
            extra["timestamp"] = args.timestamp + i
        publisher.publish(json.dumps(record).encode(), persistent(**extra))
        if interval:
            ahead = started + (n + 1) * interval - time.monotonic()
            if ahead > 0:
                time.sleep(ahead)
    publisher.close()
    print(json.dumps({"published": args.n}))


def publish(args):
    publisher = Publisher(args.queue)
    count = 0
    for line in sys.stdin:
        line = line.rstrip("\n")
        if not line:
            continue
        publisher.publish(line.encode(), persistent())
        count += 1
    publisher.close()
    print(json.dumps({"published": count}))


def consume(args):
    connection = connect()
    channel = connection.channel()
    messages = []
    for method, properties, body in channel.consume(
        args.queue, inactivity_timeout=args.timeout
    ):
        if method is None:
            break
        messages.append(
            {
                "body": body.decode("utf-8", "replace"),
                "delivery_mode": properties.delivery_mode,
                "timestamp": properties.timestamp,
                "content_type": properties.content_type,
                "message_id": properties.message_id,
            }
        )
        channel.basic_ack(method.delivery_tag)
        if len(messages) >= args.n:
            break
    channel.cancel()
    connection.close()
    print(json.dumps({"messages": messages}))


def count(args):
    connection = connect()
    channel = connection.channel()
    try:
        queue = channel.queue_declare(queue=args.queue, passive=True)
    except pika.exceptions.ChannelClosedByBroker as e:
        raise SystemExit(f"no queue {args.queue}: {e!r}")
    print(
        json.dumps(
            {
                "ready": queue.method.message_count,
                "consumers": queue.method.consumer_count,
            }
        )
    )
    connection.close()


def delete(args):
    connection = connect()
    for queue in args.queues:
        channel = connection.channel()
        try:
            channel.queue_delete(queue=queue)
        except pika.exceptions.ChannelClosedByBroker:
            pass
    connection.close()
    print(json.dumps({"deleted": args.queues}))


def bench_record(i):
    record = {"id": i, "customer": f"c{i % 97}", "total": round(i * 1.25, 2), "pad": ""}
    size = len(json.dumps(record))
    record["pad"] = "x" * max(0, 1024 - size)
    return json.dumps(record).encode()


def bench_produce(args):
    connection = connect()
    channel = connection.channel()
    channel.queue_declare(queue=args.queue, durable=True)
    properties = persistent()
    for i in range(args.n):
        channel.basic_publish(exchange="", routing_key=args.queue, body=bench_record(i),
                              properties=properties)
    # A synchronous request on the same channel returns once the broker has taken every
    # publish before it.
    channel.queue_declare(queue=args.queue, passive=True)
    connection.close()
    print(json.dumps({"published": args.n}))


def bench_consume(args):
    connection = connect()
    channel = connection.channel()
    channel.basic_qos(prefetch_count=2000)
    got = 0
    started = None
    for method, _properties, _body in channel.consume(args.queue, inactivity_timeout=10):
        if method is None:
            break
        if started is None:
            started = time.monotonic()
        got += 1
        if got % 500 == 0 or got == args.n:
            channel.basic_ack(method.delivery_tag, multiple=True)
        if got >= args.n:
            break
    seconds = time.monotonic() - started if started is not None else 0.0
    channel.cancel()
    connection.close()
    print(json.dumps({"records": got, "seconds": seconds}))
    if got < args.n:
        raise SystemExit(f"read {got} of {args.n} records from {args.queue}")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("produce")
    p.add_argument("queue")
    p.add_argument("n", type=int)
    p.add_argument("--start", type=int, default=0)
    p.add_argument("--timestamp", type=int)
    p.add_argument("--rate", type=float)
    p.set_defaults(run=produce)
    p = sub.add_parser("publish")
    p.add_argument("queue")
    p.set_defaults(run=publish)
    p = sub.add_parser("consume")
    p.add_argument("queue")
    p.add_argument("n", type=int)
    p.add_argument("--timeout", type=float, default=10.0)
    p.set_defaults(run=consume)
    p = sub.add_parser("count")
    p.add_argument("queue")
    p.set_defaults(run=count)
    p = sub.add_parser("delete")
    p.add_argument("queues", nargs="+")
    p.set_defaults(run=delete)
    for name, run in (("bench-produce", bench_produce), ("bench-consume", bench_consume)):
        p = sub.add_parser(name)
        p.add_argument("queue")
        p.add_argument("n", type=int)
        p.set_defaults(run=run)
    args = parser.parse_args()
    args.run(args)


if __name__ == "__main__":
    main()
