// Decode attention (one query token per sequence) over the paged KV cache, split-K ("flash-decoding").
//
// The context is cut into partitions of PARTITION keys; one block of 4 warps handles one (sequence,
// kv head, partition) and every query head of the GQA group that shares that kv head, so each key and
// value is read from memory once. Each block writes its partition's normalised output with the
// partition's max and sum; paged_decode_reduce merges the partitions exactly (log-sum-exp rescaling).
#include "common.cuh"

namespace {
constexpr int THREADS = 128;
constexpr int WARPS = THREADS / 32;
constexpr int PARTITION = 256;  // keys per block
constexpr int MAXG = 8;         // query heads per kv head handled here (larger groups use the prefill kernel)

template <typename T, typename C, int D>
__device__ __forceinline__ void paged_decode(float *__restrict__ part_out, float *__restrict__ part_ml,
                                             const T *__restrict__ q, const C *__restrict__ k_cache,
                                             const C *__restrict__ v_cache, const int *__restrict__ seq_ids,
                                             const int *__restrict__ query_start, const int *__restrict__ context_len,
                                             const int *__restrict__ block_tables, int max_blocks_per_seq,
                                             int num_heads, int num_kv_heads, int block_size, int max_splits,
                                             float scale_log2, float k_scale, float v_scale) {
  constexpr int TPK = D / 8;             // threads per key in the score pass: 8 elements each
  constexpr int KEYS_PER_PASS = THREADS / TPK;
  constexpr int DPL = D / 32;            // output dims per lane in the value pass
  __shared__ float qs[MAXG][D];
  __shared__ float scores[MAXG][PARTITION];
  __shared__ float red[WARPS][MAXG][D];
  __shared__ float stat[MAXG][2];

  const int idx = blockIdx.y;
  const int seq = seq_ids[idx];
  const int kv_head = blockIdx.z;
  const int split = blockIdx.x;
  const int ctx = context_len[seq];
  const int start = split * PARTITION;
  if (start >= ctx) return;
  const int n = min(PARTITION, ctx - start);
  const int G = num_heads / num_kv_heads;
  const int token = query_start[seq];
  const int *bt = block_tables + size_t(seq) * max_blocks_per_seq;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;

  for (int i = threadIdx.x; i < G * D; i += THREADS) {
    const int g = i / D, d = i % D;
    qs[g][d] = Num<T>::to_float(q[(size_t(token) * num_heads + kv_head * G + g) * D + d]);
  }
  __syncthreads();

  // Scores: TPK consecutive lanes share one key, each taking 8 of its dims.
  {
    const int sub = threadIdx.x % TPK;
    const int c8 = sub * 8;
    for (int p0 = 0; p0 < n; p0 += KEYS_PER_PASS) {
      const int p = p0 + threadIdx.x / TPK;
      float kf[8];
      if (p < n) {
        const C *src = k_cache + cache_offset(bt, start + p, block_size, num_kv_heads, kv_head, D) + c8;
        __align__(16) T tmp[8];
        Row8<C, T>::copy(src, k_scale, tmp);
#pragma unroll
        for (int j = 0; j < 8; j++) kf[j] = Num<T>::to_float(tmp[j]);
      } else {
#pragma unroll
        for (int j = 0; j < 8; j++) kf[j] = 0.f;
      }
#pragma unroll
      for (int g = 0; g < MAXG; g++) {
        if (g < G) {
          float acc = 0.f;
#pragma unroll
          for (int j = 0; j < 8; j++) acc += qs[g][c8 + j] * kf[j];
#pragma unroll
          for (int off = TPK / 2; off > 0; off /= 2) acc += __shfl_xor_sync(0xffffffff, acc, off);
          if (sub == 0 && p < n) scores[g][p] = acc * scale_log2;
        }
      }
    }
  }
  __syncthreads();

  // Softmax statistics per head (one warp per head), probabilities in place.
  for (int g = warp; g < G; g += WARPS) {
    float m = -INFINITY;
    for (int p = lane; p < n; p += 32) m = fmaxf(m, scores[g][p]);
#pragma unroll
    for (int off = 16; off > 0; off /= 2) m = fmaxf(m, __shfl_xor_sync(0xffffffff, m, off));
    float l = 0.f;
    for (int p = lane; p < n; p += 32) {
      const float e = exp2f(scores[g][p] - m);
      scores[g][p] = e;
      l += e;
    }
#pragma unroll
    for (int off = 16; off > 0; off /= 2) l += __shfl_xor_sync(0xffffffff, l, off);
    if (lane == 0) {
      stat[g][0] = m;
      stat[g][1] = l;
    }
  }
  __syncthreads();

  // Values: warp w takes keys w, w+4, ...; lane takes DPL consecutive dims.
  float acc[MAXG][DPL];
#pragma unroll
  for (int g = 0; g < MAXG; g++)
#pragma unroll
    for (int j = 0; j < DPL; j++) acc[g][j] = 0.f;
  for (int p = warp; p < n; p += WARPS) {
    const C *src = v_cache + cache_offset(bt, start + p, block_size, num_kv_heads, kv_head, D) + lane * DPL;
    float vf[DPL];
#pragma unroll
    for (int j = 0; j < DPL; j++) vf[j] = CacheElem<C, T>::load(src[j], v_scale);
#pragma unroll
    for (int g = 0; g < MAXG; g++) {
      if (g < G) {
        const float w = scores[g][p];
#pragma unroll
        for (int j = 0; j < DPL; j++) acc[g][j] += w * vf[j];
      }
    }
  }
#pragma unroll
  for (int g = 0; g < MAXG; g++)
    if (g < G)
#pragma unroll
      for (int j = 0; j < DPL; j++) red[warp][g][lane * DPL + j] = acc[g][j];
  __syncthreads();

  for (int i = threadIdx.x; i < G * D; i += THREADS) {
    const int g = i / D, d = i % D;
    float sum = 0.f;
#pragma unroll
    for (int w = 0; w < WARPS; w++) sum += red[w][g][d];
    const size_t row = (size_t(idx) * num_heads + kv_head * G + g) * max_splits + split;
    part_out[row * D + d] = sum / stat[g][1];
    if (d == 0) {
      part_ml[row * 2 + 0] = stat[g][0];
      part_ml[row * 2 + 1] = stat[g][1];
    }
  }
}

// Merges the partitions of each (decode sequence, head): out = Σ_s w_s o_s / Σ_s w_s with
// w_s = l_s · 2^(m_s − max_s m_s).
template <typename T>
__device__ __forceinline__ void paged_decode_reduce(T *__restrict__ out, const float *__restrict__ part_out,
                                                    const float *__restrict__ part_ml, const int *__restrict__ seq_ids,
                                                    const int *__restrict__ query_start,
                                                    const int *__restrict__ context_len, int num_heads, int head_dim,
                                                    int max_splits) {
  const int idx = blockIdx.x, head = blockIdx.y;
  const int seq = seq_ids[idx];
  const int splits = (context_len[seq] + PARTITION - 1) / PARTITION;
  const size_t row0 = (size_t(idx) * num_heads + head) * max_splits;
  float m = -INFINITY;
  for (int s = 0; s < splits; s++) m = fmaxf(m, part_ml[(row0 + s) * 2]);
  float total = 0.f;
  for (int s = 0; s < splits; s++) total += part_ml[(row0 + s) * 2 + 1] * exp2f(part_ml[(row0 + s) * 2] - m);
  T *dst = out + (size_t(query_start[seq]) * num_heads + head) * head_dim;
  for (int d = threadIdx.x; d < head_dim; d += blockDim.x) {
    float acc = 0.f;
    for (int s = 0; s < splits; s++) {
      const float w = part_ml[(row0 + s) * 2 + 1] * exp2f(part_ml[(row0 + s) * 2] - m);
      acc += w * part_out[(row0 + s) * head_dim + d];
    }
    dst[d] = Num<T>::from_float(acc / total);
  }
}
}  // namespace

