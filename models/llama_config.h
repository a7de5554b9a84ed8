#ifndef QUEST_MODELS_LLAMA_CONFIG_H_
#define QUEST_MODELS_LLAMA_CONFIG_H_

// The hyper-parameters of a Llama-family model (Llama 2/3, Mistral, Qwen2,
// SmolLM), in Hugging Face's vocabulary, whatever file they came from.

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "runtime/tensor.h"

namespace quest::models {

// RoPE frequency scaling as Hugging Face's `rope_scaling` describes it.
struct RopeScaling {
  enum class Type { kNone, kLinear, kDynamic, kYarn, kLlama3 };
  Type type = Type::kNone;
  double factor = 1.0;
  // llama3 and yarn: the context the base model was trained at.
  int64_t original_max_position_embeddings = 0;
  // llama3.
  double low_freq_factor = 1.0;
  double high_freq_factor = 4.0;
  // yarn.
  double beta_fast = 32.0;
  double beta_slow = 1.0;
  double attention_factor = 0.0;  // 0: derive from factor (0.1*ln(factor)+1)
  // GGUF's rope_freqs.weight (llama.cpp writes it for Llama 3.1's "llama3"
  // scaling instead of the scaling's parameters): head_dim / 2 divisors of
  // the frequencies, applied after `type`'s own scaling, as llama.cpp does.
  // Empty: none. Hugging Face's config.json has no counterpart.
  std::vector<float> freq_factors;

  bool operator==(const RopeScaling&) const = default;
};

struct LlamaConfig {
  std::string architecture = "LlamaForCausalLM";
  int64_t vocab_size = 0;
  int64_t hidden_size = 0;
  int64_t intermediate_size = 0;
  int64_t num_layers = 0;
  int64_t num_heads = 0;
  int64_t num_kv_heads = 0;
  int64_t head_dim = 0;  // hidden_size / num_heads unless config.json says otherwise
  int64_t max_position_embeddings = 0;
  double rms_norm_eps = 1e-6;
  double rope_theta = 10000.0;
  RopeScaling rope_scaling;
  bool tie_word_embeddings = false;
  // Qwen2 has biases on the q/k/v projections.
  bool attention_bias = false;
  int32_t bos_token_id = -1;
  std::vector<int32_t> eos_token_ids;

  bool operator==(const LlamaConfig&) const = default;
};

// Parses a Hugging Face config.json. `source` (a path) appears in errors.
// Errors: malformed JSON, a missing or mistyped required field, an
// unsupported architecture / model_type or rope_scaling type, inconsistent
// sizes (hidden_size not divisible by num_attention_heads, num_heads not a
// multiple of num_key_value_heads, ...). Each error names `source` and field.
absl::StatusOr<LlamaConfig> ParseHfConfigJson(absl::string_view json_text,
                                              absl::string_view source);

// The Hugging Face config.json text for `config`, the inverse of
// ParseHfConfigJson: parsing it gives `config` back (for any config that
// ParseHfConfigJson can produce). model_type follows the architecture,
// head_dim is always written, a bos_token_id of -1 and an empty
// eos_token_ids are written as null, and "torch_dtype" names `torch_dtype`.
// Also writes the fields transformers' configs expect (hidden_act "silu",
// mlp_bias false, ...), so that from_pretrained loads the directory.
std::string LlamaConfigToHfJson(const LlamaConfig& config, DType torch_dtype);

// Checks internal consistency (positive sizes, GQA divisibility); used by
// every loader. `source` appears in errors.
absl::Status ValidateLlamaConfig(const LlamaConfig& config, absl::string_view source);

}  // namespace quest::models

#endif  // QUEST_MODELS_LLAMA_CONFIG_H_
