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
#include "models/llama_config.h"
#include "models/safetensors.h"
#include "models/status_macros.h"

namespace quest::tools {

absl::StatusOr<DType> ParseDTypeFlag(absl::string_view name) {
  if (name == "f32" || name == "float32") return DType::kFloat32;
  if (name == "f16" || name == "float16") return DType::kFloat16;
  if (name == "bf16" || name == "bfloat16") return DType::kBFloat16;
  return absl::InvalidArgumentError(
      absl::StrCat("--dtype=", name, " is not one of f32, f16, bf16"));
}

absl::Status WriteHfCheckpoint(const models::Checkpoint& checkpoint, const std::string& out_dir,
                               DType dtype) {
  if (!checkpoint.config.rope_scaling.freq_factors.empty()) {
    return absl::UnimplementedError(absl::StrCat(
        checkpoint.source,
        ": its RoPE frequency factors (GGUF rope_freqs.weight) have no config.json counterpart; "
        "convert the original Hugging Face checkpoint instead"));
  }
  std::error_code ec;
  std::filesystem::create_directories(out_dir, ec);
  if (ec) {
    return absl::UnavailableError(
        absl::StrCat(out_dir, ": cannot create output directory: ", ec.message()));
  }
  const std::string config_path = absl::StrCat(out_dir, "/config.json");
  {
    std::ofstream out(config_path, std::ios::trunc);
    out << models::LlamaConfigToHfJson(checkpoint.config, dtype);
    out.close();
    if (!out) return absl::UnavailableError(absl::StrCat(config_path, ": cannot write"));
  }
  std::vector<std::pair<std::string, Tensor>> tensors;
  tensors.reserve(checkpoint.tensors.size());
  for (const auto& [name, t] : checkpoint.tensors) {
    if (checkpoint.config.tie_word_embeddings && name == "lm_head.weight") continue;
    tensors.emplace_back(name, t.AsType(dtype));
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
