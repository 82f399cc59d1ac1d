// Prefill attention, FlashAttention-2 style, over the paged KV cache.
//
// One block of 4 warps computes 64 query rows of one (sequence, head): each warp owns 16 rows whose Q
// fragments stay in registers for the whole kernel. K and V are streamed through shared memory in tiles
// of 64 keys read through the block table (so earlier chunks and prefix-cache hits are simply earlier
// positions of the same paged context); S = Q·Kᵀ and O += P·V run on the tensor cores (mma.sync m16n8k16,
// fp32 accumulation) and the softmax is online (running max and sum per row, in registers). Because the
// S accumulator layout of mma equals the A-operand layout of the next mma, P never leaves registers.
//
// Two schedules of the same arithmetic (PIPE, chosen by the entry point): the staged one loads each K/V tile
// with plain loads (converting fp8 caches on the way) and waits for it; the pipelined one (bf16/f16 caches)
// copies with cp.async so that V of a tile lands while Q·Kᵀ runs and K of the next tile while P·V runs
// (FlashAttention-2's overlap, within the same 34 KB of static shared memory), and reads the mma B
// fragments with ldmatrix (.trans for V) instead of 32-bit and 16-bit shared loads.
//
// Query row r (0-based within its sequence's chunk) sits at absolute position past + r, where
// past = context_len - query_len, and sees keys 0..=past + r (causal). GQA: head h reads kv head
// h / (num_heads / num_kv_heads).
#include "common.cuh"

namespace {
constexpr int BM = 64;       // query rows per block (4 warps x 16)
constexpr int BN = 64;       // keys per shared-memory tile
constexpr int THREADS = 128;
constexpr int PAD = 8;       // row padding (16 bytes) so the fragment reads hit distinct banks

__device__ __forceinline__ uint32_t smem_addr(const void *p) {
  return static_cast<uint32_t>(__cvta_generic_to_shared(p));
}
// 16 bytes global -> shared without passing through registers (sm_80+).
__device__ __forceinline__ void cp_async16(void *dst, const void *src) {
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16;\n" ::"r"(smem_addr(dst)), "l"(src));
}
__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;\n" ::); }
// Waits until at most N of this thread's committed groups are still in flight.
template <int N> __device__ __forceinline__ void cp_async_wait() {
  asm volatile("cp.async.wait_group %0;\n" ::"n"(N));
}
// Four 8x8 b16 matrices; lanes 8j..8j+7 give the row addresses of matrix j, register j receives it in
// the mma fragment layout (thread i: row i/4, columns 2(i%4), 2(i%4)+1), or transposed with .trans
// (thread i: rows 2(i%4), 2(i%4)+1 of column i/4).
template <bool TRANS> __device__ __forceinline__ void ldmatrix_x4(uint32_t *r, const void *row) {
  if constexpr (TRANS) {
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(smem_addr(row)));
  } else {
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(smem_addr(row)));
  }
}

template <typename A, typename B> struct SameType { static constexpr bool value = false; };
template <typename A> struct SameType<A, A> { static constexpr bool value = true; };

// One BN-key tile of a cache (K or V) into shared memory: rows past `kv_end` are zeros. PIPE issues
// cp.async copies (the caller commits and waits); otherwise plain loads, converting fp8.
template <bool PIPE, typename T, typename C, int D>
__device__ __forceinline__ void load_tile(T *tile, const C *cache, float scale, const int *bt, int kt, int kv_end,
                                          int block_size, int num_kv_heads, int kv_head) {
  constexpr int LD = D + PAD;
  for (int i = threadIdx.x; i < BN * (D / 8); i += THREADS) {
    const int row = i / (D / 8), c8 = (i % (D / 8)) * 8;
    const int pos = kt + row;
    T *dst = tile + row * LD + c8;
    if (pos < kv_end) {
      const C *src = cache + cache_offset(bt, pos, block_size, num_kv_heads, kv_head, D) + c8;
      if constexpr (PIPE) {
        cp_async16(dst, src);
      } else {
        Row8<C, T>::copy(src, scale, dst);
      }
    } else {
      zero8(dst);
    }
  }
}

