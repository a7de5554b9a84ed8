// Quest's page bounds and top-k page selection (see quest_kernels.h).
//
// UpdatePageBounds: one thread per (Quest page, KV head, 8 dims) folds the
// page's positions in [begin, end) in order (16-byte Key loads; the 8
// dimensions' bounds are 2 * 128 elements apart in the tile layout, so they
// are stored one by one; a decode step is one tiny launch, a prefill/refold
// a wide one). FP8 E4M3 bounds
// (bounds_fp8): the fold runs in float over the Keys (or the stored codes'
// exact values) and stores the min rounded down, the max rounded up
// (runtime/fp8.h, the CPU reference's own functions).
//
// SelectTopPages, two launches:
//  1. scoring: a 256-thread CTA per (tile of 128 pages, KV head) over the
//     tile layout (runtime/page_bounds_layout.h: per dimension, the tile's
//     pages' min row, then their max row). Each warp takes an eighth of the
//     dimensions; per dimension a lane loads, with 16-byte loads, only the
//     sides whose query coefficient is nonzero: min(q, 0) for the min row,
//     max(q, 0) for the max row. With one query head per KV head (MHA, or
//     a GQA head's own pass under MAX) that is the sign's side alone, half
//     the bytes: H100, cold, 32 heads, FP8, 32K / 128K tokens 9.6 / 23.7
//     us against 11.3 / 27.7 for the [page][head][min | max] layout read in
//     full (session 15; a bare probe kernel of the same walk took 8.1 /
//     19.4, a gap not found). FP8 bounds: 16 codes per load, converted e4m3x2 ->
//     f16x2 in hardware (exact). SUM over a GQA group folds the group's
//     coefficients first; MAX scores the group's heads one pass each. The
//     lanes' partial sums reduce-scatter across the lanes of a column, the
//     warps' meet in shared memory; fp32 scores, NaN -> -inf, to the
//     scratch [num_kv_heads, num_pages]. MHA (one query head per KV head)
//     has its own instance (ScoreRangeOneSide): per dimension one load and
//     one multiply of the sign's row, the query read once per CTA, and a
//     launch past two waves gives each CTA several tiles, the next tile's
//     loads issued before the current one's barriers (score_plan.h; H100,
//     session 23: MHA 32K B=2048 step 6.31-6.34 -> 6.61-6.62x dense).
//  2. select: a 512-thread CTA per KV head. First counting rounds over the
//     scores in registers (SelectRowBinned): 4096 equal-width bins between
//     the finite min and max live score, a block scan for the bin of the
//     k-th best; that bin is taken whole, its <= 32 pages ranked by a warp,
//     a tie (all equal: the lowest pages), or the next round. Where that
//     does not settle it in 4 rounds or the keys exceed the registers: a
//     radix select on the scores' order-preserving uint32 keys (4 passes of
//     8 bits, MSB first, over the keys held in registers; shared-memory
//     histogram with warp-aggregated atomics, peers found by 8 ballots;
//     stops as soon as a whole bin is taken; the passes start below the
//     bits every key shares, a block AND / OR first). Both write the pages
//     in ascending order, equal keys taken lowest page first, exactly the
//     reference's tie rule: the binned select from its registers (a ballot
//     per key slot and warp, one warp's scan over those counts), the radix
//     one through a flag byte per page and an ordered compaction (block
//     scan of per-thread counts over 16 flags each). The select kernel is
//     one instance per keys-per-thread E with the binned path inlined, so
//     that its hot code is one stretch (run cold, its instructions come
//     from DRAM; scattered calls cost microseconds).
//  (Variants 5 / 6, not a default: one fused kernel, a thread-block cluster
//  of 8 / 16 CTAs per KV head scores into shared memory and radix-selects
//  over distributed shared memory.)
// Launches use programmatic dependent launch (each kernel starts while the
// previous one on the stream drains and waits for it before any read; the
// scoring's first wave asks L2 for part of its bound tiles meanwhile,
// score_plan.h);
// UpdatePageBounds of a single pool page takes the physical page as an
// argument (no page-table upload).
// Variants (TopPagesParams::variant) for measurement: the two-kernel
// select, scoring alone, the cluster select with 8 or 16 CTAs, and the
// select fused into the last scoring CTA of each KV head (variant 2, one
// wave of 512-thread CTAs; session 2's fused kernel sized them like the
// scoring kernel's, about 4 per SM, which at the one per SM their registers
// allow is 4 waves, and was slower). Measured on an H100 (session 5):
// variant 2 is within 1-2 % of the two-kernel select (32K MHA FP8 11.77 vs
// 11.86 us, 128K 36.2 vs 35.5 us) except GQA MAX FP8 (10.8 vs 12.6 us):
// scoring alone takes 6.6 us of the 11.9, the one-CTA-per-head select the
// other ~5 us in either form, so the launch it saves was not the cost.
// A cub::BlockRadixSort select was measured slower and removed.

#include <cooperative_groups.h>
#include <cuda_fp8.h>

#include <cmath>
#include <cstdint>
#include <mutex>
#include <type_traits>
#include <vector>

#include "ops/cuda/device_util.cuh"
#include "ops/cuda/ptx.cuh"
#include "ops/cuda/quest_kernels.h"
#include "ops/cuda/score_plan.h"
#include "runtime/fp8.h"
#include "runtime/page_bounds_layout.h"

