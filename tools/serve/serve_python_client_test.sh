#!/usr/bin/env bash
# //tools/serve:serve end to end from another language: the real binary on
# 127.0.0.1 (port picked by gRPC, read back from --port_file) with the tiny
# checkpoint, the Python client of serve_python_client.py, then SIGTERM,
# which must end the server cleanly (exit 0). Once plaintext, once TLS.
set -euo pipefail

# Debian's interpreter: python3-grpcio and python3-protobuf are installed
# for it (tools/setup.sh), matching the protoc that generated the stubs.
PYTHON=/usr/bin/python3
SERVE="$PWD/tools/serve/serve"
export PYTHONPATH="$PWD/tools/serve/py"
# Traffic to 127.0.0.1 never goes through a proxy.
unset http_proxy https_proxy HTTP_PROXY HTTPS_PROXY grpc_proxy no_grpc_proxy

if ! "$PYTHON" -c 'import grpc, google.protobuf' 2>/dev/null; then
  echo "serve_python_client_test: $PYTHON lacks grpc/protobuf: run tools/setup.sh" >&2
  exit 1
fi

tmp="${TEST_TMPDIR:-$(mktemp -d)}"
config="$tmp/tiny.textproto"
cat >"$config" <<CONFIG
model { path: "$PWD/tests/fixtures/hf_tiny/gqa" }
cache { page_size: 4 }
limits { max_concurrent_requests: 2 }
CONFIG

# run NAME [serve flags...]: serve, run the client against it, SIGTERM it.
run() {
  local name="$1"
  shift
  local port_file="$tmp/$name.port" log="$tmp/$name.log" client_args=()
  rm -f "$port_file"
  "$SERVE" --config "$config" --listen 127.0.0.1:0 --port_file "$port_file" --shutdown_grace 2s "$@" 2>"$log" &
  local pid=$!
  for _ in $(seq 300); do  # 30 s at most
    [[ -s "$port_file" ]] && break
    if ! kill -0 "$pid" 2>/dev/null; then
      echo "$name: serve exited before listening:" >&2
      cat "$log" >&2
      exit 1
    fi
    sleep 0.1
  done
  if [[ ! -s "$port_file" ]]; then
    echo "$name: serve did not listen within 30 s" >&2
    kill -KILL "$pid"
    cat "$log" >&2
    exit 1
  fi
  if [[ "$name" == tls ]]; then client_args=(--tls_root "$tmp/cert.pem"); fi
  if ! timeout 60 "$PYTHON" tools/serve/serve_python_client.py --target "127.0.0.1:$(cat "$port_file")" \
      "${client_args[@]}"; then
    echo "$name: the client failed; server log:" >&2
    kill -KILL "$pid"
    cat "$log" >&2
    exit 1
  fi
  kill -TERM "$pid"
  local rc=0
  timeout 30 tail --pid="$pid" -f /dev/null || { echo "$name: serve ignored SIGTERM" >&2; kill -KILL "$pid"; exit 1; }
  wait "$pid" || rc=$?
  if [[ $rc -ne 0 ]] || ! grep -q "serve: stopped" "$log"; then
    echo "$name: serve did not stop cleanly (exit $rc):" >&2
    cat "$log" >&2
    exit 1
  fi
  echo "$name: ok"
}

run plaintext

openssl req -x509 -newkey rsa:2048 -nodes -days 1 -subj /CN=localhost \
  -addext "subjectAltName=DNS:localhost,IP:127.0.0.1" \
  -keyout "$tmp/key.pem" -out "$tmp/cert.pem" 2>/dev/null
run tls --tls_cert "$tmp/cert.pem" --tls_key "$tmp/key.pem"
