#!/usr/bin/env bash
# Runs contrib/nginx.conf for real: nginx terminates TLS with a throwaway certificate and
# proxies to diva-signal; a Python client then speaks wss:// through it (handshake, a
# join and a ping), and /metrics must be denied on the public side.
# Installs nginx with apt-get when missing (needs root). Usage: .ci/nginx-check.sh BINARY
set -euo pipefail
bin=$(realpath "${1:?usage: $0 path/to/diva-signal}")
here=$(cd "$(dirname "$0")/.." && pwd)

if ! command -v nginx >/dev/null; then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nginx-light >/dev/null
fi

work=$(mktemp -d)
server_pid=""; nginx_started=""
cleanup() {
  [ -n "$nginx_started" ] && nginx -p "$work" -c "$work/nginx.conf" -s stop 2>/dev/null || true
  [ -n "$server_pid" ] && kill "$server_pid" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

openssl req -x509 -newkey rsa:2048 -nodes -days 1 -subj "/CN=signal.example.org" \
  -keyout "$work/key.pem" -out "$work/cert.pem" 2>/dev/null

backend=$((10000 + RANDOM % 5000)); https=$((backend + 5000)); http=$((backend + 10000))  # below the ephemeral range
# The example as shipped, with test ports, the throwaway certificate and no ACME root.
sed -e "s#127.0.0.1:3903#127.0.0.1:$backend#" \
    -e "s#listen 443 ssl http2;#listen 127.0.0.1:$https ssl http2;#" -e "/listen \[::\]:443/d" \
    -e "s#listen 80;#listen 127.0.0.1:$http;#" -e "/listen \[::\]:80/d" \
    -e "s#/etc/letsencrypt/live/signal.example.org/fullchain.pem#$work/cert.pem#" \
    -e "s#/etc/letsencrypt/live/signal.example.org/privkey.pem#$work/key.pem#" \
    "$here/contrib/nginx.conf" > "$work/site.conf"
mkdir -p "$work/logs"
cat > "$work/nginx.conf" <<CONF
daemon on;
pid $work/nginx.pid;
error_log $work/logs/error.log;
events {}
http {
  access_log off;
  client_body_temp_path $work/body;
  proxy_temp_path $work/proxy;
  include $work/site.conf;
}
CONF

"$bin" --bind 127.0.0.1 --port "$backend" 2>"$work/server.log" &
server_pid=$!
nginx -p "$work" -c "$work/nginx.conf" -t 2>&1 | tail -3
nginx -p "$work" -c "$work/nginx.conf"
nginx_started=1
for _ in $(seq 50); do grep -q "listening on" "$work/server.log" && break; sleep 0.1; done

python3 - "$https" "$http" <<'PY'
import base64, json, os, socket, ssl, struct, sys
https, http = int(sys.argv[1]), int(sys.argv[2])

def tls():
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    sock = ctx.wrap_socket(socket.create_connection(("127.0.0.1", https), timeout=5), server_hostname="signal.example.org")
    return sock

def read_head(sock):
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(4096)
        if not chunk:
            break
        data += chunk
    head, _, rest = data.partition(b"\r\n\r\n")
    return head.decode(), rest

def send_text(sock, text):
    payload = text.encode()
    mask = os.urandom(4)
    assert len(payload) < 126
    sock.sendall(bytes([0x81, 0x80 | len(payload)]) + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload)))

def recv_text(sock, buffered):
    data = buffered
    while True:
        if len(data) >= 2:
            length = data[1] & 0x7F
            start = 2
            if length == 126:
                length = struct.unpack(">H", data[2:4])[0]; start = 4
            if len(data) >= start + length:
                return data[start:start + length].decode(), data[start + length:]
        chunk = sock.recv(4096)
        assert chunk, "connection closed"
        data += chunk

sock = tls()
key = base64.b64encode(os.urandom(16)).decode()
sock.sendall(("GET /signal HTTP/1.1\r\nHost: signal.example.org\r\nUpgrade: websocket\r\n"
              "Connection: Upgrade\r\nSec-WebSocket-Key: %s\r\nSec-WebSocket-Version: 13\r\n\r\n" % key).encode())
head, rest = read_head(sock)
assert head.startswith("HTTP/1.1 101"), head
send_text(sock, '["join","alice","room"]')
reply, rest = recv_text(sock, rest)
assert json.loads(reply) == ["join", "room:alice"], reply
send_text(sock, '["ping"]')
reply, rest = recv_text(sock, rest)
assert json.loads(reply) == ["pong"], reply
print("wss through nginx: handshake, join and ping OK")

sock = tls()
sock.sendall(b"GET /metrics HTTP/1.1\r\nHost: signal.example.org\r\nConnection: close\r\n\r\n")
head, _ = read_head(sock)
assert head.startswith("HTTP/1.1 403"), head
print("/metrics through nginx: denied OK")

plain = socket.create_connection(("127.0.0.1", http), timeout=5)
plain.sendall(b"GET / HTTP/1.1\r\nHost: signal.example.org\r\nConnection: close\r\n\r\n")
head, _ = read_head(plain)
assert head.startswith("HTTP/1.1 301"), head
print("http redirects to https OK")
PY
echo "nginx-check: OK"
