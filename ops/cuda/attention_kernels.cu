// Paged attention kernels (see attention_kernels.h).

#include <algorithm>
#include <cmath>
#include <mutex>
#include <type_traits>
#include <vector>

#include "ops/cuda/attention_kernels.h"
#include "ops/cuda/device_util.cuh"
#include "ops/cuda/ptx.cuh"
#include "ops/cuda/split_plan.h"

namespace quest::ops::cuda {
namespace {

constexpr int kAttnWarps = 4;
constexpr int kPerLane = kMaxHeadDim / 32;

// Keys a (token, head) block walks: dense, every position up to its own
// (causal); selected, every slot of its KV head's chunks.
__device__ __forceinline__ int64_t NumCandidates(const PagedAttentionParams& p, int g, int64_t qpos) {
  if (p.chunks == nullptr) return qpos + 1 < p.kv_len ? qpos + 1 : p.kv_len;
  if (p.indptr == nullptr) return static_cast<int64_t>(p.chunks_per_head) * p.chunk;
  return static_cast<int64_t>(p.indptr[g + 1] - p.indptr[g]) * p.chunk;
}

// Position of candidate j, or -1 when it is not attended (past the
// sequence, causal, a page-table hole, evicted).
__device__ __forceinline__ int64_t KeyPosition(const PagedAttentionParams& p, int g, int64_t j,
                                               int64_t qpos) {
  int64_t pos = j;
  if (p.chunks != nullptr) {
    const int64_t first = p.indptr != nullptr ? p.indptr[g] : static_cast<int64_t>(g) * p.chunks_per_head;
    pos = static_cast<int64_t>(p.chunks[first + j / p.chunk]) * p.chunk + j % p.chunk;
  }
  if (pos >= p.kv_len || pos > qpos) return -1;
  if (p.page_table[pos / p.page_size] < 0) return -1;
  if (p.token_valid != nullptr && p.token_valid[g * p.mask_stride + pos] == 0) return -1;
  return pos;
}

template <typename T>
__device__ __forceinline__ const T* KvRow(const void* pages, const PagedAttentionParams& p,
                                          int64_t pos, int g) {
  const int64_t phys = p.page_table[pos / p.page_size];
  return static_cast<const T*>(pages) +
         ((phys * p.page_size + pos % p.page_size) * p.num_kv_heads + g) * p.head_dim;
}

// q . k * scale over the warp (every lane gets the sum); lane holds dims
// lane + 32 i.
template <typename T>
__device__ __forceinline__ float Score(const float (&q)[kPerLane], const T* k, int lane, int d,
                                       float scale) {
  float s = 0.0f;
#pragma unroll
  for (int i = 0; i < kPerLane; ++i) {
    const int e = lane + 32 * i;
    if (e < d) s += q[i] * F(k[e]);
  }
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) s += __shfl_xor_sync(0xffffffffu, s, o);
  return s * scale;
}

template <typename T>
__device__ __forceinline__ void LoadQuery(const PagedAttentionParams& p, int t, int h, int lane,
                                          float (&q)[kPerLane]) {
  const T* qr = static_cast<const T*>(p.q) + (static_cast<int64_t>(t) * p.num_heads + h) * p.head_dim;
#pragma unroll
  for (int i = 0; i < kPerLane; ++i) {
    const int e = lane + 32 * i;
    q[i] = e < p.head_dim ? F(qr[e]) : 0.0f;
  }
}

template <typename T>
__global__ void __launch_bounds__(kAttnWarps * 32) PagedAttentionKernel(PagedAttentionParams p) {
  const int h = blockIdx.x, t = blockIdx.y;
  const int g = h / (p.num_heads / p.num_kv_heads);
  const int d = p.head_dim;
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int64_t qpos = p.kv_len - p.n + t;

  float q[kPerLane], acc[kPerLane];
  LoadQuery<T>(p, t, h, lane, q);
#pragma unroll
  for (int i = 0; i < kPerLane; ++i) acc[i] = 0.0f;
  float m = -INFINITY, l = 0.0f;

  const int64_t count = NumCandidates(p, g, qpos);
  for (int64_t j = warp; j < count; j += kAttnWarps) {
    const int64_t pos = KeyPosition(p, g, j, qpos);  // warp-uniform
    if (pos < 0) continue;
    const float s = Score(q, KvRow<T>(p.k_pages, p, pos, g), lane, d, p.scale);
    const float m_new = fmaxf(m, s);
    const float corr = expf(m - m_new);  // 0 for the first key (m = -inf)
    const float w = expf(s - m_new);
    l = l * corr + w;
    const T* v = KvRow<T>(p.v_pages, p, pos, g);
#pragma unroll
    for (int i = 0; i < kPerLane; ++i) {
      const int e = lane + 32 * i;
      if (e < d) acc[i] = acc[i] * corr + w * F(v[e]);
    }
    m = m_new;
  }

  __shared__ float s_m[kAttnWarps], s_l[kAttnWarps];
  __shared__ float s_acc[kAttnWarps][kMaxHeadDim];
  if (lane == 0) {
    s_m[warp] = m;
    s_l[warp] = l;
  }
#pragma unroll
  for (int i = 0; i < kPerLane; ++i) {
    const int e = lane + 32 * i;
    if (e < d) s_acc[warp][e] = acc[i];
  }
  __syncthreads();
  float big = -INFINITY;
  for (int w = 0; w < kAttnWarps; ++w) {
    if (s_l[w] > 0.0f) big = fmaxf(big, s_m[w]);
  }
  float total = 0.0f;
  for (int w = 0; w < kAttnWarps; ++w) {
    if (s_l[w] > 0.0f) total += s_l[w] * expf(s_m[w] - big);
  }
  T* out = static_cast<T*>(p.out) + (static_cast<int64_t>(t) * p.num_heads + h) * d;
  for (int e = threadIdx.x; e < d; e += blockDim.x) {
    float o = 0.0f;
    if (total > 0.0f) {
      for (int w = 0; w < kAttnWarps; ++w) {
        if (s_l[w] > 0.0f) o += s_acc[w][e] * expf(s_m[w] - big);
      }
      o /= total;
    }
    out[e] = To<T>(o);
  }
  if (p.lse != nullptr && threadIdx.x == 0) {
    p.lse[static_cast<int64_t>(t) * p.num_heads + h] = total > 0.0f ? big + logf(total) : -INFINITY;
  }
}

template <typename T>
__global__ void __launch_bounds__(kAttnWarps * 32) AttentionWeightsKernel(PagedAttentionParams p) {
  const int h = blockIdx.x, t = blockIdx.y;
  const int g = h / (p.num_heads / p.num_kv_heads);
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int64_t qpos = p.kv_len - p.n + t;
  const float lse = p.lse[static_cast<int64_t>(t) * p.num_heads + h];
  if (lse == -INFINITY) return;  // attended nothing
  float q[kPerLane];
  LoadQuery<T>(p, t, h, lane, q);
  const bool last = t == p.n - 1;
  const int64_t count = NumCandidates(p, g, qpos);
  for (int64_t j = warp; j < count; j += kAttnWarps) {
    const int64_t pos = KeyPosition(p, g, j, qpos);
    if (pos < 0) continue;
    const float w = expf(Score(q, KvRow<T>(p.k_pages, p, pos, g), lane, p.head_dim, p.scale) - lse);
    if (lane == 0) {
      atomicAdd(&p.attention_sum[h * p.kv_len + pos], w);
      if (last) p.attention_last[h * p.kv_len + pos] = w;
    }
  }
}


// ---------------------------------------------------------------------------
// Split-KV (flash-decoding) attention for head_dim 64, 128, 256.
//
// Block (split, g * tiles + z, t): query token t, KV head g, query heads
// g * group + z * GB .. + GB (masked past the group), candidates
// [split * split_len, (split + 1) * split_len). kSplitWarps warps each take
// every kSplitWarps-th tile of kRows(D) candidates. A thread owns 8
// consecutive dims (16 bytes) of kRowsPerThread rows of a tile: it copies
// them into shared memory with cp.async, kStages tiles ahead, and later
// reads back exactly what it copied, so only the tile's validity mask is
// shared within the warp. Scores are in log2 units (q pre-scaled by
// scale * log2 e).

// Three stages (48 KiB of pipeline a block) let four blocks share an SM
// where four stages (64 KiB) let three: a Quest selection then splits
// into more, shorter blocks. H100, session 22, same call, two runs each,
// 4 -> 3 stages, Quest fp8 MHA step: 32K B=2048 28.95-28.98 -> 28.89-28.92
// us (the same), B=4096 41.7-41.9 -> 40.4, 128K B=2048 49.2 -> 48.2,
// B=4096 61.3 -> 60.0-60.1; batch 8 (batched select) MHA 32K B=2048
// 8.46 -> 9.35-9.36x dense; dense batch 1 % of copy MHA 4K 88.0-88.4 ->
// 91.3, 32K 99.0-99.1 -> 98.5-98.6, 128K 101.7-101.8 -> 100.8
// (tools/bench/RESULTS.md). The tensor-core kernel keeps kMmaStages.
constexpr int kSplitWarps = 4;
constexpr int kStages = 3;
constexpr int kRowsPerThread = 4;
constexpr float kLog2e = 1.4426950408889634f;
constexpr float kLn2 = 0.6931471805599453f;

template <int D>
struct SplitGeo {
  static constexpr int kTpr = D / 8;                  // threads per row
  static constexpr int kRps = 32 / kTpr;              // rows per warp step
  static constexpr int kRows = kRps * kRowsPerThread;  // rows per tile (<= 32)
  static_assert(kRows <= 32, "tile validity is one ballot");
};

// Shared memory of a split block: the pipelines (later reused for the
// warps' combined states, [warps][GB](D + 2) floats) plus the tiles'
// validity masks.
constexpr size_t kPipeElems = static_cast<size_t>(kSplitWarps) * kStages * 2 * 32 * kRowsPerThread * 8;
constexpr size_t kSplitSmem = kPipeElems * 2 + sizeof(uint32_t) * kSplitWarps * kStages;
static_assert(kSplitSmem >= sizeof(float) * kSplitWarps * 8 * (256 + 2), "the warps' states fit");


// Programmatic dependent launch: the split kernels are launched allowed to
// start before the previous kernel in the stream ends (launch and block
// setup overlap its tail), so each first waits for that kernel to complete
// (griddepcontrol.wait: completion and its memory visible; a no-op without
// a prerequisite), before any global memory access, and then lets the next
// launch begin early in turn (its blocks wait the same way for this grid).
__device__ __forceinline__ void WaitPreviousGrid() {
  asm volatile("griddepcontrol.wait;\n" ::: "memory");
  asm volatile("griddepcontrol.launch_dependents;\n" ::: "memory");
}

// With p.ready (see PagedAttentionParams): waits for KV head g's selection
// row alone, an acquire at GPU scope by one thread, then the CTA's barrier
// (the select's PublishRow is the release side). A row never published
// (a broken contract) traps after about a second rather than hanging.
__device__ __forceinline__ void WaitForRow(const unsigned* ready, unsigned epoch, int g) {
  if (threadIdx.x == 0) {
    for (uint32_t spins = 0;; ++spins) {
      unsigned v;
      asm volatile("ld.acquire.gpu.global.u32 %0, [%1];" : "=r"(v) : "l"(ready + g) : "memory");
      if (v == epoch) break;
      if (spins > (1u << 23)) __trap();
      __nanosleep(128);
    }
  }
  __syncthreads();
  asm volatile("griddepcontrol.launch_dependents;\n" ::: "memory");
}

// Candidates of KV head g for a query at qpos (the split kernel's count).
__device__ __forceinline__ int64_t SplitCandidates(const PagedAttentionParams& p, int g, int64_t qpos) {
  return NumCandidates(p, g, qpos);
}

// A lane's candidate row of a tile, looked up one step before its copy is
// issued: the selection's chunk id and the page-table entry (and mask byte)
// are loads whose values are only used when the copy is issued, so a tile's
// index chain overlaps the work on earlier tiles instead of stalling the
// pipeline (and the prologue's tiles look theirs up together).
struct RowIdx {
  int slot = 0;   // pos % page_size
  int phys = -1;  // -1: not attended (out of range, causal, or a hole)
  int tv = 1;     // the token mask's byte
};

// Positions and candidate indices fit 32 bits (the caller checks kv_len),
// which keeps the divisions cheap.
__device__ __forceinline__ void RowLookup(const PagedAttentionParams& p, int g, int sel_first, int j, int je,
                                          int qpos, RowIdx& r) {
  r.phys = -1;
  r.tv = 1;
  r.slot = 0;
  if (j < je) {
    int pos = j;
    if (p.chunks != nullptr) pos = p.chunks[sel_first + j / p.chunk] * p.chunk + j % p.chunk;
    if (pos >= 0 && pos < p.kv_len && pos <= qpos) {
      r.slot = pos % p.page_size;
      r.phys = p.page_table[pos / p.page_size];
      if (p.token_valid != nullptr) r.tv = p.token_valid[g * p.mask_stride + pos];
    }
  }
}

// Streams a warp's tiles through a kStages-deep cp.async pipeline.
// lookup(it, r) is called for it = 0, 1, 2, ... in order, once each, and
// says whether tile `it` exists (false ends the warp's tiles; a fixed
// count or chunks handed out at run time, see WarpTiles). Each tile's
// look-ups (chunk id, page-table entry, mask byte: dependent loads) run one
// tile ahead of its copies, and the copies kStages - 1 tiles ahead of
// consume(tile, stage), so neither wait is exposed; ready() runs once the
// prologue's copies are issued. Ends with every copy landed.
template <int kStages, typename Lookup, typename Copy, typename Consume, typename Ready>
__device__ __forceinline__ void StreamTiles(Lookup&& lookup, Copy&& copy, Consume&& consume, Ready&& ready) {
  int known = 0;  // tiles 0 .. known - 1 exist (looked up)
  {
    RowIdx pre[kStages - 1];
#pragma unroll
    for (int s = 0; s < kStages - 1; ++s) {
      if (known == s && lookup(s, pre[s])) known = s + 1;
    }
#pragma unroll
    for (int s = 0; s < kStages - 1; ++s) {
      if (s < known) copy(pre[s], s);
      CpAsyncCommit();
    }
  }
  // Work on values loaded before the prologue (the query) goes here, so
  // that their load latency overlaps the index chain instead of delaying it.
  ready();
  RowIdx ahead;
  if (known == kStages - 1 && lookup(kStages - 1, ahead)) known = kStages;
  for (int it = 0; it < known; ++it) {
    const int next = it + kStages - 1;
    if (next < known) copy(ahead, static_cast<int>(next % kStages));
    CpAsyncCommit();
    if (known == next + 1 && lookup(next + 1, ahead)) known = next + 2;
    CpAsyncWait<kStages - 1>();
    __syncwarp();
    consume(it, static_cast<int>(it % kStages));
    __syncwarp();
  }
  CpAsyncWait<0>();
}

// The row's element offset in the pools; false when it is not attended
// (a page-table hole, masked, or out of range).
template <int D>
__device__ __forceinline__ bool RowResolve(const PagedAttentionParams& p, int g, const RowIdx& r, int64_t& off) {
  const bool valid = r.phys >= 0 && r.tv != 0;
  off = valid ? ((static_cast<int64_t>(r.phys) * p.page_size + r.slot) * p.num_kv_heads + g) * D : 0;
  return valid;
}

// One warp's tiles of kRows candidates (lane r < kRows looks up and
// resolves row r of a tile). Plain ints (no reference to the kernel's
// parameters, which would force them into local memory).
//
// Static (next == nullptr): the split's candidates [js, je), the warp
// taking every kSplitWarps-th tile.
//
// Dynamic (p.dynamic_splits): the unit's whole list [js, je) in chunks of
// kChunkRows candidates; the warp's first chunk is fixed (split *
// kSplitWarps + warp) and each further one is taken from the unit's counter
// `next` (an atomic add, issued a chunk ahead so its latency hides behind
// the current chunk), so warps on SMs that stream faster take more chunks
// and the splits end together instead of on the slowest SM. A warp's
// pipeline holds a chunk besides the tiles in flight, so the ends still
// spread by about a chunk's streaming time. H100, dense batch 1, % of copy:
// the CUDA-core kernel takes chunks of 4 tiles of 8 rows (MHA 128K 93.6
// against 92.1 with 2 tiles); the tensor-core one takes one tile of 16
// (GQA 32/8 32K 86.7-86.9 against 85.7-85.8 statically, which 2-tile
// chunks did not beat; 128K 100.1-100.2 against 99.4-99.5; session 18).
constexpr int kChunkRows = 32;
template <int kRows, int D>
struct WarpTiles {
  static constexpr int kChunkTiles = kRows >= 16 ? 1 : kChunkRows / kRows;
  __device__ WarpTiles(const PagedAttentionParams& p, int g_, int64_t js_, int64_t je_, int64_t qpos_, int warp_,
                       int lane_, int* next_)
      : g(g_), warp(warp_), lane(lane_),
        // 32-bit candidate indices and positions (the caller checks both).
        js(static_cast<int>(js_)), je(static_cast<int>(je_)), qpos(static_cast<int>(qpos_)),
        sel_first(p.chunks == nullptr ? 0 : (p.indptr != nullptr ? p.indptr[g_] : g_ * p.chunks_per_head)),
        next(next_) {
    if (next == nullptr) {
      const int ntiles = je > js ? (je - js + kRows - 1) / kRows : 0;
      count = ntiles > warp ? (ntiles - warp + kSplitWarps - 1) / kSplitWarps : 0;
    } else {
      chunks = je > js ? (je - js + kChunkTiles * kRows - 1) / (kChunkTiles * kRows) : 0;
      fixed = static_cast<int>(gridDim.x) * kSplitWarps;
      chunk = static_cast<int>(blockIdx.x) * kSplitWarps + warp;
      if (chunk < chunks) Grab();
    }
  }
  // Looks up this lane's row of the warp's tile `it` (it = 0, 1, ... in
  // order); false when the warp has no tile `it`.
  __device__ __forceinline__ bool Lookup(const PagedAttentionParams& p, int it, RowIdx& r) {
    int j;
    if (next == nullptr) {
      if (it >= count) return false;
      j = js + (warp + it * kSplitWarps) * kRows;
    } else {
      const int within = it % kChunkTiles;
      if (within == 0 && it > 0) {  // the chunk taken a chunk ago
        chunk = __shfl_sync(0xffffffffu, grabbed, 0) + fixed;
        if (chunk < chunks) Grab();
      }
      if (chunk >= chunks) return false;
      j = js + (chunk * kChunkTiles + within) * kRows;
    }
    if (lane < kRows) RowLookup(p, g, sel_first, j + lane, je, qpos, r);
    return true;
  }
  // The tile's attended rows as a warp bitmask; `off` gets this lane's row
  // offset into the pages.
  __device__ __forceinline__ uint32_t Resolve(const PagedAttentionParams& p, const RowIdx& r, int64_t& off) const {
    const bool valid = lane < kRows && RowResolve<D>(p, g, r, off);
    return __ballot_sync(0xffffffffu, valid);
  }

