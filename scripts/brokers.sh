#!/usr/bin/env bash
# Real brokers on loopback for Eddy's connector tests and for anyone trying the connectors. No
# init system is assumed: each broker is started by hand, listening on 127.0.0.1 only, with its
# data and log under $EDDY_BROKERS_DIR (default /tmp/eddy-brokers), and stopped by its pid file
# only (never by name: a RabbitMQ or Mosquitto of your own is left alone).
#
#   name            port  what                                          variable
#   rabbitmq        5672  RabbitMQ, AMQP 0.9.1, user guest              EDDY_AMQP_PORT
#   rabbitmq_tls    5671  a second RabbitMQ node, AMQPS only: a         EDDY_AMQPS_PORT
#                         password, or EXTERNAL (client certificate)
#   nats            4222  NATS with JetStream, no auth                  EDDY_NATS_PORT
#   nats_tls        4223  NATS, TLS only: a password or an NKey         EDDY_NATS_TLS_PORT
#   nats_mtls       4224  NATS, mutual TLS and a token                  EDDY_NATS_MTLS_PORT
#   nats_jwt        4225  NATS, TLS, operator mode: .creds files        EDDY_NATS_JWT_PORT
#   mosquitto       1883  Mosquitto (MQTT 3.1.1), anonymous             EDDY_MQTT_PORT
#   mosquitto_tls   8883  Mosquitto, TLS only, a password;              EDDY_MQTT_TLS_PORT
#                   8884  and mutual TLS, the certificate's CN the user EDDY_MQTT_MTLS_PORT
#   kafka           9092  tansu (a Kafka-protocol broker), no auth      EDDY_KAFKA_PORT
#   kafka_tls       9093  mutual TLS (stunnel in front of a tansu)      EDDY_KAFKA_TLS_PORT
#   kafka_sasl      9094  SASL SCRAM-SHA-256/512 (tansu)                EDDY_KAFKA_SASL_PORT
#   kafka_sasl_tls  9095  SCRAM over TLS (stunnel in front of a tansu)  EDDY_KAFKA_SASL_TLS_PORT
#
# tansu 0.6.0 does SASL (SCRAM; it offers no PLAIN) but not TLS, so stunnel terminates TLS in
# front of a tansu listening on that port + 10000 and advertising the stunnel port. The TLS
# RabbitMQ node's distribution port is 25671 (the plain one's 25672).
#
# TLS material, made once in $DIR/tls (openssl, and scripts/nats-auth.py for NATS): a test CA
# (ca.pem); a server certificate for IP 127.0.0.1 only (server.pem, server-key.pem: not for
# "localhost", so a client that connects by that name must refuse it), and one for the same IP
# that expired in 2020 (expired.pem, expired-key.pem); a client certificate with CN eddy
# (client.pem, client-key.pem); a CA no server trusts and a client certificate it signed
# (rogue-ca.pem, rogue-client.pem, rogue-client-key.pem); the password of user `eddy` on every
# server that takes one (password: random, clients read it with password_file=); a user NKey
# (nkey.seed), a token (token), and an operator, accounts and a user for operator mode
# (operator.jwt, account.jwt, system.jwt, user.creds).
#
#   bash scripts/brokers.sh up              install what is missing, start them all, wait until
#                                           each accepts connections (idempotent)
#   bash scripts/brokers.sh down            stop them all
#   bash scripts/brokers.sh restart NAME    stop and start one, keeping its data: what the
#                                           restart tests use
#   bash scripts/brokers.sh stop NAME       stop one
#   bash scripts/brokers.sh start NAME      start one
#   bash scripts/brokers.sh status          which are up
#   bash scripts/brokers.sh certs           make the TLS material only (above)
#
# Installs: Debian packages rabbitmq-server, nats-server, mosquitto, stunnel4, openssl
# (apt-get); tansu 0.6.0 from crates.io (cargo install --features dynostore,libsql, into
# target/tools; built once, about 15-20 min on 2 cores, less with EDDY_TANSU_PROFILE=debug; its
# SQLite store keeps topics across restarts); from PyPI the Python clients the tests publish and
# consume with (pika, paho-mqtt, nats-py, kafka-python) and cryptography (for the NATS keys).
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
DIR="${EDDY_BROKERS_DIR:-/tmp/eddy-brokers}"
AMQP_PORT="${EDDY_AMQP_PORT:-5672}"
NATS_PORT="${EDDY_NATS_PORT:-4222}"
NATS_TLS_PORT="${EDDY_NATS_TLS_PORT:-4223}"
NATS_MTLS_PORT="${EDDY_NATS_MTLS_PORT:-4224}"
NATS_JWT_PORT="${EDDY_NATS_JWT_PORT:-4225}"
TLS="$DIR/tls"
MQTT_PORT="${EDDY_MQTT_PORT:-1883}"
MQTT_TLS_PORT="${EDDY_MQTT_TLS_PORT:-8883}"
MQTT_MTLS_PORT="${EDDY_MQTT_MTLS_PORT:-8884}"
KAFKA_PORT="${EDDY_KAFKA_PORT:-9092}"
AMQPS_PORT="${EDDY_AMQPS_PORT:-5671}"
KAFKA_TLS_PORT="${EDDY_KAFKA_TLS_PORT:-9093}"
KAFKA_SASL_PORT="${EDDY_KAFKA_SASL_PORT:-9094}"
KAFKA_SASL_TLS_PORT="${EDDY_KAFKA_SASL_TLS_PORT:-9095}"
TANSU_VERSION="0.6.0"
TANSU_FEATURES="dynostore,libsql"
TOOLS="$ROOT/target/tools"
TANSU="$TOOLS/bin/tansu"
PYTHON="${PYTHON:-python3}"
# Python clients, pinned: the tests talk to the brokers through them.
PY_CLIENTS=(pika==1.3.2 paho-mqtt==2.1.0 nats-py==2.11.0 kafka-python==2.2.15 cryptography==48.0.0)
# cryptography: scripts/nats-auth.py makes the NATS test servers' NKeys and JWTs with it.

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
    command -v stunnel >/dev/null || missing+=(stunnel4)
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
    if ! "$PYTHON" -c 'import pika, paho.mqtt, nats, kafka, cryptography' 2>/dev/null; then
        log "installing Python clients: ${PY_CLIENTS[*]}"
        "$PYTHON" -m pip install --quiet --disable-pip-version-check "${PY_CLIENTS[@]}"
    fi
}

