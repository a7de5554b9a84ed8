#include "runtime/engine.h"

#include <cstdlib>
#include <filesystem>
#include <fstream>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace quest {
namespace {

using ::testing::HasSubstr;

std::string TinyModel() {
  return std::string(std::getenv("TEST_SRCDIR")) + "/quest_runtime/tests/fixtures/hf_tiny/gqa";
}

config::EngineConfig TinyConfig() {
  config::EngineConfig c;
  c.mutable_model()->set_path(TinyModel());
  c.mutable_cache()->set_page_size(4);
  return c;
}

api::GenerateRequest Request(std::vector<int32_t> ids, int max_tokens) {
  api::GenerateRequest r;
  for (int32_t id : ids) r.mutable_token_ids()->add_ids(id);
  r.mutable_sampling()->set_max_tokens(max_tokens);
  return r;
}

TEST(EngineTest, GreedyGenerationIsDeterministicAndReturnsPages) {
  auto engine = Engine::Create(TinyConfig());
  ASSERT_TRUE(engine.ok()) << engine.status();
  std::vector<int32_t> streamed;
  auto a = (*engine)->Generate(Request({5, 6, 7, 8, 9}, 12),
                               [&](const TokenEvent& e) { streamed.push_back(e.id); });
  ASSERT_TRUE(a.ok()) << a.status();
  EXPECT_EQ(a->token_ids_size(), 12);
  EXPECT_EQ(a->finish_reason(), api::LENGTH);
  EXPECT_EQ(std::vector<int32_t>(a->token_ids().begin(), a->token_ids().end()), streamed);
  EXPECT_EQ(a->usage().prompt_tokens(), 5);
  EXPECT_EQ(a->usage().generated_tokens(), 12);
  auto b = (*engine)->Generate(Request({5, 6, 7, 8, 9}, 12));
  ASSERT_TRUE(b.ok());
  EXPECT_EQ(std::vector<int32_t>(a->token_ids().begin(), a->token_ids().end()),
            std::vector<int32_t>(b->token_ids().begin(), b->token_ids().end()));
  EXPECT_EQ((*engine)->kv_pages().first, 0);
}

TEST(EngineTest, SeededSamplingReproduces) {
  auto engine = Engine::Create(TinyConfig());
  ASSERT_TRUE(engine.ok());
  api::GenerateRequest r = Request({3, 4, 5}, 16);
  r.mutable_sampling()->set_temperature(1.0f);
  r.mutable_sampling()->set_seed(11);
  auto a = (*engine)->Generate(r), b = (*engine)->Generate(r);
  r.mutable_sampling()->set_seed(12);
  auto c = (*engine)->Generate(r);
  ASSERT_TRUE(a.ok() && b.ok() && c.ok());
  auto ids = [](const api::GenerateResponse& x) { return std::vector<int32_t>(x.token_ids().begin(), x.token_ids().end()); };
  EXPECT_EQ(ids(*a), ids(*b));
  EXPECT_NE(ids(*a), ids(*c));
}

TEST(EngineTest, CancelStopsAndReturnsPages) {
  auto engine = Engine::Create(TinyConfig());
  ASSERT_TRUE(engine.ok());
  api::GenerateRequest r = Request({3, 4, 5}, 40);
  r.set_request_id("req-1");
  int seen = 0;
  auto resp = (*engine)->Generate(r, [&](const TokenEvent&) {
    if (++seen == 3) {
      EXPECT_TRUE((*engine)->Cancel("req-1"));
    }
  });
  ASSERT_TRUE(resp.ok()) << resp.status();
  EXPECT_EQ(resp->finish_reason(), api::CANCELLED);
  EXPECT_EQ(resp->token_ids_size(), 3);
  EXPECT_EQ((*engine)->kv_pages().first, 0);
  EXPECT_FALSE((*engine)->Cancel("req-1")) << "finished requests are not cancellable";
}

TEST(EngineTest, PoolExhaustionIsResourceExhaustedAndLeaksNothing) {
  config::EngineConfig c = TinyConfig();
  c.mutable_cache()->set_num_pages(3);  // 12 tokens
  auto engine = Engine::Create(c);
  ASSERT_TRUE(engine.ok()) << engine.status();
  auto resp = (*engine)->Generate(Request({3, 4, 5, 6, 7, 8, 9, 10}, 20));
  EXPECT_EQ(resp.status().code(), absl::StatusCode::kResourceExhausted) << resp.status();
  EXPECT_EQ((*engine)->kv_pages().first, 0);
  EXPECT_TRUE((*engine)->Generate(Request({3, 4}, 4)).ok()) << "the engine still serves";
}

TEST(EngineTest, BadRequestsNameTheField) {
  auto engine = Engine::Create(TinyConfig());
  ASSERT_TRUE(engine.ok());
  Engine& e = **engine;
  EXPECT_THAT(e.Generate(Request({3}, 0)).status().message(), HasSubstr("sampling.max_tokens must be > 0"));
  EXPECT_THAT(e.Generate(Request({3}, -4)).status().message(), HasSubstr("sampling.max_tokens"));
  EXPECT_THAT(e.Generate(Request({}, 4)).status().message(), HasSubstr("prompt"));
  EXPECT_THAT(e.Generate(Request({3, 128}, 4)).status().message(), HasSubstr("token_ids[1] = 128"));
  api::GenerateRequest text;
  text.set_text("");
  text.mutable_sampling()->set_max_tokens(3);
  EXPECT_EQ(e.Generate(text).status().code(), absl::StatusCode::kInvalidArgument);
  text.set_text("hello");
  EXPECT_THAT(e.Generate(text).status().message(), HasSubstr("has no tokenizer"));
  auto too_long = e.Generate(Request({3, 4, 5}, 62));  // context is 64
  EXPECT_EQ(too_long.status().code(), absl::StatusCode::kOutOfRange);
  EXPECT_THAT(too_long.status().message(), HasSubstr("context length of 64"));
  api::GenerateRequest policy = Request({3}, 2);
  policy.mutable_cache()->set_policy("no-such-policy");
  auto unknown = e.Generate(policy);
  EXPECT_EQ(unknown.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(unknown.status().message(), HasSubstr("known policies: dense"));
  api::GenerateRequest bad_stop = Request({3}, 2);
  bad_stop.mutable_sampling()->add_stop("");
  EXPECT_THAT(e.Generate(bad_stop).status().message(), HasSubstr("sampling.stop[0]"));
  EXPECT_EQ(e.kv_pages().first, 0);
}

TEST(EngineTest, BadConfigsAreClearErrors) {
  config::EngineConfig c = TinyConfig();
  c.mutable_model()->set_path("/nonexistent/model");
  EXPECT_THAT(Engine::Create(c).status().message(), HasSubstr("/nonexistent/model does not exist"));
  c = TinyConfig();
  c.mutable_cache()->set_policy("quest-typo");
  EXPECT_THAT(Engine::Create(c).status().message(), HasSubstr("unknown cache policy \"quest-typo\""));
  c = TinyConfig();
  c.mutable_cache()->set_page_size(12);
  EXPECT_THAT(Engine::Create(c).status().message(), HasSubstr("power of two"));
  c = TinyConfig();
  c.set_dtype(config::FLOAT16);
  EXPECT_THAT(Engine::Create(c).status().message(), HasSubstr("FLOAT16"));

  auto parsed = ParseEngineConfig("model { path: \"x\" }\ncache { polcy: \"dense\" }\n", "my.textproto");
  EXPECT_EQ(parsed.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(parsed.status().message(), HasSubstr("my.textproto:2"));
  EXPECT_THAT(parsed.status().message(), HasSubstr("polcy"));
  EXPECT_EQ(LoadEngineConfig("/nonexistent.textproto").status().code(), absl::StatusCode::kNotFound);
}

}  // namespace
}  // namespace quest
