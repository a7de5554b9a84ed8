#include "runtime/tokenizer/bpe_tokenizer.h"

#include <memory>
#include <random>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace quest {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;

// GPT-2 bytes_to_unicode, written independently of the implementation.
std::string ByteLevel(const std::string& raw) {
  std::string out;
  for (unsigned char b : raw) {
    int cp = b;
    if (!((b >= 0x21 && b <= 0x7E) || (b >= 0xA1 && b <= 0xAC) || b >= 0xAE)) {
      int extra = 0;
      for (int c = 0; c < b; ++c) {
        if (!((c >= 0x21 && c <= 0x7E) || (c >= 0xA1 && c <= 0xAC) || c >= 0xAE)) ++extra;
      }
      cp = 0x100 + extra;
    }
    if (cp < 0x80) {
      out.push_back(static_cast<char>(cp));
    } else {
      out.push_back(static_cast<char>(0xC0 | (cp >> 6)));
      out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
    }
  }
  return out;
}

// A toy vocabulary shaped like SmolLM's: control tokens first, then the 256
// byte tokens, then merged tokens.
class ToyVocab {
 public:
  ToyVocab() {
    Add("<|endoftext|>", 3);
    Add("<|im_start|>", 3);
    Add("<|im_end|>", 3);
    Add("<tool>", 4);
    Add("<tool_call>", 4);
    for (int b = 0; b < 256; ++b) Add(ByteLevel(std::string(1, static_cast<char>(b))), 1);
  }

  // Adds the merge of the raw strings `left` and `right` and their merged
  // token (if new).
  void Merge(const std::string& left, const std::string& right) {
    vocab_.merges.push_back(absl::StrCat(ByteLevel(left), " ", ByteLevel(right)));
    if (Find(left + right) < 0) Add(ByteLevel(left + right), 1);
  }
  void AddToken(const std::string& raw, int32_t type = 1) {
    Add(type == 1 ? ByteLevel(raw) : raw, type);
  }

  int32_t Id(const std::string& raw) const {
    const int32_t id = Find(raw);
    EXPECT_GE(id, 0) << "no token for \"" << raw << "\"";
    return id;
  }

  BpeVocabulary& vocab() { return vocab_; }

  std::unique_ptr<BpeTokenizer> Build(const std::string& pre_tokenizer = "smollm") {
    BpeVocabulary copy = vocab_;
    copy.pre_tokenizer = pre_tokenizer;
    absl::StatusOr<std::unique_ptr<BpeTokenizer>> tokenizer = BpeTokenizer::Create(std::move(copy));
    EXPECT_TRUE(tokenizer.ok()) << tokenizer.status();
    return tokenizer.ok() ? std::move(*tokenizer) : nullptr;
  }

 private:
  void Add(const std::string& token, int32_t type) {
    vocab_.tokens.push_back(token);
    vocab_.token_types.push_back(type);
  }
  int32_t Find(const std::string& raw) const {
    for (size_t i = 0; i < vocab_.tokens.size(); ++i) {
      const std::string form = vocab_.token_types[i] == 1 ? ByteLevel(raw) : raw;
      if (vocab_.tokens[i] == form) return static_cast<int32_t>(i);
    }
    return -1;
  }

  BpeVocabulary vocab_;
};

std::vector<int32_t> Encode(const Tokenizer& tokenizer, const std::string& text) {
  absl::StatusOr<std::vector<int32_t>> ids = tokenizer.Encode(text);
  EXPECT_TRUE(ids.ok()) << ids.status();
  return ids.ok() ? *ids : std::vector<int32_t>{};
}

TEST(BpeTokenizerTest, LowestRankMergesFirst) {
  ToyVocab bc_first;
  bc_first.Merge("b", "c");
  bc_first.Merge("a", "b");
  EXPECT_THAT(Encode(*bc_first.Build(), "abc"), ElementsAre(bc_first.Id("a"), bc_first.Id("bc")));

  ToyVocab ab_first;
  ab_first.Merge("a", "b");
  ab_first.Merge("b", "c");
  EXPECT_THAT(Encode(*ab_first.Build(), "abc"), ElementsAre(ab_first.Id("ab"), ab_first.Id("c")));
}

