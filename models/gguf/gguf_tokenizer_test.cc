// Tokenizer of the real embedded default model (SmolLM2-135M-Instruct GGUF)
// against Hugging Face `tokenizers` (tests/fixtures/tokenizer_smollm2/tokenizer_smollm2.json,
// written by tools/reference/tokenizer_reference.py), plus the loader's
// errors on synthetic files.

#include "models/gguf/gguf_tokenizer.h"

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <fstream>
#include <iostream>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "models/gguf/gguf_file.h"
#include "models/gguf/gguf_test_writer.h"
#include "nlohmann/json.hpp"

namespace quest::models {
namespace {

using ::testing::Contains;
using ::testing::HasSubstr;

std::string Runfile(const std::string& path) {
  const char* srcdir = std::getenv("TEST_SRCDIR");
  return absl::StrCat(srcdir != nullptr ? srcdir : ".", "/", path);
}

class SmolLm2TokenizerTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    const std::string path = Runfile("default_model/SmolLM2-135M-Instruct.Q4_1.gguf");
    absl::StatusOr<std::unique_ptr<GgufFile>> file = GgufFile::Open(path);
    ASSERT_TRUE(file.ok()) << file.status()
                           << " (the default model is missing? run tools/setup.sh)";
    absl::StatusOr<std::unique_ptr<Tokenizer>> tokenizer = LoadGgufTokenizer(**file);
    ASSERT_TRUE(tokenizer.ok()) << tokenizer.status();
    tokenizer_ = tokenizer->release();

    std::ifstream in(
        Runfile("quest_runtime/tests/fixtures/tokenizer_smollm2/tokenizer_smollm2.json"));
    ASSERT_TRUE(in.good()) << "missing fixture";
    std::stringstream contents;
    contents << in.rdbuf();
    fixture_ = new nlohmann::json(nlohmann::json::parse(contents.str()));
  }

  static std::string Base64Decode(const std::string& encoded) {
    std::string bytes;
    EXPECT_TRUE(absl::Base64Unescape(encoded, &bytes)) << encoded;
    return bytes;
  }

  static std::vector<int32_t> Encode(const std::string& text) {
    absl::StatusOr<std::vector<int32_t>> ids = tokenizer_->Encode(text);
    EXPECT_TRUE(ids.ok()) << ids.status();
    return ids.ok() ? *ids : std::vector<int32_t>{};
  }

  static Tokenizer* tokenizer_;
  static nlohmann::json* fixture_;
};

Tokenizer* SmolLm2TokenizerTest::tokenizer_ = nullptr;
nlohmann::json* SmolLm2TokenizerTest::fixture_ = nullptr;

TEST_F(SmolLm2TokenizerTest, Metadata) {
  EXPECT_EQ(tokenizer_->vocab_size(), 49152);
  EXPECT_EQ(tokenizer_->bos_id(), 1);
  EXPECT_FALSE(tokenizer_->add_bos());
  EXPECT_EQ(tokenizer_->eos_ids().front(), 2);      // <|im_end|>, tokenizer.ggml.eos_token_id.
  EXPECT_THAT(tokenizer_->eos_ids(), Contains(0));  // <|endoftext|>.
}

TEST_F(SmolLm2TokenizerTest, MatchesHuggingFaceFixture) {
  const nlohmann::json& cases = (*fixture_)["cases"];
  ASSERT_GE(cases.size(), 340u);
  for (const nlohmann::json& c : cases) {
    const std::string name = c["name"];
    const std::string text = Base64Decode(c["text_base64"]);
    const std::vector<int32_t> expected = c["ids"].get<std::vector<int32_t>>();
    EXPECT_EQ(Encode(text), expected) << name;
  }
}

// Decode(Encode(s)) gives back s, less the bytes the vocabulary has no token
// for (dropped on encode, as Hugging Face does).
TEST_F(SmolLm2TokenizerTest, RoundTripsFixtureStrings) {
  const std::vector<int> without_token = (*fixture_)["bytes_without_token"].get<std::vector<int>>();
  EXPECT_EQ(without_token.size(), 21u);
  for (int b = 0; b < 256; ++b) {
    const bool dropped =
        std::find(without_token.begin(), without_token.end(), b) != without_token.end();
    EXPECT_EQ(Encode(std::string(1, static_cast<char>(b))).empty(), dropped) << "byte " << b;
  }
  for (const nlohmann::json& c : (*fixture_)["cases"]) {
    const std::string text = Base64Decode(c["text_base64"]);
    std::string kept;
    for (char ch : text) {
      if (std::find(without_token.begin(), without_token.end(), static_cast<uint8_t>(ch)) ==
          without_token.end()) {
        kept.push_back(ch);
      }
    }
    EXPECT_EQ(tokenizer_->Decode(Encode(text)), kept) << c["name"];
  }
}