namespace quest::ops::cuda {
namespace {

constexpr unsigned kFull = 0xffffffffu;

// ------------------------------------------------------------ page bounds

template <typename T, int VEC>
__device__ __forceinline__ void LoadVec(const T* src, T (&dst)[VEC]) {
  if constexpr (VEC == 8) {
    const uint4 v = *reinterpret_cast<const uint4*>(src);
    const T* t = reinterpret_cast<const T*>(&v);
#pragma unroll
    for (int i = 0; i < 8; ++i) dst[i] = t[i];
  } else {
#pragma unroll
    for (int i = 0; i < VEC; ++i) dst[i] = src[i];
  }
}

// Item i = ((Quest page - first_qpage) * num_kv_heads + g) * (head_dim / VEC) + v.
// FP8: the bounds are E4M3 codes; the fold runs in float (the Keys' values,
// or the stored codes' exact values when widening) and rounds once at the
// end, which equals rounding after every position (the rounding is
// monotone).
template <typename T, int VEC, bool FP8>
__global__ void PageBoundsKernel(PageBoundsParams p, int64_t first_qpage, int64_t items) {
  AllowDependents();  // a PDL-launched SelectTopPages still waits for this grid's end
  WaitPrimary();      // for the Keys (a PDL launch of its own)
  const int vecs = p.head_dim / VEC;
  const int64_t row = int64_t{p.num_kv_heads} * p.head_dim;
  QUEST_GRID_STRIDE(i, items) {
    const int v = static_cast<int>(i % vecs);
    const int64_t r = i / vecs;
    const int g = static_cast<int>(r % p.num_kv_heads);
    const int64_t qp = first_qpage + r / p.num_kv_heads;
    const int64_t start = qp * p.bound_page;
    const int64_t from = start > p.begin ? start : p.begin;
    const int64_t to = start + p.bound_page < p.end ? start + p.bound_page : p.end;
    // A Quest page lies inside one pool page: a hole skips all of it.
    const int32_t phys = p.one_page ? p.phys_page : p.page_table[start / p.page_size - p.table_base];
    if (phys < 0) continue;
    const T* k = static_cast<const T*>(p.k_pages) +
                 (int64_t{phys} * p.page_size + from % p.page_size) * row + int64_t{g} * p.head_dim +
                 v * VEC;
    // Dimension v * VEC + j's min sits j * 2 * kBoundsTile elements on, its
    // max kBoundsTile after its min (runtime/page_bounds_layout.h).
    const int64_t b_off = BoundsIndex(qp, g, v * VEC, 0, p.num_kv_heads, p.head_dim);
    constexpr int64_t kDim = 2 * kBoundsTile;
    int64_t pos = from;
    if constexpr (FP8) {
      uint8_t* lo_ptr = static_cast<uint8_t*>(p.bounds) + b_off;
      uint8_t* hi_ptr = lo_ptr + kBoundsTile;
      float lo[VEC], hi[VEC];
      if (from == start) {  // the page's first Key resets it
        T x[VEC];
        LoadVec<T, VEC>(k, x);
#pragma unroll
        for (int j = 0; j < VEC; ++j) lo[j] = hi[j] = F(x[j]);
        k += row;
        ++pos;
      } else {  // widen what the earlier positions left
#pragma unroll
        for (int j = 0; j < VEC; ++j) {
          lo[j] = fp8::E4M3ToFloat(lo_ptr[j * kDim]);
          hi[j] = fp8::E4M3ToFloat(hi_ptr[j * kDim]);
        }
      }
#pragma unroll 4
      for (; pos < to; ++pos, k += row) {
        T x[VEC];
        LoadVec<T, VEC>(k, x);
#pragma unroll
        for (int j = 0; j < VEC; ++j) {
          const float xf = F(x[j]);
          if (xf < lo[j]) lo[j] = xf;
          if (hi[j] < xf) hi[j] = xf;
        }
      }
#pragma unroll
      for (int j = 0; j < VEC; ++j) {
        lo_ptr[j * kDim] = static_cast<uint8_t>(fp8::E4M3RoundDown(lo[j]));
        hi_ptr[j * kDim] = static_cast<uint8_t>(fp8::E4M3RoundUp(hi[j]));
      }
    } else {
      T* lo_ptr = static_cast<T*>(p.bounds) + b_off;
      T* hi_ptr = lo_ptr + kBoundsTile;
      T lo[VEC], hi[VEC];
      if (from == start) {  // the page's first Key resets it
        LoadVec<T, VEC>(k, lo);
#pragma unroll
        for (int j = 0; j < VEC; ++j) hi[j] = lo[j];
        k += row;
        ++pos;
      } else {  // widen what the earlier positions left
#pragma unroll
        for (int j = 0; j < VEC; ++j) {
          lo[j] = lo_ptr[j * kDim];
          hi[j] = hi_ptr[j * kDim];
        }
      }
      // In position order, with the reference's std::min / std::max rules.
#pragma unroll 4
      for (; pos < to; ++pos, k += row) {
        T x[VEC];
        LoadVec<T, VEC>(k, x);
#pragma unroll
        for (int j = 0; j < VEC; ++j) {
          const float xf = F(x[j]);
          if (xf < F(lo[j])) lo[j] = x[j];
          if (F(hi[j]) < xf) hi[j] = x[j];
        }
      }
#pragma unroll
      for (int j = 0; j < VEC; ++j) {
        lo_ptr[j * kDim] = lo[j];
        hi_ptr[j * kDim] = hi[j];
      }
    }
  }
}

// ------------------------------------------------------------ scoring

constexpr int kScoreThreads = 256;
constexpr int kSelectThreads = 512;
constexpr int kSelectWarps = kSelectThreads / 32;
constexpr int kFlagRound = 16 * kSelectThreads;  // flags per compaction round
// n flag bytes rounded up to whole compaction rounds (the select's shared
// memory and its flag walk).
__host__ __device__ constexpr int64_t FlagBytes(int64_t n) {
  return (n + kFlagRound - 1) / kFlagRound * kFlagRound;
}
constexpr int64_t kMaxSelectPages = 192 * 1024;  // flags live in shared memory

// Query coefficient of bound e: e < d the min of dimension e, else the max
// of dimension e - d (the reference's std::min(q, 0) / std::max(q, 0), NaN
// kept).
template <typename T>
__device__ __forceinline__ float QCoef(const T* q, int d, int e) {
  return e < d ? BoundsMinCoef(F(q[e])) : BoundsMaxCoef(F(q[e - d]));
}

__device__ __forceinline__ float NanToNegInf(float s) { return isnan(s) ? -INFINITY : s; }

// Four E4M3 codes (one 32-bit word, little-endian) as floats: Hopper's
// e4m3x2 -> f16x2 conversion (exact; NaN stays NaN), then f16 -> f32.
// (Placing a code's bits in a half with integer ops and catching NaN codes
// apart was measured slower.)
__device__ __forceinline__ void E4M3Quad(uint32_t w, float (&x)[4]) {
  const __half2 lo(__nv_cvt_fp8x2_to_halfraw2(static_cast<__nv_fp8x2_storage_t>(w & 0xffffu), __NV_E4M3));
  const __half2 hi(__nv_cvt_fp8x2_to_halfraw2(static_cast<__nv_fp8x2_storage_t>(w >> 16), __NV_E4M3));
  const float2 a = __half22float2(lo), b = __half22float2(hi);
  x[0] = a.x;
  x[1] = a.y;
  x[2] = b.x;
  x[3] = b.y;
}

// How a CTA of kWarps warps lays one tile of one KV head's bounds
// (runtime/page_bounds_layout.h) over its lanes: warp w takes dimensions
// [w * kDimsPerWarp, (w + 1) * kDimsPerWarp); a row (the tile's pages at one
// dimension and side) is read as 16-byte vectors of kEpv bounds by
// kLanesPerRow lanes, so one warp-wide load covers kDimsPerLoad dimensions.
// A lane loads kPass slots (dimensions) per side at a time.
template <bool FP8, int D, int kWarps>
struct TileGeo {
  static constexpr int kEpv = FP8 ? 16 : 8;
  static constexpr int kLanesPerRow = static_cast<int>(kBoundsTile) / kEpv;
  static constexpr int kDimsPerLoad = 32 / kLanesPerRow;
  static constexpr int kDimsPerWarp = D / kWarps;
  static constexpr int kSlots = kDimsPerWarp / kDimsPerLoad;
  static constexpr int kPass = kSlots < 4 ? kSlots : 4;  // 2 x 4 vectors in flight per lane
  // After the reduce-scatter over the lanes of a column: pages per lane.
  static constexpr int kPagesPerLane = kEpv / kDimsPerLoad;
  static_assert(kSlots >= 1 && kSlots % kPass == 0, "head_dim too small for the CTA's warps");
  static_assert(kLanesPerRow * kEpv == kBoundsTile && kPagesPerLane * 32 == kBoundsTile, "tile over lanes");
  // ScoreRangeOneSide holds a tile's kSlots vectors in registers: up to 4
  // (FP8 head_dim 64 / 128, bf16 64) within the 64 a thread has; 8 spilled.
  static constexpr bool kOneSide = kSlots <= 4;
};

// The bounds of one 16-byte vector (16 E4M3 codes, or 8 of T) as floats.
template <typename T, bool FP8>
__device__ __forceinline__ void UnpackBounds(const uint4& v, float (&x)[FP8 ? 16 : 8]) {
  const uint32_t w[4] = {v.x, v.y, v.z, v.w};
#pragma unroll
  for (int j = 0; j < 4; ++j) {
    if constexpr (FP8) {
      float f[4];
      E4M3Quad(w[j], f);
#pragma unroll
      for (int t = 0; t < 4; ++t) x[4 * j + t] = f[t];
    } else {
      const float2 f = Unpack2<T>(w[j]);
      x[2 * j] = f.x;
      x[2 * j + 1] = f.y;
    }
  }
}

// A bound's storage element (an E4M3 code, or T), and where tile t of KV
// head g starts (runtime/page_bounds_layout.h).
template <typename T, bool FP8>
using BoundsElem = std::conditional_t<FP8, uint8_t, T>;
template <typename Elem, int D>
__device__ __forceinline__ const Elem* BoundTile(const TopPagesParams& p, int64_t t, int g) {
  return static_cast<const Elem*>(p.bounds) + BoundsIndex(t * kBoundsTile, g, 0, 0, p.num_kv_heads, D);
}

// A lane's per-page partial sums (kEpv pages of its column) reduce-scatter
// over the lanes sharing that column (xor 16 .. kLanesPerRow): the lane
// keeps the sums of kEpv * kLanesPerRow / 32 of the pages in acc[0, ..),
// its column's pages from ReducedFirstPage on.
template <int kEpv, int kLanesPerRow>
__device__ __forceinline__ void ReduceScatterColumn(float (&acc)[kEpv]) {
  const int lane = threadIdx.x & 31;
#pragma unroll
  for (int off = 16, half = kEpv / 2; off >= kLanesPerRow; off >>= 1, half >>= 1) {
    const bool up = (lane & off) != 0;
#pragma unroll
    for (int i = 0; i < half; ++i) {
      const float send = up ? acc[i] : acc[i + half];
      const float keep = up ? acc[i + half] : acc[i];
      acc[i] = keep + __shfl_xor_sync(kFull, send, off);
    }
  }
}

template <int kEpv, int kLanesPerRow>
__device__ __forceinline__ int ReducedFirstPage(int lane) {
  int first = 0;
#pragma unroll
  for (int off = 16, half = kEpv / 2; off >= kLanesPerRow; off >>= 1, half >>= 1) first += (lane & off) ? half : 0;
  return first;
}

// ScoreRange with one query head per KV head (MHA): a dimension's term is
// x_d * (x_d < 0 ? min_d : max_d), one row per dimension and lane slot, so
// half the loads, conversions and FMAs (the sums equal ScoreRange's: there
// the other side's zero coefficient multiplies a zero vector; a NaN x_d
// poisons the page either way). The query is read once per CTA, and each
// tile's loads are issued before the previous tile's reduction, so a CTA
// of several tiles (ScoreTilesPerCta) keeps loads in flight through its
// barriers.
template <typename T, bool FP8, int D, int THREADS>
__device__ __forceinline__ void ScoreRangeOneSide(const TopPagesParams& p, int g, int64_t p0, int64_t p1, float* out) {
  constexpr int kWarps = THREADS / 32;
  using Geo = TileGeo<FP8, D, kWarps>;
  constexpr int kEpv = Geo::kEpv, kLanesPerRow = Geo::kLanesPerRow, kDimsPerLoad = Geo::kDimsPerLoad;
  constexpr int kSlots = Geo::kSlots, kPagesPerLane = Geo::kPagesPerLane;
  constexpr int64_t kT = kBoundsTile;
  using Elem = BoundsElem<T, FP8>;
  __shared__ float partial[kWarps][kBoundsTile];
  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  const T* q = static_cast<const T*>(p.q) + int64_t{g} * D;
  const int col = (lane % kLanesPerRow) * kEpv;
  const int dim0 = warp * Geo::kDimsPerWarp + lane / kLanesPerRow;  // slot i: dim0 + i * kDimsPerLoad
  const int first = ReducedFirstPage<kEpv, kLanesPerRow>(lane);
  float c[kSlots];
#pragma unroll
  for (int i = 0; i < kSlots; ++i) c[i] = F(q[dim0 + i * kDimsPerLoad]);
  uint4 v[kSlots];
  // Tile t's rows: per slot the side its coefficient's sign picks (none
  // for a zero coefficient).
  auto issue = [&](int64_t t) {
    const Elem* tile = BoundTile<Elem, D>(p, t, g);
#pragma unroll
    for (int i = 0; i < kSlots; ++i) {
      const int64_t at = int64_t{dim0 + i * kDimsPerLoad} * 2 * kT + (c[i] < 0.0f ? 0 : kT) + col;
      v[i] = c[i] != 0.0f ? LdgReadOnce(reinterpret_cast<const uint4*>(tile + at)) : make_uint4(0, 0, 0, 0);
    }
  };
  int64_t t = p0 / kT;
  issue(t);
  for (; t * kT < p1; ++t) {
    float acc[kEpv];
#pragma unroll
    for (int e = 0; e < kEpv; ++e) acc[e] = 0.0f;
#pragma unroll
    for (int i = 0; i < kSlots; ++i) {
      float b[kEpv];
      UnpackBounds<T, FP8>(v[i], b);
#pragma unroll
      for (int e = 0; e < kEpv; ++e) acc[e] = fmaf(c[i], b[e], acc[e]);
    }
    if ((t + 1) * kT < p1) issue(t + 1);
    ReduceScatterColumn<kEpv, kLanesPerRow>(acc);
#pragma unroll
    for (int i = 0; i < kPagesPerLane; ++i) partial[warp][col + first + i] = acc[i];
    __syncthreads();
    const int64_t pg = t * kT + tid;
    if (tid < kBoundsTile && pg >= p0 && pg < p1) {
      float s = 0.0f;
#pragma unroll
      for (int w = 0; w < kWarps; ++w) s += partial[w][tid];
      out[pg] = NanToNegInf(s);
    }
    __syncthreads();  // partial is rewritten by the next tile
  }
}

// Scores pages [p0, p1) of KV head g into out[page]; every thread of the
// CTA (THREADS) calls it with the same arguments. A tile at a time: each
// lane reads, per dimension, only the sides whose query coefficient is
// nonzero (the sign's side: for one query head, half the bounds), the
// warps' partial sums meet in shared memory. MAX over a GQA group scores
// the group's heads one pass each (the later passes mostly hit L1).
template <typename T, bool FP8, int D, int THREADS>
__device__ __forceinline__ void ScoreRange(const TopPagesParams& p, int g, int64_t p0, int64_t p1, float* out) {
  constexpr int kWarps = THREADS / 32;
  using Geo = TileGeo<FP8, D, kWarps>;
  constexpr int kEpv = Geo::kEpv, kLanesPerRow = Geo::kLanesPerRow, kDimsPerLoad = Geo::kDimsPerLoad;
  constexpr int kSlots = Geo::kSlots, kPass = Geo::kPass, kPagesPerLane = Geo::kPagesPerLane;
  constexpr int64_t kT = kBoundsTile;
  using Elem = BoundsElem<T, FP8>;
  __shared__ float partial[kWarps][kBoundsTile];
  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  const int group = p.num_heads / p.num_kv_heads;
  const int head_passes = p.combine_sum ? 1 : group;
  const T* q = static_cast<const T*>(p.q) + int64_t{g} * group * D;
  const int col = (lane % kLanesPerRow) * kEpv;
  const int dim0 = warp * Geo::kDimsPerWarp + lane / kLanesPerRow;  // slot s: dim0 + s * kDimsPerLoad
  // The reduce-scatter below leaves lane `lane` the pages col + first + [0, kPagesPerLane).
  const int first = ReducedFirstPage<kEpv, kLanesPerRow>(lane);

  for (int64_t t = p0 / kT; t * kT < p1; ++t) {
    const Elem* tile = BoundTile<Elem, D>(p, t, g);
    float combined = 0.0f;  // threads < kBoundsTile: page t * kT + tid
    for (int h = 0; h < head_passes; ++h) {
      float acc[kEpv];
#pragma unroll
      for (int e = 0; e < kEpv; ++e) acc[e] = 0.0f;
#pragma unroll
      for (int s0 = 0; s0 < kSlots; s0 += kPass) {
        float cmin[kPass], cmax[kPass];
        uint4 vmin[kPass], vmax[kPass];
        // The pass's query coefficients first (SUM: the group's summed; MAX:
        // head h's), then all its loads, so that their latencies overlap.
        const int j0 = p.combine_sum ? 0 : h, j1 = p.combine_sum ? group : h + 1;
#pragma unroll
        for (int i = 0; i < kPass; ++i) {
          const int d = dim0 + (s0 + i) * kDimsPerLoad;
          cmin[i] = cmax[i] = 0.0f;
          for (int j = j0; j < j1; ++j) {
            const float x = F(q[j * D + d]);  // both coefficients from one load
            cmin[i] += BoundsMinCoef(x);
            cmax[i] += BoundsMaxCoef(x);
          }
        }
#pragma unroll
        for (int i = 0; i < kPass; ++i) {
          // A zero coefficient's side is not read (NaN != 0 is read).
          const int d = dim0 + (s0 + i) * kDimsPerLoad;
          const uint4* row = reinterpret_cast<const uint4*>(tile + int64_t{d} * 2 * kT + col);
          const uint4 zero = make_uint4(0, 0, 0, 0);
          vmin[i] = cmin[i] != 0.0f ? LdgReadOnce(row) : zero;
          vmax[i] = cmax[i] != 0.0f ? LdgReadOnce(row + kT * sizeof(Elem) / 16) : zero;
        }
#pragma unroll
        for (int i = 0; i < kPass; ++i) {
          float lo[kEpv], hi[kEpv];
          UnpackBounds<T, FP8>(vmin[i], lo);
          UnpackBounds<T, FP8>(vmax[i], hi);
#pragma unroll
          for (int e = 0; e < kEpv; ++e) acc[e] = fmaf(cmax[i], hi[e], fmaf(cmin[i], lo[e], acc[e]));
        }
      }
      ReduceScatterColumn<kEpv, kLanesPerRow>(acc);
#pragma unroll
      for (int i = 0; i < kPagesPerLane; ++i) partial[warp][col + first + i] = acc[i];
      __syncthreads();
      if (tid < kBoundsTile) {
        float s = 0.0f;
#pragma unroll
        for (int w = 0; w < kWarps; ++w) s += partial[w][tid];
        // MAX: the reference's running std::max (a NaN first head poisons
        // the page, a later NaN head never wins).
        combined = h == 0 ? s : (combined < s ? s : combined);
      }
      __syncthreads();  // partial is rewritten by the next pass
    }
    const int64_t pg = t * kT + tid;
    if (tid < kBoundsTile && pg >= p0 && pg < p1) out[pg] = NanToNegInf(combined);
  }
}

// Four CTAs per SM (64 registers): one wave of tiles at 32K MHA (left
// free, the FP8 head_dim 128 scorer took 110 and scored 32K MHA cold in
// 10.75 against 9.66 us, session 15).
constexpr int kScoreCtasPerSm = 4;

// Whether ScoreKernel / ScoreBatchKernel score with ScoreRangeOneSide (one
// query head per KV head, a shape whose tile fits its registers). It is a
// kernel instance of its own: with both paths in one kernel, GQA 32K B=2048
// steps read 2.62-2.63x dense against 2.72-2.73x (H100, session 23).
template <bool FP8, int D>
bool ScoresOneSide(const TopPagesParams& p) {
  return TileGeo<FP8, D, kScoreThreads / 32>::kOneSide && p.num_heads == p.num_kv_heads;
}

// Pages per CTA of the scoring kernels (ScoreKernel, ScoreBatchKernel) for
// `tiles` tiles in all (heads x tiles per head x queries): `fixed` rounded
// up to whole tiles (tuning), or ScoreTilesPerCta's tiles (score_plan.h:
// one, except a launch of more than a wave that ScoreRangeOneSide scores).
template <bool FP8, int D>
int64_t ScorePagesPerCta(int64_t fixed, const TopPagesParams& p, int64_t tiles) {
  if (fixed > 0) return (fixed + kBoundsTile - 1) / kBoundsTile * kBoundsTile;
  return kBoundsTile * ScoreTilesPerCta(tiles, int64_t{kScoreCtasPerSm} * NumSms(), ScoresOneSide<FP8, D>(p));
}

// The 128-byte lines of one KV head's bound tile.
template <typename T, bool FP8, int D>
__host__ __device__ constexpr int64_t BoundTileLines() {
  return 2 * D * kBoundsTile * static_cast<int64_t>(sizeof(BoundsElem<T, FP8>)) / kPrefetchLineBytes;
}

// Before its wait, a scoring CTA of the first wave asks L2 for the first
// pf.lines lines of its bound tiles (pages [p0, p1) of KV head g), both
// sides (score_plan.h says why and how many). The bounds of every page
// but the current one are final before the step's kernels; a line the
// previous kernel writes is coherent in L2, and the prefetch is only a hint.
template <typename T, bool FP8, int D>
__device__ __forceinline__ void PrefetchBoundTiles(const TopPagesParams& p, int g, int64_t p0, int64_t p1,
                                                   const ScorePrefetch& pf) {
  using Elem = BoundsElem<T, FP8>;
  constexpr int64_t kTileLines = BoundTileLines<T, FP8, D>();
  const int64_t cta = int64_t{blockIdx.z} * gridDim.y * gridDim.x + int64_t{blockIdx.y} * gridDim.x + blockIdx.x;
  if (cta >= pf.ctas) return;
  const int64_t t0 = p0 / kBoundsTile;
  const int64_t lines = min(pf.lines, ((p1 + kBoundsTile - 1) / kBoundsTile - t0) * kTileLines);
  for (int64_t i = threadIdx.x; i < lines; i += blockDim.x) {
    const Elem* tile = BoundTile<Elem, D>(p, t0 + i / kTileLines, g);
    PrefetchL2(reinterpret_cast<const char*>(tile) + i % kTileLines * kPrefetchLineBytes);
  }
}

// The scoring kernels' pages [p0, p1) of KV head g into out[page]:
// ScoreRangeOneSide in a kOneSide instance (the launch checked
// ScoresOneSide; a shape without the one-side geometry falls back to
// ScoreRange), else ScoreRange.
template <typename T, bool FP8, int D, bool kOneSide>
__device__ __forceinline__ void ScorePages(const TopPagesParams& p, int g, int64_t p0, int64_t p1, float* out) {
  if constexpr (kOneSide && TileGeo<FP8, D, kScoreThreads / 32>::kOneSide) {
    ScoreRangeOneSide<T, FP8, D, kScoreThreads>(p, g, p0, p1, out);
  } else {
    ScoreRange<T, FP8, D, kScoreThreads>(p, g, p0, p1, out);
  }
}

template <typename T, bool FP8, int D, bool kOneSide>
__global__ __launch_bounds__(kScoreThreads, kScoreCtasPerSm) void ScoreKernel(TopPagesParams p, int64_t n,
                                                                               int64_t stride, int64_t per_cta,
                                                                               ScorePrefetch pf) {
  const int64_t p0 = blockIdx.x * per_cta;
  const int64_t p1 = p0 + per_cta < n ? p0 + per_cta : n;
  PrefetchBoundTiles<T, FP8, D>(p, blockIdx.y, p0, p1, pf);
  WaitPrimary();
  ScorePages<T, FP8, D, kOneSide>(p, blockIdx.y, p0, p1, p.scores + blockIdx.y * stride);
  // The select may launch only now: allowed at the kernel's start (cheaper
  // for this grid alone: H100, cold, 32 heads x 8192 pages FP8, 20.5 against
  // 23.0 us), its early CTAs slowed the Quest step (MHA 32K B=2048 FP8
  // 5.75x -> 5.22x dense, session 15).
  AllowDependents();
}

// A batch's scoring: CTA (x, y, z) scores pages [x * per_cta, ..) of KV
// head y of member z (CTAs past a member's pages, or of a member whose
// selection needs no scores, only pass the dependency chain on).
template <typename T, bool FP8, int D, bool kOneSide>
__global__ __launch_bounds__(kScoreThreads, kScoreCtasPerSm) void ScoreBatchKernel(
    const __grid_constant__ TopPagesBatchParams b, int64_t per_cta, ScorePrefetch pf) {
  // (b, the members included, is a kernel parameter: readable before the wait.)
  const TopPagesMember& m = b.members[blockIdx.z];
  const int64_t n = m.num_pages - 1;
  const int64_t p0 = blockIdx.x * per_cta;
  const bool scores = m.k > 0 && m.k < n && p0 < n;
  TopPagesParams p = b.shape;
  p.q = m.q;
  p.bounds = m.bounds;
  const int64_t p1 = p0 + per_cta < n ? p0 + per_cta : n;
  if (scores) PrefetchBoundTiles<T, FP8, D>(p, blockIdx.y, p0, p1, pf);
  WaitPrimary();
  if (scores) {
    ScorePages<T, FP8, D, kOneSide>(p, blockIdx.y, p0, p1, p.scores + m.scores_offset + blockIdx.y * m.num_pages);
  }
  AllowDependents();  // at the end, as ScoreKernel
}

// Any head_dim / group: one warp per (page, KV head), the reference's
// per-head scores and combine.
template <typename T, bool FP8>
__global__ void ScoreGenericKernel(TopPagesParams p, int64_t n, int64_t stride) {
  WaitPrimary();
  const int d = p.head_dim, kvh = p.num_kv_heads, group = p.num_heads / kvh;
  const int lane = threadIdx.x & 31;
  const int64_t total = n * kvh;
  const int64_t warps = (int64_t{gridDim.x} * blockDim.x) >> 5;
  for (int64_t w = (int64_t{blockIdx.x} * blockDim.x + threadIdx.x) >> 5; w < total; w += warps) {
    const int g = static_cast<int>(w % kvh);
    const int64_t pg = w / kvh;
    float combined = 0.0f;
    for (int h = 0; h < group; ++h) {
      const T* qh = static_cast<const T*>(p.q) + (int64_t{g} * group + h) * d;
      float acc = 0.0f;
      for (int e = lane; e < 2 * d; e += 32) {
        const float c = QCoef(qh, d, e);
        if (c == 0.0f) continue;  // that side is not read
        const int64_t at = BoundsIndex(pg, g, e < d ? e : e - d, e < d ? 0 : 1, kvh, d);
        const float b = FP8 ? fp8::E4M3ToFloat(static_cast<const uint8_t*>(p.bounds)[at])
                            : F(static_cast<const T*>(p.bounds)[at]);
        acc = fmaf(c, b, acc);
      }
#pragma unroll
      for (int off = 16; off >= 1; off >>= 1) acc += __shfl_xor_sync(kFull, acc, off);
      combined = h == 0 ? acc : (p.combine_sum ? combined + acc : (combined < acc ? acc : combined));
    }
    if (lane == 0) p.scores[int64_t{g} * stride + pg] = NanToNegInf(combined);
  }
}

// ------------------------------------------------------------ select

// Order-preserving: a > b as floats <=> Key(a) > Key(b); -0 == +0.
__device__ __forceinline__ uint32_t OrderedKey(float s) {
  if (isnan(s)) s = -INFINITY;
  if (s == 0.0f) s = 0.0f;
  const uint32_t b = __float_as_uint(s);
  return (b & 0x80000000u) ? ~b : (b | 0x80000000u);
}

// Block-wide exclusive prefix sum of one value per thread (the selects'
// packed (taken << 32) | ties counts): the sum over the earlier threads of
// the block; *total is the whole block's. warp_sums holds kWarps values in
// shared memory; a caller that reuses it syncs first.
template <int kWarps>
__device__ __forceinline__ unsigned long long BlockExclusiveSum(unsigned long long mine, unsigned long long* warp_sums,
                                                                unsigned long long* total) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  unsigned long long incl = mine;
#pragma unroll
  for (int off = 1; off < 32; off <<= 1) {
    const unsigned long long o = __shfl_up_sync(kFull, incl, off);
    if (lane >= off) incl += o;
  }
  if (lane == 31) warp_sums[warp] = incl;
  __syncthreads();
  unsigned long long before = incl - mine, sum = 0;
#pragma unroll
  for (int i = 0; i < kWarps; ++i) {
    const unsigned long long s = warp_sums[i];
    if (i < warp) before += s;
    sum += s;
  }
  *total = sum;
  return before;
}

// flags[0, n_pad) (2: taken, 1: a tie at the k-th key, 0: not) -> out, in
// ascending index order: every 2, and the first `need` 1s.
__device__ __forceinline__ void OrderedCompact(const uint8_t* flags, int n_pad, unsigned need,
                                               int32_t* out) {
  __shared__ unsigned long long warp_sums[kSelectWarps];
  const int tid = threadIdx.x;
  unsigned long long carry = 0;  // (taken << 32) | ties, over earlier rounds
  for (int base = 0; base < n_pad; base += kFlagRound) {
    const uint4 f = reinterpret_cast<const uint4*>(flags + base)[tid];
    const uint32_t w[4] = {f.x, f.y, f.z, f.w};
    unsigned gt = 0, eq = 0;
#pragma unroll
    for (int j = 0; j < 4; ++j) {
      gt += __popc(w[j] & 0x02020202u);
      eq += __popc(w[j] & 0x01010101u);
    }
    unsigned long long total;
    const unsigned long long before =
        carry + BlockExclusiveSum<kSelectWarps>((static_cast<unsigned long long>(gt) << 32) | eq, warp_sums, &total);
    __syncthreads();  // warp_sums is rewritten by the next round
    carry += total;
    if ((gt | eq) == 0) continue;
    const unsigned gt_before = static_cast<unsigned>(before >> 32);
    unsigned eq_before = static_cast<unsigned>(before);
    unsigned pos = gt_before + (eq_before < need ? eq_before : need);
    const int idx0 = base + tid * 16;
#pragma unroll
    for (int j = 0; j < 16; ++j) {
      const unsigned b = (w[j >> 2] >> (8 * (j & 3))) & 0xffu;
      if (b == 2) {
        out[pos++] = idx0 + j;
      } else if (b == 1) {
        if (eq_before < need) out[pos++] = idx0 + j;
        ++eq_before;
      }
    }
  }
}

// Thread `slot`'s 8 consecutive counters counts[8 slot, 8 slot + 8), their
// total, and the inclusive suffix sum of the totals over its warp (this
// lane's and every higher lane's): the scan both selects run over their
// histograms, highest bin first.
struct Counts8 {
  unsigned c[8];
  unsigned total;
  unsigned suffix;
};
__device__ __forceinline__ Counts8 LoadCounts8(const unsigned* counts, int slot) {
  const int lane = threadIdx.x & 31;
  const uint4 c0 = reinterpret_cast<const uint4*>(counts)[2 * slot];
  const uint4 c1 = reinterpret_cast<const uint4*>(counts)[2 * slot + 1];
  Counts8 k = {{c0.x, c0.y, c0.z, c0.w, c1.x, c1.y, c1.z, c1.w}, 0u, 0u};
#pragma unroll
  for (int j = 0; j < 8; ++j) k.total += k.c[j];
  k.suffix = k.total;
#pragma unroll
  for (int off = 1; off < 32; off <<= 1) {
    const unsigned o = __shfl_down_sync(kFull, k.suffix, off);
    if (lane + off < 32) k.suffix += o;
  }
  return k;
}

// With `above` keys in the bins higher than this thread's 8 and the rem-th
// largest among this thread's: found = {bin (first_bin + j), keys above
// it, keys in it}.
__device__ __forceinline__ void FindInCounts8(const Counts8& k, unsigned above, unsigned rem, unsigned first_bin,
                                              unsigned* found) {
#pragma unroll
  for (int j = 7; j >= 0; --j) {
    if (above + k.c[j] >= rem) {
      found[0] = first_bin + j;
      found[1] = above;
      found[2] = k.c[j];
      return;
    }
    above += k.c[j];
  }
}

// Warp 0: the digit holding the rem-th largest of the counted keys:
// found = {digit, keys above its bin, keys in its bin}.
__device__ __forceinline__ void FindDigit(const unsigned* hist, unsigned rem, unsigned* found) {
  const int lane = threadIdx.x & 31;
  const Counts8 k = LoadCounts8(hist, lane);
  const unsigned above = k.suffix - k.total;
  if (above < rem && rem <= k.suffix) FindInCounts8(k, above, rem, lane * 8, found);
}

// The k best of scores[0, n) (0 < k < n), ascending, into out[0, k); ties
// to the lower index. All kSelectThreads threads of the CTA call it; the
// dynamic shared memory holds FlagBytes(n) flag bytes. E keys per
// thread stay in registers when n <= kSelectThreads * E, else tiles are
// reloaded per pass. kCoherent: the scores were written by other CTAs of
// this kernel (read through L2).
template <int E, bool kCoherent>
__device__ __noinline__ void SelectRow(const float* scores, int n, int k, int32_t* out) {
  __shared__ __align__(16) unsigned hist[256];
  __shared__ unsigned found[3];
  extern __shared__ uint4 select_dyn_smem[];
  uint8_t* flags = reinterpret_cast<uint8_t*>(select_dyn_smem);
  constexpr int kTile = kSelectThreads * E;
  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  const int tiles = (n + kTile - 1) / kTile;
  uint32_t key[E];
  auto load = [&](int tile) {
#pragma unroll
    for (int e = 0; e < E; ++e) {
      const int idx = tile * kTile + e * kSelectThreads + tid;
      float s = 0.0f;
      if (idx < n) s = kCoherent ? __ldcg(scores + idx) : __ldg(scores + idx);
      key[e] = OrderedKey(s);
    }
  };
  if (tiles == 1) load(0);

  // The bits all n keys share are resolved up front (AND / OR over the
  // keys): the passes start at the highest bit that differs, so the first
  // one already splits the keys (scores of one sign and octave share their
  // top 9 bits).
  __shared__ uint32_t all_and, all_or;
  if (tid == 0) {
    all_and = ~0u;
    all_or = 0u;
  }
  __syncthreads();
  {
    uint32_t a = ~0u, o = 0u;
    for (int tile = 0; tile < tiles; ++tile) {
      if (tiles > 1) load(tile);
#pragma unroll
      for (int e = 0; e < E; ++e) {
        if (tile * kTile + e * kSelectThreads + tid < n) {
          a &= key[e];
          o |= key[e];
        }
      }
    }
    a = __reduce_and_sync(kFull, a);
    o = __reduce_or_sync(kFull, o);
    if (lane == 0) {
      atomicAnd(&all_and, a);
      atomicOr(&all_or, o);
    }
  }
  __syncthreads();
  const uint32_t differ = all_and ^ all_or;
  const int top = differ == 0 ? -1 : 31 - __clz(differ);  // the highest differing bit
  uint32_t mask = top == 31 ? 0u : ~0u << (top + 1);
  uint32_t prefix = all_and & mask;
  unsigned rem = static_cast<unsigned>(k);  // still to take below the resolved prefix
  unsigned live = static_cast<unsigned>(n);  // keys matching the prefix
  // Digits [low, low + 8) from the top differing bit down; the last one is
  // clamped at bit 0 and may cover resolved bits (equal in every key that
  // takes part, so the histogram is unchanged).
  for (int low = top - 7; top >= 0 && live != rem; low -= 8) {
    const int shift = low > 0 ? low : 0;
    if (tid < 256) hist[tid] = 0;
    __syncthreads();
    // Adds key e's digit to the histogram if it matches the prefix. The
    // lanes sharing this lane's digit are found by 8 ballots; their lowest
    // lane adds the group's count (one atomic per distinct digit per warp).
    auto count = [&](int e, int idx, unsigned active) {
      const bool part = idx < n && (key[e] & mask) == prefix;
      const unsigned d = (key[e] >> shift) & 0xffu;
      unsigned peers = active;
#pragma unroll
      for (int b = 0; b < 8; ++b) {
        const unsigned bits = __ballot_sync(kFull, (d >> b) & 1u);
        peers &= ((d >> b) & 1u) ? bits : ~bits;
      }
      if (part && lane == __ffs(peers) - 1) atomicAdd(&hist[d], __popc(peers));
    };
    for (int tile = 0; tile < tiles; ++tile) {
      if (tiles > 1) load(tile);
      if (live * 8 > static_cast<unsigned>(n)) {
        // Most keys take part: branch-free, so the E keys' ballots overlap
        // (a branch per key left this pass latency-bound).
#pragma unroll
        for (int e = 0; e < E; ++e) {
          const int idx = tile * kTile + e * kSelectThreads + tid;
          count(e, idx, __ballot_sync(kFull, idx < n && (key[e] & mask) == prefix));
        }
      } else {
        // Few do: most warps skip most keys.
#pragma unroll
        for (int e = 0; e < E; ++e) {
          const int idx = tile * kTile + e * kSelectThreads + tid;
          const unsigned active = __ballot_sync(kFull, idx < n && (key[e] & mask) == prefix);
          if (active != 0) count(e, idx, active);  // warp-uniform
        }
      }
    }
    __syncthreads();
    if (warp == 0) FindDigit(hist, rem, found);  // the digit of the rem-th largest remaining key
    __syncthreads();
    rem -= found[1];
    prefix |= found[0] << shift;
    mask |= 0xffu << shift;
    live = found[2];  // live == rem: the whole bin is taken, no need to resolve it further
    if (shift == 0) break;
  }

  const int n_pad = static_cast<int>(FlagBytes(n));
  for (int tile = 0; tile < tiles; ++tile) {
    if (tiles > 1) load(tile);
#pragma unroll
    for (int e = 0; e < E; ++e) {
      const int idx = tile * kTile + e * kSelectThreads + tid;
      if (idx < n) {
        const uint32_t m = key[e] & mask;
        flags[idx] = m > prefix ? 2 : (m == prefix ? 1 : 0);
      }
    }
  }
  for (int idx = n + tid; idx < n_pad; idx += kSelectThreads) flags[idx] = 0;
  __syncthreads();
  OrderedCompact(flags, n_pad, rem, out);
}

// The binned select's output, straight from its registers: bit e of
// `take` / `tie` marks key e * kSelectThreads + tid as taken / a tie at the
// k-th key. Writes every taken key and the first `need` ties, ascending, to
// out. A key's place is the taken keys and ties before it in index order,
// (e, warp, lane) order: a ballot per (e, warp) and one warp's scan over the
// E * kSelectWarps packed counts (taken << 16 | ties; n <= 16384 keeps both
// in 16 bits) instead of a flag byte per key walked by the whole block.
template <int E>
__device__ __forceinline__ void CompactFromRegisters(uint32_t take, uint32_t tie, unsigned need, int32_t* out) {
  constexpr int kCounts = E * kSelectWarps;
  constexpr int kPerLane = (kCounts + 31) / 32;
  static_assert(kSelectThreads * E <= 0xffff, "counts are packed in 16 bits");
  __shared__ unsigned counts[kCounts];  // [e][warp]; then their exclusive prefix
  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  const unsigned lower = (1u << lane) - 1u;  // the lanes before this one
#pragma unroll
  for (int e = 0; e < E; ++e) {
    const unsigned bt = __ballot_sync(kFull, (take >> e) & 1u), bq = __ballot_sync(kFull, (tie >> e) & 1u);
    if (lane == 0) counts[e * kSelectWarps + warp] = (__popc(bt) << 16) | __popc(bq);
  }
  __syncthreads();
  if (warp == 0) {
    unsigned c[kPerLane], sum = 0;
#pragma unroll
    for (int i = 0; i < kPerLane; ++i) {
      const int at = lane * kPerLane + i;
      c[i] = at < kCounts ? counts[at] : 0u;
      sum += c[i];
    }
    unsigned incl = sum;
#pragma unroll
    for (int off = 1; off < 32; off <<= 1) {
      const unsigned o = __shfl_up_sync(kFull, incl, off);
      if (lane >= off) incl += o;
    }
    unsigned before = incl - sum;
#pragma unroll
    for (int i = 0; i < kPerLane; ++i) {
      const int at = lane * kPerLane + i;
      if (at < kCounts) counts[at] = before;
      before += c[i];
    }
  }
  __syncthreads();
#pragma unroll
  for (int e = 0; e < E; ++e) {
    const unsigned bt = __ballot_sync(kFull, (take >> e) & 1u), bq = __ballot_sync(kFull, (tie >> e) & 1u);
    if (((take | tie) >> e) & 1u) {
      const unsigned base = counts[e * kSelectWarps + warp];
      const unsigned gt_before = (base >> 16) + __popc(bt & lower);
      const unsigned eq_before = (base & 0xffffu) + __popc(bq & lower);
      const int idx = e * kSelectThreads + tid;
      if ((take >> e) & 1u) {
        out[gt_before + (eq_before < need ? eq_before : need)] = idx;
      } else if (eq_before < need) {
        out[gt_before + eq_before] = idx;
      }
    }
  }
}

// The k best of scores[0, n) (0 < k < n) like SelectRow, by counting
// rounds when the keys fit in registers (n <= kSelectThreads * E). A round
// histograms the live keys (at first all) over kBins bins: -inf, then
// equal-width bins between the smallest and largest finite live score,
// then +inf (a monotone map, so every key of a higher bin scores strictly
// more); a block suffix scan finds the bin holding the rem-th best live key.
// The keys above it are taken, those below dropped; the bin is then
// resolved by one of: taken whole; its few keys (<= kMaxCandidates) ranked
// by a warp (score, then the lower page); all its keys equal (repeated
// pages): a tie, the lowest pages first; else it is the next round's live
// set (its range kBins times narrower). Returns false, having written
// nothing, where the keys do not fit or kMaxRounds do not resolve it:
// SelectRow then.
constexpr int kBins = 4096;
constexpr int kBinsPerThread = kBins / kSelectThreads;
constexpr int kMaxCandidates = 32;
constexpr int kMaxRounds = 4;
static_assert(kBinsPerThread == 8, "two 16-byte bin vectors per thread");

// (Inline: SelectKernel<E>'s whole hot path is one stretch of code, which
// matters when it runs cold, its instructions fetched from DRAM.)
template <int E, bool kCoherent>
__device__ __forceinline__ bool SelectRowBinnedInline(const float* scores, int n, int k, int32_t* out) {
  static_assert(E <= 32, "key states are bit masks");
  if (n > kSelectThreads * E) return false;
  __shared__ __align__(16) unsigned bins[kBins];
  __shared__ float warp_lo[kSelectWarps], warp_hi[kSelectWarps];
  __shared__ uint32_t warp_and[kSelectWarps], warp_or[kSelectWarps];
  __shared__ unsigned warp_cnt[kSelectWarps];
  __shared__ unsigned found[4];  // bin, live keys above it, live keys in it, candidates gathered
  __shared__ uint32_t cand_key[kMaxCandidates];
  __shared__ int cand_idx[kMaxCandidates];
  extern __shared__ uint4 select_dyn_smem[];
  uint8_t* flags = reinterpret_cast<uint8_t*>(select_dyn_smem);
  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  uint4* bins4 = reinterpret_cast<uint4*>(bins);

  float sc[E];
  uint32_t live = 0, taken = 0;  // bit e: key e
#pragma unroll
  for (int e = 0; e < E; ++e) {
    const int idx = e * kSelectThreads + tid;
    float v = idx >= n ? -INFINITY : kCoherent ? __ldcg(scores + idx) : __ldg(scores + idx);
    if (isnan(v)) v = -INFINITY;
    if (v == 0.0f) v = 0.0f;  // -0 == +0 (OrderedKey's rule)
    sc[e] = v;
    if (idx < n) live |= 1u << e;
  }
  unsigned rem = static_cast<unsigned>(k);  // still to take from the live keys
  enum { kOpen, kWhole, kFew, kTie } how = kOpen;
  for (int round = 0; round < kMaxRounds && how == kOpen; ++round) {
    bins4[2 * tid] = make_uint4(0, 0, 0, 0);
    bins4[2 * tid + 1] = make_uint4(0, 0, 0, 0);
    if (tid == 0) found[3] = 0;
    float lo = INFINITY, hi = -INFINITY;
    uint32_t all_and = ~0u, all_or = 0u;
#pragma unroll
    for (int e = 0; e < E; ++e) {
      if (live & (1u << e)) {
        if (isfinite(sc[e])) {
          lo = fminf(lo, sc[e]);
          hi = fmaxf(hi, sc[e]);
        }
        const uint32_t key = OrderedKey(sc[e]);
        all_and &= key;
        all_or |= key;
      }
    }
#pragma unroll
    for (int off = 16; off >= 1; off >>= 1) {
      lo = fminf(lo, __shfl_xor_sync(kFull, lo, off));
      hi = fmaxf(hi, __shfl_xor_sync(kFull, hi, off));
    }
    all_and = __reduce_and_sync(kFull, all_and);
    all_or = __reduce_or_sync(kFull, all_or);
    if (lane == 0) {
      warp_lo[warp] = lo;
      warp_hi[warp] = hi;
      warp_and[warp] = all_and;
      warp_or[warp] = all_or;
    }
    __syncthreads();
#pragma unroll
    for (int i = 0; i < kSelectWarps; ++i) {
      lo = fminf(lo, warp_lo[i]);
      hi = fmaxf(hi, warp_hi[i]);
      all_and &= warp_and[i];
      all_or |= warp_or[i];
    }
    if (all_and == all_or) {  // every live key equal (uniform)
      how = kTie;
      break;
    }
    // (halves: hi - lo never overflows; a degenerate scale is caught by the
    // clamp, and kMaxRounds bounds what makes no progress)
    const float scale = hi > lo ? static_cast<float>(kBins - 3) / (0.5f * hi - 0.5f * lo) : 0.0f;
    auto bin_of = [&](float v) {
      if (v < lo) return 0;          // -inf
      if (v > hi) return kBins - 1;  // +inf
      const float t = fminf(fmaxf((0.5f * v - 0.5f * lo) * scale, 0.0f), static_cast<float>(kBins - 3));
      return 1 + static_cast<int>(t);
    };
#pragma unroll
    for (int e = 0; e < E; ++e) {
      if (live & (1u << e)) atomicAdd(&bins[bin_of(sc[e])], 1u);
    }
    __syncthreads();

    // Thread t owns bins [8t, 8t + 8): live keys in the bins above them
    // (suffix scan), then the bin where the count reaches rem.
    const Counts8 k8 = LoadCounts8(bins, tid);
    if (lane == 0) warp_cnt[warp] = k8.suffix;
    __syncthreads();
    unsigned above = k8.suffix - k8.total;
#pragma unroll
    for (int w = 0; w < kSelectWarps; ++w) above += w > warp ? warp_cnt[w] : 0u;
    if (above < rem && rem <= above + k8.total) FindInCounts8(k8, above, rem, tid * kBinsPerThread, found);
    __syncthreads();
    const int bstar = static_cast<int>(found[0]);
    const unsigned cnt = found[2];
    rem -= found[1];
#pragma unroll
    for (int e = 0; e < E; ++e) {
      if (live & (1u << e)) {
        const int b = bin_of(sc[e]);
        if (b > bstar) taken |= 1u << e;
        if (b != bstar) live &= ~(1u << e);
      }
    }
    how = cnt == rem ? kWhole : cnt <= kMaxCandidates ? kFew : kOpen;
  }
  if (how == kOpen) return false;  // uniform
  if (how == kWhole) {
    taken |= live;
    live = 0;
  }
  if (how == kFew) {
    // The bin's few live keys, ranked by warp 0 (score, then the lower
    // page); its verdict per candidate comes back through flags[idx].
#pragma unroll
    for (int e = 0; e < E; ++e) {
      if (live & (1u << e)) {
        const unsigned slot = atomicAdd(&found[3], 1u);
        cand_key[slot] = OrderedKey(sc[e]);
        cand_idx[slot] = e * kSelectThreads + tid;
      }
    }
    __syncthreads();
    if (warp == 0) {
      const unsigned cnt = found[3];
      const bool mine = static_cast<unsigned>(lane) < cnt;
      const uint32_t key = mine ? cand_key[lane] : 0u;
      const int idx = mine ? cand_idx[lane] : 0;
      unsigned rank = 0;  // candidates ahead: a higher score, or equal at a lower page
      for (unsigned j = 0; j < cnt; ++j) {
        const uint32_t kj = __shfl_sync(kFull, key, static_cast<int>(j));
        const int ij = __shfl_sync(kFull, idx, static_cast<int>(j));
        rank += (kj > key || (kj == key && ij < idx)) ? 1u : 0u;
      }
      if (mine) flags[idx] = rank < rem ? 1 : 0;
    }
    __syncthreads();
#pragma unroll
    for (int e = 0; e < E; ++e) {
      if ((live & (1u << e)) && flags[e * kSelectThreads + tid] != 0) taken |= 1u << e;
    }
    live = 0;
  }
  CompactFromRegisters<E>(taken, how == kTie ? live : 0u, how == kTie ? rem : 0u, out);
  return true;
}

// The k best of row (0 < k < n) into out[0, k), then n (the current page)
// at out[k]: the binned select, else the radix one. Every select kernel is
// one instance per E (E keys per thread, SelectKeysPerThread) with the
// binned select inlined: with its code cold (fetched from DRAM, as in a
// decode step), a run-time switch over out-of-line instances cost the
// H100 ~5 us per select (session 8).
template <int E, bool kCoherent>
__device__ __forceinline__ void SelectHeadRow(const float* row, int n, int k, int32_t* out) {
  if (!SelectRowBinnedInline<E, kCoherent>(row, n, k, out)) SelectRow<E, kCoherent>(row, n, k, out);
  if (threadIdx.x == 0) out[k] = n;
}

// With TopPagesParams::ready: every thread of the CTA that wrote KV head
// g's row calls it; then ready[g] = epoch, a release at GPU scope after the
// CTA's barrier, so a reader that acquires it sees the whole row.
__device__ __forceinline__ void PublishRow(unsigned* ready, unsigned epoch, int g) {
  if (ready == nullptr) return;
  __syncthreads();
  if (threadIdx.x == 0) {
    asm volatile("st.release.gpu.global.u32 [%0], %1;" ::"l"(ready + g), "r"(epoch) : "memory");
  }
}

// One KV head's row per CTA, E keys per thread (SelectKeysPerThread(n)).
template <int E>
__global__ __launch_bounds__(kSelectThreads) void SelectKernel(const float* scores, int64_t stride, int n, int k,
                                                               int32_t* selected, unsigned* ready, unsigned epoch) {
  AllowDependents();  // the next kernel may start launching; it waits for this grid before any read
  const float* row = scores + blockIdx.x * stride;
  int32_t* out = selected + int64_t{blockIdx.x} * (k + 1);
  WaitPrimary();
  SelectHeadRow<E, false>(row, n, k, out);
  PublishRow(ready, epoch, blockIdx.x);
}

// A batch's select: CTA (g, z) writes KV head g's row of member z, from
// its scores, or the whole range / the current page alone where k == n /
// k == 0. E: SelectKeysPerThread of the batch's most pages.
template <int E>
__global__ __launch_bounds__(kSelectThreads) void SelectBatchKernel(const __grid_constant__ TopPagesBatchParams b) {
  AllowDependents();
  WaitPrimary();
  const TopPagesMember& m = b.members[blockIdx.y];
  const int n = static_cast<int>(m.num_pages - 1), k = static_cast<int>(m.k);
  int32_t* out = m.selected + int64_t{blockIdx.x} * (k + 1);
  if (k == 0 || k == n) {
    for (int i = threadIdx.x; i <= k; i += blockDim.x) out[i] = i == k ? n : i;
    return;
  }
  SelectHeadRow<E, false>(b.shape.scores + m.scores_offset + int64_t{blockIdx.x} * m.num_pages, n, k, out);
}

// Variant 2: scoring and select in one launch. CTA (x, g) scores a slice
// of KV head g's pages; the last of the head's CTAs to finish (an arrival
// counter per head, left zero again) selects the head's row from the
// scores the others left in L2. A head's select so starts as soon as its
// own pages are scored, under the other heads' scoring, with no select
// launch and no scoring-grid drain in between.
template <typename T, bool FP8, int D, int E>
__global__ __launch_bounds__(kSelectThreads, 2) void ScoreSelectKernel(TopPagesParams p, int n, int64_t stride,
                                                                    int64_t per_cta) {
  WaitPrimary();
  AllowDependents();  // the next kernel still waits for this grid's end before any read
  const int g = blockIdx.y;
  const int64_t p0 = blockIdx.x * per_cta;
  const int64_t p1 = p0 + per_cta < n ? p0 + per_cta : n;
  float* row = p.scores + g * stride;
  ScoreRange<T, FP8, D, kSelectThreads>(p, g, p0, p1, row);
  __shared__ bool last;
  __syncthreads();
  if (threadIdx.x == 0) {
    __threadfence();  // this CTA's scores, device-visible before its arrival
    last = atomicAdd(p.arrivals + g, 1u) == gridDim.x - 1;
    if (last) p.arrivals[g] = 0;  // every CTA of the head has arrived
    __threadfence();  // the other CTAs' scores, seen by the loads below
  }
  __syncthreads();
  if (!last) return;
  SelectHeadRow<E, true>(row, n, static_cast<int>(p.k), p.selected + int64_t{g} * (p.k + 1));
  PublishRow(p.ready, p.epoch, g);
}

// k == 0 (the current page only) or k == n (every page): no scores needed.
// A CTA per KV head.
__global__ void FillKernel(int32_t* selected, int n, int k, unsigned* ready, unsigned epoch) {
  int32_t* row = selected + int64_t{blockIdx.x} * (k + 1);
  for (int i = threadIdx.x; i <= k; i += blockDim.x) row[i] = i == k ? n : i;
  PublishRow(ready, epoch, blockIdx.x);
}

// ------------------------------------------------------------ cluster select

// One kernel per call: a thread-block cluster of C CTAs per KV head
// (blockIdx.y), CTA r scoring the head's pages [r * slice, (r + 1) * slice)
// into shared memory as order-preserving keys. The radix select then runs
// over the cluster: each pass every CTA histograms its keys (warp-aggregated
// shared atomics), a cluster barrier, and every CTA sums the C histograms
// through distributed shared memory and finds the same digit (double-
// buffered histograms: one barrier per pass). Compaction: per-CTA (taken,
// tie) counts exchanged the same way give each CTA its output offset; a
// thread writes a contiguous run of its slice in page order, so rows come
// out ascending with ties to the lower page, as the reference's.
constexpr int kClusterThreads = 512;
constexpr int kClusterWarps = kClusterThreads / 32;
constexpr int kMaxClusterSlice = 8192;  // keys per CTA in shared memory (32 KB)

template <typename T, bool FP8, int D>
__global__ __launch_bounds__(kClusterThreads) void ClusterSelectKernel(TopPagesParams p, int n, int slice) {
  namespace cg = cooperative_groups;
  WaitPrimary();
  cg::cluster_group cluster = cg::this_cluster();
  __shared__ __align__(16) unsigned hist[2][256];
  __shared__ __align__(16) unsigned tot[256];
  __shared__ unsigned found[3];
  __shared__ unsigned long long warp_sums[kClusterWarps];
  __shared__ unsigned long long cta_count;  // (taken << 32) | ties of this CTA
  __shared__ unsigned long long cta_before;  // the same over lower ranks
  extern __shared__ uint4 cluster_dyn_smem[];
  float* sc = reinterpret_cast<float*>(cluster_dyn_smem);
  uint32_t* key = reinterpret_cast<uint32_t*>(cluster_dyn_smem);
  const int C = static_cast<int>(cluster.num_blocks());
  const int r = static_cast<int>(cluster.block_rank());
  const int g = blockIdx.y;
  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  const int k = static_cast<int>(p.k);
  const int p0 = r * slice;
  const int p1 = p0 + slice < n ? p0 + slice : n;
  const int cnt = p1 > p0 ? p1 - p0 : 0;
  if (cnt > 0) ScoreRange<T, FP8, D, kClusterThreads>(p, g, p0, p1, sc - p0);
  __syncthreads();
  for (int i = tid; i < cnt; i += kClusterThreads) key[i] = OrderedKey(sc[i]);
  // (the barrier of the first pass orders these writes before the reads)

  uint32_t prefix = 0, mask = 0;
  unsigned rem = static_cast<unsigned>(k);
  const int rounds = (cnt + kClusterThreads - 1) / kClusterThreads;
  int buf = 0;
  for (int shift = 24; shift >= 0; shift -= 8, buf ^= 1) {
    unsigned* h = hist[buf];
    if (tid < 256) h[tid] = 0;
    __syncthreads();
    for (int rd = 0; rd < rounds; ++rd) {
      const int i = rd * kClusterThreads + tid;
      const bool part = i < cnt && (key[i] & mask) == prefix;
      if (__ballot_sync(kFull, part) == 0) continue;  // warp-uniform
      const unsigned d = part ? (key[i] >> shift) & 0xffu : 256u;
      const unsigned peers = __match_any_sync(kFull, d);
      if (part && lane == __ffs(peers) - 1) atomicAdd(&h[d], __popc(peers));
    }
    cluster.sync();
    if (tid < 256) {
      unsigned s = 0;
      for (int j = 0; j < C; ++j) s += cluster.map_shared_rank(h, j)[tid];
      tot[tid] = s;
    }
    __syncthreads();
    if (warp == 0) FindDigit(tot, rem, found);
    __syncthreads();
    rem -= found[1];
    prefix |= found[0] << shift;
    mask |= 0xffu << shift;
    if (found[2] == rem) break;  // the whole bin is taken
  }

  // Ordered compaction: thread tid owns the contiguous run [i0, i1).
  const int per_t = rounds;
  const int i0 = tid * per_t < cnt ? tid * per_t : cnt;
  const int i1 = i0 + per_t < cnt ? i0 + per_t : cnt;
  unsigned gt = 0, eq = 0;
  for (int i = i0; i < i1; ++i) {
    const uint32_t m = key[i] & mask;
    gt += m > prefix;
    eq += m == prefix;
  }
  unsigned long long total;
  unsigned long long before =
      BlockExclusiveSum<kClusterWarps>((static_cast<unsigned long long>(gt) << 32) | eq, warp_sums, &total);
  if (tid == 0) cta_count = total;
  cluster.sync();
  if (warp == 0) {
    unsigned long long b = lane < r ? *cluster.map_shared_rank(&cta_count, lane) : 0ull;
#pragma unroll
    for (int off = 16; off >= 1; off >>= 1) b += __shfl_xor_sync(kFull, b, off);
    if (lane == 0) cta_before = b;
  }
  cluster.sync();  // no CTA exits while another may read its cta_count
  before += cta_before;
  int32_t* out = p.selected + int64_t{g} * (k + 1);
  if (r == 0 && tid == 0) out[k] = n;
  if (gt == 0 && eq == 0) return;
  unsigned pos_gt = static_cast<unsigned>(before >> 32);
  unsigned eq_before = static_cast<unsigned>(before);
  unsigned pos = pos_gt + (eq_before < rem ? eq_before : rem);
  for (int i = i0; i < i1; ++i) {
    const uint32_t m = key[i] & mask;
    if (m > prefix) {
      out[pos++] = p0 + i;
    } else if (m == prefix) {
      if (eq_before < rem) out[pos++] = p0 + i;
      ++eq_before;
    }
  }
}

template <typename T, bool FP8, int D>
cudaError_t LaunchCluster(const TopPagesParams& p, int n, int cluster_size, cudaStream_t stream) {
  // Whole tiles per CTA (a tile split between two CTAs is read twice).
  const int tile = static_cast<int>(kBoundsTile);
  const int slice = ((n + cluster_size - 1) / cluster_size + tile - 1) / tile * tile;
  if (slice > kMaxClusterSlice) return cudaErrorInvalidValue;
  const void* kernel = reinterpret_cast<const void*>(&ClusterSelectKernel<T, FP8, D>);
  static bool configured = false;  // host-side, per instantiation
  if (!configured) {
    if (cudaError_t err = cudaFuncSetAttribute(kernel, cudaFuncAttributeNonPortableClusterSizeAllowed, 1);
        err != cudaSuccess) {
      return err;
    }
    configured = true;
  }
  cudaLaunchConfig_t config = {};
  config.gridDim = dim3(cluster_size, p.num_kv_heads);
  config.blockDim = dim3(kClusterThreads);
  config.dynamicSmemBytes = static_cast<size_t>((slice + 3) / 4 * 4) * sizeof(float);
  config.stream = stream;
  cudaLaunchAttribute attr[2];
  attr[0].id = cudaLaunchAttributeClusterDimension;
  attr[0].val.clusterDim.x = cluster_size;
  attr[0].val.clusterDim.y = 1;
  attr[0].val.clusterDim.z = 1;
  attr[1].id = cudaLaunchAttributeProgrammaticStreamSerialization;
  attr[1].val.programmaticStreamSerializationAllowed = 1;
  config.attrs = attr;
  config.numAttrs = p.pdl ? 2 : 1;
  return cudaLaunchKernelEx(&config, ClusterSelectKernel<T, FP8, D>, p, n, slice);
}

// Measured on an H100 (quest_kernels_test, CUDA graph timing, head_dim
// 128, 16-token pages, k+1 = 128): with the binned select and 32 KB+
// scoring CTAs the two-kernel path is fastest everywhere, bf16 and FP8
// (letting the select kernel launch as scoring starts, 8 FP8 pages in
// flight per lane instead of 4 and scoring CTAs of up to 8 per SM were
// slower)
// (bf16: 32K MHA 12.8 us vs cluster8 19.5, 128K MHA 55.6 vs 60.2, 128K GQA
// 32/8 16.0 vs 22.3; FP8: 32K MHA 10.7 vs 23.9, 128K MHA 33.4 vs 54.5).
// Before them the cluster select won above 4096 pages for one coefficient
// vector. Fusing the select into the last scoring CTA, clusters of 16
// (scheduling) and BlockRadixSort were slower everywhere.

// Lets `kernel` launch with `bytes` of dynamic shared memory. What a
// launch may take without an opt-in depends on the kernel, not on bytes
// alone: its static shared memory counts against the default 48 KB (on an
// H100, SelectKernel<32>'s 20 KB static left 40 KB of flags refused), so
// the kernel's own attribute is read. It only ever rises (it is the
// kernel's, shared by every launch and thread), and what was allowed is
// remembered per kernel and device: the common launch costs a lookup, not
// a driver call.
cudaError_t SetDynamicSmem(const void* kernel, size_t bytes) {
  struct Allowed {
    const void* kernel;
    int device;
    size_t bytes;
  };
  static std::mutex mu;
  static std::vector<Allowed>* allowed = new std::vector<Allowed>();
  int device = 0;
  if (cudaError_t err = cudaGetDevice(&device); err != cudaSuccess) return err;
  std::lock_guard<std::mutex> lock(mu);
  Allowed* entry = nullptr;
  for (Allowed& a : *allowed) {
    if (a.kernel == kernel && a.device == device) entry = &a;
  }
  if (entry != nullptr && bytes <= entry->bytes) return cudaSuccess;
  cudaFuncAttributes attr;
  if (cudaError_t err = cudaFuncGetAttributes(&attr, kernel); err != cudaSuccess) return err;
  size_t now = static_cast<size_t>(attr.maxDynamicSharedSizeBytes);
  if (bytes > now) {
    if (cudaError_t err = cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                               static_cast<int>(bytes));
        err != cudaSuccess) {
      return err;
    }
    now = bytes;
  }
  if (entry == nullptr) {
    allowed->push_back({kernel, device, now});
  } else {
    entry->bytes = now;
  }
  return cudaSuccess;
}

