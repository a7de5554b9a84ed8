#!/usr/bin/env bash
# Runs the CPU-backend evaluations on the GPU machine's 16 cores (the engine's
# CUDA backend does not exist yet; its CPUs are 8x this machine's). The
# default model travels in two halves, as in run_reference.sh:
#
#   here:   PACK_DIR=.gpu_eval tools/gpu/pack.sh //tools/eval:passkey //tools/eval:attention_recall
#           mkdir -p .gpu_eval/text && cp /usr/share/common-licenses/{GPL-3,GPL-2,LGPL-2.1} .gpu_eval/text/
#           mkdir -p .gpupack && tar cJf .gpupack/gpu.tar.xz --transform 's,^\.gpu_eval,.gpu,' .gpu_eval  # ~20 MB
#           split -n 3 -d .models/SmolLM2-135M-Instruct.Q4_1.gguf /tmp/gguf.part_
#           and move part_00/01/02 into .xfer/a, .xfer/b, .xfer/c
#   call 1 (carry .xfer/a .gpupack): tools/gpu/run_eval.sh stash
#   call 2 (carry .xfer/b):          tools/gpu/run_eval.sh stash
#   call 3 (carry .xfer/c):          tools/gpu/run_eval.sh recall [flags for attention_recall]
#   call 4:                          tools/gpu/run_eval.sh passkey [flags for passkey]
# (each call within the 64 MiB a call may carry; the machine keeps /tmp
# while it stays warm between calls)
# Results (tables, CSVs, logs) land in $OUT.
set -euo pipefail
cd "$(dirname "$0")/../.."
GGUF_SHA256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"
MODEL=/tmp/quest_xfer/model.gguf
export LD_LIBRARY_PATH=.gpu/lib OPENBLAS_NUM_THREADS="$(nproc)"
have_model() {
  if [[ ! -f $MODEL ]]; then
    cp .xfer/c/gguf.part_02 /tmp/quest_xfer/
    cat /tmp/quest_xfer/gguf.part_00 /tmp/quest_xfer/gguf.part_01 /tmp/quest_xfer/gguf.part_02 > $MODEL
  fi
  echo "$GGUF_SHA256  $MODEL" | sha256sum --check --quiet
  [[ -d /tmp/quest_gpu/.gpu ]] || { echo "run_eval: binaries not stashed" >&2; exit 1; }
  rm -rf .gpu && ln -s /tmp/quest_gpu/.gpu .gpu
}
cmd="${1:-}"; shift || true
case "$cmd" in
  stash)
    mkdir -p /tmp/quest_xfer /tmp/quest_gpu
    for part in .xfer/*/gguf.part_*; do [[ -f $part ]] && cp "$part" /tmp/quest_xfer/; done
    if [[ -f .gpupack/gpu.tar.xz ]]; then tar xJf .gpupack/gpu.tar.xz -C /tmp/quest_gpu; fi
    ls -la /tmp/quest_xfer; nproc; lscpu | grep -E "Model name" || true
    ;;
  recall)
    have_model
    .gpu/bin/attention_recall --model=$MODEL --text_files=.gpu/text/GPL-3,.gpu/text/GPL-2,.gpu/text/LGPL-2.1 \
        --csv="$OUT/recall.csv" "$@" 2> "$OUT/recall.log" | tee "$OUT/recall.txt"
    ;;
  passkey)
    have_model
    .gpu/bin/passkey --model=$MODEL --csv="$OUT/passkey.csv" "$@" 2> "$OUT/passkey.log" | tee "$OUT/passkey.txt"
    ;;
  *) echo "usage: $0 stash|recall|passkey [flags]" >&2; exit 2 ;;
esac
