"""Reads a Hive-partitioned Parquet directory with pyarrow's dataset API, a reader independent of
Eddy, and checks each row against its partition.

Usage: python3 read_partitioned.py DIR
Prints one JSON object: {"rows": N, "partitions": [...], "misplaced": M, "without_success": [...],
"bids": [[auction, bidder, price, date_time_ms], ...]}. A row is misplaced when its dt/hm
partition values are not the UTC date and hour of its date_time.
"""
import json
import os
import sys

import pyarrow.dataset as ds


def main():
    root = sys.argv[1]
    partitions, without_success = [], []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = [d for d in dirnames if not d.startswith(("_", "."))]
        rel = os.path.relpath(dirpath, root)
        if any(f.endswith(".tmp") for f in filenames):
            sys.exit(f"temporary file left behind in {rel}")
        if any(f.endswith(".parquet") for f in filenames):
            partitions.append(rel)
            if "_SUCCESS" not in filenames:
                without_success.append(rel)
    table = ds.dataset(root, format="parquet", partitioning="hive").to_table()
    misplaced, bids = 0, []
    for row in table.to_pylist():
        t = row["date_time"]
        if str(row["dt"]) != t.strftime("%Y-%m-%d") or int(row["hm"]) != t.hour:
            misplaced += 1
        ms = int(t.timestamp() * 1000) if t.tzinfo else int(
            (t - t.__class__(1970, 1, 1)).total_seconds() * 1000
        )
        bids.append([row["auction"], row["bidder"], row["price"], ms])
    print(
        json.dumps(
            {
                "rows": table.num_rows,
                "partitions": sorted(partitions),
                "misplaced": misplaced,
                "without_success": without_success,
                "bids": bids,
            }
        )
    )


if __name__ == "__main__":
    main()
