#!/usr/bin/env bash
# `make bench` / `make bench-peers`: builds diva-signal and the load generator (bench/, crate
# diva-load) in release, then for each server runs a fixed set of scenarios, each against a
# freshly started server pinned to CPU 0 with the generator pinned to CPU 1 (scenario by
# scenario, the servers in turn), and prints one table. Everything stays on loopback; every
# step has a time limit.
#
#   bash bench/run.sh            diva-signal, and the zero-work relay as the floor
#   bash bench/run.sh --peers    the same and matchbox_server (installed from crates.io into
#                                .bench/matchbox), side by side with ratios
#
# The zero-work relay (`diva-load floor-relay`) pairs each room and then copies bytes between
# the two members unchanged: what it spends per message is the kernel's share, which every
# server pays. It runs the relay scenarios only. Before the scenarios, `diva-load jitter`
# measures on both CPUs at once how often the machine stalls a thread that never sleeps.
#
# Scenarios (each on a fresh server):
#   start          RSS right after start (after one /health request), stripped binary size
#   closed-1k-w1   relay, closed loop: 1,000 connections in rooms of 2, 1 message in flight per
#                  connection, ~500-byte payload, 2 s warm-up, 10 s measured window
#   closed-1k-w16  the same with 16 in flight per connection
#   closed-1k-w1-limits  closed-1k-w1 against diva-signal with its default limits (100
#                  messages/s per connection, bursts of 500): what the limits cost. Refused
#                  messages (`rate-limited`) are sent again after 10 ms. A 12 s warm-up spends
#                  the burst allowance first. diva-signal only.
#   open-20k       relay, open loop: 20,000 msg/s in total over 1,000 connections (latency from
#                  the scheduled send time, so a stalled server or generator is not hidden)
#   open-20k-busy  the same with neither end sleeping: the generator with --spin on, diva-signal
#                  with --busy-poll 1000, the floor relay with --spin on (matchbox_server has no
#                  such setting; it runs as is against the spinning generator)
#   big-1k         relay of ~60 KB signals (SDP offers with many candidates are some KB; 60 KB
#                  is near the 64 KiB default message limit), 1,000 connections, 1 in flight,
#                  then 2 s without traffic: server RSS before, at its peak and once traffic
#                  stopped (does memory follow traffic, or stay at its high-water mark?)
#   mid-1k         the same with ~3 KB signals (an SDP offer) and 3 s without traffic: the
#                  server makes such buffers fresh once a client has been quiet for a second
#   flood-ping     what a control-frame flood does to everyone else: a probe client sends
#                  `["ping"]` every 2 ms (open loop; round trip from the scheduled send time)
#                  and a fresh connection fetches /health every 50 ms, first with nothing else
#                  going on, then while one flooding connection writes WebSocket ping frames
#                  back to back as fast as the server takes them (and reads the pongs). Each
#                  half: BENCH_WARMUP s of warm-up (the flood is on during the second), then
#                  BENCH_DURATION s measured. diva-signal runs with --rate and --burst at
#                  1,000,000,000, so that the rate limit plays no part and only the loop's
#                  fairness is measured. diva-signal only.
#   flood-ping-limits  the same against diva-signal's default limits, where a flooder is
#                  closed with 1008 after its burst allowance; it connects again at once, as
#                  an attacker would. The probe sends every 20 ms (under the 100/s limit).
#   idle-10k       join storm of 10,000 connections (connect + WebSocket upgrade + join, 256 at
#                  a time), then hold them 5 s: connections/s and server RSS per connection
#   idle-19k       the same with 19,000 connections (one generator process holds at most
#                  ~19,900: the open-file hard limit here is 20,000)
#   tls-closed-1k-w1, tls-idle-10k  closed-1k-w1 and idle-10k over wss://: diva-signal's own
#                  TLS (a throwaway certificate from openssl), the generator with --tls on.
#                  diva-signal only.
#   nginx-tls-closed-1k-w1  closed-1k-w1 over wss:// to Debian's nginx, which terminates TLS
#                  (contrib/nginx.conf with the same certificate, one worker) and proxies to
#                  the plain diva-signal. nginx runs on the server's CPU too (same taskset); the
#                  CPU counted is diva-signal's, nginx's master's and its worker's added up
#                  (the table also shows diva-signal's share). nginx is installed with apt-get
#                  when missing (as root; otherwise the scenario is skipped). diva-signal only.
#   cluster-closed-1k-w1  closed-1k-w1 across a cluster (docs/CLUSTER.md): one redis-server and
#                  two diva-signal nodes with --redis-url, all three pinned to the server CPU;
#                  in every room one member is on node 1 and its peer on node 2, so every
#                  signal crosses Redis. CPU per message is nodes + Redis added up. Each round
#                  first runs closed-1k-w1 against one node (no Redis) right before, for the
#                  ratios of CPU per message and throughput within the round (target: at most
#                  3x). Also Redis's calls per join and per message (INFO commandstats) and its
#                  CPU. diva-signal only; installs Debian's redis-server if missing (as root).
#   cluster-open-20k  the same in open loop at 20,000 msg/s (against open-20k on one node):
#                  fewer signals per loop round, so less batching per PUBLISH.
#
# Before the scenarios, benches/hot_path.rs measures in process (no sockets) what reading,
# parsing, routing and framing a `signal` costs: with the zero-work relay's figure, the
# least this design can spend per message here.
#
# Environment: BENCH_PORT (29030, outside the ephemeral port range; nginx-* scenarios put
# diva-signal on the port after it), BENCH_WARMUP (2),
# BENCH_HOT_PATH_MESSAGES (1000000: messages per run of the in-process bench),
# BENCH_LIMITS_WARMUP (12), BENCH_REDIS_PORT (BENCH_PORT + 2; the second cluster node
# listens on BENCH_PORT + 1),
# BENCH_DURATION (5), BENCH_HOLD (5), BENCH_SCENARIOS (all, space-separated), CARGO,
# BENCH_REPEAT (3): rounds of all scenarios; each figure in the table is the median of the
# rounds, with the lowest and highest beside it (this VM's speed drifts by a quarter), and
# BENCH_DIVA_BIN (target/release/diva-signal, built here; point it at another build, such
# as the static one from `make static`, to measure that instead), BENCH_STRICT (0; 1: exit
# 1 when any scenario saw an error), and
# BENCH_WAIT_QUIET (0): before each scenario, wait up to this many seconds for the machine to
# be idle (other processes under 10 % of a core). Other processes on the machine make every
# figure noisy; the table has a row saying how much CPU they took during each window.
set -euo pipefail
cd "$(dirname "$0")/.."

