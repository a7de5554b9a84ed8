#ifndef QUEST_MODELS_LLAMA_ROPE_H_
#define QUEST_MODELS_LLAMA_ROPE_H_

// Rotary-embedding frequencies for every scaling type Hugging Face's
// config.json describes (none, linear, dynamic NTK, YaRN, llama3), computed
// the way transformers' modeling_rope_utils does, in float32, so logits match;
// then divided by GGUF's per-frequency factors where the config has them
// (RopeScaling::freq_factors, llama.cpp's rope_freqs).

#include <cstdint>
#include <vector>

#include "models/llama_config.h"

namespace quest::models {

struct RopeFrequencies {
  std::vector<float> inv_freq;  // head_dim / 2
  float attention_scaling = 1.0f;
};

// `seq_len` matters for dynamic NTK only: the longest position (+1) the
// current forward step covers.
RopeFrequencies ComputeRopeFrequencies(const LlamaConfig& config, int64_t seq_len);

}  // namespace quest::models

#endif  // QUEST_MODELS_LLAMA_ROPE_H_
