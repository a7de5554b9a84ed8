#!/usr/bin/env bash
# Builds Bazel targets here and packs what must travel to the GPU machine
# (which has no Bazel, gRPC, absl or glog) into .gpu/ (git-ignored):
#   .gpu/bin/<name>   the binaries (our code is linked in statically)
#   .gpu/lib/         the shared libraries they need that the GPU machine's
#                     Ubuntu image lacks (Debian's absl, glog, gRPC, ...)
# Run there with: LD_LIBRARY_PATH=.gpu/lib:/usr/local/cuda/lib64 .gpu/bin/<name>
# PACK_DIR=.gpu_other packs elsewhere (two packs at once must not share a dir).
#
#   tools/gpu/pack.sh //tools/gguf_to_hf //ops/cuda:some_test ...
set -euo pipefail
cd "$(dirname "$0")/../.."
[[ $# -gt 0 ]] || { echo "usage: $0 TARGET..." >&2; exit 2; }

bazel build --dynamic_mode=off "$@" >&2
PACK_DIR="${PACK_DIR:-.gpu}"
rm -rf "$PACK_DIR" && mkdir -p "$PACK_DIR/bin" "$PACK_DIR/lib"
# Libraries the GPU image has itself (glibc, the C++ runtime, CUDA).
keep='^(linux-vdso|ld-linux|libc\.|libm\.|libdl\.|librt\.|libpthread\.|libstdc\+\+|libgcc_s|libcuda|libcudart|libcublas|libnvidia)'
for target in "$@"; do
  # //pkg:name (or //pkg/name) -> bazel-bin/pkg/name
  label="${target#//}"
  [[ "$label" == *:* ]] || label="$label:${label##*/}"
  for f in "bazel-bin/${label%%:*}/${label##*:}"; do
    [[ -x "$f" && ! -d "$f" ]] || { echo "pack: no binary at $f" >&2; exit 1; }
    cp -L "$f" "$PACK_DIR/bin/"
    ldd "$f" | awk '/=> \//{print $1, $3}' | while read -r name path; do
      [[ "$name" =~ $keep ]] || cp -L -n "$path" "$PACK_DIR/lib/"
    done
  done
done
du -sh "$PACK_DIR/bin" "$PACK_DIR/lib" >&2
