#!/usr/bin/env bash
# Runs Eddy's tests: every crate's unit, integration and doc tests (among them a tiny run of the
# benchmark runner, which checks the engine and the hand loops agree; timings are not checked).
# The Parquet read-back tests use pyarrow (installed from PyPI if missing), the graph test
# Graphviz (from Debian's packages if missing); the connector tests
# talk to real brokers on loopback, which scripts/brokers.sh installs (Debian packages, tansu
# from crates.io, the Python clients) and starts if they are not running.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! python3 -c 'import pyarrow' 2>/dev/null; then
  echo "installing pyarrow (to read Parquet back in the tests)"
  python3 -m pip install --quiet --disable-pip-version-check pyarrow
fi

if ! command -v dot >/dev/null; then
  echo "installing graphviz (eddy graph --svg renders with its dot)"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq graphviz >/dev/null
fi

bash scripts/brokers.sh up

cargo test --workspace
