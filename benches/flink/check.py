#!/usr/bin/env python3
"""Checks that Flink's SQL for each Nexmark query (benches/flink/sql/) agrees with Eddy's query.

Usage (after `bash benches/flink/install.sh` and `cargo build -p eddy-queries --bin eddy`):

    python3 benches/flink/check.py --events 20000 --rate 10000

Generates the events once as CSV (`eddy nexmark generate --format csv`), runs every query that
has Flink SQL in Flink (`run_query.py --check`, one JVM, parallelism 1) and in Eddy
(`eddy nexmark run qN --format jsonl`, the same events: same count and rate), and prints a
Markdown table: per query, the change rows and the standing rows on each side (for Eddy's
updating queries, q3, q4, q6, q18 and q19, each row's `diff`s summed; for Flink's, its inserts
minus its retractions), whether the counts match, and whether the rows themselves match on the
columns both sides have (by name; Flink's timestamps read as epoch ms, prices rounded to 3
decimals; q10's Eddy rows get the partition `dt`/`hm` their event time names). q12's rows
depend on processing time; its line compares the sum of `bid_count` (every bid, once) instead.

Only the standard library: run it with any Python 3.
"""

import argparse
import collections
import datetime
import json
import os
import re
import shutil
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TIMESTAMP = re.compile(r"^\d{4}-\d\d-\d\d[ T]\d\d:\d\d:\d\d(\.\d+)?Z?$")
EPOCH = datetime.datetime(1970, 1, 1, tzinfo=datetime.timezone.utc)


def normal(value):
    """A value as both sides can compare it: timestamp strings as epoch ms (UTC), floats rounded
    to 3 decimals."""
    if isinstance(value, str) and TIMESTAMP.match(value):
        text = value.rstrip("Z").replace("T", " ")
        fmt = "%Y-%m-%d %H:%M:%S.%f" if "." in text else "%Y-%m-%d %H:%M:%S"
        t = datetime.datetime.strptime(text, fmt).replace(tzinfo=datetime.timezone.utc)
        return (t - EPOCH) // datetime.timedelta(milliseconds=1)
    if isinstance(value, float):
        return round(value, 3)
    return value


def utc_partition(ms):
    t = EPOCH + datetime.timedelta(milliseconds=ms)
    return t.strftime("%Y-%m-%d"), t.strftime("%H")


def eddy_rows(eddy, query, events, rate, out):
    """Eddy's standing rows of `query` and its change rows: (rows, change_rows)."""
    shutil.rmtree(out, ignore_errors=True)
    run = subprocess.run(
        [eddy, "nexmark", "run", query, "--events", str(events), "--rate", str(rate),
         "--format", "jsonl", "--quiet", "--out", out],
        capture_output=True, text=True)
    if run.returncode != 0:
        sys.exit(f"check.py: eddy failed on {query}:\n{run.stdout}\n{run.stderr}")
    counts = collections.Counter()
    changes = 0
    for name in sorted(os.listdir(out)):
        if not name.endswith(".jsonl"):
            continue
        with open(os.path.join(out, name), encoding="utf-8") as f:
            for line in f:
                if not line.strip():
                    continue
                row = json.loads(line)
                diff = row.pop("diff", 1)
                if query == "q10":
                    row["dt"], row["hm"] = utc_partition(row["date_time"])
                counts[json.dumps(row, sort_keys=True)] += diff
                changes += 1
    rows = []
    for row, n in counts.items():
        rows.extend([json.loads(row)] * max(n, 0))
    return rows, changes


def flink_rows(path):
    rows = []
    if os.path.exists(path):
        with open(path, encoding="utf-8") as f:
            rows = [json.loads(line) for line in f if line.strip()]
    return rows


