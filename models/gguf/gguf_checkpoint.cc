#include "models/gguf/gguf_checkpoint.h"

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <memory>
#include <mutex>
#include <thread>
#include <utility>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "models/status_macros.h"

namespace quest::models {
namespace {

// Threads that dequantize tensors side by side; more buys little because
// each one streams its tensor through memory once.
constexpr int kMaxLoadThreads = 8;

struct NameMapping {
  const char* gguf;
  const char* hf;
};

constexpr NameMapping kTopLevelNames[] = {
    {"token_embd.weight", "model.embed_tokens.weight"},
    {"output_norm.weight", "model.norm.weight"},
    {"output.weight", "lm_head.weight"},
};

constexpr NameMapping kLayerNames[] = {
    {"attn_norm.weight", "input_layernorm.weight"},
    {"attn_q.weight", "self_attn.q_proj.weight"},
    {"attn_k.weight", "self_attn.k_proj.weight"},
    {"attn_v.weight", "self_attn.v_proj.weight"},
    {"attn_output.weight", "self_attn.o_proj.weight"},
    {"attn_q.bias", "self_attn.q_proj.bias"},
    {"attn_k.bias", "self_attn.k_proj.bias"},
    {"attn_v.bias", "self_attn.v_proj.bias"},
    {"attn_output.bias", "self_attn.o_proj.bias"},
    {"ffn_norm.weight", "post_attention_layernorm.weight"},
    {"ffn_gate.weight", "mlp.gate_proj.weight"},
    {"ffn_up.weight", "mlp.up_proj.weight"},
    {"ffn_down.weight", "mlp.down_proj.weight"},
};

absl::StatusOr<int64_t> RequiredInt(const GgufFile& f, absl::string_view key) {
  return f.GetInt(key);
}

absl::StatusOr<int64_t> OptionalInt(const GgufFile& f, absl::string_view key, int64_t fallback) {
  if (!f.Has(key)) return fallback;
  return f.GetInt(key);
}

absl::StatusOr<double> OptionalFloat(const GgufFile& f, absl::string_view key, double fallback) {
  if (!f.Has(key)) return fallback;
  return f.GetFloat(key);
}

// GGUF stores most floats as f32, so 1e-5 reads back as 9.99999974738e-06.
// Hugging Face configs hold the decimal the model was made with; the shortest
// decimal that rounds to the same f32 recovers it.
absl::StatusOr<double> Float32Key(const GgufFile& f, absl::string_view key, double fallback) {
  if (!f.Has(key)) return fallback;
  MODELS_ASSIGN_OR_RETURN(double v, f.GetFloat(key));
  if (f.Find(key)->type != GgufValueType::kFloat32 || !std::isfinite(v)) return v;
  const float target = static_cast<float>(v);
  for (int digits = 1; digits <= 9; ++digits) {
    const double d = std::strtod(absl::StrFormat("%.*g", digits, target).c_str(), nullptr);
    if (static_cast<float>(d) == target) return d;
  }
  return v;
}

absl::StatusOr<int32_t> TokenId(const GgufFile& f, absl::string_view key) {
  MODELS_ASSIGN_OR_RETURN(int64_t id, f.GetInt(key));
  if (id < 0 || id > std::numeric_limits<int32_t>::max()) {
    return absl::InvalidArgumentError(
        absl::StrFormat("%s: metadata key '%s' is %d, not a valid token id", f.path(), key, id));
  }
  return static_cast<int32_t>(id);
}

// The architectures read here and their Hugging Face class. llama.cpp
// writes both with the same tensor names; Qwen2 adds q/k/v biases and keeps
// HF's q/k row order (ggml rotates it NEOX-style, as HF does).
struct GgufArch {
  absl::string_view name;
  absl::string_view hf_class;
  bool permuted_qk;  // llama.cpp's converter interleaved the RoPE halves
};
constexpr GgufArch kGgufArchs[] = {
    {"llama", "LlamaForCausalLM", true},
    {"qwen2", "Qwen2ForCausalLM", false},
};

absl::StatusOr<const GgufArch*> ReadArch(const GgufFile& f) {
  MODELS_ASSIGN_OR_RETURN(std::string arch, f.GetString("general.architecture"));
  for (const GgufArch& a : kGgufArchs) {
    if (a.name == arch) return &a;
  }
  return absl::InvalidArgumentError(absl::StrFormat(
      "%s: metadata key 'general.architecture' is \"%s\": only \"llama\" and \"qwen2\" GGUF models "
      "are supported",
      f.path(), arch));
}

// The architecture's metadata keys: key("block_count") is "<arch>.block_count".
class ArchKeys {
 public:
  explicit ArchKeys(const GgufArch& arch) : prefix_(absl::StrCat(arch.name, ".")) {}
  std::string operator()(absl::string_view suffix) const { return absl::StrCat(prefix_, suffix); }

