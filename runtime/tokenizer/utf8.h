#ifndef QUEST_RUNTIME_TOKENIZER_UTF8_H_
#define QUEST_RUNTIME_TOKENIZER_UTF8_H_

// Strict UTF-8 decoding of one code point, shared by the pre-tokenizer and
// Utf8CompletePrefixLength so that both agree on what is well-formed:
// no overlong forms, no UTF-16 surrogates, nothing above U+10FFFF.

#include <cstddef>
#include <cstdint>
#include <string>

#include "absl/strings/string_view.h"

namespace quest {

// Number of bytes a UTF-8 sequence starting with `lead` has, or 0 when
// `lead` cannot start a multi-byte sequence (ASCII, a continuation byte, or
// a byte that never occurs in well-formed UTF-8: C0, C1, F5..FF).
inline int Utf8SequenceLength(uint8_t lead) {
  if (lead >= 0xC2 && lead <= 0xDF) return 2;
  if (lead >= 0xE0 && lead <= 0xEF) return 3;
  if (lead >= 0xF0 && lead <= 0xF4) return 4;
  return 0;
}

inline bool IsUtf8Continuation(uint8_t byte) { return (byte & 0xC0) == 0x80; }

// Whether `byte` may follow `lead` as the second byte of a well-formed
// sequence. The narrowed ranges exclude overlong forms (E0, F0), UTF-16
// surrogates (ED) and code points above U+10FFFF (F4).
inline bool IsValidUtf8SecondByte(uint8_t lead, uint8_t byte) {
  switch (lead) {
    case 0xE0:
      return byte >= 0xA0 && byte <= 0xBF;
    case 0xED:
      return byte >= 0x80 && byte <= 0x9F;
    case 0xF0:
      return byte >= 0x90 && byte <= 0xBF;
    case 0xF4:
      return byte >= 0x80 && byte <= 0x8F;
    default:
      return IsUtf8Continuation(byte);
  }
}

struct Utf8Char {
  int32_t code_point;  // -1 when the byte at the position is not well-formed UTF-8.
  int length;          // Bytes consumed: the sequence, or 1 for an invalid byte.
};

// Decodes the character at `pos` (< text.size()). An ill-formed or truncated
// sequence yields one invalid byte, so decoding resumes at the next byte and
// every byte that belongs to a well-formed character is still found (the
// same bytes that Python's strict decoder accepts).
inline Utf8Char DecodeUtf8At(absl::string_view text, size_t pos) {
  const uint8_t lead = static_cast<uint8_t>(text[pos]);
  if (lead < 0x80) return {lead, 1};
  const int length = Utf8SequenceLength(lead);
  if (length == 0 || pos + length > text.size()) return {-1, 1};
  if (!IsValidUtf8SecondByte(lead, static_cast<uint8_t>(text[pos + 1]))) return {-1, 1};
  int32_t code_point = lead & (0xFF >> (length + 1));
  for (int i = 1; i < length; ++i) {
    const uint8_t byte = static_cast<uint8_t>(text[pos + i]);
    if (!IsUtf8Continuation(byte)) return {-1, 1};
    code_point = (code_point << 6) | (byte & 0x3F);
  }
  return {code_point, length};
}

// Appends the UTF-8 encoding of `code_point` (0..0x10FFFF) to `out`.
inline void AppendUtf8(int32_t code_point, std::string* out) {
  if (code_point < 0x80) {
    out->push_back(static_cast<char>(code_point));
  } else if (code_point < 0x800) {
    out->push_back(static_cast<char>(0xC0 | (code_point >> 6)));
    out->push_back(static_cast<char>(0x80 | (code_point & 0x3F)));
  } else if (code_point < 0x10000) {
    out->push_back(static_cast<char>(0xE0 | (code_point >> 12)));
    out->push_back(static_cast<char>(0x80 | ((code_point >> 6) & 0x3F)));
    out->push_back(static_cast<char>(0x80 | (code_point & 0x3F)));
  } else {
    out->push_back(static_cast<char>(0xF0 | (code_point >> 18)));
    out->push_back(static_cast<char>(0x80 | ((code_point >> 12) & 0x3F)));
    out->push_back(static_cast<char>(0x80 | ((code_point >> 6) & 0x3F)));
    out->push_back(static_cast<char>(0x80 | (code_point & 0x3F)));
  }
}

}  // namespace quest

#endif  // QUEST_RUNTIME_TOKENIZER_UTF8_H_
