// Flash-attention-style paged prefill (see prefill_attention.h).
//
// One CTA per (query head, tile of BM query rows). K/V tiles of BN = 64 keys
// are gathered from the pages with 16-byte cp.async into swizzled shared
// memory through a two-stage pipeline: tile i-1 loads while tile i
// computes, and the page-table entries of tile i-2 are fetched into
// registers at the same time, so neither latency is exposed. Key tiles are
// walked from the diagonal down: only the first tiles need the causal mask,
// tiles wholly above a warp's (warpgroup's) rows are skipped, and nothing
// past the CTA's last row is loaded. The online softmax runs in fp32, log2
// units. Three kernels share that walk:
//   - PrefillAttentionWsKernel (the default with a 128-row tile per SM or
//     more): Hopper warpgroup MMA, one warpgroup gathering K/V tiles for two
//     that compute 64 query rows each, synchronised by mbarriers;
//   - PrefillAttentionWgmmaKernel (the default below that, with one
//     warpgroup): the same MMAs, every thread loading and computing, a CTA
//     barrier per tile;
//   - PrefillAttentionKernel: mma.sync m16n8k16 with ldmatrix, 16 * MR rows
//     per warp (kept as the measured baseline and for tests).
// The wgmma kernels read Q, K and V from shared memory through descriptors
// and take P from registers (wgmma.cuh).

#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cmath>
#include <cstdint>

#include "ops/cuda/device_util.cuh"
#include "ops/cuda/ptx.cuh"
#include "ops/cuda/prefill_attention.h"
#include "ops/cuda/wgmma.cuh"

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

// Where (row r, 16-byte chunk c) of a [rows, D] tile goes, in elements:
// rows of D with XOR-swizzled chunks for ldmatrix (the mma.sync kernel), or
// the 64-column blocks the wgmma descriptors read (wgmma.cuh).
template <int D>
struct LdmatrixLayout {
  static __device__ __forceinline__ int Offset(int /*rows*/, int r, int c) { return Swz<D>(r, c); }
};
struct WgmmaLayout {
  static __device__ __forceinline__ int Offset(int rows, int r, int c) {
    return wgmma::SwizzledOffset(rows, r, c * 8);
  }
};

// K and V of keys [n0, n0 + kBlockN) of KV head g into sk / sv (cp.async);
// missing keys read as zeros and valid[r] (when given) says which rows are
// real.
template <typename T, int D, int kCta, typename Layout>
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
    if (valid != nullptr && c == 0) valid[r] = ok;
    const int dst = Layout::Offset(kBlockN, r, c);
    CpAsync16(sk + dst, kb + off, ok ? 16 : 0);
    CpAsync16(sv + dst, vb + off, ok ? 16 : 0);
  }
}

// Query rows [m0, m0 + rows) of head h into sq (cp.async); rows past n read
// as zeros.
template <typename T, int D, int kCta, int BM, typename Layout>
__device__ __forceinline__ void IssueQ(T* sq, const PagedAttentionParams& p, int m0, int rows, int h) {
  constexpr int kChunks = D / 8;
  static_assert(BM * kChunks % kCta == 0, "Q tile vs CTA");
  const T* qb = static_cast<const T*>(p.q);
#pragma unroll
  for (int it = 0; it < BM * kChunks / kCta; ++it) {
    const int idx = threadIdx.x + it * kCta;
    const int r = idx / kChunks, c = idx % kChunks;
    const bool ok = r < rows;
    const T* src = ok ? qb + (static_cast<int64_t>(m0 + r) * p.num_heads + h) * D + c * 8 : qb;
    CpAsync16(sq + Layout::Offset(BM, r, c), src, ok ? 16 : 0);
  }
}

