#ifndef QUEST_RUNTIME_TOKENIZER_PRE_TOKENIZER_H_
#define QUEST_RUNTIME_TOKENIZER_PRE_TOKENIZER_H_

// Splits text into the pieces that byte-level BPE merges within (the
// "pre-tokenization" of Hugging Face `tokenizers`). The regular expressions
// are evaluated by hand on decoded code points, with ICU supplying the
// Unicode classes (\p{L}: general category L*, \p{N}: N*, \s: White_Space),
// so the splits match Hugging Face's Oniguruma-based ones without a regex
// library.
//
// Bytes that are not well-formed UTF-8 are kept: each one is a unit of its
// own in the class [^\s\p{L}\p{N}] (what Python's errors="surrogateescape"
// turns them into: lone surrogates, category Cs), so they group with
// punctuation and every input byte lands in exactly one piece.

#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace quest {

class PreTokenizer {
 public:
  enum class Kind {
    // GPT-2: 's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+
    kGpt2,
    // SmolLM: Sequence[Digits(individual_digits=true), ByteLevel(use_regex)]:
    // every \p{N} code point becomes a piece of its own, then the GPT-2
    // expression splits each run between them independently.
    kSmolLm,
    // Llama 3: (?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}|
    //          ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+
    kLlama3,
    // Qwen2: Llama 3's expression with \p{N} (one digit per piece) for
    // \p{N}{1,3}.
    kQwen2,
  };

  // `name` is a GGUF `tokenizer.ggml.pre` value: "gpt2", "smollm",
  // "llama-bpe" or "qwen2". Anything else is an error that lists these.
  static absl::StatusOr<PreTokenizer> Create(absl::string_view name);
  static std::vector<std::string> SupportedNames();

  explicit PreTokenizer(Kind kind) : kind_(kind) {}

  Kind kind() const { return kind_; }

  // Appends the pieces of `text` to `pieces`, in order; they are non-empty
  // views into `text` whose concatenation is `text`.
  void Split(absl::string_view text, std::vector<absl::string_view>* pieces) const;

 private:
  Kind kind_;
};

}  // namespace quest

#endif  // QUEST_RUNTIME_TOKENIZER_PRE_TOKENIZER_H_