 private:
  std::string prefix_;
};

absl::Status ReadRopeScaling(const GgufFile& f, const ArchKeys& key, int64_t context_length,
                             RopeScaling* out) {
  const std::string& path = f.path();
  std::string type = "none";
  if (f.Has(key("rope.scaling.type"))) {
    MODELS_ASSIGN_OR_RETURN(type, f.GetString(key("rope.scaling.type")));
  } else if (f.Has(key("rope.scale_linear"))) {
    // Older files: a bare linear factor.
    MODELS_ASSIGN_OR_RETURN(double factor, f.GetFloat(key("rope.scale_linear")));
    if (factor != 1.0) {
      type = "linear";
    }
  }
  if (type == "none") return absl::OkStatus();
  double factor = 0;
  if (f.Has(key("rope.scaling.factor"))) {
    MODELS_ASSIGN_OR_RETURN(factor, Float32Key(f, key("rope.scaling.factor"), 0.0));
  } else if (f.Has(key("rope.scale_linear"))) {
    MODELS_ASSIGN_OR_RETURN(factor, Float32Key(f, key("rope.scale_linear"), 0.0));
  } else {
    return absl::InvalidArgumentError(absl::StrFormat(
        "%s: metadata key '%s' is missing (rope scaling type '%s')", path, key("rope.scaling.factor"),
        type));
  }
  if (!(factor > 0)) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "%s: metadata key '%s' is %g: must be positive", path, key("rope.scaling.factor"), factor));
  }
  if (type == "linear") {
    out->type = RopeScaling::Type::kLinear;
    out->factor = factor;
    return absl::OkStatus();
  }
  if (type == "yarn") {
    out->type = RopeScaling::Type::kYarn;
    out->factor = factor;
    MODELS_ASSIGN_OR_RETURN(
        out->original_max_position_embeddings,
        OptionalInt(f, key("rope.scaling.original_context_length"), context_length));
    MODELS_ASSIGN_OR_RETURN(double attn_factor,
                            OptionalFloat(f, key("rope.scaling.attn_factor"), 1.0));
    if (attn_factor != 1.0) {
      // llama.cpp multiplies its own YaRN magnitude scale by this; HF has no
      // field with the same meaning.
      return absl::UnimplementedError(
          absl::StrFormat("%s: metadata key '%s' = %g is not supported",
                          path, key("rope.scaling.attn_factor"), attn_factor));
    }
    MODELS_ASSIGN_OR_RETURN(double beta_fast,
                            Float32Key(f, key("rope.scaling.yarn_beta_fast"), 0.0));
    MODELS_ASSIGN_OR_RETURN(double beta_slow,
                            Float32Key(f, key("rope.scaling.yarn_beta_slow"), 0.0));
    if (beta_fast != 0) out->beta_fast = beta_fast;
    if (beta_slow != 0) out->beta_slow = beta_slow;
    return absl::OkStatus();
  }
  return absl::UnimplementedError(absl::StrFormat(
      "%s: metadata key '%s' is '%s': unsupported (supported: none, linear, "
      "yarn)",
      path, key("rope.scaling.type"), type));
}

// llama.cpp's Llama 3.1 conversion stores the "llama3" RoPE scaling as
// per-frequency divisors in this tensor (a config value, not a weight).
constexpr absl::string_view kRopeFreqsTensor = "rope_freqs.weight";

