#include "runtime/tokenizer/pre_tokenizer.h"

#include <random>
#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace quest {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;

std::vector<std::string> Split(PreTokenizer::Kind kind, const std::string& text) {
  std::vector<absl::string_view> views;
  PreTokenizer(kind).Split(text, &views);
  return std::vector<std::string>(views.begin(), views.end());
}

// One row per text and distinct split: `kinds` are the pre-tokenizers that
// split `text` into `pieces`, so the table shows where they differ.
struct SplitCase {
  std::vector<PreTokenizer::Kind> kinds;
  std::string text;
  std::vector<std::string> pieces;
};

// Expected pieces are Hugging Face `tokenizers` 0.23's pre_tokenize_str with
// ByteLevel(add_prefix_space=False) ("gpt2"), Sequence[Digits(individual_
// digits=True), ByteLevel] ("smollm"), and Split(<Llama 3 regex>, "isolated")
// ("llama-bpe"), mapped back from byte-level form to text; "qwen2" is
// Split(<Qwen2 regex>, "isolated") (tokenizers 0.23.3), which differs from
// Llama 3 only on digits (there it splits as SmolLM does).
const std::vector<SplitCase>& HuggingFaceCases() {
  using enum PreTokenizer::Kind;
  static const auto* const cases = new std::vector<SplitCase>{
      {{kGpt2, kSmolLm, kLlama3, kQwen2},
       "I'm sure it's fine, they'll say; we'd've 'RE 'S",
       {"I", "'m", " sure", " it", "'s", " fine", ",", " they", "'ll", " say", ";", " we", "'d",
        "'ve", " '", "RE", " '", "S"}},
      {{kGpt2, kSmolLm},
       "x  y   z\t\tw \n\n end  ",
       {"x", " ", " y", "  ", " z", "\t", "\t", "w", " \n\n", " end", "  "}},
      {{kLlama3, kQwen2},
       "x  y   z\t\tw \n\n end  ",
       {"x", " ", " y", "  ", " z", "\t", "\tw", " \n\n", " end", "  "}},
      {{kGpt2, kSmolLm, kLlama3, kQwen2}, "  lead", {" ", " lead"}},
      {{kGpt2, kSmolLm, kLlama3, kQwen2}, "trail \t", {"trail", " \t"}},
      {{kGpt2},
       "12345 3.14 and 2024-01-02",
       {"12345", " 3", ".", "14", " and", " 2024", "-", "01", "-", "02"}},
      {{kSmolLm, kQwen2},
       "12345 3.14 and 2024-01-02",
       {"1", "2", "3", "4", "5", " ", "3", ".", "1", "4", " and", " ", "2", "0", "2", "4", "-", "0",
        "1", "-", "0", "2"}},
      {{kLlama3},
       "12345 3.14 and 2024-01-02",
       {"123", "45", " ", "3", ".", "14", " and", " ", "202", "4", "-", "01", "-", "02"}},
      {{kGpt2}, "a ½12 b ²³", {"a", " ½12", " b", " ²³"}},
      {{kSmolLm, kQwen2}, "a ½12 b ²³", {"a", " ", "½", "1", "2", " b", " ", "²", "³"}},
      {{kLlama3}, "a ½12 b ²³", {"a", " ", "½12", " b", " ", "²³"}},
      {{kGpt2, kSmolLm, kLlama3, kQwen2},
       "Hello!!! ...what?? (yes) [no] {ok} @home #tag",
       {"Hello", "!!!", " ...", "what", "??", " (", "yes", ")", " [", "no", "]", " {", "ok", "}",
        " @", "home", " #", "tag"}},
      {{kGpt2, kSmolLm, kLlama3, kQwen2},
       "emoji 👍🏽 family 👨\u200d👩\u200d👧 flag 🇺🇸!",
       {"emoji", " 👍🏽", " family", " 👨\u200d👩\u200d👧", " flag", " 🇺🇸!"}},
      {{kGpt2, kSmolLm}, "中文字符测试，你好。", {"中文字符测试", "，", "你好", "。"}},
      {{kLlama3, kQwen2}, "中文字符测试，你好。", {"中文字符测试", "，你好", "。"}},
      {{kGpt2, kSmolLm, kLlama3, kQwen2}, "日本語テキスト", {"日本語テキスト"}},
      {{kGpt2, kSmolLm, kLlama3, kQwen2}, "مرحبا بالعالم", {"مرحبا", " بالعالم"}},
      {{kGpt2, kSmolLm, kLlama3, kQwen2}, "café naïve Ærøskøbing", {"café", " naïve", " Ærøskøbing"}},
      {{kGpt2, kSmolLm},
       "def f(x):\n    return x**2  # sq\n",
       {"def", " f", "(", "x", "):", "\n   ", " return", " x", "**", "2", " ", " #", " sq", "\n"}},
      {{kLlama3, kQwen2},
       "def f(x):\n    return x**2  # sq\n",
       {"def", " f", "(x", "):\n", "   ", " return", " x", "**", "2", " ", " #", " sq", "\n"}},
      {{kGpt2, kSmolLm}, "a\u00a0\u00a0b\u3000c", {"a", "\u00a0", "\u00a0", "b", "\u3000", "c"}},
      {{kLlama3, kQwen2}, "a\u00a0\u00a0b\u3000c", {"a", "\u00a0", "\u00a0b", "\u3000c"}},
      {{kGpt2, kSmolLm, kLlama3, kQwen2}, "e\u0301 x", {"e", "\u0301", " x"}},
      {{kGpt2, kSmolLm}, "'Ll 'VE ſ 'ſ", {"'", "Ll", " '", "VE", " ſ", " '", "ſ"}},
      {{kLlama3, kQwen2}, "'Ll 'VE ſ 'ſ", {"'Ll", " '", "VE", " ſ", " '", "ſ"}},
      {{kGpt2}, "1234567 x12y", {"1234567", " x", "12", "y"}},
      {{kSmolLm, kQwen2}, "1234567 x12y", {"1", "2", "3", "4", "5", "6", "7", " x", "1", "2", "y"}},
      {{kLlama3}, "1234567 x12y", {"123", "456", "7", " x", "12", "y"}},
      {{kGpt2, kSmolLm, kLlama3, kQwen2}, "\r\n\r\n  \n a", {"\r\n\r\n  \n", " a"}},
      {{kGpt2, kSmolLm},
       "a\034\034b \u2003\u2003z \u0085",
       {"a", "\034\034", "b", " \u2003", "\u2003", "z", " \u0085"}},
      {{kLlama3, kQwen2},
       "a\034\034b \u2003\u2003z \u0085",
       {"a", "\034\034", "b", " \u2003", "\u2003z", " \u0085"}},
  };
  return *cases;
}

