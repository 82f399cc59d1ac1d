// Fused small ops of a decoder layer. At decode batch sizes each of them is a few microseconds of GPU
// work, so what costs is the number of launches (and candle's host-side work per op): each kernel here
// replaces two to nine of candle's.
//
// - split_qkv_rope: the fused q|k|v projection's output [tokens, (heads + 2 kv_heads) * D] split into
//   contiguous q, k, v, with q and k rotated (RoPE in f32 with per-token cos/sin rows) on the way;
// - add_rms_norm: residual = x + h (rounded to T, as an unfused add stores it), out = RMSNorm(residual);
// - silu_mul_halves: the fused gate|up projection's output [tokens, 2F] to silu(gate) * up, [tokens, F].
#include "common.cuh"

namespace {
// One block per (token, head of q|k|v), one thread per rotated pair. `interleaved` pairs dimension 2i
// with 2i+1 (GGML's normal mode), otherwise i with i + D/2 (rotate_half).
template <typename T>
__device__ __forceinline__ void split_qkv_rope(T *__restrict__ q, T *__restrict__ k, T *__restrict__ v,
                                               const T *__restrict__ qkv, const float *__restrict__ cos,
                                               const float *__restrict__ sin, int heads, int kv_heads,
                                               int head_dim, int interleaved) {
  const int token = blockIdx.x, head = blockIdx.y;
  const int half = head_dim / 2;
  const T *src = qkv + (size_t(token) * (heads + 2 * kv_heads) + head) * head_dim;
  T *dst;
  bool rotate = true;
  if (head < heads) {
    dst = q + (size_t(token) * heads + head) * head_dim;
  } else if (head < heads + kv_heads) {
    dst = k + (size_t(token) * kv_heads + head - heads) * head_dim;
  } else {
    dst = v + (size_t(token) * kv_heads + head - heads - kv_heads) * head_dim;
    rotate = false;
  }
  for (int i = threadIdx.x; i < half; i += blockDim.x) {
    const int a = interleaved ? 2 * i : i;
    const int b = interleaved ? 2 * i + 1 : i + half;
    if (!rotate) {
      dst[a] = src[a];
      dst[b] = src[b];
      continue;
    }
    const float x0 = Num<T>::to_float(src[a]), x1 = Num<T>::to_float(src[b]);
    const float c = cos[size_t(token) * half + i], s = sin[size_t(token) * half + i];
    dst[a] = Num<T>::from_float(x0 * c - x1 * s);
    dst[b] = Num<T>::from_float(x0 * s + x1 * c);
  }
}

constexpr int NORM_THREADS = 256;

// One block per row.
template <typename T>
__device__ __forceinline__ void add_rms_norm(T *__restrict__ residual, T *__restrict__ out, const T *__restrict__ x,
                                             const T *__restrict__ h, const T *__restrict__ weight, int dim,
                                             float eps) {
  __shared__ float partial[NORM_THREADS / 32];
  const size_t row = size_t(blockIdx.x) * dim;
  float squares = 0.f;
  for (int i = threadIdx.x; i < dim; i += NORM_THREADS) {
    const T sum = Num<T>::from_float(Num<T>::to_float(x[row + i]) + Num<T>::to_float(h[row + i]));
    residual[row + i] = sum;
    const float s = Num<T>::to_float(sum);
    squares += s * s;
  }
#pragma unroll
  for (int o = 16; o > 0; o /= 2) squares += __shfl_xor_sync(0xffffffff, squares, o);
  if (threadIdx.x % 32 == 0) partial[threadIdx.x / 32] = squares;
  __syncthreads();
  float total = 0.f;
#pragma unroll
  for (int w = 0; w < NORM_THREADS / 32; w++) total += partial[w];
  const float inv = rsqrtf(total / dim + eps);
  // Each thread reads back only the residual elements it wrote itself.
  for (int i = threadIdx.x; i < dim; i += NORM_THREADS) {
    out[row + i] = Num<T>::from_float(Num<T>::to_float(residual[row + i]) * inv * Num<T>::to_float(weight[i]));
  }
}

template <typename T>
__device__ __forceinline__ void silu_mul_halves(T *__restrict__ out, const T *__restrict__ gate_up, int64_t rows,
                                                int width) {
  const int64_t n = rows * width;
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x) {
    const int64_t r = i / width, c = i % width;
    const float g = Num<T>::to_float(gate_up[r * 2 * width + c]);
    const float u = Num<T>::to_float(gate_up[r * 2 * width + width + c]);
    out[i] = Num<T>::from_float(g / (1.f + __expf(-g)) * u);
  }
}
}  // namespace

#define FUSED(T)                                                                                            \
  extern "C" __global__ void split_qkv_rope_##T(T *q, T *k, T *v, const T *qkv, const float *cos,           \
                                                const float *sin, int heads, int kv_heads, int head_dim,    \
                                                int interleaved) {                                          \
    split_qkv_rope<T>(q, k, v, qkv, cos, sin, heads, kv_heads, head_dim, interleaved);                      \
  }                                                                                                         \
  extern "C" __global__ void __launch_bounds__(NORM_THREADS)                                                \
      add_rms_norm_##T(T *residual, T *out, const T *x, const T *h, const T *weight, int dim, float eps) {  \
    add_rms_norm<T>(residual, out, x, h, weight, dim, eps);                                                 \
  }                                                                                                         \
  extern "C" __global__ void silu_mul_halves_##T(T *out, const T *gate_up, int64_t rows, int width) {       \
    silu_mul_halves<T>(out, gate_up, rows, width);                                                          \
  }

FUSED(bf16)
FUSED(f16)
