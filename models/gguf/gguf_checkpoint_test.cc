#include "models/gguf/gguf_checkpoint.h"

#include <cmath>
#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "models/gguf/gguf_test_writer.h"

namespace quest::models {
namespace {

using ::quest::models::testing::AddTinyLlamaMetadata;
using ::quest::models::testing::GgufTestWriter;
using ::quest::models::testing::kFfn;
using ::quest::models::testing::kHeadDim;
using ::quest::models::testing::kHeads;
using ::quest::models::testing::kHidden;
using ::quest::models::testing::kKvHeads;
using ::quest::models::testing::kLayers;
using ::quest::models::testing::kVocab;
using ::quest::models::testing::MakeTinyLlama;
using ::quest::models::testing::Pattern;
using ::quest::models::testing::PermuteForGguf;
using ::quest::models::testing::TempPath;
using ::quest::models::testing::TinyLlama;
using ::testing::ElementsAre;
using ::testing::HasSubstr;

std::string Write(const GgufTestWriter& w) {
  const std::string path = TempPath("tiny_llama.gguf");
  EXPECT_TRUE(w.WriteTo(path).ok());
  return path;
}

std::vector<float> Values(const Tensor& t) {
  return std::vector<float>(t.data<float>(), t.data<float>() + t.numel());
}

TEST(UndoRopePermutationTest, HandWorkedExample) {
  // One head of size 4: GGUF rows are HF rows [0, 2, 1, 3].
  Tensor t = Tensor::FromFloats({0, 2, 1, 3}, {4});
  absl::StatusOr<Tensor> out = UndoRopePermutation(t, 1, "x");
  ASSERT_TRUE(out.ok()) << out.status();
  EXPECT_THAT(Values(*out), ElementsAre(0, 1, 2, 3));
  // Two heads of size 8 (rows of 2 columns): GGUF row 2i+j is HF row 4j+i.
  std::vector<float> gguf;
  for (int h = 0; h < 2; ++h) {
    for (int r : {0, 4, 1, 5, 2, 6, 3, 7}) {
      gguf.push_back(h * 8 + r);
      gguf.push_back(-(h * 8 + r));
    }
  }
  out = UndoRopePermutation(Tensor::FromFloats(gguf, {16, 2}), 2, "x");
  ASSERT_TRUE(out.ok()) << out.status();
  for (int r = 0; r < 16; ++r) {
    EXPECT_EQ(out->data<float>()[2 * r], r);
    EXPECT_EQ(out->data<float>()[2 * r + 1], -r);
  }
}

TEST(UndoRopePermutationTest, RejectsRowsThatDoNotSplitIntoHeads) {
  absl::Status s = UndoRopePermutation(Tensor::Zeros(DType::kFloat32, {12, 3}), 4, "q").status();
  EXPECT_THAT(s.message(), HasSubstr("tensor 'q': 12 rows do not split into 4 heads of even size"));
  EXPECT_FALSE(UndoRopePermutation(Tensor::Zeros(DType::kFloat32, {10, 3}), 4, "q").ok());
  EXPECT_FALSE(UndoRopePermutation(Tensor::Zeros(DType::kFloat32, {8}), 0, "q").ok());
}

// The reason for the un-permutation: pair-wise RoPE on GGUF rows equals HF's
// half-split RoPE on the un-permuted rows (up to the same row order).
TEST(UndoRopePermutationTest, PairwiseRopeOnGgufEqualsHalfSplitRopeOnHf) {
  const int64_t hd = 8, half = hd / 2, in = 5, pos = 7;
  const std::vector<float> w_hf = Pattern(hd * in, 3);
  const std::vector<float> w_gguf = PermuteForGguf(w_hf, 1, in);
  absl::StatusOr<Tensor> back = UndoRopePermutation(Tensor::FromFloats(w_gguf, {hd, in}), 1, "q");
  ASSERT_TRUE(back.ok());
  EXPECT_EQ(Values(*back), w_hf);

  const std::vector<float> x = Pattern(in, 9);
  auto matvec = [&](const std::vector<float>& w) {
    std::vector<double> y(hd, 0.0);
    for (int64_t r = 0; r < hd; ++r) {
      for (int64_t c = 0; c < in; ++c) y[r] += w[r * in + c] * x[c];
    }
    return y;
  };
  std::vector<double> q_gguf = matvec(w_gguf), q_hf = matvec(w_hf);
  for (int64_t i = 0; i < half; ++i) {
    const double theta = pos * std::pow(10000.0, -2.0 * i / hd);
    const double c = std::cos(theta), s = std::sin(theta);
    // llama.cpp (normal RoPE): rotate (x[2i], x[2i+1]).
    const double a = q_gguf[2 * i], b = q_gguf[2 * i + 1];
    q_gguf[2 * i] = a * c - b * s;
    q_gguf[2 * i + 1] = a * s + b * c;
    // Hugging Face: rotate (x[i], x[i + d/2]).
    const double u = q_hf[i], v = q_hf[i + half];
    q_hf[i] = u * c - v * s;
    q_hf[i + half] = u * s + v * c;
  }
  for (int64_t i = 0; i < half; ++i) {
    for (int64_t j = 0; j < 2; ++j) {
      EXPECT_NEAR(q_hf[j * half + i], q_gguf[2 * i + j], 1e-9) << i << "," << j;
    }
  }
}

TEST(HfTensorNameTest, MapsEveryLlamaTensor) {
  EXPECT_EQ(*HfTensorName("token_embd.weight"), "model.embed_tokens.weight");
  EXPECT_EQ(*HfTensorName("output_norm.weight"), "model.norm.weight");
  EXPECT_EQ(*HfTensorName("output.weight"), "lm_head.weight");
  EXPECT_EQ(*HfTensorName("blk.12.attn_norm.weight"), "model.layers.12.input_layernorm.weight");
  EXPECT_EQ(*HfTensorName("blk.0.attn_q.weight"), "model.layers.0.self_attn.q_proj.weight");
  EXPECT_EQ(*HfTensorName("blk.0.attn_k.weight"), "model.layers.0.self_attn.k_proj.weight");
  EXPECT_EQ(*HfTensorName("blk.0.attn_v.weight"), "model.layers.0.self_attn.v_proj.weight");
  EXPECT_EQ(*HfTensorName("blk.0.attn_output.weight"), "model.layers.0.self_attn.o_proj.weight");
  EXPECT_EQ(*HfTensorName("blk.1.attn_q.bias"), "model.layers.1.self_attn.q_proj.bias");
  EXPECT_EQ(*HfTensorName("blk.2.ffn_norm.weight"),
            "model.layers.2.post_attention_layernorm.weight");
  EXPECT_EQ(*HfTensorName("blk.3.ffn_gate.weight"), "model.layers.3.mlp.gate_proj.weight");
  EXPECT_EQ(*HfTensorName("blk.3.ffn_up.weight"), "model.layers.3.mlp.up_proj.weight");
  EXPECT_EQ(*HfTensorName("blk.3.ffn_down.weight"), "model.layers.3.mlp.down_proj.weight");
  for (const char* bad :
       {"blk.0.ffn_gate_exps.weight", "blk.x.attn_q.weight", "blk.01.attn_q.weight",
        "blk..attn_q.weight", "rope_freqs.weight", "token_embd"}) {
    EXPECT_EQ(HfTensorName(bad).status().code(), absl::StatusCode::kNotFound) << bad;
  }
}

TEST(GgufCheckpointTest, LoadsTinyModel) {
  TinyLlama m = MakeTinyLlama();
  const std::string path = Write(m.writer);
  absl::StatusOr<Checkpoint> ckpt = LoadGgufCheckpoint(path);
  ASSERT_TRUE(ckpt.ok()) << ckpt.status();
  EXPECT_EQ(ckpt->source, path);
  const LlamaConfig& c = ckpt->config;
  EXPECT_EQ(c.architecture, "LlamaForCausalLM");
  EXPECT_EQ(c.num_layers, kLayers);
  EXPECT_EQ(c.hidden_size, kHidden);
  EXPECT_EQ(c.intermediate_size, kFfn);
  EXPECT_EQ(c.num_heads, kHeads);
  EXPECT_EQ(c.num_kv_heads, kKvHeads);
  EXPECT_EQ(c.head_dim, kHeadDim);
  EXPECT_EQ(c.vocab_size, kVocab);
  EXPECT_EQ(c.max_position_embeddings, 256);
  EXPECT_EQ(c.rms_norm_eps, 1e-5);  // the decimal, not f32's 9.99999974738e-06
  EXPECT_EQ(c.rope_theta, 100000.0);
  EXPECT_EQ(c.rope_scaling.type, RopeScaling::Type::kNone);
  EXPECT_TRUE(c.tie_word_embeddings);
  EXPECT_FALSE(c.attention_bias);
  EXPECT_EQ(c.bos_token_id, 1);
  EXPECT_THAT(c.eos_token_ids, ElementsAre(2));

  EXPECT_EQ(ckpt->tensors.size(), m.hf.size());
  EXPECT_FALSE(ckpt->tensors.contains("lm_head.weight"));
  for (const auto& [name, want] : m.hf) {
    auto it = ckpt->tensors.find(name);
    ASSERT_NE(it, ckpt->tensors.end()) << name;
    EXPECT_EQ(it->second.dtype(), DType::kFloat32) << name;
    EXPECT_EQ(Values(it->second), want) << name;
  }
  EXPECT_THAT(ckpt->tensors.at("model.layers.0.self_attn.q_proj.weight").shape(),
              ElementsAre(kHeads * kHeadDim, kHidden));
  EXPECT_THAT(ckpt->tensors.at("model.layers.1.self_attn.k_proj.weight").shape(),
              ElementsAre(kKvHeads * kHeadDim, kHidden));
  EXPECT_THAT(ckpt->tensors.at("model.layers.1.mlp.down_proj.weight").shape(),
              ElementsAre(kHidden, kFfn));
  EXPECT_THAT(ckpt->tensors.at("model.embed_tokens.weight").shape(), ElementsAre(kVocab, kHidden));
}

TEST(GgufCheckpointTest, UntiedHeadAndBiasesIncludingPermutedOnes) {
  TinyLlama m = MakeTinyLlama({.tied = false, .bias = true});
  absl::StatusOr<Checkpoint> ckpt = LoadGgufCheckpoint(Write(m.writer));
  ASSERT_TRUE(ckpt.ok()) << ckpt.status();
  EXPECT_FALSE(ckpt->config.tie_word_embeddings);
  EXPECT_TRUE(ckpt->config.attention_bias);
  for (const char* name :
       {"lm_head.weight", "model.layers.1.self_attn.q_proj.bias",
        "model.layers.1.self_attn.k_proj.bias", "model.layers.0.self_attn.v_proj.bias"}) {
    ASSERT_TRUE(ckpt->tensors.contains(name)) << name;
    EXPECT_EQ(Values(ckpt->tensors.at(name)), m.hf.at(name)) << name;
  }
}

TEST(GgufCheckpointTest, RopeScalingKeys) {
  TinyLlama linear = MakeTinyLlama();
  linear.writer.AddString("llama.rope.scaling.type", "linear");
  linear.writer.AddFloat32("llama.rope.scaling.factor", 4.0f);
  absl::StatusOr<LlamaConfig> c = [&] {
    auto f = GgufFile::Open(Write(linear.writer));
    return f.ok() ? LlamaConfigFromGguf(**f) : absl::StatusOr<LlamaConfig>(f.status());
  }();
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->rope_scaling.type, RopeScaling::Type::kLinear);
  EXPECT_EQ(c->rope_scaling.factor, 4.0);

