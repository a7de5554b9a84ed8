#!/usr/bin/env bash
# //tools/load:load end to end: the real serve binary on 127.0.0.1 (port
# picked by gRPC, read back from --port_file) with the tiny checkpoint, the
# load tool for 3 s with 4 clients (zero errors, KV pages back to 0), then
# SIGTERM, which must end the server cleanly.
set -euo pipefail

SERVE="$PWD/tools/serve/serve"
LOAD="$PWD/tools/load/load"
unset http_proxy https_proxy HTTP_PROXY HTTPS_PROXY grpc_proxy no_grpc_proxy

# Non-loopback targets are refused before anything is sent.
for bad in 10.0.0.1:50051 8.8.8.8:443 example.com:50051 [2001:db8::1]:50051 [::ffff:8.8.8.8]:1 0.0.0.0:50051 \
    127.0.0.1 127.0.0.1:0 localhost.example.com:1; do
  if msg=$("$LOAD" --target="$bad" --seconds=1 2>&1); then
    echo "load accepted non-loopback target $bad" >&2
    exit 1
  fi
  if ! grep -Eq 'not a loopback address|expected HOST:PORT|bad port' <<<"$msg"; then
    echo "load did not refuse $bad up front: $msg" >&2
    exit 1
  fi
done

tmp="${TEST_TMPDIR:-$(mktemp -d)}"
config="$tmp/tiny.textproto"
cat >"$config" <<CONFIG
model { path: "$PWD/tests/fixtures/hf_tiny/gqa" }
cache { page_size: 4 }
limits { max_concurrent_requests: 4 }
CONFIG

port_file="$tmp/port" log="$tmp/serve.log"
"$SERVE" --config "$config" --listen 127.0.0.1:0 --port_file "$port_file" --shutdown_grace 2s 2>"$log" &
pid=$!
trap 'kill -KILL "$pid" 2>/dev/null || true' EXIT
for _ in $(seq 300); do  # 30 s at most
  [[ -s "$port_file" ]] && break
  if ! kill -0 "$pid" 2>/dev/null; then
    echo "serve exited before listening:" >&2
    cat "$log" >&2
    exit 1
  fi
  sleep 0.1
done
if [[ ! -s "$port_file" ]]; then
  echo "serve did not listen within 30 s" >&2
  cat "$log" >&2
  exit 1
fi

out="$tmp/load.out"
rc=0
timeout 120 "$LOAD" --target="127.0.0.1:$(cat "$port_file")" --clients=4 --seconds=3 --max_tokens=8 \
  --prompt_tokens=8 >"$out" 2>&1 || rc=$?
cat "$out"
if [[ $rc -ne 0 ]]; then
  echo "load exited $rc; server log:" >&2
  cat "$log" >&2
  exit 1
fi
grep -Eq '^requests: +[1-9][0-9]* ok, 0 errors$' "$out" || { echo "expected requests and zero errors" >&2; exit 1; }
grep -q '^errors: none$' "$out" || { echo "expected no errors" >&2; exit 1; }
grep -Eq '^kv pages in use: +before 0, after 0$' "$out" || { echo "expected KV pages back to 0" >&2; exit 1; }
grep -Eq '^time to first token: p50 [0-9.]+ ms, p99 [0-9.]+ ms' "$out" || { echo "no TTFT percentiles" >&2; exit 1; }

kill -TERM "$pid"
timeout 30 tail --pid="$pid" -f /dev/null || { echo "serve ignored SIGTERM" >&2; exit 1; }
rc=0
wait "$pid" || rc=$?
trap - EXIT
if [[ $rc -ne 0 ]] || ! grep -q "serve: stopped" "$log"; then
  echo "serve did not stop cleanly (exit $rc):" >&2
  cat "$log" >&2
  exit 1
fi
echo "ok"
