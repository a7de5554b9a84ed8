#include "ops/cuda/split_plan.h"

#include <algorithm>
#include <cmath>
#include <random>
#include <vector>

#include "gtest/gtest.h"

namespace quest::ops::cuda {
namespace {

// The H100's geometry for head_dim 128: MHA on the CUDA-core kernel (4
// blocks of 8-row tiles per SM, a prologue of 2 tiles a warp) and GQA 32/8
// on the tensor-core kernel (2 blocks of 16-key tiles per SM).
SplitGeometry Mha() { return SplitGeometry{132 * 4, 32, 32, 64, 130}; }
SplitGeometry Gqa() { return SplitGeometry{132 * 2, 8, 64, 128, 4 * 130}; }

TEST(PlanSplitsTest, ShortListsAreOneBlockLongOnesOneWave) {
  const SplitGeometry geo = Mha();
  // Up to two prologues' worth: one block.
  for (int64_t count : {1, 64, 128}) {
    const Splits s = PlanSplits(geo, geo.units, count);
    EXPECT_EQ(s.splits, 1) << count;
    EXPECT_EQ(s.len, count);
  }
  for (int64_t count : {129, 2048, 32768, 131072, 1 << 20}) {
    const Splits s = PlanSplits(geo, geo.units, count);
    EXPECT_GT(s.splits, 1) << count;
    EXPECT_LE(s.splits * geo.units, geo.slots) << count;  // one wave
    EXPECT_LE(s.splits, kMaxSplits);
    EXPECT_EQ(s.len % geo.round, 0);
    EXPECT_GE(s.splits * s.len, count) << "every candidate covered";
    EXPECT_LT((s.splits - 1) * s.len, count) << "no empty split";
  }
}

TEST(DynamicSplitsTest, LongSplitsOnly) {
  const SplitGeometry mha = Mha(), gqa = Gqa();
  // Quest's short lists: a few rounds per split, handed out statically.
  EXPECT_FALSE(DynamicSplits(mha, PlanSplits(mha, mha.units, 2048)));
  EXPECT_FALSE(DynamicSplits(mha, PlanSplits(mha, mha.units, 4096)));
  // Long dense contexts: dynamic.
  EXPECT_TRUE(DynamicSplits(mha, PlanSplits(mha, mha.units, 32768)));
  EXPECT_TRUE(DynamicSplits(gqa, PlanSplits(gqa, gqa.units, 32768)));
  EXPECT_TRUE(DynamicSplits(gqa, PlanSplits(gqa, gqa.units, 131072)));
  EXPECT_FALSE(DynamicSplits(gqa, PlanSplits(gqa, gqa.units, 4096)));
  // One split has nothing to balance.
  EXPECT_FALSE(DynamicSplits(mha, Splits{1, 1 << 20}));
}

TEST(PrefetchFirstTilesTest, ShortSplitsOnly) {
  const SplitGeometry mha = Mha(), gqa = Gqa();
  // Short calls, where the wait for the previous kernel is a real share.
  EXPECT_TRUE(PrefetchFirstTiles(mha, PlanSplits(mha, mha.units, 4096)));
  EXPECT_TRUE(PrefetchFirstTiles(gqa, PlanSplits(gqa, gqa.units, 4096)));
  EXPECT_TRUE(PrefetchFirstTiles(gqa, PlanSplits(gqa, gqa.units, 32768)));
  EXPECT_TRUE(PrefetchFirstTiles(mha, PlanSplits(mha, mha.units, 100)));  // one split
  // Long splits: no gain, and GQA 128K measured slower with it.
  EXPECT_FALSE(PrefetchFirstTiles(mha, PlanSplits(mha, mha.units, 32768)));
  EXPECT_FALSE(PrefetchFirstTiles(gqa, PlanSplits(gqa, gqa.units, 131072)));
  EXPECT_FALSE(PrefetchFirstTiles(SplitGeometry{}, Splits{1, 16}));  // no geometry
}

TEST(PlanBatchSplitsTest, CoversEveryListWithDisjointScratch) {
  std::mt19937 rng(5);
  std::uniform_real_distribution<double> log_len(0.0, std::log(200000.0));
  for (const SplitGeometry& geo : {Mha(), Gqa()}) {
    for (int trial = 0; trial < 200; ++trial) {
      const int count = 1 + static_cast<int>(rng() % 40);
      std::vector<int64_t> candidates(count);
      for (int64_t& c : candidates) c = std::max<int64_t>(1, static_cast<int64_t>(std::exp(log_len(rng))));
      std::vector<BatchSplit> out(count);
      int64_t floats = -1;
      const int widest = PlanBatchSplits(geo, candidates.data(), count, out.data(), &floats);
      int most = 1;
      int64_t want_floats = 0, len = 0;
      for (int i = 0; i < count; ++i) {
        const BatchSplit& s = out[i];
        SCOPED_TRACE(testing::Message() << "trial " << trial << " seq " << i << " of " << count << ", "
                                        << candidates[i] << " candidates");
        ASSERT_GE(s.splits, 1);
        ASSERT_LE(s.splits, kMaxSplits);
        ASSERT_GE(static_cast<int64_t>(s.splits) * s.len, candidates[i]) << "every candidate covered";
        ASSERT_LT(static_cast<int64_t>(s.splits - 1) * s.len, candidates[i]) << "no empty split";
        if (!WorthSplitting(geo, candidates[i])) {
          ASSERT_EQ(s.splits, 1);
        }
        if (s.splits == 1) continue;
        // One split length for the batch, a whole number of block steps,
        // at most kMaxBatchSplitLen unless kMaxSplits forces longer.
        if (len == 0) len = s.len;
        ASSERT_EQ(s.len, len);
        ASSERT_EQ(s.len % geo.round, 0);
        ASSERT_TRUE(s.len <= std::max(kMaxBatchSplitLen, geo.min_len) + geo.round ||
                    s.splits * 2 > kMaxSplits);
        // Workspace regions back to back, in order.
        ASSERT_EQ(s.workspace_offset, want_floats);
        want_floats += geo.units * s.splits * geo.row_floats;
        most = std::max(most, s.splits);
      }
      EXPECT_EQ(widest, most);
      EXPECT_EQ(floats, want_floats);
    }
  }
}

// A batch whose candidates fill less than a wave is planned as one wave;
// a long one runs as several waves of blocks at most kMaxBatchSplitLen long.
TEST(PlanBatchSplitsTest, OneWaveForShortBatchesSeveralForLongOnes) {
  const SplitGeometry geo = Gqa();
  const int64_t blocks_per_unit = geo.slots / geo.units;
  std::vector<int64_t> short_batch(8, 4096), long_batch(8, 131072);
  std::vector<BatchSplit> out(8);
  int64_t floats = 0;
  PlanBatchSplits(geo, short_batch.data(), 8, out.data(), &floats);
  int64_t blocks = 0;
  for (const BatchSplit& s : out) blocks += s.splits;
  EXPECT_LE(blocks, blocks_per_unit + 8) << "about one wave";
  EXPECT_GE(blocks, blocks_per_unit / 2);
  PlanBatchSplits(geo, long_batch.data(), 8, out.data(), &floats);
  for (const BatchSplit& s : out) {
    EXPECT_EQ(s.len, kMaxBatchSplitLen);
    EXPECT_EQ(s.splits, 131072 / kMaxBatchSplitLen);
  }
}

TEST(PlanBatchSplitsTest, NoGeometryMeansOneSplitEach) {
  const std::vector<int64_t> candidates = {5, 70000};
  std::vector<BatchSplit> out(2);
  int64_t floats = -1;
  EXPECT_EQ(PlanBatchSplits(SplitGeometry{}, candidates.data(), 2, out.data(), &floats), 1);
  EXPECT_EQ(out[1].splits, 1);
  EXPECT_EQ(out[1].len, 70000);
  EXPECT_EQ(floats, 0);
}

}  // namespace
}  // namespace quest::ops::cuda
