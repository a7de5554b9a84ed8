#include "runtime/tokenizer/tokenizer.h"

#include <string>

#include "gtest/gtest.h"

namespace quest {
namespace {

TEST(Utf8CompletePrefixLengthTest, CompleteTextIsWhole) {
  EXPECT_EQ(Utf8CompletePrefixLength(""), 0u);
  EXPECT_EQ(Utf8CompletePrefixLength("hello"), 5u);
  EXPECT_EQ(Utf8CompletePrefixLength("caf\xc3\xa9"), 5u);        // é
  EXPECT_EQ(Utf8CompletePrefixLength("\xe4\xb8\xad"), 3u);       // 中
  EXPECT_EQ(Utf8CompletePrefixLength("x\xf0\x9f\x98\x80"), 5u);  // 😀
}

TEST(Utf8CompletePrefixLengthTest, HoldsBackIncompleteCharacter) {
  EXPECT_EQ(Utf8CompletePrefixLength("caf\xc3"), 3u);
  EXPECT_EQ(Utf8CompletePrefixLength("\xe4"), 0u);
  EXPECT_EQ(Utf8CompletePrefixLength("\xe4\xb8"), 0u);
  EXPECT_EQ(Utf8CompletePrefixLength("ab\xf0"), 2u);
  EXPECT_EQ(Utf8CompletePrefixLength("ab\xf0\x9f"), 2u);
  EXPECT_EQ(Utf8CompletePrefixLength("ab\xf0\x9f\x98"), 2u);
  EXPECT_EQ(Utf8CompletePrefixLength("\xc3\xa9\xe4\xb8"), 2u);
}

TEST(Utf8CompletePrefixLengthTest, InvalidBytesAreNotHeldBack) {
  EXPECT_EQ(Utf8CompletePrefixLength("a\x80"), 2u);  // Stray continuation byte.
  EXPECT_EQ(Utf8CompletePrefixLength("a\x80\x80\x80\x80"), 5u);
  EXPECT_EQ(Utf8CompletePrefixLength("a\xff"), 2u);  // Never valid.
  EXPECT_EQ(Utf8CompletePrefixLength("a\xc0"), 2u);  // Overlong lead.
  EXPECT_EQ(Utf8CompletePrefixLength("a\xc1"), 2u);
  EXPECT_EQ(Utf8CompletePrefixLength("a\xf5"), 2u);      // Above U+10FFFF.
  EXPECT_EQ(Utf8CompletePrefixLength("a\xe0\x80"), 3u);  // Overlong 3-byte form.
  EXPECT_EQ(Utf8CompletePrefixLength("a\xed\xa0"), 3u);  // UTF-16 surrogate.
  EXPECT_EQ(Utf8CompletePrefixLength("a\xf0\x80"), 3u);  // Overlong 4-byte form.
  EXPECT_EQ(Utf8CompletePrefixLength("a\xf4\x90"), 3u);  // Above U+10FFFF.
  EXPECT_EQ(Utf8CompletePrefixLength("a\xe4"
                                     "b"),
            3u);  // Interrupted sequence.
  EXPECT_EQ(Utf8CompletePrefixLength("a\xf0\x9f"
                                     "b"),
            4u);
  EXPECT_EQ(Utf8CompletePrefixLength("a\xf0\x9f\x41"), 4u);  // Non-continuation third byte.
  EXPECT_EQ(Utf8CompletePrefixLength("\xc3\xa9\x80"), 3u);   // Extra continuation after é.
}

TEST(Utf8CompletePrefixLengthTest, EdgeOfValidRangesIsHeldBack) {
  EXPECT_EQ(Utf8CompletePrefixLength("a\xe0\xa0"), 1u);
  EXPECT_EQ(Utf8CompletePrefixLength("a\xed\x9f"), 1u);
  EXPECT_EQ(Utf8CompletePrefixLength("a\xf0\x90"), 1u);
  EXPECT_EQ(Utf8CompletePrefixLength("a\xf4\x8f\xbf"), 1u);
}

// Streaming: emitting the complete prefix of everything received so far and
// keeping the rest yields the original text, whatever the chunking.
TEST(Utf8CompletePrefixLengthTest, StreamingReassemblesText) {
  const std::string text =
      "h\xc3\xa9llo \xe4\xb8\xad\xe6\x96\x87 \xf0\x9f\x91\x8d\xf0\x9f\x8f\xbd!";
  for (size_t chunk = 1; chunk <= 4; ++chunk) {
    std::string pending;
    std::string emitted;
    for (size_t pos = 0; pos < text.size(); pos += chunk) {
      pending += text.substr(pos, chunk);
      const size_t ready = Utf8CompletePrefixLength(pending);
      const std::string out = pending.substr(0, ready);
      // What goes out never ends inside a character.
      EXPECT_EQ(Utf8CompletePrefixLength(out), out.size());
      emitted += out;
      pending.erase(0, ready);
    }
    EXPECT_TRUE(pending.empty());
    EXPECT_EQ(emitted, text);
  }
}

TEST(ParseByteTokenTest, ParsesHexByte) {
  EXPECT_EQ(ParseByteToken("<0x00>"), 0x00);
  EXPECT_EQ(ParseByteToken("<0x0A>"), 0x0A);
  EXPECT_EQ(ParseByteToken("<0xab>"), 0xAB);
  EXPECT_EQ(ParseByteToken("<0xFf>"), 0xFF);
}

TEST(ParseByteTokenTest, RejectsOtherTokens) {
  EXPECT_EQ(ParseByteToken(""), -1);
  EXPECT_EQ(ParseByteToken("<0x0A"), -1);
  EXPECT_EQ(ParseByteToken("<0x0A>>"), -1);
  EXPECT_EQ(ParseByteToken("<0X0A>"), -1);
  EXPECT_EQ(ParseByteToken("<0x0G>"), -1);
  EXPECT_EQ(ParseByteToken("[0x0A]"), -1);
  EXPECT_EQ(ParseByteToken("<unk>"), -1);
}

}  // namespace
}  // namespace quest
