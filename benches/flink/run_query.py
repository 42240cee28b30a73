#!/usr/bin/env python3
"""Runs one Nexmark query as Flink SQL over the CSV files of `eddy nexmark generate --format csv`.

Usage: target/flink-venv/bin/python benches/flink/run_query.py --query q5 --data DIR \
           --parallelism 2 --events 1000000

Flink runs in local mode (a MiniCluster inside the PyFlink gateway JVM), in *streaming* mode:
the three tables are bounded filesystem sources, each with an event-time attribute `ts`
(`TO_TIMESTAMP_LTZ(date_time, 3)`) and an ascending watermark (`ts - 1 ms`, as Eddy's
zero-disorder watermark), so windows close on watermarks as in Eddy. Each query's SQL
(benches/flink/sql/qN.sql) creates a `blackhole` sink and ends with the INSERT that is timed.

What is timed: `seconds` is the job's net runtime as Flink's JobManager reports it
(JobExecutionResult.getNetRuntime: from the job's start to its end, including task deployment
and reading and parsing the CSV, excluding the JVM's start, planning and submission);
`wall_seconds` is from submitting the INSERT to its completion, as seen from Python.

A single CSV file is not splittable by Flink's csv format, so at parallelism P > 1 each file is
first split round-robin into P part files (once, cached beside the data, not timed), so that
every source subtask has a share to read. Each part keeps its rows in time order.

Prints one line of JSON: {query, parallelism, events, seconds, wall_seconds, flink}.
"""

import argparse
import json
import os
import sys
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


def statements(sql):
    """The statements of a SQL file: split on `;`, `--` comments dropped."""
    lines = [l for l in sql.splitlines() if not l.strip().startswith("--")]
    return [s.strip() for s in "\n".join(lines).split(";") if s.strip()]


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--query", required=True, help="q0, q1, ...: runs sql/<query>.sql")
    parser.add_argument("--data", required=True, help="directory with person/auction/bid.csv")
    parser.add_argument("--parallelism", type=int, default=1)
    parser.add_argument("--events", type=int, default=0, help="events in the data, reported")
    parser.add_argument("--sql-dir", default=os.path.join(here, "sql"))
    args = parser.parse_args()

    sql_file = os.path.join(args.sql_dir, f"{args.query}.sql")
    if not os.path.exists(sql_file):
        sys.exit(f"run_query.py: no Flink SQL for {args.query} ({sql_file} is missing)")
    try:
        from pyflink.table import EnvironmentSettings, TableEnvironment
        from pyflink.version import __version__ as flink_version
    except ImportError as e:
        sys.exit(f"run_query.py: PyFlink does not import ({e}): run bash benches/flink/install.sh "
                 "and run this script with target/flink-venv/bin/python")

    paths = shard(args.data, args.parallelism)
    # No Python functions run in these jobs: skip PyFlink's Beam loopback worker server (which
    # needs grpc and Beam, not installed) by declaring process mode.
    os.environ.setdefault("_python_worker_execution_mode", "process")
    t_env = TableEnvironment.create(EnvironmentSettings.in_streaming_mode())
    config = t_env.get_config()
    config.set("parallelism.default", str(args.parallelism))
    config.set("table.local-time-zone", "UTC")
    config.set("pipeline.name", f"nexmark-{args.query}-p{args.parallelism}")
    for table, path in paths.items():
        t_env.execute_sql(ddl(table, path))

    stmts = statements(open(sql_file, encoding="utf-8").read())
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
    print(json.dumps({
        "query": args.query,
        "parallelism": args.parallelism,
        "events": args.events,
        "seconds": net_ms / 1000.0,
        "wall_seconds": round(wall, 3),
        "flink": flink_version,
    }), flush=True)


if __name__ == "__main__":
    main()
