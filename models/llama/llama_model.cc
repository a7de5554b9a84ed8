#include "models/llama/llama_model.h"

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "models/llama/rope.h"

namespace quest::models {
namespace {

absl::StatusOr<Tensor> Take(const Checkpoint& ckpt, const std::string& name,
                            std::vector<int64_t> shape, Backend& backend) {
  auto it = ckpt.tensors.find(name);
  if (it == ckpt.tensors.end()) {
    return absl::NotFoundError(absl::StrCat(ckpt.source, ": missing tensor ", name));
  }
  if (it->second.shape() != shape) {
    return absl::InvalidArgumentError(absl::StrCat(ckpt.source, ": tensor ", name, " has shape ",
                                                   it->second.ShapeString(), ", expected [",
                                                   absl::StrJoin(shape, ", "), "]"));
  }
  return backend.UploadWeight(it->second);
}

}  // namespace

absl::StatusOr<std::unique_ptr<LlamaModel>> LlamaModel::Create(const Checkpoint& ckpt,
                                                               Backend& backend) {
  const LlamaConfig& c = ckpt.config;
  auto model = absl::WrapUnique(new LlamaModel(c, backend));
  const int64_t hd = c.head_dim, q_dim = c.num_heads * hd, kv_dim = c.num_kv_heads * hd;
#define QUEST_TAKE(dst, name, ...)                                  \
  do {                                                              \
    absl::StatusOr<Tensor> t = Take(ckpt, name, __VA_ARGS__, backend); \
    if (!t.ok()) return t.status();                                 \
    dst = *std::move(t);                                            \
  } while (0)
  QUEST_TAKE(model->embed_, "model.embed_tokens.weight", {c.vocab_size, c.hidden_size});
  QUEST_TAKE(model->final_norm_, "model.norm.weight", {c.hidden_size});
  if (c.tie_word_embeddings) {
    model->lm_head_ = model->embed_;
  } else {
    QUEST_TAKE(model->lm_head_, "lm_head.weight", {c.vocab_size, c.hidden_size});
  }
  for (int64_t i = 0; i < c.num_layers; ++i) {
    const std::string p = absl::StrCat("model.layers.", i, ".");
    Layer l;
    QUEST_TAKE(l.input_norm, p + "input_layernorm.weight", {c.hidden_size});
    QUEST_TAKE(l.q, p + "self_attn.q_proj.weight", {q_dim, c.hidden_size});
    QUEST_TAKE(l.k, p + "self_attn.k_proj.weight", {kv_dim, c.hidden_size});
    QUEST_TAKE(l.v, p + "self_attn.v_proj.weight", {kv_dim, c.hidden_size});
    QUEST_TAKE(l.o, p + "self_attn.o_proj.weight", {c.hidden_size, q_dim});
    if (c.attention_bias) {
      QUEST_TAKE(l.q_bias, p + "self_attn.q_proj.bias", {q_dim});
      QUEST_TAKE(l.k_bias, p + "self_attn.k_proj.bias", {kv_dim});
      QUEST_TAKE(l.v_bias, p + "self_attn.v_proj.bias", {kv_dim});
    }
    // Llama with attention_bias also biases o_proj; Qwen2 never does.
    if (ckpt.tensors.contains(p + "self_attn.o_proj.bias")) {
      QUEST_TAKE(l.o_bias, p + "self_attn.o_proj.bias", {c.hidden_size});
    }
    QUEST_TAKE(l.post_norm, p + "post_attention_layernorm.weight", {c.hidden_size});
    QUEST_TAKE(l.gate, p + "mlp.gate_proj.weight", {c.intermediate_size, c.hidden_size});
    QUEST_TAKE(l.up, p + "mlp.up_proj.weight", {c.intermediate_size, c.hidden_size});
    QUEST_TAKE(l.down, p + "mlp.down_proj.weight", {c.hidden_size, c.intermediate_size});
    model->layers_.push_back(std::move(l));
  }
#undef QUEST_TAKE
  return model;
}

cache::CacheGeometry LlamaModel::CacheGeometryFor(int page_size) const {
  return cache::CacheGeometry{static_cast<int>(config_.num_layers), static_cast<int>(config_.num_heads),
                              static_cast<int>(config_.num_kv_heads), static_cast<int>(config_.head_dim),
                              page_size};
}

absl::StatusOr<Tensor> LlamaModel::Forward(absl::Span<const SequenceStep> batch,
                                           cache::KVCache& cache, LogitsMode mode) {
  absl::StatusOr<Tensor> logits = ForwardOnDevice(batch, cache, mode);
  if (!logits.ok()) return logits.status();
  return backend_.ToHost(*logits);
}

absl::StatusOr<Tensor> LlamaModel::ForwardOnDevice(absl::Span<const SequenceStep> batch,
                                                   cache::KVCache& cache, LogitsMode mode) {
  const LlamaConfig& c = config_;
  if (batch.empty()) return absl::InvalidArgumentError("forward: empty batch");

  std::vector<int32_t> ids, positions;
  std::vector<int64_t> offsets;  // first row of each sequence in the flat batch
  int64_t longest = 0;
  for (const SequenceStep& s : batch) {
    if (s.tokens.empty()) {
      return absl::InvalidArgumentError(absl::StrCat("forward: sequence ", s.id, " has no tokens"));
    }
    const int64_t start = cache.Length(s.id);
    offsets.push_back(static_cast<int64_t>(ids.size()));
    for (size_t i = 0; i < s.tokens.size(); ++i) {
      const int32_t t = s.tokens[i];
      if (t < 0 || t >= c.vocab_size) {
        return absl::InvalidArgumentError(absl::StrCat("forward: token id ", t, " at index ", i,
                                                       " of sequence ", s.id, " is outside the vocabulary [0, ",
                                                       c.vocab_size, ")"));
      }
      ids.push_back(t);
      positions.push_back(static_cast<int32_t>(start + i));
    }
    longest = std::max<int64_t>(longest, start + static_cast<int64_t>(s.tokens.size()));
  }
  for (const SequenceStep& s : batch) {
    if (absl::Status st = cache.Reserve(s.id, static_cast<int64_t>(s.tokens.size())); !st.ok()) {
      return st;
    }
  }
  offsets.push_back(static_cast<int64_t>(ids.size()));

  const int64_t T = static_cast<int64_t>(ids.size());
  const int64_t hd = c.head_dim, H = c.num_heads, KV = c.num_kv_heads;
  const RopeFrequencies freqs = ComputeRopeFrequencies(c, longest);
  const RopeParams rope{freqs.inv_freq, freqs.attention_scaling};

  Backend& b = backend_;
  // Activations in the backend's compute dtype (f32 on the CPU); logits are
  // float32 on every backend.
  const DType act = b.activation_dtype();
  Tensor x = b.Allocate(act, {T, c.hidden_size});
  Tensor h = b.Allocate(act, {T, c.hidden_size});
  Tensor q = b.Allocate(act, {T, H, hd});
  Tensor k = b.Allocate(act, {T, KV, hd});
  Tensor v = b.Allocate(act, {T, KV, hd});
  Tensor attn = b.Allocate(act, {T, H * hd});
  Tensor proj = b.Allocate(act, {T, c.hidden_size});
  Tensor gate = b.Allocate(act, {T, c.intermediate_size});
  Tensor up = b.Allocate(act, {T, c.intermediate_size});

  std::vector<Tensor> q_rows(batch.size()), out_rows(batch.size());
  std::vector<cache::AttendRequest> requests(batch.size());

  const float eps = static_cast<float>(c.rms_norm_eps);
  b.Embedding(embed_, ids, x);
  if (!layers_.empty()) b.RmsNorm(x, layers_.front().input_norm, eps, h);
  for (size_t li = 0; li < layers_.size(); ++li) {
    const Layer& l = layers_[li];
    // h holds this layer's input norm of x (the previous layer's last add
    // made it).
    const Backend::LinearOut qkv[] = {{&l.q, c.attention_bias ? &l.q_bias : nullptr, &q},
                                      {&l.k, c.attention_bias ? &l.k_bias : nullptr, &k},
                                      {&l.v, c.attention_bias ? &l.v_bias : nullptr, &v}};
    b.LinearGroup(h, qkv);
    b.Rope(q, positions, rope);
    b.Rope(k, positions, rope);
    // Every sequence's K/V first, then one attention call for the batch
    // (the decode tokens' attention runs together on the GPU).
    for (size_t s = 0; s < batch.size(); ++s) {
      const int64_t begin = offsets[s], end = offsets[s + 1];
      cache.Append(static_cast<int>(li), batch[s].id, k.Slice(begin, end), v.Slice(begin, end));
      q_rows[s] = q.Slice(begin, end);
      out_rows[s] = attn.Slice(begin, end);
      requests[s] = cache::AttendRequest{batch[s].id, &q_rows[s], &out_rows[s]};
    }
    cache.AttendBatch(static_cast<int>(li), requests);
    b.Linear(attn, l.o, l.o_bias.defined() ? &l.o_bias : nullptr, proj);
    b.AddRmsNorm(x, proj, l.post_norm, eps, h);
    const Backend::LinearOut gate_up[] = {{&l.gate, nullptr, &gate}, {&l.up, nullptr, &up}};
    b.LinearGroup(h, gate_up);
    b.SiluMul(gate, up, gate);
    b.Linear(gate, l.down, nullptr, proj);
    if (li + 1 < layers_.size()) {
      b.AddRmsNorm(x, proj, layers_[li + 1].input_norm, eps, h);
    } else {
      b.Add(x, proj);
    }
  }
  for (size_t s = 0; s < batch.size(); ++s) {
    cache.Commit(batch[s].id, static_cast<int64_t>(batch[s].tokens.size()));
  }

  Tensor rows = x;
  if (mode == LogitsMode::kLastToken) {
    rows = b.Allocate(act, {static_cast<int64_t>(batch.size()), c.hidden_size});
    for (size_t s = 0; s < batch.size(); ++s) {
      // A one-row copy through the op set keeps this device-agnostic.
      Tensor dst = rows.Slice(s, s + 1);
      Tensor src = x.Slice(offsets[s + 1] - 1, offsets[s + 1]);
      b.RmsNorm(src, final_norm_, eps, dst);
    }
  } else {
    rows = b.Allocate(act, {T, c.hidden_size});
    b.RmsNorm(x, final_norm_, eps, rows);
  }
  Tensor logits = b.Allocate(DType::kFloat32, {rows.dim(0), c.vocab_size});
  b.Linear(rows, lm_head_, nullptr, logits);
  return logits;
}

}  // namespace quest::models