// Pages per scoring CTA: a multiple of what one pass of the CTA covers,
// aiming at a few CTAs per SM over all KV heads.
// (`fixed`: exactly min_pages, rounded up to the unit.)
int64_t PagesPerCta(int64_t n, int kv_heads, int unit, int64_t target_ctas, int64_t min_pages, bool fixed) {
  int64_t per = fixed ? min_pages : (n * kv_heads + target_ctas - 1) / target_ctas;
  if (per < min_pages) per = min_pages;
  per = (per + unit - 1) / unit * unit;
  return per < unit ? unit : per;
}

// The fused variant's flag bytes (dynamic shared memory) stay within this,
// past it the two-kernel path runs.
constexpr int64_t kMaxFusedSelectPages = 64 * 1024;

// Keys per select thread for n scores: the E of the select kernels'
// instances.
int SelectKeysPerThread(int64_t n) { return n <= 1024 ? 2 : n <= 2048 ? 4 : n <= 4096 ? 8 : n <= 8192 ? 16 : 32; }

// Calls f(integral_constant E) for e = SelectKeysPerThread(n).
template <typename F>
void DispatchKeysPerThread(int e, F&& f) {
  using std::integral_constant;
  switch (e) {
    case 2: f(integral_constant<int, 2>{}); break;
    case 4: f(integral_constant<int, 4>{}); break;
    case 8: f(integral_constant<int, 8>{}); break;
    case 16: f(integral_constant<int, 16>{}); break;
    default: f(integral_constant<int, 32>{}); break;
  }
}