TEST_F(SmolLm2TokenizerTest, EncodesEnglishFast) {
  const std::vector<std::string> words = {
      "the",   "of",        "and",    "a",      "to",        "in",     "is",    "you",    "that",
      "it",    "he",        "was",    "for",    "on",        "are",    "as",    "with",   "his",
      "they",  "I",         "at",     "be",     "this",      "have",   "from",  "or",     "one",
      "had",   "by",        "word",   "but",    "not",       "what",   "all",   "were",   "we",
      "when",  "your",      "can",    "said",   "there",     "use",    "an",    "each",   "which",
      "she",   "do",        "how",    "their",  "if",        "will",   "up",    "other",  "about",
      "out",   "many",      "then",   "them",   "these",     "so",     "some",  "her",    "would",
      "make",  "like",      "him",    "into",   "time",      "has",    "look",  "two",    "more",
      "write", "go",        "see",    "number", "no",        "way",    "could", "people", "my",
      "than",  "first",     "water",  "been",   "call",      "who",    "oil",   "its",    "now",
      "find",  "long",      "down",   "day",    "did",       "get",    "come",  "made",   "may",
      "part",  "attention", "memory", "cache",  "inference", "quickly"};
  std::mt19937 rng(2024);
  std::string text;
  while (text.size() < 100 * 1024) {
    const int n = 5 + rng() % 15;
    for (int i = 0; i < n; ++i) {
      std::string w = words[rng() % words.size()];
      if (i == 0) w[0] = static_cast<char>(std::toupper(w[0]));
      absl::StrAppend(&text, i ? " " : "", w);
      if (rng() % 9 == 0)
        absl::StrAppend(&text, rng() % 2 ? "," : " (", rng() % 2000, rng() % 2 ? ")" : "");
    }
    absl::StrAppend(&text, rng() % 4 ? ". " : "?\n\n");
  }
  Encode(text);  // Warm-up (page faults of the vocabulary tables).
  const auto start = std::chrono::steady_clock::now();
  const std::vector<int32_t> ids = Encode(text);
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  std::cout << "encoded " << text.size() << " bytes into " << ids.size() << " tokens in "
            << seconds * 1e3 << " ms (" << text.size() / seconds / 1e6 << " MB/s)\n";
  EXPECT_EQ(tokenizer_->Decode(ids), text);
  EXPECT_LT(seconds, 1.0);
}

// Single huge pieces (one letter run, one space run, one punctuation run) and
// random bytes: merging is O(n log n) per piece, so these stay fast too.
TEST_F(SmolLm2TokenizerTest, PathologicalInputsStayFast) {
  std::mt19937 rng(5);
  std::string random_bytes(256 * 1024, '\0');
  for (char& c : random_bytes) c = static_cast<char>(rng() % 256);
  for (const std::string& text : {std::string(256 * 1024, 'a'), std::string(256 * 1024, ' '),
                                  std::string(256 * 1024, '!'), random_bytes}) {
    const auto start = std::chrono::steady_clock::now();
    const std::vector<int32_t> ids = Encode(text);
    const double seconds =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    EXPECT_LT(seconds, 2.0) << "first byte " << static_cast<int>(text[0]);
    EXPECT_FALSE(ids.empty());
  }
}

// ---- loader errors on synthetic files ---------------------------------------

absl::StatusOr<std::unique_ptr<Tokenizer>> LoadFrom(const testing::GgufTestWriter& writer,
                                                    const std::string& name) {
  const std::string path = testing::TempPath(name);
  absl::Status written = writer.WriteTo(path);
  if (!written.ok()) return written;
  absl::StatusOr<std::unique_ptr<GgufFile>> file = GgufFile::Open(path);
  if (!file.ok()) return file.status();
  return LoadGgufTokenizer(**file);
}

testing::GgufTestWriter ToyBpeFile() {
  testing::GgufTestWriter writer;
  writer.AddString("tokenizer.ggml.model", "gpt2");
  writer.AddString("tokenizer.ggml.pre", "smollm");
  writer.AddStringArray("tokenizer.ggml.tokens", {"<|im_end|>", "a", "b", "ab", "\xc4\xa0"});
  writer.AddStringArray("tokenizer.ggml.merges", {"a b"});
  using testing::GgufValueBytes;
  writer.AddRaw(
      "tokenizer.ggml.token_type", GgufValueType::kArray,
      GgufValueBytes::Array(GgufValueType::kInt32,
                            {GgufValueBytes::I32(3), GgufValueBytes::I32(1), GgufValueBytes::I32(1),
                             GgufValueBytes::I32(1), GgufValueBytes::I32(1)}));
  writer.AddUint32("tokenizer.ggml.bos_token_id", 0);
  writer.AddUint32("tokenizer.ggml.eos_token_id", 0);
  return writer;
}

