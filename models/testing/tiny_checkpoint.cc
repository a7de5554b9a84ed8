#include "models/testing/tiny_checkpoint.h"

#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <string>
#include <system_error>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "models/llama_config.h"
#include "models/safetensors.h"
#include "models/status_macros.h"
#include "nlohmann/json.hpp"

namespace quest::models {
namespace {

namespace fs = std::filesystem;
using json = nlohmann::json;

// SplitMix64: tiny, fast, and the same on every platform (unlike
// std::uniform_real_distribution).
class SplitMix64 {
 public:
  explicit SplitMix64(uint64_t seed) : state_(seed) {}
  uint64_t Next() {
    uint64_t z = (state_ += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
  }
  // Uniform in [-1, 1).
  float Symmetric() { return static_cast<float>((Next() >> 40) * 0x1.0p-24 * 2.0 - 1.0); }

 private:
  uint64_t state_;
};

uint64_t Fnv1a(const std::string& s) {
  uint64_t h = 0xcbf29ce484222325ull;
  for (unsigned char c : s) h = (h ^ c) * 0x100000001b3ull;
  return h;
}

// A tensor of `dtype` holding center + scale * U[-1, 1), seeded by the name.
Tensor RandomTensor(const std::string& name, std::vector<int64_t> shape, DType dtype,
                    uint64_t seed, float center, float scale) {
  SplitMix64 rng(seed * 0x2545f4914f6cdd1dull ^ Fnv1a(name));
  Tensor t = Tensor::Empty(dtype, std::move(shape));
  const int64_t n = t.numel();
  for (int64_t i = 0; i < n; ++i) {
    const float v = center + scale * rng.Symmetric();
    switch (dtype) {
      case DType::kFloat32: t.data<float>()[i] = v; break;
      case DType::kFloat16: t.data<uint16_t>()[i] = FloatToHalf(v); break;
      case DType::kBFloat16: t.data<uint16_t>()[i] = FloatToBFloat16(v); break;
      case DType::kInt32: t.data<int32_t>()[i] = static_cast<int32_t>(v); break;
      case DType::kFloat8E4M3: std::abort();  // f8e4m3 holds Quest page bounds only, never weights
    }
  }
  return t;
}

int64_t HeadDim(const TinyCheckpointOptions& o) {
  return o.head_dim > 0 ? o.head_dim : o.hidden / o.heads;
}

bool HasQkvBias(const TinyCheckpointOptions& o) {
  return o.attention_bias || o.model_type == "qwen2";
}

absl::Status WriteText(const std::string& path, const std::string& text) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  if (!out) return absl::UnavailableError(absl::StrCat(path, ": cannot open for writing"));
  out << text;
  out.close();
  if (!out) return absl::UnavailableError(absl::StrCat(path, ": write failed"));
  return absl::OkStatus();
}

}  // namespace

LlamaConfig TinyLlamaConfig(const TinyCheckpointOptions& o) {
  static const std::map<std::string, std::string> kArch = {
      {"llama", "LlamaForCausalLM"},
      {"mistral", "MistralForCausalLM"},
      {"qwen2", "Qwen2ForCausalLM"},
  };
  LlamaConfig c;
  auto arch = kArch.find(o.model_type);
  c.architecture = arch != kArch.end() ? arch->second : o.model_type;
  c.vocab_size = o.vocab;
  c.hidden_size = o.hidden;
  c.intermediate_size = o.inter;
  c.num_layers = o.layers;
  c.num_heads = o.heads;
  c.num_kv_heads = o.kv_heads;
  c.head_dim = HeadDim(o);
  c.max_position_embeddings = o.max_position_embeddings;
  c.rms_norm_eps = o.rms_norm_eps;
  c.rope_theta = o.rope_theta;
  c.rope_scaling = o.rope_scaling;
  c.tie_word_embeddings = o.tie_embeddings;
  c.attention_bias = HasQkvBias(o);
  c.bos_token_id = o.bos_token_id;
  c.eos_token_ids = {o.eos_token_id};
  return c;
}

std::string TinyLlamaConfigJson(const TinyCheckpointOptions& o) {
  return LlamaConfigToHfJson(TinyLlamaConfig(o), o.dtype);
}

std::vector<std::pair<std::string, Tensor>> MakeTinyLlamaTensors(const TinyCheckpointOptions& o) {
  const int64_t hd = HeadDim(o);
  const int64_t q_out = o.heads * hd;
  const int64_t kv_out = o.kv_heads * hd;
  const float in_hidden = 1.0f / std::sqrt(static_cast<float>(o.hidden));
  const float in_q = 1.0f / std::sqrt(static_cast<float>(q_out));
  const float in_inter = 1.0f / std::sqrt(static_cast<float>(o.inter));
  std::vector<std::pair<std::string, Tensor>> out;
  auto add = [&](std::string name, std::vector<int64_t> shape, float center, float scale) {
    Tensor t = RandomTensor(name, std::move(shape), o.dtype, o.seed, center, scale);
    out.emplace_back(std::move(name), std::move(t));
  };
  add("model.embed_tokens.weight", {o.vocab, o.hidden}, 0.0f, 1.0f);
  for (int64_t i = 0; i < o.layers; ++i) {
    const std::string p = absl::StrCat("model.layers.", i, ".");
    add(p + "input_layernorm.weight", {o.hidden}, 1.0f, 0.1f);
    add(p + "self_attn.q_proj.weight", {q_out, o.hidden}, 0.0f, in_hidden);
    add(p + "self_attn.k_proj.weight", {kv_out, o.hidden}, 0.0f, in_hidden);
    add(p + "self_attn.v_proj.weight", {kv_out, o.hidden}, 0.0f, in_hidden);
    add(p + "self_attn.o_proj.weight", {o.hidden, q_out}, 0.0f, in_q);
    if (HasQkvBias(o)) {
      add(p + "self_attn.q_proj.bias", {q_out}, 0.0f, 0.1f);
      add(p + "self_attn.k_proj.bias", {kv_out}, 0.0f, 0.1f);
      add(p + "self_attn.v_proj.bias", {kv_out}, 0.0f, 0.1f);
    }
    add(p + "post_attention_layernorm.weight", {o.hidden}, 1.0f, 0.1f);
    add(p + "mlp.gate_proj.weight", {o.inter, o.hidden}, 0.0f, in_hidden);
    add(p + "mlp.up_proj.weight", {o.inter, o.hidden}, 0.0f, in_hidden);
    add(p + "mlp.down_proj.weight", {o.hidden, o.inter}, 0.0f, in_inter);
  }
  add("model.norm.weight", {o.hidden}, 1.0f, 0.1f);
  if (!o.tie_embeddings) add("lm_head.weight", {o.vocab, o.hidden}, 0.0f, in_hidden);
  return out;
}

absl::StatusOr<Checkpoint> MakeTinyLlamaCheckpoint(const TinyCheckpointOptions& opts) {
  Checkpoint checkpoint;
  checkpoint.source = "tiny-llama";
  MODELS_ASSIGN_OR_RETURN(checkpoint.config,
                          ParseHfConfigJson(TinyLlamaConfigJson(opts), "tiny-llama"));
  for (auto& [name, tensor] : MakeTinyLlamaTensors(opts)) {
    checkpoint.tensors.emplace(name, std::move(tensor));
  }
  MODELS_RETURN_IF_ERROR(ValidateLlamaTensors(checkpoint));
  return checkpoint;
}

absl::Status WriteTinyLlamaCheckpoint(const std::string& dir, const TinyCheckpointOptions& opts) {
  std::error_code ec;
  fs::create_directories(dir, ec);
  if (ec) return absl::UnavailableError(absl::StrCat(dir, ": cannot create: ", ec.message()));
  const fs::path root(dir);

  MODELS_RETURN_IF_ERROR(WriteText((root / "config.json").string(), TinyLlamaConfigJson(opts)));

  std::vector<std::pair<std::string, Tensor>> tensors = MakeTinyLlamaTensors(opts);
  const std::map<std::string, std::string> metadata = {{"format", "pt"}};
  if (!opts.sharded) {
    return WriteSafetensors((root / "model.safetensors").string(), tensors, metadata);
  }
  // Shard 1: embeddings and the first half of the layers; shard 2: the rest.
  const std::string shard_names[2] = {"model-00001-of-00002.safetensors",
                                      "model-00002-of-00002.safetensors"};
  const std::string split_prefix = absl::StrCat("model.layers.", opts.layers / 2, ".");
  std::vector<std::pair<std::string, Tensor>> shards[2];
  json weight_map = json::object();
  uint64_t total_size = 0;
  int shard = 0;
  for (auto& [name, tensor] : tensors) {
    if (name.rfind(split_prefix, 0) == 0 || name == "model.norm.weight") shard = 1;
    weight_map[name] = shard_names[shard];
    total_size += tensor.nbytes();
    shards[shard].emplace_back(name, tensor);
  }
  for (int s = 0; s < 2; ++s) {
    MODELS_RETURN_IF_ERROR(
        WriteSafetensors((root / shard_names[s]).string(), shards[s], metadata));
  }
  json index;
  index["metadata"] = {{"total_size", total_size}};
  index["weight_map"] = std::move(weight_map);
  return WriteText((root / "model.safetensors.index.json").string(), index.dump(2));
}

}  // namespace quest::models