TEST(BpeTokenizerTest, MergesChainIntoWords) {
  ToyVocab v;
  v.Merge(" ", "t");
  v.Merge("h", "e");
  v.Merge(" t", "he");
  auto tokenizer = v.Build();
  EXPECT_THAT(Encode(*tokenizer, " the"), ElementsAre(v.Id(" the")));
  EXPECT_THAT(Encode(*tokenizer, "the the"), ElementsAre(v.Id("t"), v.Id("he"), v.Id(" the")));
}

TEST(BpeTokenizerTest, EqualRanksMergeLeftmostFirst) {
  ToyVocab v;
  v.Merge("a", "a");
  auto tokenizer = v.Build();
  EXPECT_THAT(Encode(*tokenizer, "aaa"), ElementsAre(v.Id("aa"), v.Id("a")));
  EXPECT_THAT(Encode(*tokenizer, "aaaaa"), ElementsAre(v.Id("aa"), v.Id("aa"), v.Id("a")));
  v.Merge("aa", "aa");
  EXPECT_THAT(Encode(*v.Build(), "aaaaa"), ElementsAre(v.Id("aaaa"), v.Id("a")));
}

TEST(BpeTokenizerTest, MergesStayInsidePreTokenizerPieces) {
  ToyVocab v;
  v.Merge("a", " ");  // Would join "a" with the space before "b"...
  v.Merge(" ", "b");
  auto tokenizer = v.Build();
  // ...but " b" is its own piece.
  EXPECT_THAT(Encode(*tokenizer, "a b"), ElementsAre(v.Id("a"), v.Id(" b")));
  // A trailing space run is its own piece; "a " never forms.
  EXPECT_THAT(Encode(*tokenizer, "a "), ElementsAre(v.Id("a"), v.Id(" ")));
}

TEST(BpeTokenizerTest, SmolLmSplitsDigitsButGpt2DoesNot) {
  ToyVocab v;
  v.Merge("1", "2");
  v.Merge(" ", "1");
  EXPECT_THAT(Encode(*v.Build("smollm"), " 12"), ElementsAre(v.Id(" "), v.Id("1"), v.Id("2")));
  // One piece " 12": "1 2" outranks "Ġ 1".
  EXPECT_THAT(Encode(*v.Build("gpt2"), " 12"), ElementsAre(v.Id(" "), v.Id("12")));
  EXPECT_THAT(Encode(*v.Build("gpt2"), " 13"), ElementsAre(v.Id(" 1"), v.Id("3")));
}

TEST(BpeTokenizerTest, ContractionsWhitespaceAndPunctuation) {
  ToyVocab v;
  v.Merge("'", "s");
  v.Merge(" ", " ");
  v.Merge("!", "!");
  auto tokenizer = v.Build();
  EXPECT_THAT(Encode(*tokenizer, "it's"), ElementsAre(v.Id("i"), v.Id("t"), v.Id("'s")));
  // Three spaces before a word: two stay together, the third prefixes it.
  EXPECT_THAT(Encode(*tokenizer, "x   y"),
              ElementsAre(v.Id("x"), v.Id("  "), v.Id(" "), v.Id("y")));
  EXPECT_THAT(Encode(*tokenizer, "no!!"), ElementsAre(v.Id("n"), v.Id("o"), v.Id("!!")));
  EXPECT_THAT(Encode(*tokenizer, "\t\n"), ElementsAre(v.Id("\t"), v.Id("\n")));
}

TEST(BpeTokenizerTest, NonAsciiTextIsBytes) {
  ToyVocab v;
  v.Merge("\xe4\xb8", "\xad");  // Not reachable: no "\xe4 \xb8" merge first.
  v.Merge("\xe4", "\xb8");
  auto tokenizer = v.Build();
  // 中 = E4 B8 AD: "\xe4\xb8" forms at rank 1, then "\xe4\xb8\xad" at rank 0.
  EXPECT_THAT(Encode(*tokenizer, "\xe4\xb8\xad"), ElementsAre(v.Id("\xe4\xb8\xad")));
  // 👍 = F0 9F 91 8D stays four byte tokens.
  EXPECT_THAT(Encode(*tokenizer, "\xf0\x9f\x91\x8d"),
              ElementsAre(v.Id("\xf0"), v.Id("\x9f"), v.Id("\x91"), v.Id("\x8d")));
}

