#!/usr/bin/env bash
# Proves the static binary needs nothing around it, as in a `scratch` container image:
# it must be statically linked, and start, serve /health and stop on SIGTERM inside an
# empty chroot. Needs root (chroot). Usage: .ci/static-check.sh PATH-TO-STATIC-BINARY
set -euo pipefail
bin=${1:?usage: $0 path/to/static/diva-signal}

description=$(file -b "$bin")
echo "file: $description"
case "$description" in
  *"statically linked"*|*"static-pie linked"*) ;;
  *) echo "FAIL: $bin is not statically linked"; exit 1 ;;
esac
libraries=$(ldd "$bin" 2>&1 || true)
case "$libraries" in
  *"statically linked"*|*"not a dynamic executable"*) echo "ldd: $libraries" ;;
  *) echo "FAIL: ldd finds dynamic dependencies:"; echo "$libraries"; exit 1 ;;
esac

root=$(mktemp -d)
chmod 755 "$root"
pid=""
log=$(mktemp)
trap '[ -n "$pid" ] && kill "$pid" 2>/dev/null || true; rm -rf "$root" "$log"' EXIT
cp "$bin" "$root/diva-signal"
echo "empty root: $(find "$root" | tr '\n' ' ')"

chroot --userspec=65534:65534 "$root" /diva-signal --version

port=$((25000 + RANDOM % 7000))  # below the ephemeral range
chroot --userspec=65534:65534 "$root" /diva-signal --bind 127.0.0.1 --port "$port" 2>"$log" &
pid=$!
for _ in $(seq 50); do
  grep -q "listening on" "$log" && break
  sleep 0.1
done
grep -q "listening on" "$log" || { echo "FAIL: server did not start"; cat "$log"; exit 1; }

exec 3<>"/dev/tcp/127.0.0.1/$port"
printf 'GET /health HTTP/1.1\r\nHost: x\r\n\r\n' >&3
response=$(timeout 5 cat <&3)
exec 3<&-
echo "$response" | head -1
echo "$response" | grep -q '"status":"ok"' || { echo "FAIL: /health did not answer"; echo "$response"; exit 1; }

kill -TERM "$pid"
status=0
wait "$pid" || status=$?
[ "$status" -eq 0 ] || { echo "FAIL: exit status $status after SIGTERM"; cat "$log"; exit 1; }
echo "static-check: OK (static, runs as nobody in an empty root, serves, exits 0 on SIGTERM)"
