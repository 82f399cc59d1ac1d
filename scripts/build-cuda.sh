#!/usr/bin/env bash
# Builds ember with the `cuda` feature on a machine with no GPU and no CUDA install (REFERENCE §7):
#   1. installs PyPI's CUDA 13.0 toolkit wheels (nvcc, headers, runtime libraries) into .venv-cuda (once);
#   2. adds the unversioned .so symlinks the linker needs (the wheels ship only .so.13);
#   3. generates a stub libcuda.so (soname libcuda.so.1) from the driver API's cu* names, since PyPI has no
#      driver; the real libcuda.so.1 of the GPU machine replaces it at run time;
#   4. runs cargo with nvcc on PATH and CUDA_COMPUTE_CAP set (default 89, the L40S; 90 for the H100).
#
#   scripts/build-cuda.sh [--check | --env | --tests] [extra cargo args...]
#     (default)  cargo build --release --features cuda
#     --check    cargo check --release --features cuda --workspace --all-targets (build scripts still run
#                nvcc on every kernel, so a kernel that does not compile fails)
#     --tests    builds the GPU kernel tests (kernels/tests/cuda_kernels.rs) and the attention bench without
#                running them, with the same feature set as the build (so nothing is rebuilt twice)
#     --env      only prepares the toolkit and prints `export` lines for the environment (eval "$(...)")
# Idempotent: a second run reuses the toolkit. Keep nvcc at 13.0: the GPU machine's driver (580) is CUDA
# 13.0 and cannot load PTX from a newer nvcc.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
venv="${EMBER_CUDA_VENV:-$root/.venv-cuda}"
wheels=(
  nvidia-cuda-nvcc==13.0.88 nvidia-cuda-crt==13.0.88 nvidia-nvvm==13.0.88 nvidia-cuda-cccl==13.0.85
  nvidia-cuda-runtime==13.0.96 nvidia-cuda-nvrtc==13.0.88 nvidia-cublas==13.0.2.14 nvidia-curand==10.4.5.25
)
cu="$venv/site/nvidia/cu13"
stamp="$venv/.ready-$(printf '%s\n' "${wheels[@]}" | sha256sum | cut -c1-12)"

prepare() {
  [ -f "$stamp" ] && return
  exec 9>"$venv.lock"
  flock 9
  [ -f "$stamp" ] && return
  rm -rf "$venv"
  mkdir -p "$venv"
  echo "build-cuda: installing the CUDA 13.0 wheels into $venv (about 680 MB)" >&2
  # `pip --target` instead of a venv: nothing here runs Python, and it works where python3-venv is missing.
  python3 -m pip install --quiet --disable-pip-version-check --no-deps --only-binary=:all: \
    --target "$venv/site" "${wheels[@]}" >&2
  [ -x "$cu/bin/nvcc" ] || { echo "build-cuda: no nvcc at $cu/bin after install" >&2; exit 1; }
  # nvcc finds cicc/libdevice under nvvm/ next to its bin/ — the nvvm wheel installs it there already.
  # Unversioned names for the linker (-lcublas etc.).
  (cd "$cu/lib" && for f in lib*.so.*; do
    base="${f%%.so.*}.so"
    [ -e "$base" ] || ln -s "$f" "$base"
  done)
  touch "$stamp"
}

# Stub driver: every cu* function named in cuda.h (and the versioned names its #defines map to), each
# returning CUDA_ERROR_NO_DEVICE (100). The link only needs the names; a binary run here against the stub
# (LD_LIBRARY_PATH=.venv-cuda/stub) sees "no CUDA device" and the GPU tests skip instead of crashing.
stub() {
  local header="$cu/include/cuda.h" src="$venv/libcuda_stub.c.new"
  [ -f "$header" ] || { echo "build-cuda: $header missing" >&2; exit 1; }
  {
    grep -oE '\bCUDAAPI[[:space:]]+cu[A-Za-z0-9_]+[[:space:]]*\(' "$header" | sed -E 's/CUDAAPI[[:space:]]+//; s/[[:space:]]*\(//'
    grep -oE '^#[[:space:]]*define[[:space:]]+cu[A-Za-z0-9_]+[[:space:]]+cu[A-Za-z0-9_]+' "$header" | awk '{print $NF}'
  } | sort -u | awk '{printf "int %s(void) { return 100; }\n", $1}' > "$src"
  if ! cmp -s "$src" "$venv/libcuda_stub.c" || [ ! -e "$venv/stub/libcuda.so.1" ]; then
    mv "$src" "$venv/libcuda_stub.c"
    mkdir -p "$venv/stub"
    cc -shared -fPIC -Wl,-soname,libcuda.so.1 -o "$venv/stub/libcuda.so.1" "$venv/libcuda_stub.c"
    ln -sf libcuda.so.1 "$venv/stub/libcuda.so"
    echo "build-cuda: stub libcuda with $(wc -l < "$venv/libcuda_stub.c") symbols" >&2
  else
    rm -f "$src"
  fi
}

prepare
stub
export PATH="$cu/bin:$PATH"
export CUDA_HOME="$cu" CUDA_PATH="$cu" CUDA_ROOT="$cu"
export CUDA_COMPUTE_CAP="${CUDA_COMPUTE_CAP:-89}"
# The linker (cc) searches LIBRARY_PATH for -lcuda/-lcublas; RUSTFLAGS stay untouched so the non-CUDA
# dependencies keep their cached builds.
export LIBRARY_PATH="$venv/stub:$cu/lib${LIBRARY_PATH:+:$LIBRARY_PATH}"
# Test binaries and build scripts that run here need the toolkit libraries (never the stub driver: with no
# driver, cudarc's device creation fails cleanly and the GPU tests skip).
export LD_LIBRARY_PATH="$cu/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"

mode="${1:-}"
case "$mode" in
  --env)
    for v in PATH CUDA_HOME CUDA_PATH CUDA_ROOT CUDA_COMPUTE_CAP LIBRARY_PATH LD_LIBRARY_PATH; do
      printf 'export %s=%q\n' "$v" "${!v}"
    done
    exit 0 ;;
  --check) shift; set -- check --release --features cuda --workspace --all-targets "$@" ;;
  # `-p ember-kernels` alone would resolve other features for candle and rebuild it (and its kernels);
  # selecting the test target across the workspace keeps the build's feature set.
  --tests) shift; set -- test --release --features cuda --workspace --test cuda_kernels --bench cuda_attention --no-run "$@" ;;
  *) set -- build --release --features cuda "$@" ;;
esac
echo "build-cuda: nvcc $(nvcc --version | sed -n 's/.*release \([0-9.]*\).*/\1/p'), CUDA_COMPUTE_CAP=$CUDA_COMPUTE_CAP: cargo $*" >&2
cd "$root"
exec cargo "$@"