PEERS=0
[[ "${1:-}" == "--peers" ]] && PEERS=1
CARGO=${CARGO:-cargo}
PORT=${BENCH_PORT:-29030}
WARMUP=${BENCH_WARMUP:-2}
LIMITS_WARMUP=${BENCH_LIMITS_WARMUP:-12}
DURATION=${BENCH_DURATION:-5}
REPEAT=${BENCH_REPEAT:-3}
HOLD=${BENCH_HOLD:-5}
SCENARIOS=${BENCH_SCENARIOS:-"start closed-1k-w1 closed-1k-w1-limits closed-1k-w16 open-20k open-20k-busy big-1k mid-1k flood-ping flood-ping-limits idle-10k idle-19k tls-closed-1k-w1 nginx-tls-closed-1k-w1 tls-idle-10k cluster-closed-1k-w1 cluster-open-20k"}
BACKEND_PORT=$((PORT + 1)) # diva-signal behind nginx
SERVER_CPU=0
LOAD_CPU=1
DIVA=${BENCH_DIVA_BIN:-target/release/diva-signal}
MATCHBOX=.bench/matchbox/bin/matchbox_server
LOAD=bench/target/release/diva-load

echo "== building (release)"
$CARGO build --release --quiet
$CARGO build --release --quiet --manifest-path bench/Cargo.toml
$CARGO bench --quiet --bench hot_path --no-run
SERVERS="diva floor"
if [[ $PEERS == 1 ]]; then
  if [[ ! -x $MATCHBOX ]]; then
    echo "== installing matchbox_server from crates.io into .bench/matchbox"
    $CARGO install --locked --root .bench/matchbox matchbox_server
  fi
  SERVERS="diva matchbox floor"
fi

