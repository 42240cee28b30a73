#!/usr/bin/env python3
"""A NATS client outside Eddy (nats-py), for the NATS connector's tests and benchmarks.

Records are JSON objects {"id": I, "name": "nI", "ts": MS}. Every subcommand prints one JSON
object on stdout (`consume` prints {"ready": true} first, once it is subscribed) and exits
non-zero on errors, with the reason on stderr.

    stream-add NAME SUBJECT [--max-msg-size B]   (re)create a JetStream stream (file storage)
    stream-rm NAME                               delete a stream
    stream-info NAME                             {"messages": N, "first_seq": S, "last_seq": S}
    consumer-info STREAM DURABLE                 {"num_pending", "num_ack_pending", "delivered",
                                                  "num_redelivered"}
    produce SUBJECT N [--stream S] [--start K] [--bad-every M] [--bad-kinds K,..]
            [--interval-ms X] [--wait-subscribed]
        publish N records (ids K..K+N); on JetStream each publish is retried until the server
        acknowledges it (a message id makes retries idempotent), so it survives a restart.
        --bad-every M puts a malformed message after every M-th record, of the kinds
        --bad-kinds lists in turn (default json,types,bytes: broken JSON, wrong field types,
        bytes that are not UTF-8; a dynamic record takes any JSON, so types is not bad for it).
        --wait-subscribed (core NATS) first sends probe requests until one finds a subscriber
        instead of "no responders": exactly one probe message ({"probe": true}) reaches the
        subscribers.
        Prints {"acked": [ids], "bad": [{"seq": S or null, "raw_hex": ...}], "probes": P}.
    consume SUBJECT N [--stream S] [--timeout T]
        read N records (core: subscribe first, print {"ready": true}; JetStream: an ephemeral
        consumer reading the stream from its start), then wait a moment for extras; prints
        {"count": C, "records": [...]}; exits 1 when fewer than N came within T seconds.
    bench-produce N [--subject X] [--stream S]   N records of about 1 KB, as fast as possible
    bench-consume N [--subject X] [--stream S]   read N records as fast as possible (core:
                                                 print {"ready": true} first);
                                                 {"records": N, "seconds": s}
"""

import argparse
import asyncio
import base64
import json
import os
import sys
import time

# This file is named nats.py: keep its own folder off the path, so `import nats` is nats-py.
_HERE = os.path.dirname(os.path.abspath(__file__))
sys.path = [p for p in sys.path if os.path.abspath(p or ".") != _HERE]

import nats  # noqa: E402
from nats.errors import NoRespondersError  # noqa: E402
from nats.errors import TimeoutError as NatsTimeout  # noqa: E402
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy, StreamConfig  # noqa: E402
from nats.js.errors import NotFoundError  # noqa: E402

SERVER = "nats://127.0.0.1:4222"
BAD = {
    "json": b'{"id": 1, "name": "broken',
    "types": b'{"id": "seven", "name": 7, "ts": 1}',
    "bytes": b"\xff\xfe\x00",
}


def emit(obj):
    print(json.dumps(obj), flush=True)


def fail(message):
    print(f"nats.py: {message}", file=sys.stderr, flush=True)
    sys.exit(1)


async def connect(server):
    try:
        return await nats.connect(
            server,
            connect_timeout=2,
            allow_reconnect=True,
            reconnect_time_wait=0.2,
            max_reconnect_attempts=300,
        )
    except Exception as e:  # noqa: BLE001 - any failure to connect ends the run
        fail(f"cannot connect to NATS at {server}: {e!r}; run `bash scripts/brokers.sh up`")


def record(i, pad=""):
    body = {"id": i, "name": f"n{i}", "ts": int(time.time() * 1000)}
    if pad:
        body["pad"] = pad
    return json.dumps(body).encode()


async def js_publish(js, subject, payload, msg_id, deadline):
    """Publishes until JetStream acknowledges (retrying through restarts); the ack."""
    while True:
        try:
            return await js.publish(subject, payload, timeout=1.0, headers={"Nats-Msg-Id": msg_id})
        except Exception as e:  # noqa: BLE001 - timeouts, no responders, reconnecting
            if time.monotonic() > deadline:
                fail(f"JetStream did not acknowledge {msg_id} on {subject}: {e!r}")
            await asyncio.sleep(0.1)


