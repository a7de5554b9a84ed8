#ifndef QUEST_TOOLS_GGUF_TO_HF_GGUF_TO_HF_H_
#define QUEST_TOOLS_GGUF_TO_HF_GGUF_TO_HF_H_

// Converts a llama GGUF file into a Hugging Face checkpoint directory
// (config.json + model.safetensors) that transformers'
// LlamaForCausalLM.from_pretrained loads: dequantized weights, HF names and
// HF's half-split RoPE row order (see models/gguf/gguf_checkpoint.h). The
// tokenizer is not converted.

#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "models/checkpoint.h"
#include "models/llama_config.h"
#include "runtime/tensor.h"

namespace quest::tools {

// "f32" / "f16" / "bf16" -> DType; InvalidArgument otherwise.
absl::StatusOr<DType> ParseDTypeFlag(absl::string_view name);

// Writes `checkpoint` to out_dir/config.json (models::LlamaConfigToHfJson,
// torch_dtype naming `dtype`) and out_dir/model.safetensors (tensors
// converted to `dtype`, sorted by name; lm_head omitted when tied), creating
// out_dir if needed. Unimplemented for a config with RoPE frequency factors
// (GGUF's rope_freqs), which config.json cannot express.
absl::Status WriteHfCheckpoint(const models::Checkpoint& checkpoint, const std::string& out_dir,
                               DType dtype);

// LoadGgufCheckpoint(gguf_path) + WriteHfCheckpoint.
absl::Status ConvertGgufToHf(const std::string& gguf_path, const std::string& out_dir, DType dtype);

}  // namespace quest::tools

#endif  // QUEST_TOOLS_GGUF_TO_HF_GGUF_TO_HF_H_