def compare(flink, eddy):
    """Whether the rows match on the columns both sides have: (verdict, columns)."""
    if not flink or not eddy:
        return ("both empty" if not flink and not eddy else "—"), []
    shared = sorted(set(flink[0]) & set(eddy[0]))
    if not shared:
        return "no shared columns", []

    def bag(rows):
        return collections.Counter(tuple(normal(r.get(c)) for c in shared) for r in rows)

    f, e = bag(flink), bag(eddy)
    if f == e:
        return "same", shared
    only_f, only_e = sum((f - e).values()), sum((e - f).values())
    return f"{only_f} only in Flink, {only_e} only in Eddy", shared


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument("--rate", type=int, default=10_000,
                        help="event-time rate (events/s), the same on both sides")
    parser.add_argument("--queries", default="all", help="comma-separated, or all")
    parser.add_argument("--work", default=os.path.join(ROOT, "target/flink-check"),
                        help="where the events, Flink's rows and Eddy's rows go")
    parser.add_argument("--eddy", default=os.path.join(ROOT, "target/debug/eddy"))
    parser.add_argument("--python", default=os.path.join(ROOT, "target/flink-venv/bin/python"))
    parser.add_argument("--parallelism", type=int, default=1)
    args = parser.parse_args()

    for path, how in ((args.eddy, "cargo build -p eddy-queries --bin eddy"),
                      (args.python, "bash benches/flink/install.sh")):
        if not os.path.exists(path):
            sys.exit(f"check.py: {path} is missing: run {how}")
    sql_dir = os.path.join(ROOT, "benches/flink/sql")
    have = sorted((f[:-4] for f in os.listdir(sql_dir) if f.endswith(".sql")),
                  key=lambda q: int(q[1:]))
    queries = have if args.queries == "all" else args.queries.split(",")

    data = os.path.join(args.work, f"events-{args.events}-rate-{args.rate}")
    subprocess.run([args.eddy, "nexmark", "generate", "--format", "csv", "--events",
                    str(args.events), "--rate", str(args.rate), "--out", data],
                   check=True, stdout=subprocess.DEVNULL)
    flink_out = os.path.join(args.work, "flink")
    shutil.rmtree(flink_out, ignore_errors=True)
    print(f"Flink: {len(queries)} queries over {data} ...", file=sys.stderr, flush=True)
    run = subprocess.run(
        [args.python, os.path.join(ROOT, "benches/flink/run_query.py"), "--check",
         "--query", ",".join(queries), "--data", data, "--events", str(args.events),
         "--parallelism", str(args.parallelism), "--check-out", flink_out],
        capture_output=True, text=True)
    flink = {}
    for line in run.stdout.splitlines():
        if line.startswith("{"):
            j = json.loads(line)
            flink[j["query"]] = j
    if run.returncode != 0:
        tail = "\n".join(run.stderr.splitlines()[-20:])
        print(f"check.py: run_query.py failed after {sorted(flink)}:\n{tail}", file=sys.stderr)

    print(f"\nFlink {next(iter(flink.values()))['flink'] if flink else '?'} (parallelism "
          f"{args.parallelism}) and Eddy over the same {args.events} events at "
          f"{args.rate} events/s of event time:\n")
    print("| query | Flink change rows | Flink rows | Eddy change rows | Eddy rows | counts match "
          "| rows (on shared columns) |")
    print("|---|---|---|---|---|---|---|")
    for q in queries:
        e_rows, e_changes = eddy_rows(args.eddy, q, args.events, args.rate,
                                      os.path.join(args.work, "eddy", q))
        f = flink.get(q)
        if f is None:
            print(f"| {q} | failed | | {e_changes} | {len(e_rows)} | | |")
            continue
        f_rows = flink_rows(os.path.join(flink_out, f"{q}.jsonl"))
        verdict, shared = compare(f_rows, e_rows)
        if q == "q12":
            fs = sum(r["bid_count"] for r in f_rows)
            es = sum(r["bid_count"] for r in e_rows)
            verdict = f"not deterministic; bids counted: Flink {fs}, Eddy {es}"
        elif shared and verdict != "same" or len(shared) < len(e_rows[0] if e_rows else []):
            verdict += f" ({', '.join(shared)})"
        if "partitions" in f:
            verdict += f"; {f['partitions']} partitions, {f['partitions_committed']} with _SUCCESS"
        extra = f", {f['negative']} retracted too often" if f.get("negative") else ""
        print(f"| {q} | {f['change_rows']} | {f['rows']}{extra} | {e_changes} | {len(e_rows)} | "
              f"{'yes' if f['rows'] == len(e_rows) else '**no**'} | {verdict} |", flush=True)


if __name__ == "__main__":
    main()