OUT=.bench/results/$(date -u +%Y%m%d-%H%M%S)
mkdir -p "$OUT"
# The tls-* scenarios: diva-signal's own TLS with a throwaway certificate.
TLS_DIR=$OUT/tls
mkdir -p "$TLS_DIR"
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -subj /CN=localhost -days 2 \
  -keyout "$TLS_DIR/key.pem" -out "$TLS_DIR/cert.pem" 2>/dev/null
TLS_ARGS=(--tls-cert "$TLS_DIR/cert.pem" --tls-key "$TLS_DIR/key.pem")
# The nginx-* scenarios: Debian's nginx in front, installed when missing (needs root).
NGINX=
if [[ " $SCENARIOS " == *" nginx-"* ]]; then
  if ! command -v nginx >/dev/null && [[ $(id -u) == 0 ]]; then
    echo "== installing Debian's nginx-light (nginx-* scenarios)"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=300 install -y -qq nginx-light >/dev/null
  fi
  NGINX=$(command -v nginx || true)
  [[ -n $NGINX ]] || echo "NOTE: nginx is missing and this is not root: the nginx-* scenarios are skipped"
fi
{
  echo "date: $(date -u +%FT%TZ)"
  echo "cpus: $(nproc), $(lscpu | sed -n 's/^Model name: *//p')"
  echo "kernel: $(uname -r)"
  [[ -n $NGINX ]] && echo "nginx: $($NGINX -v 2>&1 | sed 's/^nginx version: //'), $(openssl version)"
  echo "load before: $(cut -d' ' -f1-3 /proc/loadavg)"
  linking=static
  readelf -l "$DIVA" 2>/dev/null | grep -q INTERP && linking=dynamic
  echo "diva-signal: $DIVA ($linking), $($DIVA --version), commit $(git rev-parse --short HEAD 2>/dev/null || echo '?')$(
    [[ -n "$(git --no-optional-locks status --porcelain -- src Cargo.toml Cargo.lock 2>/dev/null)" ]] &&
      echo ' with uncommitted changes in src/')"
  if [[ $PEERS == 1 ]]; then
    echo "matchbox_server: $($CARGO install --list --root .bench/matchbox | sed -n 's/^matchbox_server v\([^:]*\):/\1/p')"
  fi
} > "$OUT/machine.txt"
cat "$OUT/machine.txt"
read -r load1 _ < /proc/loadavg
if awk "BEGIN{exit !($load1 > 0.5)}"; then
  echo "NOTE: load average $load1: the machine is busy; figures will be noisy"
fi

# CPU the whole machine used over one second, in % of one core (USER_HZ is 100).
busy_pct() {
  local u1 n1 s1 i1 w1 q1 sq1 st1 u2 n2 s2 i2 w2 q2 sq2 st2
  read -r _ u1 n1 s1 i1 w1 q1 sq1 st1 _ < /proc/stat
  sleep 1
  read -r _ u2 n2 s2 i2 w2 q2 sq2 st2 _ < /proc/stat
  echo $(( (u2 + n2 + s2 + q2 + sq2 + st2) - (u1 + n1 + s1 + q1 + sq1 + st1) ))
}

wait_quiet() {
  local waited=0 busy
  busy=$(busy_pct)
  while (( busy >= 10 && waited < ${BENCH_WAIT_QUIET:-0} )); do
    sleep 4
    waited=$((waited + 5))
    busy=$(busy_pct)
  done
  echo "   (other processes: $busy % of a core just before)"
}

# GET /health on port $1 (default $PORT) answers 200 (bash's /dev/tcp: no curl needed).
health_ok() {
  local status
  exec 3<>"/dev/tcp/127.0.0.1/${1:-$PORT}" 2>/dev/null || return 1
  printf 'GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n' >&3
  read -r -t 2 _ status _ <&3 || status=
  exec 3>&-
  [[ $status == 200 ]]
}

