#include "runtime/sampler.h"

#include <algorithm>
#include <map>
#include <numeric>
#include <random>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace quest {
namespace {

api::SamplingParams Params(float temperature, int top_k, float top_p, uint64_t seed) {
  api::SamplingParams p;
  p.set_temperature(temperature);
  p.set_top_k(top_k);
  p.set_top_p(top_p);
  p.set_seed(seed);
  return p;
}

TEST(SamplerTest, GreedyPicksFirstMaximum) {
  auto s = Sampler::Create(Params(0, 0, 0, 1));
  ASSERT_TRUE(s.ok());
  std::vector<float> logits = {0.1f, 3.0f, -1.0f, 3.0f};
  EXPECT_EQ((*s)->Sample(logits), 1);
}

TEST(SamplerTest, TopKOneIsGreedyAtAnyTemperature) {
  auto s = Sampler::Create(Params(5.0f, 1, 0, 7));
  std::vector<float> logits = {0.0f, 0.5f, 0.4f};
  for (int i = 0; i < 50; ++i) EXPECT_EQ((*s)->Sample(logits), 1);
}

TEST(SamplerTest, TopPExcludesTheTail) {
  // Probabilities ~ {0.665, 0.245, 0.09}: top_p 0.8 keeps two tokens.
  auto s = Sampler::Create(Params(1.0f, 0, 0.8f, 3));
  std::vector<float> logits = {2.0f, 1.0f, 0.0f};
  std::map<int, int> counts;
  for (int i = 0; i < 2000; ++i) ++counts[(*s)->Sample(logits)];
  EXPECT_EQ(counts[2], 0);
  EXPECT_GT(counts[1], 400);
  EXPECT_GT(counts[0], 1000);
}

TEST(SamplerTest, SameSeedSameTokensDifferentSeedDiffers) {
  std::vector<float> logits(50);
  for (int i = 0; i < 50; ++i) logits[i] = 0.01f * i;
  auto a = Sampler::Create(Params(1.0f, 0, 0, 42));
  auto b = Sampler::Create(Params(1.0f, 0, 0, 42));
  auto c = Sampler::Create(Params(1.0f, 0, 0, 43));
  std::vector<int> ta, tb, tc;
  for (int i = 0; i < 20; ++i) {
    ta.push_back((*a)->Sample(logits));
    tb.push_back((*b)->Sample(logits));
    tc.push_back((*c)->Sample(logits));
  }
  EXPECT_EQ(ta, tb);
  EXPECT_NE(ta, tc);
}

TEST(SamplerTest, InvalidParamsNameTheField) {
  EXPECT_THAT(Sampler::Create(Params(-1, 0, 0, 0)).status().message(), ::testing::HasSubstr("sampling.temperature"));
  EXPECT_THAT(Sampler::Create(Params(1, -2, 0, 0)).status().message(), ::testing::HasSubstr("sampling.top_k"));
  EXPECT_THAT(Sampler::Create(Params(1, 0, 1.5f, 0)).status().message(), ::testing::HasSubstr("sampling.top_p"));
}

// SampleTop over a row's best candidates (what Backend::TopK returns) picks
// the token Sample picks over the whole row, draw for draw, for every
// sampler that needs only a few candidates; logits with many exact ties
// check the tie order.
TEST(SamplerTest, SampleTopEqualsSampleOverTheWholeRow) {
  std::mt19937 rng(5);
  std::uniform_int_distribution<int> level(0, 40);
  for (const api::SamplingParams& p :
       {Params(0, 0, 0, 1), Params(0.7f, 1, 0, 2), Params(0.7f, 5, 0, 3), Params(1.3f, 40, 0.9f, 4),
        Params(1.0f, 200, 0.5f, 5)}) {
    auto full = Sampler::Create(p);
    auto top = Sampler::Create(p);
    ASSERT_TRUE(full.ok() && top.ok());
    const int need = (*top)->TopCandidatesNeeded();
    ASSERT_GT(need, 0);
    for (int trial = 0; trial < 200; ++trial) {
      std::vector<float> logits(1000);
      for (float& x : logits) x = 0.25f * level(rng);  // few distinct values: ties
      // The best `need` ids, best first, ties by ascending id.
      std::vector<int32_t> order(logits.size());
      std::iota(order.begin(), order.end(), 0);
      std::stable_sort(order.begin(), order.end(), [&](int32_t a, int32_t b) { return logits[a] > logits[b]; });
      std::vector<int32_t> ids(order.begin(), order.begin() + need);
      std::vector<float> values;
      for (int32_t id : ids) values.push_back(logits[id]);
      ASSERT_EQ((*top)->SampleTop(ids, values), (*full)->Sample(logits))
          << "temperature " << p.temperature() << " top_k " << p.top_k() << " trial " << trial;
    }
  }
  auto whole = Sampler::Create(Params(1.0f, 0, 0.9f, 1));
  EXPECT_EQ((*whole)->TopCandidatesNeeded(), 0) << "top-p alone needs the whole softmax";
}

}  // namespace
}  // namespace quest
