#ifndef QUEST_RUNTIME_PAGE_BOUNDS_LAYOUT_H_
#define QUEST_RUNTIME_PAGE_BOUNDS_LAYOUT_H_

// Where Quest's page bounds live in memory: one definition for the CPU
// reference, the CUDA kernels and the Quest policy that allocates them.
// Plain C++17, no CUDA headers (nvcc includes it directly).
//
// A layer's bounds are [tiles, num_kv_heads, head_dim, 2, kBoundsTile]:
// Quest pages in tiles of kBoundsTile; inside a tile, for each KV head and
// dimension, the tile's pages' min (side 0), then their max (side 1).
//
// Why this order: a page's score sum_d max(q_d * min_d, q_d * max_d) needs,
// per dimension, only the row the query's sign picks (q_d < 0: the min,
// q_d > 0: the max). With one dimension's pages side by side, a scorer reads
// just that row, half the bytes where a dimension has one query head (MHA;
// a GQA group's heads usually disagree on the sign and need both rows). A
// tile of 128 pages makes an FP8 row one 128-byte line: on an H100, rows of
// 64 pages scored no faster than reading both sides, so DRAM fetches the
// whole line (tools/bench/RESULTS.md, session 15).

#include <cstdint>

#if defined(__CUDACC__)
#define QUEST_BOUNDS_FN __host__ __device__ inline constexpr
#else
#define QUEST_BOUNDS_FN inline constexpr
#endif

namespace quest {

inline constexpr int64_t kBoundsTile = 128;  // Quest pages per tile

// Tiles holding `pages` Quest pages.
QUEST_BOUNDS_FN int64_t BoundsTiles(int64_t pages) { return (pages + kBoundsTile - 1) / kBoundsTile; }

// Element index of Quest page `page`'s bound at dimension `dim` of KV head
// `head`; side 0 the min, 1 the max.
QUEST_BOUNDS_FN int64_t BoundsIndex(int64_t page, int64_t head, int64_t dim, int side, int64_t num_kv_heads,
                                    int64_t head_dim) {
  return (((page / kBoundsTile * num_kv_heads + head) * head_dim + dim) * 2 + side) * kBoundsTile +
         page % kBoundsTile;
}

// The query coefficients of one dimension, x its query value: a page's
// score is sum_d BoundsMinCoef(x_d) * min_d + BoundsMaxCoef(x_d) * max_d,
// a term only where its coefficient is nonzero (the side a zero one would
// multiply is not read). std::min(x, 0) and std::max(x, 0): NaN stays NaN.
QUEST_BOUNDS_FN float BoundsMinCoef(float x) { return 0.0f < x ? 0.0f : x; }
QUEST_BOUNDS_FN float BoundsMaxCoef(float x) { return x < 0.0f ? 0.0f : x; }

}  // namespace quest

#undef QUEST_BOUNDS_FN

#endif  // QUEST_RUNTIME_PAGE_BOUNDS_LAYOUT_H_
