#ifndef QUEST_MODELS_CHECKPOINT_H_
#define QUEST_MODELS_CHECKPOINT_H_

// A loaded checkpoint: config plus named tensors in Hugging Face naming
// ("model.layers.3.self_attn.q_proj.weight", shape [out, in]), on the CPU, in
// the dtype the file stored (f32/f16/bf16) or f32 for dequantized GGUF data.
// Every loader (safetensors, GGUF) produces this, so the model sees one
// convention: Hugging Face's half-split RoPE layout for q_proj/k_proj.

#include <cstdint>
#include <string>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "models/llama_config.h"
#include "runtime/tensor.h"

namespace quest::models {

struct Checkpoint {
  LlamaConfig config;
  absl::flat_hash_map<std::string, Tensor> tensors;
  // Where it came from (for messages).
  std::string source;
};

// Loads a Hugging Face checkpoint directory: config.json plus
// model.safetensors, or model.safetensors.index.json naming shards
// ({"weight_map": {tensor: shard file}}). Checks the result with
// ValidateLlamaTensors. Errors name the directory or file and the field or
// tensor: NotFound for a missing directory, config.json or weights file;
// InvalidArgument for malformed contents, a missing tensor or a wrong shape.
// Tensors with dtypes Quest cannot hold (e.g. I64 buffers) are skipped with a
// warning unless the model needs them.
absl::StatusOr<Checkpoint> LoadHfCheckpoint(absl::string_view dir);

// A tensor the Llama model reads, and the shape it must have.
struct ExpectedTensor {
  std::string name;
  std::vector<int64_t> shape;
};

// Every tensor the Llama model needs for `config`, in Hugging Face naming:
// model.embed_tokens.weight [vocab, hidden]; per layer i
// model.layers.i.{input_layernorm,post_attention_layernorm}.weight [hidden],
// self_attn.{q,k,v,o}_proj.weight, self_attn.{q,k,v}_proj.bias when
// attention_bias, mlp.{gate,up,down}_proj.weight; model.norm.weight [hidden];
// lm_head.weight [vocab, hidden] unless tie_word_embeddings.
std::vector<ExpectedTensor> LlamaTensorSpecs(const LlamaConfig& config);

// Checks `checkpoint.config` (ValidateLlamaConfig) and that every tensor of
// LlamaTensorSpecs exists with the right shape; an optional
// self_attn.o_proj.bias (Llama configs with attention_bias) must be [hidden].
// Extra tensors are allowed. InvalidArgument naming checkpoint.source and the
// tensor (missing, or expected vs actual shape).
absl::Status ValidateLlamaTensors(const Checkpoint& checkpoint);

}  // namespace quest::models

#endif  // QUEST_MODELS_CHECKPOINT_H_