TEST(GgufTokenizerTest, ToyFileEncodes) {
  absl::StatusOr<std::unique_ptr<Tokenizer>> tokenizer = LoadFrom(ToyBpeFile(), "toy.gguf");
  ASSERT_TRUE(tokenizer.ok()) << tokenizer.status();
  absl::StatusOr<std::vector<int32_t>> ids = (*tokenizer)->Encode("ab a<|im_end|>");
  ASSERT_TRUE(ids.ok());
  EXPECT_EQ(*ids, (std::vector<int32_t>{3, 4, 1, 0}));
  EXPECT_EQ((*tokenizer)->eos_ids(), std::vector<int32_t>{0});
}

TEST(GgufTokenizerTest, ErrorsNameFileAndKey) {
  {
    testing::GgufTestWriter writer;
    writer.AddString("general.architecture", "llama");
    absl::StatusOr<std::unique_ptr<Tokenizer>> t = LoadFrom(writer, "no_tokenizer.gguf");
    ASSERT_FALSE(t.ok());
    EXPECT_THAT(t.status().message(), HasSubstr("no_tokenizer.gguf"));
    EXPECT_THAT(t.status().message(), HasSubstr("tokenizer.ggml.model"));
  }
  {
    testing::GgufTestWriter writer;
    writer.AddString("tokenizer.ggml.model", "llama");
    absl::StatusOr<std::unique_ptr<Tokenizer>> t = LoadFrom(writer, "spm.gguf");
    ASSERT_FALSE(t.ok());
    EXPECT_EQ(t.status().code(), absl::StatusCode::kUnimplemented);
    EXPECT_THAT(t.status().message(), HasSubstr("SentencePieceTokenizer"));
  }
  {
    testing::GgufTestWriter writer;
    writer.AddString("tokenizer.ggml.model", "gpt2");
    writer.AddString("tokenizer.ggml.pre", "deepseek-llm");
    writer.AddStringArray("tokenizer.ggml.tokens", {"a"});
    writer.AddStringArray("tokenizer.ggml.merges", {});
    absl::StatusOr<std::unique_ptr<Tokenizer>> t = LoadFrom(writer, "pre.gguf");
    ASSERT_FALSE(t.ok());
    EXPECT_THAT(t.status().message(), HasSubstr("pre.gguf"));
    EXPECT_THAT(t.status().message(), HasSubstr("supported: gpt2, smollm, llama-bpe"));
  }
  {
    testing::GgufTestWriter writer;
    writer.AddString("tokenizer.ggml.model", "gpt2");
    writer.AddStringArray("tokenizer.ggml.tokens", {"a", "b"});
    absl::StatusOr<std::unique_ptr<Tokenizer>> t = LoadFrom(writer, "no_merges.gguf");
    ASSERT_FALSE(t.ok());
    EXPECT_THAT(t.status().message(), HasSubstr("tokenizer.ggml.merges"));
  }
  {
    testing::GgufTestWriter writer;
    writer.AddString("tokenizer.ggml.model", "gpt2");
    writer.AddStringArray("tokenizer.ggml.tokens", {"a", "b"});
    writer.AddStringArray("tokenizer.ggml.merges", {"a c"});
    absl::StatusOr<std::unique_ptr<Tokenizer>> t = LoadFrom(writer, "bad_merge.gguf");
    ASSERT_FALSE(t.ok());
    EXPECT_THAT(t.status().message(), HasSubstr("BPE merge 0"));
  }
  {
    testing::GgufTestWriter writer;
    writer.AddString("tokenizer.ggml.model", "gpt2");
    writer.AddStringArray("tokenizer.ggml.tokens", {"a", "b"});
    writer.AddStringArray("tokenizer.ggml.merges", {});
    writer.AddUint32("tokenizer.ggml.eos_token_id", 7);
    absl::StatusOr<std::unique_ptr<Tokenizer>> t = LoadFrom(writer, "bad_eos.gguf");
    ASSERT_FALSE(t.ok());
    EXPECT_THAT(t.status().message(), HasSubstr("tokenizer.ggml.eos_token_id = 7"));
  }
  {
    testing::GgufTestWriter writer;
    writer.AddString("tokenizer.ggml.model", "gpt2");
    writer.AddStringArray("tokenizer.ggml.tokens", {"a", "b"});
    writer.AddStringArray("tokenizer.ggml.merges", {});
    writer.AddString("tokenizer.ggml.bos_token_id", "one");
    absl::StatusOr<std::unique_ptr<Tokenizer>> t = LoadFrom(writer, "bad_bos.gguf");
    ASSERT_FALSE(t.ok());
    EXPECT_THAT(t.status().message(), HasSubstr("tokenizer.ggml.bos_token_id"));
  }
}

}  // namespace
}  // namespace quest::models
