#!/usr/bin/env bash
# Runs the embedding example on the tiny test checkpoint and checks that both
# requests generated and every KV page came back.
set -euo pipefail
out="$("$1" "$2")"
echo "$out"
grep -Eq '^dense: [1-9][0-9]* tokens \([1-9][0-9]* streamed\)' <<<"$out"
grep -Eq '^quest: [1-9][0-9]* tokens' <<<"$out"
grep -q '^kv pages in use after both: 0 of ' <<<"$out"
