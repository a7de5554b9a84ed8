#ifndef QUEST_MODELS_TESTING_TINY_CHECKPOINT_H_
#define QUEST_MODELS_TESTING_TINY_CHECKPOINT_H_

// Tiny Llama-family checkpoints with deterministic random weights, for tests.
//
// Weights depend only on (seed, tensor name, shape, dtype): the same options
// give bit-identical tensors whether written sharded or not, in memory or on
// disk. Linear weights are uniform in +-1/sqrt(fan_in), norms 1 +- 0.1,
// biases +- 0.1 and embeddings +- 1, so activations stay O(1) through the
// layers.

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "models/checkpoint.h"
#include "models/llama_config.h"
#include "runtime/tensor.h"

namespace quest::models {

struct TinyCheckpointOptions {
  int64_t vocab = 64;
  int64_t hidden = 32;
  int64_t inter = 64;
  int64_t layers = 2;
  int64_t heads = 4;
  int64_t kv_heads = 2;
  int64_t head_dim = 0;  // 0: hidden / heads (and no "head_dim" in config.json)
  int64_t max_position_embeddings = 512;
  double rms_norm_eps = 1e-5;
  double rope_theta = 10000.0;
  RopeScaling rope_scaling;  // config.json's "rope_scaling" (kNone writes null)
  // "llama", "mistral" or "qwen2" (qwen2 implies q/k/v biases).
  std::string model_type = "llama";
  bool attention_bias = false;  // llama/mistral: write q/k/v biases
  bool tie_embeddings = false;  // no lm_head.weight; tie_word_embeddings=true
  DType dtype = DType::kFloat32;
  // Two shards (model-0000{1,2}-of-00002.safetensors) plus
  // model.safetensors.index.json instead of model.safetensors.
  bool sharded = false;
  uint64_t seed = 1;
  int32_t bos_token_id = 1;
  int32_t eos_token_id = 2;
};

// The model config `opts` describe.
LlamaConfig TinyLlamaConfig(const TinyCheckpointOptions& opts);

// The config.json text for `opts` (LlamaConfigToHfJson of TinyLlamaConfig).
std::string TinyLlamaConfigJson(const TinyCheckpointOptions& opts);

// The checkpoint's tensors, in a fixed order (embeddings, layers, norm, head).
std::vector<std::pair<std::string, Tensor>> MakeTinyLlamaTensors(const TinyCheckpointOptions& opts);

// The checkpoint in memory (config parsed from TinyLlamaConfigJson), as
// LoadHfCheckpoint would return it from WriteTinyLlamaCheckpoint's output
// (source = "tiny-llama").
absl::StatusOr<Checkpoint> MakeTinyLlamaCheckpoint(const TinyCheckpointOptions& opts);

// Writes config.json and model.safetensors (or two shards + index) into
// `dir`, creating it if needed.
absl::Status WriteTinyLlamaCheckpoint(const std::string& dir, const TinyCheckpointOptions& opts);

}  // namespace quest::models

#endif  // QUEST_MODELS_TESTING_TINY_CHECKPOINT_H_
