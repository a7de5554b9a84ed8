// Quest end to end: the engine on the tiny GQA checkpoint, with the policy
// chosen per request.

#include <cstdlib>
#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "runtime/engine.h"
#include "tests/tiny_model.h"

namespace quest {
namespace {

using ::testing::HasSubstr;

config::EngineConfig TinyConfig() { return fixtures::TinyEngineConfig(); }

api::GenerateRequest Request(int max_tokens, const config::CacheConfig* cache) {
  api::GenerateRequest r;
  for (int32_t id : {5, 17, 9, 33, 2, 71, 40, 8, 101, 64}) r.mutable_token_ids()->add_ids(id);
  r.mutable_sampling()->set_max_tokens(max_tokens);
  if (cache != nullptr) *r.mutable_cache() = *cache;
  return r;
}

config::CacheConfig Quest(uint32_t budget, uint32_t page_size) {
  config::CacheConfig c;
  c.set_policy("quest");
  c.mutable_quest()->set_token_budget(budget);
  c.mutable_quest()->set_page_size(page_size);
  c.mutable_quest()->set_dense_layers(0);  // the tiny model has only 2 layers
  return c;
}

std::vector<int32_t> Ids(const api::GenerateResponse& r) {
  return {r.token_ids().begin(), r.token_ids().end()};
}

TEST(QuestEngineTest, FullBudgetGreedyEqualsDenseAndSmallBudgetRuns) {
  auto engine = Engine::Create(TinyConfig());
  ASSERT_TRUE(engine.ok()) << engine.status();
  auto dense = (*engine)->Generate(Request(40, nullptr));
  ASSERT_TRUE(dense.ok()) << dense.status();
  ASSERT_GE(dense->token_ids_size(), 10);  // stops early at EOS

  const config::CacheConfig full = Quest(1000, 0);
  auto quest = (*engine)->Generate(Request(40, &full));
  ASSERT_TRUE(quest.ok()) << quest.status();
  EXPECT_EQ(Ids(*quest), Ids(*dense));

  // 8 tokens in Quest pages of 2 inside pool pages of 4: sparse from the
  // first decode step on (the prompt has 10). It must run and give every
  // page back.
  const config::CacheConfig small = Quest(8, 2);
  auto sparse = (*engine)->Generate(Request(40, &small));
  ASSERT_TRUE(sparse.ok()) << sparse.status();
  EXPECT_GT(sparse->token_ids_size(), 0);
  EXPECT_EQ((*engine)->kv_pages().first, 0);

  const config::CacheConfig bad = Quest(8, 8);  // larger than the pool's page
  auto rejected = (*engine)->Generate(Request(4, &bad));
  EXPECT_EQ(rejected.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(rejected.status().message(), HasSubstr("cache.quest.page_size"));
}

}  // namespace
}  // namespace quest