// True when a page-table entry up to the last row's position is a hole (-1):
// the kernels then mask those keys as well as the causal ones.
template <int kCta>
__device__ __forceinline__ bool HasHoles(const PagedAttentionParams& p, int q_last) {
  int hole = 0;
  const int npages = q_last / p.page_size + 1;
  for (int i = threadIdx.x; i < npages; i += kCta) hole |= p.page_table[i] < 0;
  return __syncthreads_or(hole) != 0;
}

// The CTA's query-row tile: query head h (KV head g), rows [m0, m0 + rows)
// of the n queries at positions q0 .. q_last, the nblocks key tiles of BN
// keys its causal window spans, and whether the page table has holes there.
// Grid: (num_heads, row tiles), the heaviest (latest) row tiles first.
struct RowTile {
  int h, g, m0, rows, q0, q_last, nblocks, page_shift;
  bool has_holes;
};
template <int BM, int BN, int kCta>
__device__ __forceinline__ RowTile MakeRowTile(const PagedAttentionParams& p) {
  RowTile t;
  t.page_shift = 0;
  while ((1 << t.page_shift) < p.page_size) ++t.page_shift;
  t.h = blockIdx.x;
  t.g = t.h / (p.num_heads / p.num_kv_heads);
  t.m0 = (gridDim.y - 1 - blockIdx.y) * BM;
  t.rows = min(BM, p.n - t.m0);
  t.q0 = static_cast<int>(p.kv_len) - p.n + t.m0;
  t.q_last = t.q0 + t.rows - 1;
  t.nblocks = (t.q_last + BN) / BN;
  t.has_holes = HasHoles<kCta>(p, t.q_last);
  return t;
}

// Dynamic shared memory from its next 1024-byte boundary: the wgmma
// swizzle repeats every 1024 bytes and the descriptors assume tiles that
// start on one (launches add 1024 bytes for this).
__device__ __forceinline__ unsigned char* Align1024(unsigned char* smem) {
  return reinterpret_cast<unsigned char*>((reinterpret_cast<uintptr_t>(smem) + 1023) & ~uintptr_t{1023});
}

template <int J>
__device__ __forceinline__ void Zero(float (&a)[J][4]) {
#pragma unroll
  for (int j = 0; j < J; ++j) {
#pragma unroll
    for (int e = 0; e < 4; ++e) a[j][e] = 0.0f;
  }
}

// The two-stage K/V pipeline of the kernels whose every thread loads (CTA
// barriers around each tile: the mma.sync and the plain wgmma kernel). Its tiles walk from the diagonal down: tile nb
// covers keys [nb * kBlockN, (nb + 1) * kBlockN), and tile nb sits in stage
// (nblocks - 1 - nb) % 2. Each thread keeps the page-table entries of its
// rows of the next tile to load in `phys`.
template <typename T, int D, int kCta, int BM, typename Layout>
struct TwoStageKv {
  T* sQ;
  T* sK;  // [2][kBlockN][D]
  T* sV;  // [2][kBlockN][D]
  uint8_t (*valid)[kBlockN];  // [2][kBlockN]: which rows of a stage are real keys
  int phys[KvPieces<D, kCta>::kRows];

  // Q and the first (diagonal) tile in flight, the second's pages fetched.
  __device__ __forceinline__ void Start(const PagedAttentionParams& p, const RowTile& t) {
    IssueQ<T, D, kCta, BM, Layout>(sQ, p, t.m0, t.rows, t.h);
    FetchPages<D, kCta>(phys, p, t.page_shift, (t.nblocks - 1) * kBlockN);
    IssueKv<T, D, kCta, Layout>(sK, sV, valid[0], phys, p, t.page_shift, t.g, (t.nblocks - 1) * kBlockN);
    CpAsyncCommit();  // group: Q and the first tile
    if (t.nblocks >= 2) FetchPages<D, kCta>(phys, p, t.page_shift, (t.nblocks - 2) * kBlockN);
  }
  // Before tile nb (in `stage`) is computed: the next tile's loads into the
  // other stage (everyone finished it at the last tile's closing barrier),
  // the page-table entries of the one after, and this thread's wait for
  // tile nb (and Q). The caller's barrier makes it everyone's.
  __device__ __forceinline__ void Advance(const PagedAttentionParams& p, const RowTile& t, int nb, int stage) {
    if (nb > 0) {
      const int next = (nb - 1) * kBlockN;
      IssueKv<T, D, kCta, Layout>(sK + (stage ^ 1) * kBlockN * D, sV + (stage ^ 1) * kBlockN * D, valid[stage ^ 1],
                                  phys, p, t.page_shift, t.g, next);
      CpAsyncCommit();
      if (nb > 1) FetchPages<D, kCta>(phys, p, t.page_shift, next - kBlockN);
      CpAsyncWait<1>();
    } else {
      CpAsyncWait<0>();
    }
  }
};

