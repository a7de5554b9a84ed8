#include "runtime/tokenizer/tokenizer.h"

#include <cstdint>

#include "runtime/tokenizer/utf8.h"

namespace quest {

size_t Utf8CompletePrefixLength(absl::string_view bytes) {
  const size_t n = bytes.size();
  // An incomplete sequence is at most 3 bytes long (a 4-byte lead plus two
  // continuation bytes), so only the last 3 bytes can hold its lead.
  for (size_t back = 1; back <= 3 && back <= n; ++back) {
    const size_t start = n - back;
    const uint8_t lead = static_cast<uint8_t>(bytes[start]);
    if (IsUtf8Continuation(lead)) continue;
    const int need = Utf8SequenceLength(lead);
    // ASCII, a byte that cannot start a sequence, or a sequence that is
    // already as long as it needs to be: nothing to hold back.
    if (need <= static_cast<int>(back)) return n;
    // The sequence is short. Hold it back only if what is there can still
    // become well-formed; otherwise the bytes are invalid and go out as is.
    for (size_t i = start + 1; i < n; ++i) {
      const uint8_t byte = static_cast<uint8_t>(bytes[i]);
      const bool ok =
          (i == start + 1) ? IsValidUtf8SecondByte(lead, byte) : IsUtf8Continuation(byte);
      if (!ok) return n;
    }
    return start;
  }
  return n;
}

int ParseByteToken(absl::string_view token) {
  if (token.size() != 6 || token.substr(0, 3) != "<0x" || token[5] != '>') return -1;
  int value = 0;
  for (char c : token.substr(3, 2)) {
    value <<= 4;
    if (c >= '0' && c <= '9') {
      value |= c - '0';
    } else if (c >= 'A' && c <= 'F') {
      value |= c - 'A' + 10;
    } else if (c >= 'a' && c <= 'f') {
      value |= c - 'a' + 10;
    } else {
      return -1;
    }
  }
  return value;
}

}  // namespace quest