  int g, warp, lane, js, je, qpos, sel_first;
  int* next;
  int count = 0;  // static: tiles of this warp
  int chunks = 0, fixed = 0, chunk = 0, grabbed = 0;  // dynamic

 private:
  // Takes the warp's next chunk (lane 0's atomic, read a chunk later).
  __device__ __forceinline__ void Grab() {
    if (lane == 0) grabbed = atomicAdd(next, 1);
  }
};

// A split block's merge unit: the (query token, KV head, head tile) whose
// splits it shares a workspace region with. One
// sequence's launch: token t = blockIdx.z, units over the whole grid. A
// batched decode launch: one token per sequence (blockIdx.z), each sequence
// with its own workspace region, so units count one
// sequence's (KV head, head tile) pairs.
struct SplitUnit {
  int t;          // query token (row of q and out)
  int64_t index;  // this block's unit
  int64_t count;  // units sharing the workspace region
};

// The heads of a split or merge block's grid row (blockIdx.y: KV head x
// head tile): KV head g and query heads h0 .. h0 + nh of its group.
struct HeadTile {
  int g, h0, nh;
};
template <int GB>
__device__ __forceinline__ HeadTile HeadTileOf(const PagedAttentionParams& p) {
  const int group = p.num_heads / p.num_kv_heads;
  const int tiles = (group + GB - 1) / GB;
  const int g = static_cast<int>(blockIdx.y) / tiles, z = static_cast<int>(blockIdx.y) % tiles;
  return HeadTile{g, g * group + z * GB, min(GB, group - z * GB)};
}

// Workspace layout: the partial outputs [units][splits][GB][D] first
// (16-byte aligned rows), then (max, sum) pairs [units][splits][GB][2].
__device__ __forceinline__ float* SplitAcc(const PagedAttentionParams& p, const SplitUnit& u, int split, int gb,
                                           int d) {
  return p.workspace + (u.index * p.num_splits + split) * gb * d;
}
__device__ __forceinline__ float* SplitMl(const PagedAttentionParams& p, const SplitUnit& u, int split, int gb,
                                          int d) {
  return p.workspace + u.count * p.num_splits * gb * d + (u.index * p.num_splits + split) * gb * 2;
}

// With p.dynamic_splits: the unit's chunk counter (zero between launches;
// MergeSplitsKernel resets it).
__device__ __forceinline__ int* DynamicCounter(const PagedAttentionParams& p, const SplitUnit& u) {
  return p.dynamic_splits ? p.counters + u.index : nullptr;
}

// Writes four output dims of head h0 + h (query token t).
template <typename T, int D>
__device__ __forceinline__ void Store4(const PagedAttentionParams& p, int t, int h0, int h, int d4, float4 o) {
  T* out = static_cast<T*>(p.out) + (static_cast<int64_t>(t) * p.num_heads + h0 + h) * D + d4 * 4;
  out[0] = To<T>(o.x);
  out[1] = To<T>(o.y);
  out[2] = To<T>(o.z);
  out[3] = To<T>(o.w);
}

// MergeSplitsKernel: one block per (query head, unit). kMergeThreads
// threads own four dims each of the head's D (kMergeItems float4s) in
// kMergeGroups groups that take every kMergeGroups-th split, so each
// thread merges few splits and their loads are in flight at once. Measured
// on an H100 (dense batch 1, % of copy, MHA 32K / 128K, GQA 32/8 32K):
// 128 threads 98.8-99.0 / 101.1-101.3 / 86.9-87.0; 256 threads 97.0-97.2 /
// 99.5-100.1 / 87.0-87.1 (wider merge blocks cost MHA's streaming, as in
// session 16; why was not found); one block per unit instead of per head,
// 128-256 threads, 98.7-99.0 / 101.1-101.6 / 85.4-85.7.
constexpr int kMergeThreads = 128;
template <int D>
inline constexpr int kMergeItems = D / 4;
template <int D>
inline constexpr int kMergeGroups = kMergeThreads / kMergeItems<D>;
static_assert(kMergeThreads % kMergeItems<256> == 0, "whole groups of the largest head_dim");

// A running merge of split partials: the largest max (log2 units), the sum
// and four output dims, scaled to that max.
struct MergeState {
  float m = -INFINITY, l = 0.0f;
  float4 o = make_float4(0.0f, 0.0f, 0.0f, 0.0f);
  // Adds n partials (max y.x, sum y.y, dims x); those with sum 0 attended
  // nothing. The batch's max first, so the exponentials do not chain.
  template <int n>
  __device__ __forceinline__ void Add(const float2 (&y)[n], const float4 (&x)[n]) {
    float mn = m;
#pragma unroll
    for (int k = 0; k < n; ++k) {
      if (y[k].y > 0.0f) mn = fmaxf(mn, y[k].x);
    }
    if (mn == -INFINITY) return;
    const float a = exp2f(m - mn);  // 0 while nothing was added
    l *= a;
    o = make_float4(o.x * a, o.y * a, o.z * a, o.w * a);
#pragma unroll
    for (int k = 0; k < n; ++k) {
      const float b = y[k].y > 0.0f ? exp2f(y[k].x - mn) : 0.0f;
      l += y[k].y * b;
      o = make_float4(o.x + x[k].x * b, o.y + x[k].y * b, o.z + x[k].z * b, o.w + x[k].w * b);
    }
    m = mn;
  }
};

// Merges the num_splits partial results of head h0 + h of `unit`
// (workspace) into the output; every thread of MergeSplitsKernel's block
// calls it. Partials of splits that attended nothing have sum 0 and add
// nothing. Short on purpose: the merge is on the critical path of every
// split decode call. Written as a weights pass between shared-memory
// barriers (a block per unit, 16 splits' loads unrolled), it ran ~2.8 us
// longer than an empty merge kernel on an H100 (ncu); this form ~1.5 us
// (tools/bench/RESULTS.md, session 17).
template <typename T, int D, int GB>
__device__ void MergeSplits(const PagedAttentionParams& p, const SplitUnit& u, int h0, int h) {
  constexpr int kItems = kMergeItems<D>, kGroups = kMergeGroups<D>;
  constexpr int kUnroll = 8;
  __shared__ float4 s_o[kMergeThreads];
  __shared__ float2 s_ml[kMergeThreads];
  const int splits = p.num_splits, t = u.t;
  const int grp = threadIdx.x / kItems, d4 = threadIdx.x % kItems;
  const float4* acc = reinterpret_cast<const float4*>(SplitAcc(p, u, 0, GB, D)) + h * kItems + d4;
  const float2* ml = reinterpret_cast<const float2*>(SplitMl(p, u, 0, GB, D)) + h;
  MergeState st;
  for (int s0 = grp; s0 < splits; s0 += kUnroll * kGroups) {
    float2 y[kUnroll];
    float4 x[kUnroll];
#pragma unroll
    for (int k = 0; k < kUnroll; ++k) {
      const int s = s0 + k * kGroups;
      y[k] = s < splits ? __ldcg(ml + s * GB) : make_float2(0.0f, 0.0f);
      x[k] = s < splits ? __ldcg(acc + s * GB * kItems) : make_float4(0.0f, 0.0f, 0.0f, 0.0f);
    }
    st.Add(y, x);
  }
  s_o[threadIdx.x] = st.o;
  s_ml[threadIdx.x] = make_float2(st.m, st.l);
  __syncthreads();
  if (grp != 0) return;
  float2 y[kGroups];
  float4 x[kGroups];
#pragma unroll
  for (int g = 0; g < kGroups; ++g) {
    y[g] = s_ml[g * kItems + d4];
    x[g] = s_o[g * kItems + d4];
  }
  MergeState all;
  all.Add(y, x);
  const float inv = all.l > 0.0f ? 1.0f / all.l : 0.0f;
  Store4<T, D>(p, t, h0, h, d4, make_float4(all.o.x * inv, all.o.y * inv, all.o.z * inv, all.o.w * inv));
  if (d4 == 0 && p.lse != nullptr) {
    p.lse[static_cast<int64_t>(t) * p.num_heads + h0 + h] = all.l > 0.0f ? (all.m + log2f(all.l)) * kLn2 : -INFINITY;
  }
}

// The block's end: combines the warps' states (wm, wl, wacc in shared
// memory, [warps][GB](D)) and writes the output (one split) or the split's
// partial result (MergeSplitsKernel merges those). Every thread first
// reads all heads' warp maxima and sums at once (independent loads) and
// derives each warp's weight per head, so the item loop's rounds only read
// wacc; in a loop that derived them per item, the tensor-core kernel's end
// (GB 4: four items a thread) took ~1.7 us per block against ~0.55 for
// GB 1 (H100, %globaltimer trace, session 18), on the critical path of
// every split decode call.
template <typename T, int D, int GB>
__device__ void FinishSplit(const PagedAttentionParams& p, unsigned char* smem, const SplitUnit& u, int h0,
                            int nh, int split) {
  const int t = u.t;
  const float* wm = reinterpret_cast<const float*>(smem);
  const float* wl = wm + kSplitWarps * GB;
  const float* wacc = wl + kSplitWarps * GB;
  float big[GB], total[GB], weight[GB][kSplitWarps];
#pragma unroll
  for (int h = 0; h < GB; ++h) {
    float m[kSplitWarps], l[kSplitWarps];
    big[h] = -INFINITY;
#pragma unroll
    for (int w = 0; w < kSplitWarps; ++w) {
      m[w] = wm[w * GB + h];
      l[w] = wl[w * GB + h];
      if (l[w] > 0.0f) big[h] = fmaxf(big[h], m[w]);
    }
    total[h] = 0.0f;
#pragma unroll
    for (int w = 0; w < kSplitWarps; ++w) {
      // Warps that attended nothing (sum 0) are left out: weight -1.
      weight[h][w] = l[w] > 0.0f ? exp2f(m[w] - big[h]) : -1.0f;
      if (l[w] > 0.0f) total[h] += l[w] * weight[h][w];
    }
  }
  const bool single = p.num_splits == 1;
  float* ws_ml = single ? nullptr : SplitMl(p, u, split, GB, D);
  float* ws_acc = single ? nullptr : SplitAcc(p, u, split, GB, D);
  for (int idx = threadIdx.x; idx < nh * D; idx += blockDim.x) {
    const int h = idx / D, d = idx % D;
    float o = 0.0f, tot = 0.0f, mx = 0.0f;
    // Head h's values are picked by unrolled compares: indexing the
    // register arrays with a run-time h would put them in local memory.
#pragma unroll
    for (int hh = 0; hh < GB; ++hh) {
      if (hh != h) continue;
      tot = total[hh];
      mx = big[hh];
#pragma unroll
      for (int w = 0; w < kSplitWarps; ++w) {
        if (!(weight[hh][w] < 0.0f)) o += wacc[(w * GB + hh) * D + d] * weight[hh][w];
      }
    }
    if (single) {
      static_cast<T*>(p.out)[(static_cast<int64_t>(t) * p.num_heads + h0 + h) * D + d] =
          To<T>(tot > 0.0f ? o / tot : 0.0f);
      if (d == 0 && p.lse != nullptr) {
        p.lse[static_cast<int64_t>(t) * p.num_heads + h0 + h] = tot > 0.0f ? (mx + log2f(tot)) * kLn2 : -INFINITY;
      }
    } else {
      ws_acc[h * D + d] = o;
      if (d == 0) {
        ws_ml[h * 2] = tot > 0.0f ? mx : 0.0f;
        ws_ml[h * 2 + 1] = tot;
      }
    }
  }
  // Several splits: MergeSplitsKernel, launched next, merges them.
}


// Where a split block works: KV head g, query heads h0 .. h0 + nh of its
// group (HeadTileOf), and candidates [js, je) of the query at position
// qpos (split blockIdx.x).
struct SplitPlace {
  int g, h0, nh;
  int64_t qpos, js, je;
};
template <int GB>
__device__ __forceinline__ SplitPlace PlaceSplit(const PagedAttentionParams& p, const SplitUnit& u) {
  const HeadTile heads = HeadTileOf<GB>(p);
  SplitPlace at;
  at.g = heads.g;
  at.h0 = heads.h0;
  at.nh = heads.nh;
  at.qpos = p.kv_len - p.n + u.t;
  const int64_t count = SplitCandidates(p, at.g, at.qpos);
  // Dynamic splits take chunks of the whole list (WarpTiles).
  at.js = p.dynamic_splits ? 0 : static_cast<int64_t>(blockIdx.x) * p.split_len;
  at.je = p.dynamic_splits ? count : min(at.js + p.split_len, count);
  return at;
}

template <typename T, int D, int GB>
__device__ __forceinline__ void SplitKvBlock(const PagedAttentionParams& p, const SplitUnit& u) {
  using Geo = SplitGeo<D>;
  constexpr int kTpr = Geo::kTpr, kRps = Geo::kRps, kRows = Geo::kRows;
  extern __shared__ __align__(16) unsigned char smem[];
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int rg = lane / kTpr, tx = lane % kTpr;
  const SplitPlace at = PlaceSplit<GB>(p, u);
  const int g = at.g, h0 = at.h0, nh = at.nh, t = u.t, split = blockIdx.x;
  const int64_t qpos = at.qpos, js = at.js, je = at.je;

  // The query's loads are issued here but unpacked only once the
  // pipeline's prologue is issued (StreamTiles' ready()): unpacking here
  // would wait for them before the first index look-up is even issued.
  uint4 qraw[GB];
  {
    const T* qr = static_cast<const T*>(p.q) + (static_cast<int64_t>(t) * p.num_heads + h0) * D + tx * 8;
#pragma unroll
    for (int h = 0; h < GB; ++h) {
      qraw[h] = h < nh ? *reinterpret_cast<const uint4*>(qr + h * D) : make_uint4(0u, 0u, 0u, 0u);
    }
  }
  float q[GB][8];
  auto unpack_q = [&]() {
    const float qs = p.scale * kLog2e;
#pragma unroll
    for (int h = 0; h < GB; ++h) {
      Unpack8<T>(qraw[h], q[h]);
#pragma unroll
      for (int e = 0; e < 8; ++e) q[h][e] *= qs;
    }
  };
  float m[GB], l[GB], acc[GB][8];
#pragma unroll
  for (int h = 0; h < GB; ++h) {
    m[h] = -INFINITY;
    l[h] = 0.0f;
#pragma unroll
    for (int e = 0; e < 8; ++e) acc[h][e] = 0.0f;
  }

  T* pipe = reinterpret_cast<T*>(smem) + static_cast<size_t>(warp) * kStages * 2 * kRows * D;
  uint32_t* smask = reinterpret_cast<uint32_t*>(smem + kPipeElems * sizeof(T)) + warp * kStages;
  WarpTiles<kRows, D> walk(p, g, js, je, qpos, warp, lane, DynamicCounter(p, u));
  const T* kbase = static_cast<const T*>(p.k_pages);
  const T* vbase = static_cast<const T*>(p.v_pages);

  auto lookup = [&](int it, RowIdx& r) { return walk.Lookup(p, it, r); };
  // K and V are read once per decode step: CpAsync16ReadOnce (ptx.cuh).
  auto copy = [&](const RowIdx& r, int stage) {
    int64_t off = 0;
    const uint32_t mask = walk.Resolve(p, r, off);
    if (lane == 0) smask[stage] = mask;
    T* sk = pipe + stage * 2 * kRows * D;
    T* sv = sk + kRows * D;
#pragma unroll
    for (int k = 0; k < kRowsPerThread; ++k) {
      const int row = k * kRps + rg;
      const int64_t roff = __shfl_sync(0xffffffffu, off, row);
      const bool v = (mask >> row) & 1u;
      CpAsync16ReadOnce(sk + row * D + tx * 8, v ? kbase + roff + tx * 8 : kbase, v ? 16 : 0);
      CpAsync16ReadOnce(sv + row * D + tx * 8, v ? vbase + roff + tx * 8 : vbase, v ? 16 : 0);
    }
  };

  StreamTiles<kStages>(lookup, copy, [&](int it, int stage) {
    const T* sk = pipe + stage * 2 * kRows * D;
    const T* sv = sk + kRows * D;
    const uint32_t mask = smask[stage];
    float s[kRowsPerThread][GB];
#pragma unroll
    for (int k = 0; k < kRowsPerThread; ++k) {
      const uint4 u = *reinterpret_cast<const uint4*>(sk + (k * kRps + rg) * D + tx * 8);
      float kf[8];
      Unpack8<T>(u, kf);
#pragma unroll
      for (int h = 0; h < GB; ++h) {
        float a = 0.0f;
#pragma unroll
        for (int e = 0; e < 8; ++e) a = fmaf(q[h][e], kf[e], a);
        s[k][h] = a;
      }
    }
#pragma unroll
    for (int k = 0; k < kRowsPerThread; ++k) {
#pragma unroll
      for (int h = 0; h < GB; ++h) {
#pragma unroll
        for (int o = kTpr / 2; o > 0; o >>= 1) s[k][h] += __shfl_xor_sync(0xffffffffu, s[k][h], o);
      }
      if (((mask >> (k * kRps + rg)) & 1u) == 0) {
#pragma unroll
        for (int h = 0; h < GB; ++h) s[k][h] = -INFINITY;
      }
    }
#pragma unroll
    for (int h = 0; h < GB; ++h) {
      float mx = s[0][h];
#pragma unroll
      for (int k = 1; k < kRowsPerThread; ++k) mx = fmaxf(mx, s[k][h]);
      const float m_new = fmaxf(m[h], mx);
      const float m_use = m_new == -INFINITY ? 0.0f : m_new;
      const float corr = exp2f(m[h] - m_use);
      l[h] *= corr;
#pragma unroll
      for (int e = 0; e < 8; ++e) acc[h][e] *= corr;
      m[h] = m_new;
#pragma unroll
      for (int k = 0; k < kRowsPerThread; ++k) {
        s[k][h] = exp2f(s[k][h] - m_use);
        l[h] += s[k][h];
      }
    }
#pragma unroll
    for (int k = 0; k < kRowsPerThread; ++k) {
      const uint4 u = *reinterpret_cast<const uint4*>(sv + (k * kRps + rg) * D + tx * 8);
      float vf[8];
      Unpack8<T>(u, vf);
#pragma unroll
      for (int h = 0; h < GB; ++h) {
#pragma unroll
        for (int e = 0; e < 8; ++e) acc[h][e] = fmaf(s[k][h], vf[e], acc[h][e]);
      }
    }
  }, unpack_q);

  // Merge the warp's row groups (lanes tx, tx + kTpr, ...).
#pragma unroll
  for (int o = kTpr; o < 32; o <<= 1) {
#pragma unroll
    for (int h = 0; h < GB; ++h) {
      const float mo = __shfl_xor_sync(0xffffffffu, m[h], o);
      const float lo = __shfl_xor_sync(0xffffffffu, l[h], o);
      const float big = fmaxf(m[h], mo);
      const float bu = big == -INFINITY ? 0.0f : big;
      const float a = exp2f(m[h] - bu), b = exp2f(mo - bu);
      l[h] = l[h] * a + lo * b;
#pragma unroll
      for (int e = 0; e < 8; ++e) {
        const float ao = __shfl_xor_sync(0xffffffffu, acc[h][e], o);
        acc[h][e] = acc[h][e] * a + ao * b;
      }
      m[h] = big;
    }
  }
  __syncthreads();  // every warp is done with its pipeline: reuse it
  float* wm = reinterpret_cast<float*>(smem);  // [warps][GB]
  float* wl = wm + kSplitWarps * GB;           // [warps][GB]
  float* wacc = wl + kSplitWarps * GB;         // [warps][GB][D]
  if (rg == 0) {
#pragma unroll
    for (int h = 0; h < GB; ++h) {
      if (tx == 0) {
        wm[warp * GB + h] = m[h];
        wl[warp * GB + h] = l[h];
      }
      float4* dst = reinterpret_cast<float4*>(wacc + (warp * GB + h) * D + tx * 8);
      dst[0] = make_float4(acc[h][0], acc[h][1], acc[h][2], acc[h][3]);
      dst[1] = make_float4(acc[h][4], acc[h][5], acc[h][6], acc[h][7]);
    }
  }
  __syncthreads();

  FinishSplit<T, D, GB>(p, smem, u, h0, nh, split);
}

// ---------------------------------------------------------------------------
// The same split block on tensor cores, for head groups of 4-8 (GB 4 or 8)
// and head_dim 64 or 128, where the CUDA-core loop above runs out of issue
// slots: per warp tile of 16 keys, S = Q K^T (heads padded to 16 rows) and
// O += P V with mma.sync m16n8k16 (float32 accumulation; P rounded to the
// storage type, as flash attention does). Tiles are stored with their
// 16-byte chunks XOR-swizzled by row so ldmatrix reads are conflict-free.

// Groups of 4-8 query heads per block (head_dim <= 128) run on tensor
// cores; 1-2 heads (and head_dim 256) on CUDA cores, which keep up there.
template <int D, int GB>
inline constexpr bool kUseMma = D <= 128 && GB >= 4;

constexpr int kMmaKeys = 16;
constexpr int kMmaStages = 3;

template <int D>
__host__ __device__ constexpr size_t MmaPipeElems() {
  return static_cast<size_t>(kSplitWarps) * kMmaStages * 2 * kMmaKeys * D;
}
template <int D>
__host__ __device__ constexpr size_t MmaSmem() {
  const size_t pipe = MmaPipeElems<D>() * 2 + sizeof(uint32_t) * kSplitWarps * kMmaStages;
  const size_t states = sizeof(float) * kSplitWarps * 8 * (D + 2);  // the warps' combined states
  return pipe > states ? pipe : states;
}

// Rows 0-7 of A only (rows 8-15 zero): the group's <= 8 query heads.
template <typename T>
__device__ __forceinline__ void MmaTopRows(float (&c)[4], uint32_t a0, uint32_t a2, uint32_t b0, uint32_t b1) {
  const uint32_t a[4] = {a0, 0u, a2, 0u};
  Mma16816<T>(c, a, b0, b1);
}

template <typename T>
__device__ __forceinline__ uint32_t Pack2(float lo, float hi);
template <>
__device__ __forceinline__ uint32_t Pack2<__nv_bfloat16>(float lo, float hi) {
  const __nv_bfloat162 v = __floats2bfloat162_rn(lo, hi);
  uint32_t u;
  memcpy(&u, &v, 4);
  return u;
}
template <>
__device__ __forceinline__ uint32_t Pack2<__half>(float lo, float hi) {
  const __half2 v = __floats2half2_rn(lo, hi);
  uint32_t u;
  memcpy(&u, &v, 4);
  return u;
}

// Element offset of chunk c (8 elements) of row r in a swizzled tile.
template <int D>
__device__ __forceinline__ int Swz(int r, int c) {
  return r * D + ((c ^ (r & 7)) << 3);
}

template <typename T, int D, int GB>
__device__ __forceinline__ void SplitKvMmaBlock(const PagedAttentionParams& p, const SplitUnit& u) {
  static_assert(kUseMma<D, GB> && (D == 64 || D == 128), "mma split block");
  constexpr int kChunks = D / 8;
  extern __shared__ __align__(16) unsigned char smem[];
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int gid = lane >> 2, tig = lane & 3;
  const SplitPlace at = PlaceSplit<GB>(p, u);
  const int g = at.g, h0 = at.h0, nh = at.nh, t = u.t, split = blockIdx.x;
  const int64_t qpos = at.qpos, js = at.js, je = at.je;
  const float qs = p.scale * kLog2e;

  // Q as the A operand (row gid = head gid; rows 8-15 are zero padding).
  uint32_t qa[D / 16][2];
  {
    const T* qr = static_cast<const T*>(p.q) + (static_cast<int64_t>(t) * p.num_heads + h0 + gid) * D;
#pragma unroll
    for (int kk = 0; kk < D / 16; ++kk) {
      qa[kk][0] = gid < nh ? *reinterpret_cast<const uint32_t*>(qr + kk * 16 + tig * 2) : 0u;
      qa[kk][1] = gid < nh ? *reinterpret_cast<const uint32_t*>(qr + kk * 16 + 8 + tig * 2) : 0u;
    }
  }
  // O is accumulated transposed, O^T += V^T P^T (the dims as the 16 rows,
  // the 8 heads as columns): no padded rows, so half the accumulator
  // registers and half the P.V mma of O = P V with the heads padded to 16
  // rows. o[dj] holds O(heads tig * 2 + {0, 1}, dims dj * 16 + gid + {0, 8}).
  float o[D / 16][4];
#pragma unroll
  for (int j = 0; j < D / 16; ++j) o[j][0] = o[j][1] = o[j][2] = o[j][3] = 0.0f;
  float m = -INFINITY, l = 0.0f;  // head gid; l is this thread's share until the end

  T* pipe = reinterpret_cast<T*>(smem) + static_cast<size_t>(warp) * kMmaStages * 2 * kMmaKeys * D;
  uint32_t* smask = reinterpret_cast<uint32_t*>(smem + MmaPipeElems<D>() * sizeof(T)) + warp * kMmaStages;
  WarpTiles<kMmaKeys, D> walk(p, g, js, je, qpos, warp, lane, DynamicCounter(p, u));
  const T* kbase = static_cast<const T*>(p.k_pages);
  const T* vbase = static_cast<const T*>(p.v_pages);

  auto lookup = [&](int it, RowIdx& r) { return walk.Lookup(p, it, r); };
  auto copy = [&](const RowIdx& r, int stage) {
    int64_t off = 0;
    const uint32_t mask = walk.Resolve(p, r, off);
    if (lane == 0) smask[stage] = mask;
    T* sk = pipe + stage * 2 * kMmaKeys * D;
    T* sv = sk + kMmaKeys * D;
#pragma unroll
    for (int i = 0; i < kMmaKeys * kChunks / 32; ++i) {
      const int idx = i * 32 + lane;
      const int key = idx / kChunks, c = idx % kChunks;
      const int64_t roff = __shfl_sync(0xffffffffu, off, key);
      const bool v = (mask >> key) & 1u;
      CpAsync16ReadOnce(sk + Swz<D>(key, c), v ? kbase + roff + c * 8 : kbase, v ? 16 : 0);
      CpAsync16ReadOnce(sv + Swz<D>(key, c), v ? vbase + roff + c * 8 : vbase, v ? 16 : 0);
    }
  };

  StreamTiles<kMmaStages>(lookup, copy, [&](int it, int stage) {
    const T* sk = pipe + stage * 2 * kMmaKeys * D;
    const T* sv = sk + kMmaKeys * D;
    const uint32_t mask = smask[stage];

    // S^(head gid, keys nt * 8 + tig * 2 + {0, 1}) in s[nt][0..1].
    float s[2][4] = {{0.0f, 0.0f, 0.0f, 0.0f}, {0.0f, 0.0f, 0.0f, 0.0f}};
#pragma unroll
    for (int nt = 0; nt < 2; ++nt) {
#pragma unroll
      for (int k2 = 0; k2 < D / 32; ++k2) {
        uint32_t b[4];
        const int key = nt * 8 + (lane & 7);
        LdMatrixX4(b, sk + Swz<D>(key, k2 * 4 + (lane >> 3)));
        MmaTopRows<T>(s[nt], qa[2 * k2][0], qa[2 * k2][1], b[0], b[1]);
        MmaTopRows<T>(s[nt], qa[2 * k2 + 1][0], qa[2 * k2 + 1][1], b[2], b[3]);
      }
    }
    float mx = -INFINITY;
#pragma unroll
    for (int nt = 0; nt < 2; ++nt) {
#pragma unroll
      for (int e = 0; e < 2; ++e) {
        const int key = nt * 8 + tig * 2 + e;
        s[nt][e] = ((mask >> key) & 1u) ? s[nt][e] * qs : -INFINITY;
        mx = fmaxf(mx, s[nt][e]);
      }
    }
    mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 1));
    mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 2));
    const float m_new = fmaxf(m, mx);
    const float m_use = m_new == -INFINITY ? 0.0f : m_new;
    const float corr = exp2f(m - m_use);
    m = m_new;
    l *= corr;
    // This thread's O columns are heads tig * 2 + {0, 1}: their factors
    // come from lanes head * 4 (row gid = head).
    const float corr0 = __shfl_sync(0xffffffffu, corr, tig * 8);
    const float corr1 = __shfl_sync(0xffffffffu, corr, tig * 8 + 4);
