// The embedded default model (SmolLM2-135M-Instruct, Q4_1 GGUF) end to end:
// our tokenizer, GGUF loader and forward pass against Hugging Face
// transformers running the same weights (converted by //tools/gguf_to_hf).
// Fixture: tests/fixtures/smollm2_greedy.json, written by
// tools/reference/hf_reference.py greedy (see tools/gpu/run_reference.sh).

#include <cstdlib>
#include <fstream>
#include <string>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "runtime/engine.h"

namespace quest {
namespace {

std::string Runfile(const std::string& path) { return std::string(std::getenv("TEST_SRCDIR")) + "/" + path; }

class DefaultModelTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    config::EngineConfig c;
    c.mutable_model()->set_path(Runfile("default_model/SmolLM2-135M-Instruct.Q4_1.gguf"));
    c.mutable_limits()->set_max_concurrent_requests(1);
    c.mutable_limits()->set_max_context_tokens(1024);
    auto engine = Engine::Create(c);
    ASSERT_TRUE(engine.ok()) << engine.status();
    engine_ = engine->release();
    std::ifstream in(Runfile("quest_runtime/tests/fixtures/smollm2_greedy.json"));
    ASSERT_TRUE(in.good());
    fixture_ = new nlohmann::json(nlohmann::json::parse(in));
  }
  static void TearDownTestSuite() {
    delete engine_;
    delete fixture_;
  }
  static Engine* engine_;
  static nlohmann::json* fixture_;
};
Engine* DefaultModelTest::engine_ = nullptr;
nlohmann::json* DefaultModelTest::fixture_ = nullptr;

TEST_F(DefaultModelTest, PromptTokenizesLikeTheReference) {
  const std::string prompt = (*fixture_)["prompt"];
  const std::string text = ApplyChatTemplate(engine_->model_info(), prompt);
  auto ids = engine_->tokenizer()->Encode(text);
  ASSERT_TRUE(ids.ok()) << ids.status();
  EXPECT_EQ(*ids, (*fixture_)["prompt_ids"].get<std::vector<int32_t>>()) << text;
}

TEST_F(DefaultModelTest, Greedy32TokensMatchTransformers) {
  api::GenerateRequest r;
  for (int32_t id : (*fixture_)["prompt_ids"].get<std::vector<int32_t>>()) r.mutable_token_ids()->add_ids(id);
  const auto expected = (*fixture_)["reference_tokens"].get<std::vector<int32_t>>();
  ASSERT_EQ(expected.size(), 32u);
  r.mutable_sampling()->set_max_tokens(32);
  // The reference ran with EOS disabled; so do we, by not stopping on it.
  auto resp = engine_->Generate(r);
  ASSERT_TRUE(resp.ok()) << resp.status();
  std::vector<int32_t> got(resp->token_ids().begin(), resp->token_ids().end());
  // If the model emitted EOS before 32 tokens, compare the prefix up to it.
  ASSERT_LE(got.size(), expected.size());
  EXPECT_EQ(got, std::vector<int32_t>(expected.begin(), expected.begin() + got.size()))
      << "text: " << resp->text();
  EXPECT_GE(got.size(), 8u);
}

TEST_F(DefaultModelTest, TextInTextOutWithStopString) {
  api::GenerateRequest r;
  r.set_text(ApplyChatTemplate(engine_->model_info(), "What is the capital of France?"));
  r.mutable_sampling()->set_max_tokens(24);
  std::string streamed;
  auto resp = engine_->Generate(r, [&](const TokenEvent& e) { streamed.append(e.text.data(), e.text.size()); });
  ASSERT_TRUE(resp.ok()) << resp.status();
  EXPECT_THAT(resp->text(), ::testing::HasSubstr("Paris"));
  EXPECT_EQ(streamed, resp->text()) << "stream deltas must add up to the final text";

  r.mutable_sampling()->add_stop("Paris");
  streamed.clear();
  auto stopped = engine_->Generate(r, [&](const TokenEvent& e) { streamed.append(e.text.data(), e.text.size()); });
  ASSERT_TRUE(stopped.ok());
  EXPECT_EQ(stopped->finish_reason(), api::STOP);
  EXPECT_THAT(stopped->text(), ::testing::Not(::testing::HasSubstr("Paris")));
  EXPECT_EQ(streamed, stopped->text());
  EXPECT_EQ(engine_->kv_pages().first, 0);
}

}  // namespace
}  // namespace quest
