#include <numeric>

#include "cache/eviction_testing.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace quest::cache {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::IsEmpty;
using testing::PolicyDriver;

constexpr CacheGeometry kGeometry{/*num_layers=*/2, /*num_heads=*/4, /*num_kv_heads=*/2, /*head_dim=*/8,
                                  /*page_size=*/2};

config::CacheConfig Config(int sink, int window) {
  config::CacheConfig c;
  c.set_policy("streaming_llm");
  if (sink >= 0) c.mutable_streaming_llm()->set_sink_tokens(sink);
  c.mutable_streaming_llm()->set_window_tokens(window);
  return c;
}

testing::Attention NoAttention(int, int64_t) { return {}; }

std::vector<int64_t> Range(int64_t begin, int64_t end) {
  std::vector<int64_t> r(end - begin);
  std::iota(r.begin(), r.end(), begin);
  return r;
}

TEST(StreamingLlmTest, DecodeKeepsSinksAndWindowAndReleasesWholePages) {
  PolicyDriver d(Config(/*sink=*/2, /*window=*/4), kGeometry);
  EXPECT_FALSE(d.policy().WantsAttention());
  EXPECT_THAT(d.Step(5, NoAttention), IsEmpty());  // prefill: [0, 5) all kept
  EXPECT_EQ(d.Kept(0, 0), Range(0, 5));
  // Decode to 12 tokens; page p holds positions {2p, 2p+1}.
  std::vector<std::vector<int32_t>> released;
  for (int i = 0; i < 7; ++i) released.push_back(d.Step(1, NoAttention));
  EXPECT_THAT(released[0], IsEmpty());      // length 6: window [2, 6)
  EXPECT_THAT(released[1], IsEmpty());      // 7: position 2 evicted, 3 kept
  EXPECT_THAT(released[2], ElementsAre(1));  // 8: positions 2, 3 evicted
  EXPECT_THAT(released[3], IsEmpty());
  EXPECT_THAT(released[4], ElementsAre(2));
  EXPECT_THAT(released[5], IsEmpty());
  EXPECT_THAT(released[6], ElementsAre(3));
  for (int layer = 0; layer < 2; ++layer) {
    for (int head = 0; head < 2; ++head) {
      EXPECT_THAT(d.Kept(layer, head), ElementsAre(0, 1, 8, 9, 10, 11)) << layer << " " << head;
    }
  }
  EXPECT_THAT(d.page_table(), ElementsAre(100, -1, -1, -1, 104, 105, 106));
}

TEST(StreamingLlmTest, LongPrefillIsCutAfterItsStep) {
  PolicyDriver d(Config(2, 4), kGeometry, /*spare_pages=*/0);
  EXPECT_THAT(d.Step(12, NoAttention), ElementsAre(1, 2, 3));
  EXPECT_THAT(d.Kept(1, 1), ElementsAre(0, 1, 8, 9, 10, 11));
  // The next chunk's queries see the kept tokens plus their own.
  EXPECT_THAT(d.Step(3, NoAttention), ElementsAre(4));  // window [11, 15): 8..10 go
  EXPECT_THAT(d.Kept(0, 0), ElementsAre(0, 1, 11, 12, 13, 14));
}

TEST(StreamingLlmTest, OddSinkKeepsItsPageAndDefaultSinkIsFour) {
  PolicyDriver odd(Config(/*sink=*/3, /*window=*/2), kGeometry);
  // Page 1 = {2, 3} holds sink 2: never released.
  EXPECT_THAT(odd.Step(10, NoAttention), ElementsAre(2, 3));
  EXPECT_THAT(odd.Kept(0, 1), ElementsAre(0, 1, 2, 8, 9));

  PolicyDriver by_default(Config(/*sink=*/-1, /*window=*/2), kGeometry);
  by_default.Step(10, NoAttention);
  EXPECT_THAT(by_default.Kept(0, 0), ElementsAre(0, 1, 2, 3, 8, 9));

  PolicyDriver no_sink(Config(/*sink=*/0, /*window=*/3), kGeometry);
  EXPECT_THAT(no_sink.Step(7, NoAttention), ElementsAre(0, 1));
  EXPECT_THAT(no_sink.Kept(0, 0), ElementsAre(4, 5, 6));
}

TEST(StreamingLlmTest, ShortSequencesAreUntouched) {
  PolicyDriver d(Config(2, 4), kGeometry);
  for (int i = 0; i < 6; ++i) EXPECT_THAT(d.Step(1, NoAttention), IsEmpty());
  EXPECT_EQ(d.Kept(0, 0), Range(0, 6));
}

TEST(StreamingLlmTest, ValidationNamesTheField) {
  auto factory = CachePolicyRegistry::Global().Find("streaming_llm");
  ASSERT_TRUE(factory.ok());
  EXPECT_THAT((*factory)->Validate(Config(4, 0), kGeometry).message(),
              HasSubstr("cache.streaming_llm.window_tokens must be > 0"));
  config::CacheConfig unset;
  unset.set_policy("streaming_llm");
  EXPECT_EQ((*factory)->Validate(unset, kGeometry).code(), absl::StatusCode::kInvalidArgument);
  config::CacheConfig other = Config(4, 8);
  other.mutable_tova()->set_token_budget(8);
  const absl::Status s = (*factory)->Validate(other, kGeometry);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(s.message(), HasSubstr("cache.tova is set"));
  EXPECT_THAT(s.message(), HasSubstr("cache.streaming_llm"));
  EXPECT_TRUE((*factory)->Validate(Config(0, 1), kGeometry).ok());
}

}  // namespace
}  // namespace quest::cache
