#ifndef QUEST_RUNTIME_TOKENIZER_BPE_TOKENIZER_H_
#define QUEST_RUNTIME_TOKENIZER_BPE_TOKENIZER_H_

// Byte-level BPE (GPT-2 family: GPT-2, SmolLM, Llama 3), matching Hugging
// Face `tokenizers` with a ByteLevel pre-tokenizer/decoder and the
// vocabulary's control and user-defined tokens registered as added tokens:
//   1. Control, user-defined and unknown tokens written literally in the
//      text are cut out first (leftmost, then longest) and map to their ids.
//   2. Each stretch between them is split by the pre-tokenizer
//      (pre_tokenizer.h).
//   3. Each piece's bytes start as one-byte tokens and merge pairwise,
//      lowest merge rank first (leftmost among equal ranks).
// Input that is not UTF-8 still encodes, byte by byte. A byte the vocabulary
// has no token for (SmolLM2 lacks 21 of the 256, e.g. 0x04, 0xC0, 0xFF) maps
// to the unknown token if the vocabulary has one (type 2), and is otherwise
// dropped, as Hugging Face `tokenizers` (BPE without unk_token) and llama.cpp
// both do; Decode then cannot give it back.

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/types/span.h"
#include "runtime/tokenizer/pre_tokenizer.h"
#include "runtime/tokenizer/tokenizer.h"

namespace quest {

// GGUF tokenizer.ggml.token_type values.
enum class TokenType : int32_t {
  kUndefined = 0,  // Treated as normal.
  kNormal = 1,
  kUnknown = 2,
  kControl = 3,
  kUserDefined = 4,
  kUnused = 5,
  kByte = 6,  // "<0xAB>": the byte 0xAB.
};

struct BpeVocabulary {
  // Byte-level "unicode" form (GPT-2 bytes_to_unicode), e.g. "Ġthe";
  // control / user-defined / unknown tokens are their literal text.
  std::vector<std::string> tokens;
  // "left right" in the same form; rank = index.
  std::vector<std::string> merges;
  // One TokenType value per token; empty = all normal.
  std::vector<int32_t> token_types;
  // GGUF tokenizer.ggml.pre; see PreTokenizer::SupportedNames(). "llama-bpe"
  // also turns on Llama 3's ignore_merges (a piece that is itself a token
  // maps to it without merging), as llama.cpp and Hugging Face do.
  std::string pre_tokenizer = "gpt2";
  int32_t bos_id = -1;
  std::vector<int32_t> eos_ids;
  bool add_bos = false;
};

class BpeTokenizer final : public Tokenizer {
 public:
  // Validates the vocabulary: errors name the offending token or merge index.
  static absl::StatusOr<std::unique_ptr<BpeTokenizer>> Create(BpeVocabulary vocab);

  // Never fails: every input, UTF-8 or not, has an encoding.
  absl::StatusOr<std::vector<int32_t>> Encode(absl::string_view text) const override;
  // Control and user-defined tokens decode to their text; ids outside the
  // vocabulary decode to nothing.
  std::string Decode(absl::Span<const int32_t> ids) const override;

  int32_t vocab_size() const override { return static_cast<int32_t>(token_bytes_.size()); }
  int32_t bos_id() const override { return bos_id_; }
  const std::vector<int32_t>& eos_ids() const override { return eos_ids_; }
  bool add_bos() const override { return add_bos_; }

  // The bytes token `id` decodes to (empty for an id outside the vocabulary).
  absl::string_view TokenBytes(int32_t id) const;

 private:
  struct Merge {
    uint32_t rank;
    int32_t merged_id;
  };
  struct LiteralToken {
    std::string text;
    int32_t id;
  };

  explicit BpeTokenizer(PreTokenizer pre_tokenizer) : pre_tokenizer_(pre_tokenizer) {}

  static uint64_t PairKey(int32_t left, int32_t right) {
    return (static_cast<uint64_t>(static_cast<uint32_t>(left)) << 32) |
           static_cast<uint32_t>(right);
  }

  // Length of the literal token that starts at text[pos] (0 if none), and
  // its id.
  size_t MatchLiteral(absl::string_view text, size_t pos, int32_t* id) const;
  void EncodePiece(absl::string_view piece, std::vector<int32_t>* ids) const;

  PreTokenizer pre_tokenizer_;
  bool ignore_merges_ = false;
  std::vector<std::string> token_bytes_;
  int32_t byte_token_[256];
  int32_t unknown_id_ = -1;
  absl::flat_hash_map<uint64_t, Merge> merges_;
  // Raw bytes -> id of normal tokens (ignore_merges only).
  absl::flat_hash_map<std::string, int32_t> bytes_to_id_;
  // Literal tokens by first byte, longest first.
  std::vector<LiteralToken> literals_by_first_byte_[256];
  int32_t bos_id_ = -1;
  std::vector<int32_t> eos_ids_;
  bool add_bos_ = false;
};

}  // namespace quest

#endif  // QUEST_RUNTIME_TOKENIZER_BPE_TOKENIZER_H_
