#!/usr/bin/env python3
"""An MQTT client outside Eddy (paho-mqtt 2.1, MQTT 3.1.1) for the connector tests and benchmarks.

Subcommands (all take --host/--port, default 127.0.0.1:1883; results are one JSON object on
stdout; the exit status is non-zero on any error):

  produce --topic T --count N [--start S] [--bad-every K] [--delay-ms D] [--timeout S]
      Publishes records {"id": i, "value": i * 2} for i in S..S+N at QoS 1 and waits for every
      PUBACK, reconnecting when the broker goes away (what a broker restart test needs). With
      --bad-every K, every K-th message is malformed instead (alternately not JSON, and JSON
      with an id that is not a number). Prints {"acked": [ids], "bad": [payloads], "seconds": s}.
  consume --topic T [--count N] [--messages M] [--idle S] [--client-id C] [--persistent]
          [--no-subscribe]
      Subscribes at QoS 1, prints the line "ready" once the broker confirmed the subscription,
      then collects messages until N distinct ids (or M messages of any kind) arrived or none
      came for --idle seconds.
      --persistent keeps a session under --client-id (reconnecting through broker restarts);
      --no-subscribe drains an existing session's queue. Prints {"ids": [...], "count": c,
      "dups": d, "topics": {topic: count}, "raw": [payloads that are not records]}; "dups"
      counts messages the broker marked as sent again (the DUP flag).
  subscribe --topic T --client-id C
      Creates (or keeps) a persistent session subscribed to T, then disconnects: messages
      published afterwards wait in it.
  forget --client-id C
      Connects with a clean session, which makes the broker discard the session C.
  bench-produce N [--topic T] [--sessions C1,C2...]
      Creates the persistent sessions C1, C2... subscribed to T (default: eddy-bench-consume,
      the one bench-consume reads), then publishes N JSON records of about 1 KB at QoS 1 as fast
      as the broker acknowledges them. Prints {"records": N, "seconds": s}. Name Eddy's client id
      (mqtt://...?client_id=C2) among the sessions to have Eddy read the same N records.
  bench-consume N [--topic T] [--client-id C]
      Reads N records from the persistent session C (default eddy-bench-consume) as fast as
      they come. Prints {"records": N, "seconds": s}.

The bench topic defaults to eddy/bench.
"""

import argparse
import json
import os
import sys
import threading
import time
import uuid

import paho.mqtt.client as mqtt


def fail(message):
    # Also from paho's network thread, where sys.exit would end only that thread.
    print(f"mqtt.py: {message}", file=sys.stderr, flush=True)
    sys.stdout.flush()
    os._exit(1)


def make_client(args, client_id=None, clean_session=True):
    client = mqtt.Client(
        mqtt.CallbackAPIVersion.VERSION2,
        client_id=client_id or f"eddy-test-{uuid.uuid4().hex[:12]}",
        clean_session=clean_session,
        protocol=mqtt.MQTTv311,
    )
    client.reconnect_delay_set(min_delay=0.1, max_delay=1)
    return client


def connect(client, args):
    try:
        client.connect(args.host, args.port, keepalive=30)
    except OSError as e:
        fail(
            f"cannot connect to the MQTT broker at {args.host}:{args.port}: {e}; "
            "is it running? (bash scripts/brokers.sh up)"
        )


def wait_for(event, seconds, what):
    if not event.wait(seconds):
        fail(f"timed out after {seconds}s waiting for {what}")


def record(i, pad=0):
    body = {"id": i, "value": i * 2}
    if pad:
        body["pad"] = "x" * pad
    return json.dumps(body)


