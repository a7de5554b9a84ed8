// Flash-attention-style paged prefill (see prefill_attention.h).
//
// One CTA per (query head, tile of BM = 16 * MR * kWarps query rows); warp w
// owns MR m16 row tiles. K/V tiles of BN = 64 keys are gathered from the
// pages with 16-byte cp.async into XOR-swizzled rows (ldmatrix is conflict
// free) through a two-stage pipeline: tile i-1 loads while tile i computes,
// and the page-table entries of tile i-2 are fetched into registers at the
// same time, so neither latency is exposed. Key tiles are walked from the
// diagonal down: only the first tiles need the causal mask, tiles wholly
// above a warp's rows are skipped by that warp, and nothing past the CTA's
// last row is loaded. S = Q K^T and O += P V on mma.sync m16n8k16 (bf16 or
// f16 in, fp32 accumulate); the online softmax runs in fp32, log2 units.

#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cmath>
#include <cstdint>

#include "ops/cuda/device_util.cuh"
#include "ops/cuda/ptx.cuh"
#include "ops/cuda/prefill_attention.h"

namespace quest::ops::cuda {
namespace {

constexpr int kBlockN = 64;  // keys per tile

// Two floats as a packed pair (lo = a).
template <typename T>
__device__ __forceinline__ uint32_t Pack(float a, float b);
template <>
__device__ __forceinline__ uint32_t Pack<__nv_bfloat16>(float a, float b) {
  __nv_bfloat162 v = __floats2bfloat162_rn(a, b);
  return *reinterpret_cast<uint32_t*>(&v);
}
template <>
__device__ __forceinline__ uint32_t Pack<__half>(float a, float b) {
  __half2 v = __floats2half2_rn(a, b);
  return *reinterpret_cast<uint32_t*>(&v);
}

__device__ __forceinline__ float Exp2(float x) {
  float y;
  asm("ex2.approx.ftz.f32 %0, %1;\n" : "=f"(y) : "f"(x));
  return y;
}

// Element offset of (row, 16-byte chunk) in a [rows, D] tile: chunks are
// XOR-swizzled by row & 7 so the 8 rows an ldmatrix reads hit 8 distinct
// bank groups.
template <int D>
__device__ __forceinline__ int Swz(int row, int chunk) {
  return row * D + ((chunk ^ (row & 7)) << 3);
}

// Each thread loads kRows (row, 16-byte chunk) pieces of a K/V tile:
// piece `it` is row (tid + it * kCta) / (D / 8), chunk tid % (D / 8).
template <int D, int kCta>
struct KvPieces {
  static constexpr int kChunks = D / 8;
  static_assert(kBlockN * kChunks % kCta == 0, "tile vs CTA");
  static_assert(kCta % kChunks == 0, "a thread keeps its chunk");
  static constexpr int kRows = kBlockN * kChunks / kCta;
  static __device__ __forceinline__ int Row(int it) { return (threadIdx.x + it * kCta) / kChunks; }
};

// Physical pages of this thread's rows of the tile at n0 (-1: past kv_len or
// a hole), fetched a tile ahead so the page-table latency hides behind the
// math. page_size is a power of two (1 << page_shift).
template <int D, int kCta>
__device__ __forceinline__ void FetchPages(int (&phys)[KvPieces<D, kCta>::kRows], const PagedAttentionParams& p,
                                           int page_shift, int n0) {
  using P = KvPieces<D, kCta>;
#pragma unroll
  for (int it = 0; it < P::kRows; ++it) {
    const int j = n0 + P::Row(it);
    phys[it] = j < p.kv_len ? p.page_table[j >> page_shift] : -1;
  }
}

// K and V of keys [n0, n0 + kBlockN) of KV head g into sk / sv (cp.async);
// missing keys read as zeros and valid[r] says which rows are real.
template <typename T, int D, int kCta>
__device__ __forceinline__ void IssueKv(T* sk, T* sv, uint8_t* valid,
                                        const int (&phys)[KvPieces<D, kCta>::kRows],
                                        const PagedAttentionParams& p, int page_shift, int g, int n0) {
  using P = KvPieces<D, kCta>;
  const int c = threadIdx.x % P::kChunks;
  const T* kb = static_cast<const T*>(p.k_pages);
  const T* vb = static_cast<const T*>(p.v_pages);
  const int page_mask = (1 << page_shift) - 1;
#pragma unroll
  for (int it = 0; it < P::kRows; ++it) {
    const int r = P::Row(it);
    const int j = n0 + r;
    const bool ok = phys[it] >= 0;
    const int64_t off =
        ok ? ((static_cast<int64_t>(phys[it]) * (page_mask + 1) + (j & page_mask)) * p.num_kv_heads + g) * D + c * 8
           : 0;
    if (c == 0) valid[r] = ok;
    CpAsync16(sk + Swz<D>(r, c), kb + off, ok ? 16 : 0);
    CpAsync16(sv + Swz<D>(r, c), vb + off, ok ? 16 : 0);
  }
}

template <typename T, int D, int kWarps, int MR>
__global__ void __launch_bounds__(kWarps * 32) PrefillAttentionKernel(PagedAttentionParams p) {
  constexpr int kCta = kWarps * 32;
  constexpr int BM = 16 * MR * kWarps;
  constexpr int BN = kBlockN;
  constexpr int KS = D / 16;    // k steps of S = Q K^T
  constexpr int NT = BN / 8;    // n8 tiles of S
  constexpr int DT = D / 8;     // n8 tiles of O
  constexpr int kChunks = D / 8;

  extern __shared__ __align__(128) unsigned char smem[];
  T* sQ = reinterpret_cast<T*>(smem);
  T* sK = sQ + BM * D;     // [2][BN][D]: two stages
  T* sV = sK + 2 * BN * D;  // [2][BN][D]
  __shared__ uint8_t s_valid[2][BN];
  int page_shift = 0;
  while ((1 << page_shift) < p.page_size) ++page_shift;

  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  const int h = blockIdx.x;
  const int mt = gridDim.y - 1 - blockIdx.y;  // heaviest (latest) row tiles first
  const int g = h / (p.num_heads / p.num_kv_heads);
  const int m0 = mt * BM;
  const int rows = min(BM, p.n - m0);
  const int q0 = static_cast<int>(p.kv_len) - p.n + m0;  // position of tile row 0
  const int q_last = q0 + rows - 1;
  const int nblocks = (q_last + BN) / BN;

  // Page-table holes anywhere up to the last row's position: masked path.
  int hole = 0;
  const int npages = q_last / p.page_size + 1;
  for (int i = tid; i < npages; i += kCta) hole |= p.page_table[i] < 0;
  const bool has_holes = __syncthreads_or(hole) != 0;

  // Q tile (rows past n read as zeros).
  {
    const T* qb = static_cast<const T*>(p.q);
    static_assert(BM * kChunks % kCta == 0, "Q tile vs CTA");
#pragma unroll
    for (int it = 0; it < BM * kChunks / kCta; ++it) {
      const int idx = tid + it * kCta;
      const int r = idx / kChunks, c = idx % kChunks;
      const bool ok = r < rows;
      const T* src = ok ? qb + (static_cast<int64_t>(m0 + r) * p.num_heads + h) * D + c * 8 : qb;
      CpAsync16(sQ + Swz<D>(r, c), src, ok ? 16 : 0);
    }
  }
  int phys[KvPieces<D, kCta>::kRows];
  FetchPages<D, kCta>(phys, p, page_shift, (nblocks - 1) * BN);
  IssueKv<T, D, kCta>(sK, sV, s_valid[0], phys, p, page_shift, g, (nblocks - 1) * BN);
  CpAsyncCommit();  // group: Q and the first tile
  if (nblocks >= 2) FetchPages<D, kCta>(phys, p, page_shift, (nblocks - 2) * BN);

  float o[MR][DT][4];
  float m_run[MR][2], l_run[MR][2];
#pragma unroll
  for (int mr = 0; mr < MR; ++mr) {
#pragma unroll
    for (int dt = 0; dt < DT; ++dt) {
#pragma unroll
      for (int e = 0; e < 4; ++e) o[mr][dt][e] = 0.0f;
    }
#pragma unroll
    for (int i = 0; i < 2; ++i) {
      m_run[mr][i] = -INFINITY;
      l_run[mr][i] = 0.0f;
    }
  }
  const float sl2 = p.scale * 1.4426950408889634f;  // softmax in log2 units
  const int wrow0 = warp * 16 * MR;                 // warp's first tile row
  const int wq_min = q0 + wrow0;
  const int wq_max = q0 + wrow0 + 16 * MR - 1;

  // One m16 row tile per warp: its Q fragments stay in registers (with two,
  // the registers go to the second tile's S and O and Q is re-read from
  // shared memory per key tile).
  constexpr bool kQInRegs = MR == 1;
  uint32_t q_regs[kQInRegs ? KS : 1][4];
  for (int nb = nblocks - 1, stage = 0; nb >= 0; --nb, stage ^= 1) {
    const int n0 = nb * BN;
    // Prefetch the next tile into the other stage (everyone finished it at
    // the end of the previous iteration), and the page-table entries of the
    // one after.
    if (nb > 0) {
      IssueKv<T, D, kCta>(sK + (stage ^ 1) * BN * D, sV + (stage ^ 1) * BN * D, s_valid[stage ^ 1], phys, p,
                          page_shift, g, n0 - BN);
      CpAsyncCommit();
      if (nb > 1) FetchPages<D, kCta>(phys, p, page_shift, n0 - 2 * BN);
      CpAsyncWait<1>();  // this tile (and Q) landed
    } else {
      CpAsyncWait<0>();
    }
    __syncthreads();  // ... for everyone
    const T* tK = sK + stage * BN * D;
    const T* tV = sV + stage * BN * D;
    const uint8_t* t_valid = s_valid[stage];
    if (kQInRegs && nb == nblocks - 1) {  // Q landed with the first tile
#pragma unroll
      for (int ks = 0; ks < KS; ++ks) {
        LdMatrixX4(q_regs[ks], sQ + Swz<D>(wrow0 + (lane & 15), 2 * ks + (lane >> 4)));
      }
    }

    const bool active = n0 <= wq_max;  // warp-uniform: some key of the tile is visible
    float s[MR][NT][4];
    if (active) {
#pragma unroll
      for (int mr = 0; mr < MR; ++mr) {
#pragma unroll
        for (int nt = 0; nt < NT; ++nt) {
#pragma unroll
          for (int e = 0; e < 4; ++e) s[mr][nt][e] = 0.0f;
        }
      }
#pragma unroll
      for (int ks = 0; ks < KS; ++ks) {
        uint32_t qa[MR][4];
#pragma unroll
        for (int mr = 0; mr < MR; ++mr) {
          if constexpr (kQInRegs) {
#pragma unroll
            for (int e = 0; e < 4; ++e) qa[mr][e] = q_regs[ks][e];
          } else {
            LdMatrixX4(qa[mr], sQ + Swz<D>(wrow0 + mr * 16 + (lane & 15), 2 * ks + (lane >> 4)));
          }
        }
#pragma unroll
        for (int np = 0; np < NT / 2; ++np) {
          uint32_t kb[4];
          LdMatrixX4(kb, tK + Swz<D>(16 * np + (lane & 7) + ((lane >> 4) << 3), 2 * ks + ((lane >> 3) & 1)));
#pragma unroll
          for (int mr = 0; mr < MR; ++mr) {
            Mma16816<T>(s[mr][2 * np], qa[mr], kb[0], kb[1]);
            Mma16816<T>(s[mr][2 * np + 1], qa[mr], kb[2], kb[3]);
          }
        }
      }
      // Causal mask (and holes) where the tile reaches past the warp's first row.
      if (n0 + BN - 1 > wq_min || has_holes) {
#pragma unroll
        for (int mr = 0; mr < MR; ++mr) {
#pragma unroll
          for (int nt = 0; nt < NT; ++nt) {
#pragma unroll
            for (int e = 0; e < 4; ++e) {
              const int row = wrow0 + mr * 16 + (lane >> 2) + ((e >> 1) << 3);
              const int col = nt * 8 + 2 * (lane & 3) + (e & 1);
              const bool hidden = n0 + col > q0 + row || (has_holes && t_valid[col] == 0);
              if (hidden) s[mr][nt][e] = -INFINITY;
            }
          }
        }
      }
      // Online softmax; row (lane >> 2) + 8 i of each m16 tile, shared by a quad.
#pragma unroll
      for (int mr = 0; mr < MR; ++mr) {
#pragma unroll
        for (int i = 0; i < 2; ++i) {
          float mx = -INFINITY;
#pragma unroll
          for (int nt = 0; nt < NT; ++nt) mx = fmaxf(mx, fmaxf(s[mr][nt][2 * i], s[mr][nt][2 * i + 1]));
          mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 1));
          mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 2));
          const float m_new = fmaxf(m_run[mr][i], mx * sl2);
          const float m_use = m_new == -INFINITY ? 0.0f : m_new;  // row wholly hidden so far
          const float corr = Exp2(m_run[mr][i] - m_use);
          m_run[mr][i] = m_new;
          float sum = 0.0f;
#pragma unroll
          for (int nt = 0; nt < NT; ++nt) {
#pragma unroll
            for (int e = 2 * i; e < 2 * i + 2; ++e) {
              const float pe = Exp2(fmaf(s[mr][nt][e], sl2, -m_use));
              s[mr][nt][e] = pe;
              sum += pe;
            }
          }
          l_run[mr][i] = l_run[mr][i] * corr + sum;
#pragma unroll
          for (int dt = 0; dt < DT; ++dt) {
            o[mr][dt][2 * i] *= corr;
            o[mr][dt][2 * i + 1] *= corr;
          }
        }
      }
    }


    if (active) {
#pragma unroll
      for (int kk = 0; kk < BN / 16; ++kk) {
        uint32_t pa[MR][4];
#pragma unroll
        for (int mr = 0; mr < MR; ++mr) {
          pa[mr][0] = Pack<T>(s[mr][2 * kk][0], s[mr][2 * kk][1]);
          pa[mr][1] = Pack<T>(s[mr][2 * kk][2], s[mr][2 * kk][3]);
          pa[mr][2] = Pack<T>(s[mr][2 * kk + 1][0], s[mr][2 * kk + 1][1]);
          pa[mr][3] = Pack<T>(s[mr][2 * kk + 1][2], s[mr][2 * kk + 1][3]);
        }
#pragma unroll
        for (int dp = 0; dp < D / 16; ++dp) {
          uint32_t vb[4];
          LdMatrixX4Trans(vb, tV + Swz<D>(16 * kk + (lane & 7) + (((lane >> 3) & 1) << 3), 2 * dp + (lane >> 4)));
#pragma unroll
          for (int mr = 0; mr < MR; ++mr) {
            Mma16816<T>(o[mr][2 * dp], pa[mr], vb[0], vb[1]);
            Mma16816<T>(o[mr][2 * dp + 1], pa[mr], vb[2], vb[3]);
          }
        }
      }
    }
    __syncthreads();  // everyone is done with this stage before it is refilled
  }

  // Normalise and store (rows past n are not stored).
  T* out = static_cast<T*>(p.out);
