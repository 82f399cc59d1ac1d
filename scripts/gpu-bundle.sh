#!/usr/bin/env bash
# Packs what the GPU machine needs into .gpu/ (ignored by git; pass it as the device tool's `carry`). The
# GPU machine has no Rust toolchain and no network, so everything is built and packed here:
#   CUDA_COMPUTE_CAP=90 scripts/gpu-bundle.sh     (90: the H100; 89: an L40S)
# - the kernel tests and attention bench (cuda_kernels, cuda_attention);
# - the engine checks: the `ember` binary, the CUDA-vs-CPU engine tests (gpu_engine) and the decode bench
#   (gpu_decode), all built with `cuda`;
# - the CPU kernel tests (quant, kernels, rowwise) and the CPU kernels bench, for the host's CPU (cpu mode);
# - the arc_easy data for the fp8 KV eval delta (from $EMBER_HOME/data; `ember data` fetches it).
# Binaries are xz-compressed; the whole bundle must stay well under the 64 MiB carry limit (checked).
# The models travel separately, in pieces: scripts/gpu-models.sh. Then on the GPU machine:
#   bash scripts/gpu-run.sh [kernels|e2e|cpu|all] [quick]
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
export CUDA_COMPUTE_CAP="${CUDA_COMPUTE_CAP:-90}"
home="${EMBER_HOME:-$HOME/.cache/ember}"
out=$(scripts/build-cuda.sh --tests --test gpu_engine --bench gpu_decode \
  --test quant --test kernels --test rowwise --bench kernels --message-format=json 2>/dev/null)
exe() { # the executable of target $1 of kind $2 (test, bench or bin)
  printf '%s\n' "$out" | python3 -c '
import json, sys
for line in sys.stdin:
    if not line.startswith("{"): continue
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m["target"]["name"] == sys.argv[1] and m.get("executable"):
        if sys.argv[2] in m["target"]["kind"] and (sys.argv[2] != "bin" or not m["profile"]["test"]):
            print(m["executable"])' "$1" "$2" | tail -1
}
rm -rf .gpu && mkdir -p .gpu
# name:target:kind. The CPU kernel tests and bench run on the GPU host's CPU (gpu-run.sh cpu): it may have
# AVX-512, which the development machines lack.
for t in cuda_kernels:cuda_kernels:test cuda_attention:cuda_attention:bench gpu_engine:gpu_engine:test \
  gpu_decode:gpu_decode:bench ember:ember:bin cpu_quant:quant:test cpu_kernels:kernels:test \
  cpu_rowwise:rowwise:test cpu_bench:kernels:bench; do
  IFS=: read -r name target kind <<<"$t"
  f=$(exe "$target" "$kind")
  [ -n "$f" ] || { echo "gpu-bundle: no executable for $target ($kind)" >&2; exit 1; }
  xz -6 -T2 -c "$f" > ".gpu/$name.xz"
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