// The S fragment of one m16 row tile (rows row0 + (lane / 4) + 8 (e / 2) of
// the CTA's tile, columns n0 + 8 nt + 2 (lane % 4) + e % 2): keys after the
// row's position, and holes (valid(col) false), become -inf.
template <int NT, typename Valid>
__device__ __forceinline__ void MaskTile(float (&s)[NT][4], int row0, int q0, int n0, bool has_holes,
                                         Valid valid) {
  const int lane = threadIdx.x & 31;
#pragma unroll
  for (int nt = 0; nt < NT; ++nt) {
#pragma unroll
    for (int e = 0; e < 4; ++e) {
      const int row = row0 + (lane >> 2) + ((e >> 1) << 3);
      const int col = nt * 8 + 2 * (lane & 3) + (e & 1);
      const bool hidden = n0 + col > q0 + row || (has_holes && !valid(col));
      if (hidden) s[nt][e] = -INFINITY;
    }
  }
}

// Online softmax of one m16 row tile's S fragment (rows (lane >> 2) + 8 i,
// each shared by a quad) in log2 units: s becomes P, the running max / sum
// advance and O is rescaled.
template <int NT, int DT>
__device__ __forceinline__ void OnlineSoftmax(float (&s)[NT][4], float (&m_run)[2], float (&l_run)[2],
                                              float (&o)[DT][4], float sl2) {
#pragma unroll
  for (int i = 0; i < 2; ++i) {
    float mx = -INFINITY;
#pragma unroll
    for (int nt = 0; nt < NT; ++nt) mx = fmaxf(mx, fmaxf(s[nt][2 * i], s[nt][2 * i + 1]));
    mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 1));
    mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 2));
    const float m_new = fmaxf(m_run[i], mx * sl2);
    const float m_use = m_new == -INFINITY ? 0.0f : m_new;  // row wholly hidden so far
    const float corr = Exp2(m_run[i] - m_use);
    m_run[i] = m_new;
    float sum = 0.0f;
#pragma unroll
    for (int nt = 0; nt < NT; ++nt) {
#pragma unroll
      for (int e = 2 * i; e < 2 * i + 2; ++e) {
        const float pe = Exp2(fmaf(s[nt][e], sl2, -m_use));
        s[nt][e] = pe;
        sum += pe;
      }
    }
    l_run[i] = l_run[i] * corr + sum;
#pragma unroll
    for (int dt = 0; dt < DT; ++dt) {
      o[dt][2 * i] *= corr;
      o[dt][2 * i + 1] *= corr;
    }
  }
}

// P of keys [16 kk, 16 kk + 16) as an m16n8k16 A fragment.
template <typename T, int NT>
__device__ __forceinline__ void PFragment(uint32_t (&a)[4], const float (&s)[NT][4], int kk) {
  a[0] = Pack<T>(s[2 * kk][0], s[2 * kk][1]);
  a[1] = Pack<T>(s[2 * kk][2], s[2 * kk][3]);
  a[2] = Pack<T>(s[2 * kk + 1][0], s[2 * kk + 1][1]);
  a[3] = Pack<T>(s[2 * kk + 1][2], s[2 * kk + 1][3]);
}

