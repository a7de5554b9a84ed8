#!/usr/bin/env bash
# Regenerates the Hugging Face reference fixtures on the GPU machine (which
# has torch + transformers). The default model (98 MB) is larger than one
# device call may carry (64 MiB), so it travels in two halves in two
# back-to-back calls while the machine stays warm:
#
#   here:   tools/gpu/pack.sh //tools/gguf_to_hf
#           mkdir -p .xfer/a .xfer/b && split -b 50000000 .models/SmolLM2-135M-Instruct.Q4_1.gguf /tmp/gguf.part_
#           mv /tmp/gguf.part_aa .xfer/a/ && mv /tmp/gguf.part_ab .xfer/b/
#   call 1 (carry .xfer/a):       tools/gpu/run_reference.sh part1
#   call 2 (carry .xfer/b .gpu):  tools/gpu/run_reference.sh part2
#   here:   copy $OUT's hf_tiny.tgz / smollm2_greedy.json into tests/fixtures/
set -euo pipefail
cd "$(dirname "$0")/../.."
GGUF_SHA256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"
case "${1:-}" in
  part1)
    mkdir -p /tmp/quest_xfer && cp .xfer/a/gguf.part_aa /tmp/quest_xfer/
    python3 tools/reference/hf_reference.py tiny --out /tmp/hf_tiny 2>&1 | grep -v -i warn
    tar czf "$OUT/hf_tiny.tgz" -C /tmp hf_tiny
    ;;
  part2)
    cat /tmp/quest_xfer/gguf.part_aa .xfer/b/gguf.part_ab > /tmp/quest_xfer/model.gguf
    echo "$GGUF_SHA256  /tmp/quest_xfer/model.gguf" | sha256sum --check
    LD_LIBRARY_PATH=.gpu/lib .gpu/bin/gguf_to_hf --gguf=/tmp/quest_xfer/model.gguf --out=/tmp/smollm2_hf
    cp tests/fixtures/smollm2_greedy.json "$OUT/"
    python3 tools/reference/hf_reference.py greedy --model-dir /tmp/smollm2_hf \
        --fixture "$OUT/smollm2_greedy.json" --steps 32 2>&1 | grep -v -i warn
    ;;
  *) echo "usage: $0 part1|part2" >&2; exit 2 ;;
esac
