#!/usr/bin/env python3
"""Runs Nexmark queries as Flink SQL over the CSV files of `eddy nexmark generate --format csv`.

Usage: target/flink-venv/bin/python benches/flink/run_query.py --query q5 --data DIR \
           --parallelism 2 --events 1000000
       target/flink-venv/bin/python benches/flink/run_query.py --check --query all --data DIR \
           --events 20000 --check-out OUT

Flink runs in local mode (a MiniCluster inside the PyFlink gateway JVM), in *streaming* mode:
the three tables are bounded filesystem sources, each with an event-time attribute `ts`
(`TO_TIMESTAMP_LTZ(date_time, 3)`) and an ascending watermark (`ts - 1 ms`, as Eddy's
zero-disorder watermark), so windows close on watermarks as in Eddy. Each query's SQL
(benches/flink/sql/qN.sql) creates its sink (`blackhole`, but for q10's partitioned files)
and ends with the INSERT that is timed. Two more things a query's SQL may use, made here:
`side_input` (q13), a table of keys 0..9999 each valued by its decimal string (Eddy's default
q13 table), read from a CSV file this script writes; and `${OUTPUT_DIR}` (q10), replaced by a
temporary directory this script creates and removes.

What is timed: `seconds` is the job's net runtime as Flink's JobManager reports it
(JobExecutionResult.getNetRuntime: from the job's start to its end, including task deployment
and reading and parsing the CSV, excluding the JVM's start, planning and submission);
`wall_seconds` is from submitting the INSERT to its completion, as seen from Python.

--check: instead of the blackhole, the query writes its result rows (a change log, for updating
queries) as debezium-json files to a temporary directory, which is read back: `change_rows` is
how many changes it wrote (inserts and retractions), `rows` how many rows stand at the end (each
row's inserts minus its retractions, summed). q10 keeps its own sink and its files are read back
(with the partition of each row). With --check-out DIR the standing rows are also written to
DIR/<query>.jsonl, one JSON object per row (Flink's values: timestamps as strings, decimals as
numbers), for benches/flink/check.py to compare with Eddy's. Check runs are not benchmarks.

A single CSV file is not splittable by Flink's csv format, so at parallelism P > 1 each file is
first split round-robin into P part files (once, cached beside the data, not timed), so that
every source subtask has a share to read. Each part keeps its rows in time order.

--query takes one query, several comma-separated, or `all` (every sql/*.sql); each runs in its
own TableEnvironment, one after the other in this JVM (the benchmark runner starts one process
per query, so that each timed job starts as cold as the others).

Prints one line of JSON per query: {query, parallelism, events, seconds, wall_seconds, flink},
and with --check also {change_rows, inserts, retractions, rows, negative}.
"""

import argparse
import collections
import csv
import json
import os
import re
import shutil
import sys
import tempfile
import time

TABLES = {
    "person": """
        id BIGINT, name STRING, email_address STRING, credit_card STRING, city STRING,
        state STRING, date_time BIGINT, extra STRING""",
    "auction": """
        id BIGINT, item_name STRING, description STRING, initial_bid BIGINT, reserve BIGINT,
        date_time BIGINT, expires BIGINT, seller BIGINT, category BIGINT, extra STRING""",
    "bid": """
        auction BIGINT, bidder BIGINT, price BIGINT, channel STRING, url STRING,
        date_time BIGINT, extra STRING""",
}

# q13's side table: Eddy's default (queries/src/nexmark/side_input_join.rs, q13_default_table).
SIDE_INPUT_KEYS = 10_000

BLACKHOLE = re.compile(r"WITH\s*\(\s*'connector'\s*=\s*'blackhole'\s*\)", re.IGNORECASE)


def shard(data, parallelism):
    """Returns {table: path} for the source tables: the file itself at parallelism 1, else a
    directory of `parallelism` part files split round-robin (made once, then reused)."""
    paths = {}
    for table in TABLES:
        src = os.path.join(data, f"{table}.csv")
        if not os.path.exists(src):
            sys.exit(
                f"run_query.py: {src} is missing: run "
                f"`eddy nexmark generate --format csv --events N --out {data}`"
            )
        if parallelism == 1:
            paths[table] = src
            continue
        out = os.path.join(data, f"split{parallelism}", table)
        done = os.path.join(out, "_DONE")
        if not os.path.exists(done) or os.path.getmtime(done) < os.path.getmtime(src):
            os.makedirs(out, exist_ok=True)
            files = [
                open(os.path.join(out, f"part-{i}.csv"), "w", encoding="utf-8")
                for i in range(parallelism)
            ]
            with open(src, encoding="utf-8") as f:
                for n, line in enumerate(f):
                    files[n % parallelism].write(line)
            for f in files:
                f.close()
            open(done, "w").close()
        paths[table] = out
    return paths


def ddl(table, path):
    return f"""
CREATE TEMPORARY TABLE {table} ({TABLES[table]},
    ts AS TO_TIMESTAMP_LTZ(date_time, 3),
    WATERMARK FOR ts AS ts - INTERVAL '0.001' SECOND
) WITH (
    'connector' = 'filesystem',
    'path' = 'file://{os.path.abspath(path)}',
    'format' = 'csv'
)"""


