#include "ops/cuda/score_plan.h"

#include <gtest/gtest.h>

namespace quest::ops::cuda {
namespace {

constexpr int64_t kFp8TileLines = 2 * 128 * 128 / kPrefetchLineBytes;  // head_dim 128, one byte a bound

TEST(ScorePlanTest, OnlyTheFirstWavePrefetches) {
  // MHA 128K: 32 heads x 64 tiles, 4 x 132 resident.
  const ScorePrefetch pf = PlanScorePrefetch(true, 2048, 528, kFp8TileLines);
  EXPECT_EQ(pf.ctas, 528);
  EXPECT_GT(pf.lines, 0);
}

TEST(ScorePlanTest, TheLaunchAsksForAtMostTheCap) {
  for (int64_t ctas : {1, 16, 128, 512, 528, 2048, 100000}) {
    for (int64_t lines : {int64_t{1}, kFp8TileLines, 2 * kFp8TileLines, 8 * kFp8TileLines}) {
      const ScorePrefetch pf = PlanScorePrefetch(true, ctas, 528, lines);
      EXPECT_LE(pf.ctas * pf.lines * kPrefetchLineBytes, kScorePrefetchBytes) << ctas << " CTAs, " << lines;
      EXPECT_LE(pf.lines, lines);
      EXPECT_LE(pf.ctas, ctas);
    }
  }
}

TEST(ScorePlanTest, SmallLaunchesPrefetchWholeTiles) {
  // GQA 32/8 32K: 8 heads x 16 tiles of 32 KB = 4 MB, under the cap.
  const ScorePrefetch pf = PlanScorePrefetch(true, 128, 528, kFp8TileLines);
  EXPECT_EQ(pf.ctas, 128);
  EXPECT_EQ(pf.lines, kFp8TileLines);
}

TEST(ScorePlanTest, LargeFirstWavesShareTheCap) {
  // MHA 32K: 32 heads x 16 tiles, all resident, each with less than its
  // tile (the cap is under 512 x 32 KB).
  const ScorePrefetch pf = PlanScorePrefetch(true, 512, 528, kFp8TileLines);
  EXPECT_EQ(pf.ctas, 512);
  EXPECT_EQ(pf.lines, kScorePrefetchBytes / kPrefetchLineBytes / 512);
  EXPECT_LT(pf.lines, kFp8TileLines);
}

TEST(ScorePlanTest, NothingToPrefetch) {
  EXPECT_EQ(PlanScorePrefetch(true, 0, 528, kFp8TileLines).lines, 0);
  EXPECT_EQ(PlanScorePrefetch(true, 16, 0, kFp8TileLines).ctas, 0);
  EXPECT_EQ(PlanScorePrefetch(true, 16, 528, 0).lines, 0);
  // Without programmatic launch the CTAs do not wait: no window to fill.
  EXPECT_EQ(PlanScorePrefetch(false, 128, 528, kFp8TileLines).ctas, 0);
}

TEST(ScorePlanTest, OneWaveTakesOneTileEach) {
  EXPECT_EQ(ScoreTilesPerCta(512, 528, true), 1);  // MHA 32K: 32 heads x 16 tiles
  EXPECT_EQ(ScoreTilesPerCta(528, 528, true), 1);
  EXPECT_EQ(ScoreTilesPerCta(1, 528, true), 1);
}

TEST(ScorePlanTest, LongerPipelinedLaunchesSpreadOverTheirWaves) {
  for (int64_t tiles : {529, 1000, 2048, 4096, 100000}) {
    const int64_t per = ScoreTilesPerCta(tiles, 528, true);
    const int64_t ctas = (tiles + per - 1) / per;
    if (tiles > 528 * kScoreWaves) EXPECT_GT(per, 1) << tiles;
    EXPECT_LE(ctas, 528 * kScoreWaves) << tiles;
    EXPECT_GT(ctas, 528 * kScoreWaves / 2) << tiles;
  }
}

TEST(ScorePlanTest, OtherScorersTakeOneTileEach) {
  EXPECT_EQ(ScoreTilesPerCta(4096, 528, false), 1);  // GQA: ScoreRange, one tile a CTA
  EXPECT_EQ(ScoreTilesPerCta(4096, 0, true), 1);     // no residency known
}

}  // namespace
}  // namespace quest::ops::cuda
