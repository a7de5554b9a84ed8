#ifndef QUEST_MODELS_LLAMA_LLAMA_MODEL_H_
#define QUEST_MODELS_LLAMA_LLAMA_MODEL_H_

// The Llama-family forward pass (Llama 2 MHA, Llama 3 / Mistral / Qwen2 /
// SmolLM GQA): embedding -> per layer [RMSNorm -> QKV -> RoPE -> KV cache
// append + attend -> O -> residual -> RMSNorm -> SwiGLU MLP -> residual] ->
// RMSNorm -> LM head. Built from backend ops; the KV cache decides what each
// query attends to, so the model knows nothing about cache policies.

#include <memory>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "cache/kv_cache.h"
#include "models/checkpoint.h"
#include "models/llama_config.h"
#include "runtime/backend.h"

namespace quest::models {

// The new tokens of one sequence in a forward step; they continue the
// sequence at position cache.Length(id).
struct SequenceStep {
  cache::SequenceId id = 0;
  absl::Span<const int32_t> tokens;
};

enum class LogitsMode {
  kLastToken,  // [batch, vocab]: the next-token logits of each sequence
  kAllTokens,  // [total new tokens, vocab]: for scoring and parity tests
};

class LlamaModel {
 public:
  // Takes the checkpoint's tensors onto the backend (they are checked by the
  // loader; shapes are re-checked here so a hand-built Checkpoint fails
  // cleanly too).
  static absl::StatusOr<std::unique_ptr<LlamaModel>> Create(const Checkpoint& checkpoint,
                                                            Backend& backend);

  const LlamaConfig& config() const { return config_; }
  cache::CacheGeometry CacheGeometryFor(int page_size) const;

  // One step over a batch of sequences (prefill chunks and decode tokens
  // mixed). Reserves the pages it needs first; on error (token id out of
  // range, KV pool full) nothing is appended. Returns host f32 logits.
  absl::StatusOr<Tensor> Forward(absl::Span<const SequenceStep> batch, cache::KVCache& cache,
                                 LogitsMode mode = LogitsMode::kLastToken);
  // The same, with the f32 logits left on the backend's device (the
  // scheduler samples there through Backend::TopK).
  absl::StatusOr<Tensor> ForwardOnDevice(absl::Span<const SequenceStep> batch, cache::KVCache& cache,
                                         LogitsMode mode = LogitsMode::kLastToken);

  Backend& backend() const { return backend_; }

 private:
  struct Layer {
    Tensor input_norm, q, k, v, o, q_bias, k_bias, v_bias, o_bias, post_norm, gate, up, down;
  };

  LlamaModel(const LlamaConfig& config, Backend& backend) : config_(config), backend_(backend) {}

  LlamaConfig config_;
  Backend& backend_;
  Tensor embed_, final_norm_, lm_head_;
  std::vector<Layer> layers_;
};

}  // namespace quest::models

#endif  // QUEST_MODELS_LLAMA_LLAMA_MODEL_H_