rabbitmq_node_env() { # node files-dir amqp-port: what rabbitmq-server reads, for one node of ours
    export RABBITMQ_NODENAME="$1@localhost"
    export RABBITMQ_DIST_PORT=$(($3 + 20000))
    export ERL_EPMD_ADDRESS=127.0.0.1
    export RABBITMQ_MNESIA_BASE="$2/mnesia"
    export RABBITMQ_LOG_BASE="$2/log"
    export RABBITMQ_PID_FILE="$2/pid"
    export RABBITMQ_ENABLED_PLUGINS_FILE="$2/enabled_plugins"
    export RABBITMQ_CONFIG_FILE="$2/rabbitmq"
    export HOME="$2"
}

rabbitmq_env() {
    rabbitmq_node_env eddy "$DIR/rabbitmq" "$AMQP_PORT"
    export RABBITMQ_NODE_IP_ADDRESS=127.0.0.1
    export RABBITMQ_NODE_PORT="$AMQP_PORT"
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

# rabbitmq_tls: a second RabbitMQ node (eddy_tls@localhost) beside the plain one, with its own
# files under $DIR/rabbitmq-tls and its own distribution port. It takes AMQP over TLS only, on
# 127.0.0.1:$AMQPS_PORT, with make_certs's server certificate; a client certificate, when one
# is sent, must be signed by the test CA (verify_peer), but none is required, so that password
# users connect without one. Logins: PLAIN and AMQPLAIN (user eddy, the password in
# $TLS/password), and EXTERNAL (plugin rabbitmq_auth_mechanism_ssl: the client certificate's CN
# is the user, eddy for client.pem). No guest user.
rabbitmq_tls_env() {
    rabbitmq_node_env eddy_tls "$DIR/rabbitmq-tls" "$AMQPS_PORT"
    # The distribution port on loopback too.
    export RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS="-kernel inet_dist_use_interface {127,0,0,1}"
}

start_rabbitmq_tls() {
    if listening "$AMQPS_PORT"; then return 0; fi
    make_certs
    local d="$DIR/rabbitmq-tls"
    mkdir -p "$d/log"
    # Copies the rabbitmq user may read (the server runs as that user; $TLS's keys are root's).
    cp "$TLS/ca.pem" "$TLS/server.pem" "$TLS/server-key.pem" "$d/"
    chmod 600 "$d/server-key.pem"
    echo "[rabbitmq_auth_mechanism_ssl]." >"$d/enabled_plugins"
    # The password goes in this file (mode 600), never on a command line. RabbitMQ makes the
    # default user when its database is new, so a changed configuration starts a new database.
    local conf
    conf="listeners.tcp = none
listeners.ssl.1 = 127.0.0.1:$AMQPS_PORT
ssl_options.cacertfile = $d/ca.pem
ssl_options.certfile = $d/server.pem
ssl_options.keyfile = $d/server-key.pem
ssl_options.verify = verify_peer
ssl_options.fail_if_no_peer_cert = false
auth_mechanisms.1 = PLAIN
auth_mechanisms.2 = AMQPLAIN
auth_mechanisms.3 = EXTERNAL
ssl_cert_login_from = common_name
default_user = eddy
default_pass = $(cat "$TLS/password")"
    if [ "$(cat "$d/rabbitmq.conf" 2>/dev/null)" != "$conf" ]; then
        rm -rf "$d/mnesia"
        (umask 077 && printf '%s\n' "$conf" >"$d/rabbitmq.conf")
    fi
    chmod 600 "$d/rabbitmq.conf"
    chown -R rabbitmq:rabbitmq "$d" 2>/dev/null || true
    rm -f "$DIR/rabbitmq_tls.log" # the link to the last run's log, which it would truncate
    (
        rabbitmq_tls_env
        rabbitmq-server -detached >"$DIR/rabbitmq_tls.log" 2>&1
    ) || { log "RabbitMQ (TLS) did not start; its log: $DIR/rabbitmq_tls.log"; tail -n 30 "$DIR/rabbitmq_tls.log" >&2; return 1; }
    ln -sf "$d/log/eddy_tls@localhost.log" "$DIR/rabbitmq_tls.log"
    wait_port rabbitmq_tls "$AMQPS_PORT" 60
}

stop_rabbitmq_tls() { stop_pidfile rabbitmq_tls "$DIR/rabbitmq-tls/pid" "$AMQPS_PORT"; }

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

# The version of what make_certs makes, written last into $TLS/complete: a directory from an
# older version of this script (or an interrupted run) is made again from scratch.
CERTS_VERSION=4

certs_current() { [ "$(cat "$TLS/complete" 2>/dev/null)" = "$CERTS_VERSION" ]; }

make_certs() { # a test CA, server and client certificates, a rogue CA, a password; once
    if certs_current; then return 0; fi
    rm -rf "$TLS"
    mkdir -p "$TLS"
    (
        cd "$TLS"
        ca() { # name subject
            openssl req -x509 -newkey rsa:2048 -nodes -days 3650 -subj "/CN=$2" \
                -keyout "$1-key.pem" -out "$1.pem" 2>/dev/null
        }
        leaf() { # name CA subject extensions
            openssl req -newkey rsa:2048 -nodes -subj "/CN=$3" \
                -keyout "$1-key.pem" -out "$1.csr" 2>/dev/null
            printf '%s\n' "$4" >"$1.ext"
            openssl x509 -req -in "$1.csr" -CA "$2.pem" -CAkey "$2-key.pem" -CAcreateserial \
                -days 3650 -extfile "$1.ext" -out "$1.pem" 2>/dev/null
            rm -f "$1.csr" "$1.ext"
        }
        expired() { # name CA subject extensions: a certificate valid only on 1 January 2020
            openssl req -newkey rsa:2048 -nodes -subj "/CN=$3" \
                -keyout "$1-key.pem" -out "$1.csr" 2>/dev/null
            printf '%s\n' "$4" >"$1.ext"
            mkdir -p ca-db
            : >ca-db/index.txt
            echo 01 >ca-db/serial
            printf '[ca]\ndefault_ca=test\n[test]\ndatabase=ca-db/index.txt\nserial=ca-db/serial\nnew_certs_dir=ca-db\ndefault_md=sha256\npolicy=any\n[any]\ncommonName=supplied\n' >ca.cnf
            openssl ca -batch -config ca.cnf -cert "$2.pem" -keyfile "$2-key.pem" -in "$1.csr" \
                -out "$1.pem" -notext -extfile "$1.ext" \
                -startdate 20200101000000Z -enddate 20200102000000Z 2>/dev/null
            rm -rf "$1.csr" "$1.ext" ca.cnf ca-db
        }
        ca ca "Eddy test CA"
        leaf server ca 127.0.0.1 "subjectAltName=IP:127.0.0.1"
        # The same host, but expired: clients must refuse it.
        expired expired ca 127.0.0.1 "subjectAltName=IP:127.0.0.1"
        leaf client ca eddy "extendedKeyUsage=clientAuth"
        # A CA no server trusts, and a client certificate it signed: servers must refuse it.
        ca rogue-ca "Rogue CA"
        leaf rogue-client rogue-ca eddy "extendedKeyUsage=clientAuth"
        openssl rand -hex 16 >password
        chmod 600 ./*-key.pem password
        "$PYTHON" "$ROOT/scripts/nats-auth.py" .
        echo "$CERTS_VERSION" >complete
    )
}

start_nats_secure() { # name port config-lines: a nats-server with TLS and its own config file
    local name=$1 port=$2 extra=$3
    if listening "$port"; then return 0; fi
    mkdir -p "$DIR/$name"
    # Secrets go in the server's configuration file, never on a command line.
    cat >"$DIR/$name.conf" <<CONF
listen: 127.0.0.1:$port
server_name: eddy_$name
jetstream { store_dir: "$DIR/$name" }
pid_file: "$DIR/$name.pid"
log_file: "$DIR/$name.log"
$extra
CONF
    chmod 600 "$DIR/$name.conf"
    nats-server -c "$DIR/$name.conf" &
    disown
    wait_port "$name" "$port" 20
}

start_nats_tls() { # TLS; user eddy with a password, or a user NKey
    make_certs # before the arguments below read its files
    start_nats_secure nats_tls "$NATS_TLS_PORT" "tls { cert_file: \"$TLS/server.pem\", key_file: \"$TLS/server-key.pem\" }
authorization { users = [
  { user: eddy, password: \"$(cat "$TLS/password")\" }
  { nkey: $(cat "$TLS/nkey.pub") }
] }"
}

start_nats_mtls() { # TLS with a client certificate required, and a token
    make_certs # before the arguments below read its files
    start_nats_secure nats_mtls "$NATS_MTLS_PORT" "tls { cert_file: \"$TLS/server.pem\", key_file: \"$TLS/server-key.pem\", ca_file: \"$TLS/ca.pem\", verify: true }
authorization { token: \"$(cat "$TLS/token")\" }"
}

start_nats_jwt() { # TLS; decentralised auth (an operator, an account, users with .creds files)
    make_certs # before the arguments below read its files
    start_nats_secure nats_jwt "$NATS_JWT_PORT" "tls { cert_file: \"$TLS/server.pem\", key_file: \"$TLS/server-key.pem\" }
operator: \"$TLS/operator.jwt\"
resolver: MEMORY
system_account: $(cat "$TLS/system.pub")
resolver_preload: {
  $(cat "$TLS/account.pub"): \"$(cat "$TLS/account.jwt")\"
  $(cat "$TLS/system.pub"): \"$(cat "$TLS/system.jwt")\"
}"
}

stop_nats_tls() { stop_pidfile nats_tls "$DIR/nats_tls.pid" "$NATS_TLS_PORT"; }
stop_nats_mtls() { stop_pidfile nats_mtls "$DIR/nats_mtls.pid" "$NATS_MTLS_PORT"; }
stop_nats_jwt() { stop_pidfile nats_jwt "$DIR/nats_jwt.pid" "$NATS_JWT_PORT"; }

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
    mosquitto_passwd -c -b "$DIR/mosquitto-tls/passwords" eddy "$(cat "$TLS/password")"
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
# Mutual TLS: a client certificate signed by the test CA is required, and its CN is the user.
listener $MQTT_MTLS_PORT 127.0.0.1
cafile $TLS/ca.pem
certfile $TLS/server.pem
keyfile $TLS/server-key.pem
require_certificate true
use_identity_as_username true
CONF
    mosquitto -c "$DIR/mosquitto-tls.conf" -d
    wait_port mosquitto_tls "$MQTT_TLS_PORT" 20 && wait_port mosquitto_tls "$MQTT_MTLS_PORT" 20
}

stop_mosquitto_tls() { stop_pidfile mosquitto_tls "$DIR/mosquitto-tls.pid" "$MQTT_TLS_PORT"; }

run_tansu() { # name port advertised-port [tansu broker flags]: a tansu on 127.0.0.1:port
    # whose clients are sent to advertised-port (a TLS proxy's port, for the TLS brokers), with
    # its data in $DIR/name, its log in $DIR/name.log and its pid in $DIR/name.pid.
    local name=$1 port=$2 advertised=$3
    shift 3
    mkdir -p "$DIR/$name"
    # The SQLite storage engine (libsql): topics, records, the consumer groups' committed
    # offsets and the SCRAM credentials survive a restart. tansu opens `sqlite://NAME` relative
    # to its working directory.
    (
        cd "$DIR/$name"
        exec "$TANSU" broker "$@" \
            --kafka-listener-url "tcp://127.0.0.1:$port" \
            --kafka-advertised-listener-url "tcp://127.0.0.1:$advertised" \
            --storage-engine "sqlite://tansu.db"
    ) >"$DIR/$name.log" 2>&1 &
    echo $! >"$DIR/$name.pid"
    disown
    wait_port "$name" "$port" 30
}

stop_tansu() { # name port
    # SIGKILL, not SIGTERM: during its graceful shutdown (about 2 s) tansu keeps answering on
    # open connections with UNKNOWN_SERVER_ERROR, which clients do not retry, so records
    # published then are lost to the client. Killed at once, it just drops the connections,
    # which clients retry; its SQLite store survives a kill (what it acknowledged is committed).
    local name=$1 port=$2
    if [ -f "$DIR/$name.pid" ]; then
        kill -9 "$(cat "$DIR/$name.pid")" 2>/dev/null || true
        wait_closed "$name" "$port" 20
        rm -f "$DIR/$name.pid"
    fi
}

start_kafka() {
    if listening "$KAFKA_PORT"; then return 0; fi
    run_tansu kafka "$KAFKA_PORT" "$KAFKA_PORT"
}

stop_kafka() { stop_tansu kafka "$KAFKA_PORT"; }

# Kafka with TLS and SASL. tansu 0.6.0 does SASL (SCRAM-SHA-256 and -512 checked against the
# credentials in its SQLite store; it offers no PLAIN) but not TLS (its --cert/--key options
# are not wired to its listener), so stunnel terminates TLS in front of a tansu on an inner
# port (the outer port + 10000) that advertises the stunnel port, where clients then connect.
#   kafka_tls       9093 SSL with mutual TLS: stunnel requires a client certificate signed by
#                   ca.pem; the tansu behind it takes anyone
#   kafka_sasl      9094 SASL_PLAINTEXT: tansu --authentication, user eddy, SCRAM-SHA-256/512
#   kafka_sasl_tls  9095 SASL_SSL: stunnel (server certificate only) in front of a tansu like
#                   kafka_sasl's

scram_users() { # name port: the user eddy with the TLS password, for SCRAM-SHA-256 and -512,
    # in the store of tansu `name` (not running), made through a tansu on `port` without
    # --authentication; again when the password changed.
    local name=$1 port=$2 made="$DIR/$1/scram-users"
    local want
    want="$(sha256sum <"$TLS/password")"
    if [ "$(cat "$made" 2>/dev/null)" = "$want" ]; then return 0; fi
    run_tansu "$name" "$port" "$port"
    local mechanism
    for mechanism in scram256 scram512; do
        # `tansu user create` takes the password only as an argument: on loopback, for a
        # moment, a test password.
        "$TANSU" user create --broker "tcp://127.0.0.1:$port" --mechanism "$mechanism" \
            eddy "$(cat "$TLS/password")" >>"$DIR/$name.log" 2>&1 ||
            { log "cannot create the SCRAM user of $name; its log: $DIR/$name.log"; stop_tansu "$name" "$port"; return 1; }
    done
    stop_tansu "$name" "$port"
    echo "$want" >"$made"
}

start_stunnel() { # name port inner-port [stunnel service options]: TLS on 127.0.0.1:port,
    # forwarded to 127.0.0.1:inner-port, with the server certificate for 127.0.0.1
    local name=$1 port=$2 inner=$3
    shift 3
    make_certs
    {
        printf '%s\n' "foreground = no" "pid = $DIR/$name.pid" "output = $DIR/$name.log" \
            "[$name]" "accept = 127.0.0.1:$port" "connect = 127.0.0.1:$inner" \
            "cert = $TLS/server.pem" "key = $TLS/server-key.pem" "$@"
    } >"$DIR/$name.conf"
    chmod 600 "$DIR/$name.conf"
    # It puts itself in the background, once listening, and writes its pid file.
    stunnel "$DIR/$name.conf" >>"$DIR/$name.log" 2>&1 ||
        { log "stunnel $name did not start; its log: $DIR/$name.log"; tail -n 30 "$DIR/$name.log" >&2; return 1; }
    wait_port "$name" "$port" 10
}

start_kafka_tls() {
    listening "$((KAFKA_TLS_PORT + 10000))" ||
        run_tansu kafka_tls_broker "$((KAFKA_TLS_PORT + 10000))" "$KAFKA_TLS_PORT"
    listening "$KAFKA_TLS_PORT" ||
        start_stunnel kafka_tls "$KAFKA_TLS_PORT" "$((KAFKA_TLS_PORT + 10000))" \
            "CAfile = $TLS/ca.pem" "requireCert = yes" "verifyChain = yes"
}

stop_kafka_tls() {
    stop_pidfile kafka_tls "$DIR/kafka_tls.pid" "$KAFKA_TLS_PORT"
    stop_tansu kafka_tls_broker "$((KAFKA_TLS_PORT + 10000))"
}

start_kafka_sasl() {
    if listening "$KAFKA_SASL_PORT"; then return 0; fi
    make_certs
    scram_users kafka_sasl "$KAFKA_SASL_PORT"
    run_tansu kafka_sasl "$KAFKA_SASL_PORT" "$KAFKA_SASL_PORT" --authentication
}

stop_kafka_sasl() { stop_tansu kafka_sasl "$KAFKA_SASL_PORT"; }

start_kafka_sasl_tls() {
    local inner=$((KAFKA_SASL_TLS_PORT + 10000))
    if ! listening "$inner"; then
        make_certs
        scram_users kafka_sasl_tls_broker "$inner"
        run_tansu kafka_sasl_tls_broker "$inner" "$KAFKA_SASL_TLS_PORT" --authentication
    fi
    listening "$KAFKA_SASL_TLS_PORT" || start_stunnel kafka_sasl_tls "$KAFKA_SASL_TLS_PORT" "$inner"
}

stop_kafka_sasl_tls() {
    stop_pidfile kafka_sasl_tls "$DIR/kafka_sasl_tls.pid" "$KAFKA_SASL_TLS_PORT"
    stop_tansu kafka_sasl_tls_broker "$((KAFKA_SASL_TLS_PORT + 10000))"
}

port_of() {
    case "$1" in
    rabbitmq) echo "$AMQP_PORT" ;;
    nats) echo "$NATS_PORT" ;;
    nats_tls) echo "$NATS_TLS_PORT" ;;
    nats_mtls) echo "$NATS_MTLS_PORT" ;;
    nats_jwt) echo "$NATS_JWT_PORT" ;;
    mosquitto) echo "$MQTT_PORT" ;;
    mosquitto_tls) echo "$MQTT_TLS_PORT" ;;
    kafka) echo "$KAFKA_PORT" ;;
    rabbitmq_tls) echo "$AMQPS_PORT" ;;
    kafka_tls) echo "$KAFKA_TLS_PORT" ;;
    kafka_sasl) echo "$KAFKA_SASL_PORT" ;;
    kafka_sasl_tls) echo "$KAFKA_SASL_TLS_PORT" ;;
    *) log "unknown broker '$1': one of ${BROKERS[*]}"; exit 2 ;;
    esac
}

BROKERS=(rabbitmq rabbitmq_tls nats nats_tls nats_mtls nats_jwt mosquitto mosquitto_tls kafka kafka_tls kafka_sasl kafka_sasl_tls)

case "${1:-}" in
up)
    mkdir -p "$DIR"
    install_debian
    install_python_clients
    install_tansu
    if ! certs_current; then
        # Brokers of ours still serving older certificates would not be restarted below.
        for b in "${BROKERS[@]}"; do "stop_$b"; done
        make_certs
    fi
    for b in "${BROKERS[@]}"; do "start_$b"; done
    log "up: $(for b in "${BROKERS[@]}"; do printf '%s:%s ' "$b" "$(port_of "$b")"; done)(all on 127.0.0.1; data and logs in $DIR)"
    ;;
certs)
    make_certs
    log "certificates and credentials in $TLS"
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
    sed -n '2,/^set -euo/p' "$0" | sed '$d' | sed 's/^# \{0,1\}//'
    exit 2
    ;;
esac