async def wait_subscribed(nc, subject):
    probes = 0
    deadline = time.monotonic() + 30
    while True:
        probes += 1
        try:
            await nc.request(subject, b'{"probe": true}', timeout=0.25)
            return probes  # someone answered: subscribed as well
        except NoRespondersError:
            if time.monotonic() > deadline:
                fail(f"nobody subscribed to {subject} within 30 s")
            await asyncio.sleep(0.05)
        except (NatsTimeout, asyncio.TimeoutError):
            return probes  # delivered to a subscriber that does not answer: subscribed


async def produce(a):
    nc = await connect(a.server)
    js = nc.jetstream()
    probes = await wait_subscribed(nc, a.subject) if a.wait_subscribed else 0
    acked, bad = [], []
    kinds = a.bad_kinds.split(",")
    deadline = time.monotonic() + 120
    run = f"{time.time_ns()}"
    for n, i in enumerate(range(a.start, a.start + a.count)):
        if a.stream:
            await js_publish(js, a.subject, record(i), f"{run}-{i}", deadline)
        else:
            await nc.publish(a.subject, record(i))
        acked.append(i)
        if a.bad_every and (n + 1) % a.bad_every == 0:
            raw = BAD[kinds[len(bad) % len(kinds)]]
            seq = None
            if a.stream:
                seq = (await js_publish(js, a.subject, raw, f"{run}-bad{len(bad)}", deadline)).seq
            else:
                await nc.publish(a.subject, raw)
            bad.append({"seq": seq, "raw_hex": raw.hex()})
        if a.interval_ms:
            await asyncio.sleep(a.interval_ms / 1000)
    await nc.flush(timeout=10)
    await nc.drain()
    emit({"acked": acked, "bad": bad, "probes": probes})


async def messages(nc, subject, stream, ack):
    """Yields message payloads: a core subscription (after printing ready) or an ephemeral
    JetStream consumer reading the stream from its start."""
    if stream:
        js = nc.jetstream()
        policy = AckPolicy.EXPLICIT if ack else AckPolicy.NONE
        sub = await js.pull_subscribe(
            subject,
            stream=stream,
            config=ConsumerConfig(deliver_policy=DeliverPolicy.ALL, ack_policy=policy),
        )
        while True:
            try:
                batch = await sub.fetch(batch=1000, timeout=0.5)
            except (NatsTimeout, asyncio.TimeoutError):
                yield None
                continue
            for m in batch:
                if ack:
                    await m.ack()
                yield m.data
    else:
        sub = await nc.subscribe(subject, pending_msgs_limit=-1, pending_bytes_limit=-1)
        await nc.flush()
        emit({"ready": True})
        while True:
            try:
                m = await sub.next_msg(timeout=0.5)
            except (NatsTimeout, asyncio.TimeoutError):
                yield None
                continue
            yield m.data


async def consume(a):
    nc = await connect(a.server)
    records = []
    deadline = time.monotonic() + a.timeout
    grace_until = None
    async for data in messages(nc, a.subject, a.stream, ack=True):
        if data is not None:
            try:
                records.append(json.loads(data))
            except ValueError:
                records.append({"undecodable": base64.b64encode(data).decode()})
            if len(records) >= a.count and grace_until is None:
                grace_until = time.monotonic() + 0.5  # catch duplicates
        now = time.monotonic()
        if (grace_until is not None and now > grace_until) or now > deadline:
            break
    await nc.close()
    emit({"count": len(records), "records": records})
    if len(records) < a.count:
        fail(f"only {len(records)} of {a.count} records came on {a.subject} within {a.timeout} s")


async def bench_produce(a):
    nc = await connect(a.server)
    js = nc.jetstream()
    pad = "x" * 960  # with id, name and ts: about 1 KB of JSON
    start = time.monotonic()
    if a.stream:
        deadline = time.monotonic() + 300
        run = f"{time.time_ns()}"
        for chunk in range(0, a.count, 256):
            ids = range(chunk, min(chunk + 256, a.count))
            await asyncio.gather(
                *(js_publish(js, a.subject, record(i, pad), f"{run}-{i}", deadline) for i in ids)
            )
    else:
        for i in range(a.count):
            await nc.publish(a.subject, record(i, pad))
        await nc.flush(timeout=30)
    seconds = time.monotonic() - start
    await nc.close()
    emit({"records": a.count, "seconds": seconds})


