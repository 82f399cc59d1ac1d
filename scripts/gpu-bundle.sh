#!/usr/bin/env bash
# Packs what the GPU machine needs into .gpu/ (ignored by git; pass it as the device tool's `carry`). The
# GPU machine has no Rust toolchain and no network, so everything is built and packed here:
#   CUDA_COMPUTE_CAP=90 scripts/gpu-bundle.sh     (90: the H100; 89: an L40S)
# - the kernel tests and attention bench (cuda_kernels, cuda_attention);
# - the engine checks: the `ember` binary, the CUDA-vs-CPU engine tests (gpu_engine) and the decode bench
#   (gpu_decode), all built with `cuda`;
# - the arc_easy data for the fp8 KV eval delta (from $EMBER_HOME/data; `ember data` fetches it).
# Binaries are xz-compressed; the whole bundle must stay well under the 64 MiB carry limit (checked).
# The models travel separately, in pieces: scripts/gpu-models.sh. Then on the GPU machine:
#   bash scripts/gpu-run.sh [kernels|e2e|all] [quick]
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
export CUDA_COMPUTE_CAP="${CUDA_COMPUTE_CAP:-90}"
home="${EMBER_HOME:-$HOME/.cache/ember}"
out=$(scripts/build-cuda.sh --tests --test gpu_engine --bench gpu_decode --message-format=json 2>/dev/null)
exe() { # the executable of target $1 (a test, bench or the ember binary)
  printf '%s\n' "$out" | python3 -c '
import json, sys
for line in sys.stdin:
    if not line.startswith("{"): continue
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m["target"]["name"] == sys.argv[1] and m.get("executable"):
        if sys.argv[1] != "ember" or "bin" in m["target"]["kind"]:
            print(m["executable"])' "$1" | tail -1
}
rm -rf .gpu && mkdir -p .gpu
for t in cuda_kernels cuda_attention gpu_engine gpu_decode ember; do
  f=$(exe $t)
  [ -n "$f" ] || { echo "gpu-bundle: no executable for $t" >&2; exit 1; }
  xz -6 -T2 -c "$f" > ".gpu/$t.xz"
done
if [ -f "$home/data/arc_easy/test.jsonl" ]; then
  xz -9 -c "$home/data/arc_easy/test.jsonl" > .gpu/arc_easy.test.jsonl.xz
else
  echo "gpu-bundle: no $home/data/arc_easy/test.jsonl (run: ember data fetch arc_easy); the eval row will skip" >&2
fi
echo "$CUDA_COMPUTE_CAP" > .gpu/compute_cap
ls -la .gpu >&2
total=$(du -cb .gpu/* | tail -1 | cut -f1)
echo "gpu-bundle: $((total / 1048576)) MiB in .gpu" >&2
[ "$total" -lt $((60 * 1048576)) ] || { echo "gpu-bundle: over 60 MiB: it will not travel" >&2; exit 1; }