template <bool PIPE, typename T, typename C, int D>
__device__ __forceinline__ void flash_prefill(T *__restrict__ out, const T *__restrict__ q,
                                              const C *__restrict__ k_cache, const C *__restrict__ v_cache,
                                              const int *__restrict__ seq_ids, const int *__restrict__ query_start,
                                              const int *__restrict__ query_len, const int *__restrict__ context_len,
                                              const int *__restrict__ block_tables, int max_blocks_per_seq,
                                              int num_heads, int num_kv_heads, int block_size, float scale_log2,
                                              float k_scale, float v_scale) {
  static_assert(!PIPE || SameType<T, C>::value, "the pipelined schedule copies the cache as it is");
  constexpr int LD = D + PAD;
  __shared__ __align__(16) T ks[BN * LD];
  __shared__ __align__(16) T vs[BN * LD];

  const int seq = seq_ids[blockIdx.y];
  const int qlen = query_len[seq];
  // Last tiles first: under causal masking they have the most keys, so the long blocks start early and
  // the short ones fill the tail.
  const int q0 = (gridDim.x - 1 - blockIdx.x) * BM;
  if (q0 >= qlen) return;
  const int head = blockIdx.z;
  const int kv_head = head / (num_heads / num_kv_heads);
  const int ctx = context_len[seq];
  const int past = ctx - qlen;
  const int qs = query_start[seq];
  const int *bt = block_tables + size_t(seq) * max_blocks_per_seq;

  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int g = lane >> 2, t = lane & 3;
  const int r0 = q0 + warp * 16 + g, r1 = r0 + 8;  // this thread's two query rows

  // Q fragments (A operand, 16 x D per warp): register k-chunk kc holds columns kc*16 .. kc*16+15.
  uint32_t qa[D / 16][4];
  {
    const T *q_r0 = q + (size_t(qs + min(r0, qlen - 1)) * num_heads + head) * D;
    const T *q_r1 = q + (size_t(qs + min(r1, qlen - 1)) * num_heads + head) * D;
#pragma unroll
    for (int kc = 0; kc < D / 16; kc++) {
      const int c = kc * 16 + 2 * t;
      qa[kc][0] = *reinterpret_cast<const uint32_t *>(q_r0 + c);
      qa[kc][1] = *reinterpret_cast<const uint32_t *>(q_r1 + c);
      qa[kc][2] = *reinterpret_cast<const uint32_t *>(q_r0 + c + 8);
      qa[kc][3] = *reinterpret_cast<const uint32_t *>(q_r1 + c + 8);
    }
  }

  float o[D / 8][4];
#pragma unroll
  for (int i = 0; i < D / 8; i++) o[i][0] = o[i][1] = o[i][2] = o[i][3] = 0.f;
  float m0 = -INFINITY, m1 = -INFINITY;  // running max (log2 domain) of rows r0, r1
  float l0 = 0.f, l1 = 0.f;              // this thread's share of the running sums

  // Keys beyond the last visible position of this block's last row are never needed.
  const int kv_end = past + min(q0 + BM, qlen);
  const int vis0 = past + r0, vis1 = past + r1;  // last visible key of each row

  if constexpr (PIPE) {
    load_tile<PIPE, T, C, D>(ks, k_cache, k_scale, bt, 0, kv_end, block_size, num_kv_heads, kv_head);
    cp_async_commit();
  }
  for (int kt = 0; kt < kv_end; kt += BN) {
    if constexpr (PIPE) {
      // V of this tile lands while Q·Kᵀ runs (the sync ending the previous tile freed vs).
      load_tile<PIPE, T, C, D>(vs, v_cache, v_scale, bt, kt, kv_end, block_size, num_kv_heads, kv_head);
      cp_async_commit();
      cp_async_wait<1>();  // K of this tile (the older group) is in
    } else {
      __syncthreads();  // the previous tile is no longer read
      load_tile<PIPE, T, C, D>(ks, k_cache, k_scale, bt, kt, kv_end, block_size, num_kv_heads, kv_head);
      load_tile<PIPE, T, C, D>(vs, v_cache, v_scale, bt, kt, kv_end, block_size, num_kv_heads, kv_head);
    }
    __syncthreads();

    // S = Q Kᵀ for this warp's 16 rows x 64 keys: 8 n-tiles of 8 keys.
    float s[BN / 8][4];
#pragma unroll
    for (int nt = 0; nt < BN / 8; nt++) {
      s[nt][0] = s[nt][1] = s[nt][2] = s[nt][3] = 0.f;
      if constexpr (PIPE) {
        // Matrix j of the x4 load: keys nt*8.., dims kc*16 + 8j..: b0, b1 of k-chunk kc, then of kc + 1.
        const T *krow = ks + (nt * 8 + (lane & 7)) * LD + (lane >> 3) * 8;
#pragma unroll
        for (int kc = 0; kc < D / 16; kc += 2) {
          uint32_t b[4];
          ldmatrix_x4<false>(b, krow + kc * 16);
          mma16816<T>(s[nt], qa[kc], b[0], b[1]);
          mma16816<T>(s[nt], qa[kc + 1], b[2], b[3]);
        }
      } else {
        const T *krow = ks + (nt * 8 + g) * LD + 2 * t;
#pragma unroll
        for (int kc = 0; kc < D / 16; kc++) {
          const uint32_t b0 = *reinterpret_cast<const uint32_t *>(krow + kc * 16);
          const uint32_t b1 = *reinterpret_cast<const uint32_t *>(krow + kc * 16 + 8);
          mma16816<T>(s[nt], qa[kc], b0, b1);
        }
      }
    }

    // Scale into the log2 domain, mask causally, and update the running max.
    float tmax0 = -INFINITY, tmax1 = -INFINITY;
#pragma unroll
    for (int nt = 0; nt < BN / 8; nt++) {
      const int key = kt + nt * 8 + 2 * t;
      s[nt][0] = key <= vis0 ? s[nt][0] * scale_log2 : -INFINITY;
      s[nt][1] = key + 1 <= vis0 ? s[nt][1] * scale_log2 : -INFINITY;
      s[nt][2] = key <= vis1 ? s[nt][2] * scale_log2 : -INFINITY;
      s[nt][3] = key + 1 <= vis1 ? s[nt][3] * scale_log2 : -INFINITY;
      tmax0 = fmaxf(tmax0, fmaxf(s[nt][0], s[nt][1]));
      tmax1 = fmaxf(tmax1, fmaxf(s[nt][2], s[nt][3]));
    }
    // The 4 threads of a quad hold the same two rows.
    tmax0 = fmaxf(tmax0, __shfl_xor_sync(0xffffffff, tmax0, 1));
    tmax0 = fmaxf(tmax0, __shfl_xor_sync(0xffffffff, tmax0, 2));
    tmax1 = fmaxf(tmax1, __shfl_xor_sync(0xffffffff, tmax1, 1));
    tmax1 = fmaxf(tmax1, __shfl_xor_sync(0xffffffff, tmax1, 2));
    const float mn0 = fmaxf(m0, tmax0), mn1 = fmaxf(m1, tmax1);
    // Key 0 is visible to every row, so after the first tile the max is finite; before it, m = -inf
    // and the rescale factor of the (empty) accumulator is 0. A row with nothing visible yet in a later
    // tile keeps a finite mn from earlier tiles.
    const float base0 = mn0 == -INFINITY ? 0.f : mn0, base1 = mn1 == -INFINITY ? 0.f : mn1;
    const float alpha0 = exp2f(m0 - base0), alpha1 = exp2f(m1 - base1);
    m0 = mn0;
    m1 = mn1;
    l0 *= alpha0;
    l1 *= alpha1;
#pragma unroll
    for (int i = 0; i < D / 8; i++) {
      o[i][0] *= alpha0;
      o[i][1] *= alpha0;
      o[i][2] *= alpha1;
      o[i][3] *= alpha1;
    }

    // P = exp2(S - m) in place, rounded to T for the second product; the sums use the rounded values so
    // numerator and denominator agree.
    uint32_t pa[BN / 16][4];
#pragma unroll
    for (int nt = 0; nt < BN / 8; nt++) {
      const float p0 = exp2f(s[nt][0] - base0), p1 = exp2f(s[nt][1] - base0);
      const float p2 = exp2f(s[nt][2] - base1), p3 = exp2f(s[nt][3] - base1);
      const uint32_t lo = Num<T>::pack2(p0, p1), hi = Num<T>::pack2(p2, p3);
      const T *lo_h = reinterpret_cast<const T *>(&lo);
      const T *hi_h = reinterpret_cast<const T *>(&hi);
      l0 += Num<T>::to_float(lo_h[0]) + Num<T>::to_float(lo_h[1]);
      l1 += Num<T>::to_float(hi_h[0]) + Num<T>::to_float(hi_h[1]);
      // n-tile nt covers keys nt*8..nt*8+7: the low (even nt) or high (odd nt) 8 columns of k-chunk nt/2.
      pa[nt / 2][(nt % 2) * 2 + 0] = lo;
      pa[nt / 2][(nt % 2) * 2 + 1] = hi;
    }

    if constexpr (PIPE) {
      cp_async_wait<0>();  // V of this tile is in
      __syncthreads();     // ... for every thread, and no warp reads ks any more
      if (kt + BN < kv_end)
        load_tile<PIPE, T, C, D>(ks, k_cache, k_scale, bt, kt + BN, kv_end, block_size, num_kv_heads, kv_head);
      cp_async_commit();  // (an empty group after the last tile: the waits count groups)
    }

    // O += P V: A = P (16 x 64 keys, 4 k-chunks), B = V (keys x D, 8 columns per n-tile).
#pragma unroll
    for (int kc = 0; kc < BN / 16; kc++) {
      if constexpr (PIPE) {
        // Matrix j of the x4.trans load: keys kc*16 + 8(j&1).., dims (dn + j/2)*8..: b0, b1 of n-tile dn,
        // then of dn + 1.
        const T *vrow = vs + (kc * 16 + ((lane >> 3) & 1) * 8 + (lane & 7)) * LD + (lane >> 4) * 8;
#pragma unroll
        for (int dn = 0; dn < D / 8; dn += 2) {
          uint32_t b[4];
          ldmatrix_x4<true>(b, vrow + dn * 8);
          mma16816<T>(o[dn], pa[kc], b[0], b[1]);
          mma16816<T>(o[dn + 1], pa[kc], b[2], b[3]);
        }
      } else {
        const T *v0 = vs + (kc * 16 + 2 * t) * LD + g;
#pragma unroll
        for (int dn = 0; dn < D / 8; dn++) {
          const T *vp = v0 + dn * 8;
          const uint32_t b0 = pack_halves(vp[0], vp[LD]);
          const uint32_t b1 = pack_halves(vp[8 * LD], vp[9 * LD]);
          mma16816<T>(o[dn], pa[kc], b0, b1);
        }
      }
    }
    if constexpr (PIPE) __syncthreads();  // no warp reads vs when the next tile's V is issued
  }

  // Finish the row sums across the quad and write the normalised rows.
  l0 += __shfl_xor_sync(0xffffffff, l0, 1);
  l0 += __shfl_xor_sync(0xffffffff, l0, 2);
  l1 += __shfl_xor_sync(0xffffffff, l1, 1);
  l1 += __shfl_xor_sync(0xffffffff, l1, 2);
  const float inv0 = 1.f / l0, inv1 = 1.f / l1;
  if (r0 < qlen) {
    T *dst = out + (size_t(qs + r0) * num_heads + head) * D + 2 * t;
#pragma unroll
    for (int dn = 0; dn < D / 8; dn++)
      *reinterpret_cast<uint32_t *>(dst + dn * 8) = Num<T>::pack2(o[dn][0] * inv0, o[dn][1] * inv0);
  }
  if (r1 < qlen) {
    T *dst = out + (size_t(qs + r1) * num_heads + head) * D + 2 * t;
#pragma unroll
    for (int dn = 0; dn < D / 8; dn++)
      *reinterpret_cast<uint32_t *>(dst + dn * 8) = Num<T>::pack2(o[dn][2] * inv1, o[dn][3] * inv1);
  }
}
}  // namespace