// What every select launch needs besides the params: the keys per thread
// (E) and the flag bytes of the select's compaction.
struct SelectShape {
  int64_t n = 0;  // pages scored (the current one is not)
  int e = 0;
  size_t flag_bytes = 0;
};

// Calls f(integral_constant D) for the tile scorer's head dims (64, 128,
// 256); false for any other.
template <typename F>
bool DispatchHeadDim(int head_dim, F&& f) {
  using std::integral_constant;
  switch (head_dim) {
    case 64: f(integral_constant<int, 64>{}); return true;
    case 128: f(integral_constant<int, 128>{}); return true;
    case 256: f(integral_constant<int, 256>{}); return true;
    default: return false;
  }
}

// Whether the tile scorer takes this shape (the rest: ScoreGenericKernel,
// a warp per page and head).
bool FastScoringShape(const TopPagesParams& p, const void* bounds) {
  if (p.num_kv_heads <= 0 || p.num_heads % p.num_kv_heads != 0) return false;
  const int d = p.head_dim;
  return (d == 64 || d == 128 || d == 256) && Aligned16(bounds);
}

// The pre-wait prefetch of a scoring launch of `ctas` CTAs of `per_cta`
// pages each (score_plan.h).
template <typename T, bool FP8, int D>
ScorePrefetch PlanScoreKernelPrefetch(bool pdl, int64_t ctas, int64_t per_cta) {
  return PlanScorePrefetch(pdl, ctas, int64_t{kScoreCtasPerSm} * NumSms(),
                           per_cta / kBoundsTile * BoundTileLines<T, FP8, D>());
}

