#ifndef QUEST_MODELS_GGUF_GGUF_TOKENIZER_H_
#define QUEST_MODELS_GGUF_GGUF_TOKENIZER_H_

// The tokenizer a GGUF file carries in its tokenizer.ggml.* metadata.
//
// Supported: tokenizer.ggml.model = "gpt2" (byte-level BPE: GPT-2, SmolLM,
// Llama 3 ...), with tokenizer.ggml.pre naming the pre-tokenizer (see
// PreTokenizer::SupportedNames(); a file without the key gets "gpt2").
// "llama" (SentencePiece) vocabularies in GGUF are Unimplemented: load the
// model's tokenizer.model with SentencePieceTokenizer instead.
//
// End-of-generation ids: tokenizer.ggml.eos_token_id, eot_token_id and
// eom_token_id when present, plus the control tokens whose text marks the end
// of a turn in common chat formats ("<|im_end|>", "<|endoftext|>",
// "<|eot_id|>", "<|eom_id|>", "<|end|>", "<end_of_turn>"), as llama.cpp does.
// BOS comes from tokenizer.ggml.bos_token_id, add_bos from
// tokenizer.ggml.add_bos_token (false when absent).

#include <memory>

#include "absl/status/statusor.h"
#include "models/gguf/gguf_file.h"
#include "runtime/tokenizer/tokenizer.h"

namespace quest::models {

// Errors name the file and the key: a missing or mistyped tokenizer.ggml.*
// key, an unsupported model or pre-tokenizer (listing the supported ones), or
// a vocabulary BpeTokenizer::Create rejects.
absl::StatusOr<std::unique_ptr<Tokenizer>> LoadGgufTokenizer(const GgufFile& file);

}  // namespace quest::models

#endif  // QUEST_MODELS_GGUF_GGUF_TOKENIZER_H_
