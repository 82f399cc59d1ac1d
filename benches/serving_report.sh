#!/usr/bin/env bash
# The serving report: seed 003's four scenarios (scaled for a small CPU machine) in-process and over HTTP
# against `ember serve`, alternating in one run so both see the same machine, then a concurrency sweep
# 1..32 over HTTP with its plot (PLOT=sweep.png or sweep.svg); prints the HTTP / in-process throughput ratio per scenario.
#
#   benches/serving_report.sh            # defaults below; override with env vars
#   EMBER=/tmp/ember SCALE=0.25 MODEL=qwen2.5-coder-0.5b-instruct OUT=/tmp/report benches/serving_report.sh
set -euo pipefail
cd "$(dirname "$0")/.."

MODEL=${MODEL:-smollm2-135m-instruct}
SCALE=${SCALE:-0.125}
OUT=${OUT:-target/serving-report}
PORT=${PORT:-8765}
SWEEP=${SWEEP:-1,2,4,8,16,32}
SWEEP_PROMPTS=${SWEEP_PROMPTS:-64}
SWEEP_IN=${SWEEP_IN:-256}
SWEEP_OUT=${SWEEP_OUT:-32}
PLOT=${PLOT:-sweep.png}
# SCENARIOS=0 runs the sweep only.
SCENARIOS=${SCENARIOS:-1}
# Both targets get the same engine: same KV budget, same batch limits.
ENGINE_FLAGS=(--kv-cache-memory 2GiB --max-num-seqs 256)

# EMBER=path/to/ember skips the build (e.g. while another cargo holds the target dir).
if [ -z "${EMBER:-}" ]; then
    cargo build --release --quiet
    EMBER=target/release/ember
fi
mkdir -p "$OUT/inprocess" "$OUT/http" "$OUT/sweep"

"$EMBER" serve "$MODEL" --port "$PORT" --disable-log-requests "${ENGINE_FLAGS[@]}" \
    >"$OUT/server.log" 2>&1 &
SERVER=$!
trap 'kill "$SERVER" 2>/dev/null || true; wait "$SERVER" 2>/dev/null || true' EXIT
for _ in $(seq 600); do
    curl -sf "http://127.0.0.1:$PORT/health" >/dev/null && break
    kill -0 "$SERVER" 2>/dev/null || { cat "$OUT/server.log"; exit 1; }
    sleep 0.2
done

echo "# machine: $(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg)"
common=(--model "$MODEL" --ignore-eos --seed 0 --num-warmups 2 --save-result
    --metric-percentiles 50,95,99)
if [ "$SCENARIOS" != 0 ]; then
    # In-process first, then HTTP, back to back: compare them as a ratio measured in one run.
    "$EMBER" bench "${common[@]}" "${ENGINE_FLAGS[@]}" --scenarios builtin --scale "$SCALE" \
        --result-dir "$OUT/inprocess" | tee "$OUT/inprocess.txt"
    echo "# load $(cut -d' ' -f1-3 /proc/loadavg)"
    "$EMBER" bench "${common[@]}" --base-url "http://127.0.0.1:$PORT" --scenarios builtin --scale "$SCALE" \
        --result-dir "$OUT/http" | tee "$OUT/http.txt"
    echo "# load $(cut -d' ' -f1-3 /proc/loadavg)"
fi
"$EMBER" bench "${common[@]}" --base-url "http://127.0.0.1:$PORT" --dataset-name random \
    --random-input-len "$SWEEP_IN" --random-output-len "$SWEEP_OUT" --num-prompts "$SWEEP_PROMPTS" \
    --max-concurrency "$SWEEP" --plot "$OUT/$PLOT" --result-dir "$OUT/sweep" | tee "$OUT/sweep.txt"
echo "# load $(cut -d' ' -f1-3 /proc/loadavg)"

python3 - "$OUT" <<'EOF'
import json, pathlib, sys
out = pathlib.Path(sys.argv[1])
def load(d):
    runs = {}
    for f in sorted((out / d).glob("*.json")):
        r = json.loads(f.read_text())
        runs[r.get("scenario") or f.stem] = r
    return runs
inp, http = load("inprocess"), load("http")
print(f"{'scenario':<20} {'in-process tok/s':>17} {'HTTP tok/s':>11} {'HTTP/in-process':>16} {'TTFT p50 ms (in/HTTP)':>23}")
for name in sorted(set(inp) & set(http)):
    a, b = inp[name], http[name]
    ratio = b["output_throughput"] / a["output_throughput"] if a["output_throughput"] else float("nan")
    print(f"{name:<20} {a['output_throughput']:>17.1f} {b['output_throughput']:>11.1f} {ratio:>16.2f} "
          f"{a['median_ttft_ms']:>11.0f} / {b['median_ttft_ms']:<9.0f}")
    for k in ("completed", "total_input_tokens", "total_output_tokens"):
        if a.get(k) != b.get(k):
            print(f"  note: {k} differs: in-process {a.get(k)} vs HTTP {b.get(k)}")
EOF
