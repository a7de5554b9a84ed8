#ifndef QUEST_OPS_CUDA_SCORE_PLAN_H_
#define QUEST_OPS_CUDA_SCORE_PLAN_H_

// How much of Quest's page bounds a scoring launch (quest_kernels.cu) asks
// L2 for before it waits for the previous kernel: plain arithmetic, kept
// apart from the CUDA side so it is tested without a GPU.
//
// The scoring CTAs are launched programmatically, so the first wave is
// resident while the kernel before it ends (in a model the RoPE and K/V
// write, or a completed page's bounds update; in attention_bench's loop
// the previous step's merge), with DRAM mostly idle.
// Which side of a dimension's bounds a CTA reads depends on the query,
// which an earlier kernel writes, so the prefetch asks for both sides: with
// one query head per KV head (MHA) half of those bytes are never read.
// Hence two limits:
//  - only the first wave prefetches (a later CTA starts after the wait has
//    passed; its prefetch would only add the unread side's bytes);
//  - the launch asks for at most kScorePrefetchBytes in all, about what
//    DRAM moves during that wait; more delays the reads that count.
// H100, attention_bench, Quest fp8 step vs dense, 85 % step overlap,
// batch 1 (two runs each, binaries alternated in one call, session 20):
//
//   cap                  none     4 MiB    8 MiB    16 MiB
//   MHA 32K B=2048       5.89     5.93-94  5.87     5.77-79
//   MHA 32K B=4096       4.14     4.12-13  4.08     4.04
//   MHA 128K B=2048      13.62-63 13.76-82 13.70-73 13.59-60
//   GQA 32/8 32K B=2048  2.54     2.60-61  2.59-60  2.59-61
//   GQA 32/8 128K B=2048 5.41-42  5.61-65  5.61-63  5.56-57
//
// In another call, every CTA prefetching its whole tile (no cap, every
// wave) read MHA 128K B=2048 12.8x against 13.9x without.

#include <algorithm>
#include <cstdint>

namespace quest::ops::cuda {

inline constexpr int64_t kScorePrefetchBytes = int64_t{4} << 20;
inline constexpr int64_t kPrefetchLineBytes = 128;

struct ScorePrefetch {
  int64_t ctas = 0;   // the launch's first CTAs (in launch order) prefetch
  int64_t lines = 0;  // the first lines of its bound tiles each of them asks for
};

// A launch of `ctas` CTAs, `resident` of which fit on the device at once,
// each scoring tiles of `cta_lines` 128-byte lines in all. `pdl`: launched
// programmatically; without it there is no wait to hide a prefetch in.
inline ScorePrefetch PlanScorePrefetch(bool pdl, int64_t ctas, int64_t resident, int64_t cta_lines) {
  const int64_t first_wave = std::min(ctas, resident);
  if (!pdl || first_wave <= 0 || cta_lines <= 0) return {};
  const int64_t lines = std::min(cta_lines, kScorePrefetchBytes / kPrefetchLineBytes / first_wave);
  return lines > 0 ? ScorePrefetch{first_wave, lines} : ScorePrefetch{};
}

// Tiles of one KV head's bounds each scoring CTA takes, for a launch of
// `tiles` tiles in all (KV heads x tiles per head x queries) of which
// `resident` CTAs fit at once. One, unless `pipelined` (the one-side scorer,
// MHA: it issues a tile's loads before the previous tile's barriers) and
// the tiles exceed one wave: then enough per CTA that the launch is about
// kScoreWaves waves, so each CTA's query and start are paid once for
// several tiles and its loads stay in flight between them.
inline constexpr int64_t kScoreWaves = 2;
inline int64_t ScoreTilesPerCta(int64_t tiles, int64_t resident, bool pipelined) {
  const int64_t slots = resident * kScoreWaves;
  if (!pipelined || slots <= 0 || tiles <= slots) return 1;
  return (tiles + slots - 1) / slots;
}

}  // namespace quest::ops::cuda

#endif  // QUEST_OPS_CUDA_SCORE_PLAN_H_
