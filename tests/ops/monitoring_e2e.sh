#!/usr/bin/env bash
# The real monitoring stack against the real daemon, on loopback only, in bounded time:
# Prometheus scrapes the daemon with the shipped rules (deploy/prometheus/rules.yml), Alertmanager
# receives the daemon's pushes (and Prometheus' alerts). A fail-safe trigger (market data stalled:
# the separate paper exchange is SIGSTOPped) must show as a firing alert in Alertmanager
# (`amtool alert query`) and as TradeBaasTradingShutdown firing in Prometheus; after the operator
# clears SHUTDOWN (`tradebaas mode observe`) both must resolve. Every process started is stopped.
# Usage: tests/ops/monitoring_e2e.sh [path/to/tradebaas]   (default target/debug/tradebaas)
set -euo pipefail
cd "$(dirname "$0")/../.."
BIN=${1:-target/debug/tradebaas}
LIMIT=${E2E_TIMEOUT:-150}

for tool in prometheus prometheus-alertmanager amtool curl jq; do
  command -v "$tool" >/dev/null 2>&1 || { echo "*** SKIP monitoring e2e: $tool missing ***" >&2; exit 0; }
done
[ -x "$BIN" ] || { echo "monitoring e2e: $BIN not built (cargo build)" >&2; exit 1; }