#pragma unroll
    for (int j = 0; j < D / 16; ++j) {
      o[j][0] *= corr0;
      o[j][1] *= corr1;
      o[j][2] *= corr0;
      o[j][3] *= corr1;
    }
    float pr[2][2];
#pragma unroll
    for (int nt = 0; nt < 2; ++nt) {
#pragma unroll
      for (int e = 0; e < 2; ++e) {
        pr[nt][e] = exp2f(s[nt][e] - m_use);
        l += pr[nt][e];
      }
    }
    // P^T as the B operand: b0 = P(head gid, keys tig * 2 + {0, 1}), b1 the
    // same 8 keys on, which is exactly this thread's probabilities.
    const uint32_t pb0 = Pack2<T>(pr[0][0], pr[0][1]);
    const uint32_t pb1 = Pack2<T>(pr[1][0], pr[1][1]);
#pragma unroll
    for (int dj = 0; dj < D / 16; ++dj) {
      // V^T (16 dims x 16 keys) as the A operand: matrix i = lane / 8 of the
      // x4 load is keys (i / 2) * 8 .. + 8 by dims dj * 16 + (i % 2) * 8 ..
      // + 8, transposed by ldmatrix.
      uint32_t a[4];
      const int key = (lane & 7) + ((lane >> 4) & 1) * 8;
      LdMatrixX4Trans(a, sv + Swz<D>(key, dj * 2 + ((lane >> 3) & 1)));
      Mma16816<T>(o[dj], a, pb0, pb1);
    }
  }, [] {});
  l += __shfl_xor_sync(0xffffffffu, l, 1);
  l += __shfl_xor_sync(0xffffffffu, l, 2);

  __syncthreads();  // every warp is done with its pipeline: reuse it
  float* wm = reinterpret_cast<float*>(smem);  // [warps][GB]
  float* wl = wm + kSplitWarps * GB;           // [warps][GB]
  float* wacc = wl + kSplitWarps * GB;         // [warps][GB][D]
  if (gid < GB && tig == 0) {
    wm[warp * GB + gid] = m;
    wl[warp * GB + gid] = l;
  }
