#!/usr/bin/env python3
"""The issue's attention table on a GPU machine: ember's prefill kernel vs torch SDPA (flash backend)
in TFLOP/s at sequence 512..8192, and ember's decode kernel in GB/s vs the copy ceiling.

    python3 benches/cuda_attention.py PATH/TO/cuda_attention-BENCH-BINARY [quick]

The bench binary is built on a CPU machine (scripts/build-cuda.sh with CUDA_COMPUTE_CAP=90, then
`cargo bench --features cuda --bench cuda_attention --no-run`); this script needs torch with CUDA.
Same shapes on both sides: batch 1, 32 query heads over 8 kv heads (GQA), head dim 128, bf16, causal.
"""
import json
import subprocess
import sys

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

HEADS, KV_HEADS, HEAD_DIM = 32, 8, 128


def median_ms(fn, reps=50):
    for _ in range(5):
        fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(reps):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end))
    times.sort()
    return times[len(times) // 2]


def torch_prefill_tflops(seq):
    q = torch.randn(1, HEADS, seq, HEAD_DIM, device="cuda", dtype=torch.bfloat16)
    k = torch.randn(1, KV_HEADS, seq, HEAD_DIM, device="cuda", dtype=torch.bfloat16)
    v = torch.randn(1, KV_HEADS, seq, HEAD_DIM, device="cuda", dtype=torch.bfloat16)
    with sdpa_kernel(SDPBackend.FLASH_ATTENTION):
        ms = median_ms(lambda: F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=True))
    return 2.0 * seq * seq * HEADS * HEAD_DIM / (ms * 1e-3) / 1e12, ms


def main():
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    args = [sys.argv[1]] + sys.argv[2:]
    proc = subprocess.run(args, capture_output=True, text=True)
    sys.stderr.write(proc.stderr)
    if proc.returncode != 0:
        sys.exit(f"bench binary failed with {proc.returncode}")
    rows = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    print(f"device: {torch.cuda.get_device_name()}, torch {torch.__version__}")
    pipelined = {r["seq"]: r["tflops"] for r in rows if r["kind"] == "prefill_pipelined"}
    print("\n| seq | ember prefill TFLOP/s (staged) | pipelined | torch SDPA flash TFLOP/s | staged ratio | pipelined ratio |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        if r["kind"] != "prefill":
            continue
        theirs, _ = torch_prefill_tflops(r["seq"])
        pipe = pipelined.get(r["seq"], float("nan"))
        print(f"| {r['seq']} | {r['tflops']:.1f} | {pipe:.1f} | {theirs:.1f} | {r['tflops'] / theirs:.2f} | {pipe / theirs:.2f} |")
    copy = next(r for r in rows if r["kind"] == "copy")
    print(f"\ncopy ceiling (device-to-device, read + write): {copy['gbs']:.0f} GB/s")
    print("\n| batch | context | KV | ember decode µs | GB/s | of copy ceiling |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        if r["kind"] == "decode":
            print(f"| {r['batch']} | {r['ctx']} | {r['kv']} | {r['us']:.1f} | {r['gbs']:.0f} | {100 * r['of_copy']:.0f}% |")


if __name__ == "__main__":
    main()
