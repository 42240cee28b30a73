#!/usr/bin/env bash
# Real brokers on loopback for Eddy's connector tests and for anyone trying the connectors:
# RabbitMQ (AMQP 0.9.1), NATS with JetStream, Mosquitto (MQTT) and tansu (a Kafka-protocol
# broker), and a second NATS server and a second Mosquitto that take only TLS and a password
# (nats_tls, mosquitto_tls). No init
# system is assumed: each broker is started by hand, listening on 127.0.0.1 only, with its
# data under $EDDY_BROKERS_DIR (default /tmp/eddy-brokers).
#
# TLS: a test CA and a server certificate for IP 127.0.0.1 (not for "localhost", so a client
# that connects by that name must refuse it) are made with openssl once, in $DIR/tls: ca.pem,
# server.pem, server-key.pem; the TLS servers' user is `eddy`, its password is in
# $DIR/tls/nats-password (made at random once; clients read it with password_file=).
#
#   bash scripts/brokers.sh up              install what is missing, start them all, wait until
#                                           each accepts connections (idempotent)
#   bash scripts/brokers.sh down            stop them all
#   bash scripts/brokers.sh restart NAME    stop and start one (rabbitmq, nats, nats_tls, mosquitto, mosquitto_tls, kafka),
#                                           keeping its data: what the restart tests use
#   bash scripts/brokers.sh stop NAME       stop one
#   bash scripts/brokers.sh start NAME      start one
#   bash scripts/brokers.sh status          which are up
#
# Ports (override with the variables): AMQP 5672 (EDDY_AMQP_PORT), NATS 4222 (EDDY_NATS_PORT),
# NATS with TLS and a password 4223 (EDDY_NATS_TLS_PORT), MQTT 1883 (EDDY_MQTT_PORT), MQTT with
# TLS and a password 8883 (EDDY_MQTT_TLS_PORT), Kafka 9092 (EDDY_KAFKA_PORT).
#
# Installs: Debian packages rabbitmq-server, nats-server, mosquitto (apt-get); tansu 0.6.0 from
# crates.io (cargo install --features dynostore,libsql, into target/tools; built once, about
# 15-20 min on 2 cores, less with EDDY_TANSU_PROFILE=debug; its SQLite store keeps topics
# across restarts); the Python
# clients the tests publish and consume with (pika, paho-mqtt, nats-py, kafka-python) from PyPI.
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
DIR="${EDDY_BROKERS_DIR:-/tmp/eddy-brokers}"
AMQP_PORT="${EDDY_AMQP_PORT:-5672}"
NATS_PORT="${EDDY_NATS_PORT:-4222}"
NATS_TLS_PORT="${EDDY_NATS_TLS_PORT:-4223}"
TLS="$DIR/tls"
MQTT_PORT="${EDDY_MQTT_PORT:-1883}"
MQTT_TLS_PORT="${EDDY_MQTT_TLS_PORT:-8883}"
KAFKA_PORT="${EDDY_KAFKA_PORT:-9092}"
TANSU_VERSION="0.6.0"
TANSU_FEATURES="dynostore,libsql"
TOOLS="$ROOT/target/tools"
TANSU="$TOOLS/bin/tansu"
PYTHON="${PYTHON:-python3}"
# Python clients, pinned: the tests talk to the brokers through them.
PY_CLIENTS=(pika==1.3.2 paho-mqtt==2.1.0 nats-py==2.11.0 kafka-python==2.2.15)

log() { echo "brokers.sh: $*" >&2; }

listening() { # port -> 0 when something accepts connections on 127.0.0.1:port
    "$PYTHON" - "$1" <<'PY' 2>/dev/null
import socket, sys
s = socket.socket()
s.settimeout(0.5)
sys.exit(0 if s.connect_ex(("127.0.0.1", int(sys.argv[1]))) == 0 else 1)
PY
}

wait_port() { # name port seconds
    local name=$1 port=$2 seconds=$3 i
    for ((i = 0; i < seconds * 10; i++)); do
        if listening "$port"; then return 0; fi
        sleep 0.1
    done
    log "$name did not start listening on 127.0.0.1:$port within ${seconds}s; its log: $DIR/$name.log"
    tail -n 30 "$DIR/$name.log" >&2 || true
    return 1
}

