#include "models/gguf/gguf_tokenizer.h"

#include <algorithm>
#include <cstdint>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "runtime/tokenizer/bpe_tokenizer.h"

namespace quest::models {
namespace {

absl::Status WithContext(const GgufFile& file, const absl::Status& status) {
  return absl::Status(status.code(),
                      absl::StrCat("tokenizer of GGUF ", file.path(), ": ", status.message()));
}

// An optional int32 key: `fallback` when absent; an error when present but
// mistyped or out of range.
absl::StatusOr<int32_t> OptionalInt32(const GgufFile& file, const char* key, int32_t fallback) {
  if (!file.Has(key)) return fallback;
  absl::StatusOr<int64_t> value = file.GetInt(key);
  if (!value.ok()) return value.status();
  if (*value < INT32_MIN || *value > INT32_MAX) {
    return absl::OutOfRangeError(absl::StrCat(key, " = ", *value, " does not fit in int32"));
  }
  return static_cast<int32_t>(*value);
}

absl::StatusOr<BpeVocabulary> ReadBpeVocabulary(const GgufFile& file) {
  BpeVocabulary vocab;
  absl::StatusOr<std::vector<std::string>> tokens = file.GetStringArray("tokenizer.ggml.tokens");
  if (!tokens.ok()) return tokens.status();
  vocab.tokens = *std::move(tokens);
  absl::StatusOr<std::vector<std::string>> merges = file.GetStringArray("tokenizer.ggml.merges");
  if (!merges.ok()) return merges.status();
  vocab.merges = *std::move(merges);
  if (file.Has("tokenizer.ggml.token_type")) {
    absl::StatusOr<std::vector<int64_t>> types = file.GetIntArray("tokenizer.ggml.token_type");
    if (!types.ok()) return types.status();
    vocab.token_types.reserve(types->size());
    for (size_t i = 0; i < types->size(); ++i) {
      const int64_t type = (*types)[i];
      if (type < 0 || type > 6) {
        return absl::InvalidArgumentError(
            absl::StrCat("tokenizer.ggml.token_type[", i, "] = ", type, "; expected 0..6"));
      }
      vocab.token_types.push_back(static_cast<int32_t>(type));
    }
  }
  if (file.Has("tokenizer.ggml.pre")) {
    absl::StatusOr<std::string> pre = file.GetString("tokenizer.ggml.pre");
    if (!pre.ok()) return pre.status();
    vocab.pre_tokenizer = *std::move(pre);
  }

  absl::StatusOr<int32_t> bos = OptionalInt32(file, "tokenizer.ggml.bos_token_id", -1);
  if (!bos.ok()) return bos.status();
  vocab.bos_id = *bos;
  if (file.Has("tokenizer.ggml.add_bos_token")) {
    absl::StatusOr<bool> add_bos = file.GetBool("tokenizer.ggml.add_bos_token");
    if (!add_bos.ok()) return add_bos.status();
    vocab.add_bos = *add_bos;
  }

  const int64_t n = static_cast<int64_t>(vocab.tokens.size());
  auto add_eos = [&](int32_t id) {
    if (std::find(vocab.eos_ids.begin(), vocab.eos_ids.end(), id) == vocab.eos_ids.end()) {
      vocab.eos_ids.push_back(id);
    }
  };
  for (const char* key : {"tokenizer.ggml.eos_token_id", "tokenizer.ggml.eot_token_id",
                          "tokenizer.ggml.eom_token_id"}) {
    absl::StatusOr<int32_t> id = OptionalInt32(file, key, -1);
    if (!id.ok()) return id.status();
    if (*id < 0) continue;
    if (*id >= n) {
      return absl::InvalidArgumentError(
          absl::StrCat(key, " = ", *id, " is outside the vocabulary of ", n, " tokens"));
    }
    add_eos(*id);
  }
  static constexpr const char* kEndOfTurnTexts[] = {"<|im_end|>", "<|endoftext|>", "<|eot_id|>",
                                                    "<|eom_id|>", "<|end|>",       "<end_of_turn>"};
  for (int32_t id = 0; id < n; ++id) {
    const bool control = vocab.token_types.empty() ||
                         vocab.token_types[id] == static_cast<int32_t>(TokenType::kControl);
    if (!control) continue;
    for (const char* text : kEndOfTurnTexts) {
      if (vocab.tokens[id] == text) add_eos(id);
    }
  }
  return vocab;
}

}  // namespace

absl::StatusOr<std::unique_ptr<Tokenizer>> LoadGgufTokenizer(const GgufFile& file) {
  absl::StatusOr<std::string> model = file.GetString("tokenizer.ggml.model");
  if (!model.ok()) return WithContext(file, model.status());
  if (*model == "llama") {
    return WithContext(file, absl::UnimplementedError(
                                 "tokenizer.ggml.model \"llama\" (SentencePiece) is not supported "
                                 "from GGUF; load the model's tokenizer.model with "
                                 "SentencePieceTokenizer"));
  }
  if (*model != "gpt2") {
    return WithContext(
        file, absl::UnimplementedError(absl::StrCat("tokenizer.ggml.model \"", *model,
                                                    "\" is not supported; supported: gpt2")));
  }
  absl::StatusOr<BpeVocabulary> vocab = ReadBpeVocabulary(file);
  if (!vocab.ok()) return WithContext(file, vocab.status());
  absl::StatusOr<std::unique_ptr<BpeTokenizer>> tokenizer = BpeTokenizer::Create(*std::move(vocab));
  if (!tokenizer.ok()) return WithContext(file, tokenizer.status());
  return std::unique_ptr<Tokenizer>(std::move(*tokenizer));
}

}  // namespace quest::models
