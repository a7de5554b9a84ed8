#include "runtime/tokenizer/sentencepiece_tokenizer.h"

#include <cstdlib>
#include <fstream>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "runtime/tokenizer/sentencepiece_training.h"

namespace quest {
namespace {

using ::testing::Contains;
using ::testing::HasSubstr;
using ::testing::Not;

std::string TempDir() {
  const char* dir = std::getenv("TEST_TMPDIR");
  return dir != nullptr ? dir : "/tmp";
}

// Trains a small Llama-2-style model once: BPE, byte fallback, identity
// normalization, dummy prefix, <unk>=0 <s>=1 </s>=2.
class SentencePieceTokenizerTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    const std::string corpus = TempDir() + "/spm_corpus.txt";
    {
      std::ofstream out(corpus);
      const std::vector<std::string> words = {
          "the",   "quick",  "brown",  "fox",     "jumps",  "over",   "lazy",
          "dog",   "page",   "cache",  "query",   "key",    "value",  "attention",
          "token", "model",  "long",   "context", "sparse", "select", "top",
          "score", "budget", "memory", "layer",   "head",   "café",   "naïve"};
      std::mt19937 rng(42);
      for (int line = 0; line < 2000; ++line) {
        const int n = 4 + rng() % 10;
        for (int i = 0; i < n; ++i) out << (i ? " " : "") << words[rng() % words.size()];
        out << (line % 3 == 0 ? "." : ",") << " " << rng() % 1000 << "\n";
      }
    }
    model_prefix_ = new std::string(TempDir() + "/spm_toy");
    const std::string error = TrainSentencePieceModel(absl::StrCat(
        "--input=", corpus, " --model_prefix=", *model_prefix_,
        " --model_type=bpe --vocab_size=400 --byte_fallback=true --character_coverage=1.0",
        " --normalization_rule_name=identity --add_dummy_prefix=true",
        " --remove_extra_whitespaces=false --unk_id=0 --bos_id=1 --eos_id=2 --pad_id=-1",
        " --num_threads=1 --minloglevel=2"));
    ASSERT_EQ(error, "");
  }

  static std::string ModelPath() { return *model_prefix_ + ".model"; }

  static std::string* model_prefix_;
};

std::string* SentencePieceTokenizerTest::model_prefix_ = nullptr;

TEST_F(SentencePieceTokenizerTest, LoadsMetadata) {
  absl::StatusOr<std::unique_ptr<SentencePieceTokenizer>> tokenizer =
      SentencePieceTokenizer::Load(ModelPath());
  ASSERT_TRUE(tokenizer.ok()) << tokenizer.status();
  EXPECT_EQ((*tokenizer)->vocab_size(), 400);
  EXPECT_EQ((*tokenizer)->bos_id(), 1);
  EXPECT_EQ((*tokenizer)->eos_ids(), std::vector<int32_t>{2});
  EXPECT_TRUE((*tokenizer)->add_bos());
}

TEST_F(SentencePieceTokenizerTest, RoundTripsWithDummyPrefix) {
  absl::StatusOr<std::unique_ptr<SentencePieceTokenizer>> tokenizer =
      SentencePieceTokenizer::Load(ModelPath());
  ASSERT_TRUE(tokenizer.ok()) << tokenizer.status();
  for (const std::string text :
       {"the quick brown fox", "sparse attention over long context.", "  two  spaces\tand tab\n",
        "unseen: Zebra 中文 👍🏽 ç", "café naïve 123"}) {
    absl::StatusOr<std::vector<int32_t>> ids = (*tokenizer)->Encode(text);
    ASSERT_TRUE(ids.ok()) << ids.status();
    EXPECT_THAT(*ids, Not(Contains(0))) << "byte fallback should leave no <unk>: " << text;
    EXPECT_EQ((*tokenizer)->Decode(*ids), " " + text);
  }
}

TEST_F(SentencePieceTokenizerTest, WordsBecomeFewPieces) {
  absl::StatusOr<std::unique_ptr<SentencePieceTokenizer>> tokenizer =
      SentencePieceTokenizer::Load(ModelPath());
  ASSERT_TRUE(tokenizer.ok()) << tokenizer.status();
  absl::StatusOr<std::vector<int32_t>> ids = (*tokenizer)->Encode("the quick brown fox");
  ASSERT_TRUE(ids.ok()) << ids.status();
  EXPECT_LE(ids->size(), 8u);
}

TEST_F(SentencePieceTokenizerTest, ControlTokensMatchLiterally) {
  absl::StatusOr<std::unique_ptr<SentencePieceTokenizer>> tokenizer =
      SentencePieceTokenizer::Load(ModelPath());
  ASSERT_TRUE(tokenizer.ok()) << tokenizer.status();
  absl::StatusOr<std::vector<int32_t>> ids = (*tokenizer)->Encode("<s>the dog</s>");
  ASSERT_TRUE(ids.ok()) << ids.status();
  ASSERT_GE(ids->size(), 3u);
  EXPECT_EQ(ids->front(), 1);
  EXPECT_EQ(ids->back(), 2);
  EXPECT_EQ((*tokenizer)->Decode(*ids), "<s> the dog</s>");
  absl::StatusOr<std::vector<int32_t>> plain = (*tokenizer)->Encode("the dog");
  ASSERT_TRUE(plain.ok());
  EXPECT_EQ(std::vector<int32_t>(ids->begin() + 1, ids->end() - 1), *plain);
}

TEST_F(SentencePieceTokenizerTest, InvalidUtf8AndOddIdsDoNotCrash) {
  absl::StatusOr<std::unique_ptr<SentencePieceTokenizer>> tokenizer =
      SentencePieceTokenizer::Load(ModelPath());
  ASSERT_TRUE(tokenizer.ok()) << tokenizer.status();
  std::mt19937 rng(3);
  for (int trial = 0; trial < 200; ++trial) {
    std::string text;
    for (int i = 0, n = rng() % 32; i < n; ++i) text.push_back(static_cast<char>(rng() % 256));
    absl::StatusOr<std::vector<int32_t>> ids = (*tokenizer)->Encode(text);
    if (ids.ok()) (*tokenizer)->Decode(*ids);
  }
  EXPECT_EQ((*tokenizer)->Decode({-1, 400, 1 << 30}), "");
}

TEST_F(SentencePieceTokenizerTest, MissingFileIsNotFound) {
  const std::string path = TempDir() + "/no_such.model";
  absl::StatusOr<std::unique_ptr<SentencePieceTokenizer>> tokenizer =
      SentencePieceTokenizer::Load(path);
  ASSERT_FALSE(tokenizer.ok());
  EXPECT_EQ(tokenizer.status().code(), absl::StatusCode::kNotFound) << tokenizer.status();
  EXPECT_THAT(tokenizer.status().message(), HasSubstr(path));
}

TEST_F(SentencePieceTokenizerTest, GarbageFileIsAnError) {
  for (const std::string& contents : {std::string("this is not a protobuf \xff\xfe\x01\x02"),
                                      std::string(), std::string(1000, '\x0a')}) {
    const std::string path = TempDir() + "/garbage.model";
    std::ofstream(path, std::ios::binary) << contents;
    absl::StatusOr<std::unique_ptr<SentencePieceTokenizer>> tokenizer =
        SentencePieceTokenizer::Load(path);
    ASSERT_FALSE(tokenizer.ok());
    EXPECT_THAT(tokenizer.status().message(), HasSubstr(path));
  }
}

}  // namespace
}  // namespace quest
