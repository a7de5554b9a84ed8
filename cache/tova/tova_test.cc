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

constexpr CacheGeometry kGeometry{/*num_layers=*/2, /*num_heads=*/4, /*num_kv_heads=*/2, /*head_dim=*/8,
                                  /*page_size=*/2};

config::CacheConfig Config(int budget) {
  config::CacheConfig c;
  c.set_policy("tova");
  c.mutable_tova()->set_token_budget(budget);
  return c;
}

// Only attention_last matters to TOVA; layer -> [num_heads][kv_len].
Attention Last(std::vector<std::vector<float>> rows) {
  Attention a;
  a.last = Rows(rows);
  a.sum.assign(a.last.size(), 1.0f);  // would change nothing if read
  return a;
}

TEST(TovaTest, EvictsTheArgminOfHeadAveragedAttentionEachStep) {
  PolicyDriver d(Config(/*budget=*/3), kGeometry);
  EXPECT_TRUE(d.policy().WantsAttention());
  // Prefill of 4, one over budget. Layer 1 evicts its newest token.
  auto released = d.Step(4, [](int layer, int64_t kv_len) {
    EXPECT_EQ(kv_len, 4);
    if (layer == 0) {
      return Last({{0.1, 0.0, 0.5, 0.4},  // head sums 1.2 0.4 1.1 1.3
                   {0.3, 0.1, 0.3, 0.3},
                   {0.4, 0.2, 0.2, 0.2},
                   {0.4, 0.1, 0.1, 0.4}});
    }
    const std::vector<float> row = {0.3, 0.3, 0.3, 0.1};
    return Last({row, row, row, row});
  });
  EXPECT_THAT(released, IsEmpty());
  EXPECT_THAT(d.Kept(0, 0), ElementsAre(0, 2, 3));
  EXPECT_THAT(d.Kept(0, 1), ElementsAre(0, 2, 3));  // the layer's KV heads agree
  EXPECT_THAT(d.Kept(1, 0), ElementsAre(0, 1, 2));
  EXPECT_THAT(d.Kept(1, 1), ElementsAre(0, 1, 2));

  released = d.Step(1, [](int layer, int64_t kv_len) {
    EXPECT_EQ(kv_len, 5);
    if (layer == 0) {
      // Head 0 alone would evict 0; averaged over heads, 2 is lowest.
      return Last({{0.05, 0, 0.3, 0.3, 0.35},
                   {0.4, 0, 0.1, 0.3, 0.2},
                   {0.4, 0, 0.1, 0.2, 0.3},
                   {0.4, 0, 0.1, 0.3, 0.2}});
    }
    const std::vector<float> row = {0.3, 0.1, 0.3, 0, 0.3};
    return Last({row, row, row, row});
  });
  EXPECT_THAT(released, IsEmpty());
  EXPECT_THAT(d.Kept(0, 1), ElementsAre(0, 3, 4));
  EXPECT_THAT(d.Kept(1, 0), ElementsAre(0, 2, 4));

  released = d.Step(1, [](int layer, int64_t) {
    const std::vector<float> row = layer == 0 ? std::vector<float>{0.1, 0, 0, 0.3, 0.3, 0.3}
                                              : std::vector<float>{0.1, 0, 0.3, 0, 0.3, 0.3};
    return Last({row, row, row, row});
  });
  EXPECT_THAT(d.Kept(0, 0), ElementsAre(3, 4, 5));
  EXPECT_THAT(d.Kept(1, 1), ElementsAre(2, 4, 5));
  // Page 0 = {0, 1} is now evicted in both layers; page 1 = {2, 3} is not.
  EXPECT_THAT(released, ElementsAre(0));
}

TEST(TovaTest, LongPromptIsCutToBudgetByItsLastQueryAndTiesEvictTheEarlier) {
  PolicyDriver d(Config(/*budget=*/2), kGeometry);
  d.Step(6, [](int layer, int64_t) {
    const std::vector<float> row = layer == 0 ? std::vector<float>{0.5, 0.1, 0.1, 0.1, 0.1, 0.1}
                                              : std::vector<float>{0.2, 0.2, 0.2, 0.2, 0.1, 0.1};
    return Last({row, row, row, row});
  });
  EXPECT_THAT(d.Kept(0, 0), ElementsAre(0, 5));
  EXPECT_THAT(d.Kept(1, 1), ElementsAre(2, 3));
}

TEST(TovaTest, UnderBudgetNothingIsEvicted) {
  PolicyDriver d(Config(5), kGeometry);
  for (int i = 0; i < 5; ++i) {
    EXPECT_THAT(d.Step(1, [](int, int64_t kv_len) {
      return Last(std::vector<std::vector<float>>(4, std::vector<float>(kv_len, 1.0f / kv_len)));
    }), IsEmpty());
  }
  EXPECT_EQ(d.Kept(1, 0).size(), 5u);
}

TEST(TovaTest, ValidationNamesTheField) {
  auto factory = CachePolicyRegistry::Global().Find("tova");
  ASSERT_TRUE(factory.ok());
  EXPECT_THAT((*factory)->Validate(Config(0), kGeometry).message(),
              HasSubstr("cache.tova.token_budget must be > 0"));
  config::CacheConfig other;
  other.set_policy("tova");
  other.mutable_h2o()->set_token_budget(4);
  EXPECT_THAT((*factory)->Validate(other, kGeometry).message(), HasSubstr("cache.h2o is set"));
  EXPECT_TRUE((*factory)->Validate(Config(1), kGeometry).ok());
}

}  // namespace
}  // namespace quest::cache
