# The cluster scenarios of bench/run.sh (sourced by it; uses its PORT, OUT, ROUND, DIVA,
# SERVER_CPU, start_server, stop_server, load and health_ok): one redis-server and two
# diva-signal nodes, all pinned to the server CPU, every pair of room members split between
# the two nodes; and, right before in the same round, the same load against one node
# without Redis, for the ratios.

PORT2=$((PORT + 1))
REDIS_PORT=${BENCH_REDIS_PORT:-$((PORT + 2))}
NODE2_PID=
REDIS_PID=

# Debian's redis-server, installed when missing (as root; CI installs it beforehand).
# Without it, and not root, the cluster scenarios are skipped (as CI skips the Redis tests).
ensure_redis() {
  command -v redis-server >/dev/null && return 0
  if [[ $(id -u) == 0 ]] && command -v apt-get >/dev/null; then
    echo "== installing redis-server (apt-get)"
    local get=(apt-get -o DPkg::Lock::Timeout=300 install -y -qq redis-server)
    DEBIAN_FRONTEND=noninteractive "${get[@]}" >/dev/null ||
      { apt-get update -qq && DEBIAN_FRONTEND=noninteractive "${get[@]}" >/dev/null; } || true
  fi
  command -v redis-server >/dev/null
}
if [[ " $SCENARIOS " == *" cluster-"* ]]; then
  if ensure_redis; then
    echo "redis-server: $(redis-server --version | sed -n 's/.*v=\([^ ]*\).*/\1/p')" >> "$OUT/machine.txt"
  else
    echo "NOTE: redis-server is missing and this is not root: the cluster scenarios are skipped" |
      tee -a "$OUT/machine.txt"
    SCENARIOS=$(tr ' ' '\n' <<<"$SCENARIOS" | { grep -v '^cluster-' || true; } | tr '\n' ' ')
  fi
fi

# Redis answers PING on $REDIS_PORT.
redis_ok() {
  local reply
  exec 4<>"/dev/tcp/127.0.0.1/$REDIS_PORT" 2>/dev/null || return 1
  printf 'PING\r\n' >&4
  read -r -t 2 reply <&4 || reply=
  exec 4>&-
  [[ $reply == +PONG* ]]
}

# The node on port $1 is connected to Redis and registered (its /health says so).
node_ready() {
  local body
  exec 3<>"/dev/tcp/127.0.0.1/$1" 2>/dev/null || return 1
  printf 'GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n' >&3
  body=$(timeout 2 cat <&3) || body=
  exec 3>&-
  [[ $body == *'"redis":"up"'* && $body != *'"live_nodes":0'* ]]
}

# Node 2 and Redis (node 1 is SERVER_PID, which stop_server stops).
stop_cluster() {
  stop_pid "$NODE2_PID"
  NODE2_PID=
  stop_pid "$REDIS_PID"
  REDIS_PID=
}

start_cluster() { # $1 = log file prefix
  local url=redis://127.0.0.1:$REDIS_PORT
  taskset -c "$SERVER_CPU" redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save "" --appendonly no \
    --daemonize no --logfile "$1.redis.log" >/dev/null 2>&1 &
  REDIS_PID=$!
  for _ in $(seq 50); do redis_ok && break; sleep 0.1; done
  redis_ok || { echo "redis-server did not come up; its log:" >&2; cat "$1.redis.log" >&2; return 1; }
  local limits=(--rate 1000000 --burst 1000000 --max-connections 19960 --max-connections-per-ip 0)
  taskset -c "$SERVER_CPU" $DIVA --bind 127.0.0.1 --port "$PORT" "${limits[@]}" --log-level warn \
    --redis-url "$url" 2>"$1.node1.log" &
  SERVER_PID=$!
  taskset -c "$SERVER_CPU" $DIVA --bind 127.0.0.1 --port "$PORT2" "${limits[@]}" --log-level warn \
    --redis-url "$url" 2>"$1.node2.log" &
  NODE2_PID=$!
  for _ in $(seq 100); do
    node_ready "$PORT" && node_ready "$PORT2" && return 0
    sleep 0.1
  done
  echo "the cluster's nodes did not come up; their logs:" >&2
  cat "$1.node1.log" "$1.node2.log" >&2
  return 1
}

cluster_scenario() { # $1 = scenario
  local scenario=$1 base=$1-base args
  case $scenario in
    cluster-closed-1k-w1) args=(relay --connections 1000 --inflight 1 --warmup "$WARMUP" --duration "$DURATION") ;;
    cluster-open-20k) args=(relay --connections 1000 --rate 20000 --warmup "$WARMUP" --duration "$DURATION") ;;
    *)
      echo "unknown scenario $scenario" >&2
      exit 2
      ;;
  esac
  # The same load against one node without Redis, right before: ratios within the round.
  start_server diva "$OUT/diva/$base.server.log" raised
  load diva "$base" "${args[@]}"
  stop_server
  sleep 1
  local baseline=()
  [[ -e $OUT/diva/$base.round$ROUND.json ]] && baseline=(--baseline "$OUT/diva/$base.round$ROUND.json")
  start_cluster "$OUT/diva/$scenario"
  SERVER_PIDS="$SERVER_PID,$NODE2_PID,$REDIS_PID" load diva "$scenario" "${args[@]}" \
    --target2 "127.0.0.1:$PORT2" --redis "127.0.0.1:$REDIS_PORT" "${baseline[@]}"
  stop_server
}