absl::Status ReadRopeFreqFactors(const GgufFile& f, int64_t head_dim, RopeScaling* out) {
  if (f.FindTensor(kRopeFreqsTensor) == nullptr) return absl::OkStatus();
  MODELS_ASSIGN_OR_RETURN(Tensor t, f.ReadTensorFloat32(kRopeFreqsTensor));
  if (t.numel() != head_dim / 2) {
    return absl::InvalidArgumentError(
        absl::StrFormat("%s: tensor '%s' has %d values; the head size %d needs %d (one per frequency)",
                        f.path(), kRopeFreqsTensor, t.numel(), head_dim, head_dim / 2));
  }
  out->freq_factors.assign(t.data<float>(), t.data<float>() + t.numel());
  for (size_t i = 0; i < out->freq_factors.size(); ++i) {
    const float v = out->freq_factors[i];
    if (!(v > 0) || !std::isfinite(v)) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "%s: tensor '%s' value %d is %g: frequency factors must be positive", f.path(),
          kRopeFreqsTensor, i, v));
    }
  }
  return absl::OkStatus();
}

// Which tensors need the RoPE permutation undone, and with how many heads
// (none of an architecture the converter leaves in HF's order).
int64_t RopeHeadsFor(const GgufArch& arch, absl::string_view gguf_name, const LlamaConfig& config) {
  if (!arch.permuted_qk) return 0;
  if (absl::EndsWith(gguf_name, ".attn_q.weight") || absl::EndsWith(gguf_name, ".attn_q.bias")) {
    return config.num_heads;
  }
  if (absl::EndsWith(gguf_name, ".attn_k.weight") || absl::EndsWith(gguf_name, ".attn_k.bias")) {
    return config.num_kv_heads;
  }
  return 0;
}

}  // namespace

absl::StatusOr<std::string> HfTensorName(absl::string_view gguf_name) {
  for (const NameMapping& m : kTopLevelNames) {
    if (gguf_name == m.gguf) return std::string(m.hf);
  }
  if (absl::StartsWith(gguf_name, "blk.")) {
    const absl::string_view rest = gguf_name.substr(4);
    const size_t dot = rest.find('.');
    int64_t layer = 0;
    if (dot != absl::string_view::npos && dot > 0 &&
        absl::SimpleAtoi(rest.substr(0, dot), &layer) && layer >= 0 &&
        rest.substr(0, dot) == absl::StrCat(layer)) {
      const absl::string_view suffix = rest.substr(dot + 1);
      for (const NameMapping& m : kLayerNames) {
        if (suffix == m.gguf) return absl::StrCat("model.layers.", layer, ".", m.hf);
      }
    }
  }
  return absl::NotFoundError(
      absl::StrCat("GGUF tensor '", gguf_name, "' has no Hugging Face Llama counterpart"));
}

absl::StatusOr<Tensor> UndoRopePermutation(const Tensor& tensor, int64_t n_head,
                                           absl::string_view name) {
  if (tensor.dtype() != DType::kFloat32 || tensor.rank() < 1 || tensor.rank() > 2) {
    return absl::InvalidArgumentError(
        absl::StrCat("tensor '", name, "': RoPE un-permutation needs an f32 matrix or vector, got ",
                     tensor.ShapeString()));
  }
  const int64_t rows = tensor.dim(0);
  if (n_head <= 0 || rows % n_head != 0 || (rows / n_head) % 2 != 0) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "tensor '%s': %d rows do not split into %d heads of even size, so its RoPE row "
        "permutation cannot be undone",
        name, rows, n_head));
  }
  const int64_t hd = rows / n_head, half = hd / 2;
  const int64_t cols = tensor.rank() == 2 ? tensor.dim(1) : 1;
  const size_t row_bytes = static_cast<size_t>(cols) * sizeof(float);
  Tensor out = Tensor::Empty(DType::kFloat32, tensor.shape());
  const float* src = tensor.data<float>();
  float* dst = out.data<float>();
  for (int64_t h = 0; h < n_head; ++h) {
    for (int64_t i = 0; i < half; ++i) {
      for (int64_t j = 0; j < 2; ++j) {
        const int64_t hf_row = h * hd + j * half + i;
        const int64_t gguf_row = h * hd + 2 * i + j;
        std::memcpy(dst + hf_row * cols, src + gguf_row * cols, row_bytes);
      }
    }
  }
  return out;
}

