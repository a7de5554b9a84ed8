#include "models/gguf/gguf_test_writer.h"

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>

#include "absl/strings/str_cat.h"
#include "runtime/tensor.h"

namespace quest::models::testing {
namespace {

template <typename T>
std::string Pod(T v) {
  std::string s(sizeof(T), '\0');
  std::memcpy(s.data(), &v, sizeof(T));
  return s;
}

}  // namespace

std::string GgufValueBytes::U8(uint8_t v) { return Pod(v); }
std::string GgufValueBytes::I8(int8_t v) { return Pod(v); }
std::string GgufValueBytes::U16(uint16_t v) { return Pod(v); }
std::string GgufValueBytes::I16(int16_t v) { return Pod(v); }
std::string GgufValueBytes::U32(uint32_t v) { return Pod(v); }
std::string GgufValueBytes::I32(int32_t v) { return Pod(v); }
std::string GgufValueBytes::U64(uint64_t v) { return Pod(v); }
std::string GgufValueBytes::I64(int64_t v) { return Pod(v); }
std::string GgufValueBytes::F32(float v) { return Pod(v); }
std::string GgufValueBytes::F64(double v) { return Pod(v); }
std::string GgufValueBytes::Bool(bool v) { return Pod<uint8_t>(v ? 1 : 0); }
std::string GgufValueBytes::Str(absl::string_view s) {
  return absl::StrCat(Pod<uint64_t>(s.size()), s);
}
std::string GgufValueBytes::Array(GgufValueType elem_type, const std::vector<std::string>& elems) {
  std::string out = Pod(static_cast<uint32_t>(elem_type)) + Pod<uint64_t>(elems.size());
  for (const std::string& e : elems) out += e;
  return out;
}

void GgufTestWriter::AddRaw(absl::string_view key, GgufValueType type, std::string value) {
  kvs_.push_back({std::string(key), type, std::move(value)});
}
void GgufTestWriter::AddString(absl::string_view key, absl::string_view v) {
  AddRaw(key, GgufValueType::kString, GgufValueBytes::Str(v));
}
void GgufTestWriter::AddUint32(absl::string_view key, uint32_t v) {
  AddRaw(key, GgufValueType::kUint32, GgufValueBytes::U32(v));
}
void GgufTestWriter::AddInt32(absl::string_view key, int32_t v) {
  AddRaw(key, GgufValueType::kInt32, GgufValueBytes::I32(v));
}
void GgufTestWriter::AddUint64(absl::string_view key, uint64_t v) {
  AddRaw(key, GgufValueType::kUint64, GgufValueBytes::U64(v));
}
void GgufTestWriter::AddFloat32(absl::string_view key, float v) {
  AddRaw(key, GgufValueType::kFloat32, GgufValueBytes::F32(v));
}
void GgufTestWriter::AddBool(absl::string_view key, bool v) {
  AddRaw(key, GgufValueType::kBool, GgufValueBytes::Bool(v));
}
void GgufTestWriter::AddStringArray(absl::string_view key, const std::vector<std::string>& v) {
  std::vector<std::string> elems;
  for (const std::string& s : v) elems.push_back(GgufValueBytes::Str(s));
  AddRaw(key, GgufValueType::kArray, GgufValueBytes::Array(GgufValueType::kString, elems));
}

void GgufTestWriter::AddTensor(absl::string_view name, std::vector<uint64_t> ne, GgmlType type,
                               std::string data) {
  tensors_.push_back(
      {std::string(name), std::move(ne), static_cast<uint32_t>(type), std::move(data)});
}

void GgufTestWriter::AddF32Tensor(absl::string_view name, std::vector<uint64_t> ne,
                                  const std::vector<float>& values) {
  std::string data(values.size() * 4, '\0');
  std::memcpy(data.data(), values.data(), data.size());
  AddTensor(name, std::move(ne), GgmlType::kF32, std::move(data));
}

void GgufTestWriter::OverrideOffset(size_t i, uint64_t offset) {
  tensors_[i].offset_overridden = true;
  tensors_[i].offset = offset;
}

void GgufTestWriter::OverrideType(size_t i, uint32_t type) { tensors_[i].type = type; }

std::string GgufTestWriter::Build() const {
  std::string out = magic_;
  out += Pod(version_);
  out += Pod<uint64_t>(tensors_.size());
  out += Pod<uint64_t>(kvs_.size());
  for (const Kv& kv : kvs_) {
    out += GgufValueBytes::Str(kv.key);
    out += Pod(static_cast<uint32_t>(kv.type));
    out += kv.value;
  }
  std::string data;
  for (const TensorEntry& t : tensors_) {
    while (data.size() % alignment_ != 0) data.push_back('\0');
    const uint64_t offset = t.offset_overridden ? t.offset : data.size();
    data += t.data;
    out += GgufValueBytes::Str(t.name);
    out += Pod<uint32_t>(t.ne.size());
    for (uint64_t d : t.ne) out += Pod(d);
    out += Pod(t.type);
    out += Pod(offset);
  }
  while (out.size() % alignment_ != 0) out.push_back('\0');
  return out + data;
}

absl::Status GgufTestWriter::WriteTo(const std::string& path) const {
  return WriteFileBytes(path, Build());
}

absl::Status WriteFileBytes(const std::string& path, absl::string_view bytes) {
  std::ofstream f(path, std::ios::binary | std::ios::trunc);
  f.write(bytes.data(), bytes.size());
  f.close();
  if (!f) return absl::InternalError(absl::StrCat("cannot write ", path));
  return absl::OkStatus();
}

std::string TempPath(absl::string_view name) {
  static int counter = 0;
  const char* dir = std::getenv("TEST_TMPDIR");
  return absl::StrCat(dir != nullptr ? dir : "/tmp", "/", name, "_", ++counter);
}

std::string EncodeQ8_0Block(float d, const std::vector<int8_t>& q) {
  std::string out = Pod(FloatToHalf(d));
  for (int8_t v : q) out += Pod(v);
  return out;
}

std::string EncodeQ4_0Block(float d, const std::vector<uint8_t>& nibbles) {
  std::string out = Pod(FloatToHalf(d));
  for (int j = 0; j < 16; ++j) {
    out.push_back(static_cast<char>((nibbles[j] & 0xf) | ((nibbles[j + 16] & 0xf) << 4)));
  }
  return out;
}

std::string EncodeQ4_1Block(float d, float m, const std::vector<uint8_t>& nibbles) {
  std::string out = Pod(FloatToHalf(d)) + Pod(FloatToHalf(m));
  for (int j = 0; j < 16; ++j) {
    out.push_back(static_cast<char>((nibbles[j] & 0xf) | ((nibbles[j + 16] & 0xf) << 4)));
  }
  return out;
}

// Deterministic values that f16 and f32 hold exactly.
std::vector<float> Pattern(int64_t n, int seed) {
  std::vector<float> v(n);
  for (int64_t i = 0; i < n; ++i) {
    v[i] = static_cast<float>(((i * 37 + seed * 101) % 257) - 128) / 64.0f;
  }
  return v;
}

// llama.cpp's converter: GGUF row h*hd + 2*i + j holds HF row h*hd + j*hd/2 + i.
std::vector<float> PermuteForGguf(const std::vector<float>& hf, int64_t n_head, int64_t cols) {
  const int64_t rows = static_cast<int64_t>(hf.size()) / cols, hd = rows / n_head, half = hd / 2;
  std::vector<float> out(hf.size());
  for (int64_t h = 0; h < n_head; ++h) {
    for (int64_t i = 0; i < half; ++i) {
      for (int64_t j = 0; j < 2; ++j) {
        for (int64_t c = 0; c < cols; ++c) {
          out[(h * hd + 2 * i + j) * cols + c] = hf[(h * hd + j * half + i) * cols + c];
        }
      }
    }
  }
  return out;
}

void AddTinyLlamaMetadata(GgufTestWriter& w, absl::string_view arch, uint32_t kv_heads) {
  w.AddString("general.architecture", arch);
  w.AddString("general.name", "tiny");
  const std::string p = absl::StrCat(arch, ".");
  w.AddUint32(p + "block_count", kLayers);
  w.AddUint32(p + "embedding_length", kHidden);
  w.AddUint32(p + "feed_forward_length", kFfn);
  w.AddUint32(p + "attention.head_count", kHeads);
  w.AddUint32(p + "attention.head_count_kv", kv_heads);
  w.AddFloat32(p + "attention.layer_norm_rms_epsilon", 1e-5f);
  w.AddFloat32(p + "rope.freq_base", 100000.0f);
  w.AddUint32(p + "context_length", 256);
  w.AddUint32(p + "rope.dimension_count", kHeadDim);
  std::vector<std::string> tokens;
  for (int i = 0; i < kVocab; ++i) tokens.push_back(absl::StrCat("t", i));
  w.AddStringArray("tokenizer.ggml.tokens", tokens);
  w.AddUint32("tokenizer.ggml.bos_token_id", 1);
  w.AddUint32("tokenizer.ggml.eos_token_id", 2);
}

TinyLlama MakeTinyLlama(const TinyLlamaOptions& opt) {
  TinyLlama m;
  GgufTestWriter& w = m.writer;
  AddTinyLlamaMetadata(w, opt.architecture, opt.kv_heads_key);
  int seed = 0;
  auto f32 = [&](const std::string& gguf, const std::string& hf, std::vector<uint64_t> ne) {
    int64_t n = 1;
    for (uint64_t d : ne) n *= static_cast<int64_t>(d);
    std::vector<float> v = Pattern(n, ++seed);
    w.AddF32Tensor(gguf, ne, v);
    m.hf[hf] = v;
  };
  auto rope_f32 = [&](const std::string& gguf, const std::string& hf, std::vector<uint64_t> ne,
                      int64_t n_head) {
    int64_t n = 1;
    for (uint64_t d : ne) n *= static_cast<int64_t>(d);
    std::vector<float> v = Pattern(n, ++seed);
    // llama.cpp's converter interleaves Llama's q/k RoPE halves, not Qwen2's.
    w.AddF32Tensor(gguf, ne,
                   opt.architecture == "qwen2" ? v : PermuteForGguf(v, n_head, ne.size() == 2 ? ne[0] : 1));
    m.hf[hf] = v;
  };

  // token_embd as Q8_0: one block per row, q = (r*7 + c) % 255 - 127, d = 2^-7.
  {
    std::string data;
    std::vector<float> hf;
    std::vector<int8_t> q(32);
    for (int r = 0; r < kVocab; ++r) {
      for (int c = 0; c < 32; ++c) {
        q[c] = static_cast<int8_t>((r * 7 + c) % 255 - 127);
        hf.push_back(q[c] / 128.0f);
      }
      data += EncodeQ8_0Block(1.0f / 128, q);
    }
    w.AddTensor("token_embd.weight", {kHidden, kVocab}, GgmlType::kQ8_0, data);
    m.hf["model.embed_tokens.weight"] = hf;
  }
  for (int l = 0; l < kLayers; ++l) {
    const std::string g = absl::StrCat("blk.", l, ".");
    const std::string h = absl::StrCat("model.layers.", l, ".");
    f32(g + "attn_norm.weight", h + "input_layernorm.weight", {kHidden});
    rope_f32(g + "attn_q.weight", h + "self_attn.q_proj.weight", {kHidden, kHeads * kHeadDim},
             kHeads);
    rope_f32(g + "attn_k.weight", h + "self_attn.k_proj.weight", {kHidden, kKvHeads * kHeadDim},
             kKvHeads);
    f32(g + "attn_v.weight", h + "self_attn.v_proj.weight", {kHidden, kKvHeads * kHeadDim});
    if (opt.bias) {
      rope_f32(g + "attn_q.bias", h + "self_attn.q_proj.bias", {kHeads * kHeadDim}, kHeads);
      rope_f32(g + "attn_k.bias", h + "self_attn.k_proj.bias", {kKvHeads * kHeadDim}, kKvHeads);
      f32(g + "attn_v.bias", h + "self_attn.v_proj.bias", {kKvHeads * kHeadDim});
    }
    f32(g + "attn_output.weight", h + "self_attn.o_proj.weight", {kHeads * kHeadDim, kHidden});
    f32(g + "ffn_norm.weight", h + "post_attention_layernorm.weight", {kHidden});
    f32(g + "ffn_gate.weight", h + "mlp.gate_proj.weight", {kHidden, kFfn});
    // ffn_up as Q4_1: nibble (r + j) % 16, d = 0.25, m = -1 + l.
    {
      std::string data;
      std::vector<float> hf;
      std::vector<uint8_t> nib(32);
      for (int r = 0; r < kFfn; ++r) {
        for (int j = 0; j < 32; ++j) nib[j] = static_cast<uint8_t>((r + j) % 16);
        for (int j = 0; j < 32; ++j) hf.push_back(nib[j] * 0.25f - 1.0f + l);
        data += EncodeQ4_1Block(0.25f, -1.0f + l, nib);
      }
      w.AddTensor(g + "ffn_up.weight", {kHidden, kFfn}, GgmlType::kQ4_1, data);
      m.hf[h + "mlp.up_proj.weight"] = hf;
    }
    // ffn_down as F16.
    {
      std::vector<float> v = Pattern(kHidden * kFfn, ++seed);
      std::string data;
      for (float x : v) {
        const uint16_t b = FloatToHalf(x);
        data.append(reinterpret_cast<const char*>(&b), 2);
      }
      w.AddTensor(g + "ffn_down.weight", {kFfn, kHidden}, GgmlType::kF16, data);
      m.hf[h + "mlp.down_proj.weight"] = v;
    }
  }
  f32("output_norm.weight", "model.norm.weight", {kHidden});
  if (!opt.tied) f32("output.weight", "lm_head.weight", {kHidden, kVocab});
  return m;
}

}  // namespace quest::models::testing