#pragma unroll
  for (int e = 0; e < 2; ++e) {
    const int h = tig * 2 + e;
    if (h < GB) {
#pragma unroll
      for (int j = 0; j < D / 16; ++j) {
        wacc[(warp * GB + h) * D + j * 16 + gid] = o[j][e];
        wacc[(warp * GB + h) * D + j * 16 + gid + 8] = o[j][e + 2];
      }
    }
  }
  __syncthreads();
  FinishSplit<T, D, GB>(p, smem, u, h0, nh, split);
}

// ---------------------------------------------------------------------------
// The split kernels. One sequence: grid (split, KV head x head tile, query
// token). A batched decode launch (p.batch): grid (split, KV head x head
// tile, sequence), one query token per sequence; a block binds its
// sequence's fields into a copy of p, and blocks past that sequence's own
// split count (the grid is sized by the batch's most) leave at once.
// False for split blocks past the sequence's splits.
__device__ __forceinline__ bool BindSequence(PagedAttentionParams& p, int split) {
  const DecodeSequence& s = p.batch[blockIdx.z];
  if (split >= s.num_splits) return false;
  p.q = s.q;
  p.out = s.out;
  p.page_table = s.page_table;
  p.chunks = s.chunks;
  p.chunks_per_head = s.chunks_per_head;
  p.kv_len = s.kv_len;
  p.num_splits = s.num_splits;
  p.split_len = s.split_len;
  p.workspace = p.workspace + s.workspace_offset;
  return true;
}