template <typename T, bool FP8, int D>
cudaError_t RunFast(const TopPagesParams& p, int variant, const SelectShape& s, cudaStream_t stream) {
  const int64_t n = s.n, stride = p.num_pages;
  if (variant == 5 || variant == 6) {
    return LaunchCluster<T, FP8, D>(p, static_cast<int>(n), variant == 5 ? 8 : 16, stream);
  }
  if (variant == 2) {
    // Two CTAs of kSelectThreads per SM, shared evenly among the KV heads
    // (H100, MHA 32K B=2048 FP8 with the per-head wait: 5.37-5.38x dense
    // against 5.07-5.16x with one per SM).
    void (*kernel)(TopPagesParams, int, int64_t, int64_t) = nullptr;
    DispatchKeysPerThread(s.e, [&](auto ec) { kernel = &ScoreSelectKernel<T, FP8, D, decltype(ec)::value>; });
    const int64_t ctas_per_head = 2 * NumSms() > p.num_kv_heads ? 2 * NumSms() / p.num_kv_heads : 1;
    const int64_t per = PagesPerCta(n, 1, static_cast<int>(kBoundsTile), ctas_per_head, 1, false);
    const dim3 grid(static_cast<unsigned>((n + per - 1) / per), p.num_kv_heads);
    if (cudaError_t err = SetDynamicSmem(reinterpret_cast<const void*>(kernel), s.flag_bytes); err != cudaSuccess) {
      return err;
    }
    return LaunchMaybePdl(p.pdl, kernel, grid, dim3(kSelectThreads), s.flag_bytes, stream, p,
                          static_cast<int>(n), stride, per);
  }
  const int64_t per = ScorePagesPerCta<FP8, D>(p.score_pages_per_cta, p, BoundsTiles(n) * p.num_kv_heads);
  const dim3 grid(static_cast<unsigned>((n + per - 1) / per), p.num_kv_heads);
  const ScorePrefetch pf = PlanScoreKernelPrefetch<T, FP8, D>(p.pdl, int64_t{grid.x} * grid.y, per);
  auto* kernel = ScoresOneSide<FP8, D>(p) ? &ScoreKernel<T, FP8, D, true> : &ScoreKernel<T, FP8, D, false>;
  return LaunchMaybePdl(p.pdl, kernel, grid, dim3(kScoreThreads), 0, stream, p, n, stride, per, pf);
}

