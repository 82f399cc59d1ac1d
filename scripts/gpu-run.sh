#!/usr/bin/env bash
# Runs on the GPU machine through the device tool, after scripts/gpu-bundle.sh (and, for the real-model
# rows, scripts/gpu-models.sh) here:
#   bash scripts/gpu-run.sh stage            carry [".gpu-models"]: keep one model piece (see gpu-models.sh)
#   bash scripts/gpu-run.sh kernels [quick]  carry [".gpu"]: kernel tests + attention bench vs torch SDPA
#   bash scripts/gpu-run.sh e2e              carry [".gpu"]: the CUDA engine end to end (below)
#   bash scripts/gpu-run.sh cpu [quick]      carry [".gpu"]: CPU kernel tests + bench on the host's CPU
#   bash scripts/gpu-run.sh [all] [quick]    both (may not fit one 10-minute call: prefer two calls)
# e2e: the CUDA-vs-CPU engine tests (greedy tokens, fp8 vs bf16 KV logits, pool sizing, CUDA-graph decode
# vs eager), `ember generate --device cuda` (eager, then EMBER_CUDA_GRAPHS=1), decode tok/s vs the batch-1
# roofline at batch 1/64/256 (bf16 and fp8 KV; eager and CUDA graph side by side), `ember bench`
# in-process (greedy; eager, then with CUDA graphs), and the arc_easy (200 docs) accuracy with --kv-cache-dtype auto vs fp8. A row whose
# model was not staged says so and is skipped. Logs go to $OUT (or /tmp/ember-gpu); a table is printed last.
set -uo pipefail
cd "$(dirname "$0")/.."
out="${OUT:-/tmp/ember-gpu}"
bin=/tmp/ember-gpu-bin
stage=/tmp/ember-stage
export EMBER_HOME=/tmp/ember-home
mkdir -p "$out" "$bin" "$stage" "$EMBER_HOME/models"
mode="${1:-all}"
[ "$mode" = quick ] && mode=all
quick=""
for a in "$@"; do [ "$a" = quick ] && quick=quick; done

# Joins staged pieces (`ALIAS--FILE--KKofNN`) into $EMBER_HOME/models/ALIAS/FILE once all are there;
# ember checks the sha256 on first load.
join_models() {
  local groups g alias file n have
  groups=$(ls "$stage" 2>/dev/null | sed -E 's/--[0-9]+of[0-9]+$//' | sort -u)
  for g in $groups; do
    alias="${g%%--*}"; file="${g#*--}"
    n=$(ls "$stage" | grep -F -- "$g--" | head -1 | sed -E 's/.*of0*([0-9]+)$/\1/')
    have=$(ls "$stage" | grep -cF -- "$g--")
    if [ -f "$EMBER_HOME/models/$alias/$file" ]; then
      echo "model $alias: ready"
    elif [ "$have" = "$n" ]; then
      mkdir -p "$EMBER_HOME/models/$alias"
      cat $(ls "$stage"/"$g"--* | sort) > "$EMBER_HOME/models/$alias/$file" && rm -f "$stage/$g"--*
      echo "model $alias: joined ($(stat -c %s "$EMBER_HOME/models/$alias/$file") bytes)"
    else
      echo "model $alias: $have of $n pieces staged"
    fi
  done
  echo "models ready: $(cd "$EMBER_HOME/models" && ls | tr '\n' ' ')"
}
have_model() { ls "$EMBER_HOME/models/$1/"*.gguf >/dev/null 2>&1; }

