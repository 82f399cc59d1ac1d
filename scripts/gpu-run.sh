#!/usr/bin/env bash
# Runs on the GPU machine (device tool: carry [".gpu"], command "bash scripts/gpu-run.sh [quick]"):
# the CUDA kernel tests, then the attention bench next to torch SDPA. Logs go to $OUT (or /tmp/ember-gpu).
# The CUDA user-space libraries (cublas, curand, cudart 13) come from torch's wheels there.
set -uo pipefail
cd "$(dirname "$0")/.."
out="${OUT:-/tmp/ember-gpu}"
mkdir -p "$out" /tmp/ember-gpu-bin
nvidia-smi --query-gpu=name,driver_version,memory.total,compute_cap --format=csv | tee "$out/gpu.txt"
echo "binaries built for compute capability $(cat .gpu/compute_cap)"
for t in cuda_kernels cuda_attention; do
  gzip -dc ".gpu/$t.gz" > "/tmp/ember-gpu-bin/$t" && chmod +x "/tmp/ember-gpu-bin/$t"
done
lib=$(python3 -c 'import nvidia, os; print(os.path.join(list(nvidia.__path__)[0], "cu13", "lib"))' 2>/dev/null)
export LD_LIBRARY_PATH="${lib}:/usr/local/cuda/lib64${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
export RUST_BACKTRACE=1
echo "== kernel tests"
/tmp/ember-gpu-bin/cuda_kernels --test-threads=1 --nocapture 2>&1 | tee "$out/tests.log"
tests=${PIPESTATUS[0]}
echo "== attention bench"
PYTHONUNBUFFERED=1 python3 benches/cuda_attention.py /tmp/ember-gpu-bin/cuda_attention ${1:-} 2>&1 | tee "$out/bench.log"
bench=${PIPESTATUS[0]}
echo "tests exit $tests, bench exit $bench"
[ "$tests" = 0 ] && [ "$bench" = 0 ]