template <typename T, bool FP8>
cudaError_t RunScoring(const TopPagesParams& p, bool fast, int variant, const SelectShape& s, cudaStream_t stream) {
  if (fast) {
    cudaError_t err = cudaSuccess;
    const bool ran = DispatchHeadDim(
        p.head_dim, [&](auto dc) { err = RunFast<T, FP8, decltype(dc)::value>(p, variant, s, stream); });
    if (ran) return err;
  }
  const int64_t n = s.n;
  const int64_t warps = n * p.num_kv_heads;
  const int64_t blocks64 = (warps * 32 + kThreads - 1) / kThreads;
  const unsigned blocks = static_cast<unsigned>(blocks64 < 65536 ? blocks64 : 65536);
  ScoreGenericKernel<T, FP8><<<blocks, kThreads, 0, stream>>>(p, n, p.num_pages);
  return cudaGetLastError();
}

template <typename T>
cudaError_t Score(const TopPagesParams& p, bool fast, int variant, const SelectShape& s, cudaStream_t stream) {
  return p.bounds_fp8 ? RunScoring<T, true>(p, fast, variant, s, stream)
                      : RunScoring<T, false>(p, fast, variant, s, stream);
}

}  // namespace

cudaError_t LaunchUpdatePageBounds(ElemType type, const PageBoundsParams& p, cudaStream_t stream) {
  if (p.end <= p.begin) return cudaSuccess;
  if (p.bound_page <= 0 || p.page_size % p.bound_page != 0 || p.num_kv_heads <= 0 || p.head_dim <= 0 ||
      p.begin < 0) {
    return cudaErrorInvalidValue;
  }
  const int64_t first = p.begin / p.bound_page, last = (p.end - 1) / p.bound_page;
  const bool vec8 = p.head_dim % 8 == 0 && Aligned16(p.k_pages);
  const int64_t items = (last - first + 1) * p.num_kv_heads * (vec8 ? p.head_dim / 8 : p.head_dim);
  QUEST_DISPATCH(type, {
    void (*kernel)(PageBoundsParams, int64_t, int64_t) =
        p.bounds_fp8 ? (vec8 ? &PageBoundsKernel<T, 8, true> : &PageBoundsKernel<T, 1, true>)
                     : (vec8 ? &PageBoundsKernel<T, 8, false> : &PageBoundsKernel<T, 1, false>);
    return LaunchMaybePdl(p.pdl, kernel, dim3(Blocks(items)), dim3(kThreads), 0, stream, p, first, items);
  });
  return cudaErrorInvalidValue;
}

