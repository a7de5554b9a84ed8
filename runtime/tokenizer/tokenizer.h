#ifndef QUEST_RUNTIME_TOKENIZER_TOKENIZER_H_
#define QUEST_RUNTIME_TOKENIZER_TOKENIZER_H_

// Text <-> token ids. Implementations: byte-level BPE (GPT-2 / Llama 3 /
// SmolLM style, built from GGUF metadata or tokenizer files) and
// SentencePiece (Llama 2 / Mistral). Implementations are immutable after
// construction and safe to use from many threads.

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/types/span.h"

namespace quest {

class Tokenizer {
 public:
  virtual ~Tokenizer() = default;

  // Token ids for `text`. Special tokens written literally in the text (e.g.
  // "<|im_start|>") map to their ids. Never adds BOS: callers decide
  // (see add_bos()).
  virtual absl::StatusOr<std::vector<int32_t>> Encode(absl::string_view text) const = 0;

  // The bytes the ids stand for, concatenated. May end in the middle of a
  // UTF-8 character when a character spans several tokens; streaming callers
  // use Utf8CompletePrefixLength() to hold such bytes back.
  virtual std::string Decode(absl::Span<const int32_t> ids) const = 0;

  virtual int32_t vocab_size() const = 0;
  // -1 when the vocabulary has none.
  virtual int32_t bos_id() const = 0;
  // Ids that end generation (EOS, end-of-turn, ...).
  virtual const std::vector<int32_t>& eos_ids() const = 0;
  // Whether prompts should start with BOS for this model.
  virtual bool add_bos() const = 0;
};

// Length of the longest prefix of `bytes` that does not end inside an
// incomplete UTF-8 sequence (invalid bytes count as complete: they are
// emitted as they are rather than held back forever).
size_t Utf8CompletePrefixLength(absl::string_view bytes);

// The byte a byte-fallback token such as "<0xAB>" stands for (0xAB), or -1
// when `token` is not of that form. Both hex digits may be upper or lower case.
int ParseByteToken(absl::string_view token);

}  // namespace quest

#endif  // QUEST_RUNTIME_TOKENIZER_TOKENIZER_H_