wait_closed() { # name port seconds
    local name=$1 port=$2 seconds=$3 i
    for ((i = 0; i < seconds * 10; i++)); do
        if ! listening "$port"; then return 0; fi
        sleep 0.1
    done
    log "$name still listens on $port after ${seconds}s"
    return 1
}

install_debian() {
    local missing=()
    command -v rabbitmq-server >/dev/null || missing+=(rabbitmq-server)
    command -v nats-server >/dev/null || missing+=(nats-server)
    command -v mosquitto >/dev/null || missing+=(mosquitto)
    command -v openssl >/dev/null || missing+=(openssl)
    if ((${#missing[@]})); then
        log "installing Debian packages: ${missing[*]}"
        export DEBIAN_FRONTEND=noninteractive
        apt-get update -qq
        apt-get install -y -qq "${missing[@]}" >/dev/null
        # Without an init system the packages start nothing (and this script never stops a
        # process it did not start: each broker it starts is stopped by its pid file).
    fi
}

install_tansu() {
    # The default build has no storage engine but `null`: libsql brings `sqlite://` (durable,
    # what start_kafka uses), dynostore `memory://` and `s3://`. The features are recorded
    # beside the binary, since `tansu --version` does not show them.
    if [ -x "$TANSU" ] && "$TANSU" --version 2>/dev/null | grep -q "$TANSU_VERSION" &&
        [ "$(cat "$TANSU.features" 2>/dev/null)" = "$TANSU_FEATURES" ]; then
        return 0
    fi
    # EDDY_TANSU_PROFILE=debug builds it unoptimised: minutes faster, and fast enough for the
    # tests (CI uses it); the connector benchmark wants the release build (the default).
    local profile=()
    [ "${EDDY_TANSU_PROFILE:-release}" = debug ] && profile=(--debug)
    log "building tansu $TANSU_VERSION (a Kafka-protocol broker, features $TANSU_FEATURES, ${EDDY_TANSU_PROFILE:-release}) from crates.io into $TOOLS"
    CARGO_TARGET_DIR="$ROOT/target/tools-build" \
        cargo install --quiet --locked --force "${profile[@]}" tansu --version "$TANSU_VERSION" \
        --features "$TANSU_FEATURES" --root "$TOOLS"
    echo "$TANSU_FEATURES" >"$TANSU.features"
    rm -rf "$ROOT/target/tools-build"
}

install_python_clients() {
    if ! "$PYTHON" -c 'import pika, paho.mqtt, nats, kafka' 2>/dev/null; then
        log "installing Python clients: ${PY_CLIENTS[*]}"
        "$PYTHON" -m pip install --quiet --disable-pip-version-check "${PY_CLIENTS[@]}"
    fi
}

rabbitmq_env() {
    export RABBITMQ_NODENAME="eddy@localhost"
    export RABBITMQ_NODE_IP_ADDRESS=127.0.0.1
    export RABBITMQ_NODE_PORT="$AMQP_PORT"
    export RABBITMQ_DIST_PORT=$((AMQP_PORT + 20000))
    export ERL_EPMD_ADDRESS=127.0.0.1
    export RABBITMQ_MNESIA_BASE="$DIR/rabbitmq/mnesia"
    export RABBITMQ_LOG_BASE="$DIR/rabbitmq/log"
    export RABBITMQ_PID_FILE="$DIR/rabbitmq/pid"
    export RABBITMQ_ENABLED_PLUGINS_FILE="$DIR/rabbitmq/enabled_plugins"
    export RABBITMQ_CONFIG_FILE="$DIR/rabbitmq/rabbitmq"
    export HOME="$DIR/rabbitmq"
}

start_rabbitmq() {
    if listening "$AMQP_PORT"; then return 0; fi
    mkdir -p "$DIR/rabbitmq/log"
    [ -f "$DIR/rabbitmq/enabled_plugins" ] || echo "[]." >"$DIR/rabbitmq/enabled_plugins"
    # A guest user that may connect from loopback (the default), nothing else to configure.
    [ -f "$DIR/rabbitmq/rabbitmq.conf" ] || echo "loopback_users.guest = true" >"$DIR/rabbitmq/rabbitmq.conf"
    chown -R rabbitmq:rabbitmq "$DIR/rabbitmq" 2>/dev/null || true
    (
        rabbitmq_env
        # The Debian wrapper runs the server as the rabbitmq user; -detached returns at once,
        # and the listener opens once the node has booted (about 5-10 s).
        rabbitmq-server -detached >"$DIR/rabbitmq.log" 2>&1
    ) || { log "RabbitMQ did not start; its log: $DIR/rabbitmq.log"; tail -n 30 "$DIR/rabbitmq.log" >&2; return 1; }
    cp /dev/null "$DIR/rabbitmq.log"
    ln -sf "$DIR/rabbitmq/log/eddy@localhost.log" "$DIR/rabbitmq.log"
    wait_port rabbitmq "$AMQP_PORT" 60
}

stop_rabbitmq() {
    # SIGTERM shuts the node down cleanly (queues and messages persisted).
    stop_pidfile rabbitmq "$DIR/rabbitmq/pid" "$AMQP_PORT"
}

start_nats() {
    if listening "$NATS_PORT"; then return 0; fi
    mkdir -p "$DIR/nats"
    nats-server -js -a 127.0.0.1 -p "$NATS_PORT" -sd "$DIR/nats" -P "$DIR/nats.pid" \
        -l "$DIR/nats.log" &
    disown
    wait_port nats "$NATS_PORT" 20
}

stop_pidfile() { # name pidfile port
    local name=$1 pidfile=$2 port=$3
    if [ -f "$pidfile" ]; then
        kill "$(cat "$pidfile")" 2>/dev/null || true
        wait_closed "$name" "$port" 20 || kill -9 "$(cat "$pidfile")" 2>/dev/null || true
        rm -f "$pidfile"
    fi
}

stop_nats() { stop_pidfile nats "$DIR/nats.pid" "$NATS_PORT"; }

make_certs() { # a test CA and a server certificate for 127.0.0.1, once
    if [ -f "$TLS/server.pem" ]; then return 0; fi
    mkdir -p "$TLS"
    (
        cd "$TLS"
        openssl req -x509 -newkey rsa:2048 -nodes -days 3650 -subj "/CN=Eddy test CA" \
            -keyout ca-key.pem -out ca.pem 2>/dev/null
        openssl req -newkey rsa:2048 -nodes -subj "/CN=127.0.0.1" \
            -keyout server-key.pem -out server.csr 2>/dev/null
        printf 'subjectAltName=IP:127.0.0.1\n' >server.ext
        openssl x509 -req -in server.csr -CA ca.pem -CAkey ca-key.pem -CAcreateserial \
            -days 3650 -extfile server.ext -out server.pem 2>/dev/null
        openssl rand -hex 16 >nats-password
        chmod 600 ca-key.pem server-key.pem nats-password
    )
}

start_nats_tls() {
    if listening "$NATS_TLS_PORT"; then return 0; fi
    make_certs
    mkdir -p "$DIR/nats-tls"
    # The password goes in the server's configuration file, never on a command line.
    cat >"$DIR/nats-tls.conf" <<CONF
listen: 127.0.0.1:$NATS_TLS_PORT
server_name: eddy_tls
jetstream { store_dir: "$DIR/nats-tls" }
tls { cert_file: "$TLS/server.pem", key_file: "$TLS/server-key.pem" }
authorization { users = [ { user: eddy, password: "$(cat "$TLS/nats-password")" } ] }
pid_file: "$DIR/nats-tls.pid"
log_file: "$DIR/nats_tls.log"
CONF
    chmod 600 "$DIR/nats-tls.conf"
    nats-server -c "$DIR/nats-tls.conf" &
    disown
    wait_port nats_tls "$NATS_TLS_PORT" 20
}

stop_nats_tls() { stop_pidfile nats_tls "$DIR/nats-tls.pid" "$NATS_TLS_PORT"; }

start_mosquitto() {
    if listening "$MQTT_PORT"; then return 0; fi
    mkdir -p "$DIR/mosquitto"
    cat >"$DIR/mosquitto.conf" <<CONF
listener $MQTT_PORT 127.0.0.1
allow_anonymous true
persistence true
persistence_location $DIR/mosquitto/
autosave_interval 1
max_queued_messages 100000
pid_file $DIR/mosquitto.pid
log_dest file $DIR/mosquitto.log
user root
CONF
    mosquitto -c "$DIR/mosquitto.conf" -d
    wait_port mosquitto "$MQTT_PORT" 20
}

stop_mosquitto() { stop_pidfile mosquitto "$DIR/mosquitto.pid" "$MQTT_PORT"; }

start_mosquitto_tls() {
    if listening "$MQTT_TLS_PORT"; then return 0; fi
    make_certs
    mkdir -p "$DIR/mosquitto-tls"
    # mosquitto_passwd takes the password from its argument; it hashes it into the file.
    mosquitto_passwd -c -b "$DIR/mosquitto-tls/passwords" eddy "$(cat "$TLS/nats-password")"
    cat >"$DIR/mosquitto-tls.conf" <<CONF
listener $MQTT_TLS_PORT 127.0.0.1
allow_anonymous false
password_file $DIR/mosquitto-tls/passwords
cafile $TLS/ca.pem
certfile $TLS/server.pem
keyfile $TLS/server-key.pem
persistence true
persistence_location $DIR/mosquitto-tls/
pid_file $DIR/mosquitto-tls.pid
log_dest file $DIR/mosquitto_tls.log
user root
CONF
    mosquitto -c "$DIR/mosquitto-tls.conf" -d
    wait_port mosquitto_tls "$MQTT_TLS_PORT" 20
}

stop_mosquitto_tls() { stop_pidfile mosquitto_tls "$DIR/mosquitto-tls.pid" "$MQTT_TLS_PORT"; }

start_kafka() {
    if listening "$KAFKA_PORT"; then return 0; fi
    mkdir -p "$DIR/kafka"
    # The SQLite storage engine (libsql): topics, records and the consumer groups' committed
    # offsets survive a restart. tansu opens `sqlite://NAME` relative to its working directory.
    (
        cd "$DIR/kafka"
        exec "$TANSU" broker \
            --kafka-listener-url "tcp://127.0.0.1:$KAFKA_PORT" \
            --kafka-advertised-listener-url "tcp://127.0.0.1:$KAFKA_PORT" \
            --storage-engine "sqlite://tansu.db"
    ) >"$DIR/kafka.log" 2>&1 &
    echo $! >"$DIR/kafka.pid"
    disown
    wait_port kafka "$KAFKA_PORT" 30
}

stop_kafka() {
    # SIGKILL, not SIGTERM: during its graceful shutdown (about 2 s) tansu keeps answering on
    # open connections with UNKNOWN_SERVER_ERROR, which clients do not retry, so records
    # published then are lost to the client. Killed at once, it just drops the connections,
    # which clients retry; its SQLite store survives a kill (what it acknowledged is committed).
    if [ -f "$DIR/kafka.pid" ]; then
        kill -9 "$(cat "$DIR/kafka.pid")" 2>/dev/null || true
        wait_closed kafka "$KAFKA_PORT" 20
        rm -f "$DIR/kafka.pid"
    fi
}

port_of() {
    case "$1" in
    rabbitmq) echo "$AMQP_PORT" ;;
    nats) echo "$NATS_PORT" ;;
    nats_tls) echo "$NATS_TLS_PORT" ;;
    mosquitto) echo "$MQTT_PORT" ;;
    mosquitto_tls) echo "$MQTT_TLS_PORT" ;;
    kafka) echo "$KAFKA_PORT" ;;
    *) log "unknown broker '$1': rabbitmq, nats, nats_tls, mosquitto, mosquitto_tls or kafka"; exit 2 ;;
    esac
}