TEST(PreTokenizerTest, MatchesHuggingFace) {
  for (const SplitCase& c : HuggingFaceCases()) {
    for (PreTokenizer::Kind kind : c.kinds) {
      EXPECT_EQ(Split(kind, c.text), c.pieces)
          << "kind " << static_cast<int>(kind) << " text \"" << c.text << "\"";
    }
  }
}

TEST(PreTokenizerTest, CreateByGgufName) {
  EXPECT_EQ(PreTokenizer::Create("gpt2")->kind(), PreTokenizer::Kind::kGpt2);
  EXPECT_EQ(PreTokenizer::Create("smollm")->kind(), PreTokenizer::Kind::kSmolLm);
  EXPECT_EQ(PreTokenizer::Create("llama-bpe")->kind(), PreTokenizer::Kind::kLlama3);
  EXPECT_EQ(PreTokenizer::Create("qwen2")->kind(), PreTokenizer::Kind::kQwen2);
}

TEST(PreTokenizerTest, UnknownNameListsSupportedOnes) {
  absl::StatusOr<PreTokenizer> pre = PreTokenizer::Create("deepseek-llm");
  ASSERT_FALSE(pre.ok());
  EXPECT_EQ(pre.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(pre.status().message(), HasSubstr("deepseek-llm"));
  EXPECT_THAT(pre.status().message(), HasSubstr("gpt2, smollm, llama-bpe, qwen2"));
}

TEST(PreTokenizerTest, EmptyTextHasNoPieces) {
  EXPECT_TRUE(Split(PreTokenizer::Kind::kSmolLm, "").empty());
}

// Invalid bytes are units of class [^\s\p{L}\p{N}] (like the lone surrogates
// of Python's surrogateescape): they join punctuation runs and an optional
// leading space.
TEST(PreTokenizerTest, InvalidUtf8GroupsWithPunctuation) {
  EXPECT_THAT(Split(PreTokenizer::Kind::kSmolLm, "ab\xff\xfe!cd"),
              ElementsAre("ab", "\xff\xfe!", "cd"));
  EXPECT_THAT(Split(PreTokenizer::Kind::kSmolLm, "a \x80z"), ElementsAre("a", " \x80", "z"));
  // A truncated sequence: the lead byte and its continuation are each
  // invalid; the following 'A' is a letter again.
  EXPECT_THAT(Split(PreTokenizer::Kind::kGpt2,
                    "x\xe2\x82"
                    "A1"),
              ElementsAre("x", "\xe2\x82", "A", "1"));
  // Overlong encoding and an encoded surrogate are invalid too.
  EXPECT_THAT(Split(PreTokenizer::Kind::kGpt2, "\xc0\xaf \xed\xa0\x80"),
              ElementsAre("\xc0\xaf", " \xed\xa0\x80"));
  // A valid character right after invalid bytes is still found.
  EXPECT_THAT(Split(PreTokenizer::Kind::kGpt2,
                    "\xf0\x9f"
                    "\xc3\xa9t\xc3\xa9"),
              ElementsAre("\xf0\x9f", "\xc3\xa9t\xc3\xa9"));
  EXPECT_THAT(Split(PreTokenizer::Kind::kLlama3,
                    "\xff"
                    "abc"),
              ElementsAre("\xff"
                          "abc"));
}

// Whatever the bytes, the pieces are non-empty and tile the input.
TEST(PreTokenizerTest, RandomBytesTileTheInput) {
  std::mt19937 rng(1234);
  const std::string alphabet =
      std::string("aZ09 \t\n\r'sSlLdD.!,") + "\xc3\xa9\xe4\xb8\xad\xf0\x9f\x98\x80\x80\xff\xe2";
  for (int trial = 0; trial < 2000; ++trial) {
    std::string text;
    const int length = rng() % 40;
    for (int i = 0; i < length; ++i) {
      text.push_back(rng() % 4 == 0 ? static_cast<char>(rng() % 256)
                                    : alphabet[rng() % alphabet.size()]);
    }
    for (auto kind :
         {PreTokenizer::Kind::kGpt2, PreTokenizer::Kind::kSmolLm, PreTokenizer::Kind::kLlama3}) {
      std::string joined;
      for (const std::string& piece : Split(kind, text)) {
        ASSERT_FALSE(piece.empty());
        joined += piece;
      }
      ASSERT_EQ(joined, text);
    }
  }
}

}  // namespace
}  // namespace quest
