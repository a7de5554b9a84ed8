#ifndef QUEST_MODELS_GGUF_GGUF_CHECKPOINT_H_
#define QUEST_MODELS_GGUF_GGUF_CHECKPOINT_H_

// Loads a llama- or qwen2-architecture GGUF file (llama.cpp's format) as a
// Checkpoint in Hugging Face's conventions: HF tensor names, f32 weights
// (quantized blocks dequantized), [out, in] shapes, and q_proj/k_proj rows in
// HF's half-split RoPE order.
//
// That last point matters: for llama, llama.cpp's HF→GGUF converter permutes
// the rows of attn_q and attn_k within each head so that RoPE can rotate
// adjacent pairs (x0,x1),(x2,x3)...; HF rotates halves (x_i, x_{i+d/2}).
// (Qwen2 files keep HF's order: ggml rotates them by halves.) The loader undoes
// the permutation, so every checkpoint the model sees uses one RoPE.

#include <cstdint>
#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "models/checkpoint.h"
#include "models/gguf/gguf_file.h"
#include "models/llama_config.h"
#include "runtime/tensor.h"

namespace quest::models {

// Reads and validates the whole file, dequantizing every tensor to f32 (on
// several threads). Errors name the file and the key or tensor: a missing
// file (NotFound), a malformed one, general.architecture other than "llama"
// or "qwen2", a missing or mistyped <arch>.* key, an unknown tensor name, a tensor type
// that cannot be dequantized (Unimplemented), features the runtime lacks
// (mixture of experts, partial RoPE: Unimplemented), a rope_freqs.weight
// (Llama 3.1's RoPE factors, read into config.rope_scaling.freq_factors)
// whose size is not head_dim / 2 or with a value that is not positive, or a
// config/tensor set that fails ValidateLlamaConfig/ValidateLlamaTensors.
absl::StatusOr<Checkpoint> LoadGgufCheckpoint(const std::string& path);
absl::StatusOr<Checkpoint> LoadGgufCheckpoint(const GgufFile& file);

// The LlamaConfig that the file's general.architecture and <arch>.* and
// tokenizer.ggml.* keys describe (not yet validated). tie_word_embeddings is
// set when the file has no output.weight; attention_bias when blk.0.attn_q.bias
// exists.
absl::StatusOr<LlamaConfig> LlamaConfigFromGguf(const GgufFile& file);

// "blk.3.attn_q.weight" -> "model.layers.3.self_attn.q_proj.weight", etc.
// NotFound for a name with no Hugging Face counterpart.
absl::StatusOr<std::string> HfTensorName(absl::string_view gguf_name);

// Undoes llama.cpp's RoPE row permutation of a q/k projection (weight
// [n_head * head_dim, in] or bias [n_head * head_dim]): for each head h,
// HF row h*hd + j*(hd/2) + i is GGUF row h*hd + 2*i + j (i < hd/2, j in
// {0,1}). InvalidArgument (naming `name`) when the rows do not split into
// n_head heads of even size.
absl::StatusOr<Tensor> UndoRopePermutation(const Tensor& tensor, int64_t n_head,
                                           absl::string_view name);

}  // namespace quest::models

#endif  // QUEST_MODELS_GGUF_GGUF_CHECKPOINT_H_
