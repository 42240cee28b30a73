#!/usr/bin/env bash
# Installs Apache Flink (local mode, via PyFlink's wheels from PyPI) into
# target/flink-venv for the side-by-side benchmark (`eddy-benches --flink`).
#
# The `apache-flink-libraries` wheel carries Flink's runtime jars (lib/ and
# opt/), so nothing is fetched when a query runs. `apache-flink` is installed
# with --no-deps (its declared deps pin numpy/pandas/pyarrow/apache-beam, none
# of which the SQL-only path needs); only the small pure-python modules that
# `import pyflink.table` needs are added. Java 17 must be on PATH.
#
# Idempotent: re-running with the venv already complete does nothing.
set -euo pipefail

FLINK_VERSION="${FLINK_VERSION:-2.3.0}"
ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
VENV="${FLINK_VENV:-$ROOT/target/flink-venv}"
PYTHON="${PYTHON:-python3}"
# Pure-python modules PyFlink imports when a TableEnvironment is created.
DEPS=(py4j==0.10.9.7 "cloudpickle>=2.2.0" "python-dateutil>=2.8.0,<3" "pytz>=2018.3" six typing_extensions "ruamel.yaml>=0.18.4")

if ! command -v java >/dev/null 2>&1; then
    echo "install.sh: java is not on PATH; Flink $FLINK_VERSION needs Java 17 (apt-get install openjdk-17-jre-headless)" >&2
    exit 1
fi

check() {
    "$VENV/bin/python" - "$FLINK_VERSION" <<'PY' >/dev/null 2>&1
import sys, importlib.metadata as md
assert md.version("apache-flink") == sys.argv[1]
assert md.version("apache-flink-libraries") == sys.argv[1]
from pyflink.table import EnvironmentSettings, TableEnvironment  # noqa: F401
from ruamel.yaml import YAML  # noqa: F401  (read when the gateway JVM starts)
PY
}

if [ -x "$VENV/bin/python" ] && check; then
    echo "install.sh: Flink $FLINK_VERSION already installed in $VENV (nothing to do)"
    exit 0
fi

if [ ! -x "$VENV/bin/python" ]; then
    echo "install.sh: creating venv $VENV"
    "$PYTHON" -m venv "$VENV"
fi
echo "install.sh: installing apache-flink-libraries==$FLINK_VERSION apache-flink==$FLINK_VERSION (--no-deps)"
"$VENV/bin/pip" install --quiet --disable-pip-version-check --no-deps \
    "apache-flink-libraries==$FLINK_VERSION" "apache-flink==$FLINK_VERSION"
echo "install.sh: installing import-time deps: ${DEPS[*]}"
"$VENV/bin/pip" install --quiet --disable-pip-version-check --no-deps "${DEPS[@]}"

if ! check; then
    echo "install.sh: Flink installed but 'import pyflink.table' fails; see:" >&2
    "$VENV/bin/python" -c 'from pyflink.table import TableEnvironment' >&2 || true
    exit 1
fi
echo "install.sh: Flink $FLINK_VERSION ready: $VENV/bin/python ($(java -version 2>&1 | head -1))"