// Calls block(params, unit) for this block's unit of a one-sequence or a
// batched launch; a batched one binds sequence blockIdx.z into a copy of p
// first, and calls nothing where `split` is past that sequence's splits.
template <bool kBatch, typename Block>
__device__ __forceinline__ void ForUnit(const PagedAttentionParams& p, int split, Block&& block) {
  if constexpr (kBatch) {
    PagedAttentionParams s = p;
    if (BindSequence(s, split)) block(s, SplitUnit{0, blockIdx.y, gridDim.y});
  } else {
    block(p, SplitUnit{static_cast<int>(blockIdx.z), static_cast<int64_t>(blockIdx.z) * gridDim.y + blockIdx.y,
                       static_cast<int64_t>(gridDim.y) * gridDim.z});
  }
}

// With p.prefetch_first_tiles (a launch of short splits, see
// split_plan.h; a batched launch's block first binds its sequence): before
// the block waits for the previous grid, its threads ask L2 for the K and
// V rows of the block's first tiles. A hint only: what it reads decides
// which lines to ask for, never what the block computes, and L2 is where
// every SM's writes meet, so a line the previous grid writes later stays
// coherent.
//  - Dense: one tile per warp of a static split, a dynamic split's first
//    chunk per warp. The page table is uploaded by the host in stream
//    order, so it is final here. The wait otherwise leaves DRAM idle while
//    the previous kernel (a decode loop's last merge) ends.
//  - A selection: the pipeline's prologue (kPrologueTiles per warp),
//    through whatever the selection holds before the wait. A device table
//    (SelectTopPages') is then still being computed by the select launched
//    just before, its blocks resident during that select's top-k: the
//    table holds the previous selection written there (QuestPolicy keeps
//    one per layer, so the layer's previous step's), which mostly overlaps
//    the new one. Those reads bypass L1 (ld.global.cg), so that no stale
//    line is left for the reads after the wait, and any position they give
//    is checked against the sequence before the page table is read.
// The look-up below repeats what RowLookup / RowResolve and WarpTiles'
// sel_first compute, on purpose: written through them (RowLookup with an
// ld.global.cg chunk read, a RowIdx, 32-bit positions), the H100 measured
// the Quest step slower (attention_bench fp8, three runs each, MHA 32K
// B=2048 6.08-6.11x -> 6.01-6.02x, GQA 32/8 128K B=2048 5.71-5.76x ->
// 5.56-5.58x; session 20).
template <typename T, int D, int GB, int kRows, int kChunkTiles, int kPrologueTiles>
__device__ __forceinline__ void IssueFirstTilePrefetch(const PagedAttentionParams& p) {
  // A batched launch (bound to its sequence): one query token per sequence.
  const int t = p.batch != nullptr ? 0 : static_cast<int>(blockIdx.z);
  const SplitPlace at = PlaceSplit<GB>(p, SplitUnit{t, 0, 0});
  const int tiles = p.dynamic_splits ? kChunkTiles : p.chunks != nullptr ? kPrologueTiles : 1;
  const int per_warp = tiles * kRows;
  // The block's first tiles are contiguous: static warps take its tiles in
  // turn from js; dynamic ones start at chunk blockIdx.x * kSplitWarps + warp.
  const int64_t first = p.dynamic_splits ? static_cast<int64_t>(blockIdx.x) * kSplitWarps * per_warp : at.js;
  const int64_t end = min(first + kSplitWarps * per_warp, at.je);
  const int64_t sel_first =
      p.chunks == nullptr ? 0 : p.indptr != nullptr ? p.indptr[at.g] : static_cast<int64_t>(at.g) * p.chunks_per_head;
  constexpr int kLines = D * static_cast<int>(sizeof(T)) / 128;  // 128-byte lines of a row
  const T* kb = static_cast<const T*>(p.k_pages);
  const T* vb = static_cast<const T*>(p.v_pages);
  for (int64_t i = first * kLines + threadIdx.x; i < end * kLines; i += blockDim.x) {
    const int64_t j = i / kLines;
    const int64_t pos = p.chunks == nullptr
                            ? j
                            : static_cast<int64_t>(__ldcg(p.chunks + sel_first + j / p.chunk)) * p.chunk + j % p.chunk;
    if (pos < 0 || pos >= p.kv_len) continue;
    const int phys = p.page_table[pos / p.page_size];
    if (phys < 0) continue;
    const int64_t off = ((static_cast<int64_t>(phys) * p.page_size + pos % p.page_size) * p.num_kv_heads + at.g) * D +
                        (i % kLines) * (128 / static_cast<int>(sizeof(T)));
    PrefetchL2(kb + off);
    PrefetchL2(vb + off);
  }
}

