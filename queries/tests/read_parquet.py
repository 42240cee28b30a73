"""Reads Parquet files with pyarrow, a reader independent of Eddy, and prints what it found.

Usage: python3 read_parquet.py [--rows | --jsonl] FILE_OR_DIR...
Prints one JSON object: {"rows": N, "schema": {field: type}, "files": [...]}, and with --rows
also "data": every row as an object. With --jsonl it prints instead every row as one JSON object
a line (keys sorted, no spaces: one row, one string), streamed record batch by record batch, so
that no file is ever held whole. Fails if the files do not share one schema or a temporary file
is present.
"""
import json
import os
import sys

import pyarrow as pa
import pyarrow.parquet as pq


def files(paths):
    for path in paths:
        if os.path.isdir(path):
            for name in sorted(os.listdir(path)):
                if name.endswith(".tmp"):
                    sys.exit(f"temporary file left behind: {name}")
                if name.endswith(".parquet"):
                    yield os.path.join(path, name)
        else:
            yield path


def check_schema(path, fields, schema):
    if schema is not None and fields != schema:
        sys.exit(f"{path}: schema {fields} differs from {schema}")
    return fields


def stream_rows(paths):
    encode = json.JSONEncoder(default=str, sort_keys=True, separators=(",", ":")).encode
    schema = None
    for path in files(paths):
        parquet = pq.ParquetFile(path)
        schema = check_schema(path, {f.name: str(f.type) for f in parquet.schema_arrow}, schema)
        for batch in parquet.iter_batches():
            # Times as Arrow formats them: many times faster than a datetime object per value.
            columns = [
                c.cast(pa.string()) if pa.types.is_temporal(c.type) else c for c in batch.columns
            ]
            batch = pa.RecordBatch.from_arrays(columns, names=batch.schema.names)
            lines = map(encode, batch.to_pylist())
            sys.stdout.write("".join(line + "\n" for line in lines))


def main():
    args = sys.argv[1:]
    if "--jsonl" in args:
        stream_rows([a for a in args if a != "--jsonl"])
        return
    with_rows = "--rows" in args
    args = [a for a in args if a != "--rows"]
    rows, schema, seen, data = 0, None, [], []
    for path in files(args):
        table = pq.read_table(path)
        schema = check_schema(path, {f.name: str(f.type) for f in table.schema}, schema)
        rows += table.num_rows
        seen.append(os.path.basename(path))
        if with_rows:
            data.extend(table.to_pylist())
    found = {"rows": rows, "schema": schema, "files": seen}
    if with_rows:
        found["data"] = data
    print(json.dumps(found, default=str))


if __name__ == "__main__":
    main()