// Entry points: flash_prefill_{q type}_{cache type}_d{head dim} (staged), flash_prefill_pipe_{type}_d{head dim}
// (pipelined, caches of the model's type).
#define FLASH_PREFILL(NAME, PIPE, T, C, D)                                                                        \
  extern "C" __global__ void __launch_bounds__(THREADS)                                                     \
      NAME(T *out, const T *q, const C *k_cache, const C *v_cache, const int *seq_ids, const int *query_start, \
           const int *query_len, const int *context_len, const int *block_tables, int max_blocks_per_seq,   \
           int num_heads, int num_kv_heads, int block_size, float scale_log2, float k_scale, float v_scale) { \
    flash_prefill<PIPE, T, C, D>(out, q, k_cache, v_cache, seq_ids, query_start, query_len, context_len,    \
                                 block_tables, max_blocks_per_seq, num_heads, num_kv_heads, block_size,     \
                                 scale_log2, k_scale, v_scale);                                             \
  }

FLASH_PREFILL(flash_prefill_bf16_bf16_d64, false, bf16, bf16, 64)
FLASH_PREFILL(flash_prefill_bf16_bf16_d128, false, bf16, bf16, 128)
FLASH_PREFILL(flash_prefill_f16_f16_d64, false, f16, f16, 64)
FLASH_PREFILL(flash_prefill_f16_f16_d128, false, f16, f16, 128)
FLASH_PREFILL(flash_prefill_bf16_fp8_d64, false, bf16, fp8, 64)
FLASH_PREFILL(flash_prefill_bf16_fp8_d128, false, bf16, fp8, 128)
FLASH_PREFILL(flash_prefill_f16_fp8_d64, false, f16, fp8, 64)
FLASH_PREFILL(flash_prefill_f16_fp8_d128, false, f16, fp8, 128)
FLASH_PREFILL(flash_prefill_pipe_bf16_d64, true, bf16, bf16, 64)
FLASH_PREFILL(flash_prefill_pipe_bf16_d128, true, bf16, bf16, 128)
FLASH_PREFILL(flash_prefill_pipe_f16_d64, true, f16, f16, 64)
FLASH_PREFILL(flash_prefill_pipe_f16_d128, true, f16, f16, 128)