// Runs `block` (a split block function) for this block's place in a
// one-sequence or a batched launch, `prefetch` first where the launch asks
// for it (IssueFirstTilePrefetch).
// With p.ready a block waits for its own KV head's selection row instead
// of the previous grid's end, and only before it exits for that end (so
// this grid's end still implies the select's).
template <bool kBatch, int GB, typename Block, typename Prefetch>
__device__ __forceinline__ void RunSplit(const PagedAttentionParams& p, Block&& block, Prefetch&& prefetch) {
  if (p.prefetch_first_tiles) {
    if constexpr (kBatch) {
      // The batch's descriptors are uploaded by the host: final here.
      PagedAttentionParams s = p;
      if (BindSequence(s, static_cast<int>(blockIdx.x))) prefetch(s);
    } else {
      prefetch(p);
    }
  }
  if (p.ready != nullptr) {
    WaitForRow(p.ready, p.ready_epoch, HeadTileOf<GB>(p).g);
  } else {
    WaitPreviousGrid();
  }
  ForUnit<kBatch>(p, static_cast<int>(blockIdx.x), block);
  if (p.ready != nullptr) asm volatile("griddepcontrol.wait;\n" ::: "memory");
}

template <typename T, int D, int GB, bool kBatch>
__global__ void __launch_bounds__(kSplitWarps * 32) SplitKvAttentionKernel(const PagedAttentionParams p) {
  RunSplit<kBatch, GB>(
      p, [](const PagedAttentionParams& q, const SplitUnit& u) { SplitKvBlock<T, D, GB>(q, u); },
      [](const PagedAttentionParams& q) {
        IssueFirstTilePrefetch<T, D, GB, SplitGeo<D>::kRows, WarpTiles<SplitGeo<D>::kRows, D>::kChunkTiles,
                               kStages - 1>(q);
      });
}