TEST(BpeTokenizerTest, SpecialTokensMatchLiterally) {
  ToyVocab v;
  v.Merge("h", "i");
  auto tokenizer = v.Build();
  EXPECT_THAT(
      Encode(*tokenizer, "<|im_start|>user\nhi<|im_end|>"),
      ElementsAre(1, v.Id("u"), v.Id("s"), v.Id("e"), v.Id("r"), v.Id("\n"), v.Id("hi"), 2));
  EXPECT_THAT(Encode(*tokenizer, "<|im_end|><|im_end|>"), ElementsAre(2, 2));
  // Text on both sides is tokenized separately.
  EXPECT_THAT(Encode(*tokenizer, "h<|endoftext|>i"), ElementsAre(v.Id("h"), 0, v.Id("i")));
  // Longest literal wins; a prefix of one is plain text.
  EXPECT_THAT(Encode(*tokenizer, "<tool_call><tool>"), ElementsAre(4, 3));
  const std::vector<int32_t> partial = Encode(*tokenizer, "<|im_sta");
  EXPECT_EQ(partial.size(), 8u);
  EXPECT_EQ(partial[0], v.Id("<"));
}

TEST(BpeTokenizerTest, InvalidUtf8EncodesAsBytes) {
  ToyVocab v;
  v.Merge("\xff", "\xfe");
  auto tokenizer = v.Build();
  EXPECT_THAT(Encode(*tokenizer, "\xff\xfe"), ElementsAre(v.Id("\xff\xfe")));
  EXPECT_THAT(Encode(*tokenizer, "a\x80"), ElementsAre(v.Id("a"), v.Id("\x80")));
  EXPECT_EQ(tokenizer->Decode(Encode(*tokenizer, "x\xe2\x82 \xc0\xaf")), "x\xe2\x82 \xc0\xaf");
}

TEST(BpeTokenizerTest, DecodeIsTheConcatenatedBytes) {
  ToyVocab v;
  v.Merge(" ", "t");
  auto tokenizer = v.Build();
  EXPECT_EQ(tokenizer->Decode({1, v.Id(" t"), v.Id("\n"), 2}), "<|im_start|> t\n<|im_end|>");
  // Ids outside the vocabulary decode to nothing.
  EXPECT_EQ(tokenizer->Decode({-1, v.Id("a"), 1 << 30}), "a");
  EXPECT_EQ(tokenizer->TokenBytes(v.Id(" t")), " t");
  EXPECT_EQ(tokenizer->TokenBytes(-5), "");
}

TEST(BpeTokenizerTest, RandomBytesRoundTrip) {
  ToyVocab v;
  v.Merge(" ", "t");
  v.Merge("h", "e");
  v.Merge("\xc3", "\xa9");
  auto tokenizer = v.Build();
  std::mt19937 rng(7);
  for (int trial = 0; trial < 500; ++trial) {
    std::string text;
    const int length = rng() % 64;
    for (int i = 0; i < length; ++i) text.push_back(static_cast<char>(rng() % 256));
    if (trial % 2 == 0) text += "<|im_end|> the \xc3\xa9";
    EXPECT_EQ(tokenizer->Decode(Encode(*tokenizer, text)), text);
  }
}

TEST(BpeTokenizerTest, MetadataPassesThrough) {
  ToyVocab v;
  v.vocab().bos_id = 1;
  v.vocab().eos_ids = {2, 0};
  v.vocab().add_bos = true;
  auto tokenizer = v.Build();
  EXPECT_EQ(tokenizer->vocab_size(), static_cast<int32_t>(v.vocab().tokens.size()));
  EXPECT_EQ(tokenizer->bos_id(), 1);
  EXPECT_THAT(tokenizer->eos_ids(), ElementsAre(2, 0));
  EXPECT_TRUE(tokenizer->add_bos());
}

TEST(BpeTokenizerTest, Llama3IgnoresMergesForWholeTokens) {
  ToyVocab v;
  v.AddToken("abc");  // No merges lead to it.
  EXPECT_THAT(Encode(*v.Build("llama-bpe"), "abc"), ElementsAre(v.Id("abc")));
  EXPECT_THAT(Encode(*v.Build("gpt2"), "abc"), ElementsAre(v.Id("a"), v.Id("b"), v.Id("c")));
}

