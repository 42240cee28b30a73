"""Reads Parquet files with pyarrow, a reader independent of Eddy, and prints what it found.

Usage: python3 read_parquet.py [--rows] FILE_OR_DIR...
Prints one JSON object: {"rows": N, "schema": {field: type}, "files": [...]}, and with --rows
also "data": every row as an object. Fails if the files do not share one schema or a temporary
file is present.
"""
import json
import os
import sys

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


def main():
    args = sys.argv[1:]
    with_rows = "--rows" in args
    args = [a for a in args if a != "--rows"]
    rows, schema, seen, data = 0, None, [], []
    for path in files(args):
        table = pq.read_table(path)
        fields = {f.name: str(f.type) for f in table.schema}
        if schema is not None and fields != schema:
            sys.exit(f"{path}: schema {fields} differs from {schema}")
        schema = fields
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
