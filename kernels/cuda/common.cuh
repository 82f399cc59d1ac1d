// Shared helpers for ember's CUDA kernels: element types, packing, the paged-cache row loader and the
// tensor-core instruction. The paged cache layout matches kernels/src/kv_cache.rs: a block is
// [num_kv_heads, block_size, head_dim], so (slot, kv_head) starts at
// ((block * num_kv_heads + kv_head) * block_size + slot % block_size) * head_dim.
#pragma once
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_fp8.h>
#include <stdint.h>

typedef __nv_bfloat16 bf16;
typedef __half f16;
// fp8 e4m3 cache elements travel as raw bytes; the scale turns them back into the model's range.
typedef uint8_t fp8;

template <typename T> struct Num;
template <> struct Num<bf16> {
  static __device__ __forceinline__ float to_float(bf16 x) { return __bfloat162float(x); }
  static __device__ __forceinline__ bf16 from_float(float x) { return __float2bfloat16(x); }
  // Two floats in one 32-bit register, `a` in the low half (the lower column of an mma fragment).
  static __device__ __forceinline__ uint32_t pack2(float a, float b) {
    __nv_bfloat162 v = __floats2bfloat162_rn(a, b);
    return *reinterpret_cast<uint32_t *>(&v);
  }
};
template <> struct Num<f16> {
  static __device__ __forceinline__ float to_float(f16 x) { return __half2float(x); }
  static __device__ __forceinline__ f16 from_float(float x) { return __float2half_rn(x); }
  static __device__ __forceinline__ uint32_t pack2(float a, float b) {
    __half2 v = __floats2half2_rn(a, b);
    return *reinterpret_cast<uint32_t *>(&v);
  }
};

__device__ __forceinline__ float fp8_to_float(uint8_t x) {
  __nv_fp8_e4m3 v;
  v.__x = x;
  return float(v);
}
__device__ __forceinline__ uint8_t float_to_fp8(float x) {
  // Saturates to ±448 instead of producing NaN for out-of-range values.
  return __nv_cvt_float_to_fp8(x, __NV_SATFINITE, __NV_E4M3);
}

// Element of the cache <-> float, with the cache's scale (1 for bf16/f16 caches).
template <typename C, typename T> struct CacheElem {
  static __device__ __forceinline__ float load(C x, float) { return Num<T>::to_float(x); }
  static __device__ __forceinline__ C store(float x, float) { return Num<T>::from_float(x); }
};
template <typename T> struct CacheElem<fp8, T> {
  static __device__ __forceinline__ float load(fp8 x, float scale) { return fp8_to_float(x) * scale; }
  static __device__ __forceinline__ fp8 store(float x, float inv_scale) { return float_to_fp8(x * inv_scale); }
};

// Copies 8 consecutive cache elements into 8 elements of T in shared memory (16-byte aligned dst).
template <typename C, typename T> struct Row8 {
  static __device__ __forceinline__ void copy(const C *src, float, T *dst) {
    *reinterpret_cast<uint4 *>(dst) = *reinterpret_cast<const uint4 *>(src);
  }
};
template <typename T> struct Row8<fp8, T> {
  static __device__ __forceinline__ void copy(const fp8 *src, float scale, T *dst) {
    uint2 raw = *reinterpret_cast<const uint2 *>(src);
    const uint8_t *b = reinterpret_cast<const uint8_t *>(&raw);
    uint4 packed;
    uint32_t *w = reinterpret_cast<uint32_t *>(&packed);
#pragma unroll
    for (int i = 0; i < 4; i++)
      w[i] = Num<T>::pack2(fp8_to_float(b[2 * i]) * scale, fp8_to_float(b[2 * i + 1]) * scale);
    *reinterpret_cast<uint4 *>(dst) = packed;
  }
};

// Zero-fills 8 elements of T (keys past the end of the context: finite zeros, never stale memory).
template <typename T> __device__ __forceinline__ void zero8(T *dst) {
  *reinterpret_cast<uint4 *>(dst) = make_uint4(0, 0, 0, 0);
}

// Offset of (position `pos` of a sequence, kv head) in a layer's cache, through the block table.
__device__ __forceinline__ size_t cache_offset(const int *block_table, int pos, int block_size,
                                               int num_kv_heads, int kv_head, int head_dim) {
  const int block = block_table[pos / block_size];
  return ((size_t(block) * num_kv_heads + kv_head) * block_size + pos % block_size) * size_t(head_dim);
}

// D (16x8, f32) += A (16x16, row-major) * B (16x8, column-major), A and B in bf16 or f16.
template <typename T> __device__ __forceinline__ void mma16816(float *c, const uint32_t *a, uint32_t b0, uint32_t b1);
template <> __device__ __forceinline__ void mma16816<bf16>(float *c, const uint32_t *a, uint32_t b0, uint32_t b1) {
  asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
               "{%0,%1,%2,%3};\n"
               : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
               : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}
template <> __device__ __forceinline__ void mma16816<f16>(float *c, const uint32_t *a, uint32_t b0, uint32_t b1) {
  asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
               "{%0,%1,%2,%3};\n"
               : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
               : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

// Two 16-bit values from different rows packed into one register (`lo` in the low half).
template <typename T> __device__ __forceinline__ uint32_t pack_halves(T lo, T hi) {
  uint16_t l = *reinterpret_cast<uint16_t *>(&lo), h = *reinterpret_cast<uint16_t *>(&hi);
  return uint32_t(l) | (uint32_t(h) << 16);
}