absl::StatusOr<LlamaConfig> LlamaConfigFromGguf(const GgufFile& f) {
  const std::string& path = f.path();
  MODELS_ASSIGN_OR_RETURN(const GgufArch* arch, ReadArch(f));
  const ArchKeys key(*arch);
  MODELS_ASSIGN_OR_RETURN(int64_t experts, OptionalInt(f, key("expert_count"), 0));
  if (experts > 0) {
    return absl::UnimplementedError(absl::StrFormat(
        "%s: metadata key '%s' is %d: mixture-of-experts models are not "
        "supported",
        path, key("expert_count"), experts));
  }
  LlamaConfig c;
  c.architecture = std::string(arch->hf_class);
  MODELS_ASSIGN_OR_RETURN(c.num_layers, RequiredInt(f, key("block_count")));
  MODELS_ASSIGN_OR_RETURN(c.hidden_size, RequiredInt(f, key("embedding_length")));
  MODELS_ASSIGN_OR_RETURN(c.intermediate_size, RequiredInt(f, key("feed_forward_length")));
  MODELS_ASSIGN_OR_RETURN(c.num_heads, RequiredInt(f, key("attention.head_count")));
  MODELS_ASSIGN_OR_RETURN(c.num_kv_heads,
                          OptionalInt(f, key("attention.head_count_kv"), c.num_heads));
  MODELS_ASSIGN_OR_RETURN(c.max_position_embeddings, RequiredInt(f, key("context_length")));
  if (!f.Has(key("attention.layer_norm_rms_epsilon"))) {
    return f.GetFloat(key("attention.layer_norm_rms_epsilon")).status();  // NotFound
  }
  MODELS_ASSIGN_OR_RETURN(c.rms_norm_eps,
                          Float32Key(f, key("attention.layer_norm_rms_epsilon"), 0.0));
  MODELS_ASSIGN_OR_RETURN(c.rope_theta, Float32Key(f, key("rope.freq_base"), 10000.0));
  if (c.num_heads <= 0) {
    return absl::InvalidArgumentError(
        absl::StrFormat("%s: metadata key '%s' is %d: must be positive",
                        path, key("attention.head_count"), c.num_heads));
  }
  MODELS_ASSIGN_OR_RETURN(
      c.head_dim, OptionalInt(f, key("attention.key_length"), c.hidden_size / c.num_heads));
  MODELS_ASSIGN_OR_RETURN(int64_t value_length,
                          OptionalInt(f, key("attention.value_length"), c.head_dim));
  if (value_length != c.head_dim) {
    return absl::UnimplementedError(absl::StrFormat(
        "%s: metadata key '%s' is %d but key_length is %d: different "
        "key and value head sizes are not supported",
        path, key("attention.value_length"), value_length, c.head_dim));
  }
  MODELS_ASSIGN_OR_RETURN(int64_t rope_dims,
                          OptionalInt(f, key("rope.dimension_count"), c.head_dim));
  if (rope_dims != c.head_dim) {
    return absl::UnimplementedError(absl::StrFormat(
        "%s: metadata key '%s' is %d but the head size is %d: partial "
        "rotary embeddings are not supported",
        path, key("rope.dimension_count"), rope_dims, c.head_dim));
  }
  MODELS_RETURN_IF_ERROR(ReadRopeScaling(f, key, c.max_position_embeddings, &c.rope_scaling));
  MODELS_RETURN_IF_ERROR(ReadRopeFreqFactors(f, c.head_dim, &c.rope_scaling));

  if (f.Has("tokenizer.ggml.tokens")) {
    MODELS_ASSIGN_OR_RETURN(c.vocab_size, f.GetArrayLength("tokenizer.ggml.tokens"));
  } else if (f.Has(key("vocab_size"))) {
    MODELS_ASSIGN_OR_RETURN(c.vocab_size, f.GetInt(key("vocab_size")));
  } else if (const GgufTensorInfo* embd = f.FindTensor("token_embd.weight");
             embd != nullptr && embd->ne.size() == 2) {
    c.vocab_size = embd->ne[1];
  } else {
    return absl::InvalidArgumentError(absl::StrFormat(
        "%s: cannot tell the vocabulary size: no 'tokenizer.ggml.tokens', '%s' or "
        "2-d 'token_embd.weight'",
        path, key("vocab_size")));
  }
  if (f.Has("tokenizer.ggml.bos_token_id")) {
    MODELS_ASSIGN_OR_RETURN(c.bos_token_id, TokenId(f, "tokenizer.ggml.bos_token_id"));
  }
  if (f.Has("tokenizer.ggml.eos_token_id")) {
    MODELS_ASSIGN_OR_RETURN(int32_t eos, TokenId(f, "tokenizer.ggml.eos_token_id"));
    c.eos_token_ids = {eos};
  }
  c.tie_word_embeddings = f.FindTensor("output.weight") == nullptr;
  c.attention_bias = f.FindTensor("blk.0.attn_q.bias") != nullptr;
  return c;
}

