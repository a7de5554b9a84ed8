#ifndef QUEST_MODELS_GGUF_GGUF_TEST_WRITER_H_
#define QUEST_MODELS_GGUF_GGUF_TEST_WRITER_H_

// Test-only: builds GGUF files byte by byte, so tests can write well-formed
// synthetic models and then break them in controlled ways. Little-endian
// host assumed (as GGUF itself is).

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"
#include "models/gguf/gguf_file.h"

namespace quest::models::testing {

// Encodes one metadata value (type tag excluded); for building nested arrays.
class GgufValueBytes {
 public:
  static std::string U8(uint8_t v);
  static std::string I8(int8_t v);
  static std::string U16(uint16_t v);
  static std::string I16(int16_t v);
  static std::string U32(uint32_t v);
  static std::string I32(int32_t v);
  static std::string U64(uint64_t v);
  static std::string I64(int64_t v);
  static std::string F32(float v);
  static std::string F64(double v);
  static std::string Bool(bool v);
  static std::string Str(absl::string_view s);
  // An array payload: element type, count, then the encoded elements.
  static std::string Array(GgufValueType elem_type, const std::vector<std::string>& elems);
};

class GgufTestWriter {
 public:
  // Raw key/value: `value` is the encoded payload for `type`.
  void AddRaw(absl::string_view key, GgufValueType type, std::string value);

  void AddString(absl::string_view key, absl::string_view v);
  void AddUint32(absl::string_view key, uint32_t v);
  void AddInt32(absl::string_view key, int32_t v);
  void AddUint64(absl::string_view key, uint64_t v);
  void AddFloat32(absl::string_view key, float v);
  void AddBool(absl::string_view key, bool v);
  void AddStringArray(absl::string_view key, const std::vector<std::string>& v);

  // A tensor with GGUF dims `ne` (ne[0] fastest) and already-encoded bytes.
  void AddTensor(absl::string_view name, std::vector<uint64_t> ne, GgmlType type, std::string data);
  // An F32 tensor from row-major values of shape [ne[n-1], ..., ne[0]].
  void AddF32Tensor(absl::string_view name, std::vector<uint64_t> ne,
                    const std::vector<float>& values);

  // Knobs for writing broken files.
  void set_magic(std::string magic) { magic_ = std::move(magic); }
  void set_version(uint32_t version) { version_ = version; }
  void set_alignment(uint64_t alignment) { alignment_ = alignment; }
  // Replaces tensor i's offset in the header (data stays where it was).
  void OverrideOffset(size_t i, uint64_t offset);
  // Replaces tensor i's type field in the header.
  void OverrideType(size_t i, uint32_t type);

  // The whole file. Offsets are laid out tightly at `alignment` (written as
  // general.alignment only if added by the caller).
  std::string Build() const;
  // Build() into `path`.
  absl::Status WriteTo(const std::string& path) const;

 private:
  struct Kv {
    std::string key;
    GgufValueType type;
    std::string value;
  };
  struct TensorEntry {
    std::string name;
    std::vector<uint64_t> ne;
    uint32_t type;
    std::string data;
    bool offset_overridden = false;
    uint64_t offset = 0;
  };
  std::string magic_ = "GGUF";
  uint32_t version_ = 3;
  uint64_t alignment_ = 32;
  std::vector<Kv> kvs_;
  std::vector<TensorEntry> tensors_;
};

// Writes `bytes` to `path`.
absl::Status WriteFileBytes(const std::string& path, absl::string_view bytes);
// A fresh path under TEST_TMPDIR (or /tmp).
std::string TempPath(absl::string_view name);

// Block encoders with explicit scales (fp16 bits are rounded from floats).
std::string EncodeQ8_0Block(float d, const std::vector<int8_t>& q);         // 32 q
std::string EncodeQ4_0Block(float d, const std::vector<uint8_t>& nibbles);  // 32 in [0,16)
std::string EncodeQ4_1Block(float d, float m, const std::vector<uint8_t>& nibbles);

// ---- a tiny llama GGUF -----------------------------------------------------

// Hidden 32, 4 query heads and 2 KV heads of size 8, FFN 64, 2 layers,
// vocabulary 16, context 256, rope theta 1e5, eps 1e-5, bos 1, eos 2.
inline constexpr int64_t kHidden = 32, kHeads = 4, kKvHeads = 2, kHeadDim = 8, kFfn = 64,
                         kLayers = 2, kVocab = 16;

// Deterministic values that f16 and f32 hold exactly.
std::vector<float> Pattern(int64_t n, int seed);

// llama.cpp's HF->GGUF q/k permutation, row-major [rows, cols]: GGUF row
// h*hd + 2*i + j holds HF row h*hd + j*hd/2 + i.
std::vector<float> PermuteForGguf(const std::vector<float>& hf, int64_t n_head, int64_t cols);

struct TinyLlamaOptions {
  bool tied = true;
  bool bias = false;
  std::string architecture = "llama";
  // What <arch>.attention.head_count_kv claims.
  uint32_t kv_heads_key = kKvHeads;
};

struct TinyLlama {
  GgufTestWriter writer;
  // What a loader must produce, by Hugging Face name (f32 values).
  std::map<std::string, std::vector<float>> hf;
};

// The metadata of the tiny llama.
void AddTinyLlamaMetadata(GgufTestWriter& w, absl::string_view arch, uint32_t kv_heads = kKvHeads);
// The tiny llama with permuted q/k (in HF's order for "qwen2", as llama.cpp
// writes it), token_embd as Q8_0, ffn_up as Q4_1, ffn_down as F16 and the
// rest F32.
TinyLlama MakeTinyLlama(const TinyLlamaOptions& options = {});

}  // namespace quest::models::testing

#endif  // QUEST_MODELS_GGUF_GGUF_TEST_WRITER_H_