async def bench_consume(a):
    nc = await connect(a.server)
    n, start = 0, None
    deadline = time.monotonic() + 300
    async for data in messages(nc, a.subject, a.stream, ack=False):
        if data is not None:
            start = start or time.monotonic()
            n += 1
            if n >= a.count:
                break
        if time.monotonic() > deadline:
            fail(f"only {n} of {a.count} records came within 300 s")
    seconds = time.monotonic() - start
    await nc.close()
    emit({"records": n, "seconds": seconds})


async def jetstream_api(call, what):
    """Calls the JetStream API, retrying for 10 s while JetStream is not ready (after a
    restart the server listens before JetStream has recovered its streams)."""
    deadline = time.monotonic() + 10
    while True:
        try:
            return await call()
        except (NoRespondersError, NatsTimeout, asyncio.TimeoutError) as e:
            if time.monotonic() > deadline:
                fail(f"JetStream did not answer {what}: {e!r}; is the server running with -js?")
            await asyncio.sleep(0.2)


async def stream_add(a):
    nc = await connect(a.server)
    js = nc.jetstream()
    try:
        await jetstream_api(lambda: js.delete_stream(a.name), f"deleting stream {a.name}")
    except NotFoundError:
        pass
    config = StreamConfig(name=a.name, subjects=[a.subject])
    if a.max_msg_size:
        config.max_msg_size = a.max_msg_size
    info = await jetstream_api(lambda: js.add_stream(config), f"creating stream {a.name}")
    await nc.close()
    emit({"stream": info.config.name})


async def stream_rm(a):
    nc = await connect(a.server)
    try:
        await nc.jetstream().delete_stream(a.name)
        deleted = True
    except NotFoundError:
        deleted = False
    await nc.close()
    emit({"deleted": deleted})


async def stream_info(a):
    nc = await connect(a.server)
    info = await nc.jetstream().stream_info(a.name)
    await nc.close()
    s = info.state
    emit({"messages": s.messages, "first_seq": s.first_seq, "last_seq": s.last_seq})


async def consumer_info(a):
    nc = await connect(a.server)
    info = await nc.jetstream().consumer_info(a.stream, a.durable)
    await nc.close()
    emit(
        {
            "num_pending": info.num_pending,
            "num_ack_pending": info.num_ack_pending,
            "delivered": info.delivered.stream_seq,
            "num_redelivered": info.num_redelivered,
        }
    )


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--server", default=SERVER)
    sub = p.add_subparsers(dest="command", required=True)
    s = sub.add_parser("stream-add")
    s.add_argument("name")
    s.add_argument("subject")
    s.add_argument("--max-msg-size", type=int, default=0)
    s.set_defaults(run=stream_add)
    s = sub.add_parser("stream-rm")
    s.add_argument("name")
    s.set_defaults(run=stream_rm)
    s = sub.add_parser("stream-info")
    s.add_argument("name")
    s.set_defaults(run=stream_info)
    s = sub.add_parser("consumer-info")
    s.add_argument("stream")
    s.add_argument("durable")
    s.set_defaults(run=consumer_info)
    s = sub.add_parser("produce")
    s.add_argument("subject")
    s.add_argument("count", type=int)
    s.add_argument("--stream")
    s.add_argument("--start", type=int, default=0)
    s.add_argument("--bad-every", type=int, default=0)
    s.add_argument("--bad-kinds", default="json,types,bytes")
    s.add_argument("--interval-ms", type=float, default=0)
    s.add_argument("--wait-subscribed", action="store_true")
    s.set_defaults(run=produce)
    s = sub.add_parser("consume")
    s.add_argument("subject")
    s.add_argument("count", type=int)
    s.add_argument("--stream")
    s.add_argument("--timeout", type=float, default=30)
    s.set_defaults(run=consume)
    for name, run in (("bench-produce", bench_produce), ("bench-consume", bench_consume)):
        s = sub.add_parser(name)
        s.add_argument("count", type=int)
        s.add_argument("--subject", default="eddy.bench")
        s.add_argument("--stream")
        s.set_defaults(run=run)
    a = p.parse_args()
    asyncio.run(a.run(a))


if __name__ == "__main__":
    main()