def side_input_ddl(path):
    """q13's side table, a versioned table (primary key `key`, every row valid from epoch 0, its
    watermark at the end once the file is read) for an event-time temporal join."""
    return f"""
CREATE TEMPORARY TABLE side_input (
    `key` BIGINT, `value` STRING,
    valid_from AS TO_TIMESTAMP_LTZ(0, 3),
    WATERMARK FOR valid_from AS valid_from,
    PRIMARY KEY (`key`) NOT ENFORCED
) WITH (
    'connector' = 'filesystem',
    'path' = 'file://{os.path.abspath(path)}',
    'format' = 'csv'
)"""


def write_side_input(path):
    with open(path, "w", encoding="utf-8") as f:
        for key in range(SIDE_INPUT_KEYS):
            f.write(f"{key},{key}\n")


def statements(sql):
    """The statements of a SQL file: split on `;`, `--` comments dropped."""
    lines = [l for l in sql.splitlines() if not l.strip().startswith("--")]
    return [s.strip() for s in "\n".join(lines).split(";") if s.strip()]


def data_files(root):
    """The finished files under `root`: not hidden (in-progress files start with '.') and not
    markers (`_SUCCESS`)."""
    found, unfinished = [], []
    for dirpath, _, names in os.walk(root):
        for name in sorted(names):
            path = os.path.join(dirpath, name)
            if name.startswith("."):
                if not name.endswith(".crc"):
                    unfinished.append(path)
            elif not name.startswith("_"):
                found.append(path)
    return found, unfinished


def changelog_rows(root):
    """The debezium-json change log under `root`, consolidated: a Counter of each row (as
    canonical JSON) to its inserts minus its retractions, and the counts of inserts and
    retractions."""
    counts = collections.Counter()
    inserts = retractions = 0
    files, unfinished = data_files(root)
    if unfinished:
        sys.exit(f"run_query.py: unfinished files in the check sink: {unfinished[:3]}")
    for path in files:
        with open(path, encoding="utf-8") as f:
            for line in f:
                if not line.strip():
                    continue
                change = json.loads(line)
                if change.get("before") is not None:
                    counts[json.dumps(change["before"], sort_keys=True)] -= 1
                    retractions += 1
                if change.get("after") is not None:
                    counts[json.dumps(change["after"], sort_keys=True)] += 1
                    inserts += 1
    return counts, inserts, retractions


def columns(create_table):
    """The column names of a CREATE TABLE statement, in order (computed columns, watermarks and
    constraints aside)."""
    body = create_table[create_table.index("(") + 1:]
    depth, part, parts = 0, "", []
    for ch in body:
        if ch == "(":
            depth += 1
        elif ch == ")":
            if depth == 0:
                parts.append(part)
                break
            depth -= 1
        if ch == "," and depth == 0:
            parts.append(part)
            part = ""
        else:
            part += ch
    names = []
    for p in parts:
        words = p.split()
        if not words or words[0].upper() in ("WATERMARK", "PRIMARY", "CONSTRAINT"):
            continue
        if len(words) > 1 and words[1].upper() == "AS":
            continue
        names.append(words[0].strip("`"))
    return names


def partitioned_csv_rows(root, create_table):
    """The rows of a partitioned CSV filesystem sink under `root` (q10), with the partition
    columns from the directory names: a Counter of each row (as canonical JSON), and the
    partitions seen (with whether each has its _SUCCESS file)."""
    names = columns(create_table)
    m = re.search(r"PARTITIONED\s+BY\s*\(([^)]*)\)", create_table, re.IGNORECASE)
    keys = [k.strip().strip("`") for k in m.group(1).split(",")] if m else []
    data = [n for n in names if n not in keys]
    counts = collections.Counter()
    files, unfinished = data_files(root)
    if unfinished:
        sys.exit(f"run_query.py: unfinished files in the q10 sink: {unfinished[:3]}")
    partitions = {}
    for path in files:
        rel = os.path.relpath(os.path.dirname(path), root)
        part = dict(p.split("=", 1) for p in rel.split(os.sep) if "=" in p)
        partitions[rel] = os.path.exists(os.path.join(os.path.dirname(path), "_SUCCESS"))
        with open(path, encoding="utf-8", newline="") as f:
            for values in csv.reader(f):
                row = dict(zip(data, values))
                row.update({k: part.get(k) for k in keys})
                for k in ("auction", "bidder", "price"):
                    if k in row:
                        row[k] = int(row[k])
                counts[json.dumps(row, sort_keys=True)] += 1
    return counts, partitions