absl::StatusOr<Checkpoint> LoadGgufCheckpoint(const GgufFile& f) {
  Checkpoint ckpt;
  ckpt.source = f.path();
  MODELS_ASSIGN_OR_RETURN(const GgufArch* arch, ReadArch(f));
  const ArchKeys key(*arch);
  MODELS_ASSIGN_OR_RETURN(ckpt.config, LlamaConfigFromGguf(f));
  MODELS_RETURN_IF_ERROR(ValidateLlamaConfig(ckpt.config, f.path()));

  // Names first, so a stray tensor fails before any dequantization. The
  // RoPE factors are config (LlamaConfigFromGguf read them), not weights.
  std::vector<GgufTensorInfo> infos;
  for (const GgufTensorInfo& info : f.tensors()) {
    if (info.name != kRopeFreqsTensor) infos.push_back(info);
  }
  std::vector<std::string> hf_names(infos.size());
  for (size_t i = 0; i < infos.size(); ++i) {
    absl::StatusOr<std::string> name = HfTensorName(infos[i].name);
    if (!name.ok()) {
      return absl::InvalidArgumentError(
          absl::StrCat(f.path(), ": unexpected tensor '", infos[i].name, "' (",
                       GgmlTypeName(infos[i].type), "): no Hugging Face Llama counterpart"));
    }
    if (absl::StartsWith(infos[i].name, "blk.")) {
      // HfTensorName accepted it, so "blk.<digits>." is there.
      const absl::string_view rest = absl::string_view(infos[i].name).substr(4);
      int64_t layer = -1;
      (void)absl::SimpleAtoi(rest.substr(0, rest.find('.')), &layer);
      if (layer >= ckpt.config.num_layers) {
        return absl::InvalidArgumentError(
            absl::StrFormat("%s: tensor '%s' belongs to layer %d, but '%s' is %d",
                            f.path(), infos[i].name, layer, key("block_count"), ckpt.config.num_layers));
      }
    }
    hf_names[i] = *std::move(name);
  }

  std::vector<Tensor> tensors(infos.size());
  std::atomic<size_t> next{0};
  std::mutex error_mu;
  absl::Status error;
  auto worker = [&] {
    for (size_t i = next++; i < infos.size(); i = next++) {
      {
        std::lock_guard<std::mutex> lock(error_mu);
        if (!error.ok()) return;
      }
      absl::StatusOr<Tensor> t = f.ReadTensorFloat32(infos[i].name);
      if (t.ok()) {
        if (const int64_t heads = RopeHeadsFor(*arch, infos[i].name, ckpt.config); heads > 0) {
          t = UndoRopePermutation(*t, heads, absl::StrCat(f.path(), ": ", infos[i].name));
        }
      }
      if (!t.ok()) {
        std::lock_guard<std::mutex> lock(error_mu);
        if (error.ok()) error = t.status();
        return;
      }
      tensors[i] = *std::move(t);
    }
  };
  const int threads = static_cast<int>(
      std::min<size_t>({static_cast<size_t>(std::max(1u, std::thread::hardware_concurrency())),
                        static_cast<size_t>(kMaxLoadThreads), std::max<size_t>(1, infos.size())}));
  std::vector<std::thread> pool;
  for (int t = 1; t < threads; ++t) pool.emplace_back(worker);
  worker();
  for (std::thread& th : pool) th.join();
  if (!error.ok()) return error;

  for (size_t i = 0; i < infos.size(); ++i) {
    ckpt.tensors.emplace(std::move(hf_names[i]), std::move(tensors[i]));
  }
  MODELS_RETURN_IF_ERROR(ValidateLlamaTensors(ckpt));
  return ckpt;
}

absl::StatusOr<Checkpoint> LoadGgufCheckpoint(const std::string& path) {
  MODELS_ASSIGN_OR_RETURN(std::unique_ptr<GgufFile> file, GgufFile::Open(path));
  return LoadGgufCheckpoint(*file);
}

}  // namespace quest::models