BROKERS=(rabbitmq nats nats_tls mosquitto mosquitto_tls kafka)

case "${1:-}" in
up)
    mkdir -p "$DIR"
    install_debian
    install_python_clients
    install_tansu
    for b in "${BROKERS[@]}"; do "start_$b"; done
    log "up: amqp://127.0.0.1:$AMQP_PORT nats://127.0.0.1:$NATS_PORT tls://127.0.0.1:$NATS_TLS_PORT mqtt://127.0.0.1:$MQTT_PORT mqtts://127.0.0.1:$MQTT_TLS_PORT kafka://127.0.0.1:$KAFKA_PORT (data and logs in $DIR)"
    ;;
down)
    for b in "${BROKERS[@]}"; do "stop_$b"; done
    log "down"
    ;;
start | stop)
    port_of "${2:-}" >/dev/null
    "${1}_$2"
    ;;
restart)
    port_of "${2:-}" >/dev/null
    "stop_$2"
    "start_$2"
    ;;
status)
    for b in "${BROKERS[@]}"; do
        if listening "$(port_of "$b")"; then echo "$b up on 127.0.0.1:$(port_of "$b")"; else echo "$b down"; fi
    done
    ;;
*)
    sed -n '2,20p' "$0" | sed 's/^# \{0,1\}//'
    exit 2
    ;;
esac