cudaError_t LaunchSelectTopPages(ElemType type, const TopPagesParams& p, cudaStream_t stream) {
  const int64_t n = p.num_pages - 1, k = p.k;
  if (p.num_pages < 1 || k < 0 || k > n || p.num_kv_heads <= 0 || p.num_heads % p.num_kv_heads != 0 ||
      p.head_dim <= 0 || n > kMaxSelectPages) {
    return cudaErrorInvalidValue;
  }
  if (k == 0 || k == n) {
    FillKernel<<<p.num_kv_heads, kThreads, 0, stream>>>(p.selected, static_cast<int>(n), static_cast<int>(k),
                                                         p.ready, p.epoch);
    return cudaGetLastError();
  }
  const bool fast = FastScoringShape(p, p.bounds);
  SelectShape shape;
  shape.n = n;
  shape.e = SelectKeysPerThread(n);
  shape.flag_bytes = static_cast<size_t>(FlagBytes(n));
  const bool fusable = fast && p.arrivals != nullptr && n <= kMaxFusedSelectPages;
  int variant = p.variant != 0 ? p.variant : 1;
  if (variant == 2 && !fusable) variant = 1;
  if ((variant == 5 || variant == 6) && (!fast || n > int64_t{8} * kMaxClusterSlice)) variant = 1;
  if (variant != 2 && variant != 4 && variant != 5 && variant != 6) variant = 1;
  if (p.ready != nullptr && variant != 1 && variant != 2) return cudaErrorInvalidValue;  // they publish no rows

  cudaError_t err = cudaSuccess;
  if (variant == 5 || variant == 6) {
    QUEST_DISPATCH(type, { err = Score<T>(p, fast, variant, shape, stream); });
    if (err == cudaSuccess) {
      if (p.launched_variant != nullptr) *p.launched_variant = variant;
      return err;
    }
    (void)cudaGetLastError();  // a refused cluster launch: the two-kernel path instead
    variant = 1;
  }
  if (p.launched_variant != nullptr) *p.launched_variant = variant;
  QUEST_DISPATCH(type, { err = Score<T>(p, fast, variant, shape, stream); });
  if (err != cudaSuccess || variant == 2 || variant == 4) return err;
  void (*select)(const float*, int64_t, int, int, int32_t*, unsigned*, unsigned) = nullptr;
  DispatchKeysPerThread(shape.e, [&](auto ec) { select = &SelectKernel<decltype(ec)::value>; });
  if ((err = SetDynamicSmem(reinterpret_cast<const void*>(select), shape.flag_bytes)) != cudaSuccess) return err;
  return LaunchMaybePdl(p.pdl, select, dim3(p.num_kv_heads), dim3(kSelectThreads), shape.flag_bytes, stream,
                        static_cast<const float*>(p.scores), int64_t{p.num_pages}, static_cast<int>(n),
                        static_cast<int>(k), p.selected, p.ready, p.epoch);
}

