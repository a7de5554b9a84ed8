#include "cache/eviction_testing.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace quest::cache {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::IsEmpty;
using testing::Attention;
using testing::PolicyDriver;
using testing::Rows;

// Query heads 0, 1 share KV head 0; 2, 3 share KV head 1.
constexpr CacheGeometry kGeometry{/*num_layers=*/1, /*num_heads=*/4, /*num_kv_heads=*/2, /*head_dim=*/8,
                                  /*page_size=*/2};

config::CacheConfig Config(int budget, int recent) {
  config::CacheConfig c;
  c.set_policy("h2o");
  c.mutable_h2o()->set_token_budget(budget);
  if (recent >= 0) c.mutable_h2o()->set_recent_tokens(recent);
  return c;
}

// Only attention_sum matters to H2O.
Attention Sum(std::vector<std::vector<float>> rows) {
  Attention a;
  a.sum = Rows(rows);
  a.last.assign(a.sum.size(), 0.0f);
  return a;
}

TEST(H2oTest, KeepsRecentPlusHeaviestByAccumulatedScorePerHead) {
  PolicyDriver d(Config(/*budget=*/4, /*recent=*/2), kGeometry);
  EXPECT_TRUE(d.policy().WantsAttention());
  // Prefill of 6: recent {4, 5}; two of {0..3} stay per KV head.
  auto released = d.Step(6, [](int, int64_t kv_len) {
    EXPECT_EQ(kv_len, 6);
    // KV head 0 sums to 0.3 0.1 0.9 0.25: 1 and 3 go (query head 0 alone
    // would have kept 3 over 0).
    return Sum({{0.2, 0.1, 0.5, 0.25, 0.3, 0.0},
                {0.1, 0.0, 0.4, 0.0, 0.3, 0.0},
                {0.0, 0.1, 0.4, 0.3, 0.1, 0.1},  // KV head 1: 0.1 0.1 0.6 0.6
                {0.1, 0.0, 0.2, 0.3, 0.2, 0.1}});
  });
  EXPECT_THAT(released, IsEmpty());
  EXPECT_THAT(d.Kept(0, 0), ElementsAre(0, 2, 4, 5));
  EXPECT_THAT(d.Kept(0, 1), ElementsAre(2, 3, 4, 5));

  // Decode position 6: recent {5, 6}; 4 leaves the window and competes.
  released = d.Step(1, [](int, int64_t kv_len) {
    EXPECT_EQ(kv_len, 7);
    // KV head 0, this step: 0.2 at 0, 0.1 at 4, so this step alone would
    // evict 4; accumulated, 0 (0.5) is below 4 (0.7) and 2 (1.5).
    return Sum({{0.1, 0, 0.3, 0, 0.0, 0.2, 0.4},
                {0.1, 0, 0.3, 0, 0.1, 0.2, 0.1},
                // KV head 1 accumulated: 2: 0.8, 3: 0.7, 4: 0.5.
                {0, 0, 0.1, 0.0, 0.1, 0.3, 0.5},
                {0, 0, 0.1, 0.1, 0.1, 0.3, 0.3}});
  });
  EXPECT_THAT(d.Kept(0, 0), ElementsAre(2, 4, 5, 6));
  EXPECT_THAT(d.Kept(0, 1), ElementsAre(2, 3, 5, 6));
  // Page 0 = {0, 1}: now evicted by both KV heads.
  EXPECT_THAT(released, ElementsAre(0));
  EXPECT_EQ(d.page_table()[0], -1);
}

TEST(H2oTest, RecentWindowIsNeverEvictedAndDefaultsToHalfTheBudget) {
  // Budget 4, recent unset = 2. The newest tokens get no attention at all
  // yet stay; the oldest gets the most and stays as the heavy hitter.
  PolicyDriver d(Config(/*budget=*/4, /*recent=*/-1), kGeometry);
  d.Step(6, [](int, int64_t) {
    const std::vector<float> row = {0.9, 0.1, 0.2, 0.3, 0.0, 0.0};
    return Sum({row, row, row, row});
  });
  EXPECT_THAT(d.Kept(0, 0), ElementsAre(0, 3, 4, 5));
  EXPECT_THAT(d.Kept(0, 1), ElementsAre(0, 3, 4, 5));
}

TEST(H2oTest, AllRecentIsASlidingWindowAndTiesEvictTheEarlier) {
  PolicyDriver d(Config(/*budget=*/3, /*recent=*/3), kGeometry);
  auto flat = [](int, int64_t kv_len) { return Sum(std::vector<std::vector<float>>(4, std::vector<float>(kv_len, 1.0f))); };
  d.Step(4, flat);
  EXPECT_THAT(d.Kept(0, 0), ElementsAre(1, 2, 3));
  EXPECT_THAT(d.Step(1, flat), ElementsAre(0));  // position 1 goes: page 0 free
  EXPECT_THAT(d.Kept(0, 1), ElementsAre(2, 3, 4));

  PolicyDriver none(Config(/*budget=*/2, /*recent=*/0), kGeometry);
  none.Step(4, flat);  // all equal: the earliest go first
  EXPECT_THAT(none.Kept(0, 0), ElementsAre(2, 3));
}

TEST(H2oTest, UnderBudgetNothingIsEvicted) {
  PolicyDriver d(Config(8, 2), kGeometry);
  for (int i = 0; i < 8; ++i) {
    EXPECT_THAT(d.Step(1, [](int, int64_t kv_len) {
      return Sum(std::vector<std::vector<float>>(4, std::vector<float>(kv_len, 0.1f)));
    }), IsEmpty());
  }
  EXPECT_EQ(d.Kept(0, 1).size(), 8u);
}

TEST(H2oTest, ValidationNamesTheField) {
  auto factory = CachePolicyRegistry::Global().Find("h2o");
  ASSERT_TRUE(factory.ok());
  EXPECT_THAT((*factory)->Validate(Config(0, -1), kGeometry).message(),
              HasSubstr("cache.h2o.token_budget must be > 0"));
  const absl::Status recent = (*factory)->Validate(Config(4, 5), kGeometry);
  EXPECT_EQ(recent.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(recent.message(), HasSubstr("cache.h2o.recent_tokens (5) must be <= cache.h2o.token_budget (4)"));
  config::CacheConfig other;
  other.set_policy("h2o");
  other.mutable_quest()->set_token_budget(4);
  EXPECT_THAT((*factory)->Validate(other, kGeometry).message(), HasSubstr("cache.quest is set"));
  EXPECT_TRUE((*factory)->Validate(Config(4, 4), kGeometry).ok());
  EXPECT_TRUE((*factory)->Validate(Config(4, 0), kGeometry).ok());
}

}  // namespace
}  // namespace quest::cache