// O / l of one m16 row tile into out (tile rows row0 + ..., those < rows).
template <typename T, int DT>
__device__ __forceinline__ void StoreRows(const float (&o)[DT][4], const float (&l_run)[2], int row0, int rows,
                                          int m0, int h, const PagedAttentionParams& p) {
  constexpr int D = DT * 8;
  const int lane = threadIdx.x & 31;
  T* out = static_cast<T*>(p.out);
#pragma unroll
  for (int i = 0; i < 2; ++i) {
    float l = l_run[i];
    l += __shfl_xor_sync(0xffffffffu, l, 1);
    l += __shfl_xor_sync(0xffffffffu, l, 2);
    const float inv = l > 0.0f ? 1.0f / l : 0.0f;  // a row that saw no key: zeros
    const int row = row0 + (lane >> 2) + 8 * i;
    if (row < rows) {
      T* orow = out + (static_cast<int64_t>(m0 + row) * p.num_heads + h) * D + 2 * (lane & 3);
#pragma unroll
      for (int dt = 0; dt < DT; ++dt) {
        *reinterpret_cast<uint32_t*>(orow + dt * 8) = Pack<T>(o[dt][2 * i] * inv, o[dt][2 * i + 1] * inv);
      }
    }
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
  using Layout = LdmatrixLayout<D>;

  extern __shared__ __align__(128) unsigned char smem[];
  T* sQ = reinterpret_cast<T*>(smem);
  T* sK = sQ + BM * D;     // [2][BN][D]: two stages
  T* sV = sK + 2 * BN * D;  // [2][BN][D]
  __shared__ uint8_t s_valid[2][BN];

  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  const RowTile tile = MakeRowTile<BM, BN, kCta>(p);
  const auto [h, g, m0, rows, q0, q_last, nblocks, page_shift, has_holes] = tile;
  TwoStageKv<T, D, kCta, BM, Layout> kv{sQ, sK, sV, s_valid};
  kv.Start(p, tile);

  float o[MR][DT][4];
  float m_run[MR][2], l_run[MR][2];
#pragma unroll
  for (int mr = 0; mr < MR; ++mr) {
    Zero(o[mr]);
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
    kv.Advance(p, tile, nb, stage);
    __syncthreads();  // tile nb landed for everyone
    const T* tK = sK + stage * BN * D;
    const T* tV = sV + stage * BN * D;
    if (kQInRegs && nb == nblocks - 1) {  // Q landed with the first tile
#pragma unroll
      for (int ks = 0; ks < KS; ++ks) {
        LdMatrixX4(q_regs[ks], sQ + Swz<D>(wrow0 + (lane & 15), 2 * ks + (lane >> 4)));
      }
    }

    // Warp-uniform: some key of the tile is visible to the warp's rows.
    if (n0 <= wq_max) {
      float s[MR][NT][4];
#pragma unroll
      for (int mr = 0; mr < MR; ++mr) Zero(s[mr]);
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
#pragma unroll
      for (int mr = 0; mr < MR; ++mr) {
        // The causal mask (and holes) where the tile reaches past the warp's first row.
        if (n0 + BN - 1 > wq_min || has_holes) MaskTile(s[mr], wrow0 + mr * 16, q0, n0, has_holes, [&](int col) { return s_valid[stage][col] != 0; });
        OnlineSoftmax(s[mr], m_run[mr], l_run[mr], o[mr], sl2);
      }
#pragma unroll
      for (int kk = 0; kk < BN / 16; ++kk) {
        uint32_t pa[MR][4];
#pragma unroll
        for (int mr = 0; mr < MR; ++mr) PFragment<T>(pa[mr], s[mr], kk);
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

#pragma unroll
  for (int mr = 0; mr < MR; ++mr) StoreRows<T>(o[mr], l_run[mr], wrow0 + mr * 16, rows, m0, h, p);
}

// The same walk on Hopper warpgroup MMA: kWG warpgroups of 64 query rows
// (BM = 64 kWG). S = Q K^T reads Q and K from shared memory through
// descriptors (m64n64k16); O += P V takes P from registers and V from
// shared memory (m64nDk16), so neither operand is staged through
// registers by ldmatrix. Each warpgroup waits for its own MMAs; the other
// warpgroups (and the second CTA on the SM) fill the gaps.
template <typename T, int D, int kWG>
__global__ void __launch_bounds__(kWG * 128, 2) PrefillAttentionWgmmaKernel(PagedAttentionParams p) {
  constexpr int kCta = kWG * 128;
  constexpr int BM = 64 * kWG;
  constexpr int BN = kBlockN;
  constexpr int KS = D / 16;  // k steps of S = Q K^T
  constexpr int NT = BN / 8;  // n8 tiles of S
  constexpr int DT = D / 8;   // n8 tiles of O
  constexpr int kRowBytes = 128;  // one 64-column block row
  using Layout = WgmmaLayout;

  extern __shared__ unsigned char smem_raw[];
  T* sQ = reinterpret_cast<T*>(Align1024(smem_raw));
  T* sK = sQ + BM * D;      // [2][BN][D]: two stages
  T* sV = sK + 2 * BN * D;  // [2][BN][D]
  __shared__ uint8_t s_valid[2][BN];

  const int tid = threadIdx.x, warp = tid >> 5, wg = tid >> 7;
  const RowTile tile = MakeRowTile<BM, BN, kCta>(p);
  const auto [h, g, m0, rows, q0, q_last, nblocks, page_shift, has_holes] = tile;
  TwoStageKv<T, D, kCta, BM, Layout> kv{sQ, sK, sV, s_valid};
  kv.Start(p, tile);

  float o[DT][4], s[NT][4];
  float m_run[2] = {-INFINITY, -INFINITY}, l_run[2] = {0.0f, 0.0f};
  Zero(o);
  Zero(s);
  const float sl2 = p.scale * 1.4426950408889634f;  // softmax in log2 units
  const int wrow0 = warp * 16;                      // warp's first tile row
  const int gq_min = q0 + wg * 64;                  // the warpgroup's rows
  const int gq_max = gq_min + 63;
  // Descriptors of the tiles' first bytes; each MMA adds its offset (fewer
  // instructions per tile than building each one: 5-8 % faster).
  const uint64_t q_desc = wgmma::Descriptor(sQ + wg * 64 * 64, 16, 8 * kRowBytes);
  const uint64_t k_desc = wgmma::Descriptor(sK, 16, 8 * kRowBytes);
  const uint64_t v_desc = wgmma::Descriptor(sV, BN * kRowBytes, 8 * kRowBytes);
  constexpr int kStageBytes = BN * D * static_cast<int>(sizeof(T));

  for (int nb = nblocks - 1, stage = 0; nb >= 0; --nb, stage ^= 1) {
    const int n0 = nb * BN;
    kv.Advance(p, tile, nb, stage);
    wgmma::FenceSharedForAsyncProxy();
    __syncthreads();
    const int stage_bytes = stage * kStageBytes;

    // Warpgroup-uniform: some key of the tile is visible to its rows.
    if (n0 <= gq_max) {
      wgmma::Fence();
#pragma unroll
      for (int ks = 0; ks < KS; ++ks) {
        // 64-column block ks / 4, 16-column step ks % 4 of it.
        const int col_bytes = ks % 4 * 32;
        wgmma::MmaSS<T, BN>(s, wgmma::Advance(q_desc, ks / 4 * BM * kRowBytes + col_bytes),
                            wgmma::Advance(k_desc, stage_bytes + ks / 4 * BN * kRowBytes + col_bytes), ks > 0);
      }
      wgmma::Commit();
      wgmma::Wait<0>();
      wgmma::FenceOperands(s);

      if (n0 + BN - 1 > q0 + wrow0 || has_holes) MaskTile(s, wrow0, q0, n0, has_holes, [&](int col) { return s_valid[stage][col] != 0; });
      OnlineSoftmax(s, m_run, l_run, o, sl2);
      uint32_t pa[BN / 16][4];
#pragma unroll
      for (int kk = 0; kk < BN / 16; ++kk) PFragment<T>(pa[kk], s, kk);

      wgmma::Fence();
#pragma unroll
      for (int kk = 0; kk < BN / 16; ++kk) {
        wgmma::MmaRS<T, D>(o, pa[kk], wgmma::Advance(v_desc, stage_bytes + kk * 16 * kRowBytes), 1);
      }
      wgmma::Commit();
      wgmma::Wait<0>();
      wgmma::FenceOperands(o);
      wgmma::FenceOperands(pa);  // the P V reads pa until here
    }
    __syncthreads();  // everyone is done with this stage before it is refilled
  }

  StoreRows<T>(o, l_run, wrow0, rows, m0, h, p);
}

// Warp-specialized wgmma prefill (one CTA of 3 warpgroups per SM):
// warpgroup 0 gathers the K/V tiles (cp.async into kStages stages; an
// mbarrier per stage, "full", completes when every producer thread's copies
// landed), warpgroups 1-2 own 64 query rows each and release a stage
// ("empty") once their P V of it is done. No CTA-wide barrier in the loop,
// so the consumers drift apart and one's softmax overlaps the other's MMAs,
// and the consumers issue no loads.
template <typename T, int D, int kStages>
__global__ void __launch_bounds__(384, 1) PrefillAttentionWsKernel(PagedAttentionParams p) {
  constexpr int kProducer = 128;  // threads of warpgroup 0
  constexpr int BM = 128;
  constexpr int BN = kBlockN;
  constexpr int KS = D / 16;
  constexpr int NT = BN / 8;
  constexpr int DT = D / 8;
  constexpr int kRowBytes = 128;
  constexpr int kStageBytes = BN * D * static_cast<int>(sizeof(T));
  using Layout = WgmmaLayout;

  extern __shared__ unsigned char smem_raw[];
  T* sQ = reinterpret_cast<T*>(Align1024(smem_raw));
  T* sK = sQ + BM * D;             // [kStages][BN][D]
  T* sV = sK + kStages * BN * D;   // [kStages][BN][D]
  __shared__ __align__(8) uint64_t full[kStages], empty[kStages];

  const int tid = threadIdx.x, wg = tid >> 7;
  // Tile j (in production order) covers keys from (nblocks - 1 - j) * BN.
  const auto [h, g, m0, rows, q0, q_last, nblocks, page_shift, has_holes] = MakeRowTile<BM, BN, 384>(p);
  if (tid == 0) {
#pragma unroll
    for (int st = 0; st < kStages; ++st) {
      MbarInit(&full[st], kProducer);  // every producer thread's copies landed
      MbarInit(&empty[st], 256);       // every consumer thread is done with it
    }
  }
  __syncthreads();

  if (wg == 0) {
    // Producer: tile j into stage j % kStages once both consumers released
    // its previous use; Q rides with tile 0.
    IssueQ<T, D, kProducer, BM, Layout>(sQ, p, m0, rows, h);
    int phys[KvPieces<D, kProducer>::kRows];
    FetchPages<D, kProducer>(phys, p, page_shift, (nblocks - 1) * BN);
    for (int j = 0; j < nblocks; ++j) {
      const int st = j % kStages;
      MbarWait(&empty[st], ((j / kStages) & 1) ^ 1);
      const int n0 = (nblocks - 1 - j) * BN;
      IssueKv<T, D, kProducer, Layout>(sK + st * BN * D, sV + st * BN * D, nullptr, phys, p, page_shift, g, n0);
      CpAsyncMbarArrive(&full[st]);
      if (j + 1 < nblocks) FetchPages<D, kProducer>(phys, p, page_shift, n0 - BN);
    }
    CpAsyncWait<0>();
    return;
  }

  // Consumers.
  const int cw = wg - 1;
  const int wrow0 = ((tid - kProducer) >> 5) * 16;  // warp's first tile row
  const int gq_max = q0 + cw * 64 + 63;
  const float sl2 = p.scale * 1.4426950408889634f;
  const uint64_t q_desc = wgmma::Descriptor(sQ + cw * 64 * 64, 16, 8 * kRowBytes);
  const uint64_t k_desc = wgmma::Descriptor(sK, 16, 8 * kRowBytes);
  const uint64_t v_desc = wgmma::Descriptor(sV, BN * kRowBytes, 8 * kRowBytes);
  float o[DT][4], s[NT][4];
  float m_run[2] = {-INFINITY, -INFINITY}, l_run[2] = {0.0f, 0.0f};
  Zero(o);
  Zero(s);

  // Tiles wholly above the warpgroup's rows come first (the walk starts at
  // the diagonal): released unread. Waiting for "full" first keeps one
  // consumer from arriving twice in one phase of a stage.
  int j = 0;
  for (; j < nblocks && (nblocks - 1 - j) * BN > gq_max; ++j) {
    MbarWait(&full[j % kStages], (j / kStages) & 1);
    MbarArrive(&empty[j % kStages]);
  }
  for (; j < nblocks; ++j) {
    const int st = j % kStages, n0 = (nblocks - 1 - j) * BN;
    MbarWait(&full[st], (j / kStages) & 1);
    wgmma::FenceSharedForAsyncProxy();
    wgmma::Fence();
#pragma unroll
    for (int ks = 0; ks < KS; ++ks) {
      const int col_bytes = ks % 4 * 32;  // 64-column block ks / 4, 16-column step ks % 4
      wgmma::MmaSS<T, BN>(s, wgmma::Advance(q_desc, ks / 4 * BM * kRowBytes + col_bytes),
                          wgmma::Advance(k_desc, st * kStageBytes + ks / 4 * BN * kRowBytes + col_bytes), ks > 0);
    }
    wgmma::Commit();
    wgmma::Wait<0>();
    wgmma::FenceOperands(s);
    if (n0 + BN - 1 > q0 + wrow0 || has_holes) {
      // Holes: the page table itself (the producer's zero-filled rows carry
      // no flag the consumers could see in order).
      MaskTile(s, wrow0, q0, n0, has_holes,
               [&p, n0, shift = page_shift](int col) { return p.page_table[(n0 + col) >> shift] >= 0; });
    }
    OnlineSoftmax(s, m_run, l_run, o, sl2);
    uint32_t pa[BN / 16][4];
#pragma unroll
    for (int kk = 0; kk < BN / 16; ++kk) PFragment<T>(pa[kk], s, kk);
    wgmma::FenceOperands(o);
    wgmma::Fence();
#pragma unroll
    for (int kk = 0; kk < BN / 16; ++kk) {
      wgmma::MmaRS<T, D>(o, pa[kk], wgmma::Advance(v_desc, st * kStageBytes + kk * 16 * kRowBytes), 1);
    }
    wgmma::Commit();
    wgmma::Wait<0>();
    wgmma::FenceOperands(o);
    wgmma::FenceOperands(pa);  // the P V reads pa until here
    MbarArrive(&empty[st]);
  }
  StoreRows<T>(o, l_run, wrow0, rows, m0, h, p);
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

template <typename T, int D, int kWG>
cudaError_t LaunchWgmma(const PagedAttentionParams& p, cudaStream_t stream) {
  constexpr int BM = 64 * kWG;
  // + 1024: the kernel aligns the tiles up to the swizzle's 1024 bytes.
  constexpr int kSmem = (BM + 4 * kBlockN) * D * static_cast<int>(sizeof(T)) + 1024;
  static const cudaError_t attr = cudaFuncSetAttribute(
      PrefillAttentionWgmmaKernel<T, D, kWG>, cudaFuncAttributeMaxDynamicSharedMemorySize, kSmem);
  if (attr != cudaSuccess) return attr;
  const dim3 grid(static_cast<unsigned>(p.num_heads), static_cast<unsigned>((p.n + BM - 1) / BM));
  PrefillAttentionWgmmaKernel<T, D, kWG><<<grid, kWG * 128, kSmem, stream>>>(p);
  return cudaGetLastError();
}

template <typename T, int D>
cudaError_t LaunchWs(const PagedAttentionParams& p, cudaStream_t stream) {
  // Two stages: measured against four (H100, 512- and 2048-token chunks at
  // kv 32K): 431 / 418-438 against 420-427 / 408-416 TFLOP/s.
  constexpr int kStages = 2;
  constexpr int kSmem = (128 + 2 * kStages * kBlockN) * D * static_cast<int>(sizeof(T)) + 1024;
  static const cudaError_t attr = cudaFuncSetAttribute(
      PrefillAttentionWsKernel<T, D, kStages>, cudaFuncAttributeMaxDynamicSharedMemorySize, kSmem);
  if (attr != cudaSuccess) return attr;
  const dim3 grid(static_cast<unsigned>(p.num_heads), static_cast<unsigned>((p.n + 127) / 128));
  PrefillAttentionWsKernel<T, D, kStages><<<grid, 384, kSmem, stream>>>(p);
  return cudaGetLastError();
}

template <typename T, int D>
cudaError_t LaunchWgmmaDim(const PagedAttentionParams& p, int warpgroups, cudaStream_t stream) {
  if (warpgroups == 1) return LaunchWgmma<T, D, 1>(p, stream);
  if (warpgroups == 2) return LaunchWgmma<T, D, 2>(p, stream);
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

cudaError_t LaunchPrefillAttentionWgmma(ElemType type, const PagedAttentionParams& p, int warpgroups,
                                        cudaStream_t stream) {
  if (!PrefillAttentionSupported(p)) return cudaErrorNotSupported;
  if (p.head_dim == 128) {
    QUEST_DISPATCH(type, return LaunchWgmmaDim<T, 128>(p, warpgroups, stream));
  }
  QUEST_DISPATCH(type, return LaunchWgmmaDim<T, 64>(p, warpgroups, stream));
  return cudaErrorNotSupported;
}

cudaError_t LaunchPrefillAttentionWarpSpecialized(ElemType type, const PagedAttentionParams& p,
                                                   cudaStream_t stream) {
  if (!PrefillAttentionSupported(p)) return cudaErrorNotSupported;
  if (p.head_dim == 128) {
    QUEST_DISPATCH(type, return LaunchWs<T, 128>(p, stream));
  }
  QUEST_DISPATCH(type, return LaunchWs<T, 64>(p, stream));
  return cudaErrorNotSupported;
}

cudaError_t LaunchPrefillAttention(ElemType type, const PagedAttentionParams& p,
                                   cudaStream_t stream) {
  // Measured on H100 (prefill_attention_test's benchmark, bf16, head_dim
  // 128): the warp-specialized kernel is fastest once there is about a
  // 128-row tile per SM (431 TFLOP/s on 512-token chunks at kv 32K against
  // 315-320 for the plain 2-warpgroup kernel and 232 for mma.sync; 418-438
  // on 2048-token chunks against 412-424 and 285); below that, 64-row tiles
  // of one warpgroup fill more SMs.
  const int64_t ctas128 = static_cast<int64_t>(p.num_heads) * ((p.n + 127) / 128);
  if (2 * ctas128 >= NumSms()) return LaunchPrefillAttentionWarpSpecialized(type, p, stream);
  return LaunchPrefillAttentionWgmma(type, p, 1, stream);
}

}  // namespace quest::ops::cuda
