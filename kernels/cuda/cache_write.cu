// Writes this step's keys and values into the paged cache at each token's slot (slot mapping), converting
// to the cache's element type: the model's bf16/f16, or fp8 e4m3 divided by a per-tensor scale.
// A negative slot marks a padding token and is skipped.
#include "common.cuh"

namespace {
template <typename T, typename C>
__device__ __forceinline__ void cache_write(C *__restrict__ k_cache, C *__restrict__ v_cache, const T *__restrict__ k,
                                            const T *__restrict__ v, const int64_t *__restrict__ slots,
                                            int num_kv_heads, int block_size, int head_dim, float inv_k_scale,
                                            float inv_v_scale) {
  const int token = blockIdx.x;
  const int64_t slot = slots[token];
  if (slot < 0) return;
  const int64_t block = slot / block_size, in_block = slot % block_size;
  const int row = num_kv_heads * head_dim;
  for (int i = threadIdx.x; i < row; i += blockDim.x) {
    const int h = i / head_dim, d = i % head_dim;
    const size_t dst = ((size_t(block) * num_kv_heads + h) * block_size + in_block) * head_dim + d;
    const size_t src = size_t(token) * row + i;
    k_cache[dst] = CacheElem<C, T>::store(Num<T>::to_float(k[src]), inv_k_scale);
    v_cache[dst] = CacheElem<C, T>::store(Num<T>::to_float(v[src]), inv_v_scale);
  }
}
}  // namespace

#define CACHE_WRITE(NAME, T, C)                                                                               \
  extern "C" __global__ void NAME(C *k_cache, C *v_cache, const T *k, const T *v, const int64_t *slots,       \
                                  int num_kv_heads, int block_size, int head_dim, float inv_k_scale,          \
                                  float inv_v_scale) {                                                        \
    cache_write<T, C>(k_cache, v_cache, k, v, slots, num_kv_heads, block_size, head_dim, inv_k_scale,         \
                      inv_v_scale);                                                                           \
  }

CACHE_WRITE(cache_write_bf16_bf16, bf16, bf16)
CACHE_WRITE(cache_write_f16_f16, f16, f16)
CACHE_WRITE(cache_write_bf16_fp8, bf16, fp8)
CACHE_WRITE(cache_write_f16_fp8, f16, fp8)