def run_one(query, args, paths, flink_version, scratch):
    sql_file = os.path.join(args.sql_dir, f"{query}.sql")
    if not os.path.exists(sql_file):
        sys.exit(f"run_query.py: no Flink SQL for {query} ({sql_file} is missing)")
    from pyflink.table import EnvironmentSettings, TableEnvironment

    sql = open(sql_file, encoding="utf-8").read()
    output_dir = None
    if "${OUTPUT_DIR}" in sql:
        output_dir = tempfile.mkdtemp(prefix=f"{query}-out-", dir=scratch)
        sql = sql.replace("${OUTPUT_DIR}", "file://" + output_dir)
    t_env = TableEnvironment.create(EnvironmentSettings.in_streaming_mode())
    config = t_env.get_config()
    config.set("parallelism.default", str(args.parallelism))
    config.set("table.local-time-zone", "UTC")
    config.set("pipeline.name", f"nexmark-{query}-p{args.parallelism}")
    for table, path in paths.items():
        t_env.execute_sql(ddl(table, path))
    if re.search(r"\bside_input\b", sql):
        side = os.path.join(scratch, "side_input.csv")
        if not os.path.exists(side):
            write_side_input(side)
        t_env.execute_sql(side_input_ddl(side))

    stmts = statements(sql)
    check_dir, sink_ddl = None, None
    if args.check:
        for i, stmt in enumerate(stmts[:-1]):
            if BLACKHOLE.search(stmt):
                check_dir = tempfile.mkdtemp(prefix=f"{query}-check-", dir=scratch)
                stmts[i] = BLACKHOLE.sub(
                    "WITH ('connector' = 'filesystem', 'path' = 'file://"
                    + check_dir + "', 'format' = 'debezium-json')", stmt)
            elif output_dir and stmt.upper().startswith("CREATE"):
                sink_ddl = stmt
    for stmt in stmts[:-1]:
        t_env.execute_sql(stmt)
    start = time.perf_counter()
    result = t_env.execute_sql(stmts[-1])
    job = result.get_job_client()
    if job is None:
        sys.exit(f"run_query.py: the last statement of {sql_file} is not an INSERT (no job ran)")
    execution = job.get_job_execution_result().result()
    wall = time.perf_counter() - start
    net_ms = execution.get_net_runtime()
    line = {
        "query": query,
        "parallelism": args.parallelism,
        "events": args.events,
        "seconds": net_ms / 1000.0,
        "wall_seconds": round(wall, 3),
        "flink": flink_version,
    }
    if args.check:
        if check_dir:
            counts, inserts, retractions = changelog_rows(check_dir)
        elif output_dir and sink_ddl:
            counts, partitions = partitioned_csv_rows(output_dir, sink_ddl)
            inserts, retractions = sum(counts.values()), 0
            line["partitions"] = len(partitions)
            line["partitions_committed"] = sum(partitions.values())
        else:
            sys.exit(f"run_query.py --check: {sql_file} has no blackhole sink to replace")
        line.update({
            "change_rows": inserts + retractions,
            "inserts": inserts,
            "retractions": retractions,
            "rows": sum(n for n in counts.values() if n > 0),
            "negative": sum(-n for n in counts.values() if n < 0),
        })
        if args.check_out:
            os.makedirs(args.check_out, exist_ok=True)
            with open(os.path.join(args.check_out, f"{query}.jsonl"), "w",
                      encoding="utf-8") as f:
                for row, n in sorted(counts.items()):
                    for _ in range(max(n, 0)):
                        f.write(row + "\n")
    for d in (check_dir, output_dir):
        if d:
            shutil.rmtree(d, ignore_errors=True)
    print(json.dumps(line), flush=True)


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--query", required=True,
                        help="q0, q1, ...: runs sql/<query>.sql; several comma-separated, or all")
    parser.add_argument("--data", required=True, help="directory with person/auction/bid.csv")
    parser.add_argument("--parallelism", type=int, default=1)
    parser.add_argument("--events", type=int, default=0, help="events in the data, reported")
    parser.add_argument("--sql-dir", default=os.path.join(here, "sql"))
    parser.add_argument("--check", action="store_true",
                        help="collect the result rows instead of the blackhole and count them")
    parser.add_argument("--check-out", help="with --check: write each query's rows here")
    args = parser.parse_args()

    if args.query == "all":
        queries = sorted((f[:-4] for f in os.listdir(args.sql_dir) if f.endswith(".sql")),
                         key=lambda q: int(q[1:]) if q[1:].isdigit() else 1 << 30)
    else:
        queries = [q.strip() for q in args.query.split(",") if q.strip()]
    for query in queries:
        if not os.path.exists(os.path.join(args.sql_dir, f"{query}.sql")):
            sys.exit(f"run_query.py: no Flink SQL for {query} "
                     f"({os.path.join(args.sql_dir, query + '.sql')} is missing)")
    try:
        from pyflink.version import __version__ as flink_version
        import pyflink.table  # noqa: F401
    except ImportError as e:
        sys.exit(f"run_query.py: PyFlink does not import ({e}): run bash benches/flink/install.sh "
                 "and run this script with target/flink-venv/bin/python")

    paths = shard(args.data, args.parallelism)
    # No Python functions run in these jobs: skip PyFlink's Beam loopback worker server (which
    # needs grpc and Beam, not installed) by declaring process mode.
    os.environ.setdefault("_python_worker_execution_mode", "process")
    scratch = tempfile.mkdtemp(prefix="eddy-flink-")
    try:
        for query in queries:
            run_one(query, args, paths, flink_version, scratch)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    main()