#define PAGED_DECODE(NAME, T, C, D)                                                                          \
  extern "C" __global__ void __launch_bounds__(THREADS)                                                      \
      NAME(float *part_out, float *part_ml, const T *q, const C *k_cache, const C *v_cache, const int *seq_ids, \
           const int *query_start, const int *context_len, const int *block_tables, int max_blocks_per_seq,  \
           int num_heads, int num_kv_heads, int block_size, int max_splits, float scale_log2, float k_scale,  \
           float v_scale) {                                                                                  \
    paged_decode<T, C, D>(part_out, part_ml, q, k_cache, v_cache, seq_ids, query_start, context_len,         \
                          block_tables, max_blocks_per_seq, num_heads, num_kv_heads, block_size, max_splits, \
                          scale_log2, k_scale, v_scale);                                                     \
  }

PAGED_DECODE(paged_decode_bf16_bf16_d64, bf16, bf16, 64)
PAGED_DECODE(paged_decode_bf16_bf16_d128, bf16, bf16, 128)
PAGED_DECODE(paged_decode_f16_f16_d64, f16, f16, 64)
PAGED_DECODE(paged_decode_f16_f16_d128, f16, f16, 128)
PAGED_DECODE(paged_decode_bf16_fp8_d64, bf16, fp8, 64)
PAGED_DECODE(paged_decode_bf16_fp8_d128, bf16, fp8, 128)
PAGED_DECODE(paged_decode_f16_fp8_d64, f16, fp8, 64)
PAGED_DECODE(paged_decode_f16_fp8_d128, f16, fp8, 128)

#define PAGED_DECODE_REDUCE(NAME, T)                                                                          \
  extern "C" __global__ void NAME(T *out, const float *part_out, const float *part_ml, const int *seq_ids,    \
                                  const int *query_start, const int *context_len, int num_heads, int head_dim, \
                                  int max_splits) {                                                           \
    paged_decode_reduce<T>(out, part_out, part_ml, seq_ids, query_start, context_len, num_heads, head_dim,    \
                           max_splits);                                                                       \
  }

PAGED_DECODE_REDUCE(paged_decode_reduce_bf16, bf16)
PAGED_DECODE_REDUCE(paged_decode_reduce_f16, f16)
