#include "runtime/tokenizer/pre_tokenizer.h"

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "runtime/tokenizer/utf8.h"
#include "unicode/uchar.h"

namespace quest {
namespace {

enum class CharClass : uint8_t { kLetter, kNumber, kSpace, kOther };

// One decoded character: a code point, or one invalid byte (code_point -1,
// class kOther).
struct Unit {
  uint32_t offset;
  int32_t code_point;
  CharClass cls;
};

CharClass ClassifyAscii(int32_t c) {
  if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z')) return CharClass::kLetter;
  if (c >= '0' && c <= '9') return CharClass::kNumber;
  if (c == ' ' || (c >= '\t' && c <= '\r')) return CharClass::kSpace;
  return CharClass::kOther;
}

CharClass Classify(int32_t c) {
  if (c < 0) return CharClass::kOther;
  if (c < 0x80) return ClassifyAscii(c);
  // Oniguruma's Unicode \s is exactly the White_Space property.
  if (u_isUWhiteSpace(c)) return CharClass::kSpace;
  const uint32_t mask = U_GET_GC_MASK(c);
  if (mask & U_GC_L_MASK) return CharClass::kLetter;
  if (mask & U_GC_N_MASK) return CharClass::kNumber;
  return CharClass::kOther;
}

void Decode(absl::string_view text, std::vector<Unit>* units) {
  units->clear();
  units->reserve(text.size());
  size_t pos = 0;
  while (pos < text.size()) {
    const Utf8Char ch = DecodeUtf8At(text, pos);
    units->push_back({static_cast<uint32_t>(pos), ch.code_point, Classify(ch.code_point)});
    pos += ch.length;
  }
}

// The matchers below return the end (exclusive unit index) of the match that
// the expression finds at `i` in units [i, end); `end` is where the string
// the expression runs on ends (lookaheads see nothing beyond it). Every unit
// belongs to one of the classes, so some alternative always matches.

class Units {
 public:
  Units(const std::vector<Unit>& units, size_t end) : units_(units), end_(end) {}
  int32_t cp(size_t i) const { return i < end_ ? units_[i].code_point : -1; }
  bool Is(size_t i, CharClass c) const { return i < end_ && units_[i].cls == c; }
  size_t RunEnd(size_t i, CharClass c) const {
    while (i < end_ && units_[i].cls == c) ++i;
    return i;
  }
  size_t end() const { return end_; }