template <typename T, int D, int GB, bool kBatch>
__global__ void __launch_bounds__(kSplitWarps * 32, 3) SplitKvMmaKernel(const PagedAttentionParams p) {
  RunSplit<kBatch, GB>(
      p, [](const PagedAttentionParams& q, const SplitUnit& u) { SplitKvMmaBlock<T, D, GB>(q, u); },
      [](const PagedAttentionParams& q) {
        IssueFirstTilePrefetch<T, D, GB, kMmaKeys, WarpTiles<kMmaKeys, D>::kChunkTiles, kMmaStages - 1>(q);
      });
}

// Merges the splits of one query head of a unit per block (grid (GB, the
// split launch's y, z); blocks past the unit's heads leave), after the
// split launch it follows has completed: a separate kernel rather than the
// last split block of each unit. With the merge in the split kernels'
// code, their streaming measured ~8 % slower on an H100 (dense batch 1, %
// of copy: MHA 32K 91.4 -> 99.4 without it, GQA 32K 79.6 -> 89.7, MHA 128K
// 93.5 -> 101.0), even where the merge itself was one store; the arrival's
// fence and atomic alone cost ~1 % (tools/bench/RESULTS.md, sessions
// 16-17). Session 24 found part of why: a merge called out of line with
// the parameters by reference gives the kernel a 224-byte stack frame (the
// parameters, copied to local memory; dense MHA 32K 87 %); inlined, no
// stack, the merge code still takes the CUDA-core kernel from 72 to 92
// registers and dense MHA 32K to ~90 % of copy. A last-block merge in a
// kernel instance of its own for Quest's short lists, a thread-block
// cluster merge over distributed shared memory, merge blocks spinning on
// per-unit arrival counters, and this kernel letting the next launch begin
// before its wait each cost more than they gained: a slower Quest step at
// 32K or 128K, or slower dense decode (RESULTS.md, session 24).
template <typename T, int D, int GB, bool kBatch>
__global__ void __launch_bounds__(kMergeThreads) MergeSplitsKernel(const PagedAttentionParams p) {
  WaitPreviousGrid();
  const HeadTile heads = HeadTileOf<GB>(p);
  const int h = static_cast<int>(blockIdx.x);
  if (h >= heads.nh) return;  // past the group (a padded head tile)
  ForUnit<kBatch>(p, 0, [&](const PagedAttentionParams& q, const SplitUnit& u) {
    if (q.num_splits == 1) return;  // a batched sequence whose one split wrote its output itself
    // Dynamic splits' chunk counter: zero again for the next launch.
    if (q.dynamic_splits && h == 0 && threadIdx.x == 0) *DynamicCounter(q, u) = 0;
    MergeSplits<T, D, GB>(q, u, heads.h0, h);
  });
}

int HeadBlock(int group) { return group == 1 ? 1 : group == 2 ? 2 : group <= 4 ? 4 : 8; }

bool SplitEligible(const PagedAttentionParams& p) {
  if (p.head_dim != 64 && p.head_dim != 128 && p.head_dim != 256) return false;
  auto aligned = [](const void* ptr) { return reinterpret_cast<uintptr_t>(ptr) % 16 == 0; };
  if (!aligned(p.q) || !aligned(p.k_pages) || !aligned(p.v_pages)) return false;
  const int group = p.num_heads / p.num_kv_heads;
  const int64_t ys = static_cast<int64_t>(p.num_kv_heads) * ((group + HeadBlock(group) - 1) / HeadBlock(group));
  return ys <= 65535 && p.n <= 65535;
}

// Calls f(integral_constant D, integral_constant GB) for p's shape.
template <typename F>
void DispatchSplit(const PagedAttentionParams& p, F&& f) {
  const int gb = HeadBlock(p.num_heads / p.num_kv_heads);
  auto by_gb = [&](auto dc) {
    switch (gb) {
      case 1: f(dc, std::integral_constant<int, 1>{}); break;
      case 2: f(dc, std::integral_constant<int, 2>{}); break;
      case 4: f(dc, std::integral_constant<int, 4>{}); break;
      default: f(dc, std::integral_constant<int, 8>{}); break;
    }
  };
  switch (p.head_dim) {
    case 64: by_gb(std::integral_constant<int, 64>{}); break;
    case 128: by_gb(std::integral_constant<int, 128>{}); break;
    default: by_gb(std::integral_constant<int, 256>{}); break;
  }
}

