#!/usr/bin/env bash
# The GPU machine has no network, and the device tool carries at most 64 MiB per call, so the registry
# models the GPU checks use (smollm2-135m-instruct, 94 MB; qwen2.5-coder-0.5b-instruct, 469 MB) travel in 48 MiB
# pieces, one per call, into /tmp/ember-stage on the (warm) machine, where gpu-run.sh joins them:
#   scripts/gpu-models.sh plan        # how many pieces (fetches the models here first if needed)
#   scripts/gpu-models.sh piece K     # writes piece K (0-based) into .gpu-models/, replacing the last one
# and for K = 0 .. N-1, back to back (a machine stays warm only 30 s between calls):
#   run(command="bash scripts/gpu-run.sh stage", carry=[".gpu-models"])
# qwen2.5-coder-1.5b-instruct (1.1 GB, 23 pieces) is not staged: gpu-run.sh times random weights of its
# shape instead (the same bytes and kernels, so the same speed). EMBER_GPU_MODELS overrides the list.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
home="${EMBER_HOME:-$HOME/.cache/ember}"
piece_mib="${EMBER_GPU_PIECE_MIB:-48}"
models=(${EMBER_GPU_MODELS:-smollm2-135m-instruct qwen2.5-coder-0.5b-instruct})

# The GGUF of each alias, fetched into $home by ember's own loader if missing.
gguf() {
  local f
  f=$(ls "$home/models/$1"/*.gguf 2>/dev/null | head -1 || true)
  if [ -z "$f" ]; then
    echo "gpu-models: fetching $1 into $home" >&2
    cargo run --release -q -- generate --model "$1" --prompt x --max-tokens 1 >/dev/null
    f=$(ls "$home/models/$1"/*.gguf | head -1)
  fi
  printf '%s\n' "$f"
}

# One line per piece: alias, file, index within the file, pieces of the file.
plan() {
  local m f size n k
  for m in "${models[@]}"; do
    f=$(gguf "$m")
    size=$(stat -c %s "$f")
    n=$(( (size + piece_mib * 1048576 - 1) / (piece_mib * 1048576) ))
    for ((k = 0; k < n; k++)); do printf '%s %s %d %d\n' "$m" "$f" "$k" "$n"; done
  done
}

case "${1:-plan}" in
  plan)
    p=$(plan)
    printf '%s\n' "$p" | awk '{print $1, "piece", $3 + 1, "of", $4}' >&2
    echo "$(printf '%s\n' "$p" | wc -l) pieces of at most $piece_mib MiB" ;;
  piece)
    k="${2:?piece number}"
    line=$(plan | sed -n "$((k + 1))p")
    [ -n "$line" ] || { echo "gpu-models: no piece $k" >&2; exit 1; }
    read -r m f i n <<<"$line"
    rm -rf .gpu-models && mkdir -p .gpu-models
    name="$m--$(basename "$f")--$(printf '%02d' "$i")of$(printf '%02d' "$n")"
    dd if="$f" of=".gpu-models/$name" bs=1M skip=$((i * piece_mib)) count="$piece_mib" status=none
    echo "gpu-models: .gpu-models/$name ($(stat -c %s ".gpu-models/$name") bytes)" >&2 ;;
  *) echo "usage: $0 plan | piece K" >&2; exit 2 ;;
esac