 private:
  const std::vector<Unit>& units_;
  size_t end_;
};

// `\s+(?!\S)|\s+` at a whitespace unit `i`. A run followed by a non-space
// gives up its last unit so that unit can prefix the next word, unless the
// run is a single unit.
size_t MatchSpaceRun(const Units& u, size_t i) {
  const size_t run_end = u.RunEnd(i, CharClass::kSpace);
  if (run_end == u.end()) return run_end;
  return run_end - 1 > i ? run_end - 1 : run_end;
}

// 's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+
size_t MatchGpt2(const Units& u, size_t i) {
  if (u.cp(i) == '\'') {
    const int32_t c1 = u.cp(i + 1);
    if (c1 == 's' || c1 == 't' || c1 == 'm' || c1 == 'd') return i + 2;
    const int32_t c2 = u.cp(i + 2);
    if ((c1 == 'r' && c2 == 'e') || (c1 == 'v' && c2 == 'e') || (c1 == 'l' && c2 == 'l')) {
      return i + 3;
    }
  }
  // ` ?X+`: with the optional space when X follows it; without it the unit at
  // `i` would have to be X itself, which a space is not.
  const size_t body = (u.cp(i) == ' ' && i + 1 < u.end()) ? i + 1 : i;
  for (CharClass c : {CharClass::kLetter, CharClass::kNumber, CharClass::kOther}) {
    if (u.Is(body, c)) return u.RunEnd(body, c);
  }
  if (u.Is(i, CharClass::kSpace)) return MatchSpaceRun(u, i);
  return i + 1;  // Unreachable: every unit has a class.
}

bool IsCrLf(int32_t c) { return c == '\r' || c == '\n'; }

// (?i:...) on the ASCII letters of the contractions. Hugging Face's
// Oniguruma does not fold U+017F (long s) to 's' here, and neither do we.
int32_t FoldCase(int32_t c) { return (c >= 'A' && c <= 'Z') ? c + ('a' - 'A') : c; }

// (?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,max_digits}|
//  ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+
// (Llama 3: max_digits 3; Qwen2: 1.)
size_t MatchLlama3(const Units& u, size_t i, size_t max_digits) {
  if (u.cp(i) == '\'') {
    const int32_t c1 = FoldCase(u.cp(i + 1));
    if (c1 == 's' || c1 == 't' || c1 == 'm' || c1 == 'd') return i + 2;
    const int32_t c2 = FoldCase(u.cp(i + 2));
    if ((c1 == 'r' && c2 == 'e') || (c1 == 'v' && c2 == 'e') || (c1 == 'l' && c2 == 'l')) {
      return i + 3;
    }
  }
  // [^\r\n\p{L}\p{N}]?\p{L}+
  if (u.Is(i, CharClass::kLetter)) return u.RunEnd(i, CharClass::kLetter);
  if (!IsCrLf(u.cp(i)) && !u.Is(i, CharClass::kNumber) && u.Is(i + 1, CharClass::kLetter)) {
    return u.RunEnd(i + 1, CharClass::kLetter);
  }
  // \p{N}{1,max_digits}
  if (u.Is(i, CharClass::kNumber)) {
    const size_t run_end = u.RunEnd(i, CharClass::kNumber);
    return run_end - i > max_digits ? i + max_digits : run_end;
  }
  // ` ?[^\s\p{L}\p{N}]+[\r\n]*`
  const size_t body = (u.cp(i) == ' ' && i + 1 < u.end()) ? i + 1 : i;
  if (u.Is(body, CharClass::kOther)) {
    size_t j = u.RunEnd(body, CharClass::kOther);
    while (j < u.end() && IsCrLf(u.cp(j))) ++j;
    return j;
  }
  if (!u.Is(i, CharClass::kSpace)) return i + 1;  // Unreachable.
  // \s*[\r\n]+: greedy \s* backs off to the last CR/LF of the run.
  const size_t run_end = u.RunEnd(i, CharClass::kSpace);
  for (size_t j = run_end; j > i; --j) {
    if (IsCrLf(u.cp(j - 1))) return j;
  }
  return MatchSpaceRun(u, i);
}

void SplitUnits(const std::vector<Unit>& units, size_t begin, size_t end, absl::string_view text,
                PreTokenizer::Kind kind, std::vector<absl::string_view>* pieces) {
  const Units u(units, end);
  size_t i = begin;
  while (i < end) {
    const size_t j = kind == PreTokenizer::Kind::kLlama3   ? MatchLlama3(u, i, 3)
                     : kind == PreTokenizer::Kind::kQwen2 ? MatchLlama3(u, i, 1)
                                                          : MatchGpt2(u, i);
    const size_t from = units[i].offset;
    const size_t to = j < units.size() ? units[j].offset : text.size();
    pieces->push_back(text.substr(from, to - from));
    i = j;
  }
}

}  // namespace

absl::StatusOr<PreTokenizer> PreTokenizer::Create(absl::string_view name) {
  if (name == "gpt2") return PreTokenizer(Kind::kGpt2);
  if (name == "smollm") return PreTokenizer(Kind::kSmolLm);
  if (name == "llama-bpe") return PreTokenizer(Kind::kLlama3);
  if (name == "qwen2") return PreTokenizer(Kind::kQwen2);
  return absl::InvalidArgumentError(
      absl::StrCat("unsupported BPE pre-tokenizer \"", name,
                   "\" (tokenizer.ggml.pre); supported: ", absl::StrJoin(SupportedNames(), ", ")));
}

std::vector<std::string> PreTokenizer::SupportedNames() { return {"gpt2", "smollm", "llama-bpe", "qwen2"}; }

void PreTokenizer::Split(absl::string_view text, std::vector<absl::string_view>* pieces) const {
  std::vector<Unit> units;
  Decode(text, &units);
  if (kind_ != Kind::kSmolLm) {
    SplitUnits(units, 0, units.size(), text, kind_, pieces);
    return;
  }
  // Digits(individual_digits=true) first: each \p{N} unit is a piece, and
  // the runs between them are pre-tokenized as separate strings.
  size_t begin = 0;
  for (size_t i = 0; i < units.size(); ++i) {
    if (units[i].cls != CharClass::kNumber) continue;
    SplitUnits(units, begin, i, text, kind_, pieces);
    const size_t to = i + 1 < units.size() ? units[i + 1].offset : text.size();
    pieces->push_back(text.substr(units[i].offset, to - units[i].offset));
    begin = i + 1;
  }
  SplitUnits(units, begin, units.size(), text, kind_, pieces);
}

}  // namespace quest
