// gguf_to_hf: writes a llama GGUF model as a Hugging Face checkpoint.
//
//   gguf_to_hf --gguf=model.gguf --out=DIR [--dtype=f32|f16|bf16]
//
// DIR gets config.json and model.safetensors; transformers'
// LlamaForCausalLM.from_pretrained(DIR) loads them. Quantized GGUF weights
// are dequantized; q/k rows are put back in Hugging Face's RoPE order.

#include <chrono>
#include <cstdio>
#include <string>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "absl/status/statusor.h"
#include "models/gguf/gguf_checkpoint.h"
#include "tools/gguf_to_hf/gguf_to_hf.h"

ABSL_FLAG(std::string, gguf, "", "Path of the llama GGUF file to convert.");
ABSL_FLAG(std::string, out, "", "Output directory (created if missing).");
ABSL_FLAG(std::string, dtype, "f32", "Weight dtype to write: f32, f16 or bf16.");

int main(int argc, char** argv) {
  absl::SetProgramUsageMessage(
      "Converts a llama GGUF file to a Hugging Face checkpoint directory.\n"
      "  gguf_to_hf --gguf=model.gguf --out=DIR [--dtype=f32|f16|bf16]");
  absl::ParseCommandLine(argc, argv);
  const std::string gguf = absl::GetFlag(FLAGS_gguf);
  const std::string out = absl::GetFlag(FLAGS_out);
  if (gguf.empty() || out.empty()) {
    std::fprintf(stderr, "gguf_to_hf: --gguf and --out are required\n%s\n",
                 absl::ProgramUsageMessage().data());
    return 2;
  }
  absl::StatusOr<quest::DType> dtype = quest::tools::ParseDTypeFlag(absl::GetFlag(FLAGS_dtype));
  if (!dtype.ok()) {
    std::fprintf(stderr, "gguf_to_hf: %s\n", std::string(dtype.status().message()).c_str());
    return 2;
  }
  const auto start = std::chrono::steady_clock::now();
  absl::StatusOr<quest::models::Checkpoint> ckpt = quest::models::LoadGgufCheckpoint(gguf);
  if (!ckpt.ok()) {
    std::fprintf(stderr, "gguf_to_hf: %s\n", ckpt.status().ToString().c_str());
    return 1;
  }
  const double load_s =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  if (absl::Status s = quest::tools::WriteHfCheckpoint(*ckpt, out, *dtype); !s.ok()) {
    std::fprintf(stderr, "gguf_to_hf: %s\n", s.ToString().c_str());
    return 1;
  }
  const double total_s =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  std::printf("gguf_to_hf: %s -> %s (%zu tensors, %s; loaded in %.2f s, total %.2f s)\n",
              gguf.c_str(), out.c_str(), ckpt->tensors.size(), quest::DTypeName(*dtype), load_s,
              total_s);
  return 0;
}
