#!/usr/bin/env bash
# Starts the demo pipeline: a Consul dev agent, featuresvc, auctionsvc, the
# rankers feed/v1, feed/v2 and stories/v1, routersvc and the gateway.
# Ctrl-C or SIGTERM stops everything (services first, Consul last).
set -euo pipefail
cd "$(dirname "$0")/.."

CONSUL_ADDR=${CONSUL_ADDR:-127.0.0.1:8500}
ROUTER_ADDR=${ROUTER_ADDR:-127.0.0.1:9090}
GATEWAY_ADDR=${GATEWAY_ADDR:-127.0.0.1:8080}
KAFKA_PORT=${KAFKA_PORT:-9092}
LOG_DIR=${LOG_DIR:-.run}
STATE_FILE=${STATE_FILE:-.data/router.db}
SNAPSHOTS=${SNAPSHOTS:-.data/snapshots}
EDGE_DIR=${EDGE_DIR:-.data/edge}
TOKENS=${TOKENS:-.data/tokens}
IMPRESSION_KEY=${IMPRESSION_KEY:-.data/impression.key}
FEATURE_STORE=${FEATURE_STORE:-.data/features.db}
# Prometheus metrics on ports METRICS_PORT_BASE to +6 (empty: none).
METRICS_PORT_BASE=${METRICS_PORT_BASE-9100}
metrics() { [ -n "$METRICS_PORT_BASE" ] && echo "--metrics-addr 127.0.0.1:$((METRICS_PORT_BASE + $1))"; }
# Extra consul agent flags, e.g. other -serf-lan-port/-server-port/-grpc-port
# values when the defaults (8301, 8300, 8502) are taken.
CONSUL_FLAGS=${CONSUL_FLAGS:-}
CONSUL=${CONSUL:-$(command -v consul || echo bin/consul)}
mkdir -p "$LOG_DIR"
rm -f "$LOG_DIR"/*.log "$LOG_DIR"/*.pid

pids=()
consul_pid=
cleanup() {
  trap - INT TERM EXIT
  echo; echo "stopping..."
  # Services first (they deregister from Consul as they drain), Consul last.
  for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
  if [ -n "$consul_pid" ]; then kill -TERM "$consul_pid" 2>/dev/null || true; wait "$consul_pid" 2>/dev/null || true; fi
  echo "stopped."
}
trap cleanup INT TERM EXIT

# start runs a service under a supervisor: when the service dies (kill -9,
# a crash), it is started again a second later and the rest keep serving.
# The supervisor passes SIGTERM on and waits, so a stop still drains. The
# service's current PID is in $LOG_DIR/<name>.pid.
start() { # name, args...
  local name=$1; shift
  (
    child=
    trap 'trap - TERM INT; [ -n "$child" ] && kill -TERM "$child" 2>/dev/null; wait "$child" 2>/dev/null; exit 0' TERM INT
    while :; do
      "$@" >>"$LOG_DIR/$name.log" 2>&1 &
      child=$!
      echo "$child" >"$LOG_DIR/$name.pid"
      code=0
      wait "$child" || code=$?
      echo "supervisor: $name exited with status $code; restarting it in 1 s" >>"$LOG_DIR/$name.log"
      sleep 1 & wait $! || true
    done
  ) &
  pids+=($!)
}

http_port=${CONSUL_ADDR##*:}
"$CONSUL" agent -dev -bind 127.0.0.1 -client 127.0.0.1 -http-port "$http_port" -dns-port -1 -log-level warn $CONSUL_FLAGS \
  >"$LOG_DIR/consul.log" 2>&1 &
consul_pid=$!
# Waits are generous (60 s): how long a start takes depends on the machine.
leader=
for _ in $(seq 1 600); do
  curl -fsS "http://$CONSUL_ADDR/v1/status/leader" 2>/dev/null | grep -q '"[^"]' && { leader=1; break; }
  kill -0 "$consul_pid" 2>/dev/null || { echo "consul failed to start:"; cat "$LOG_DIR/consul.log"; exit 1; }
  sleep 0.1
done
[ -n "$leader" ] || { echo "consul elected no leader within 60 s:"; cat "$LOG_DIR/consul.log"; exit 1; }

export CONSUL_HTTP_ADDR=$CONSUL_ADDR
kv() { curl -fsS -X PUT --data "$2" "http://$CONSUL_ADDR/v1/kv/$1" >/dev/null; }
kv adrank/domains/feed '{"production": "v1"}'
kv adrank/domains/stories '{"production": "v1"}'
kv adrank/auction/feed '{"type": "gsp", "reserve_micros": 10000, "position_factors": [1, 0.7, 0.5]}'
kv adrank/auction/stories '{"type": "vcg", "reserve_micros": 10000, "position_factors": [1, 0.6, 0.35]}'

# The development Kafka broker (kfake, in memory; not production storage).
start devbroker bin/devbroker --port "$KAFKA_PORT" --partitions 4
# Development tokens, made once: canary promotion and rollback need the
# admin one, events the events one (printed below).
if [ ! -s "$TOKENS" ]; then
  mkdir -p "$(dirname "$TOKENS")"
  ( umask 077; printf 'admin %s\nevents %s\n' "$(od -An -N16 -tx1 /dev/urandom | tr -d ' \n')" "$(od -An -N16 -tx1 /dev/urandom | tr -d ' \n')" >"$TOKENS" )
fi
ADMIN_TOKEN=$(awk '$1 == "admin" {print $2; exit}' "$TOKENS")
EVENTS_TOKEN=$(awk '$1 == "events" {print $2; exit}' "$TOKENS")
mkdir -p "$(dirname "$FEATURE_STORE")"
start featuresvc bin/featuresvc --store "$FEATURE_STORE" --kafka-brokers "127.0.0.1:$KAFKA_PORT" --tokens "$TOKENS" $(metrics 1)
start auctionsvc bin/auctionsvc $(metrics 2)
start ranker-feed-v1 bin/rankersvc --domain feed --version v1 --model models/feed/v1.json $(metrics 3)
start ranker-feed-v2 bin/rankersvc --domain feed --version v2 --model models/feed/v2.json $(metrics 4)
start ranker-stories-v1 bin/rankersvc --domain stories --version v1 --model models/stories/v1.json $(metrics 5)
# The key that signs impression IDs, made once and kept, so that clicks on
# impressions served before a restart still count.
if [ ! -s "$IMPRESSION_KEY" ]; then
  ( umask 077; od -An -N32 -tx1 /dev/urandom | tr -d ' \n' >"$IMPRESSION_KEY"; echo >>"$IMPRESSION_KEY" )
fi
start routersvc bin/routersvc --listen "$ROUTER_ADDR" --state-file "$STATE_FILE" --kafka-brokers "127.0.0.1:$KAFKA_PORT" --snapshots "$SNAPSHOTS" --tokens "$TOKENS" --impression-key "$IMPRESSION_KEY" $(metrics 0)
# The batch job as a service: feed's production model scores every user and
# ad once a day (today's generation at once, if it is not there yet).
start batch-feed bin/adrankctl batch run --domain feed --version v1 --store "$SNAPSHOTS" --every 24h --progress log
# Edge bundles of every demo model, which the gateway serves to devices.
for m in models/*/*.json; do
  d=${m#models/}; d=${d%%/*}; v=$(basename "$m" .json)
  bin/adrankctl edge build --domain "$d" --version "$v" --model "$m" --out "$EDGE_DIR" >/dev/null
done
start gateway bin/gateway --listen "$GATEWAY_ADDR" --edge-dir "$EDGE_DIR" $(metrics 6)

healthy=
for _ in $(seq 1 600); do
  curl -fsS "http://$GATEWAY_ADDR/healthz" >/dev/null 2>&1 && { healthy=1; break; }
  sleep 0.1
done
[ -n "$healthy" ] || { echo "the gateway was not healthy within 60 s; see $LOG_DIR/"; exit 1; }

cat <<MSG
adrank is running (logs in $LOG_DIR/):
  Consul UI/API  http://$CONSUL_ADDR
  router (gRPC)  $ROUTER_ADDR       grpcurl -plaintext $ROUTER_ADDR list
  gateway (REST) http://$GATEWAY_ADDR   OpenAPI: http://$GATEWAY_ADDR/openapi.json
  Kafka (dev)    127.0.0.1:$KAFKA_PORT       topics adrank.rank.requests, adrank.rank.results, adrank.events, adrank.deadletter, adrank.features
  batch snapshots $SNAPSHOTS   feed scored daily by adrankctl batch run ($LOG_DIR/batch-feed.log)
  edge demo      http://$GATEWAY_ADDR/edge/demo.html?user=u42&token=$EVENTS_TOKEN   (ranks in your browser, works offline)
  metrics        http://127.0.0.1:${METRICS_PORT_BASE:-(off)}/metrics (router; then features, auction, 3 rankers, gateway on the next ports)
                 dashboard deploy/grafana/adrank.json, alerts deploy/prometheus/alerts.yml
  dev tokens     $TOKENS: admin (canary promote/rollback: ADRANK_TOKEN=$ADMIN_TOKEN bin/adrankctl canary ...)
                 and events (POST /v1/events with -H 'Authorization: Bearer $EVENTS_TOKEN')

Try:
  curl -s http://$GATEWAY_ADDR/v1/domains
  curl -s -X POST http://$GATEWAY_ADDR/v1/rank -H 'Content-Type: application/json' -d '{"user_id":"u42","domain":"feed","slots":2,
    "context":{"device":"DEVICE_MOBILE","timestamp":"2026-11-25T12:00:00Z"},
    "candidates":[{"ad_id":"ad1","advertiser_id":"adv1","bid_micros":900000},
                  {"ad_id":"ad2","advertiser_id":"adv2","bid_micros":1200000},
                  {"ad_id":"ad3","advertiser_id":"adv3","bid_micros":700000}]}'

