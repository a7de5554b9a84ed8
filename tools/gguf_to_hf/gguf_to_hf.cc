#include "tools/gguf_to_hf/gguf_to_hf.h"

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <map>
#include <system_error>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "models/gguf/gguf_checkpoint.h"
#include "models/safetensors.h"
#include "models/status_macros.h"
#include "nlohmann/json.hpp"

namespace quest::tools {
namespace {

using json = nlohmann::json;
using models::LlamaConfig;
using models::RopeScaling;

const char* TorchDTypeName(DType dtype) {
  switch (dtype) {
    case DType::kFloat32: return "float32";
    case DType::kFloat16: return "float16";
    case DType::kBFloat16: return "bfloat16";
  }
  return "float32";
}

json RopeScalingJson(const RopeScaling& s) {
  switch (s.type) {
    case RopeScaling::Type::kNone: return nullptr;
    case RopeScaling::Type::kLinear: return {{"rope_type", "linear"}, {"factor", s.factor}};
    case RopeScaling::Type::kDynamic: {
      json j = {{"rope_type", "dynamic"}, {"factor", s.factor}};
      if (s.original_max_position_embeddings > 0) {
        j["original_max_position_embeddings"] = s.original_max_position_embeddings;
      }
      return j;
    }
    case RopeScaling::Type::kYarn: {
      json j = {{"rope_type", "yarn"},
                {"factor", s.factor},
                {"original_max_position_embeddings", s.original_max_position_embeddings},
                {"beta_fast", s.beta_fast},
                {"beta_slow", s.beta_slow}};
      if (s.attention_factor > 0) j["attention_factor"] = s.attention_factor;
      return j;
    }
    case RopeScaling::Type::kLlama3:
      return {{"rope_type", "llama3"},
              {"factor", s.factor},
              {"low_freq_factor", s.low_freq_factor},
              {"high_freq_factor", s.high_freq_factor},
              {"original_max_position_embeddings", s.original_max_position_embeddings}};
  }
  return nullptr;
}

Tensor ConvertTo(const Tensor& t, DType dtype) {
  const Tensor f32 = t.ToFloat32();
  if (dtype == DType::kFloat32) return f32;
  Tensor out = Tensor::Empty(dtype, f32.shape());
  const float* src = f32.data<float>();
  uint16_t* dst = out.data<uint16_t>();
  const int64_t n = f32.numel();
  if (dtype == DType::kFloat16) {
    for (int64_t i = 0; i < n; ++i) dst[i] = FloatToHalf(src[i]);
  } else {
    for (int64_t i = 0; i < n; ++i) dst[i] = FloatToBFloat16(src[i]);
  }
  return out;
}

}  // namespace

absl::StatusOr<DType> ParseDTypeFlag(absl::string_view name) {
  if (name == "f32" || name == "float32") return DType::kFloat32;
  if (name == "f16" || name == "float16") return DType::kFloat16;
  if (name == "bf16" || name == "bfloat16") return DType::kBFloat16;
  return absl::InvalidArgumentError(
      absl::StrCat("--dtype=", name, " is not one of f32, f16, bf16"));
}

std::string HfConfigJson(const LlamaConfig& c, DType dtype) {
  json j;
  j["architectures"] = {"LlamaForCausalLM"};
  j["model_type"] = "llama";
  j["hidden_size"] = c.hidden_size;
  j["intermediate_size"] = c.intermediate_size;
  j["num_hidden_layers"] = c.num_layers;
  j["num_attention_heads"] = c.num_heads;
  j["num_key_value_heads"] = c.num_kv_heads;
  j["head_dim"] = c.head_dim;
  j["max_position_embeddings"] = c.max_position_embeddings;
  j["rms_norm_eps"] = c.rms_norm_eps;
  j["rope_theta"] = c.rope_theta;
  j["rope_scaling"] = RopeScalingJson(c.rope_scaling);
  j["tie_word_embeddings"] = c.tie_word_embeddings;
  j["vocab_size"] = c.vocab_size;
  j["bos_token_id"] = c.bos_token_id >= 0 ? json(c.bos_token_id) : json(nullptr);
  if (c.eos_token_ids.empty()) {
    j["eos_token_id"] = nullptr;
  } else if (c.eos_token_ids.size() == 1) {
    j["eos_token_id"] = c.eos_token_ids[0];
  } else {
    j["eos_token_id"] = c.eos_token_ids;
  }
  j["hidden_act"] = "silu";
  j["attention_bias"] = c.attention_bias;
  j["attention_dropout"] = 0.0;
  j["mlp_bias"] = false;
  j["initializer_range"] = 0.02;
  j["pretraining_tp"] = 1;
  j["use_cache"] = true;
  j["torch_dtype"] = TorchDTypeName(dtype);
  return j.dump(2) + "\n";
}

absl::Status WriteHfCheckpoint(const models::Checkpoint& checkpoint, const std::string& out_dir,
                               DType dtype) {
  std::error_code ec;
  std::filesystem::create_directories(out_dir, ec);
  if (ec) {
    return absl::UnavailableError(
        absl::StrCat(out_dir, ": cannot create output directory: ", ec.message()));
  }
  const std::string config_path = absl::StrCat(out_dir, "/config.json");
  {
    std::ofstream out(config_path, std::ios::trunc);
    out << HfConfigJson(checkpoint.config, dtype);
    out.close();
    if (!out) return absl::UnavailableError(absl::StrCat(config_path, ": cannot write"));
  }
  std::vector<std::pair<std::string, Tensor>> tensors;
  tensors.reserve(checkpoint.tensors.size());
  for (const auto& [name, t] : checkpoint.tensors) {
    if (checkpoint.config.tie_word_embeddings && name == "lm_head.weight") continue;
    tensors.emplace_back(name, ConvertTo(t, dtype));
  }
  std::sort(tensors.begin(), tensors.end(),
            [](const auto& a, const auto& b) { return a.first < b.first; });
  return models::WriteSafetensors(absl::StrCat(out_dir, "/model.safetensors"), tensors,
                                  {{"format", "pt"}});
}

absl::Status ConvertGgufToHf(const std::string& gguf_path, const std::string& out_dir,
                             DType dtype) {
  MODELS_ASSIGN_OR_RETURN(models::Checkpoint ckpt, models::LoadGgufCheckpoint(gguf_path));
  return WriteHfCheckpoint(ckpt, out_dir, dtype);
}

}  // namespace quest::tools
