"""Reads Parquet files with pyarrow, a reader independent of Eddy, and prints what it found.

Usage: python3 read_parquet.py FILE_OR_DIR...
Prints one JSON object: {"rows": N, "schema": {field: type}, "files": [...]}. Fails if the
files do not share one schema or a temporary file is present.
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
    rows, schema, seen = 0, None, []
    for path in files(sys.argv[1:]):
        table = pq.read_table(path)
        fields = {f.name: str(f.type) for f in table.schema}
        if schema is not None and fields != schema:
            sys.exit(f"{path}: schema {fields} differs from {schema}")
        schema = fields
        rows += table.num_rows
        seen.append(os.path.basename(path))
    print(json.dumps({"rows": rows, "schema": schema, "files": seen}))


if __name__ == "__main__":
    main()
