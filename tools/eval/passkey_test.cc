#include "tools/eval/passkey.h"

#include <cstdlib>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "models/gguf/gguf_file.h"
#include "models/gguf/gguf_tokenizer.h"

namespace quest::eval {
namespace {

std::unique_ptr<Tokenizer> DefaultTokenizer() {
  auto file = models::GgufFile::Open(std::string(std::getenv("TEST_SRCDIR")) +
                                     "/default_model/SmolLM2-135M-Instruct.Q4_1.gguf");
  EXPECT_TRUE(file.ok()) << file.status();
  auto tok = models::LoadGgufTokenizer(**file);
  EXPECT_TRUE(tok.ok()) << tok.status();
  return *std::move(tok);
}

TEST(PasskeyTest, PromptHasTheKeyAtTheRequestedDepthAndFitsTheContext) {
  auto tok = DefaultTokenizer();
  for (double depth : {0.0, 0.5, 1.0}) {
    auto p = BuildPasskeyPrompt(*tok, 1000, depth, "31415");
    ASSERT_TRUE(p.ok()) << p.status();
    EXPECT_LE(p->ids.size(), 1000u);
    EXPECT_GT(p->ids.size(), 900u);
    const std::string text = tok->Decode(p->ids);
    EXPECT_THAT(text, ::testing::HasSubstr("The pass key is 31415. Remember it. 31415 is the pass key."));
    EXPECT_THAT(text, ::testing::EndsWith("What is the pass key? The pass key is"));
    const double where = static_cast<double>(p->key_position) / p->ids.size();
    EXPECT_NEAR(where, depth, 0.1) << "depth " << depth;
  }
  EXPECT_EQ(BuildPasskeyPrompt(*tok, 20, 0.5, "12345").status().code(), absl::StatusCode::kInvalidArgument);
}

TEST(PasskeyTest, ScoringAndPolicyConfigs) {
  EXPECT_TRUE(PasskeyFound(" 31415. Remember", "31415"));
  EXPECT_FALSE(PasskeyFound(" 3141", "31415"));
  EXPECT_EQ(PolicyWithBudget("quest", 256).quest().token_budget(), 256u);
  EXPECT_EQ(PolicyWithBudget("streaming_llm", 256).streaming_llm().window_tokens(), 252u);
  EXPECT_EQ(PolicyWithBudget("h2o", 128).h2o().token_budget(), 128u);
  EXPECT_EQ(PolicyWithBudget("tova", 64).tova().token_budget(), 64u);
  EXPECT_TRUE(PolicyWithBudget("dense", 64).has_dense());
}

}  // namespace
}  // namespace quest::eval