#pragma unroll
  for (int mr = 0; mr < MR; ++mr) {
#pragma unroll
    for (int i = 0; i < 2; ++i) {
      float l = l_run[mr][i];
      l += __shfl_xor_sync(0xffffffffu, l, 1);
      l += __shfl_xor_sync(0xffffffffu, l, 2);
      const float inv = l > 0.0f ? 1.0f / l : 0.0f;  // a row that saw no key: zeros
      const int row = wrow0 + mr * 16 + (lane >> 2) + 8 * i;
      if (row < rows) {
        T* orow = out + (static_cast<int64_t>(m0 + row) * p.num_heads + h) * D + 2 * (lane & 3);
#pragma unroll
        for (int dt = 0; dt < DT; ++dt) {
          *reinterpret_cast<uint32_t*>(orow + dt * 8) =
              Pack<T>(o[mr][dt][2 * i] * inv, o[mr][dt][2 * i + 1] * inv);
        }
      }
    }
  }
}

template <typename T, int D, int kWarps, int MR>
cudaError_t Launch(const PagedAttentionParams& p, cudaStream_t stream) {
  constexpr int BM = 16 * MR * kWarps;
  constexpr int kSmem = (BM + 4 * kBlockN) * D * static_cast<int>(sizeof(T));
  static const cudaError_t attr = cudaFuncSetAttribute(
      PrefillAttentionKernel<T, D, kWarps, MR>, cudaFuncAttributeMaxDynamicSharedMemorySize, kSmem);
  if (attr != cudaSuccess) return attr;
  const dim3 grid(static_cast<unsigned>(p.num_heads), static_cast<unsigned>((p.n + BM - 1) / BM));
  PrefillAttentionKernel<T, D, kWarps, MR><<<grid, kWarps * 32, kSmem, stream>>>(p);
  return cudaGetLastError();
}