Stream a request through Kafka (kcat: apt-get install kcat):
  echo 'u42|{"request_id":"s1","user_id":"u42","domain":"feed","slots":2,"candidates":[{"ad_id":"ad1","bid_micros":900000},{"ad_id":"ad2","bid_micros":1200000}]}' |
    kcat -b 127.0.0.1:$KAFKA_PORT -P -t adrank.rank.requests -K '|' -H content-type=application/json
  kcat -b 127.0.0.1:$KAFKA_PORT -C -t adrank.rank.results -o beginning -e -X isolation.level=read_committed -f '%k %s\n'

Write a user's features through Kafka (featuresvc applies adrank.features; refused writes go to adrank.deadletter):
  echo '{"entity":"user","rows":[{"key":["u42"],"values":{"user_hist_ctr":0.2}}]}' |
    kcat -b 127.0.0.1:$KAFKA_PORT -P -t adrank.features -H content-type=application/json
  curl -s -X POST http://$GATEWAY_ADDR/v1/features:get -d '{"user_id":"u42"}'

Serve feed from its batch snapshot (pCTRs computed ahead, auction online), then back:
  curl -s -X PUT http://$CONSUL_ADDR/v1/kv/adrank/domains/feed -d '{"production": "v1", "mode": "batch"}'
  curl -s -X PUT http://$CONSUL_ADDR/v1/kv/adrank/domains/feed -d '{"production": "v1"}'

Ctrl-C stops everything.
MSG

# Services are restarted by their supervisors; Consul (a dev agent, whose
# KV lives in memory) is not: if it dies, everything stops. A signal stops
# everything too.
set +e
wait "$consul_pid"
status=$?
if [ "$status" -lt 128 ]; then
  echo "consul exited with status $status; see $LOG_DIR/consul.log"
  exit 1
fi