if [ "$mode" = stage ]; then
  if [ -d .gpu-models ]; then mv .gpu-models/* "$stage/" 2>/dev/null; fi
  join_models
  exit 0
fi

nvidia-smi --query-gpu=name,driver_version,memory.total,compute_cap --format=csv | tee "$out/gpu.txt"
echo "binaries built for compute capability $(cat .gpu/compute_cap)"
# The host CPU and its SIMD extensions: whether this machine could test CPU kernel families that the
# development machines lack (AVX-512, AVX-VNNI).
{ grep -m1 'model name' /proc/cpuinfo; grep -m1 -o -E 'avx512[a-z_]*|avx_vnni|amx[a-z_]*' /proc/cpuinfo |
  sort -u | tr '\n' ' '; echo; } | tee "$out/cpu.txt"
for f in .gpu/*.xz; do
  t=$(basename "$f" .xz)
  case "$t" in *.jsonl) continue ;; esac
  xz -dc "$f" > "$bin/$t" && chmod +x "$bin/$t"
done
lib=$(python3 -c 'import nvidia, os; print(os.path.join(list(nvidia.__path__)[0], "cu13", "lib"))' 2>/dev/null)
export LD_LIBRARY_PATH="${lib}:/usr/local/cuda/lib64${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
export RUST_BACKTRACE=1
declare -a rows=()
row() { rows+=("| $1 | $2 |"); }

if [ "$mode" = kernels ] || [ "$mode" = all ]; then
  echo "== kernel tests"
  "$bin/cuda_kernels" --test-threads=1 --nocapture 2>&1 | tee "$out/tests.log"
  row "kernel tests" "exit ${PIPESTATUS[0]}: $(grep -E '^test result' "$out/tests.log" | tail -1)"
  echo "== attention bench"
  PYTHONUNBUFFERED=1 python3 benches/cuda_attention.py "$bin/cuda_attention" $quick 2>&1 | tee "$out/bench.log"
  row "attention bench" "exit ${PIPESTATUS[0]} (table above, log bench.log)"
fi

if [ "$mode" = cpu ] || [ "$mode" = all ]; then
  # The CPU kernels on this host's CPU: the tests compare every family it offers with the portable one
  # bit for bit (EMBER_EXPECT_ISA: the family its flags promise must be the one detected), then the
  # kernels bench, whose last table times the families side by side.
  flags=$(grep -m1 '^flags' /proc/cpuinfo)
  if grep -qw avx512_vnni <<<"$flags" && grep -qw avx512vl <<<"$flags"; then
    export EMBER_EXPECT_ISA=avx512vnni
  else
    export EMBER_EXPECT_ISA=avx2
  fi
  for t in cpu_quant cpu_kernels cpu_rowwise; do
    echo "== $t (expecting $EMBER_EXPECT_ISA)"
    "$bin/$t" 2>&1 | tee "$out/$t.log"
    row "$t ($EMBER_EXPECT_ISA)" "exit ${PIPESTATUS[0]}: $(grep -E '^test result' "$out/$t.log" | tail -1)"
  done
  echo "== CPU kernels bench"
  "$bin/cpu_bench" $quick 2>&1 | tee "$out/cpu_bench.log"
  row "CPU kernels bench" "exit ${PIPESTATUS[0]}: $(head -1 "$out/cpu_bench.log") (log cpu_bench.log)"
  unset EMBER_EXPECT_ISA
fi

if [ "$mode" = e2e ] || [ "$mode" = all ]; then
  join_models
  if [ -f .gpu/arc_easy.test.jsonl.xz ]; then
    mkdir -p "$EMBER_HOME/data/arc_easy"
    xz -dc .gpu/arc_easy.test.jsonl.xz > "$EMBER_HOME/data/arc_easy/test.jsonl"
  fi
  echo "== engine tests (CUDA vs CPU)"
  "$bin/gpu_engine" --test-threads=1 --nocapture 2>&1 | tee "$out/engine.log"
  row "engine tests" "exit ${PIPESTATUS[0]}: $(grep -E '^test result' "$out/engine.log" | tail -1)"
  while read -r l; do row "greedy CUDA vs CPU" "$l"; done < <(grep -E 'first divergence' "$out/engine.log")
  while read -r l; do row "fp8 KV logits" "$l"; done < <(grep -E 'relative L2' "$out/engine.log")
  while read -r l; do row "CUDA graph vs eager" "$l"; done < <(grep -E 'difference|graphs vs eager|^captured' "$out/engine.log")
  grep -q "skipping" "$out/engine.log" && row "engine tests" "some skipped: $(grep -m1 skipping "$out/engine.log")"

  if have_model smollm2-135m-instruct; then
    echo "== ember generate --device cuda"
    EMBER_LOG=info "$bin/ember" generate --model smollm2-135m-instruct --device cuda --temperature 0 \
      --prompt "The capital of France is" --max-tokens 16 2>&1 | tee "$out/generate.log"
    row "ember generate --device cuda" "exit ${PIPESTATUS[0]}: $(tail -1 "$out/generate.log")"
    EMBER_CUDA_GRAPHS=1 EMBER_LOG=info "$bin/ember" generate --model smollm2-135m-instruct --device cuda \
      --temperature 0 --prompt "The capital of France is" --max-tokens 16 2>&1 | tee "$out/generate_graph.log"
    row "ember generate --device cuda, CUDA graph" "exit ${PIPESTATUS[0]}: $(grep -m1 'CUDA graph' "$out/generate_graph.log"); $(tail -1 "$out/generate_graph.log")"
  else
    row "ember generate --device cuda" "skipped: smollm2-135m-instruct not staged (gpu-models.sh)"
  fi

  echo "== decode throughput"
  if have_model qwen2.5-coder-1.5b-instruct; then target=(qwen2.5-coder-1.5b-instruct); else
    target=(--random qwen2.5-1.5b)
    row "decode bench" "qwen2.5-coder-1.5b-instruct (1.1 GB) not staged: random weights of its shape (same speed)"
  fi
  for kv in auto fp8; do
    "$bin/gpu_decode" "${target[@]}" --kv "$kv" 2>&1 | tee "$out/decode_$kv.log"
    while read -r l; do row "decode, KV $kv" "$l"; done < <(grep -E '^(model|skipping)' "$out/decode_$kv.log"; grep -E '^\| [0-9]' "$out/decode_$kv.log" | awk -F'|' '{for (i = 2; i <= 5; i++) gsub(/^ +| +$/, "", $i); printf "batch %s: %s tok/s, %s ms/step, %s of the weight-read bound; CUDA graph %s tok/s (%s x eager, %s of the bound)\n", $2, $3, $4, $5, $6, $7, $8}')
  done

  echo "== serving benchmark (in-process, greedy)"
  if have_model qwen2.5-coder-0.5b-instruct; then
    "$bin/ember" bench --model qwen2.5-coder-0.5b-instruct --device cuda --num-prompts 256 \
      --random-input-len 512 --random-output-len 128 --ignore-eos 2>&1 | tee "$out/serve_bench.log"
    row "ember bench, 256 x (512 in, 128 out)" "exit ${PIPESTATUS[0]}: $(grep -E 'Output token throughput|Mean TTFT|Mean TPOT' "$out/serve_bench.log" | tr -s ' ' | tr '\n' ';')"
    EMBER_CUDA_GRAPHS=1 "$bin/ember" bench --model qwen2.5-coder-0.5b-instruct --device cuda --num-prompts 256 \
      --random-input-len 512 --random-output-len 128 --ignore-eos 2>&1 | tee "$out/serve_bench_graph.log"
    row "ember bench, same, CUDA graphs" "exit ${PIPESTATUS[0]}: $(grep -E 'Output token throughput|Mean TTFT|Mean TPOT' "$out/serve_bench_graph.log" | tr -s ' ' | tr '\n' ';')"
  else
    row "ember bench" "skipped: qwen2.5-coder-0.5b-instruct not staged"
  fi

  echo "== fp8 KV accuracy delta (arc_easy, 200 docs)"
  if have_model qwen2.5-coder-0.5b-instruct && [ -f "$EMBER_HOME/data/arc_easy/test.jsonl" ]; then
    for kv in auto fp8; do
      "$bin/ember" eval --model qwen2.5-coder-0.5b-instruct --tasks arc_easy --limit 200 --device cuda \
        --kv-cache-dtype "$kv" --quiet --output-path "$out/eval_$kv.json" 2>&1 | tee "$out/eval_$kv.log"
      acc=$(python3 -c 'import json,sys; r=json.load(open(sys.argv[1]))["results"]["arc_easy"]; print(", ".join(f"{k}={v:.4f}" for k,v in r.items() if k.startswith("acc") and isinstance(v,float)))' "$out/eval_$kv.json" 2>/dev/null)
      row "arc_easy 200, KV $kv" "${acc:-failed, see eval_$kv.log}"
    done
  else
    row "arc_easy fp8 delta" "skipped: qwen2.5-coder-0.5b-instruct not staged or no arc_easy data in the bundle"
  fi
fi

echo
echo "| check | result |"
echo "|---|---|"
printf '%s\n' "${rows[@]}"