bool SelectTopPagesBatchSupported(const TopPagesParams& shape, const void* bounds) {
  return FastScoringShape(shape, bounds);
}

cudaError_t LaunchSelectTopPagesBatch(ElemType type, const TopPagesBatchParams& b, cudaStream_t stream) {
  const TopPagesParams& p = b.shape;
  if (b.count < 1 || b.count > kMaxTopPagesBatch || p.scores == nullptr) return cudaErrorInvalidValue;
  int64_t most = 0;
  for (int i = 0; i < b.count; ++i) {
    const TopPagesMember& m = b.members[i];
    const int64_t n = m.num_pages - 1;
    if (m.num_pages < 1 || m.k < 0 || m.k > n || n > kMaxSelectPages || m.selected == nullptr ||
        !SelectTopPagesBatchSupported(p, m.bounds)) {
      return cudaErrorInvalidValue;
    }
    most = n > most ? n : most;
  }
  cudaError_t err = cudaSuccess;
  QUEST_DISPATCH(type, {
    auto score = [&](auto fp8c) {
      constexpr bool FP8 = decltype(fp8c)::value;
      DispatchHeadDim(p.head_dim, [&](auto dc) {
        constexpr int D = decltype(dc)::value;
        const int64_t per = ScorePagesPerCta<FP8, D>(0, p, BoundsTiles(most) * p.num_kv_heads * b.count);
        const int64_t ctas = most > 0 ? (most + per - 1) / per : 1;
        const ScorePrefetch pf = PlanScoreKernelPrefetch<T, FP8, D>(p.pdl, ctas * p.num_kv_heads * b.count, per);
        auto* kernel =
            ScoresOneSide<FP8, D>(p) ? &ScoreBatchKernel<T, FP8, D, true> : &ScoreBatchKernel<T, FP8, D, false>;
        err = LaunchMaybePdl(p.pdl, kernel,
                             dim3(static_cast<unsigned>(ctas), p.num_kv_heads, b.count), dim3(kScoreThreads), 0,
                             stream, b, per, pf);
      });
    };
    if (p.bounds_fp8) {
      score(std::true_type{});
    } else {
      score(std::false_type{});
    }
  });
  if (err != cudaSuccess) return err;
  const size_t flag_bytes = static_cast<size_t>(FlagBytes(most));
  void (*select)(TopPagesBatchParams) = nullptr;
  DispatchKeysPerThread(SelectKeysPerThread(most), [&](auto ec) { select = &SelectBatchKernel<decltype(ec)::value>; });
  if ((err = SetDynamicSmem(reinterpret_cast<const void*>(select), flag_bytes)) != cudaSuccess) return err;
  return LaunchMaybePdl(p.pdl, select, dim3(p.num_kv_heads, b.count), dim3(kSelectThreads), flag_bytes, stream, b);
}

}  // namespace quest::ops::cuda