  TinyLlama yarn = MakeTinyLlama();
  yarn.writer.AddString("llama.rope.scaling.type", "yarn");
  yarn.writer.AddFloat32("llama.rope.scaling.factor", 2.0f);
  yarn.writer.AddUint32("llama.rope.scaling.original_context_length", 128);
  yarn.writer.AddFloat32("llama.rope.scaling.yarn_beta_fast", 16.0f);
  absl::StatusOr<Checkpoint> ckpt = LoadGgufCheckpoint(Write(yarn.writer));
  ASSERT_TRUE(ckpt.ok()) << ckpt.status();
  EXPECT_EQ(ckpt->config.rope_scaling.type, RopeScaling::Type::kYarn);
  EXPECT_EQ(ckpt->config.rope_scaling.factor, 2.0);
  EXPECT_EQ(ckpt->config.rope_scaling.original_max_position_embeddings, 128);
  EXPECT_EQ(ckpt->config.rope_scaling.beta_fast, 16.0);
  EXPECT_EQ(ckpt->config.rope_scaling.beta_slow, 1.0);

  TinyLlama longrope = MakeTinyLlama();
  longrope.writer.AddString("llama.rope.scaling.type", "longrope");
  longrope.writer.AddFloat32("llama.rope.scaling.factor", 2.0f);
  absl::Status s = LoadGgufCheckpoint(Write(longrope.writer)).status();
  EXPECT_EQ(s.code(), absl::StatusCode::kUnimplemented);
  EXPECT_THAT(s.message(), HasSubstr("'llama.rope.scaling.type' is 'longrope'"));
}

// ---- errors ---------------------------------------------------------------

absl::Status LoadStatus(const GgufTestWriter& w, std::string* path_out = nullptr) {
  const std::string path = Write(w);
  if (path_out != nullptr) *path_out = path;
  return LoadGgufCheckpoint(path).status();
}

TEST(GgufCheckpointTest, WrongArchitecture) {
  std::string path;
  absl::Status s = LoadStatus(MakeTinyLlama({.architecture = "gemma"}).writer, &path);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(s.message(), HasSubstr(path));
  EXPECT_THAT(s.message(), HasSubstr("'general.architecture' is \"gemma\""));
  EXPECT_THAT(s.message(), HasSubstr("only \"llama\" and \"qwen2\""));

  GgufTestWriter none;
  none.AddUint32("llama.block_count", 1);
  s = LoadStatus(none);
  EXPECT_EQ(s.code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(s.message(), HasSubstr("'general.architecture' not found"));
}

// Qwen2: the same tensor names under qwen2.* keys, q/k/v biases, and q/k
// rows left in Hugging Face's order (llama.cpp rotates Qwen2 NEOX-style), so
// the loader must not undo a permutation.
TEST(GgufCheckpointTest, LoadsQwen2) {
  TinyLlama m = MakeTinyLlama({.bias = true, .architecture = "qwen2"});
  absl::StatusOr<Checkpoint> ckpt = LoadGgufCheckpoint(Write(m.writer));
  ASSERT_TRUE(ckpt.ok()) << ckpt.status();
  EXPECT_EQ(ckpt->config.architecture, "Qwen2ForCausalLM");
  EXPECT_TRUE(ckpt->config.attention_bias);
  EXPECT_EQ(ckpt->config.num_layers, kLayers);
  EXPECT_EQ(ckpt->config.num_kv_heads, kKvHeads);
  EXPECT_EQ(ckpt->config.rope_theta, 100000.0);
  EXPECT_EQ(ckpt->tensors.size(), m.hf.size());
  for (const auto& [name, want] : m.hf) {
    ASSERT_TRUE(ckpt->tensors.contains(name)) << name;
    EXPECT_EQ(Values(ckpt->tensors.at(name)), want) << name;
  }
  // Its keys are the architecture's: a qwen2 file with llama.* keys misses them.
  GgufTestWriter w;
  w.AddString("general.architecture", "qwen2");
  w.AddUint32("llama.block_count", kLayers);
  const absl::Status s = LoadStatus(w);
  EXPECT_EQ(s.code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(s.message(), HasSubstr("qwen2.block_count"));
}

TEST(GgufCheckpointTest, MissingOrMistypedKey) {
  GgufTestWriter w;
  w.AddString("general.architecture", "llama");
  w.AddUint32("llama.embedding_length", 32);
  absl::Status s = LoadStatus(w);
  EXPECT_EQ(s.code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(s.message(), HasSubstr("'llama.block_count' not found"));

  TinyLlama m = MakeTinyLlama();
  m.writer.AddString("llama.attention.key_length", "eight");
  s = LoadStatus(m.writer);
  EXPECT_THAT(s.message(),
              HasSubstr("'llama.attention.key_length' is string, expected an integer"));
}

TEST(GgufCheckpointTest, InconsistentConfigFailsValidation) {
  std::string path;
  absl::Status s = LoadStatus(MakeTinyLlama({.kv_heads_key = 3}).writer, &path);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(s.message(), HasSubstr(path));  // from ValidateLlamaConfig

  TinyLlama partial = MakeTinyLlama();
  partial.writer.AddUint32("llama.attention.key_length", 4);
  s = LoadStatus(partial.writer);
  EXPECT_EQ(s.code(), absl::StatusCode::kUnimplemented);
  EXPECT_THAT(s.message(), HasSubstr("'llama.rope.dimension_count' is 8 but the head size is 4"));
}

TEST(GgufCheckpointTest, UnexpectedTensorIsNamed) {
  TinyLlama m = MakeTinyLlama();
  m.writer.AddF32Tensor("blk.0.ffn_gate_exps.weight", {4}, {1, 2, 3, 4});
  absl::Status s = LoadStatus(m.writer);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(s.message(), HasSubstr("unexpected tensor 'blk.0.ffn_gate_exps.weight'"));

  TinyLlama extra_layer = MakeTinyLlama();
  extra_layer.writer.AddF32Tensor("blk.2.attn_norm.weight", {kHidden}, Pattern(kHidden, 0));
  EXPECT_THAT(LoadStatus(extra_layer.writer).message(),
              HasSubstr("tensor 'blk.2.attn_norm.weight' belongs to layer 2, but "
                        "'llama.block_count' is 2"));
}

TEST(GgufCheckpointTest, MissingTensorIsNamed) {
  GgufTestWriter w;
  AddTinyLlamaMetadata(w, "llama");
  w.AddF32Tensor("token_embd.weight", {kHidden, kVocab}, Pattern(kHidden * kVocab, 1));
  absl::Status s = LoadStatus(w);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(s.message(), HasSubstr("missing tensor"));
}

TEST(GgufCheckpointTest, WrongQShapeIsAnErrorNotACrash) {
  GgufTestWriter w;
  AddTinyLlamaMetadata(w, "llama");
  w.AddF32Tensor("blk.0.attn_q.weight", {kHidden, 30}, Pattern(kHidden * 30, 1));
  absl::Status s = LoadStatus(w);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(s.message(), HasSubstr("blk.0.attn_q.weight"));
  EXPECT_THAT(s.message(), HasSubstr("30 rows do not split into 4 heads"));
}

TEST(GgufCheckpointTest, UndequantizableTypeIsUnimplemented) {
  GgufTestWriter w;
  AddTinyLlamaMetadata(w, "llama");
  w.AddTensor("blk.1.ffn_down.weight", {256, 1}, GgmlType::kIQ2_XS, std::string(74, '\0'));
  absl::Status s = LoadStatus(w);
  EXPECT_EQ(s.code(), absl::StatusCode::kUnimplemented);
  EXPECT_THAT(s.message(), HasSubstr("'blk.1.ffn_down.weight'"));
  EXPECT_THAT(s.message(), HasSubstr("IQ2_XS"));
}

TEST(GgufCheckpointTest, UnsupportedFeatures) {
  TinyLlama moe = MakeTinyLlama();
  moe.writer.AddUint32("llama.expert_count", 8);
  absl::Status s = LoadStatus(moe.writer);
  EXPECT_EQ(s.code(), absl::StatusCode::kUnimplemented);
  EXPECT_THAT(s.message(), HasSubstr("'llama.expert_count' is 8"));
}

// Llama 3.1 GGUFs carry their RoPE scaling as rope_freqs.weight (a divisor
// per frequency): it lands in the config, not among the weights
// (models/llama/rope_test.cc checks the angles against the Hugging Face
// "llama3" scaling the factors come from).
TEST(GgufCheckpointTest, RopeFreqsBecomeConfigFreqFactors) {
  const std::vector<float> factors = {1.0f, 1.75f, 8.0f, 8.0f};
  static_assert(kHeadDim / 2 == 4);
  TinyLlama m = MakeTinyLlama();
  m.writer.AddF32Tensor("rope_freqs.weight", {kHeadDim / 2}, factors);
  absl::StatusOr<Checkpoint> ckpt = LoadGgufCheckpoint(Write(m.writer));
  ASSERT_TRUE(ckpt.ok()) << ckpt.status();
  EXPECT_EQ(ckpt->config.rope_scaling.freq_factors, factors);
  EXPECT_EQ(ckpt->config.rope_scaling.type, RopeScaling::Type::kNone);
  EXPECT_EQ(ckpt->tensors.size(), m.hf.size());  // not a weight

  // Without the tensor: no factors.
  ckpt = LoadGgufCheckpoint(Write(MakeTinyLlama().writer));
  ASSERT_TRUE(ckpt.ok()) << ckpt.status();
  EXPECT_TRUE(ckpt->config.rope_scaling.freq_factors.empty());
}

TEST(GgufCheckpointTest, BadRopeFreqs) {
  TinyLlama wrong_size = MakeTinyLlama();
  wrong_size.writer.AddF32Tensor("rope_freqs.weight", {kHeadDim}, Pattern(kHeadDim, 1));
  absl::Status s = LoadStatus(wrong_size.writer);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(s.message(), HasSubstr("'rope_freqs.weight' has 8 values"));
  EXPECT_THAT(s.message(), HasSubstr("needs 4"));

  TinyLlama zero = MakeTinyLlama();
  zero.writer.AddF32Tensor("rope_freqs.weight", {kHeadDim / 2}, {1.0f, 0.0f, 2.0f, 2.0f});
  s = LoadStatus(zero.writer);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(s.message(), HasSubstr("'rope_freqs.weight' value 1 is 0"));
}

TEST(GgufCheckpointTest, MalformedFileErrorsPassThrough) {
  TinyLlama m = MakeTinyLlama();
  std::string bytes = m.writer.Build();
  bytes.resize(bytes.size() - 100);
  const std::string path = TempPath("cut.gguf");
  ASSERT_TRUE(::quest::models::testing::WriteFileBytes(path, bytes).ok());
  absl::Status s = LoadGgufCheckpoint(path).status();
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(s.message(), HasSubstr("truncated tensor data"));
  EXPECT_THAT(s.message(), HasSubstr("output_norm.weight"));
  EXPECT_EQ(LoadGgufCheckpoint("/no/such/file.gguf").status().code(), absl::StatusCode::kNotFound);
}

}  // namespace
}  // namespace quest::models