// Resident split blocks on the current device for one kernel (SMs x blocks
// per SM), looked up once per device; the lookup also opts the kernels (one
// sequence's and the batched one) into their shared memory size there.
template <typename T, int D, int GB, bool kMma>
int SplitSlots() {
  constexpr int kMaxDevices = 64;
  static std::mutex mu;
  static int slots[kMaxDevices] = {};
  int dev = 0;
  cudaGetDevice(&dev);
  std::lock_guard<std::mutex> lock(mu);
  int& s = slots[dev >= 0 && dev < kMaxDevices ? dev : 0];
  if (s == 0) {
    const void* kernel;
    const void* batch_kernel;
    int smem;
    if constexpr (kMma) {
      kernel = reinterpret_cast<const void*>(&SplitKvMmaKernel<T, D, GB, false>);
      batch_kernel = reinterpret_cast<const void*>(&SplitKvMmaKernel<T, D, GB, true>);
      smem = static_cast<int>(MmaSmem<D>());
    } else {
      kernel = reinterpret_cast<const void*>(&SplitKvAttentionKernel<T, D, GB, false>);
      batch_kernel = reinterpret_cast<const void*>(&SplitKvAttentionKernel<T, D, GB, true>);
      smem = static_cast<int>(kSplitSmem);
    }
    cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, smem);
    cudaFuncSetAttribute(batch_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, smem);
    int sms = 0, per_sm = 0;
    cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, dev);
    cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, kernel, kSplitWarps * 32, smem);
    s = std::max(1, sms) * std::max(1, per_sm);
  }
  return s;
}

// Candidate keys of a batched sequence's one query (planning's count).
int64_t Candidates(const DecodeSequence& s, int chunk) {
  return s.chunks != nullptr ? static_cast<int64_t>(s.chunks_per_head) * chunk : s.kv_len;
}

// The split geometry of the kernel chosen for p's shape on this device.
SplitGeometry GeometryFor(ElemType type, const PagedAttentionParams& p) {
  SplitGeometry geo;
  DispatchSplit(p, [&](auto dc, auto gbc) {
    constexpr int D = decltype(dc)::value, GB = decltype(gbc)::value;
    int slots = 0;
    QUEST_DISPATCH(type, slots = SplitSlots<T, D, GB, kUseMma<D, GB>>());
    const int64_t rows_per_tile = kUseMma<D, GB> ? kMmaKeys : SplitGeo<D>::kRows;
    const int group = p.num_heads / p.num_kv_heads;
    const int64_t stages = kUseMma<D, GB> ? kMmaStages : kStages;
    geo.slots = slots;
    geo.units = static_cast<int64_t>(p.num_kv_heads) * ((group + GB - 1) / GB);
    geo.round = kSplitWarps * rows_per_tile;
    // Short candidate lists (Quest's selections, short contexts) still
    // split, so that a few KV heads fill the GPU, but each warp keeps the
    // pipeline's prologue full (stages - 1 tiles, all issued at once): a
    // shorter split costs the same latency and adds merge work.
    geo.min_len = geo.round * (stages - 1);
    geo.row_floats = static_cast<int64_t>(GB) * (D + 2);
  });
  return geo;
}

}  // namespace

PagedAttentionPlan PlanPagedAttention(ElemType type, PagedAttentionParams& p) {
  PagedAttentionPlan plan;
  p.num_splits = 1;
  p.split_len = std::max<int64_t>(p.max_candidates, 1);
  p.dynamic_splits = false;
  p.prefetch_first_tiles = false;
  if (p.n == 0 || p.num_heads == 0 || p.batch != nullptr || !SplitEligible(p)) return plan;
  const SplitGeometry geo = GeometryFor(type, p);
  const int64_t units = p.n * geo.units;
  const Splits splits = PlanSplits(geo, units, p.max_candidates);
  p.prefetch_first_tiles = PrefetchFirstTiles(geo, splits);
  if (splits.splits <= 1) return plan;
  p.num_splits = static_cast<int>(splits.splits);
  p.split_len = splits.len;
  p.dynamic_splits = DynamicSplits(geo, splits);
  plan.workspace_floats = static_cast<size_t>(units * splits.splits * geo.row_floats);
  plan.counters = p.dynamic_splits ? static_cast<size_t>(units) : 0;
  return plan;
}

PagedAttentionPlan PlanPagedAttentionBatch(ElemType type, PagedAttentionParams& p, DecodeSequence* seqs,
                                           int count) {
  PagedAttentionPlan plan;
  p.num_splits = 1;
  p.split_len = 0;
  p.dynamic_splits = false;
  p.prefetch_first_tiles = false;
  std::vector<int64_t> candidates(count);
  std::vector<BatchSplit> splits(count);
  for (int i = 0; i < count; ++i) candidates[i] = Candidates(seqs[i], p.chunk);
  SplitGeometry geo;  // units 0: one split each
  if (count > 0 && p.num_heads > 0 && SplitEligible(p)) geo = GeometryFor(type, p);
  int64_t floats = 0;
  p.num_splits = PlanBatchSplits(geo, candidates.data(), count, splits.data(), &floats);
  // One rule for the launch: its longest block list decides (the batch's
  // split length, or an unsplit short sequence's whole list).
  int64_t len = 0;
  for (int i = 0; i < count; ++i) len = std::max(len, splits[i].len);
  p.prefetch_first_tiles = PrefetchFirstTiles(geo, Splits{p.num_splits, len});
  for (int i = 0; i < count; ++i) {
    seqs[i].num_splits = splits[i].splits;
    seqs[i].split_len = splits[i].len;
    seqs[i].workspace_offset = splits[i].workspace_offset;
  }
  plan.workspace_floats = static_cast<size_t>(floats);
  return plan;
}

cudaError_t LaunchPagedAttention(ElemType type, const PagedAttentionParams& p, cudaStream_t stream) {
  const bool batch = p.batch != nullptr;
  if (batch ? p.batch_size == 0 : p.n == 0 || p.num_heads == 0) return cudaSuccess;
  if (p.head_dim > kMaxHeadDim || p.n > 65535) return cudaErrorInvalidValue;
  if (batch && (p.n != 1 || p.batch_size > 65535 || p.indptr != nullptr || p.token_valid != nullptr ||
                p.lse != nullptr || !SplitEligible(p))) {
    return cudaErrorInvalidValue;
  }
  if (SplitEligible(p) && (batch || p.split_len > 0)) {
    if (p.num_splits > 1 && p.workspace == nullptr) return cudaErrorInvalidValue;
    if (p.dynamic_splits && p.counters == nullptr) return cudaErrorInvalidValue;
    if (p.dynamic_splits && (batch || p.num_splits < 2)) return cudaErrorInvalidValue;
    if (p.num_splits < 1 || p.num_splits > kMaxSplits) return cudaErrorInvalidValue;
    cudaError_t err = cudaSuccess;
    DispatchSplit(p, [&](auto dc, auto gbc) {
      constexpr int D = decltype(dc)::value, GB = decltype(gbc)::value;
      const int group = p.num_heads / p.num_kv_heads;
      const dim3 grid(static_cast<unsigned>(p.num_splits),
                      static_cast<unsigned>(p.num_kv_heads * ((group + GB - 1) / GB)),
                      static_cast<unsigned>(batch ? p.batch_size : p.n));
      QUEST_DISPATCH(type, {
        SplitSlots<T, D, GB, kUseMma<D, GB>>();  // sets the shared memory attribute
        const dim3 split_block(kSplitWarps * 32);
        auto launch = [&](auto kernel, dim3 g, dim3 b, size_t smem) {
          err = LaunchMaybePdl(/*pdl=*/true, kernel, g, b, smem, stream, p);
        };
        if constexpr (kUseMma<D, GB>) {
          if (batch) {
            launch(SplitKvMmaKernel<T, D, GB, true>, grid, split_block, MmaSmem<D>());
          } else {
            launch(SplitKvMmaKernel<T, D, GB, false>, grid, split_block, MmaSmem<D>());
          }
        } else {
          if (batch) {
            launch(SplitKvAttentionKernel<T, D, GB, true>, grid, split_block, kSplitSmem);
          } else {
            launch(SplitKvAttentionKernel<T, D, GB, false>, grid, split_block, kSplitSmem);
          }
        }
        if (err == cudaSuccess && p.num_splits > 1) {
          const dim3 merge_grid(GB, grid.y, grid.z), merge_block(kMergeThreads);
          if (batch) {
            launch(MergeSplitsKernel<T, D, GB, true>, merge_grid, merge_block, 0);
          } else {
            launch(MergeSplitsKernel<T, D, GB, false>, merge_grid, merge_block, 0);
          }
        }
      });
      const cudaError_t last = cudaGetLastError();
      if (err == cudaSuccess) err = last;
    });
    return err;
  }
  const dim3 grid(static_cast<unsigned>(p.num_heads), static_cast<unsigned>(p.n));
  QUEST_DISPATCH(type, PagedAttentionKernel<T><<<grid, kAttnWarps * 32, 0, stream>>>(p));
  return cudaGetLastError();
}

cudaError_t LaunchAttentionWeights(ElemType type, const PagedAttentionParams& p,
                                   cudaStream_t stream) {
  if (p.n == 0 || p.num_heads == 0) return cudaSuccess;
  if (p.head_dim > kMaxHeadDim || p.n > 65535 || p.lse == nullptr) return cudaErrorInvalidValue;
  const dim3 grid(static_cast<unsigned>(p.num_heads), static_cast<unsigned>(p.n));
  QUEST_DISPATCH(type, AttentionWeightsKernel<T><<<grid, kAttnWarps * 32, 0, stream>>>(p));
  return cudaGetLastError();
}

}  // namespace quest::ops::cuda
