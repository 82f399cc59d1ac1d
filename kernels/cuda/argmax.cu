// Greedy sampling on the device: for each selected row of f32 logits, the index of its largest value,
// the lowest index among equal maxima and NaN never chosen (0 when nothing beats -inf) — the host
// sampler's rule, so a greedy token is the same whichever side picks it, and only the token ids cross
// to the host instead of whole rows of the vocabulary.
#include <stdint.h>
#include <math.h>

namespace {
// (value, index) `a` beats `b`: larger value, or equal value at a lower index.
__device__ __forceinline__ bool beats(float av, int ai, float bv, int bi) {
  return av > bv || (av == bv && ai < bi);
}

// Leaves the warp's winning (value, index) in every lane.
__device__ __forceinline__ void warp_argmax(float &best, int &idx) {
  for (int off = 16; off > 0; off >>= 1) {
    const float ov = __shfl_xor_sync(0xffffffff, best, off);
    const int oi = __shfl_xor_sync(0xffffffff, idx, off);
    if (beats(ov, oi, best, idx)) {
      best = ov;
      idx = oi;
    }
  }
}
}  // namespace

// One block per output row; `rows[b]` is the logits row it reads.
extern "C" __global__ void __launch_bounds__(1024)
    argmax_rows_f32(uint32_t *out, const float *logits, const uint32_t *rows, int vocab) {
  const float *row = logits + size_t(rows[blockIdx.x]) * size_t(vocab);
  float best = -INFINITY;
  int idx = 0;
  // Each thread walks its indices upwards, so a strict `>` keeps the first of equal values.
  for (int i = threadIdx.x; i < vocab; i += blockDim.x) {
    const float v = row[i];
    if (v > best) {
      best = v;
      idx = i;
    }
  }
  warp_argmax(best, idx);
  __shared__ float warp_best[32];
  __shared__ int warp_idx[32];
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  if (lane == 0) {
    warp_best[warp] = best;
    warp_idx[warp] = idx;
  }
  __syncthreads();
  if (warp == 0) {
    const int warps = blockDim.x / 32;
    best = lane < warps ? warp_best[lane] : -INFINITY;
    idx = lane < warps ? warp_idx[lane] : 0;
    warp_argmax(best, idx);
    if (lane == 0) out[blockIdx.x] = uint32_t(idx);
  }
}