TEST(BpeTokenizerTest, BytesWithoutTokensAreDroppedOrUnknown) {
  BpeVocabulary vocab;
  vocab.tokens = {"a", "b"};
  absl::StatusOr<std::unique_ptr<BpeTokenizer>> tokenizer = BpeTokenizer::Create(vocab);
  ASSERT_TRUE(tokenizer.ok()) << tokenizer.status();
  EXPECT_THAT(Encode(**tokenizer, "abc"), ElementsAre(0, 1));
  EXPECT_THAT(Encode(**tokenizer, "c"), ElementsAre());
  EXPECT_THAT(Encode(**tokenizer, "c\xff a"), ElementsAre(0));

  vocab.tokens.push_back("<unk>");
  vocab.token_types = {1, 1, 2};
  tokenizer = BpeTokenizer::Create(vocab);
  ASSERT_TRUE(tokenizer.ok()) << tokenizer.status();
  EXPECT_THAT(Encode(**tokenizer, "abc"), ElementsAre(0, 1, 2));
}

TEST(BpeTokenizerTest, ByteTypeTokensCoverBytes) {
  BpeVocabulary vocab;
  vocab.tokens = {"<0x41>", "<0x0A>", "Ġ"};
  vocab.token_types = {6, 6, 1};
  absl::StatusOr<std::unique_ptr<BpeTokenizer>> tokenizer = BpeTokenizer::Create(vocab);
  ASSERT_TRUE(tokenizer.ok()) << tokenizer.status();
  EXPECT_THAT(Encode(**tokenizer, "A\n A"), ElementsAre(0, 1, 2, 0));
  EXPECT_EQ((*tokenizer)->Decode({0, 1, 2}), "A\n ");
}

TEST(BpeTokenizerTest, CreateRejectsBadVocabularies) {
  auto error = [](BpeVocabulary vocab) {
    absl::StatusOr<std::unique_ptr<BpeTokenizer>> tokenizer =
        BpeTokenizer::Create(std::move(vocab));
    EXPECT_FALSE(tokenizer.ok());
    return tokenizer.ok() ? std::string() : std::string(tokenizer.status().message());
  };
  BpeVocabulary good;
  good.tokens = {"a", "b", "ab"};
  good.merges = {"a b"};
  ASSERT_TRUE(BpeTokenizer::Create(good).ok());

  BpeVocabulary v = good;
  v.pre_tokenizer = "falcon";
  EXPECT_THAT(error(v), HasSubstr("supported: gpt2, smollm, llama-bpe"));
  v = good;
  v.tokens.clear();
  v.merges.clear();
  EXPECT_THAT(error(v), HasSubstr("no tokens"));
  v = good;
  v.merges = {"a c"};
  EXPECT_THAT(error(v), HasSubstr("BPE merge 0 (\"a c\"): \"c\" is not in the vocabulary"));
  v = good;
  v.merges = {"a b", "b a"};
  EXPECT_THAT(error(v), HasSubstr("\"ba\" is not in the vocabulary"));
  v = good;
  v.merges = {"ab"};
  EXPECT_THAT(error(v), HasSubstr("not of the form"));
  v = good;
  v.merges = {"a b c"};
  EXPECT_THAT(error(v), HasSubstr("not of the form"));
  v = good;
  v.token_types = {1, 1};
  EXPECT_THAT(error(v), HasSubstr("3 tokens but 2 token types"));
  v = good;
  v.token_types = {1, 9, 1};
  EXPECT_THAT(error(v), HasSubstr("token 1 (\"b\") has unknown token type 9"));
  v = good;
  v.bos_id = 3;
  EXPECT_THAT(error(v), HasSubstr("BOS id 3"));
  v = good;
  v.add_bos = true;
  EXPECT_THAT(error(v), HasSubstr("no BOS"));
  v = good;
  v.eos_ids = {0, -2};
  EXPECT_THAT(error(v), HasSubstr("EOS id -2"));
}

TEST(BpeTokenizerTest, ConcurrentEncodesAgree) {
  ToyVocab v;
  v.Merge(" ", "t");
  v.Merge("h", "e");
  v.Merge(" t", "he");
  auto tokenizer = v.Build();
  std::string text;
  for (int i = 0; i < 200; ++i) text += "the cat and the hat <|im_end|> 123 ";
  const std::vector<int32_t> expected = Encode(*tokenizer, text);
  std::vector<std::thread> threads;
  std::vector<bool> same(4);
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&, t] { same[t] = Encode(*tokenizer, text) == expected; });
  }
  for (std::thread& thread : threads) thread.join();
  EXPECT_THAT(same, ElementsAre(true, true, true, true));
}

}  // namespace
}  // namespace quest