template <typename T, int D>
cudaError_t LaunchDim(const PagedAttentionParams& p, int warps, int row_tiles, cudaStream_t stream) {
  if (warps == 4 && row_tiles == 1) return Launch<T, D, 4, 1>(p, stream);
  if (warps == 4 && row_tiles == 2) return Launch<T, D, 4, 2>(p, stream);
  if (warps == 8 && row_tiles == 1) return Launch<T, D, 8, 1>(p, stream);
  return cudaErrorNotSupported;
}

}  // namespace

bool PrefillAttentionSupported(const PagedAttentionParams& p) {
  return p.n >= 2 && (p.head_dim == 64 || p.head_dim == 128) && p.chunks == nullptr &&
         p.indptr == nullptr && p.token_valid == nullptr && p.lse == nullptr &&
         p.attention_sum == nullptr && p.attention_last == nullptr && p.num_kv_heads > 0 &&
         p.num_heads > 0 && p.num_heads % p.num_kv_heads == 0 && p.page_size > 0 &&
         (p.page_size & (p.page_size - 1)) == 0 &&
         p.kv_len >= p.n && p.kv_len < (int64_t{1} << 30) && p.scale > 0.0f && std::isfinite(p.scale) &&
         p.page_table != nullptr && Aligned16(p.q) && Aligned16(p.k_pages) &&
         Aligned16(p.v_pages) && Aligned16(p.out) && (p.n + 31) / 32 <= 65535;
}