WORK=$(mktemp -d)
PIDS=()
cleanup() {
  local rc=$?
  for pid in "${PIDS[@]}"; do kill -CONT "$pid" 2>/dev/null || true; kill -TERM "$pid" 2>/dev/null || true; done
  for pid in "${PIDS[@]}"; do
    for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
  done
  if [ "$rc" != 0 ]; then
    for f in "$WORK"/*.log; do echo "---- $f (tail)"; tail -n 30 "$f"; done >&2
  fi
  rm -rf "$WORK"
  exit "$rc"
}
trap cleanup EXIT
trap 'echo "monitoring e2e: interrupted" >&2; exit 130' INT TERM
DEADLINE=$((SECONDS + LIMIT))

fail() { echo "monitoring e2e: FAIL: $*" >&2; exit 1; }
# wait_for DESCRIPTION SECONDS COMMAND...: retry COMMAND until it succeeds.
wait_for() {
  local what=$1 secs=$2; shift 2
  local until=$((SECONDS + secs))
  while ! "$@" >/dev/null 2>&1; do
    [ "$SECONDS" -lt "$until" ] || fail "$what (not within ${secs}s)"
    [ "$SECONDS" -lt "$DEADLINE" ] || fail "overall limit of ${LIMIT}s passed while waiting: $what"
    sleep 0.3
  done
  echo "monitoring e2e: ok: $what"
}
# A loopback port nobody listens on.
free_port() {
  local p
  while :; do
    p=$((20000 + RANDOM % 40000))
    (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null || { echo "$p"; return; }
  done
}
PAPER=$(free_port); DAEMON=$(free_port); PROM=$(free_port); AM=$(free_port)

# Alertmanager: one receiver that sends nowhere; no clustering.
cat >"$WORK/alertmanager.yml" <<YML
route:
  receiver: blackhole
  group_wait: 1s
  group_interval: 1s
  repeat_interval: 1h
receivers:
  - name: blackhole
YML
prometheus-alertmanager --config.file="$WORK/alertmanager.yml" --storage.path="$WORK/am" \
  --web.listen-address="127.0.0.1:$AM" --cluster.listen-address= >"$WORK/alertmanager.log" 2>&1 &
PIDS+=($!)

# The shipped rules, unchanged (TradeBaasTradingShutdown has no `for:`).
cat >"$WORK/prometheus.yml" <<YML
global:
  scrape_interval: 1s
  evaluation_interval: 1s
rule_files:
  - $PWD/deploy/prometheus/rules.yml
alerting:
  alertmanagers:
    - static_configs:
        - targets: ["127.0.0.1:$AM"]
scrape_configs:
  - job_name: tradebaas
    static_configs:
      - targets: ["127.0.0.1:$DAEMON"]
YML
prometheus --config.file="$WORK/prometheus.yml" --storage.tsdb.path="$WORK/tsdb" \
  --web.listen-address="127.0.0.1:$PROM" >"$WORK/prometheus.log" 2>&1 &
PIDS+=($!)

# The paper exchange as its own process, so that it can be frozen (SIGSTOP).
"$BIN" paper-exchange --listen "127.0.0.1:$PAPER" >"$WORK/paper.log" 2>&1 &
PAPER_PID=$!
PIDS+=($PAPER_PID)

cat >"$WORK/tradebaas.toml" <<TOML
[server]
listen = "127.0.0.1:$DAEMON"
data_dir = "$WORK/data"
[broker]
url = "ws://127.0.0.1:$PAPER/ws/api/v2"
[alert.alertmanager]
enabled = true
url = "http://127.0.0.1:$AM"
resend_interval = "5s"
[fail_safe]
initial_mode = "OBSERVE_ONLY"
[fail_safe.triggers]
evaluate_interval = "200ms"
market_data_stalled = "2s"
[execution]
enabled = false
TOML
wait_for "paper exchange listening" 20 bash -c "exec 3<>/dev/tcp/127.0.0.1/$PAPER"
DERIBIT_CLIENT_ID=e2e DERIBIT_CLIENT_SECRET=e2e-paper-secret \
  "$BIN" run --config "$WORK/tradebaas.toml" >"$WORK/daemon.log" 2>&1 &
PIDS+=($!)

P="http://127.0.0.1:$PROM"
A="http://127.0.0.1:$AM"
D="http://127.0.0.1:$DAEMON"
wait_for "daemon ready" 30 curl -fsS "$D/ready"
wait_for "alertmanager ready" 30 curl -fsS "$A/-/ready"
wait_for "prometheus ready" 30 curl -fsS "$P/-/ready"
up() { curl -fsS "$P/api/v1/query" --data-urlencode 'query=up{job="tradebaas"}' | jq -e '.data.result[0].value[1] == "1"'; }
wait_for "Prometheus scrapes the daemon: up == 1" 30 up
wait_for "rules loaded: TradeBaasTradingShutdown inactive" 20 bash -c \
  "curl -fsS '$P/api/v1/rules' | jq -e '[.data.groups[].rules[] | select(.name == \"TradeBaasTradingShutdown\")][0].state == \"inactive\"'"

# The trigger: the exchange freezes, market data stops, the fail-safe latches SHUTDOWN.
kill -STOP "$PAPER_PID"
wait_for "daemon in SHUTDOWN by market_data_stalled" 30 bash -c \
  "curl -sS '$D/health' | jq -e '.mode == \"SHUTDOWN\" and .actors[\"fail-safe\"].last_trigger == \"market_data_stalled\"'"
am_active() { amtool --alertmanager.url="$A" alert query -o json "alertname=$1" | jq -e 'length > 0 and .[0].status.state == "active"'; }
am_gone() { amtool --alertmanager.url="$A" alert query -o json "alertname=$1" | jq -e 'length == 0'; }
wait_for "Alertmanager has the daemon's failsafe:market_data_stalled firing (amtool)" 30 am_active failsafe:market_data_stalled
rule_state() { curl -fsS "$P/api/v1/rules" | jq -e --arg s "$1" '[.data.groups[].rules[] | select(.name == "TradeBaasTradingShutdown")][0].state == $s'; }
prom_alert() { curl -fsS "$P/api/v1/alerts" | jq -e '[.data.alerts[] | select(.labels.alertname == "TradeBaasTradingShutdown" and .state == "firing")] | length == 1'; }
wait_for "Prometheus rule TradeBaasTradingShutdown firing" 30 rule_state firing
wait_for "Prometheus /api/v1/alerts lists TradeBaasTradingShutdown firing" 10 prom_alert
wait_for "Alertmanager has Prometheus' TradeBaasTradingShutdown (amtool)" 30 am_active TradeBaasTradingShutdown
amtool --alertmanager.url="$A" alert query

# The cause goes away, market data is back; the operator clears SHUTDOWN.
kill -CONT "$PAPER_PID"
wait_for "market data flowing again" 30 bash -c \
  "curl -sS '$D/health' | jq -e '.actors[\"broker-connection\"].state == \"connected\" and .actors[\"broker-connection\"].market_data_age_ms < 1000'"
"$BIN" mode observe --reason "monitoring e2e: exchange back" --data-dir "$WORK/data" || fail "tradebaas mode observe"
wait_for "daemon in OBSERVE_ONLY" 10 bash -c "curl -sS '$D/health' | jq -e '.mode == \"OBSERVE_ONLY\"'"
wait_for "Alertmanager: failsafe:market_data_stalled resolved (not active)" 30 am_gone failsafe:market_data_stalled
wait_for "Prometheus rule TradeBaasTradingShutdown back to inactive" 30 rule_state inactive
wait_for "Alertmanager: TradeBaasTradingShutdown resolved (not active)" 30 am_gone TradeBaasTradingShutdown
echo "monitoring e2e: PASS in ${SECONDS}s"