SERVER_PID=
# What the generator reads CPU and memory from: the server, or diva-signal and nginx's
# master and worker (comma-separated, diva-signal first).
SERVER_PIDS=
start_server() { # $1 = diva|matchbox|floor, $2 = log file, $3 = raised|default|busy|unlimited|tls, $4 = port
  local limits=(--rate 1000000 --burst 1000000) busy=() tls=() port=${4:-$PORT}
  [[ ${3:-raised} == tls ]] && tls=("${TLS_ARGS[@]}")
  [[ ${3:-raised} == default ]] && limits=()
  [[ ${3:-raised} == unlimited ]] && limits=(--rate 1000000000 --burst 1000000000)
  [[ ${3:-raised} == busy ]] && busy=(--busy-poll 1000)
  case $1 in
    diva)
      # Every generator connection comes from 127.0.0.1: no limit per address (the
      # bookkeeping is done all the same, so its cost is in the figures).
      taskset -c $SERVER_CPU $DIVA --bind 127.0.0.1 --port "$port" "${limits[@]}" "${busy[@]}" "${tls[@]}" \
        --max-connections 19960 --max-connections-per-ip 0 --log-level warn 2>"$2" &
      ;;
    floor)
      [[ ${#busy[@]} -gt 0 ]] && busy=(--spin on)
      taskset -c $SERVER_CPU $LOAD floor-relay --listen "127.0.0.1:$PORT" "${busy[@]}" >"$2" 2>&1 &
      ;;
    matchbox)
      RUST_LOG=warn taskset -c $SERVER_CPU $MATCHBOX "127.0.0.1:$PORT" >"$2" 2>&1 &
      ;;
  esac
  SERVER_PID=$!
  SERVER_PIDS=$SERVER_PID
  for _ in $(seq 100); do
    if [[ ${#tls[@]} -gt 0 ]]; then
      if $DIVA --healthcheck --bind 127.0.0.1 --port "$port" "${tls[@]}" >/dev/null 2>&1; then return 0; fi
    elif health_ok "$port"; then return 0; fi
    if ! kill -0 "$SERVER_PID" 2>/dev/null; then break; fi
    sleep 0.1
  done
  echo "server $1 did not come up; its log:" >&2
  cat "$2" >&2
  return 1
}

# nginx terminating TLS on $PORT in front of diva-signal on $BACKEND_PORT: contrib/nginx.conf
# as shipped, with the bench's ports and certificate, one worker, enough connections for
# the clients and the upstream side, and no access log. Its master runs in the foreground
# (daemon off), pinned to the server's CPU; the worker inherits that.
NGINX_PID=
start_nginx() { # $1 = directory for its configuration, logs and temporary files
  local dir=$1
  mkdir -p "$dir/logs"
  sed -e "s#127.0.0.1:3903#127.0.0.1:$BACKEND_PORT#" \
    -e "s#listen 443 ssl http2;#listen 127.0.0.1:$PORT ssl http2;#" -e "/listen \[::\]:443/d" \
    -e "s#listen 80;#listen 127.0.0.1:$((PORT + 2));#" -e "/listen \[::\]:80/d" \
    -e "s#/etc/letsencrypt/live/signal.example.org/fullchain.pem#$(realpath "$TLS_DIR/cert.pem")#" \
    -e "s#/etc/letsencrypt/live/signal.example.org/privkey.pem#$(realpath "$TLS_DIR/key.pem")#" \
    contrib/nginx.conf > "$dir/site.conf"
  dir=$(realpath "$dir")
  cat > "$dir/nginx.conf" <<CONF
daemon off;
master_process on;
worker_processes 1;
worker_rlimit_nofile 8192;
pid $dir/nginx.pid;
error_log $dir/logs/error.log warn;
events { worker_connections 4096; }
http {
  access_log off;
  client_body_temp_path $dir/body;
  proxy_temp_path $dir/proxy;
  include $dir/site.conf;
}
CONF
  taskset -c $SERVER_CPU "$NGINX" -p "$dir" -c "$dir/nginx.conf" -e "$dir/logs/error.log" 2>"$dir/logs/stderr.log" &
  NGINX_PID=$!
  local workers=
  for _ in $(seq 100); do
    workers=$(pgrep -P "$NGINX_PID" | paste -sd, || true)
    if [[ -n $workers ]] && $DIVA --healthcheck --bind 127.0.0.1 --port "$PORT" "${TLS_ARGS[@]}" >/dev/null 2>&1; then
      SERVER_PIDS="$SERVER_PID,$NGINX_PID,$workers"
      return 0
    fi
    if ! kill -0 "$NGINX_PID" 2>/dev/null; then break; fi
    sleep 0.1
  done
  echo "nginx did not come up in front of diva-signal; its log:" >&2
  cat "$dir/logs/stderr.log" "$dir/logs/error.log" >&2 || true
  return 1
}

# Stops process $1 (if any): TERM, up to 5 s for it to exit, then KILL.
stop_pid() {
  [[ -n $1 ]] || return 0
  kill -TERM "$1" 2>/dev/null || true
  for _ in $(seq 50); do
    kill -0 "$1" 2>/dev/null || break
    sleep 0.1
  done
  kill -KILL "$1" 2>/dev/null || true
  wait "$1" 2>/dev/null || true
}

stop_nginx() {
  stop_pid "$NGINX_PID"
  NGINX_PID=
}

stop_server() {
  stop_nginx
  stop_cluster
  stop_pid "$SERVER_PID"
  SERVER_PID=
}
source bench/cluster.sh
trap stop_server EXIT

load() { # $1 = server, $2 = scenario, rest: arguments
  local server=$1 scenario=$2
  shift 2
  local proto=diva
  [[ $server == matchbox ]] && proto=matchbox # the floor relay speaks diva's join
  timeout 300 taskset -c $LOAD_CPU $LOAD "$@" --protocol $proto --target "127.0.0.1:$PORT" \
    --server-pid "${SERVER_PIDS:-$SERVER_PID}" --label "$scenario" --json "$OUT/$server/$scenario.round$ROUND.json" \
    2>>"$OUT/$server/$scenario.log" | tee -a "$OUT/$server/$scenario.log"
}

for server in $SERVERS; do
  [[ $server == floor ]] && continue # part of diva-load, not a server binary to size
  mkdir -p "$OUT/$server"
  bin=$DIVA
  [[ $server == matchbox ]] && bin=$MATCHBOX
  cp "$bin" "$OUT/$server/binary"
  strip "$OUT/$server/binary"
done
mkdir -p "$OUT/floor" "$OUT/machine"

echo "== machine: stalls of a spinning thread on CPU $SERVER_CPU and CPU $LOAD_CPU, 5 s at once"
wait_quiet
taskset -c $SERVER_CPU $LOAD jitter --duration 5 --label "cpu$SERVER_CPU" --json "$OUT/machine/jitter-cpu$SERVER_CPU.json" \
  > "$OUT/machine/jitter-cpu$SERVER_CPU.txt" &
taskset -c $LOAD_CPU $LOAD jitter --duration 5 --label "cpu$LOAD_CPU" --json "$OUT/machine/jitter-cpu$LOAD_CPU.json" \
  > "$OUT/machine/jitter-cpu$LOAD_CPU.txt"
wait
for cpu in $SERVER_CPU $LOAD_CPU; do
  echo "stalls, CPU $cpu: $(head -1 "$OUT/machine/jitter-cpu$cpu.txt")" | tee -a "$OUT/machine.txt"
done
echo "== in-process hot path on CPU $SERVER_CPU (benches/hot_path.rs): the libraries' and the core's share"
wait_quiet
taskset -c $SERVER_CPU $CARGO bench --quiet --bench hot_path -- "${BENCH_HOT_PATH_MESSAGES:-1000000}" \
  | tee "$OUT/machine/hot_path.txt"
# Round by round, scenario by scenario, each server in turn, so that all see much the same
# machine.
for ROUND in $(seq "$REPEAT"); do
for scenario in $SCENARIOS; do
  for server in $SERVERS; do
    limits=raised
    case $scenario in
      closed-1k-w1-limits)
        [[ $server == diva ]] || continue # only diva-signal has limits to compare
        limits=default
        ;;
      open-20k-busy) limits=busy ;;
      # matchbox has no `["ping"]`; the floor relay answers nothing.
      flood-ping)
        [[ $server == diva ]] || continue
        limits=unlimited
        ;;
      flood-ping-limits)
        [[ $server == diva ]] || continue
        limits=default
        ;;
      # nginx in front of the plain diva-signal.
      nginx-*)
        [[ $server == diva && -n $NGINX ]] || continue
        ;;
      # Only diva-signal speaks TLS itself.
      tls-*)
        [[ $server == diva ]] || continue
        limits=tls
        ;;
      cluster-*)
        [[ $server == diva ]] || continue
        ;;
      # The floor relay only relays, and holds one fixed buffer.
      start | idle-* | big-1k | mid-1k) [[ $server == floor ]] && continue ;;
    esac
    echo "== round $ROUND/$REPEAT, $server: $scenario"
    wait_quiet
    if [[ $scenario == cluster-* ]]; then
      cluster_scenario "$scenario"
      sleep 1
      continue
    fi
    if [[ $scenario == nginx-* ]]; then
      start_server "$server" "$OUT/$server/$scenario.server.log" $limits "$BACKEND_PORT"
      start_nginx "$OUT/$server/$scenario.nginx"
    else
      start_server "$server" "$OUT/$server/$scenario.server.log" $limits
    fi
    case $scenario in
      start)
        sleep 0.2
        $LOAD stat --server-pid "$SERVER_PID" --binary "$OUT/$server/binary" --label start \
          --json "$OUT/$server/start.round$ROUND.json"
        ;;
      closed-1k-w1)
        load "$server" "$scenario" relay --connections 1000 --inflight 1 --warmup "$WARMUP" --duration "$DURATION"
        ;;
      closed-1k-w1-limits)
        # A longer warm-up spends each connection's burst allowance first, so that the window
        # shows the steady state: at most 100 messages/s per connection.
        load "$server" "$scenario" relay --connections 1000 --inflight 1 --warmup "$LIMITS_WARMUP" --duration "$DURATION"
        ;;
      closed-1k-w16)
        load "$server" "$scenario" relay --connections 1000 --inflight 16 --warmup "$WARMUP" --duration "$DURATION"
        ;;
      open-20k)
        load "$server" "$scenario" relay --connections 1000 --rate 20000 --warmup "$WARMUP" --duration "$DURATION"
        ;;
      open-20k-busy)
        load "$server" "$scenario" relay --connections 1000 --rate 20000 --warmup "$WARMUP" --duration "$DURATION" \
          --spin on
        ;;
      big-1k)
        load "$server" "$scenario" relay --connections 1000 --inflight 1 --payload 60000 --warmup 1 \
          --duration "$DURATION" --settle 2
        ;;
      mid-1k)
        load "$server" "$scenario" relay --connections 1000 --inflight 1 --payload 3000 --warmup 1 \
          --duration "$DURATION" --settle 3
        ;;
      flood-ping)
        load "$server" "$scenario" flood-latency --flooders 1 --frames ping --pace-ms 2 \
          --warmup "$WARMUP" --duration "$DURATION"
        ;;
      flood-ping-limits)
        load "$server" "$scenario" flood-latency --flooders 1 --frames ping --pace-ms 20 --reconnect on \
          --warmup "$WARMUP" --duration "$DURATION"
        ;;
      idle-10k)
        load "$server" "$scenario" idle --connections 10000 --hold "$HOLD"
        ;;
      idle-19k)
        load "$server" "$scenario" idle --connections 19000 --hold "$HOLD"
        ;;
      tls-closed-1k-w1)
        load "$server" "$scenario" relay --connections 1000 --inflight 1 --warmup "$WARMUP" --duration "$DURATION" \
          --tls on
        ;;
      nginx-tls-closed-1k-w1)
        load "$server" "$scenario" relay --connections 1000 --inflight 1 --warmup "$WARMUP" --duration "$DURATION" \
          --tls on
        ;;
      tls-idle-10k)
        load "$server" "$scenario" idle --connections 10000 --hold "$HOLD" --tls on
        ;;
      *)
        echo "unknown scenario $scenario" >&2
        exit 2
        ;;
    esac
    stop_server
    sleep 1
  done
done
done
rm -f "$OUT"/*/binary
for dir in "$OUT"/*/; do
  for scenario in $SCENARIOS; do
    runs=("$dir$scenario".round*.json)
    [[ -e ${runs[0]} ]] || continue
    $LOAD merge "$dir$scenario.json" "${runs[@]}"
  done
done

echo "load after: $(cut -d' ' -f1-3 /proc/loadavg)" >> "$OUT/machine.txt"
$LOAD table "$OUT" > "$OUT/table.md"
echo
echo "== results ($OUT)"
cat "$OUT/machine.txt"
echo
cat "$OUT/table.md"
echo
cat "$OUT/machine/hot_path.txt"
if [[ ${BENCH_STRICT:-0} == 1 ]]; then
  failed=$(grep -L '"errors_total": 0' "$OUT"/*/*.json | grep -v -e /machine/ -e '/start\.' || true)
  if [[ -n $failed ]]; then
    echo "errors in: $failed" >&2
    exit 1
  fi
fi
