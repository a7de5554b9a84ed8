#ifndef QUEST_MODELS_CHECKPOINT_H_
#define QUEST_MODELS_CHECKPOINT_H_

// A loaded checkpoint: config plus named tensors in Hugging Face naming
// ("model.layers.3.self_attn.q_proj.weight", shape [out, in]), on the CPU, in
// the dtype the file stored (f32/f16/bf16) or f32 for dequantized GGUF data.
// Every loader (safetensors, GGUF) produces this, so the model sees one
// convention: Hugging Face's half-split RoPE layout for q_proj/k_proj.

#include <string>

#include "absl/container/flat_hash_map.h"
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
// model.safetensors, or model.safetensors.index.json naming shards.
absl::StatusOr<Checkpoint> LoadHfCheckpoint(absl::string_view dir);

}  // namespace quest::models

#endif  // QUEST_MODELS_CHECKPOINT_H_
