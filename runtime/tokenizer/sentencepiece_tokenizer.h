#ifndef QUEST_RUNTIME_TOKENIZER_SENTENCEPIECE_TOKENIZER_H_
#define QUEST_RUNTIME_TOKENIZER_SENTENCEPIECE_TOKENIZER_H_

// SentencePiece models (Llama 2 / Mistral `tokenizer.model`), through
// libsentencepiece.
//
// Encode: control and unknown pieces written literally in the text ("<s>",
// "</s>", "<unk>") are cut out first (leftmost, then longest) and map to
// their ids; each stretch between them is encoded by SentencePiece on its
// own, so with add_dummy_prefix each stretch starts with "▁" — what
// llama.cpp and Hugging Face's legacy Llama tokenizer do.
//
// Decode: the concatenated bytes of the pieces, "▁" as a space, byte pieces
// ("<0x0A>") as their byte, control and unknown pieces as their text. Unlike
// SentencePiece's own Decode, the leading space of the first piece is kept,
// so Decode(a) + Decode(b) == Decode(a + b) for streaming; for a model that
// adds a dummy prefix, Decode(Encode(s)) is " " + s.

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/types/span.h"
#include "runtime/tokenizer/tokenizer.h"

namespace quest {

namespace sentencepiece_bridge {
class Processor;
}  // namespace sentencepiece_bridge

class SentencePieceTokenizer final : public Tokenizer {
 public:
  // Errors name the path: a missing file, or one that is not a model.
  static absl::StatusOr<std::unique_ptr<SentencePieceTokenizer>> Load(
      const std::string& model_path);
  ~SentencePieceTokenizer() override;

  absl::StatusOr<std::vector<int32_t>> Encode(absl::string_view text) const override;
  // Ids outside the vocabulary decode to nothing.
  std::string Decode(absl::Span<const int32_t> ids) const override;

  int32_t vocab_size() const override { return static_cast<int32_t>(token_bytes_.size()); }
  int32_t bos_id() const override { return bos_id_; }
  const std::vector<int32_t>& eos_ids() const override { return eos_ids_; }
  // Llama 2 / Mistral prompts start with BOS.
  bool add_bos() const override { return bos_id_ >= 0; }

 private:
  struct LiteralToken {
    std::string text;
    int32_t id;
  };

  explicit SentencePieceTokenizer(std::unique_ptr<sentencepiece_bridge::Processor> processor);

  absl::Status EncodeSpan(absl::string_view span, std::vector<int32_t>* ids) const;

  std::unique_ptr<sentencepiece_bridge::Processor> processor_;
  std::vector<std::string> token_bytes_;
  std::vector<LiteralToken> literals_;  // Longest first.
  int32_t bos_id_ = -1;
  std::vector<int32_t> eos_ids_;
};

}  // namespace quest

#endif  // QUEST_RUNTIME_TOKENIZER_SENTENCEPIECE_TOKENIZER_H_