def produce(args):
    client = make_client(args)
    lock = threading.Lock()
    pending = {}  # mid -> ("good", id) or ("bad", payload)
    early = set()  # mids acknowledged before publish() returned them
    acked, bad = [], []
    all_acked = threading.Event()
    connected = threading.Event()
    sent = [False]

    def on_connect(client, userdata, flags, reason_code, properties):
        if reason_code.is_failure:
            fail(f"the broker refused the connection: {reason_code}")
        connected.set()

    def on_publish(client, userdata, mid, reason_code, properties):
        with lock:
            kind = pending.pop(mid, None)
            if kind is None:
                early.add(mid)
            else:
                (acked if kind[0] == "good" else bad).append(kind[1])
            if sent[0] and not pending:
                all_acked.set()

    client.on_connect = on_connect
    client.on_publish = on_publish
    client.max_inflight_messages_set(20)
    connect(client, args)
    client.loop_start()
    wait_for(connected, 10, "the connection")
    started = time.monotonic()
    for n, i in enumerate(range(args.start, args.start + args.count)):
        if args.bad_every and (n + 1) % args.bad_every == 0:
            payload = "{not json" if (n // args.bad_every) % 2 == 0 else json.dumps({"id": f"x{i}", "value": "wrong"})
            kind = ("bad", payload)
        else:
            payload = record(i)
            kind = ("good", i)
        # Publishing while disconnected queues the message; paho sends it on reconnecting.
        # (Not under the lock: paho calls on_publish holding its own locks.)
        info = client.publish(args.topic, payload, qos=1)
        with lock:
            if info.mid in early:
                early.discard(info.mid)
                (acked if kind[0] == "good" else bad).append(kind[1])
            else:
                pending[info.mid] = kind
        if args.delay_ms:
            time.sleep(args.delay_ms / 1000)
    with lock:
        sent[0] = True
        if not pending:
            all_acked.set()
    done = all_acked.wait(args.timeout)
    client.disconnect()
    client.loop_stop()
    print(json.dumps({"acked": acked, "bad": bad, "seconds": time.monotonic() - started}))
    if not done:
        fail(f"{len(pending)} of {args.count} messages were not acknowledged within {args.timeout}s")


def consume(args):
    client = make_client(args, args.client_id, clean_session=not args.persistent)
    lock = threading.Lock()
    ids, raw, topics = [], [], {}
    dups = [0]
    last = [time.monotonic()]
    ready = threading.Event()
    enough = threading.Event()

    def on_connect(client, userdata, flags, reason_code, properties):
        if reason_code.is_failure:
            fail(f"the broker refused the connection: {reason_code}")
        if args.no_subscribe:
            ready.set()
        else:
            client.subscribe(args.topic, qos=1)

    def on_subscribe(client, userdata, mid, reason_codes, properties):
        if any(rc.is_failure for rc in reason_codes):
            fail(f"the broker refused the subscription to {args.topic}")
        ready.set()

    def on_message(client, userdata, message):
        with lock:
            last[0] = time.monotonic()
            topics[message.topic] = topics.get(message.topic, 0) + 1
            dups[0] += int(message.dup)
            try:
                ids.append(int(json.loads(message.payload)["id"]))
            except (ValueError, KeyError, TypeError):
                raw.append(message.payload.decode("utf-8", "replace"))
            if args.count and len(set(ids)) >= args.count:
                enough.set()
            if args.messages and len(ids) + len(raw) >= args.messages:
                enough.set()

    client.on_connect = on_connect
    client.on_subscribe = on_subscribe
    client.on_message = on_message
    connect(client, args)
    client.loop_start()
    wait_for(ready, 10, "the subscription")
    print("ready", flush=True)
    with lock:
        last[0] = time.monotonic()
    deadline = time.monotonic() + args.timeout
    while not enough.is_set() and time.monotonic() < deadline:
        with lock:
            idle = time.monotonic() - last[0]
        if idle >= args.idle:
            break
        enough.wait(0.05)
    client.disconnect()
    client.loop_stop()
    with lock:
        print(json.dumps({"ids": ids, "count": len(ids), "dups": dups[0], "topics": topics, "raw": raw}))


def subscribe(args):
    make_session(args)
    print(json.dumps({"client_id": args.client_id, "topic": args.topic}))


def make_session(args):
    client = make_client(args, args.client_id, clean_session=False)
    done = threading.Event()
    client.on_connect = lambda c, u, f, rc, p: c.subscribe(args.topic, qos=1)
    client.on_subscribe = lambda c, u, mid, rcs, p: done.set()
    connect(client, args)
    client.loop_start()
    wait_for(done, 10, "the subscription")
    client.disconnect()
    client.loop_stop()


def forget(args):
    client = make_client(args, args.client_id, clean_session=True)
    done = threading.Event()
    client.on_connect = lambda c, u, f, rc, p: done.set()
    connect(client, args)
    client.loop_start()
    wait_for(done, 10, "the connection")
    client.disconnect()
    client.loop_stop()
    print(json.dumps({"forgot": args.client_id}))


def bench_produce(args):
    for session in filter(None, args.sessions.split(",")):
        args.client_id = session
        make_session(args)
    client = make_client(args)
    payloads = [record(i, pad=1000) for i in range(args.count)]
    acked = [0]
    done = threading.Event()

    def on_publish(client, userdata, mid, reason_code, properties):
        acked[0] += 1
        if acked[0] >= args.count:
            done.set()

    client.on_publish = on_publish
    client.max_inflight_messages_set(1000)
    connect(client, args)
    client.loop_start()
    started = time.monotonic()
    for payload in payloads:
        client.publish(args.topic, payload, qos=1)
    wait_for(done, args.timeout, f"{args.count} acknowledgements")
    seconds = time.monotonic() - started
    client.disconnect()
    client.loop_stop()
    print(json.dumps({"records": args.count, "seconds": seconds}))


def bench_consume(args):
    client = make_client(args, args.client_id, clean_session=False)
    count = [0]
    started = [None]
    done = threading.Event()

    def on_message(client, userdata, message):
        if started[0] is None:
            started[0] = time.monotonic()
        count[0] += 1
        if count[0] >= args.count:
            done.set()

    client.on_connect = lambda c, u, f, rc, p: c.subscribe(args.topic, qos=1)
    client.on_message = on_message
    connect(client, args)
    client.loop_start()
    wait_for(done, args.timeout, f"{args.count} records")
    seconds = time.monotonic() - started[0]
    client.disconnect()
    client.loop_stop()
    print(json.dumps({"records": count[0], "seconds": seconds}))


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=1883)
    commands = parser.add_subparsers(dest="command", required=True)

    p = commands.add_parser("produce")
    p.add_argument("--topic", required=True)
    p.add_argument("--count", type=int, required=True)
    p.add_argument("--start", type=int, default=0)
    p.add_argument("--bad-every", type=int, default=0)
    p.add_argument("--delay-ms", type=float, default=0)
    p.add_argument("--timeout", type=float, default=60)
    p.set_defaults(run=produce)

    c = commands.add_parser("consume")
    c.add_argument("--topic", required=True)
    c.add_argument("--count", type=int, default=0)
    c.add_argument("--messages", type=int, default=0)
    c.add_argument("--idle", type=float, default=5)
    c.add_argument("--timeout", type=float, default=120)
    c.add_argument("--client-id")
    c.add_argument("--persistent", action="store_true")
    c.add_argument("--no-subscribe", action="store_true")
    c.set_defaults(run=consume)

    s = commands.add_parser("subscribe")
    s.add_argument("--topic", required=True)
    s.add_argument("--client-id", required=True)
    s.set_defaults(run=subscribe)

    f = commands.add_parser("forget")
    f.add_argument("--client-id", required=True)
    f.set_defaults(run=forget)

    bp = commands.add_parser("bench-produce")
    bp.add_argument("count", type=int)
    bp.add_argument("--topic", default="eddy/bench")
    bp.add_argument("--sessions", default="eddy-bench-consume")
    bp.add_argument("--timeout", type=float, default=300)
    bp.set_defaults(run=bench_produce)

    bc = commands.add_parser("bench-consume")
    bc.add_argument("count", type=int)
    bc.add_argument("--topic", default="eddy/bench")
    bc.add_argument("--client-id", default="eddy-bench-consume")
    bc.add_argument("--timeout", type=float, default=300)
    bc.set_defaults(run=bench_consume)

    args = parser.parse_args()
    if args.command == "consume" and args.persistent and not args.client_id:
        parser.error("consume --persistent needs --client-id")
    args.run(args)


if __name__ == "__main__":
    main()