cudaError_t LaunchPrefillAttentionConfig(ElemType type, const PagedAttentionParams& p, int warps,
                                         int row_tiles, cudaStream_t stream) {
  if (!PrefillAttentionSupported(p)) return cudaErrorNotSupported;
  if (p.head_dim == 128) {
    QUEST_DISPATCH(type, return LaunchDim<T, 128>(p, warps, row_tiles, stream));
  }
  QUEST_DISPATCH(type, return LaunchDim<T, 64>(p, warps, row_tiles, stream));
  return cudaErrorNotSupported;
}

cudaError_t LaunchPrefillAttention(ElemType type, const PagedAttentionParams& p,
                                   cudaStream_t stream) {
  // Measured on H100 (prefill_attention_test's benchmark): 4 warps x 32
  // rows (BM 128, 2 CTAs per SM) is fastest with many row tiles (a whole
  // 4K prefill), 8 warps x 16 rows (BM 128, 1 CTA per SM) with about one
  // CTA per SM (512-token chunks of 32 heads), 4 x 16 rows (BM 64) when
  // 128-row tiles would leave most SMs idle.
  const int64_t ctas128 = static_cast<int64_t>(p.num_heads) * ((p.n + 127) / 128);
  const int sms = NumSms();
  if (ctas128 >= 2 * sms) return LaunchPrefillAttentionConfig(type, p, 4, 2, stream);
  if (2 * ctas128 >= sms) return LaunchPrefillAttentionConfig(type, p, 8, 1, stream);
  return LaunchPrefillAttentionConfig(type, p, 4, 1, stream);
}

}  // namespace quest::ops::cuda
