#!/usr/bin/env bash
# Packs what the GPU machine needs to check ember's CUDA kernels into .gpu/ (ignored by git; pass it as the
# device tool's `carry`). The GPU machine has no Rust toolchain, so the binaries are built here:
#   CUDA_COMPUTE_CAP=90 scripts/gpu-bundle.sh     (90: the H100; 89: an L40S)
# then on the GPU machine: bash scripts/gpu-run.sh [quick]
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
export CUDA_COMPUTE_CAP="${CUDA_COMPUTE_CAP:-90}"
out=$(scripts/build-cuda.sh --tests --message-format=json 2>/dev/null)
exe() { # the executable of test/bench target $1
  printf '%s\n' "$out" | python3 -c '
import json, sys
for line in sys.stdin:
    if not line.startswith("{"): continue
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m["target"]["name"] == sys.argv[1] and m.get("executable"):
        print(m["executable"])' "$1" | tail -1
}
rm -rf .gpu && mkdir -p .gpu
for t in cuda_kernels cuda_attention; do
  f=$(exe $t)
  [ -n "$f" ] || { echo "gpu-bundle: no executable for $t" >&2; exit 1; }
  gzip -9 -c "$f" > ".gpu/$t.gz"
done
echo "$CUDA_COMPUTE_CAP" > .gpu/compute_cap
ls -la .gpu >&2
